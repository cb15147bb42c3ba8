import Foundation

/// Runs blocking work (libvirt and libnfs calls, file I/O, `fsync`) on dedicated threads,
/// so that it never occupies a thread of Swift's cooperative pool.
///
/// Every executor owns `threadCount` threads named `"<name>-<index>"`, created in `init`
/// and kept until ``shutdown()`` (or `deinit`). Jobs run in FIFO order; with
/// `threadCount == 1` the executor is serial and every job runs on the same thread,
/// which suits C libraries whose contexts are bound to one thread (libnfs).
///
/// Cancellation: a job that has not started when its task is cancelled is skipped and
/// ``run(_:)`` throws `CancellationError`; a job that has started runs to completion
/// (a blocking C call cannot be interrupted from outside).
///
/// Thread-safety: all methods may be called from any thread or task.
public final class BlockingExecutor: Sendable {
    /// A process-wide executor with a few threads for code that has no executor of its own.
    public static let shared = BlockingExecutor(name: "blocking-io", threadCount: 4)

    /// The prefix of every thread name of this executor.
    public let name: String
    /// The number of threads that run jobs.
    public let threadCount: Int

    private let queue: JobQueue

    /// Starts `threadCount` (at least 1) threads named `"<name>-0"`, `"<name>-1"`, ...
    public init(name: String, threadCount: Int = 1) {
        precondition(threadCount >= 1, "a BlockingExecutor needs at least one thread")
        self.name = name
        self.threadCount = threadCount
        self.queue = JobQueue()
        for index in 0..<threadCount {
            let queue = self.queue
            let threadName = "\(name)-\(index)"
            let thread = Thread {
                Thread.current.name = threadName
                setKernelThreadName(threadName)
                queue.drain()
            }
            thread.name = threadName
            thread.start()
        }
    }

    deinit {
        queue.close()
    }

    /// Runs `body` on one of this executor's threads and returns its result, or rethrows
    /// its error. Suspends the calling task (not its thread) until `body` finishes.
    ///
    /// - Throws: what `body` throws; `CancellationError` if the task was cancelled
    ///   before `body` started; ``BlockingExecutorError/shutDown`` after ``shutdown()``.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try Task.checkCancellation()
        let job = PendingJob<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                job.install(continuation)
                let accepted = queue.enqueue {
                    guard job.start() else { return }  // cancelled while queued: already resumed
                    do {
                        job.finish(.success(try body()))
                    } catch {
                        job.finish(.failure(error))
                    }
                }
                if !accepted {
                    job.abandon(BlockingExecutorError.shutDown)
                }
            }
        } onCancel: {
            job.cancelIfNotStarted()
        }
    }

    /// Queues `job` without waiting for it (for callers that race it against a deadline
    /// and must not wait for a blocking call that never returns). Returns false after
    /// ``shutdown()``.
    @discardableResult
    public func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        queue.enqueue(job)
    }

    /// Stops accepting jobs; the threads finish the jobs already queued, then exit.
    /// Idempotent. Later ``run(_:)`` calls throw ``BlockingExecutorError/shutDown``.
    public func shutdown() {
        queue.close()
    }
}

/// Sets the calling thread's name as the kernel shows it (`ps -T`, `top -H`, crash
/// reports). Foundation's `Thread.name` does not do this on Linux, and a new thread
/// otherwise inherits its creator's name (e.g. a Dispatch worker's). Best effort.
private func setKernelThreadName(_ name: String) {
    #if os(Linux)
    // The kernel keeps 15 bytes; writing our own thread's comm needs no privileges.
    let bytes = Array(name.utf8.prefix(15))
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    #endif
}

/// Errors of ``BlockingExecutor`` itself (errors of the jobs pass through unchanged).
public enum BlockingExecutorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The executor was shut down before the job could be queued.
    case shutDown

    public var description: String {
        switch self {
        case .shutDown: return "the blocking executor has been shut down"
        }
    }
}

/// FIFO of closures guarded by a condition variable; threads block in `drain()`.
private final class JobQueue: @unchecked Sendable {
    // Invariant: `jobs` and `closed` are only touched with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var closed = false

    /// Appends a job; returns false (and drops it) if the queue is closed.
    func enqueue(_ job: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Runs jobs until the queue is closed and empty.
    func drain() {
        while let job = next() {
            job()
        }
    }

    private func next() -> (@Sendable () -> Void)? {
        condition.lock()
        defer { condition.unlock() }
        while head == jobs.count && !closed {
            condition.wait()
        }
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        head += 1
        if head > 64 && head * 2 > jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }
}

/// The state one `run` call shares between the caller, the worker thread and the
/// cancellation handler; whoever moves it out of `.waiting` resumes the continuation.
private final class PendingJob<T: Sendable>: @unchecked Sendable {
    private enum State {
        case waiting
        case started
        case done
    }

    // Invariant: `state` and `continuation` are only touched with `lock` held.
    private let lock = NSLock()
    private var state = State.waiting
    private var cancelledEarly = false
    private var continuation: CheckedContinuation<T, any Error>?

    func install(_ continuation: CheckedContinuation<T, any Error>) {
        lock.lock()
        if cancelledEarly {
            state = .done
            lock.unlock()
            continuation.resume(throwing: CancellationError())
            return
        }
        self.continuation = continuation
        lock.unlock()
    }

    /// Called by the worker before running the body; false if the job was cancelled.
    func start() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard state == .waiting, continuation != nil else { return false }
        state = .started
        return true
    }

    func finish(_ result: Result<T, any Error>) {
        lock.lock()
        let continuation = self.continuation
        self.continuation = nil
        state = .done
        lock.unlock()
        continuation?.resume(with: result)
    }

    /// The job could not be queued.
    func abandon(_ error: any Error) {
        lock.lock()
        guard state == .waiting, let continuation else {
            lock.unlock()
            return
        }
        self.continuation = nil
        state = .done
        lock.unlock()
        continuation.resume(throwing: error)
    }

    func cancelIfNotStarted() {
        lock.lock()
        guard state == .waiting else {
            lock.unlock()
            return
        }
        guard let continuation else {
            // The handler ran before the continuation was installed.
            cancelledEarly = true
            lock.unlock()
            return
        }
        self.continuation = nil
        state = .done
        lock.unlock()
        continuation.resume(throwing: CancellationError())
    }
}
