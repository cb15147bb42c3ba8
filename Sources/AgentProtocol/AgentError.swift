/// The one error vocabulary of storagectl.
///
/// Every failure that crosses a component boundary (agent to wire, wire to CLI, CLI to
/// exit status) is an `AgentError`. The wire spelling of each code is fixed by protocol
/// v1 (`docs/protocol.md`); the mapping to exit statuses lives in one place,
/// `StoragectlCommands/ExitStatus.swift`.
public struct AgentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Wire error codes of protocol v1. Adding a code is a protocol change.
    public enum Code: String, Sendable, CaseIterable, Equatable {
        case invalidArgument = "invalid-argument"
        case notFound = "not-found"
        case exists = "exists"
        case conflict = "conflict"
        case busy = "busy"
        case invalidState = "invalid-state"
        case unsupported = "unsupported"
        case unavailable = "unavailable"
        case timeout = "timeout"
        case permissionDenied = "permission-denied"
        case `internal` = "internal"
    }

    public var code: Code
    /// A sentence for an operator: what failed and, where known, what to do.
    public var message: String
    /// Extra key/values carried on the `ERR` line (for example `versions=1`).
    public var details: Fields

    public init(_ code: Code, _ message: String, details: Fields = Fields()) {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public static func invalidArgument(_ message: String) -> AgentError { AgentError(.invalidArgument, message) }
    public static func internalError(_ message: String) -> AgentError { AgentError(.internal, message) }
}
