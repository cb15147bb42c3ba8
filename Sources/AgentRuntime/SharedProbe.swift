/// One probe for every caller that asks while it runs (single flight). Both agents answer
/// `HEALTH` through one: under 50 concurrent requests the compute agent asks libvirtd once
/// at a time instead of 50 times behind the four threads of `BlockingExecutor.shared`, and
/// the storage agent runs its file checks once instead of queueing 50 runs behind its two
/// file threads (docs/benchmarks.md, agent request handling). No result is
/// kept: a caller gets a probe that was already running when it asked (at most one
/// probe's duration old) or one that starts for it.
public actor SharedProbe<Value: Sendable> {
    private var inFlight: Task<Value, Never>?
    private let body: @Sendable () async -> Value

    public init(_ body: @escaping @Sendable () async -> Value) { self.body = body }

    public func run() async -> Value {
        if let running = inFlight { return await running.value }
        let task = Task { await body() }
        inFlight = task
        let value = await task.value
        inFlight = nil
        return value
    }
}
