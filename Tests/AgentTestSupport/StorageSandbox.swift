import AgentAPI
import AgentProtocol
import AgentRuntime
import ExportsFile
import Foundation
import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

/// A backend for tests: records every plan and answers as told. Lives with the tests
/// only; the product has no fake backends.
public final class RecordingApplier: ExportsApplier, @unchecked Sendable {
    // Invariant: every field is touched with `lock` held.
    private let lock = NSLock()
    private var _applied: [ApplyPlan] = []
    private var _failures: [AgentError?] = []
    private var _live = false

    public init() {}

    public var backend: ExportsBackend { .kernel }

    /// Plans passed to `apply`, in order.
    public var applied: [ApplyPlan] { lock.withLock { _applied } }

    /// The next `apply` calls fail with these errors (nil = succeed), in order.
    public func failNext(_ errors: [AgentError?]) { lock.withLock { _failures = errors } }

    /// Whether `problems` reports the plan live.
    public func setLive(_ live: Bool) { lock.withLock { _live = live } }

    public func problems(_ plan: ApplyPlan, file: ExportsFile) async -> [String] {
        lock.withLock { _live ? [] : ["not live (test)"] }
    }

    public func apply(_ plan: ApplyPlan, file: ExportsFile) async throws(AgentError) -> ApplyReport {
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
public struct Sandbox: Sendable {
    public let dir: String
    public var exports: String { dir + "/exports" }
    public var root: String { dir + "/root" }

    public init(exports text: String? = "# admin\n/srv/data 198.18.0.9(ro,sync,no_subtree_check)\n") throws {
        var template = Array("/tmp/sctl-sac-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw AgentError(.internal, "mkdtemp failed")
        }
        dir = String(cString: p)
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        if let text { try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/exports")) }
    }

    public func configuration(clients: [String] = ["198.18.0.2", "198.18.0.3"]) -> StorageAgentConfiguration {
        var c = StorageAgentConfiguration()
        c.exportsFile = exports
        c.exportRoot = root
        c.allowedClients = clients
        c.etabPath = dir + "/etab"
        c.lockTimeout = .milliseconds(300)
        return c
    }

    public func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    public func remove() { try? FileManager.default.removeItem(atPath: dir) }
}
