import AgentProtocol
import Foundation
import ProcessSpawn
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
/// Spawning and reaping are `ProcessSpawn.SpawnedProcess`'s (shared with the tests).
enum CommandRunner {
    /// Runs `argv` with a minimal environment (`PATH`, `LC_ALL=C` so that messages can be
    /// read), stdin from /dev/null, stdout and stderr into one pipe, default signal
    /// dispositions and an empty signal mask. Kills the child with SIGKILL after
    /// `timeout` and throws `timeout`; throws `unavailable` when it cannot be started.
    static func run(_ argv: [String], timeout: Duration) throws(AgentError) -> CommandOutput {
        let start = ContinuousClock.now
        let deadline = start + timeout
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

        let child: SpawnedProcess
        do {
            child = try SpawnedProcess(argv[0], Array(argv.dropFirst()),
                                     environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"],
                                     stdout: .descriptor(writeEnd), stderr: .sameAsStdout)
        } catch {
            close(writeEnd)
            throw AgentError(.unavailable, error.description, cause: error)
        }
        close(writeEnd)

        // Read until EOF (the child and any grandchild closed the pipe) or the deadline.
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        var readTimedOut = false
        while true {
            let left = deadline - ContinuousClock.now
            if left <= .zero { readTimedOut = true; break }
            var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            let ms = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
            let ready = poll(&pfd, 1, Int32(clamping: max(1, ms)))
            if ready < 0 && errno != EINTR { break }
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(readEnd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            if bytes.count < 1 << 20 { bytes.append(contentsOf: buffer[0..<n]) }
        }
        // Blocks until the exit; the deadline's timer kills this child if it runs on.
        let (status, killed) = child.waitForExit(deadline: deadline)
        if killed || readTimedOut {
            throw AgentError(.timeout, "\(argv.joined(separator: " ")) did not finish within \(timeout); it was killed")
        }
        return CommandOutput(status: status, output: String(decoding: bytes, as: UTF8.self),
                             elapsed: ContinuousClock.now - start)
    }
}
