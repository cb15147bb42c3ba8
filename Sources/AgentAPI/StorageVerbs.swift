import AgentProtocol

/// How the storage agent applies the exports it writes.
public enum ExportsBackend: String, Sendable, Codable, CaseIterable {
    /// nfs-utils: `exportfs -ra`, then verify from its output and `/var/lib/nfs/etab`.
    case kernel
    /// NFS-Ganesha: EXPORT blocks in an include file, SIGHUP to ganesha, then verify.
    case ganesha
    /// A gateway of a CephFS cluster: NFS-Ganesha EXPORT blocks with `FSAL CEPH` (the
    /// export root is a CephFS directory mounted at the same path on the gateway).
    case ganeshaCeph = "ganesha-ceph"
}

/// A `DATA warning=...` line of `EXPORT` and `UNEXPORT`.
public enum ExportWarning: Sendable, Equatable, AgentRecord {
    /// A foreign entry exports a parent (`parent-exported`) or a child (`child-exported`)
    /// of the path, at `foreign` (`FILE:LINE`).
    case parentExported(path: String, foreign: String)
    case childExported(path: String, foreign: String)
    /// What the reload tool printed about entries that are not ours.
    case reloadTool(String)

    public init(decoding r: FieldReader) throws(AgentError) {
        switch try r.string("warning") {
        case "parent-exported": self = .parentExported(path: try r.string("path"), foreign: try r.string("foreign"))
        case "child-exported": self = .childExported(path: try r.string("path"), foreign: try r.string("foreign"))
        default: self = .reloadTool(try r.optional("text") ?? "")
        }
    }

    public func encode(into w: inout FieldWriter) {
        switch self {
        case .parentExported(let path, let foreign), .childExported(let path, let foreign):
            if case .parentExported = self { w.add("warning", "parent-exported") } else { w.add("warning", "child-exported") }
            w.add("path", path)
            w.add("foreign", foreign)
        case .reloadTool(let text):
            w.add("warning", "reload-tool")
            w.add("text", text)
        }
    }
}

/// `EXPORT path=PATH client=HOST...`: PATH exported to every HOST, live.
public struct ExportRequest: AgentVerb, Equatable {
    public static let verb = "EXPORT"
    public var changesHost: Bool { true }
    public static let keys = ["path", "client"]
    public var path: String
    public var clients: [String]

    public init(path: String, clients: [String]) {
        self.path = path
        self.clients = clients
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        path = try r.string("path")
        clients = r.all("client")
        guard !clients.isEmpty else {
            throw AgentError(.invalidArgument, "EXPORT needs at least one client=HOST (a compute host from the inventory)")
        }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("path", path)
        w.addEach("client", clients)
    }

    public struct Answer: Sendable, Equatable {
        public var path: String
        /// Every client the path is exported to now.
        public var clients: [String]
        public var changed: Bool
        public var fsid: String
        public var backend: ExportsBackend
        public var warnings: [ExportWarning]

        public init(path: String, clients: [String], changed: Bool, fsid: String, backend: ExportsBackend, warnings: [ExportWarning] = []) {
            self.path = path
            self.clients = clients
            self.changed = changed
            self.fsid = fsid
            self.backend = backend
            self.warnings = warnings
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(path: try r.string("path"), clients: try r.list("clients"), changed: try r.bool("changed"),
                      fsid: try r.optional("fsid") ?? "", backend: try r.value("backend", as: ExportsBackend.self),
                      warnings: try rows(data, verb: verb, as: ExportWarning.self))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("path", a.path)
        w.addList("clients", a.clients)
        w.add("changed", a.changed)
        w.add("fsid", a.fsid)
        w.add("backend", a.backend)
        return (a.warnings.map { $0.encoded() }, w.fields)
    }
}

/// `UNEXPORT path=PATH [client=HOST...]`: PATH no longer exported to each HOST (or to
/// anyone).
public struct UnexportRequest: AgentVerb, Equatable {
    public static let verb = "UNEXPORT"
    public var changesHost: Bool { true }
    public static let keys = ["path", "client"]
    public var path: String
    public var clients: [String]

    public init(path: String, clients: [String] = []) {
        self.path = path
        self.clients = clients
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        path = try r.string("path")
        clients = r.all("client")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("path", path)
        w.addEach("client", clients)
    }

    public struct Answer: Sendable, Equatable {
        public var path: String
        /// The clients left; empty once storagectl no longer exports the path.
        public var clients: [String]
        public var changed: Bool
        public var backend: ExportsBackend
        /// `FILE:LINE` of each line outside the managed block that still exports the path.
        public var foreign: [String]
        public var warnings: [ExportWarning]

        public init(path: String, clients: [String], changed: Bool, backend: ExportsBackend, foreign: [String] = [], warnings: [ExportWarning] = []) {
            self.path = path
            self.clients = clients
            self.changed = changed
            self.backend = backend
            self.foreign = foreign
            self.warnings = warnings
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(path: try r.string("path"), clients: try r.list("clients"), changed: try r.bool("changed"),
                      backend: try r.value("backend", as: ExportsBackend.self), foreign: r.all("foreign"),
                      warnings: try rows(data, verb: verb, as: ExportWarning.self))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("path", a.path)
        w.addList("clients", a.clients)
        w.add("changed", a.changed)
        w.add("backend", a.backend)
        w.addEach("foreign", a.foreign)
        return (a.warnings.map { $0.encoded() }, w.fields)
    }
}

/// One entry of the exports file, as `EXPORTS` lists it.
public struct ExportRecord: Sendable, Equatable, AgentRecord {
    public enum Owner: String, Sendable, CaseIterable { case storagectl, foreign }
    public var owner: Owner
    public var path: String
    public var line: Int
    /// Client hosts; `*` for an anonymous client (exports to everyone).
    public var clients: [String]
    public var fsid: String?
    /// Why a line of the managed block is not valid (edited by hand).
    public var invalid: String?
    /// A foreign entry exports a path of ours (or ours one of theirs).
    public var conflict: Bool
    public var text: String
    /// How many clients (and bytes of `text`) were left out to keep the line within the
    /// protocol's limit (a foreign entry with hundreds of clients).
    public var clientsOmitted: Int?
    public var textTruncated: Bool

    public init(owner: Owner, path: String, line: Int, clients: [String], fsid: String? = nil, invalid: String? = nil,
                conflict: Bool = false, text: String, clientsOmitted: Int? = nil, textTruncated: Bool = false) {
        self.clientsOmitted = clientsOmitted
        self.textTruncated = textTruncated
        self.owner = owner
        self.path = path
        self.line = line
        self.clients = clients
        self.fsid = fsid
        self.invalid = invalid
        self.conflict = conflict
        self.text = text
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        owner = try r.value("owner", as: Owner.self)
        path = try r.string("path")
        line = try r.int("line")
        clients = try r.list("clients")
        fsid = try r.optional("fsid")
        invalid = try r.optional("invalid")
        conflict = try r.bool("conflict", default: false)
        text = try r.optional("text") ?? ""
        clientsOmitted = try r.optionalUInt64("clients-omitted").map { (n: UInt64) throws(AgentError) -> Int in
            guard let count = Int(exactly: n) else { throw AgentError(.unsupported, "EXPORTS answered clients-omitted=\(n), which is not a count") }
            return count
        }
        textTruncated = try r.bool("text-truncated", default: false)
    }

    /// The same record cut to fit in one protocol line: `text` to 1 KiB, then clients
    /// dropped from the end (counted in `clients-omitted`) until it fits.
    public func fitted(limit: Int = Wire.maxLineBytes) -> ExportRecord {
        func size(_ r: ExportRecord) -> Int { ResponseLine.data(r.encoded()).line.utf8.count }
        guard size(self) > limit else { return self }
        var r = self
        if r.text.utf8.count > 1024 {
            r.text = String(decoding: Array(r.text.utf8.prefix(1024)), as: UTF8.self)
            r.textTruncated = true
        }
        var dropped = 0
        while size(r) > limit, !r.clients.isEmpty {
            let cut = max(1, r.clients.count / 8)
            r.clients.removeLast(cut)
            dropped += cut
            r.clientsOmitted = dropped
        }
        return r
    }

    public func encode(into w: inout FieldWriter) {
        w.add("owner", owner)
        w.add("path", path)
        w.add("line", line)
        w.addList("clients", clients)
        w.add("fsid", fsid)
        w.add("invalid", invalid)
        if conflict { w.add("conflict", true) }
        w.add("text", text)
        w.add("clients-omitted", clientsOmitted.map(UInt64.init))
        if textTruncated { w.add("text-truncated", true) }
    }
}

/// `EXPORTS`: every entry of the exports file, read-only.
public struct ExportsQuery: AgentVerb, Equatable {
    public static let verb = "EXPORTS"
    public var changesHost: Bool { false }
    public static let keys: [String] = []
    public init() {}
    public init(decoding reader: FieldReader) throws(AgentError) {}
    public func encode(into writer: inout FieldWriter) {}

    public enum BlockState: String, Sendable, CaseIterable { case present, absent, malformed }

    public struct Answer: Sendable, Equatable {
        public var records: [ExportRecord]
        public var block: BlockState
        public var backend: ExportsBackend

        public init(records: [ExportRecord], block: BlockState, backend: ExportsBackend) {
            self.records = records
            self.block = block
            self.backend = backend
        }

        /// The clients storagectl exports `path` to.
        public func managedClients(of path: String) -> [String] {
            records.filter { $0.owner == .storagectl && $0.path == path }.flatMap(\.clients)
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(records: try rows(data, verb: verb, as: ExportRecord.self),
                      block: try r.value("block", as: BlockState.self), backend: try r.value("backend", as: ExportsBackend.self))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("exports", a.records.count)
        w.add("managed", a.records.filter { $0.owner == .storagectl }.count)
        w.add("foreign", a.records.filter { $0.owner == .foreign }.count)
        w.add("conflicts", a.records.filter(\.conflict).count)
        w.add("block", a.block)
        w.add("backend", a.backend)
        return (a.records.map { $0.encoded() }, w.fields)
    }
}

/// `SPACE [path=P]`: the file system holding P (default: the export root).
public struct SpaceQuery: AgentVerb, Equatable {
    public static let verb = "SPACE"
    public var changesHost: Bool { false }
    public static let keys = ["path"]
    public var path: String?

    public init(path: String? = nil) { self.path = path }
    public init(decoding r: FieldReader) throws(AgentError) { path = try r.optional("path") }
    public func encode(into w: inout FieldWriter) { w.add("path", path) }

    public struct Answer: AgentRecord, Equatable {
        public var path: String
        public var total: UInt64
        public var free: UInt64
        /// What non-root writers may still use (statvfs f_bavail).
        public var available: UInt64

        public init(path: String, total: UInt64, free: UInt64, available: UInt64) {
            self.path = path
            self.total = total
            self.free = free
            self.available = available
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            path = try r.string("path")
            total = try r.uint64("total")
            free = try r.uint64("free")
            available = try r.uint64("available")
        }

        public func encode(into w: inout FieldWriter) {
            w.add("path", path)
            w.add("total", total)
            w.add("free", free)
            w.add("available", available)
        }
    }
}

/// `CHECKSUM path=P`: the content digest of P on the storage host's own disk.
public struct ChecksumRequest: AgentVerb, Equatable {
    public static let verb = "CHECKSUM"
    public var changesHost: Bool { false }
    public static let keys = ["path"]
    public var path: String

    public init(path: String) { self.path = path }
    public init(decoding r: FieldReader) throws(AgentError) { path = try r.string("path") }
    public func encode(into w: inout FieldWriter) { w.add("path", path) }

    public struct Answer: AgentRecord, Equatable {
        public var path: String
        public var size: UInt64
        /// The content digest (docs/protocol.md, "Content digest"): `xxh3-128:` and 32
        /// lowercase hex digits; any other spelling is refused as `unsupported`.
        public var digest: String
        /// How long the reading took, as the agent wrote it (`0.12`).
        public var seconds: String

        public init(path: String, size: UInt64, digest: String, seconds: String) {
            self.path = path
            self.size = size
            self.digest = digest
            self.seconds = seconds
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            path = try r.string("path")
            size = try r.uint64("size")
            digest = try r.contentDigest("digest")
            seconds = try r.optional("seconds") ?? ""
        }

        public func encode(into w: inout FieldWriter) {
            w.add("path", path)
            w.add("size", size)
            w.add("digest", digest)
            w.add("seconds", seconds)
        }
    }
}
