import AgentRuntime

/// One probe for every caller that asks while it runs (single flight). Under 50 concurrent
/// `HEALTH` requests the compute agent then opens one libvirt connection at a time instead
/// of queueing 50 (each a new connection to libvirtd) behind the four threads of
/// `BlockingExecutor.shared` (docs/benchmarks.md, agent request handling). No result is
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
