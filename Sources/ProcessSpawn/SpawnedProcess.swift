import BlockingIO
import CAgentSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a child's stdout or stderr goes.
public enum ChildOutput: Sendable, Equatable {
    /// A file, opened by the child (created with mode 0644).
    case file(path: String, append: Bool)
    /// A descriptor of this process, duplicated onto the child's (e.g. a pipe's write end).
    case descriptor(Int32)
    /// stderr only: wherever stdout goes.
    case sameAsStdout
}

/// Why a child could not be started or waited for.
public struct SpawnError: Error, Sendable, Equatable, CustomStringConvertible {
    public var executable: String
    /// The errno value posix_spawn returned (ENOENT, EACCES...).
    public var errno: Int32
    public var description: String { "cannot run \(executable): \(String(cString: strerror(errno)))" }
}

/// A child process started with `posix_spawn`, reaped exactly once, and signalled only
/// while it is not reaped (so a signal never reaches a recycled pid).
///
/// `posix_spawn` rather than Foundation's `Process`: Process reaps children through a
/// CFRunLoop source, which was seen to fail inside a network namespace ("Could not create
/// wakeup socket pair for CFSocket") and leave the caller waiting on a zombie forever.
///
/// The child gets stdin from /dev/null (or a descriptor given), only descriptors 0-2 (see
/// `cagent_spawn_close_inherited`), default signal dispositions and an empty signal mask.
public final class SpawnedProcess: @unchecked Sendable {
    public let pid: pid_t
    public let executable: String
    // Invariant: `reapedStatus` and `killedAtDeadline` are only touched with `lock` held;
    // `pid` is signalled only while `reapedStatus` is nil.
    private let lock = NSLock()
    private var reapedStatus: Int32?
    private var killedAtDeadline = false

    /// Starts `executable` with `arguments` (argv[1...]) and exactly `environment`
    /// (`KEY=value` strings). Never through a shell. `stdin`: a descriptor of this process
    /// duplicated onto the child's (a file, a pipe's read end); /dev/null when nil.
    public init(_ executable: String, _ arguments: [String], environment: [String],
                stdin: Int32? = nil, stdout: ChildOutput, stderr: ChildOutput) throws(SpawnError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        for (fd, output) in [(Int32(1), stdout), (Int32(2), stderr)] {
            switch output {
            case .file(let path, let append):
                posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
            case .descriptor(let source):
                posix_spawn_file_actions_adddup2(&actions, source, fd)
            case .sameAsStdout:
                posix_spawn_file_actions_adddup2(&actions, 1, fd)
            }
        }
        // Nothing else of this process: not every descriptor is O_CLOEXEC (SwiftNIO
        // accepts connections without it), and a child holding a copy keeps a connection
        // open after the server closed it. After the dup2s above: it closes their sources.
        _ = cagent_spawn_close_inherited(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgs = ([executable] + arguments).map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else { throw SpawnError(executable: executable, errno: rc) }
        self.pid = pid
        self.executable = executable
    }

    /// This process's environment with `overrides` applied, as `KEY=value` strings.
    public static func inheritedEnvironment(_ overrides: [String: String] = [:]) -> [String] {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in overrides { env[k] = v }
        return env.map { "\($0.key)=\($0.value)" }
    }

    /// The exit status once reaped: the exit code, or 128+N for signal N.
    public var status: Int32? { lock.withLock { reapedStatus } }

    /// Sends `signal` unless the child was already reaped.
    public func signal(_ signal: Int32) {
        lock.withLock { if reapedStatus == nil { _ = Glibc.kill(pid, signal) } }
    }

    /// Reaps the child if it has exited, without blocking; its status, or nil if running.
    public func poll() -> Int32? {
        lock.withLock {
            if let reapedStatus { return reapedStatus }
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid { reapedStatus = Self.exitCode(raw) }
            return reapedStatus
        }
    }

    /// Blocks until the child exits and reaps it; its status. With a `deadline`, the
    /// child is killed (SIGKILL, this process only) if it is still running then.
    /// Blocking: call it on a BlockingIO thread, never on the cooperative pool.
    public func waitForExit(deadline: ContinuousClock.Instant? = nil) -> (status: Int32, killedAtDeadline: Bool) {
        if let deadline, status == nil { enforce(deadline) }
        // Wait for the exit WITHOUT reaping (WNOWAIT): until it is reaped below, with the
        // lock held, the pid cannot be reused, so `signal` cannot hit another process.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        let status = lock.withLock { () -> Int32 in
            if let reapedStatus { return reapedStatus }
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            reapedStatus = Self.exitCode(raw)
            return reapedStatus!
        }
        return (status, lock.withLock { killedAtDeadline })
    }

    /// Returns once the child has exited or `deadline` has passed; in the second case it
    /// kills the child first. Waits in poll(2) on a pidfd (the process itself, not its
    /// pid) on the calling thread: no timer thread, no shared queue that a busy process
    /// could starve (a Dispatch timer was seen to fire 25 s late in the full test run).
    private func enforce(_ deadline: ContinuousClock.Instant) {
        let pidfd = cagent_pidfd_open(pid)
        guard pidfd >= 0 else {
            if errno == ESRCH { return }  // already reaped (by `poll()`)
            // No pidfd (Linux before 5.3): a thread of its own sleeps until the deadline.
            let thread = Thread { [self] in
                let left = ContinuousClock.now.duration(to: deadline)
                if left > .zero { Thread.sleep(forTimeInterval: Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18) }
                lock.withLock { if reapedStatus == nil { killedAtDeadline = true; _ = Glibc.kill(pid, SIGKILL) } }
            }
            thread.start()
            return
        }
        defer { close(pidfd) }
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            let ms = left <= .zero ? 0 : max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
            var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            let ready = Glibc.poll(&pfd, 1, Int32(clamping: ms))
            if ready > 0 { return }                       // exited
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { return }                       // cannot wait: no deadline rather than a wrong kill
            if ContinuousClock.now < deadline { continue }
            lock.withLock {
                if reapedStatus == nil, cagent_pidfd_send_signal(pidfd, SIGKILL) == 0 { killedAtDeadline = true }
            }
            return
        }
    }

    /// ``waitForExit(deadline:)`` on a thread of `executor`.
    public func exitStatus(on executor: BlockingExecutor, deadline: ContinuousClock.Instant? = nil) async throws -> (status: Int32, killedAtDeadline: Bool) {
        try await executor.run { self.waitForExit(deadline: deadline) }
    }

    /// SIGKILL if still running, then reap; for cleanup. Blocking (briefly).
    public func stop() {
        signal(SIGKILL)
        _ = waitForExit()
    }

    // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
    static func exitCode(_ raw: Int32) -> Int32 {
        (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }
}
