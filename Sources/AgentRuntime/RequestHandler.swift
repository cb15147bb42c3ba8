import AgentAPI
import AgentProtocol

/// Who an agent is; answered in `HELLO` and `HEALTH`.
public struct AgentIdentity: Sendable {
    public var agent: String
    public var version: String
    public var host: String
    public var started: ContinuousClock.Instant

    public init(agent: String, version: String = StoragectlVersion.current, host: String, started: ContinuousClock.Instant = .now) {
        self.agent = agent
        self.version = version
        self.host = host
        self.started = started
    }

    /// Whole seconds since the agent started.
    public var uptimeSeconds: Int64 { (ContinuousClock.now - started).components.seconds }
}

public enum StoragectlVersion {
    public static let current = "0.1.0"
}

/// How a connection reached the agent.
public enum Transport: String, Sendable {
    /// Local unix socket; the peer is root (checked with SO_PEERCRED).
    case unix
    /// Plain TCP: nobody is authenticated; only read-only verbs are served.
    case tcp
    /// TCP with mutual TLS: the peer presented a certificate signed by our CA.
    case tls
}

/// What a handler knows about the request's connection.
public struct RequestContext: Sendable {
    public var identity: AgentIdentity
    /// `unix uid=0 pid=123`, `tcp 198.18.0.2:41234` or `tls 198.18.0.2:41234`.
    public var peer: String
    public var protocolVersion: Int
    public var transport: Transport
    /// Who the peer is (a unix uid, a client certificate's subject and names).
    public var client: PeerIdentity
    /// Who may do what on this agent.
    public var policy: AccessPolicy

    public init(identity: AgentIdentity, peer: String, protocolVersion: Int, transport: Transport,
                client: PeerIdentity? = nil, policy: AccessPolicy = AccessPolicy()) {
        self.identity = identity
        self.peer = peer
        self.protocolVersion = protocolVersion
        self.transport = transport
        self.client = client ?? PeerIdentity(transport: transport, uid: transport == .unix ? 0 : nil)
        self.policy = policy
    }

    /// The peer's role here: admin, reader or summary (docs/security.md).
    public var role: AccessRole { policy.role(of: client) }

    /// Every verb calls this with its decoded request before it does anything: a request
    /// that changes the host needs the admin role, one that only reads the reader role;
    /// anything else is `permission-denied` naming the peer and the config key.
    public func authorize<V: AgentVerb>(_ request: V) throws(AgentError) {
        try policy.authorize(V.verb + (request.changesHost && V.verb == VerifyRequest.verb ? " with a nonce" : ""),
                             needs: request.changesHost ? .admin : .reader, peer: client)
    }
}

/// Streams `DATA` and `PROGRESS` lines before the terminal line.
public struct ReplyStream: Sendable {
    let write: @Sendable (ResponseLine) async throws -> Void
    let hold: (@Sendable ([ResponseLine]) throws -> Void)?

    /// `write` sends one line now; `hold`, when given, keeps lines to go out together with
    /// the next line sent (one write and one TLS flush for a whole typed answer: the server's).
    public init(write: @escaping @Sendable (ResponseLine) async throws -> Void,
                hold: (@Sendable ([ResponseLine]) throws -> Void)? = nil) {
        self.write = write
        self.hold = hold
    }

    /// Sends a `DATA` line. Throws when the client has gone; long jobs may keep going.
    public func data(_ fields: Fields) async throws { try await write(.data(fields)) }
    public func progress(_ fields: Fields) async throws { try await write(.progress(fields)) }
    public func progress(_ progress: TransferProgress) async throws { try await write(.progress(progress.encoded())) }

    /// Sends a typed answer's `DATA` lines and returns its `OK` fields. The lines go out
    /// with the terminal line that follows them, in one write (`hold`), where the server
    /// offers it.
    public func answer<V: AgentVerb>(_ verb: V.Type, _ answer: V.Answer) async throws -> Fields {
        let (data, ok) = V.encodeAnswer(answer)
        if let hold {
            try hold(data.map { .data($0) })
        } else {
            for line in data { try await write(.data(line)) }
        }
        return ok
    }
}

/// An agent's verbs. The server answers `HELLO` and `PING` itself and passes every other
/// verb here. Errors that are not `AgentError` are reported as `internal`.
public protocol RequestHandler: Sendable {
    /// Verbs this handler answers, for the unknown-verb message.
    var verbs: [String] { get }
    /// Answers one request; returns the fields of the `OK` line.
    func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields
}

extension RequestHandler {
    /// The error for a verb this agent does not know.
    public func unknownVerb(_ verb: String) -> AgentError {
        AgentError(.unsupported, "unknown verb '\(verb)'; this agent answers: \((["HELLO", "PING"] + verbs).joined(separator: ", "))")
    }
}
