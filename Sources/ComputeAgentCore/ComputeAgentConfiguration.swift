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
    /// Where pool targets may be (`--share-root`, repeatable): POOL-ENSURE `target=`,
    /// ADOPT `pool-target=`, VERIFY `path=` must be at or below one of them.
    public var shareRoots: [String] = ["/var/lib/libvirt/shared-images"]
    /// Where LOCALIZE may write (`--images-root`): its `dir=` (default this root) must be
    /// at or below it.
    public var imagesRoot: String = "/var/lib/libvirt/images"
    /// NFS servers a request may name with `server=` besides those of the shares this
    /// host has (netfs pools, libnfs share records): `--nfs-server`, repeatable.
    public var nfsServers: [String] = []
    /// How long a request that reaches an NFS server through libnfs (VERIFY, LOCALIZE's
    /// planning, COPY's presence check) may take before it is answered `timeout`.
    public var nfsRequestTimeout: Duration = .seconds(30)
    /// How long a changing request waits for another one on the same domain before it
    /// is answered `busy`.
    public var domainWait: Duration = .seconds(5)

    public init() {}

    /// libvirt's test driver drops the `fs:` namespace of pool XML (mount options), so
    /// pools defined through it cannot be compared on them.
    var driverKeepsMountOptions: Bool { !libvirtURI.hasPrefix("test:") }

    /// libvirt's test driver does not create a pool's target directory when it builds it.
    var driverBuildsTargets: Bool { !libvirtURI.hasPrefix("test:") }
}
