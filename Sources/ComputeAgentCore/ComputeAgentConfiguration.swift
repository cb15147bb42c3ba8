import ImageCopy

/// Everything the compute agent needs to know about its host. Paths are injected so
/// tests run against temporary directories.
public struct ComputeAgentConfiguration: Sendable {
    /// libvirt connection URI (virsh(1) `-c`).
    public var libvirtURI: String = "qemu:///system"
    /// Where the agent keeps what must survive a restart: copy jobs, previous domain
    /// definitions (for RESTORE), libnfs-mode share records. Created (0700) on first use.
    public var stateDir: String = "/var/lib/storagectl"
    /// Copy engine tuning: write requests in flight and bytes per request (the engine's
    /// defaults, measured in the lab: docs/image-copy.md).
    public var copyInFlight: Int = ImageCopier().inFlight
    public var copyChunkBytes: Int = ImageCopier().chunkBytes
    /// How COPY confirms a copy before publishing it (`--copy-verify`).
    public var copyVerification: ImageCopier.Verification = .commit
    /// Interval of `PROGRESS` lines while a COPY streams (at least twice a second).
    public var progressInterval: Duration = .milliseconds(250)

    public init() {}

    /// libvirt's test driver drops the `fs:` namespace of pool XML (mount options), so
    /// pools defined through it cannot be compared on them.
    var driverKeepsMountOptions: Bool { !libvirtURI.hasPrefix("test:") }
}
