import AgentProtocol

// The live path of share and unshare (docs/protocol.md, "Live copy"): a running domain's
// disks move to the share (LIVE-COPY) or back to local files (LIVE-LOCALIZE) with
// libvirt's block copy (QEMU's drive mirror) and a pivot, without the guest stopping.
// Both stream `PROGRESS done= total= rate= [disk=]` (TransferProgress) while the mirrors
// synchronise, like COPY and LOCALIZE; LIVE-ABORT cancels them before the pivot.

/// One disk a live copy moved (or found moved already): `from` the image the domain used
/// `to` the one it uses now.
public struct LiveMovedDisk: Sendable, Equatable, Codable, AgentRecord {
    /// The target device (`vda`).
    public var disk: String
    /// The image before: a file path, or `nfs://SERVER/NAME` for an NFS network disk.
    public var from: String
    /// The image after, spelled the same way.
    public var to: String
    /// Relative to the export (`wanderer1/wanderer1.qcow2`): the copy on the share
    /// (LIVE-COPY) or the share image the disk left (LIVE-LOCALIZE).
    public var path: String
    /// `qcow2` or `raw`: the destination has the source's format.
    public var format: String
    /// The guest-visible size in bytes (the virtual size; equal on both sides).
    public var virtualSize: UInt64
    /// Bytes the mirror copied for this disk (libvirt's block job `end` at the pivot).
    public var copied: UInt64
    /// The disk was on the destination already (an earlier run pivoted it): nothing done.
    public var already: Bool

    public init(disk: String, from: String, to: String, path: String, format: String, virtualSize: UInt64, copied: UInt64, already: Bool) {
        self.disk = disk
        self.from = from
        self.to = to
        self.path = path
        self.format = format
        self.virtualSize = virtualSize
        self.copied = copied
        self.already = already
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        disk = try r.string("disk")
        from = try r.string("from")
        to = try r.string("to")
        path = try r.string("path")
        format = try r.string("format")
        virtualSize = try r.uint64("virtual-size")
        copied = try r.uint64("copied")
        already = try r.bool("already", default: false)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("disk", disk)
        w.add("from", from)
        w.add("to", to)
        w.add("path", path)
        w.add("format", format)
        w.add("virtual-size", virtualSize)
        w.add("copied", copied)
        w.add("already", already)
    }
}

/// The answer of LIVE-COPY and LIVE-LOCALIZE: one `DATA` per moved disk, then
/// `OK domain= [pool=] server= export= attach= [target=] disks= bytes= changed=
/// [attached=] [saved=] [dir=] [seconds=]`.
public struct LiveCopyAnswer: Sendable, Equatable {
    public var moved: [LiveMovedDisk]
    public var domain: String
    public var share: ShareFacts
    /// Bytes the mirrors copied in this run (0 when every disk was moved already).
    public var bytes: UInt64
    /// Some disk was pivoted by this request (or the job it attached to).
    public var changed: Bool
    /// The request joined a live copy of the domain that was running already.
    public var attached: Bool
    /// LIVE-COPY: where the definition before the first pivot was kept (as ADOPT keeps
    /// it, `domains/UUID.previous.xml`); LIVE-LOCALIZE: nil.
    public var saved: String?
    /// LIVE-LOCALIZE: the directory the local images were made in.
    public var dir: String?
    /// How long the job took (tenths).
    public var seconds: Double?

    public init(moved: [LiveMovedDisk], domain: String, share: ShareFacts, bytes: UInt64, changed: Bool, attached: Bool,
                saved: String? = nil, dir: String? = nil, seconds: Double? = nil) {
        self.moved = moved
        self.domain = domain
        self.share = share
        self.bytes = bytes
        self.changed = changed
        self.attached = attached
        self.saved = saved
        self.dir = dir
        self.seconds = seconds
    }

    /// The `bandwidth=` of LIVE-COPY and LIVE-LOCALIZE: MiB/s, at least 1, or absent.
    static func bandwidth(_ r: FieldReader) throws(AgentError) -> UInt64? {
        let value = try r.optionalUInt64("bandwidth")
        if value == 0 { throw AgentError.invalidArgument("bandwidth= is MiB/s and must be at least 1 (leave it out for no limit)") }
        return value
    }

    static func decode(verb: String, data: [Fields], ok: Fields) throws(AgentError) -> LiveCopyAnswer {
        let r = FieldReader(answer: verb, ok)
        return LiveCopyAnswer(moved: try rows(data, verb: verb, as: LiveMovedDisk.self), domain: try r.string("domain"),
                              share: try ShareFacts(decoding: r), bytes: try r.uint64("bytes"), changed: try r.bool("changed"),
                              attached: try r.bool("attached", default: false), saved: try r.optional("saved"),
                              dir: try r.optional("dir"), seconds: try r.optionalDouble("seconds"))
    }

    func encode() -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("domain", domain)
        share.encode(into: &w)
        w.add("disks", moved.count)
        w.add("bytes", bytes)
        w.add("changed", changed)
        if attached { w.add("attached", true) }
        w.add("saved", saved)
        w.add("dir", dir)
        if let s = seconds { w.add("seconds", String(s)) }
        return (moved.map { $0.encoded() }, w.fields)
    }
}

/// `LIVE-COPY domain=NAME (pool=POOL | server=HOST export=PATH) [bandwidth=MIB]`: every local file disk
/// of the **running**, persistent domain is block-copied into the share (the layout of
/// COPY: `DIR/FILE` under the export, DIR the domain's share directory; qcow2 stays
/// qcow2, raw stays raw), and once every mirror is synchronised all disks are pivoted
/// onto the copies; the persistent definition then names the copies (the one before the
/// first pivot is kept for RESTORE, as ADOPT keeps it). Streams `PROGRESS` while the
/// mirrors synchronise. The job belongs to the agent: a client that goes away does not
/// stop it, asking again joins it (`attached=yes`), and a disk whose mirror to the same
/// destination is running already is joined, never started twice. A disk already on
/// the share is reported with `already=yes`. Refused (`invalid-state`) for a domain
/// that is not running (use COPY + ADOPT), a transient one, a disk with a backing chain
/// or a block device; (`conflict`) when the destination file exists and is not this
/// job's own leftover. A pivot that fails leaves that disk on its original image and
/// cancels the remaining mirrors: the domain runs on.
public struct LiveCopyRequest: AgentVerb, Equatable {
    public static let verb = "LIVE-COPY"
    public var changesHost: Bool { true }
    public static let keys = ["domain", "pool", "server", "export", "bandwidth"]
    public var domain: String
    public var share: ShareRef
    /// A limit for each mirror, MiB/s (libvirt's block copy `bandwidth`); nil: none.
    public var bandwidthMiB: UInt64?

    public init(domain: String, share: ShareRef, bandwidthMiB: UInt64? = nil) {
        self.domain = domain
        self.share = share
        self.bandwidthMiB = bandwidthMiB
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        domain = try r.string("domain")
        share = try ShareRef.decode(r, allowPoolTarget: false)
        bandwidthMiB = try LiveCopyAnswer.bandwidth(r)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("domain", domain)
        share.encode(into: &w)
        w.add("bandwidth", bandwidthMiB)
    }

    public typealias Answer = LiveCopyAnswer
    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        try LiveCopyAnswer.decode(verb: verb, data: data, ok: ok)
    }
    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) { a.encode() }
}

/// `LIVE-LOCALIZE domain=NAME (pool=POOL | server=HOST export=PATH) [dir=PATH] [bandwidth=MIB]`: the way
/// back for a **running** domain: each disk on the share is block-copied to a new local
/// file `DIR/<domain dir>/<file name>` (`dir=` under `--images-root`, the default; never
/// over an existing file or another domain's disk: then the next free name
/// `STEM-N.EXT`; free space checked first), all are pivoted once synchronised, and the persistent definition names
/// the local files (the definition ADOPT or LIVE-COPY saved is used up, as LOCALIZE does).
/// The shared images are left on the share. Same streaming, joining and abort as LIVE-COPY.
public struct LiveLocalizeRequest: AgentVerb, Equatable {
    public static let verb = "LIVE-LOCALIZE"
    public var changesHost: Bool { true }
    public static let keys = ["domain", "pool", "server", "export", "dir", "bandwidth"]
    public var domain: String
    public var share: ShareRef
    public var dir: String?
    /// As LIVE-COPY's.
    public var bandwidthMiB: UInt64?

    public init(domain: String, share: ShareRef, dir: String? = nil, bandwidthMiB: UInt64? = nil) {
        self.domain = domain
        self.share = share
        self.dir = dir
        self.bandwidthMiB = bandwidthMiB
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        domain = try r.string("domain")
        dir = try r.optional("dir")
        share = try ShareRef.decode(r, allowPoolTarget: false)
        bandwidthMiB = try LiveCopyAnswer.bandwidth(r)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("domain", domain)
        share.encode(into: &w)
        w.add("dir", dir)
        w.add("bandwidth", bandwidthMiB)
    }

    public typealias Answer = LiveCopyAnswer
    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        try LiveCopyAnswer.decode(verb: verb, data: data, ok: ok)
    }
    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) { a.encode() }
}

/// `LIVE-ABORT domain=NAME`: cancels the live copy (LIVE-COPY or LIVE-LOCALIZE) of the
/// domain before its pivot: every block job it started is cancelled (the domain stays on
/// its original images and runs on), the partial destinations are removed, and the
/// waiting request ends with `ERR code=invalid-state` saying that LIVE-ABORT stopped it. After the pivot has begun there is nothing to
/// cancel: `aborted=no pivoted=yes` (the job finishes; ask again to read its result).
public struct LiveAbortRequest: AgentVerb, Equatable {
    public static let verb = "LIVE-ABORT"
    public var changesHost: Bool { true }
    public static let keys = ["domain"]
    public var domain: String

    public init(domain: String) { self.domain = domain }
    public init(decoding r: FieldReader) throws(AgentError) { domain = try r.string("domain") }
    public func encode(into w: inout FieldWriter) { w.add("domain", domain) }

    public struct Answer: AgentRecord, Equatable {
        /// A live copy was running and its block jobs were cancelled.
        public var aborted: Bool
        /// The job had begun pivoting: it was left to finish.
        public var pivoted: Bool
        public init(aborted: Bool, pivoted: Bool) {
            self.aborted = aborted
            self.pivoted = pivoted
        }
        public init(decoding r: FieldReader) throws(AgentError) {
            aborted = try r.bool("aborted")
            pivoted = try r.bool("pivoted", default: false)
        }
        public func encode(into w: inout FieldWriter) {
            w.add("aborted", aborted)
            w.add("pivoted", pivoted)
        }
    }
}
