import AgentProtocol

/// One verb of protocol v1 as types: the request (encoded by storagectl, decoded and
/// validated for shape by the agent) and its answer (encoded by the agent, decoded by
/// storagectl). Both sides and the test fakes use these types; the wire spelling of each
/// verb is written once, in its type.
public protocol AgentVerb: Sendable {
    associatedtype Answer: Sendable
    /// The verb as it is written on the wire (`EXPORT`).
    static var verb: String { get }
    /// Every key the request may carry.
    static var keys: [String] { get }
    /// True for a request that changes the host (served to admins only: root on the unix
    /// socket, or a certificate on the agent's `allow-admin` list); false for one that
    /// only reads (readers too).
    var changesHost: Bool { get }
    /// Agent side: decodes a request's fields, refusing unknown keys and malformed values
    /// with `invalid-argument` naming the key.
    init(decoding reader: FieldReader) throws(AgentError)
    /// The request's fields, in wire order.
    func encode(into writer: inout FieldWriter)
    /// Client side: the answer from its `DATA` lines and `OK` fields.
    static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer
    /// Agent side: the `DATA` lines and the `OK` fields of an answer.
    static func encodeAnswer(_ answer: Answer) -> (data: [Fields], ok: Fields)
}

extension AgentVerb {
    /// The wire request.
    public var request: Request {
        var w = FieldWriter()
        encode(into: &w)
        return Request(Self.verb, w.fields)
    }

    /// Agent side: decodes `request` (whose verb must be this one).
    public init(_ request: Request) throws(AgentError) {
        try self.init(decoding: FieldReader(request: Self.verb, request.fields, allowed: Self.keys))
    }

    /// Client side: the typed answer, or the agent's `ERR` thrown.
    public static func answer(_ response: Response) throws(AgentError) -> Answer {
        let ok = try response.get()
        return try decodeAnswer(data: response.data, ok: ok)
    }
}

/// A verb whose answer has no `DATA` lines and whose `OK` line is one record.
public protocol AgentRecord: Sendable {
    init(decoding reader: FieldReader) throws(AgentError)
    func encode(into writer: inout FieldWriter)
}

extension AgentRecord {
    public func encoded() -> Fields {
        var w = FieldWriter()
        encode(into: &w)
        return w.fields
    }

    public init(answer verb: String, _ fields: Fields) throws(AgentError) {
        try self.init(decoding: FieldReader(answer: verb, fields))
    }
}

/// `PROGRESS done=N total=N [rate=N] [disk=D]` of COPY, LOCALIZE and CHECKSUM.
public struct TransferProgress: Sendable, Equatable, AgentRecord {
    public var done: UInt64
    public var total: UInt64
    /// Bytes per second, when the agent measured it.
    public var rate: UInt64?
    public var disk: String?

    public init(done: UInt64, total: UInt64, rate: UInt64? = nil, disk: String? = nil) {
        self.done = done
        self.total = total
        self.rate = rate
        self.disk = disk
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        done = try r.uint64("done")
        total = try r.uint64("total")
        rate = try r.optionalUInt64("rate")
        disk = try r.optional("disk").flatMap { $0.isEmpty ? nil : $0 }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("done", done)
        w.add("total", total)
        w.add("rate", rate)
        w.add("disk", disk)
    }

    /// The progress a `PROGRESS` line carries; nil for other lines or a malformed one.
    public static func from(_ line: ResponseLine, verb: String) -> TransferProgress? {
        guard case .progress(let f) = line else { return nil }
        return try? TransferProgress(answer: verb, f)
    }
}

extension AgentVerb where Answer: AgentRecord {
    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        try Answer(answer: verb, ok)
    }

    public static func encodeAnswer(_ answer: Answer) -> (data: [Fields], ok: Fields) {
        ([], answer.encoded())
    }
}

/// Decodes every `DATA` line of an answer as `Row`.
func rows<Row: AgentRecord>(_ data: [Fields], verb: String, as: Row.Type) throws(AgentError) -> [Row] {
    var out: [Row] = []
    for f in data { out.append(try Row(answer: verb, f)) }
    return out
}
