import AgentAPI
import AgentProtocol
import CAgentSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The nfs-ganesha process a pid file names, identified before it gets a signal.
///
/// A pid file outlives the process that wrote it (ganesha killed, or crashed): its pid
/// may since belong to any other process, and SIGHUP ends most programs. So the process
/// is held by a pidfd (pidfd_open(2): it refers to that process, never to a later one
/// with the same pid) and must be nfs-ganesha, known by
/// - its executable (`/proc/PID/exe` named `ganesha.nfsd`, " (deleted)" after an
///   upgrade allowed), or, where the agent may not read `exe` (under the unit the agent
///   lacks CAP_SYS_PTRACE and ganesha has capabilities the agent has not), its `comm` and
///   the file name of its `argv[0]` both `ganesha.nfsd`; and
/// - a start time not after the pid file's modification time (+2 s for the
///   whole-second boot time the start time is counted from): a process that started
///   after the file was written did not write it.
/// The signal then goes through the pidfd: if the process exits between the check and
/// the signal, the signal fails (ESRCH) instead of reaching whoever gets the pid next.
struct GaneshaProcess: ~Copyable {
    static let executableName = "ganesha.nfsd"

    let pid: pid_t
    let pidFile: String
    /// -1 when the kernel has no pidfd_open (before 5.3): then kill(2) after the check.
    private let pidfd: Int32

    /// Reads `pidFile` and identifies its process. Throws `unavailable` naming the pid
    /// and what it is when it is not a running nfs-ganesha that wrote the file. Blocking.
    init(pidFile: String) throws(AgentError) {
        let text = String(decoding: (try PosixFiles.read(pidFile)) ?? [], as: UTF8.self)
        guard let pid = Self.pid(inPidFile: text), pid > 1 else {
            throw AgentError(.unavailable, "nfs-ganesha is not running: no pid in \(pidFile) (start it, or set --ganesha-pidfile)")
        }
        let fd = cagent_pidfd_open(pid)
        if fd < 0 && errno != ENOSYS {
            throw Self.notRunning(pidFile, pid, errno == ESRCH ? "not running" : "not to be opened: \(PosixFiles.errorText())")
        }
        if let problem = Self.problem(pid: pid, pidFile: pidFile) {
            if fd >= 0 { close(fd) }
            throw Self.notRunning(pidFile, pid, problem)
        }
        self.pid = pid
        self.pidFile = pidFile
        self.pidfd = fd
    }

    deinit { if pidfd >= 0 { close(pidfd) } }

    /// The pid a pid file's text names: its first line. nfs-ganesha up to 6.1 writes
    /// `PID\n` over the old file without truncating it, so after a restart with a shorter
    /// pid the end of the old one follows on the next line (`849\n3\n` over `25153\n`);
    /// taking the whole text saw no pid at all there.
    static func pid(inPidFile text: String) -> pid_t? {
        let first = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return pid_t(first.trimmingCharacters(in: .whitespaces))
    }

    /// Sends `sig` to the identified process (through its pidfd).
    func signal(_ sig: Int32) throws(AgentError) {
        let rc = pidfd >= 0 ? cagent_pidfd_send_signal(pidfd, sig) : kill(pid, sig)
        guard rc == 0 else {
            if errno == ESRCH { throw Self.notRunning(pidFile, pid, "not running (it exited a moment ago)") }
            throw AgentError(.unavailable, "cannot signal nfs-ganesha (pid \(pid) from \(pidFile)): \(PosixFiles.errorText())")
        }
    }

    static func notRunning(_ pidFile: String, _ pid: pid_t, _ what: String) -> AgentError {
        AgentError(.unavailable, "nfs-ganesha is not running: its pid file \(pidFile) names \(pid), which is \(what); start nfs-ganesha (it writes the pid file anew)")
    }

    /// Why `pid` is not the nfs-ganesha that wrote `pidFile` ("sleep (/usr/bin/sleep)",
    /// "not running", ...), or nil when it is.
    static func problem(pid: pid_t, pidFile: String) -> String? {
        let proc = "/proc/\(pid)"
        let comm = text(proc + "/comm")?.trimmingCharacters(in: .newlines)
        guard let comm else { return "not running" }
        let exe = PosixFiles.readLink(proc + "/exe").map { $0.hasSuffix(" (deleted)") ? String($0.dropLast(10)) : $0 }
        let argv0 = text(proc + "/cmdline")?.split(separator: "\0", maxSplits: 1).first.map(String.init) ?? ""
        let isGanesha = exe.map { fileName($0) == executableName }
            ?? (comm == executableName && fileName(argv0) == executableName)
        if !isGanesha { return "\(comm) (\(exe ?? (argv0.isEmpty ? "no command line" : argv0)))" }
        var st = stat()
        if let started = startTime(pid: pid), stat(pidFile, &st) == 0 {
            let written = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
            if started > written + 2 {
                return "a \(executableName) that started after the pid file was written (\(Int(started - written)) s later), so not the process that wrote it: the pid was reused"
            }
        }
        return nil
    }

    /// When `pid` started, in seconds since the epoch: `starttime` of /proc/PID/stat
    /// (clock ticks since boot, proc(5)) plus `btime` of /proc/stat.
    static func startTime(pid: pid_t) -> Double? {
        guard let stat = text("/proc/\(pid)/stat"), let paren = stat.lastIndex(of: ")"),
              let boot = text("/proc/stat")?.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let btime = Double(boot.dropFirst(6).trimmingCharacters(in: .whitespaces))
        else { return nil }
        // Fields after the command: state is field 3, starttime field 22.
        let fields = stat[stat.index(after: paren)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]) else { return nil }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        return hz > 0 ? btime + ticks / hz : nil
    }

    static func text(_ path: String) -> String? {
        (try? PosixFiles.read(path)).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) }
    }

    static func fileName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// The HEALTH check of the ganesha backend's reload path.
    static func healthCheck(_ name: String, pidFile: String) -> HealthCheck {
        do {
            let process = try GaneshaProcess(pidFile: pidFile)
            return HealthCheck(name, ok: true, detail: "nfs-ganesha runs as pid \(process.pid)")
        } catch {
            return HealthCheck(name, ok: false, detail: error.message)
        }
    }
}
