import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import MigrationHook
import Testing
import TestSupport
@testable import ComputeAgentCore
#if canImport(Glibc)
import Glibc
#endif

@Suite("migration hook: installation, HEALTH and the record of ready shares", .serialized)
struct MigrationHookInstallTests {
    /// A temporary hooks dir, state dir and pid file, a hook binary (a copy of
    /// /bin/true) and, on demand, a fake libvirtd: a copy of bash called `libvirtd`
    /// that ignores SIGHUP (so /proc/PID/comm is `libvirtd`).
    final class Sandbox {
        let dir: String
        var children: [SpawnedProcessBox] = []
        init() throws {
            dir = try TestSupport.temporaryDirectory("hookinst")
            try FileManager.default.copyItem(atPath: "/bin/true", toPath: binary)
            chmod(binary, 0o755)
            try FileManager.default.copyItem(atPath: "/bin/bash", toPath: dir + "/libvirtd")
            chmod(dir + "/libvirtd", 0o755)
        }
        deinit { children.forEach { $0.child.stop() }; TestSupport.removeTree(dir) }
        var binary: String { dir + "/storagectl-migration-hook" }
        var installation: HookInstallation {
            HookInstallation(hooksDir: dir + "/hooks/qemu.d", libvirtdPidFile: dir + "/libvirtd.pid", stateDir: dir + "/state")
        }
        /// Starts a process (pid written to the pid file); `libvirtd` true: the fake daemon.
        func start(libvirtd: Bool) throws -> ChildProcess {
            let child = libvirtd ? try ChildProcess(dir + "/libvirtd", ["-c", "trap '' HUP; sleep 30; true"], logDir: dir)
                                 : try ChildProcess("/bin/sleep", ["30"], logDir: dir)
            children.append(SpawnedProcessBox(child: child))
            try "\(child.pid)\n".write(toFile: dir + "/libvirtd.pid", atomically: true, encoding: .utf8)
            return child
        }
    }
    struct SpawnedProcessBox { let child: ChildProcess }

    func waitForComm(_ pid: pid_t, _ name: String) async throws {
        _ = try await TestSupport.waitUntil(timeout: .seconds(5)) {
            ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").hasPrefix(name)
        }
    }

    @Test("not installed, then installed while no libvirtd runs: installed, not loaded, and says why")
    func noDaemon() throws {
        let s = try Sandbox()
        #expect(s.installation.status() == HookStatus(installed: false, loaded: false,
                                                        detail: "the migration hook is not installed (\(s.dir)/hooks/qemu.d/storagectl is missing): run compute-agent install-hook"))
        let done = try s.installation.install(binary: s.binary)
        #expect(done.first == "installed \(s.dir)/hooks/qemu.d/storagectl (a copy of \(s.binary))")
        #expect(done.last?.contains("libvirtd is not running") == true)
        let status = s.installation.status()
        #expect(status.installed && !status.loaded && status.detail.contains("no libvirtd runs"))
        var st = stat()
        #expect(lstat(s.installation.hookPath, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && st.st_mode & 0o777 == 0o755,
                "a copy, not a symlink")
        #expect(FileManager.default.contents(atPath: s.installation.hookPath) == FileManager.default.contents(atPath: s.binary))
    }

    @Test("a libvirtd started after the install has loaded it; one started before gets SIGHUP and is loaded; a rewrite without SIGHUP is not")
    func loaded() async throws {
        let s = try Sandbox()
        _ = try s.installation.install(binary: s.binary)
        try await Task.sleep(for: .microseconds(100_000))
        let after = try s.start(libvirtd: true)
        try await waitForComm(after.pid, "libvirtd")
        #expect(s.installation.status().loaded, "\(s.installation.status())")
        after.stop()

        let before = try s.start(libvirtd: true)
        try await waitForComm(before.pid, "libvirtd")
        try await Task.sleep(for: .microseconds(100_000))
        #expect(utimes(s.installation.hookPath, nil) == 0)
        #expect(!s.installation.status().loaded, "libvirtd started before the hook was written and got no SIGHUP")
        let done = try s.installation.install(binary: s.binary)
        #expect(done.last == "sent SIGHUP to libvirtd (pid \(before.pid)) so that it reloads its hooks")
        let status = s.installation.status()
        #expect(status.installed && status.loaded, "\(status)")
        #expect(before.isRunning, "the fake libvirtd ignores SIGHUP")
        // Someone rewrites the hook later without a SIGHUP: no longer known to be loaded.
        try await Task.sleep(for: .microseconds(1_100_000))
        #expect(utimes(s.installation.hookPath, nil) == 0)
        let stale = s.installation.status()
        #expect(stale.installed && !stale.loaded && stale.detail.contains("install-hook"), "\(stale)")
    }

    @Test("a pid file naming another program: no SIGHUP is sent to it")
    func notLibvirtd() async throws {
        let s = try Sandbox()
        let other = try s.start(libvirtd: false)
        try await waitForComm(other.pid, "sleep")
        let done = try s.installation.install(binary: s.binary)
        #expect(done.last?.contains("libvirtd is not running") == true)
        try await Task.sleep(for: .microseconds(100_000))
        #expect(other.isRunning, "sleep would have died of SIGHUP")
    }

    @Test("uninstall removes the hook (idempotent); a binary writable by others is refused")
    func uninstall() throws {
        let s = try Sandbox()
        _ = try s.installation.install(binary: s.binary)
        #expect(try s.installation.uninstall().first == "removed \(s.installation.hookPath)")
        #expect(!s.installation.status().installed)
        #expect(try s.installation.uninstall().first == "\(s.installation.hookPath) was not installed")
        chmod(s.binary, 0o777)
        #expect(throws: AgentError.self) { _ = try s.installation.install(binary: s.binary) }
        #expect(throws: AgentError.self) { _ = try s.installation.install(binary: s.dir + "/missing") }
    }

    @Test("HEALTH has a migration-hook check, ok only when installed and loaded")
    func health() async throws {
        let host = try await SimHost()
        for (status, ok) in [(HookStatus(installed: true, loaded: true, detail: "fine"), true),
                             (HookStatus(installed: true, loaded: false, detail: "send SIGHUP"), false),
                             (HookStatus(installed: false, loaded: false, detail: "install it"), false)] {
            let handler = ComputeAgentHandler(configuration: host.handler.configuration, hypervisor: NoProbe(), hook: FixedHookProbe(status))
            let collected = Collected()
            let context = RequestContext(identity: AgentIdentity(agent: "compute-agent", host: "sim"), peer: "unix uid=0 pid=1",
                                         protocolVersion: 1, transport: .unix, client: nil, policy: AccessPolicy())
            let answer = try await handler.handle(try Request.parse("HEALTH"), context: context, reply: collected.stream)
            #expect((answer["health"] == "ok") == ok, "\(answer)")
            let check = collected.lines.data.first { $0["check"] == "migration-hook" }
            #expect(check?["state"] == (ok ? "ok" : "fail") && check?["detail"] == status.detail, "\(collected.lines.data)")
        }
    }

    @Test("POOL-ENSURE of a mount-mode pool records its target as ready, in the format the hook reads")
    func readyRecord() async throws {
        let host = try await SimHost()
        _ = try #require(await host.ask(ComputeAgentVerbTests.ensureHere(host)).result.ok)
        let text = try String(contentsOfFile: host.state + "/ready-shares", encoding: .utf8)
        #expect(try ReadyShares.parseRecord(text, file: "ready-shares") == [host.share])
        let record = ReadyShareRecord(state: StateStore(root: host.state))
        try record.add(host.share)
        try record.add("/var/lib/libvirt/shared-images")
        #expect(record.roots() == ["/var/lib/libvirt/shared-images", host.share].sorted())
        try record.remove(host.share)
        #expect(record.roots() == ["/var/lib/libvirt/shared-images"])
        var st = stat()
        #expect(stat(record.path, &st) == 0 && st.st_mode & 0o777 == 0o644)
    }
}
