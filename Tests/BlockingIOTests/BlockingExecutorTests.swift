import BlockingIO
import Foundation
import Testing

/// A counter safe to touch from the executor's threads.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var current = 0
    private(set) var peak = 0
    private(set) var log: [Int] = []

    func enter() {
        lock.lock()
        current += 1
        peak = max(peak, current)
        lock.unlock()
    }

    func leave() {
        lock.lock()
        current -= 1
        lock.unlock()
    }

    func append(_ value: Int) {
        lock.lock()
        log.append(value)
        lock.unlock()
    }

    var snapshot: (peak: Int, log: [Int]) {
        lock.lock()
        defer { lock.unlock() }
        return (peak, log)
    }
}

private struct Boom: Error, Equatable {
    let value: Int
}

@Suite("blocking executor")
struct BlockingExecutorTests {
    @Test("runs work on its own named threads, not on the caller's thread")
    func runsOnDedicatedThread() async throws {
        let executor = BlockingExecutor(name: "dedicated", threadCount: 2)
        defer { executor.shutdown() }
        let name = try await executor.run { Thread.current.name ?? "" }
        #expect(name == "dedicated-0" || name == "dedicated-1")
        // The kernel-visible thread name too (what `top -H` shows), not just Foundation's.
        let osName = try await executor.run {
            try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
        }
        #expect(osName.hasPrefix("dedicated-"))
        let isMain = try await executor.run { Thread.isMainThread }
        #expect(!isMain)
    }

    @Test("returns values and rethrows the job's own error")
    func resultsAndErrors() async throws {
        let executor = BlockingExecutor(name: "test-errors")
        defer { executor.shutdown() }
        #expect(try await executor.run { 6 * 7 } == 42)
        await #expect(throws: Boom(value: 7)) {
            try await executor.run { () throws -> Int in throw Boom(value: 7) }
        }
        // The thread survives a throwing job.
        #expect(try await executor.run { "still alive" } == "still alive")
    }

    @Test("a serial executor runs jobs in order on one thread")
    func serialOrder() async throws {
        let executor = BlockingExecutor(name: "test-serial", threadCount: 1)
        defer { executor.shutdown() }
        let counter = Counter()
        var names: Set<String> = []
        for index in 0..<20 {
            names.insert(try await executor.run {
                counter.append(index)
                return Thread.current.name ?? ""
            })
        }
        #expect(names == ["test-serial-0"])
        #expect(counter.snapshot.log == Array(0..<20))
    }

    @Test("runs up to threadCount jobs at once and completes every job")
    func concurrency() async throws {
        let executor = BlockingExecutor(name: "test-pool", threadCount: 3)
        defer { executor.shutdown() }
        let counter = Counter()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<24 {
                group.addTask {
                    try await executor.run {
                        counter.enter()
                        defer { counter.leave() }
                        usleep(10_000)
                        return index
                    }
                }
            }
            var all: [Int] = []
            for try await value in group { all.append(value) }
            return all.sorted()
        }
        #expect(results == Array(0..<24))
        #expect(counter.snapshot.peak <= 3)
        #expect(counter.snapshot.peak >= 2)
    }

    // A starved pool would hang rather than fail: the time limit turns that into a failure.
    @Test("jobs blocked on the executor leave the cooperative pool free", .timeLimit(.minutes(1)))
    func doesNotStarveCooperativePool() async throws {
        let blockers = 2 * max(ProcessInfo.processInfo.activeProcessorCount, 2)
        let executor = BlockingExecutor(name: "test-starve", threadCount: blockers)
        defer { executor.shutdown() }
        let gate = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        let jobs = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<blockers {
                    group.addTask {
                        try await executor.run {
                            started.signal()
                            gate.wait()
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        // Wait (off the pool) until every executor thread is blocked.
        try await executor.runDetachedWait(started, count: blockers)
        // More blocked jobs than cores, yet plain async work still runs, and at once.
        let start = ContinuousClock.now
        let sum = await Task.detached { (1...100).reduce(0, +) }.value
        let waited = ContinuousClock.now - start
        #expect(sum == 5050)
        #expect(waited < .seconds(5), "plain async work waited \(waited) beside blocked executor jobs")
        for _ in 0..<blockers { gate.signal() }
        try await jobs.value
    }

    @Test("a job cancelled before it starts is skipped and throws CancellationError")
    func cancellationBeforeStart() async throws {
        let executor = BlockingExecutor(name: "test-cancel", threadCount: 1)
        defer { executor.shutdown() }
        let gate = DispatchSemaphore(value: 0)
        let counter = Counter()
        let started = DispatchSemaphore(value: 0)
        let first = Task { try await executor.run { started.signal(); gate.wait(); return 1 } }
        // Wait until the first job occupies the only thread.
        try await executor.runDetachedWait(started, count: 1)
        let second = Task { try await executor.run { counter.append(2); return 2 } }
        try await Task.sleep(for: .milliseconds(20))
        second.cancel()
        await #expect(throws: CancellationError.self) { try await second.value }
        gate.signal()
        #expect(try await first.value == 1)
        // The skipped job never ran.
        #expect(try await executor.run { counter.snapshot.log } == [])
    }

    @Test("after shutdown, run throws shutDown")
    func shutdown() async throws {
        let executor = BlockingExecutor(name: "test-shutdown")
        #expect(try await executor.run { 1 } == 1)
        executor.shutdown()
        executor.shutdown()  // idempotent
        await #expect(throws: BlockingExecutorError.shutDown) { try await executor.run { 1 } }
    }
}

extension BlockingExecutor {
    /// Waits for `count` signals of `semaphore` on a helper thread (never on the pool).
    fileprivate func runDetachedWait(_ semaphore: DispatchSemaphore, count: Int) async throws {
        let helper = BlockingExecutor(name: "test-waiter")
        defer { helper.shutdown() }
        try await helper.run {
            for _ in 0..<count { semaphore.wait() }
        }
    }
}
