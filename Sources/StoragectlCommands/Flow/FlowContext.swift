import AgentAPI
import AgentProtocol
import AgentRuntime

/// What a flow tells its display as it goes.
public enum ShareEvent: Sendable, Equatable {
    case step(ShareStep, host: String, detail: String)
    case progress(disk: String, done: UInt64, total: UInt64, bytesPerSecond: Double)
    case note(String)
}

/// The steps of the flows, by name (`share`: locate to adopt; `unshare`: locate,
/// preflight, localize, verify and unexport).
public enum ShareStep: String, Sendable, Codable, CaseIterable {
    case locate, preflight, export, pool, copy, checksum, verify, adopt
    case localize, unexport
    case check, migrate
}

/// A failed step: which host, the agent's own words, and what to do.
public struct ShareFailure: Error, Sendable, CustomStringConvertible {
    public var step: ShareStep
    public var host: String
    public var error: AgentError
    public var remedy: String
    /// The user stopped the run (Ctrl-C): storagectl exits 130, whatever the error's code.
    public var interrupted = false

    public init(step: ShareStep, host: String, error: AgentError, remedy: String, interrupted: Bool = false) {
        self.step = step
        self.host = host
        self.error = error
        self.remedy = remedy
        self.interrupted = interrupted
    }

    /// The exit status: 130 when interrupted, else the error code's (ExitStatus).
    public var exitStatus: Int32 { interrupted ? 130 : ExitStatus.code(for: error.code) }

    public var description: String {
        "\(step.rawValue) on \(host) failed: \(error.message) [\(error.code.rawValue)]" + (remedy.isEmpty ? "" : "\n  what to do: \(remedy)")
    }
}

/// What every step of a flow works with: the inventory, the agents, the display.
public struct FlowContext: Sendable {
    public let inventory: Inventory
    public let caller: any AgentCaller
    public let emit: @Sendable (ShareEvent) -> Void
    /// Returns when the user asks to stop (Ctrl-C); must return when its task is
    /// cancelled. Steps that start a job on an agent race it (``sendLive``).
    public let interrupted: @Sendable () async -> Void

    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void = { _ in },
                interrupted: @escaping @Sendable () async -> Void = { await MigrateFlow.never() }) {
        self.inventory = inventory
        self.caller = caller
        self.emit = emit
        self.interrupted = interrupted
    }

    /// Runs `body` as `step` on `host`, turning an agent error into a `ShareFailure`
    /// with `remedy` (or the usual one for its code).
    func step<T>(_ step: ShareStep, _ host: Inventory.Host, remedy: String = "",
                 _ body: () async throws(AgentError) -> T) async throws(ShareFailure) -> T {
        do {
            return try await body()
        } catch {
            // An agent that does not know a verb, a key or a value this storagectl sends or
            // reads is of another version, whatever else the step would advise.
            let advice = error.code == .unsupported || remedy.isEmpty ? Self.remedy(error) : remedy
            throw ShareFailure(step: step, host: host.name, error: error, remedy: advice)
        }
    }

    /// One typed request as `step` on `host`.
    func send<V: AgentVerb>(_ step: ShareStep, _ host: Inventory.Host, _ verb: V, timeout: Duration = .seconds(60), remedy: String = "",
                            progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws(ShareFailure) -> V.Answer {
        let caller = self.caller
        return try await self.step(step, host, remedy: remedy) { () throws(AgentError) in
            try await caller.send(host, verb, timeout: timeout, progress: progress)
        }
    }

    /// Forwards an agent's progress to the display.
    var showProgress: @Sendable (TransferProgress) -> Void {
        let emit = self.emit
        return { p in emit(.progress(disk: p.disk ?? "?", done: p.done, total: p.total, bytesPerSecond: Double(p.rate ?? 0))) }
    }

    static func remedy(_ e: AgentError) -> String {
        switch e.code {
        case .unavailable: return "check that the agent runs on that host (storagectl hosts), then run the command again"
        case .timeout, .busy: return "run the command again; it continues where it stopped"
        case .permissionDenied: return "reach the agent over tls: with a client certificate (docs/install.md)"
        case .unsupported: return "upgrade storage-agent and compute-agent on every host to this storagectl's version, then run the command again"
        default: return ""
        }
    }

    /// Runs `body` for every item (a host, a storage site) at once; results in the order
    /// of `items`.
    ///
    /// Child tasks return only an index and a `Result` built outside typed-throws
    /// `do`/`catch` (a release build of Swift 6.3 crashed copying a
    /// `(Inventory.Host, Result<_, AgentError>)` out of a task group built that way).
    static func concurrently<Item: Sendable, T: Sendable>(_ items: [Item],
                                                          _ body: @escaping @Sendable (Item) async throws -> T) async -> [Result<T, AgentError>] {
        await withTaskGroup(of: (Int, Result<T, AgentError>).self) { group in
            for (i, h) in items.enumerated() {
                group.addTask { (i, await capture { try await body(h) }) }
            }
            var results = [Result<T, AgentError>?](repeating: nil, count: items.count)
            for await (i, r) in group { results[i] = r }
            return results.map { $0! }
        }
    }

    static func capture<T>(_ body: () async throws -> T) async -> Result<T, AgentError> {
        do {
            return .success(try await body())
        } catch let e as AgentError {
            return .failure(e)
        } catch {
            return .failure(AgentError(.internal, "\(error)"))
        }
    }
}

/// One named step of a flow: a function over the flow's context and its run state.
public struct FlowStep<Run: Sendable>: Sendable {
    public let name: ShareStep
    let body: @Sendable (FlowContext, inout Run) async throws(ShareFailure) -> Void

    init(_ name: ShareStep, _ body: @escaping @Sendable (FlowContext, inout Run) async throws(ShareFailure) -> Void) {
        self.name = name
        self.body = body
    }

    /// Runs `steps` in order over `run`; a step may end the flow early (`done`).
    /// `timed` hears each finished step's wall seconds.
    static func run(_ steps: [FlowStep<Run>], _ context: FlowContext, _ run: inout Run,
                    until done: (Run) -> Bool = { _ in false },
                    timed: (ShareStep, Double, inout Run) -> Void = { _, _, _ in }) async throws(ShareFailure) {
        for step in steps {
            let started = ContinuousClock.now
            try await step.body(context, &run)
            timed(step.name, (ContinuousClock.now - started).seconds, &run)
            if done(run) { return }
        }
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
