/// The one error vocabulary of storagectl.
///
/// Every failure that crosses a component boundary (agent to wire, wire to CLI, CLI to
/// exit status) is an `AgentError`. The wire spelling of each code is fixed by protocol
/// v1 (`docs/protocol.md`); the mapping to exit statuses lives in one place,
/// `AgentRuntime/ExitStatus.swift`.
public struct AgentError: Error, Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
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
    /// The underlying failure this error was made from (a `LibvirtError`, an errno, a
    /// copy-engine error), for logs. Never sent on the wire and not part of `==`: two
    /// errors that read the same to a client are equal.
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, details: Fields = Fields(), cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.details = details
        self.cause = cause
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// `description` followed by the chain of causes, for logs (not for the wire).
    public var debugDescription: String {
        var text = description
        var next = cause
        while let c = next {
            if let inner = c as? AgentError {
                text += " (caused by \(inner.description))"
                next = inner.cause
            } else {
                text += " (caused by \(String(reflecting: c)))"
                next = nil
            }
        }
        return text
    }

    /// Code, message and details; the cause is deliberately left out.
    public static func == (lhs: AgentError, rhs: AgentError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.details == rhs.details
    }

    public static func invalidArgument(_ message: String) -> AgentError { AgentError(.invalidArgument, message) }
    public static func internalError(_ message: String) -> AgentError { AgentError(.internal, message) }
}
