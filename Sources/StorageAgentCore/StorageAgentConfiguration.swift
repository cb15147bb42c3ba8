import AgentAPI
import AgentProtocol

/// Everything the storage agent needs to know about its host. Paths are injected so
/// tests run against temporary directories.
public struct StorageAgentConfiguration: Sendable {
    public var exportsFile: String = "/etc/exports"
    public var exportRoot: String = "/var/lib/libvirt/shared-images"
    public var backend: ExportsBackend = .kernel
    public var allowedClients: [String] = []
    public var exportfsPath: String = "/usr/sbin/exportfs"
    /// exportfs' export table, read back to verify the kernel backend.
    public var etabPath: String = "/var/lib/nfs/etab"
    public var ganeshaExportsFile: String = "/etc/ganesha/storagectl-exports.conf"
    public var ganeshaPidFile: String = "/run/ganesha/ganesha.pid"
    /// The NFS server whose export list proves an export live (libnfs, MOUNT protocol).
    public var nfsServer: String = "127.0.0.1"
    /// Whether to ask the NFS server for its export list after applying; nil means the
    /// backend's default (yes for ganesha, no for kernel).
    public var verifyExportList: Bool?
    /// Longest wait for another process's lock on the exports file before `busy`.
    public var lockTimeout: Duration = .seconds(10)
    /// Longest run of `exportfs -ra`.
    public var applyTimeout: Duration = .seconds(30)
    /// Longest wait for the NFS server to list a change.
    public var verifyTimeout: Duration = .seconds(5)
    /// `ganesha-ceph`: the CephFS name (FSAL CEPH `Filesystem`, and `mds.NAME:0` for the
    /// session verbs).
    public var cephFilesystem: String = "cephfs"
    /// `ganesha-ceph`: the Ceph user ganesha connects as (FSAL CEPH `User_Id`); its
    /// sessions are what `CEPH-SESSIONS` lists and `CEPH-EVICT` evicts.
    public var cephUser: String = "ganesha"
    /// `ganesha-ceph`: the Ceph user the agent's `ceph` commands run as (`ceph --id`): it
    /// needs `mds 'allow *'` to list and evict sessions.
    public var cephAdminID: String = "admin"
    /// `ganesha-ceph`: the Ceph configuration file for the `ceph` command.
    public var cephConf: String = "/etc/ceph/ceph.conf"
    /// The `ceph` command.
    public var cephPath: String = "/usr/bin/ceph"
    /// Longest run of one `ceph` command.
    public var cephTimeout: Duration = .seconds(30)
    /// `ganesha-ceph`: the gateways' floating address (keepalived), when there is one:
    /// HEALTH says whether this gateway holds it.
    public var floatingAddress: String?

    public init() {}

    /// `verifyExportList` with the backend's default filled in.
    public var verifiesExportList: Bool { verifyExportList ?? (backend == .ganesha) }

    /// A file ending in `.exports` (as exportfs requires in `/etc/exports.d`) is a drop-in
    /// file storagectl owns; any other file is shared with the administrator.
    public var exportsFileIsDropIn: Bool { exportsFile.hasSuffix(".exports") }
}
