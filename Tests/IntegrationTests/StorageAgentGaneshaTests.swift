import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The built storage agent with the ganesha backend against a real nfs-ganesha (VFS
/// FSAL, NFSv3 + rpcbind), all inside a private network and mount namespace (only `lo`,
/// a private tmpfs on /run), so nothing reaches the host's network or /run. The agent
/// verifies every change through libnfs (the MOUNT export list at 127.0.0.1).
final class GaneshaStorageAgent {
    /// Fixed script: every value arrives as an argument. Starts rpcbind and ganesha in
    /// the background (pids into $1), waits until ganesha serves, then becomes the agent.
    static let script = """
        set -eu
        dir=$1; shift
        ip link set lo up
        mount -t tmpfs tmpfs /run
        mkdir -p /run/ganesha /run/rpcbind
        rpcbind -f -w & echo $! > "$dir/rpcbind.pid"
        i=0; while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
        ganesha.nfsd -F -f "$dir/ganesha.conf" -p "$dir/ganesha.pid" -L "$dir/ganesha.log" & echo $! > "$dir/ganesha.bg"
        i=0; while ! rpcinfo -p 127.0.0.1 2>/dev/null | grep -q mountd && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
        exec "$@"
        """

    let dir: String
    var child: ChildProcess?
    var socket: String { dir + "/s.sock" }
    var root: String { dir + "/root" }
    var include: String { dir + "/storagectl-exports.conf" }

    static func available() -> String? {
        if getuid() != 0 { return "needs root (unshare -m -n, mount)" }
        for tool in ["/usr/bin/ganesha.nfsd", "/usr/sbin/rpcbind", "/usr/sbin/rpcinfo", "/usr/bin/unshare"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind)"
        }
        return nil
    }

    init() async throws {
        dir = try TestSupport.temporaryDirectory("sg")
        for sub in ["root", "rec"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        let conf = """
            NFS_CORE_PARAM { Protocols = 3,4; Enable_NLM = false; Enable_RQUOTA = false; mount_path_pseudo = true;
                             Plugins_Dir = "/usr/lib/x86_64-linux-gnu/ganesha"; }
            NFSv4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = "\(dir)/rec"; }
            %include "\(include)"

            """
        try Data(conf.utf8).write(to: URL(fileURLWithPath: dir + "/ganesha.conf"))
        try Data("# empty until storagectl writes it\n".utf8).write(to: URL(fileURLWithPath: include))
        try Data("# admin\n".utf8).write(to: URL(fileURLWithPath: dir + "/exports"))
        try Data(Self.script.utf8).write(to: URL(fileURLWithPath: dir + "/run.sh"))
        child = try ChildProcess("/usr/bin/unshare", [
            "-m", "-n", "--propagation", "private", "/bin/sh", dir + "/run.sh", dir,
            try TestSupport.binary("storage-agent"), "--listen", "unix:\(socket)", "--backend", "ganesha",
            "--exports-file", dir + "/exports", "--export-root", root,
            "--ganesha-exports-file", include, "--ganesha-pidfile", dir + "/ganesha.pid",
            "--allow-client", "198.18.0.2", "--allow-client", "198.18.0.3", "--log-level", "warning",
        ], logDir: dir)
        let path = socket
        let ok = try await TestSupport.waitUntil(timeout: .seconds(20)) {
            guard let c = try? RawSocket(unixPath: path, timeout: 2) else { return false }
            await c.send("HELLO version=1\n")
            return await c.readLine()?.hasPrefix("OK") == true
        }
        guard ok else { throw TestFailure("storage-agent with ganesha did not serve: \(child?.log ?? "")") }
    }

    func ask(_ line: String) async throws -> String {
        let c = try RawSocket(unixPath: socket, timeout: 30)
        await c.send("HELLO version=1\n")
        _ = await c.readLine()
        await c.send(line + "\n")
        return await c.readResponse().last ?? "<closed>"
    }

    func pid(_ name: String) -> pid_t? {
        (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8))
            .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Stops the agent, then ganesha and rpcbind by their pid files; removes the directory.
    func stop() async throws {
        child?.signal(SIGTERM)
        _ = try await child?.wait(timeout: .seconds(10))
        for name in ["ganesha.bg", "rpcbind.pid"] {
            guard let pid = pid(name), pid > 1 else { continue }
            kill(pid, SIGTERM)
            _ = try await TestSupport.waitUntil(timeout: .seconds(5)) { kill(pid, 0) != 0 }
            if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        }
        TestSupport.removeTree(dir)
    }
}

@Suite("storage agent, ganesha backend (real nfs-ganesha, verified through libnfs)", .serialized)
struct StorageAgentGaneshaTests {
    @Test("EXPORT and UNEXPORT reach ganesha's export list; Export_Ids stay stable")
    func exportUnexport() async throws {
        if let missing = GaneshaStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        let agent = try await GaneshaStorageAgent()
        let path = agent.root + "/wanderer"
        let clock = ContinuousClock()
        var first = ""
        let elapsed = try await clock.measure { first = try await agent.ask("EXPORT path=\(path) client=198.18.0.2") }
        #expect(first.hasPrefix("OK path=\(path) clients=198.18.0.2 changed=yes fsid="), "\(first)\n\(agent.child?.log ?? "")")
        #expect(first.hasSuffix(" backend=ganesha"))
        let include = try String(contentsOfFile: agent.include, encoding: .utf8)
        #expect(include.contains("Path = \"\(path)\";"))
        let id = include.split(separator: "\n").first { $0.contains("Export_Id") }.map(String.init)
        let both = try await agent.ask("EXPORT path=\(path) client=198.18.0.3")
        #expect(both.hasPrefix("OK path=\(path) clients=198.18.0.2,198.18.0.3 changed=yes "), "\(both)")
        let after = try String(contentsOfFile: agent.include, encoding: .utf8)
        #expect(after.split(separator: "\n").first { $0.contains("Export_Id") }.map(String.init) == id, "Export_Id kept")
        let again = try await agent.ask("EXPORT path=\(path) client=198.18.0.3")
        #expect(again.contains(" changed=no "), "\(again)")
        let one = try await agent.ask("UNEXPORT path=\(path) client=198.18.0.2")
        #expect(one == "OK path=\(path) clients=198.18.0.3 changed=yes backend=ganesha", "\(one)")
        let none = try await agent.ask("UNEXPORT path=\(path)")
        #expect(none == "OK path=\(path) clients= changed=yes backend=ganesha", "\(none)")
        #expect(!(try String(contentsOfFile: agent.include, encoding: .utf8)).contains(path))
        print("storage-agent ganesha backend: first EXPORT \(elapsed) (render, SIGHUP, export list polled through libnfs)")
        try await agent.stop()
    }

    @Test("the probe client 127.0.0.1 lets no local user read an image (AUTH_SYS claims any uid); the export is still proven live")
    func probeClientReadsNoData() async throws {
        if let missing = GaneshaStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        for tool in ["/usr/bin/nfs-cat", "/usr/bin/setpriv", "/usr/bin/nsenter", "/usr/sbin/showmount"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            Issue.record("cannot run: \(tool) is missing (libnfs-utils, util-linux, nfs-common)"); return
        }
        let agent = try await GaneshaStorageAgent()
        let path = agent.root + "/w1"
        // An image as libvirt's dynamic ownership leaves it: owned by the qemu user, 0600.
        // Created before the export, so ganesha's attribute cache has nothing stale.
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let image = path + "/disk.img"
        try Data("image-bytes-only-qemu-may-read\n".utf8).write(to: URL(fileURLWithPath: image))
        #expect(chown(image, 4242, 4242) == 0 && chmod(image, 0o600) == 0)
        let ok = try await agent.ask("EXPORT path=\(path) client=198.18.0.2")
        #expect(ok.hasPrefix("OK path=\(path) "), "the export is proven live through the probe: \(ok)")
        let pid = agent.child!.pid
        let listed = try await runProgram("/usr/bin/nsenter", ["-t", "\(pid)", "-n", "-m", "/usr/sbin/showmount", "-e", "127.0.0.1"])
        #expect(listed.stdout.contains(path), "listed to the probe: \(listed)")
        // Any local user: not root, unprivileged source port, AUTH_SYS claiming the owner.
        let read = try await runProgram("/usr/bin/nsenter", [
            "-t", "\(pid)", "-n", "-m", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "/usr/bin/nfs-cat", "nfs://127.0.0.1\(image)?uid=4242&gid=4242",
        ])
        #expect(!read.stdout.contains("image-bytes"), "a local user read the image through 127.0.0.1: \(read)")
        #expect(read.status != 0, "\(read)")
        // Root on the storage host through the probe client: no data either (metadata only).
        let asRoot = try await runProgram("/usr/bin/nsenter", [
            "-t", "\(pid)", "-n", "-m", "/usr/bin/nfs-cat", "nfs://127.0.0.1\(image)?uid=4242&gid=4242",
        ])
        #expect(!asRoot.stdout.contains("image-bytes"), "\(asRoot)")
        try await agent.stop()
    }

    @Test("when ganesha does not take the change, the previous file is restored and both outcomes are reported")
    func stoppedGanesha() async throws {
        if let missing = GaneshaStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        let agent = try await GaneshaStorageAgent()
        let ok = try await agent.ask("EXPORT path=\(agent.root)/w1 client=198.18.0.2")
        #expect(ok.hasPrefix("OK "), "\(ok)")
        let before = try String(contentsOfFile: agent.dir + "/exports", encoding: .utf8)
        // A stopped ganesha neither rereads nor answers: the check times out.
        let ganesha = try #require(agent.pid("ganesha.bg"))
        kill(ganesha, SIGSTOP)
        let bad = try await agent.ask("EXPORT path=\(agent.root)/w2 client=198.18.0.2")
        kill(ganesha, SIGCONT)
        #expect(bad.hasPrefix("ERR code=unavailable "), "\(bad)")
        #expect(bad.contains("Restoring%20the%20previous%20exports%20file%20failed%20too") || bad.contains("restored%20and%20applied%20again"), "\(bad)")
        #expect(try String(contentsOfFile: agent.dir + "/exports", encoding: .utf8) == before)
        try await agent.stop()
    }
}
