import AgentAPI
import AgentProtocol
import AgentRuntime

/// The seam between storagectl's flows and the network: requests to the hosts' agents.
/// The live one keeps one session per agent for the whole command; tests inject an
/// in-process one.
public protocol AgentCaller: Sendable {
    /// Sends `request` to `host`'s agent; `onLine` sees `DATA`/`PROGRESS` as they come.
    /// An `ERR` answer is in the response; transport failures throw.
    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response

    /// The same on another connection to `host`'s agent, named `connection` (opened on
    /// first use, kept for the command): for a request that must not queue behind a long
    /// one on the first (``AgentSessionPool/call(_:_:timeout:connection:onLine:)``).
    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration, connection: String,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response
}

extension AgentCaller {
    /// Callers without sessions (in-process agents) need no second connection.
    public func call(_ host: Inventory.Host, _ request: Request, timeout: Duration, connection: String,
                     onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        try await call(host, request, timeout: timeout, onLine: onLine)
    }
}

extension AgentCaller {
    /// One typed request: its answer decoded, or the agent's `ERR` thrown. `progress`
    /// sees every `PROGRESS` line as it comes.
    public func send<V: AgentVerb>(_ host: Inventory.Host, _ verb: V, timeout: Duration = .seconds(60),
                                   progress: (@Sendable (TransferProgress) -> Void)? = nil) async throws(AgentError) -> V.Answer {
        var onLine: (@Sendable (ResponseLine) -> Void)?
        if let progress {
            onLine = { @Sendable (line: ResponseLine) -> Void in
                if let p = TransferProgress.from(line, verb: V.verb) { progress(p) }
            }
        }
        return try V.answer(try await call(host, verb.request, timeout: timeout, onLine: onLine))
    }

    /// One typed request on the connection named `connection` (nil: the first one);
    /// `onLine` sees every `DATA`/`PROGRESS` line as it comes.
    public func send<V: AgentVerb>(_ host: Inventory.Host, _ verb: V, timeout: Duration = .seconds(60), connection: String?,
                                   onLine: (@Sendable (ResponseLine) -> Void)? = nil) async throws(AgentError) -> V.Answer {
        if let connection {
            return try V.answer(try await call(host, verb.request, timeout: timeout, connection: connection, onLine: onLine))
        }
        return try V.answer(try await call(host, verb.request, timeout: timeout, onLine: onLine))
    }
}

/// The agents over the network: one session per agent (``AgentSessionPool``).
public struct LiveAgentCaller: AgentCaller {
    public let pool: AgentSessionPool

    public init(pool: AgentSessionPool) { self.pool = pool }

    public func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
                     onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        try await call(host, request, timeout: timeout, connection: nil, onLine: onLine)
    }

    public func call(_ host: Inventory.Host, _ request: Request, timeout: Duration, connection: String,
                     onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        try await call(host, request, timeout: timeout, connection: Optional(connection), onLine: onLine)
    }

    private func call(_ host: Inventory.Host, _ request: Request, timeout: Duration, connection: String?,
                      onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        do {
            return try await pool.call(host.agent, request, timeout: timeout, connection: connection, onLine: onLine)
        } catch {
            throw error.code == .unavailable || error.code == .timeout ? AgentError(error.code, "\(host.name): \(error.message)") : error
        }
    }

    /// Runs `body` with a caller whose sessions close when it returns.
    public static func with<T: Sendable>(_ inventory: Inventory, connectTimeout: Duration,
                                         _ body: @escaping @Sendable (LiveAgentCaller) async throws -> T) async throws -> T {
        try await AgentSessionPool.withPool(tls: inventory.tls, connectTimeout: connectTimeout) { pool in
            try await body(LiveAgentCaller(pool: pool))
        }
    }
}
