import AgentTestSupport
import AgentProtocol
import ExportsFile
import Foundation
import Testing
@testable import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

/// The ganesha backend signals the pid its pid file names. A pid file left behind by a
/// ganesha that died names a pid the kernel may have given to another process: that
/// process must not get SIGHUP (which kills most programs).
@Suite("ganesha pid file", .serialized)
struct GaneshaPidFileTests {
    /// Starts `executable` with `arguments`; the caller reaps it.
    static func spawn(_ executable: String, _ arguments: [String]) throws -> pid_t {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        // Default dispositions and no blocked signal: the test runner's threads may block
        // or ignore SIGHUP, and a child would inherit that.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, nil, &attr, argv, environ)
        guard rc == 0 else { throw AgentError(.internal, "cannot start \(executable): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Whether `pid` (our child) is still running after a moment; the signal that ended
    /// it in `signal` if not. Does not reap it (`stop` does), so its pid cannot be reused
    /// meanwhile.
    static func stillRunning(_ pid: pid_t, signal: inout Int32) -> Bool {
        usleep(200_000)
        var info = siginfo_t()
        guard waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0, info._sifields._sigchld.si_pid == pid else {
            return true
        }
        signal = info._sifields._sigchld.si_status
        return false
    }

    /// SIGKILL (a zombie ignores it) and reap.
    static func stop(_ pid: pid_t) {
        kill(pid, SIGKILL)
        var raw: Int32 = 0
        _ = waitpid(pid, &raw, 0)
    }

    func applier(_ sandbox: Sandbox) -> GaneshaExportsApplier {
        GaneshaExportsApplier(includeFile: sandbox.dir + "/storagectl-exports.conf", pidFile: sandbox.dir + "/ganesha.pid",
                              listProbe: nil, probeClient: nil)
    }

    func writePidFile(_ sandbox: Sandbox, _ pid: pid_t, age: TimeInterval = 0, leftover: String = "") throws {
        let path = sandbox.dir + "/ganesha.pid"
        try Data("\(pid)\n\(leftover)".utf8).write(to: URL(fileURLWithPath: path))
        if age > 0 {
            let then = Date().addingTimeInterval(-age).timeIntervalSince1970
            var times = [timeval(tv_sec: Int(then), tv_usec: 0), timeval(tv_sec: Int(then), tv_usec: 0)]
            #expect(utimes(path, &times) == 0)
        }
    }

    /// A copy of sleep(1) called ganesha.nfsd: exe, comm and argv[0] say ganesha.nfsd.
    func fakeGanesha(_ sandbox: Sandbox) throws -> String {
        let path = sandbox.dir + "/ganesha.nfsd"
        try FileManager.default.copyItem(atPath: "/bin/sleep", toPath: path)
        return path
    }

    func configuration(_ sandbox: Sandbox) -> StorageAgentConfiguration {
        var c = sandbox.configuration()
        c.backend = .ganesha
        c.ganeshaPidFile = sandbox.dir + "/ganesha.pid"
        c.ganeshaExportsFile = sandbox.dir + "/storagectl-exports.conf"
        return c
    }

    @Test("a pid file naming a process that is not nfs-ganesha: unavailable naming it, and it gets no signal")
    func otherProcess() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let sleeper = try Self.spawn("/bin/sleep", ["30"])
        defer { Self.stop(sleeper) }
        try writePidFile(sandbox, sleeper, age: 60)
        do {
            _ = try await applier(sandbox).apply(ApplyPlan(managed: []), file: ExportsFile(parsing: ""))
            Issue.record("apply signalled pid \(sleeper), which is sleep, not nfs-ganesha")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("nfs-ganesha is not running: its pid file"), "\(error.message)")
            #expect(error.message.contains("names \(sleeper), which is sleep"), "\(error.message)")
        }
        var signal: Int32 = 0
        let running = Self.stillRunning(sleeper, signal: &signal)
        #expect(running, "sleep got signal \(signal)")
        let health = await (try StorageAgentHandler(configuration: configuration(sandbox), applier: RecordingApplier())).healthChecks()
        let reload = try #require(health.first { $0.name == "reload-tool" })
        #expect(!reload.ok, "HEALTH: \(reload.detail)")
        #expect(reload.detail.contains("which is sleep"), "\(reload.detail)")
    }

    @Test("a ganesha.nfsd that started after the pid file was written (the pid was reused) is not signalled")
    func startedAfterPidFile() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let fake = try Self.spawn(try fakeGanesha(sandbox), ["30"])
        defer { Self.stop(fake) }
        try writePidFile(sandbox, fake, age: 3600)
        do {
            _ = try await applier(sandbox).apply(ApplyPlan(managed: []), file: ExportsFile(parsing: ""))
            Issue.record("apply signalled pid \(fake), which started an hour after the pid file was written")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("started after"), "\(error.message)")
        }
        var signal: Int32 = 0
        let running = Self.stillRunning(fake, signal: &signal)
        #expect(running, "got signal \(signal)")
    }

    @Test("the pid is the file's first line: ganesha 4.3 writes a shorter pid over the old one without truncating")
    func pidFileLines() {
        #expect(GaneshaProcess.pid(inPidFile: "849\n3\n") == 849)
        #expect(GaneshaProcess.pid(inPidFile: "25153\n") == 25153)
        #expect(GaneshaProcess.pid(inPidFile: " 42 \n") == 42)
        #expect(GaneshaProcess.pid(inPidFile: "") == nil)
        #expect(GaneshaProcess.pid(inPidFile: "\n849\n") == nil)
        #expect(GaneshaProcess.pid(inPidFile: "84x9\n") == nil)
    }

    @Test("the ganesha.nfsd that wrote the pid file gets SIGHUP, also when the end of a longer old pid follows its line", arguments: ["", "3\n"])
    func realGaneshaSignalled(leftover: String) async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let fake = try Self.spawn(try fakeGanesha(sandbox), ["30"])
        defer { Self.stop(fake) }
        usleep(50_000)
        try writePidFile(sandbox, fake, leftover: leftover)
        let health = await (try StorageAgentHandler(configuration: configuration(sandbox), applier: RecordingApplier())).healthChecks()
        #expect(health.first { $0.name == "reload-tool" }?.ok == true, "\(health)")
        let report = try await applier(sandbox).apply(ApplyPlan(managed: []), file: ExportsFile(parsing: ""))
        #expect(report.reloaded)
        var signal: Int32 = 0
        let running = Self.stillRunning(fake, signal: &signal)
        #expect(!running && signal == SIGHUP, "signal \(signal)")
    }
}
