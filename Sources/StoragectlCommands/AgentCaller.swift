import AgentProtocol
import AgentRuntime

/// The seam between storagectl's flows and the network: one request to one host's agent.
/// The live one opens a session per call (HELLO included); tests inject a fake.
public protocol AgentCaller: Sendable {
    /// Sends `request` to `host`'s agent; `onLine` sees `DATA`/`PROGRESS` as they come.
    /// An `ERR` answer is in the response; transport failures throw.
    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response
}

extension AgentCaller {
    /// The `OK` fields, or the agent's error thrown.
    func ok(_ host: Inventory.Host, _ request: Request, timeout: Duration = .seconds(60),
            onLine: (@Sendable (ResponseLine) -> Void)? = nil) async throws(AgentError) -> Response {
        let response = try await call(host, request, timeout: timeout, onLine: onLine)
        _ = try response.get()
        return response
    }
}

public struct LiveAgentCaller: AgentCaller {
    public let tls: TLSFiles
    public let connectTimeout: Duration

    public init(tls: TLSFiles, connectTimeout: Duration) {
        self.tls = tls
        self.connectTimeout = connectTimeout
    }

    public func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
                     onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        do {
            return try await AgentClient.withSession(to: host.agent, connectTimeout: connectTimeout, tls: tls) { session in
                try await session.call(request, timeout: timeout, onLine: onLine)
            }
        } catch let e as AgentError {
            throw e
        } catch {
            throw AgentError(.unavailable, "\(host.name): \(error)")
        }
    }
}
