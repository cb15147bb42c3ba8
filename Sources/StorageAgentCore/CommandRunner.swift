import AgentProtocol
import CAgentSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a child process did.
struct CommandOutput: Sendable {
    var status: Int32
    /// stdout and stderr interleaved, as the program printed them.
    var output: String
    var elapsed: Duration
}

/// Runs programs with an argument vector (never a shell). Blocking: use `BlockingWork`.
///
/// `posix_spawn` + `waitpid` rather than Foundation's `Process`: Process reaps children
/// through a CFRunLoop source, which was seen to fail inside a network namespace
/// ("Could not create wakeup socket pair for CFSocket") and leave the caller waiting on
/// a zombie forever.
enum CommandRunner {
    /// Runs `argv` with a minimal environment (`PATH`, `LC_ALL=C` so that messages can be
    /// read), stdin from /dev/null, stdout and stderr into one pipe, default signal
    /// dispositions and an empty signal mask. Kills the child with SIGKILL after
    /// `timeout` and throws `timeout`; throws `unavailable` when it cannot be started.
    static func run(_ argv: [String], timeout: Duration) throws(AgentError) -> CommandOutput {
        let start = ContinuousClock.now
        var fds: [Int32] = [-1, -1]
        // pipe2 is not imported; the window before FD_CLOEXEC only matters to a
        // concurrent fork elsewhere in the process, and that child would get EOF late.
        guard pipe(&fds) == 0 else {
            throw AgentError(.internal, "pipe failed: \(PosixFiles.errorText())")
        }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        let readEnd = fds[0], writeEnd = fds[1]
        defer { close(readEnd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        // nothing else of the agent: its client connections are not O_CLOEXEC (SwiftNIO)
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

        let cArgs = argv.map { strdup($0) } + [nil]
        let environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, cEnv)
        close(writeEnd)
        guard spawned == 0 else {
            throw AgentError(.unavailable, "cannot run \(argv[0]): \(PosixFiles.errorText(spawned))")
        }

        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        let deadline = start + timeout
        var timedOut = false
        while true {
            let left = deadline - ContinuousClock.now
            if left <= .zero { timedOut = true; break }
            var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            let ms = min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000, 200)
            let ready = poll(&pfd, 1, Int32(max(1, ms)))
            if ready < 0 && errno != EINTR { break }
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(readEnd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }  // EOF: the child (and any grandchild) closed the pipe
            if bytes.count < 1 << 20 { bytes.append(contentsOf: buffer[0..<n]) }
        }
        var status: Int32 = 0
        while !timedOut {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { break }
            if reaped < 0 && errno != EINTR {
                throw AgentError(.internal, "waitpid(\(pid)) failed: \(PosixFiles.errorText())")
            }
            if ContinuousClock.now >= deadline { timedOut = true; break }
            usleep(1000)
        }
        if timedOut {
            kill(pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            throw AgentError(.timeout, "\(argv.joined(separator: " ")) did not finish within \(timeout); it was killed")
        }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return CommandOutput(status: exitCode, output: String(decoding: bytes, as: UTF8.self),
                             elapsed: ContinuousClock.now - start)
    }
}
