import AgentAPI
import AgentProtocol
import ConfigFile
import Testing
@testable import StoragectlCommands

@Suite("CephFS gateway clusters: inventory, gateway states, status and check")
struct ClusterTests {
    static let text = """
    [storage cargo-bay]
    agent = tcp:198.18.0.1:7700
    export-root = /var/lib/libvirt/shared-images
    nfs-server = 198.18.0.1

    [storage ceph-nfs]
    gateway = gateway-a tls:198.18.0.7:7701
    gateway = gateway-b tls:198.18.0.8:7701
    export-root = /var/lib/libvirt/shared-images-ceph
    nfs-server = 198.18.0.9
    pool = shared-images-ceph

    [compute src]
    agent = tcp:198.18.0.2:7700
    """

    static func inventory(_ text: String = text) throws -> Inventory { try Inventory(ConfigFile.parse(text, path: "storagectl.conf")) }

    @Test("a [storage NAME] with gateway lines is one site: its name, its floating address, every gateway an agent host")
    func inventory() throws {
        let inv = try Self.inventory()
        let ceph = try #require(inv.site(named: "ceph-nfs"))
        #expect(ceph.isCluster && ceph.gateways.map(\.name) == ["gateway-a", "gateway-b"])
        #expect(ceph.host.name == "gateway-a" && ceph.nfsServer == "198.18.0.9" && ceph.agents.count == 2)
        #expect(ceph.gateways[1].agent == .tls(host: "198.18.0.8", port: 7701))
        #expect(inv.hosts.map(\.name) == ["cargo-bay", "gateway-a", "gateway-b", "src"])
        #expect(inv.selecting(ceph).site.name == "ceph-nfs" && inv.selecting(ceph).storage.name == "gateway-a")
        // a VM's network disk through the floating address is on the cluster
        let disk = DiskRecord(target: "vda", type: "network", source: "nfs://198.18.0.9/var/lib/libvirt/shared-images-ceph/w1/w1.qcow2")
        #expect(StoragePlacement.site(of: disk, in: inv.storageSites)?.name == "ceph-nfs")
        let bay = try #require(inv.site(named: "cargo-bay"))
        #expect(!bay.isCluster)
    }

    @Test("a cluster section is refused with agent =, without the floating address, with a malformed or repeated gateway")
    func refused() throws {
        func refuses(_ replace: String, by: String, _ words: String) {
            do {
                _ = try Self.inventory(Self.text.replacingOccurrences(of: replace, with: by))
                Issue.record("accepted: \(by)")
            } catch {
                #expect("\(error)".contains(words), "\(error)")
            }
        }
        refuses("nfs-server = 198.18.0.9\n", by: "nfs-server = 198.18.0.9\nagent = tcp:198.18.0.7:7700\n", "'agent =' does not belong")
        refuses("nfs-server = 198.18.0.9\n", by: "", "floating address")
        refuses("gateway = gateway-b tls:198.18.0.8:7701", by: "gateway = gateway-b", "gateway must be 'NAME AGENT'")
        refuses("gateway = gateway-b tls:198.18.0.8:7701", by: "gateway = gateway-a tls:198.18.0.8:7701", "already defined")
        refuses("gateway = gateway-b tls:198.18.0.8:7701", by: "gateway = src tls:198.18.0.8:7701", "already defined")
        refuses("gateway = gateway-b tls:198.18.0.8:7701", by: "gateway = gate;way tls:198.18.0.8:7701", "gateway must be")
    }

    static func health(_ checks: [HealthCheck]) -> Result<HealthQuery.Answer, AgentError> {
        .success(HealthQuery.Answer(checks: checks, agent: "storage-agent", version: "1", host: "g", uptimeSeconds: 1))
    }

    @Test("a gateway's state from its HEALTH: serving with the floating address, standby without, down when it fails or does not answer")
    func states() {
        let held = HealthCheck("floating-address", ok: true, detail: "this gateway holds 198.18.0.9", facts: ["floating": "held"])
        let standby = HealthCheck("floating-address", ok: true, detail: "198.18.0.9 is held elsewhere", facts: ["floating": "standby"])
        let ganeshaGone = HealthCheck("reload-tool", ok: false, detail: "nfs-ganesha is not running")
        #expect(GatewayState.from("a", Self.health([held])).state == .serving)
        #expect(GatewayState.from("b", Self.health([standby])).state == .standby)
        let down = GatewayState.from("a", Self.health([held, ganeshaGone]))
        #expect(down.state == .down && down.detail.contains("nfs-ganesha is not running"))
        #expect(GatewayState.from("a", .failure(AgentError(.unavailable, "connection refused"))).state == .down)
    }

    static let a = GatewayState(name: "gateway-a", state: .down, detail: "reload-tool: nfs-ganesha is not running")
    static let b = GatewayState(name: "gateway-b", state: .serving, detail: "this gateway holds 198.18.0.9")

    @Test("status and check: a down gateway with CephFS sessions left needs share --repair; once evicted only a warning is left")
    func problems() {
        var h = ClusterHealth(site: "ceph-nfs", floatingAddress: "198.18.0.9", gateways: [Self.a, Self.b], lingering: ["gateway-a": 2])
        let p = h.problem(vm: "w1")
        #expect(p?.remedy == "run storagectl share --repair w1")
        #expect(p?.sentence.contains("stay blocked on gateway-b") == true)
        var c = CheckEvaluation.gateways(vm: "w1", destination: "dst", health: h)
        #expect(c.result == .fail && c.remedy.contains("share --repair w1"))
        h.lingering = ["gateway-a": 0]
        #expect(h.problem(vm: "w1") == nil)
        c = CheckEvaluation.gateways(vm: "w1", destination: "dst", health: h)
        #expect(c.result == .warn && c.sentence.contains("gateway-b serves 198.18.0.9"))
        h.sessionsError = "CEPH-SESSIONS on gateway-b: timeout"
        #expect(h.problem(vm: "w1")?.sentence.contains("unknown") == true)
    }

    @Test("check fails when no healthy gateway holds the floating address, and passes with a serving gateway and a standby")
    func serving() {
        let standbyA = GatewayState(name: "gateway-a", state: .standby, detail: "")
        let none = ClusterHealth(site: "ceph-nfs", floatingAddress: "198.18.0.9", gateways: [standbyA, Self.a])
        #expect(CheckEvaluation.gateways(vm: "w1", destination: "dst", health: none).result == .fail)
        #expect(none.problem(vm: "w1")?.sentence.contains("no healthy gateway") == true)
        let fine = ClusterHealth(site: "ceph-nfs", floatingAddress: "198.18.0.9", gateways: [standbyA, Self.b])
        let c = CheckEvaluation.gateways(vm: "w1", destination: "dst", health: fine)
        #expect(c.result == .pass && c.sentence.contains("standby: gateway-a"))
    }
}
