import ArgumentParser

/// `share`'s and `unshare`'s choice of path: live (block copy, then pivot) or offline
/// (the copy engine on a shut-off VM), and the live copy's bandwidth.
public struct CopyModeOptions: ParsableArguments {
    @Flag(name: .customLong("offline"), help: "Copy with the VM shut off (the copy engine, verified by content digest); a running VM is refused.")
    public var offline = false

    @Flag(name: .customLong("live"), help: "Copy while the VM runs (block copy, then pivot); a VM that is not running is refused. Default: live for a running VM, offline for a shut-off one.")
    public var live = false

    @Option(name: .customLong("bandwidth"), help: ArgumentHelp("Limit each disk's live copy to this many MiB/s (default: no limit).", valueName: "MiB/s"))
    public var bandwidth: UInt64?

    public init() {}

    public func validate() throws {
        if live && offline { throw ValidationError("--live and --offline exclude each other") }
        if bandwidth == 0 { throw ValidationError("--bandwidth is MiB/s and must be at least 1 (leave it out for no limit)") }
        if bandwidth != nil && offline { throw ValidationError("--bandwidth limits a live copy; it does not apply with --offline") }
    }

    /// The mode asked for (`auto` when neither flag is given).
    public var mode: CopyMode { live ? .live : offline ? .offline : .auto }
}
