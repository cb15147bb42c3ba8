import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import TestSupport
@testable import ComputeAgentCore
#if canImport(Glibc)
import Glibc
#endif

extension SimHost {
    /// Sends one request as a root peer on the unix socket (or over plain TCP).
    func ask(_ line: String, transport: Transport = .unix, client: PeerIdentity? = nil,
             policy: AccessPolicy = AccessPolicy()) async -> (lines: [ResponseLine], result: Result<Fields, AgentError>) {
        let collected = Collected()
        let context = RequestContext(identity: AgentIdentity(agent: "compute-agent", host: "sim"),
                                     peer: transport == .unix ? "unix uid=0 pid=1" : "\(transport.rawValue) 198.18.0.9:1234",
                                     protocolVersion: 1, transport: transport, client: client, policy: policy)
        do {
            let request = try Request.parse(line)
            let ok = try await handler.handle(request, context: context, reply: collected.stream)
            return (collected.lines, .success(ok))
        } catch let e as AgentError {
            return (collected.lines, .failure(e))
        } catch {
            return (collected.lines, .failure(AgentError(.internal, "\(error)")))
        }
    }
}

final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var _lines: [ResponseLine] = []
    var lines: [ResponseLine] { lock.withLock { _lines } }
    var stream: ReplyStream { ReplyStream { line in self.lock.withLock { self._lines.append(line) } } }
}

extension Array where Element == ResponseLine {
    var data: [Fields] { compactMap { if case .data(let f) = $0 { return f } else { return nil } } }
}

extension Result where Failure == AgentError {
    var error: AgentError? { if case .failure(let e) = self { return e } else { return nil } }
    var ok: Success? { try? get() }
}
