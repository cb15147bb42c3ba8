import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import ExportsFile
import Foundation
@testable import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

/// Collects DATA lines.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var _lines: [ResponseLine] = []
    var lines: [ResponseLine] { lock.withLock { _lines } }
    var stream: ReplyStream {
        ReplyStream { line in self.lock.withLock { self._lines.append(line) } }
    }
    var data: [Fields] {
        lines.compactMap { if case .data(let f) = $0 { return f } else { return nil } }
    }
}

func request(_ line: String) throws -> Request { try Request.parse(line) }

/// The verbs as root on the unix socket asks them: through `handle`, as the server does.
extension StorageAgentHandler {
    static let rootContext = RequestContext(identity: AgentIdentity(agent: "storage-agent", host: "test"), peer: "unix uid=0 pid=1",
                                            protocolVersion: 1, transport: .unix)

    func export(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try await handle(request, context: Self.rootContext, reply: reply)
    }
    func unexport(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try await handle(request, context: Self.rootContext, reply: reply)
    }
    func checksum(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try await handle(request, context: Self.rootContext, reply: reply)
    }
    func exports(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try await handle(request, context: Self.rootContext, reply: reply)
    }
    func space(_ request: Request) async throws -> Fields {
        try await handle(request, context: Self.rootContext, reply: ReplyStream { _ in })
    }
}
