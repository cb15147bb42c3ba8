import AgentProtocol

/// One CephFS client session the MDS holds for a host, as `CEPH-SESSIONS` lists it.
public struct CephSession: Sendable, Equatable, AgentRecord {
    /// The MDS's session id (the client's global id), what `client evict id=` takes.
    public var id: UInt64
    /// The client's host name (`client_metadata.hostname`): a gateway's own name.
    public var host: String
    /// The CephFS user the client authenticated as (`client_metadata.entity_id`).
    public var user: String
    /// The MDS's state of the session (`open`, `stale`, `closing`, ...).
    public var state: String

    public init(id: UInt64, host: String, user: String, state: String) {
        self.id = id
        self.host = host
        self.user = user
        self.state = state
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        id = try r.uint64("id")
        host = try r.string("host")
        user = try r.optional("user") ?? ""
        state = try r.optional("state") ?? ""
    }

    public func encode(into w: inout FieldWriter) {
        w.add("id", id)
        w.add("host", host)
        w.add("user", user)
        w.add("state", state)
    }
}

/// `CEPH-SESSIONS`: the CephFS sessions of the gateways' NFS servers (the configured
/// Ceph user's), as the MDS lists them. Read-only. Only the `ganesha-ceph` backend
/// answers it (others: `unsupported`).
public struct CephSessionsQuery: AgentVerb, Equatable {
    public static let verb = "CEPH-SESSIONS"
    public var changesHost: Bool { false }
    public static let keys: [String] = []
    public init() {}
    public init(decoding reader: FieldReader) throws(AgentError) {}
    public func encode(into writer: inout FieldWriter) {}

    public struct Answer: Sendable, Equatable {
        public var sessions: [CephSession]
        /// The host name of the answering gateway.
        public var host: String

        public init(sessions: [CephSession], host: String) {
            self.sessions = sessions
            self.host = host
        }

        /// The sessions of `host`.
        public func of(_ host: String) -> [CephSession] { sessions.filter { $0.host == host } }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        Answer(sessions: try rows(data, verb: verb, as: CephSession.self), host: try FieldReader(answer: verb, ok).string("host"))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("host", a.host)
        w.add("sessions", a.sessions.count)
        return (a.sessions.map { $0.encoded() }, w.fields)
    }
}

/// `CEPH-EVICT host=H`: evicts every CephFS session of the configured Ceph user from
/// host H (a gateway that died: its sessions block the inodes it touched until they go).
/// Refused for the answering gateway's own host name. Idempotent: no session left
/// answers `evicted=0`. `OK host= evicted=N`.
public struct CephEvictRequest: AgentVerb, Equatable {
    public static let verb = "CEPH-EVICT"
    public var changesHost: Bool { true }
    public static let keys = ["host"]
    public var host: String

    public init(host: String) { self.host = host }
    public init(decoding r: FieldReader) throws(AgentError) {
        host = try r.string("host")
        guard Self.isHostName(host) else {
            throw AgentError(.invalidArgument, "host must be a host name (letters, digits, '.', '-'), not '\(host)'")
        }
    }
    public func encode(into w: inout FieldWriter) { w.add("host", host) }

    /// A host name as gethostname(2) gives it: 1-253 letters, digits, dots and dashes,
    /// not starting with a dash.
    public static func isHostName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 253 && !s.hasPrefix("-")
            && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }
    }

    public struct Answer: AgentRecord, Equatable {
        public var host: String
        public var evicted: Int

        public init(host: String, evicted: Int) {
            self.host = host
            self.evicted = evicted
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            host = try r.string("host")
            evicted = try r.int("evicted")
        }

        public func encode(into w: inout FieldWriter) {
            w.add("host", host)
            w.add("evicted", evicted)
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        try Answer(answer: verb, ok)
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) { ([], a.encoded()) }
}
