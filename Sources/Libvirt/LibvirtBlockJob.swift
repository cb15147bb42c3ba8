import CLibvirt

// Block jobs of a running domain: libvirt's block copy (QEMU's drive mirror), its
// progress and its end (pivot or cancel). Blocking and thread-safety: as
// ``LibvirtConnection`` (every call is synchronous; run it on a thread of its own,
// never on Swift's cooperative pool).

/// Flags of ``LibvirtDomain/blockCopy(disk:destinationXML:bandwidthBytes:flags:)``
/// (`virDomainBlockCopyFlags`).
public struct BlockCopyFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Copy only the top image of the chain (the destination gets the same backing).
    public static let shallow = BlockCopyFlags(rawValue: UInt32(VIR_DOMAIN_BLOCK_COPY_SHALLOW.rawValue))
    /// The destination exists already and is reused as it is (libvirt does not create it).
    public static let reuseExternal = BlockCopyFlags(rawValue: UInt32(VIR_DOMAIN_BLOCK_COPY_REUSE_EXT.rawValue))
    /// The job is not kept across a restart of the domain: what lets a persistent
    /// domain be copied at all (libvirt refuses "domain is not transient" without it).
    public static let transientJob = BlockCopyFlags(rawValue: UInt32(VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB.rawValue))
}

/// The type of a block job (`virDomainBlockJobType`).
public enum BlockJobType: Sendable, Hashable {
    case pull, copy, commit, activeCommit, backup
    /// A value newer than this wrapper (or `VIR_DOMAIN_BLOCK_JOB_TYPE_UNKNOWN`).
    case other(Int32)

    init(raw: Int32) {
        switch UInt32(bitPattern: raw) {
        case VIR_DOMAIN_BLOCK_JOB_TYPE_PULL.rawValue: self = .pull
        case VIR_DOMAIN_BLOCK_JOB_TYPE_COPY.rawValue: self = .copy
        case VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT.rawValue: self = .commit
        case VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT.rawValue: self = .activeCommit
        case VIR_DOMAIN_BLOCK_JOB_TYPE_BACKUP.rawValue: self = .backup
        default: self = .other(raw)
        }
    }
}

/// A running block job (`virDomainBlockJobInfo`). For a copy, `cur` reaches `end` only
/// when QEMU reports the mirror ready (libvirt holds `cur` below `end` until then);
/// both grow while the guest writes.
public struct BlockJobInfo: Sendable, Hashable {
    public var type: BlockJobType
    /// The limit, bytes per second (0: none).
    public var bandwidthBytes: UInt64
    public var cur: UInt64
    public var end: UInt64

    public init(type: BlockJobType, bandwidthBytes: UInt64, cur: UInt64, end: UInt64) {
        self.type = type
        self.bandwidthBytes = bandwidthBytes
        self.cur = cur
        self.end = end
    }
}

/// Sizes of one disk of a domain (`virDomainBlockInfo`).
public struct BlockInfo: Sendable, Hashable {
    /// The guest-visible size (virtual size), bytes.
    public var capacity: UInt64
    /// Bytes allocated on the host for the image.
    public var allocation: UInt64
    /// The host's size of the image (file size).
    public var physical: UInt64
}

extension LibvirtDomain {
    /// Starts a block copy of the running domain's disk `disk` (target `vda` or a source
    /// path) to the destination described by `destinationXML`, a `<disk>` element
    /// (`virDomainBlockCopy`). Returns once the job runs; watch it with
    /// ``blockJobInfo(disk:)`` and end it with ``blockJobAbort(disk:pivot:)``.
    /// - Parameter bandwidthBytes: bytes/s cap (`VIR_DOMAIN_BLOCK_COPY_BANDWIDTH`); nil: none.
    public func blockCopy(disk: String, destinationXML: String, bandwidthBytes: UInt64? = nil,
                          flags: BlockCopyFlags) throws(LibvirtError) {
        var params: virTypedParameterPtr?
        var count: Int32 = 0
        var capacity: Int32 = 0
        defer { if params != nil { virTypedParamsFree(params, count) } }
        if let bandwidthBytes {
            try check(virTypedParamsAddULLong(&params, &count, &capacity, VIR_DOMAIN_BLOCK_COPY_BANDWIDTH, bandwidthBytes),
                      "virTypedParamsAddULLong(bandwidth)")
        }
        try check(virDomainBlockCopy(pointer, disk, destinationXML, params, count, flags.rawValue),
                  "virDomainBlockCopy(\(disk))")
    }

    /// The block job running on `disk`, or nil when there is none
    /// (`virDomainGetBlockJobInfo`, bandwidth in bytes/s).
    public func blockJobInfo(disk: String) throws(LibvirtError) -> BlockJobInfo? {
        var info = virDomainBlockJobInfo()
        let found = try check(virDomainGetBlockJobInfo(pointer, disk, &info, UInt32(VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES.rawValue)),
                              "virDomainGetBlockJobInfo(\(disk))")
        guard found == 1 else { return nil }
        return BlockJobInfo(type: BlockJobType(raw: info.type), bandwidthBytes: UInt64(info.bandwidth),
                            cur: UInt64(info.cur), end: UInt64(info.end))
    }

    /// Ends the block job on `disk` and waits until it has ended (`virDomainBlockJobAbort`,
    /// synchronous). With `pivot` a ready copy switches the disk to the destination;
    /// without, the job is cancelled and the disk stays on its image (the destination
    /// file is left behind).
    public func blockJobAbort(disk: String, pivot: Bool) throws(LibvirtError) {
        let flags = pivot ? UInt32(VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT.rawValue) : 0
        try check(virDomainBlockJobAbort(pointer, disk, flags), pivot ? "virDomainBlockJobAbort(\(disk), pivot)" : "virDomainBlockJobAbort(\(disk))")
    }

    /// The sizes of `disk` (`virDomainGetBlockInfo`).
    public func blockInfo(disk: String) throws(LibvirtError) -> BlockInfo {
        var info = virDomainBlockInfo()
        try check(virDomainGetBlockInfo(pointer, disk, &info, 0), "virDomainGetBlockInfo(\(disk))")
        return BlockInfo(capacity: UInt64(info.capacity), allocation: UInt64(info.allocation), physical: UInt64(info.physical))
    }
}
