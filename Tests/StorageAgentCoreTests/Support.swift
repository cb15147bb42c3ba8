import AgentAPI
import AgentProtocol
import AgentRuntime
import ExportsFile
import Foundation
@testable import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

/// A backend for tests: records every plan and answers as told. Lives in the test
/// target only; the product has no fake backends.
final class RecordingApplier: ExportsApplier, @unchecked Sendable {
    // Invariant: every field is touched with `lock` held.
    private let lock = NSLock()
    private var _applied: [ApplyPlan] = []
    private var _failures: [AgentError?] = []
    private var _live = false

    var backend: ExportsBackend { .kernel }

    /// Plans passed to `apply`, in order.
    var applied: [ApplyPlan] { lock.withLock { _applied } }

    /// The next `apply` calls fail with these errors (nil = succeed), in order.
    func failNext(_ errors: [AgentError?]) { lock.withLock { _failures = errors } }

    /// Whether `problems` reports the plan live.
    func setLive(_ live: Bool) { lock.withLock { _live = live } }

    func problems(_ plan: ApplyPlan, file: ExportsFile) async -> [String] {
        lock.withLock { _live ? [] : ["not live (test)"] }
    }

    func apply(_ plan: ApplyPlan, file: ExportsFile) async throws(AgentError) -> ApplyReport {
        let failure: AgentError? = lock.withLock {
            _applied.append(plan)
            return _failures.isEmpty ? nil : _failures.removeFirst()
        }
        if let failure { throw failure }
        lock.withLock { _live = true }
        return ApplyReport(reloaded: true)
    }
}

/// A temporary directory with an exports file and an export root.
struct Sandbox {
    let dir: String
    var exports: String { dir + "/exports" }
    var root: String { dir + "/root" }

    init(exports text: String? = "# admin\n/srv/data 198.18.0.9(ro,sync,no_subtree_check)\n") throws {
        var template = Array("/tmp/sctl-sac-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw AgentError(.internal, "mkdtemp failed")
        }
        dir = String(cString: p)
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        if let text { try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/exports")) }
    }

    func configuration(clients: [String] = ["198.18.0.2", "198.18.0.3"]) -> StorageAgentConfiguration {
        var c = StorageAgentConfiguration()
        c.exportsFile = exports
        c.exportRoot = root
        c.allowedClients = clients
        c.etabPath = dir + "/etab"
        c.lockTimeout = .milliseconds(300)
        return c
    }

    func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

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
