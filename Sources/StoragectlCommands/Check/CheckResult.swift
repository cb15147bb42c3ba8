import AgentAPI
import AgentProtocol
import AgentRuntime

/// The checks of `storagectl check`, by the names printed and carried in JSON (stable).
public enum CheckName: String, Sendable, Codable, CaseIterable {
    case storageReady = "storage-ready"
    case disks
    case destinationPool = "destination-pool"
    case libvirtReachable = "libvirt-reachable"
    case migrationPorts = "migration-ports"
    case cpu
    case memory
    case nameUUID = "name-uuid"
    case dirtyRate = "dirty-rate"
    case gateArmed = "gate-armed"
    /// Only for a VM on a CephFS gateway cluster.
    case gateways
}

/// A check's verdict. Only `fail` stops `migrate`.
public enum CheckOutcome: String, Sendable, Codable, CaseIterable {
    case pass, warn, fail, skip
}

/// One measured value of a check (`free-memory=3.1 GiB`), in the order it is printed.
public struct Measured: Sendable, Equatable {
    public var key: String
    public var value: String
    public init(_ key: String, _ value: String) { self.key = key; self.value = value }
}

/// One check's result: what was measured, what it means, and for a warn or a fail what
/// to do. `code` is the agent's error code when an agent call made the check fail.
public struct CheckResult: Sendable, Equatable, Encodable {
    public var name: CheckName
    public var result: CheckOutcome
    public var measured: [Measured]
    /// What the check found (one sentence).
    public var sentence: String
    /// What to do (warn and fail); empty for pass and skip.
    public var remedy: String
    public var code: AgentError.Code?

    public init(_ name: CheckName, _ result: CheckOutcome, _ measured: [Measured] = [], _ sentence: String, remedy: String = "",
                code: AgentError.Code? = nil) {
        self.name = name
        self.result = result
        self.measured = measured
        self.sentence = sentence
        self.remedy = remedy
        self.code = code
    }

    /// A check that could not be run because an agent call failed: a fail carrying the
    /// agent's own words.
    static func agentFailed(_ name: CheckName, host: String, verb: String, _ e: AgentError, measured: [Measured] = []) -> CheckResult {
        CheckResult(name, .fail, measured, "\(verb) on \(host) failed: \(e.message) [\(e.code.rawValue)]",
                    remedy: FlowContext.remedy(e).isEmpty ? "see the agent's log on \(host) (journalctl -u compute-agent), then run check again"
                                                          : FlowContext.remedy(e),
                    code: e.code)
    }

    static func skip(_ name: CheckName, _ why: String) -> CheckResult { CheckResult(name, .skip, [], why) }

    enum CodingKeys: String, CodingKey { case name, result, measured, sentence, remedy, code }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(result, forKey: .result)
        var m = c.nestedContainer(keyedBy: AnyKey.self, forKey: .measured)
        for v in measured { try m.encode(v.value, forKey: AnyKey(v.key)) }
        try c.encode(sentence, forKey: .sentence)
        try c.encode(remedy, forKey: .remedy)
        try c.encodeIfPresent(code?.rawValue, forKey: .code)
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// The whole of a `check` run.
public struct CheckReport: Sendable, Equatable, Encodable {
    public var vm: String
    public var source: String
    public var destination: String
    public var uri: String
    /// `live` or `offline`.
    public var mode: String
    public var state: String
    public var checks: [CheckResult]
    /// Milliseconds the run took (locate to the last answer).
    public var milliseconds: UInt64

    /// Nothing failed: `migrate` may start.
    public var ok: Bool { !checks.contains { $0.result == .fail } }
    public var failed: [CheckResult] { checks.filter { $0.result == .fail } }

    enum CodingKeys: String, CodingKey { case vm, source, destination, uri, mode, state, checks, milliseconds, ok }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vm, forKey: .vm)
        try c.encode(source, forKey: .source)
        try c.encode(destination, forKey: .destination)
        try c.encode(uri, forKey: .uri)
        try c.encode(mode, forKey: .mode)
        try c.encode(state, forKey: .state)
        try c.encode(ok, forKey: .ok)
        try c.encode(checks, forKey: .checks)
        try c.encode(milliseconds, forKey: .milliseconds)
    }

    /// 0 when nothing failed; when a check failed because an agent could not be reached
    /// (or timed out, or refused the client), that error's usual status (69, 75, 77, 64);
    /// otherwise 65.
    public var exitStatus: Int32 {
        let failed = self.failed
        guard !failed.isEmpty else { return 0 }
        let transport: [AgentError.Code] = [.unavailable, .timeout, .busy, .permissionDenied, .unsupported]
        if let code = failed.compactMap(\.code).first(where: transport.contains) { return ExitStatus.code(for: code) }
        return 65
    }
}
