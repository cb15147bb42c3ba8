import AgentProtocol
import Foundation

/// How the compute hosts reach the share.
public enum AttachMode: String, Sendable, CaseIterable, Codable {
    /// A libvirt netfs pool (kernel NFS mount); disks are files under the pool's target.
    case mount
    /// No kernel mount; disks become NFS network disks that QEMU opens with libnfs.
    case libnfs
}

/// A domain's state as the protocol spells it: `virsh domstate`'s words with `-` for
/// spaces. Values this build does not know are kept as they were sent.
public struct DomainRunState: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let running = DomainRunState(rawValue: "running")
    public static let shutOff = DomainRunState(rawValue: "shut-off")
    public static let paused = DomainRunState(rawValue: "paused")
    public static let unknown = DomainRunState(rawValue: "unknown")

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// Where on the share a verb works: a pool of this host, a pool found by its target path
/// (ADOPT only), or an NFS server and export reached through libnfs.
public enum ShareRef: Sendable, Equatable {
    case pool(String)
    case poolTarget(String)
    case nfs(server: String, export: String)

    static func decode(_ r: FieldReader, allowPoolTarget: Bool) throws(AgentError) -> ShareRef {
        let pool = try r.optional("pool")
        let server = try r.optional("server")
        let export = try r.optional("export")
        let target = allowPoolTarget ? try r.optional("pool-target") : nil
        let given = [pool != nil, server != nil || export != nil, target != nil].filter { $0 }.count
        guard given == 1 else {
            let choices = allowPoolTarget ? "pool=NAME, pool-target=PATH or attach=libnfs server=HOST export=PATH"
                                          : "pool=NAME or server=HOST export=PATH"
            throw AgentError.invalidArgument("\(r.verb) needs exactly one of \(choices)")
        }
        if let pool { return .pool(pool) }
        if let target { return .poolTarget(target) }
        guard let server, let export else {
            throw AgentError.invalidArgument("\(r.verb) needs both server= and export=")
        }
        return .nfs(server: server, export: export)
    }

    func encode(into w: inout FieldWriter) {
        switch self {
        case .pool(let p): w.add("pool", p)
        case .poolTarget(let t): w.add("pool-target", t)
        case .nfs(let server, let export):
            w.add("server", server)
            w.add("export", export)
        }
    }
}

/// The share a verb worked on, as its `OK` line names it:
/// `[pool=] server= export= attach= [target=]`.
public struct ShareFacts: Sendable, Equatable, AgentRecord {
    public var pool: String?
    public var server: String
    public var export: String
    public var attach: AttachMode
    public var target: String?

    public init(pool: String?, server: String, export: String, attach: AttachMode, target: String?) {
        self.pool = pool
        self.server = server
        self.export = export
        self.attach = attach
        self.target = target
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        pool = try r.optional("pool")
        server = try r.string("server")
        export = try r.string("export")
        attach = try r.value("attach", as: AttachMode.self)
        target = try r.optional("target")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("pool", pool)
        w.add("server", server)
        w.add("export", export)
        w.add("attach", attach)
        w.add("target", target)
    }
}

// MARK: - DOMAIN, DOMAINS

/// One disk of a domain, as `DOMAIN` reports it.
public struct DiskRecord: Sendable, Equatable, Codable, AgentRecord {
    /// The target device (`vda`).
    public var target: String
    /// `file`, `block`, `network` or `volume`.
    public var type: String
    /// `disk`, `cdrom`, `floppy`, ...
    public var device: String
    /// File path, device, or `nfs://HOST/NAME` for a network disk.
    public var source: String
    public var format: String
    public var virtualSize: UInt64?
    public var allocated: UInt64?
    public var cache: String
    public var readOnly: Bool
    /// The backing chain, nearest first; empty when there is none.
    public var backing: [String]
    /// A file disk whose image does not exist.
    public var missing: Bool
    /// The file system type under a file or block disk's source (`nfs`, `ext4`), as
    /// MIGRATION-FACTS reports it; nil elsewhere.
    public var fileSystem: String?

    public init(target: String, type: String, device: String = "disk", source: String, format: String = "",
                virtualSize: UInt64? = nil, allocated: UInt64? = nil, cache: String = "default", readOnly: Bool = false,
                backing: [String] = [], missing: Bool = false, fileSystem: String? = nil) {
        self.target = target
        self.type = type
        self.device = device
        self.source = source
        self.format = format
        self.virtualSize = virtualSize
        self.allocated = allocated
        self.cache = cache
        self.readOnly = readOnly
        self.backing = backing
        self.missing = missing
        self.fileSystem = fileSystem
    }

    public var isDisk: Bool { device == "disk" }
    public var isNetwork: Bool { type == "network" }
    public var isFile: Bool { type == "file" }

    public init(decoding r: FieldReader) throws(AgentError) {
        target = try r.string("disk")
        type = try r.string("type")
        device = try r.optional("device") ?? "disk"
        source = try r.optional("source") ?? ""
        format = try r.optional("format") ?? ""
        virtualSize = try r.optionalUInt64("virtual-size")
        allocated = try r.optionalUInt64("allocated")
        cache = try r.optional("cache") ?? "default"
        readOnly = try r.bool("readonly", default: false)
        backing = r.all("backing").filter { !$0.isEmpty }
        missing = try r.bool("missing", default: false)
        fileSystem = try r.optional("fs")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("disk", target)
        w.add("type", type)
        w.add("device", device)
        w.add("source", source)
        w.add("format", format)
        w.add("virtual-size", virtualSize)
        w.add("allocated", allocated)
        w.add("cache", cache)
        if readOnly { w.add("readonly", true) }
        // One empty backing= says "no backing chain" (not "unknown").
        if backing.isEmpty { w.add("backing", "") }
        w.addEach("backing", backing)
        if missing { w.add("missing", true) }
        w.add("fs", fileSystem)
    }
}

/// `DOMAIN name=NAME`: a domain's disks, identity and state.
public struct DomainQuery: AgentVerb, Equatable {
    public static let verb = "DOMAIN"
    public var changesHost: Bool { false }
    public static let keys = ["name"]
    public var name: String

    public init(name: String) { self.name = name }
    public init(decoding r: FieldReader) throws(AgentError) { name = try r.string("name") }
    public func encode(into w: inout FieldWriter) { w.add("name", name) }

    public struct Answer: Sendable, Equatable {
        public var name: String
        public var uuid: String
        public var state: DomainRunState
        public var persistent: Bool
        public var disks: [DiskRecord]

        public init(name: String, uuid: String, state: DomainRunState, persistent: Bool, disks: [DiskRecord]) {
            self.name = name
            self.uuid = uuid
            self.state = state
            self.persistent = persistent
            self.disks = disks
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(name: try r.string("name"), uuid: try r.string("uuid"), state: try r.value("state", as: DomainRunState.self),
                      persistent: try r.bool("persistent"), disks: try rows(data, verb: verb, as: DiskRecord.self))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("name", a.name)
        w.add("uuid", a.uuid)
        w.add("state", a.state)
        w.add("persistent", a.persistent)
        w.add("disks", a.disks.count)
        return (a.disks.map { $0.encoded() }, w.fields)
    }
}

/// One domain of `DOMAINS`.
public struct DomainListing: Sendable, Equatable, AgentRecord {
    public var name: String
    public var state: DomainRunState
    public var persistent: Bool
    /// Some disk is on a share of this host (a netfs pool's target, or an NFS network disk).
    public var shared: Bool

    public init(name: String, state: DomainRunState, persistent: Bool, shared: Bool) {
        self.name = name
        self.state = state
        self.persistent = persistent
        self.shared = shared
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("name")
        state = try r.value("state", as: DomainRunState.self)
        persistent = try r.bool("persistent")
        shared = try r.bool("shared")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("name", name)
        w.add("state", state)
        w.add("persistent", persistent)
        w.add("shared", shared)
    }
}

/// `DOMAINS`: every persistent or running domain of the host.
public struct DomainsQuery: AgentVerb, Equatable {
    public static let verb = "DOMAINS"
    public var changesHost: Bool { false }
    public static let keys: [String] = []
    public init() {}
    public init(decoding reader: FieldReader) throws(AgentError) {}
    public func encode(into writer: inout FieldWriter) {}

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> [DomainListing] {
        try rows(data, verb: verb, as: DomainListing.self)
    }

    public static func encodeAnswer(_ a: [DomainListing]) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("domains", a.count)
        w.add("shared", a.filter(\.shared).count)
        return (a.map { $0.encoded() }, w.fields)
    }
}

// MARK: - POOL-ENSURE

/// `POOL-ENSURE name= server= export= [target=] [attach=] [nfs-version=]`.
public struct PoolEnsureRequest: AgentVerb, Equatable {
    public static let verb = "POOL-ENSURE"
    public var changesHost: Bool { true }
    public static let keys = ["name", "server", "export", "target", "attach", "nfs-version"]
    public var name: String
    public var server: String
    public var export: String
    /// The mount point (attach=mount only).
    public var target: String?
    public var attach: AttachMode
    /// As asked; the agent refuses anything but `3`.
    public var nfsVersion: String

    public init(name: String, server: String, export: String, target: String?, attach: AttachMode = .mount, nfsVersion: String = "3") {
        self.name = name
        self.server = server
        self.export = export
        self.target = target
        self.attach = attach
        self.nfsVersion = nfsVersion
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("name")
        server = try r.string("server")
        export = try r.string("export")
        attach = try r.optionalValue("attach", as: AttachMode.self) ?? .mount
        nfsVersion = try r.optional("nfs-version") ?? "3"
        switch attach {
        case .mount: target = try r.string("target")
        case .libnfs:
            if r.has("target") {
                throw .invalidArgument("target= is for attach=mount; in attach=libnfs nothing is mounted")
            }
            target = nil
        }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("name", name)
        w.add("server", server)
        w.add("export", export)
        w.add("target", target)
        if attach != .mount { w.add("attach", attach) }
        if nfsVersion != "3" { w.add("nfs-version", nfsVersion) }
    }

    public struct Answer: AgentRecord, Equatable {
        public var name: String
        public var attach: AttachMode
        public var server: String
        public var export: String
        public var target: String?
        public var nfsVersion: String
        /// Mount mode: `netfs`, the mount options, whether it is active and autostarted.
        public var mountOptions: [String]
        public var active: Bool
        public var autostart: Bool
        public var changed: Bool
        /// What was done (`defined,built,started,autostarted`, or `recorded`).
        public var actions: [String]

        public init(name: String, attach: AttachMode, server: String, export: String, target: String?, nfsVersion: String,
                    mountOptions: [String], active: Bool, autostart: Bool, changed: Bool, actions: [String]) {
            self.name = name
            self.attach = attach
            self.server = server
            self.export = export
            self.target = target
            self.nfsVersion = nfsVersion
            self.mountOptions = mountOptions
            self.active = active
            self.autostart = autostart
            self.changed = changed
            self.actions = actions
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            name = try r.string("name")
            attach = try r.value("attach", as: AttachMode.self)
            server = try r.string("server")
            export = try r.string("export")
            target = try r.optional("target")
            nfsVersion = try r.optional("nfs-version") ?? "3"
            // Mount options are a mount mode fact (a libnfs share mounts nothing).
            mountOptions = attach == .mount ? WireValue.list(try r.optional("mount-options") ?? "") : []
            if attach == .mount {
                active = try r.string("state") == "active"
                autostart = try r.bool("autostart")
            } else {
                active = try r.bool("ready", default: true)
                autostart = true
            }
            changed = try r.bool("changed")
            actions = WireValue.list(try r.optional("actions") ?? "")
        }

        public func encode(into w: inout FieldWriter) {
            w.add("name", name)
            w.add("attach", attach)
            w.add("server", server)
            w.add("export", export)
            w.add("target", target)
            w.add("nfs-version", nfsVersion)
            if attach == .mount {
                w.add("type", "netfs")
                w.addList("mount-options", mountOptions)
                w.add("state", active ? "active" : "inactive")
                w.add("autostart", autostart)
            } else {
                w.add("ready", active)
            }
            w.add("changed", changed)
            w.addList("actions", actions)
        }

        /// `active`, `inactive` (mount mode) or `ready` (libnfs).
        public var stateWord: String { attach == .libnfs ? "ready" : (active ? "active" : "inactive") }
    }
}

// MARK: - COPY

/// One disk in a COPY answer: copied (or found identical on the share), or left alone.
public enum CopyRow: Sendable, Equatable, AgentRecord {
    case copied(CopiedImage)
    /// A disk COPY leaves alone (`network`, `cdrom`, `floppy`, `already-shared`).
    case skipped(disk: String, source: String, reason: String)

    public init(decoding r: FieldReader) throws(AgentError) {
        if let reason = try r.optional("skipped") {
            self = .skipped(disk: try r.string("disk"), source: try r.optional("source") ?? "", reason: reason)
        } else {
            self = .copied(try CopiedImage(decoding: r))
        }
    }

    public func encode(into w: inout FieldWriter) {
        switch self {
        case .copied(let c): c.encode(into: &w)
        case .skipped(let disk, let source, let reason):
            w.add("disk", disk)
            w.add("source", source)
            w.add("skipped", reason)
        }
    }
}

/// A disk COPY put on the share: `DIR/FILE` under the export.
public struct CopiedImage: Sendable, Equatable, AgentRecord {
    public var disk: String
    public var source: String
    /// Relative to the export (`wanderer1/wanderer1.qcow2`).
    public var path: String
    public var size: UInt64
    public var dataBytes: UInt64
    /// The content digest of the copy.
    public var digest: String
    public var alreadyPresent: Bool

    public init(disk: String, source: String, path: String, size: UInt64, dataBytes: UInt64, digest: String, alreadyPresent: Bool) {
        self.disk = disk
        self.source = source
        self.path = path
        self.size = size
        self.dataBytes = dataBytes
        self.digest = digest
        self.alreadyPresent = alreadyPresent
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        disk = try r.string("disk")
        source = try r.optional("source") ?? ""
        path = try r.string("path")
        size = try r.uint64("size")
        dataBytes = try r.optionalUInt64("data-bytes") ?? size
        digest = try r.contentDigest("digest")
        alreadyPresent = try r.bool("already-present", default: false)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("disk", disk)
        w.add("source", source)
        w.add("path", path)
        w.add("size", size)
        w.add("data-bytes", dataBytes)
        w.add("digest", digest)
        w.add("already-present", alreadyPresent)
    }
}

/// `COPY domain=NAME (pool=POOL | server=HOST export=PATH)`.
public struct CopyRequest: AgentVerb, Equatable {
    public static let verb = "COPY"
    public var changesHost: Bool { true }
    public static let keys = ["domain", "pool", "server", "export"]
    public var domain: String
    public var share: ShareRef

    public init(domain: String, share: ShareRef) {
        self.domain = domain
        self.share = share
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        domain = try r.string("domain")
        share = try ShareRef.decode(r, allowPoolTarget: false)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("domain", domain)
        share.encode(into: &w)
    }

    public struct Answer: Sendable, Equatable {
        public var rows: [CopyRow]
        public var domain: String
        public var share: ShareFacts
        public var bytes: UInt64
        public var attached: Bool
        public var restarted: Bool
        /// How long the copy took, as the agent wrote it.
        public var seconds: Double?

        public init(rows: [CopyRow], domain: String, share: ShareFacts, bytes: UInt64, attached: Bool, restarted: Bool, seconds: Double?) {
            self.rows = rows
            self.domain = domain
            self.share = share
            self.bytes = bytes
            self.attached = attached
            self.restarted = restarted
            self.seconds = seconds
        }

        public var copies: [CopiedImage] {
            rows.compactMap { if case .copied(let c) = $0 { return c } else { return nil } }
        }
        /// The number of disks the job copied (the `disks=` of the answer).
        public var disks: Int { copies.count }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(rows: try rows(data, verb: verb, as: CopyRow.self), domain: try r.string("domain"),
                      share: try ShareFacts(decoding: r), bytes: try r.uint64("bytes"), attached: try r.bool("attached", default: false),
                      restarted: try r.bool("restarted", default: false), seconds: try r.optionalDouble("seconds"))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("domain", a.domain)
        a.share.encode(into: &w)
        w.add("disks", a.disks)
        w.add("bytes", a.bytes)
        w.add("state", "done")
        w.add("attached", a.attached)
        w.add("restarted", a.restarted)
        // As the agent rounded it (tenths); written exactly, so it reads back the same.
        if let s = a.seconds { w.add("seconds", String(s)) }
        return (a.rows.map { $0.encoded() }, w.fields)
    }
}

// MARK: - ADOPT, RESTORE

/// A disk moved by ADOPT (`from` the local image `to` its shared copy) or by LOCALIZE.
public struct MovedDisk: Sendable, Equatable, AgentRecord {
    public var disk: String
    public var from: String
    public var to: String

    public init(disk: String, from: String, to: String) {
        self.disk = disk
        self.from = from
        self.to = to
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        disk = try r.string("disk")
        from = try r.string("from")
        to = try r.string("to")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("disk", disk)
        w.add("from", from)
        w.add("to", to)
    }
}

/// `ADOPT domain=NAME (pool= | pool-target= | attach=libnfs server= export=)`.
public struct AdoptRequest: AgentVerb, Equatable {
    public static let verb = "ADOPT"
    public var changesHost: Bool { true }
    public static let keys = ["domain", "pool", "pool-target", "attach", "server", "export"]
    public var domain: String
    public var share: ShareRef
    /// The attach mode the caller expects the share to be in.
    public var attach: AttachMode?

    public init(domain: String, share: ShareRef, attach: AttachMode? = nil) {
        self.domain = domain
        self.share = share
        self.attach = attach
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        domain = try r.string("domain")
        attach = try r.optionalValue("attach", as: AttachMode.self)
        if attach == .libnfs, !r.has("server"), !r.has("pool") {
            throw AgentError.invalidArgument("ADOPT attach=libnfs needs server= and export= (or pool= of a libnfs share)")
        }
        share = try ShareRef.decode(r, allowPoolTarget: true)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("domain", domain)
        if case .pool = share { share.encode(into: &w); w.add("attach", attach) } else {
            w.add("attach", attach)
            share.encode(into: &w)
        }
    }

    public struct Answer: Sendable, Equatable {
        public var moved: [MovedDisk]
        public var domain: String
        public var share: ShareFacts
        public var changed: Bool
        /// Where the replaced definition was kept (for RESTORE).
        public var saved: String?

        public init(moved: [MovedDisk], domain: String, share: ShareFacts, changed: Bool, saved: String?) {
            self.moved = moved
            self.domain = domain
            self.share = share
            self.changed = changed
            self.saved = saved
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(moved: try rows(data, verb: verb, as: MovedDisk.self), domain: try r.string("domain"),
                      share: try ShareFacts(decoding: r), changed: try r.bool("changed"), saved: try r.optional("saved"))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("domain", a.domain)
        a.share.encode(into: &w)
        w.add("disks", a.moved.count)
        w.add("changed", a.changed)
        w.add("saved", a.saved)
        return (a.moved.map { $0.encoded() }, w.fields)
    }
}

/// `RESTORE domain=NAME`: the definition ADOPT saved, defined again.
public struct RestoreRequest: AgentVerb, Equatable {
    public static let verb = "RESTORE"
    public var changesHost: Bool { true }
    public static let keys = ["domain"]
    public var domain: String

    public init(domain: String) { self.domain = domain }
    public init(decoding r: FieldReader) throws(AgentError) { domain = try r.string("domain") }
    public func encode(into w: inout FieldWriter) { w.add("domain", domain) }

    public struct Answer: AgentRecord, Equatable {
        public var domain: String
        public var changed: Bool
        public var from: String?

        public init(domain: String, changed: Bool, from: String?) {
            self.domain = domain
            self.changed = changed
            self.from = from
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            domain = try r.string("domain")
            changed = try r.bool("changed")
            from = try r.optional("from")
        }

        public func encode(into w: inout FieldWriter) {
            w.add("domain", domain)
            w.add("changed", changed)
            w.add("from", from)
        }
    }
}

// MARK: - VERIFY

/// The shared-storage test's part in one VERIFY.
public enum NonceStep: Sendable, Equatable {
    case none
    /// Write a random value to `.storagectl-nonce-NAME` beside the file.
    case write(name: String)
    /// Read that file on another host; it must hold `value`.
    case read(name: String, value: String)
}

/// `VERIFY path=P [pool= | server= export=] [nonce-write=N | nonce-read=N value=V]`.
public struct VerifyRequest: AgentVerb, Equatable {
    public static let verb = "VERIFY"
    public static let keys = ["path", "pool", "server", "export", "nonce-write", "nonce-read", "value"]
    /// Absolute (mount mode, under a pool's target) or relative to the share.
    public var path: String
    /// How a relative path is reached; nil with an absolute path.
    public var share: ShareRef?
    public var nonce: NonceStep

    public init(path: String, share: ShareRef? = nil, nonce: NonceStep = .none) {
        self.path = path
        self.share = share
        self.nonce = nonce
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        path = try r.string("path")
        switch (try r.optional("nonce-write"), try r.optional("nonce-read"), try r.optional("value")) {
        case (nil, nil, nil): nonce = .none
        case (let w?, nil, nil): nonce = .write(name: w)
        case (nil, let n?, let v?): nonce = .read(name: n, value: v)
        default:
            throw AgentError.invalidArgument("VERIFY takes nonce-write=NAME, or nonce-read=NAME with value=V, or neither")
        }
        if path.hasPrefix("/") {
            guard !r.has("pool"), !r.has("server"), !r.has("export") else {
                throw AgentError.invalidArgument("an absolute path= names a file under a pool's target; give pool= or server= export= only with a relative path")
            }
            share = nil
        } else {
            share = try ShareRef.decode(r, allowPoolTarget: false)
        }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("path", path)
        share?.encode(into: &w)
        switch nonce {
        case .none: break
        case .write(let name): w.add("nonce-write", name)
        case .read(let name, let value):
            w.add("nonce-read", name)
            w.add("value", value)
        }
    }

    /// Changes the host (a nonce file written or removed).
    public var changesHost: Bool { nonce != .none }

    public struct Answer: AgentRecord, Equatable {
        public enum Via: String, Sendable, CaseIterable { case mount, libnfs }
        public var path: String
        public var via: Via
        public var pool: String?
        public var server: String?
        public var export: String?
        public var size: UInt64
        public var allocated: UInt64?
        /// `qcow2` or `raw`, from the header.
        public var format: String
        public var virtualSize: UInt64?
        /// The nonce written (`nonce=`) and its value, or the one read and matched.
        public var nonce: String?
        public var nonceValue: String?
        public var nonceMatch: Bool?

        public init(path: String, via: Via, pool: String? = nil, server: String? = nil, export: String? = nil, size: UInt64,
                    allocated: UInt64? = nil, format: String, virtualSize: UInt64? = nil,
                    nonce: String? = nil, nonceValue: String? = nil, nonceMatch: Bool? = nil) {
            self.path = path
            self.via = via
            self.pool = pool
            self.server = server
            self.export = export
            self.size = size
            self.allocated = allocated
            self.format = format
            self.virtualSize = virtualSize
            self.nonce = nonce
            self.nonceValue = nonceValue
            self.nonceMatch = nonceMatch
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            path = try r.string("path")
            via = try r.value("via", as: Via.self)
            pool = try r.optional("pool")
            server = try r.optional("server")
            export = try r.optional("export")
            size = try r.uint64("size")
            allocated = try r.optionalUInt64("allocated")
            format = try r.string("format")
            virtualSize = try r.optionalUInt64("virtual-size")
            nonce = try r.optional("nonce")
            nonceValue = try r.optional("nonce-value")
            nonceMatch = try r.optional("nonce-match").flatMap(WireValue.bool)
        }

        public func encode(into w: inout FieldWriter) {
            w.add("path", path)
            w.add("via", via)
            w.add("pool", pool)
            w.add("server", server)
            w.add("export", export)
            w.add("size", size)
            w.add("allocated", allocated)
            w.add("format", format)
            w.add("virtual-size", virtualSize)
            w.add("nonce", nonce)
            w.add("nonce-value", nonceValue)
            w.add("nonce-match", nonceMatch)
        }
    }
}

// MARK: - LOCALIZE

/// A disk LOCALIZE brought back: `from` the shared copy `to` the local file.
public struct LocalizedImage: Sendable, Equatable, Codable, AgentRecord {
    public var disk: String
    public var from: String
    public var to: String
    public var size: UInt64
    /// The content digest of the local copy.
    public var digest: String

    public init(disk: String, from: String, to: String, size: UInt64, digest: String) {
        self.disk = disk
        self.from = from
        self.to = to
        self.size = size
        self.digest = digest
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        disk = try r.string("disk")
        from = try r.string("from")
        to = try r.string("to")
        size = try r.uint64("size")
        digest = try r.contentDigest("digest")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("disk", disk)
        w.add("from", from)
        w.add("to", to)
        w.add("size", size)
        w.add("digest", digest)
    }
}

/// `LOCALIZE domain=NAME (pool= | server= export=) [dir=PATH]`: the way back.
public struct LocalizeRequest: AgentVerb, Equatable {
    public static let verb = "LOCALIZE"
    public var changesHost: Bool { true }
    public static let keys = ["domain", "pool", "server", "export", "dir"]
    public var domain: String
    public var share: ShareRef
    public var dir: String?

    public init(domain: String, share: ShareRef, dir: String? = nil) {
        self.domain = domain
        self.share = share
        self.dir = dir
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        domain = try r.string("domain")
        dir = try r.optional("dir")
        share = try ShareRef.decode(r, allowPoolTarget: false)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("domain", domain)
        share.encode(into: &w)
        w.add("dir", dir)
    }

    public struct Answer: Sendable, Equatable {
        public var moved: [LocalizedImage]
        public var domain: String
        public var share: ShareFacts
        public var dir: String
        public var changed: Bool
        /// The saved definition LOCALIZE defined the domain from.
        public var restored: String?
        /// The request joined a LOCALIZE of the domain that was running already.
        public var attached: Bool?
        /// The job was started again (the agent restarted in the middle of it).
        public var restarted: Bool?

        public init(moved: [LocalizedImage], domain: String, share: ShareFacts, dir: String, changed: Bool, restored: String?,
                    attached: Bool? = nil, restarted: Bool? = nil) {
            self.moved = moved
            self.domain = domain
            self.share = share
            self.dir = dir
            self.changed = changed
            self.restored = restored
            self.attached = attached
            self.restarted = restarted
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(moved: try rows(data, verb: verb, as: LocalizedImage.self), domain: try r.string("domain"),
                      share: try ShareFacts(decoding: r), dir: try r.string("dir"), changed: try r.bool("changed"),
                      restored: try r.optional("restored"), attached: try r.optional("attached").flatMap(WireValue.bool),
                      restarted: try r.optional("restarted").flatMap(WireValue.bool))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("domain", a.domain)
        a.share.encode(into: &w)
        w.add("dir", a.dir)
        w.add("disks", a.moved.count)
        w.add("changed", a.changed)
        w.add("restored", a.restored)
        w.add("attached", a.attached)
        w.add("restarted", a.restarted)
        return (a.moved.map { $0.encoded() }, w.fields)
    }
}
