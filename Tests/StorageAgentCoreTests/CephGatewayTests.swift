import AgentAPI
import AgentProtocol
import ArgumentParser
import ConfigFile
import Testing
@testable import StorageAgentCore

@Suite("storage agent: the ganesha-ceph backend's own facts")
struct CephGatewayTests {
    /// `ceph tell mds.cephfs:0 client ls --format=json` of the lab (ceph 16.2.15), cut
    /// down: two ganesha sessions, one ceph-fuse session of another user.
    static let clientLs = """
    [{"id": 4305, "entity": {"name": {"type": "client", "num": 4305}}, "state": "open", \
    "client_metadata": {"ceph_version": "ceph version 16.2.15", "entity_id": "ganesha", "hostname": "gateway-a", "root": "/", "uuid": "ganesha-gateway-a-0064"}}, \
    {"id": 4311, "state": "open", "client_metadata": {"entity_id": "ganesha", "hostname": "gateway-b", "root": "/"}}, \
    {"id": 4320, "state": "open", "client_metadata": {"entity_id": "fuse", "hostname": "gateway-a", "root": "/var/lib/libvirt/shared-images-ceph"}}, \
    {"id": 4330, "state": "open", "client_metadata": {"entity_id": "admin", "hostname": "gateway-a", "root": "/", "uuid": "ganesha-gateway-a-0064"}}]
    """

    @Test("client ls: the NFS servers' sessions (FSAL CEPH's uuid, or the configured user), not a gateway's own mount")
    func sessions() throws {
        // ceph's stderr log lines come in the same pipe, before and after (one with a bracket)
        let output = "2026-12-06T05:25:04.917+0000 7f9040ff96c0  0 client.4159 ms_handle_reset on v2:198.18.0.6:6802/1105300610\n"
            + "[v2:198.18.0.6:3300] not json\n\n" + Self.clientLs + "\n2026-12-06T05:25:05 trailing line\n"
        let s = try CephGateway.sessions(json: output, user: "ganesha")
        #expect(s == [CephSession(id: 4305, host: "gateway-a", user: "ganesha", state: "open"),
                      CephSession(id: 4311, host: "gateway-b", user: "ganesha", state: "open"),
                      CephSession(id: 4330, host: "gateway-a", user: "admin", state: "open")])
        #expect(try CephGateway.sessions(json: "[]", user: "ganesha").isEmpty)
        #expect(throws: AgentError.self) { try CephGateway.sessions(json: "Error EINVAL: no such fs", user: "ganesha") }
    }

    @Test("the ceph command is an argument vector aimed at rank 0 of the configured CephFS")
    func tell() {
        var c = StorageAgentConfiguration()
        c.cephFilesystem = "fs1"
        c.cephAdminID = "storagectl"
        #expect(CephGateway.tell(c, ["client", "evict", "id=4305"]) == [
            "/usr/bin/ceph", "--conf", "/etc/ceph/ceph.conf", "--id", "storagectl", "--connect-timeout", "10",
            "tell", "mds.fs1:0", "client", "evict", "id=4305"])
    }

    @Test("cephfs-mount: a ceph-fuse or kernel CephFS mount at the export root passes; the local disk or nothing fails with the remedy")
    func mountCheck() {
        let root = "/var/lib/libvirt/shared-images-ceph"
        let fuse = "36 25 0:40 / \(root) rw,nosuid,nodev,relatime shared:20 - fuse.ceph-fuse ceph-fuse rw,user_id=0\n"
        let kernel = "36 25 0:40 /var/lib/libvirt/shared-images-ceph \(root) rw - ceph 198.18.0.6:/var rw\n"
        let ext4 = "30 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        #expect(CephGateway.mountCheck(root: root, mountinfo: ext4 + fuse).ok)
        #expect(CephGateway.mountCheck(root: root, mountinfo: ext4 + kernel).ok)
        let none = CephGateway.mountCheck(root: root, mountinfo: ext4)
        #expect(!none.ok && none.detail.contains("ceph-fuse -r \(root) \(root)"))
        let tmpfs = CephGateway.mountCheck(root: root, mountinfo: fuse + "40 36 0:50 / \(root) rw - tmpfs tmpfs rw\n")
        #expect(!tmpfs.ok && tmpfs.detail.contains("tmpfs mount, not CephFS"))
    }

    @Test("ceph-write-cache (advice): libcephfs's write cache should be off for the NFS servers' user; the most specific section wins")
    func writeCache() {
        func check(_ text: String) -> HealthCheck { CephGateway.writeCacheCheck(confText: text, conf: "/etc/ceph/ceph.conf", user: "ganesha") }
        func off(_ text: String) -> Bool { check(text).facts["warning"] == nil }
        #expect(check("[global]\nfsid = x\n").ok && check("[global]\nfsid = x\n").facts["warning"] == "ceph-write-cache")
        #expect(off("[global]\nfsid = x\n[client]\nclient_oc = false\n"))
        #expect(off("[client]\n  client oc = 0   # no cache\n"))
        #expect(!off("[client]\nclient_oc = false\n[client.ganesha]\nclient_oc = true\n"))
        #expect(off("[client]\nclient_oc = true\n[client.ganesha]\nclient-oc = false\n"))
        #expect(!off("[client.admin]\nclient_oc = false\n"))
        #expect(!off("[client]\n#client_oc = false\n"))
        #expect(check("[client]\nclient_oc = true\n").detail.contains("add 'client_oc = false'"))
    }

    @Test("floating-address: held on this host (loopback), a standby elsewhere; never a failure")
    func floating() {
        let held = CephGateway.floatingCheck("127.0.0.1")
        #expect(held.ok && held.facts["floating"] == "held")
        let standby = CephGateway.floatingCheck("198.51.100.77")
        #expect(standby.ok && standby.facts["floating"] == "standby")
    }

    @Test("options: backend ganesha-ceph with its Ceph settings from flags or [storage-agent]; bad names refused")
    func options() throws {
        let file = try ConfigFile.parse("""
            [storage-agent]
            backend = ganesha-ceph
            ceph-filesystem = fs1
            ceph-user = nfs
            floating-address = 198.18.0.9
            """, path: "storage-agent.conf")
        let c = try StorageAgentCommand.parse(["--ceph-admin-id", "storagectl"]).resolved(file)
        #expect(c.backend == .ganeshaCeph && c.cephFilesystem == "fs1" && c.cephUser == "nfs" && c.cephAdminID == "storagectl")
        #expect(c.floatingAddress == "198.18.0.9")
        #expect(StorageAgentCommand.unitDropIn(c).contains("/etc/ganesha"))
        #expect(throws: (any Error).self) { try StorageAgentCommand.parse(["--ceph-user", "a\"b"]).resolved(nil) }
        #expect(throws: (any Error).self) { try StorageAgentCommand.parse(["--floating-address", "gateway.example"]).resolved(nil) }
        #expect(throws: (any Error).self) { try StorageAgentCommand.parse(["--ceph-conf", "ceph.conf"]).resolved(nil) }
    }

    @Test("CEPH-EVICT: a host name only, checked when decoded")
    func evictRequest() throws {
        #expect(try CephEvictRequest(CephEvictRequest(host: "gateway-a").request) == CephEvictRequest(host: "gateway-a"))
        for bad in ["", "-a", "gateway a", "id=1", "gw;rm"] {
            #expect(throws: AgentError.self) { try CephEvictRequest(Request("CEPH-EVICT", ["host": bad])) }
        }
    }
}
