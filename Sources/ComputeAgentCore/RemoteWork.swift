import AgentProtocol
import BlockingIO
import Foundation
import Libvirt

/// Where the compute agent runs requests that reach an NFS server through libnfs as
/// root (VERIFY, LOCALIZE's planning, COPY's presence check, libnfs-mode ADOPT): their
/// own two threads, never `ComputeWork`'s (DOMAIN, POOL-ENSURE and the libvirt calls of
/// every verb), and each answer bounded in time.
///
/// A libnfs call to a server that never answers cannot be interrupted: when the
/// deadline passes the request is answered `timeout` and the thread stays blocked
/// until libnfs gives up (its own timeout, `SharedFiles.withNFS`). A job whose request
/// has already been answered is skipped when it reaches a thread.
enum RemoteWork {
    static let executor = BlockingExecutor(name: "compute-nfs", threadCount: 2)
    /// The deadlines' timer queue: a serial queue of its own (an overcommitting one), so
    /// a deadline fires on time even while Dispatch's global queues are busy.
    static let deadlines = DispatchQueue(label: "compute-nfs-deadlines")

    /// Runs `body` on ``executor``; `what` names the work in the `timeout` message.
    /// What it throws becomes a protocol error through ``ErrorMapping``, as in `ComputeWork`.
    static func run<T: Sendable>(timeout: Duration, what: String,
                                 _ body: @escaping @Sendable () throws -> T) async throws(AgentError) -> T {
        let race = Race<T>()
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, AgentError>, Never>) in
            race.install(continuation)
            let accepted = executor.submit {
                guard !race.isDone else { return }   // answered (timed out) while queued
                let result: Result<T, AgentError>
                do { result = .success(try body()) } catch {
                    result = .failure(ErrorMapping.agentError(error))
                }
                race.finish(result)
            }
            if !accepted { race.finish(.failure(AgentError(.unavailable, "the agent is stopping"))) }
            deadlines.asyncAfter(deadline: .now() + seconds) {
                race.finish(.failure(AgentError(.timeout, "\(what) took longer than \(Int(seconds)) s (is the NFS server reachable?); try again")))
            }
        }
        return try outcome.get()
    }

    /// The first of the job and the deadline resumes the request; the other is ignored.
    private final class Race<T: Sendable>: @unchecked Sendable {
        // Invariant: `continuation` and `done` are only touched with `lock` held.
        private let lock = NSLock()
        private var continuation: CheckedContinuation<Result<T, AgentError>, Never>?
        private var done = false

        var isDone: Bool { lock.withLock { done } }

        func install(_ c: CheckedContinuation<Result<T, AgentError>, Never>) { lock.withLock { continuation = c } }

        func finish(_ result: Result<T, AgentError>) {
            let c: CheckedContinuation<Result<T, AgentError>, Never>? = lock.withLock {
                guard !done else { return nil }
                done = true
                defer { continuation = nil }
                return continuation
            }
            c?.resume(returning: result)
        }
    }
}
