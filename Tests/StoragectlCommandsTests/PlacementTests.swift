import AgentAPI
import AgentProtocol
import ConfigFile
import Testing
@testable import StoragectlCommands

@Suite("storage placement")
struct PlacementTests {
    static let two = """
    [storage bay]
    agent = tcp:198.18.0.1:7700
    export-root = /var/lib/libvirt/shared-images
    nfs-server = 198.18.0.1

    [storage hold]
    agent = tcp:198.18.0.5:7700
    export-root = /var/lib/libvirt/shared-images-b/
    nfs-server = 198.18.0.5
    pool = shared-images-b

    [compute src]
    agent = tcp:198.18.0.2:7700
    """

    static func inventory() throws -> Inventory { try Inventory(ConfigFile.parse(two, path: "storagectl.conf")) }

    static func file(_ path: String) -> DiskRecord { DiskRecord(target: "vda", type: "file", source: path) }
    static func network(_ source: String) -> DiskRecord { DiskRecord(target: "vdb", type: "network", source: source) }

    @Test("an inventory with two storage hosts: each with its share; the first is the default")
    func twoSites() throws {
        let inv = try Self.inventory()
        #expect(inv.storageSites.map(\.name) == ["bay", "hold"])
        #expect(inv.storageSites[1].exportRoot == "/var/lib/libvirt/shared-images-b")
        #expect(inv.storageSites[1].poolName == "shared-images-b")
        #expect(inv.storage.name == "bay" && inv.poolName == "shared-images")
        #expect(inv.hosts.map(\.name) == ["bay", "hold", "src"])
        let hold = inv.selecting(inv.storageSites[1])
        #expect(hold.storage.name == "hold" && hold.exportRoot == "/var/lib/libvirt/shared-images-b"
                && hold.nfsServer == "198.18.0.5" && hold.poolName == "shared-images-b")
        #expect(hold.storageSites == inv.storageSites)
    }

    @Test("a disk's storage host from its path or its NFS server and path")
    func siteOfDisk() throws {
        let sites = try Self.inventory().storageSites
        #expect(StoragePlacement.site(of: Self.file("/var/lib/libvirt/shared-images/w1/w1.qcow2"), in: sites)?.name == "bay")
        #expect(StoragePlacement.site(of: Self.file("/var/lib/libvirt/shared-images-b/w1/w1.qcow2"), in: sites)?.name == "hold")
        // a sibling directory whose name starts like an export root is not under it
        #expect(StoragePlacement.site(of: Self.file("/var/lib/libvirt/shared-images-c/w1.qcow2"), in: sites) == nil)
        #expect(StoragePlacement.site(of: Self.file("/var/lib/libvirt/images/w1.qcow2"), in: sites) == nil)
        #expect(StoragePlacement.site(of: Self.network("nfs://198.18.0.5/var/lib/libvirt/shared-images-b/w1/w1.qcow2"), in: sites)?.name == "hold")
        #expect(StoragePlacement.site(of: Self.network("nfs://198.18.0.1/var/lib/libvirt/shared-images/w1.qcow2"), in: sites)?.name == "bay")
        #expect(StoragePlacement.site(of: Self.network("nfs://198.18.0.9/srv/w1.qcow2"), in: sites) == nil)
        #expect(StoragePlacement.site(of: DiskRecord(target: "hdc", type: "file", device: "cdrom", source: "/var/lib/libvirt/shared-images/x.iso"), in: sites) == nil)
        let both = [Self.file("/var/lib/libvirt/shared-images-b/a.qcow2"), Self.file("/var/lib/libvirt/shared-images/b.qcow2")]
        #expect(StoragePlacement.sites(of: both, in: sites).map(\.name) == ["bay", "hold"])
    }

    static func choose(current: [String] = [], asked: String? = nil, _ candidates: [StoragePlacement.Candidate]) throws -> StoragePlacement.Choice {
        let sites = try inventory().storageSites
        return StoragePlacement.choose(vm: "w1", sites: sites, current: sites.filter { current.contains($0.name) }, asked: asked, candidates: candidates)
    }

    static func name(_ c: StoragePlacement.Choice) -> String? {
        if case .site(let n, _) = c { return n }
        return nil
    }

    static func refusal(_ c: StoragePlacement.Choice) -> AgentError? {
        if case .refused(let e, _) = c { return e }
        return nil
    }

    @Test("most free space wins among the hosts every compute host reaches; the first on a tie")
    func freeSpace() throws {
        let gib: UInt64 = 1 << 30
        #expect(Self.name(try Self.choose([.init(site: "bay", available: .success(5 * gib)), .init(site: "hold", available: .success(9 * gib))])) == "hold")
        #expect(Self.name(try Self.choose([.init(site: "bay", available: .success(9 * gib)), .init(site: "hold", available: .success(5 * gib))])) == "bay")
        #expect(Self.name(try Self.choose([.init(site: "bay", available: .success(5 * gib)), .init(site: "hold", available: .success(5 * gib))])) == "bay")
        // the larger one that a destination cannot reach is passed over, and named
        let c = try Self.choose([.init(site: "bay", available: .success(5 * gib)),
                                 .init(site: "hold", available: .success(9 * gib), unreachable: ["dst": "198.18.0.5:2049 refused"])])
        #expect(Self.name(c) == "bay")
        if case .site(_, let reason) = c { #expect(reason.contains("hold: not reachable from dst (198.18.0.5:2049 refused)")) }
        // a storage agent that does not answer is passed over
        #expect(Self.name(try Self.choose([.init(site: "bay", available: .failure(AgentError(.unavailable, "down"))),
                                           .init(site: "hold", available: .success(gib))])) == "hold")
    }

    @Test("no usable storage host: refused, with every reason")
    func noneUsable() throws {
        let c = try Self.choose([.init(site: "bay", available: .failure(AgentError(.unavailable, "connection refused"))),
                                 .init(site: "hold", available: .success(1), unreachable: ["src": "timed out"])])
        let e = try #require(Self.refusal(c))
        #expect(e.code == .unavailable)
        #expect(e.message.contains("bay: no free space answer (connection refused)") && e.message.contains("hold: not reachable from src (timed out)"))
    }

    @Test("the VM's disks decide: a re-run stays; --storage elsewhere and disks on two hosts are refused")
    func current() throws {
        let gib: UInt64 = 1 << 30
        let roomier = [StoragePlacement.Candidate(site: "bay", available: .success(9 * gib))]
        #expect(Self.name(try Self.choose(current: ["hold"], roomier)) == "hold")
        #expect(Self.name(try Self.choose(current: ["hold"], asked: "hold", roomier)) == "hold")
        #expect(Self.refusal(try Self.choose(current: ["hold"], asked: "bay", roomier))?.code == .conflict)
        #expect(Self.refusal(try Self.choose(current: ["bay", "hold"], roomier))?.code == .conflict)
    }

    @Test("--storage names the host, which must exist")
    func asked() throws {
        #expect(Self.name(try Self.choose(asked: "hold", [])) == "hold")
        let e = try #require(Self.refusal(try Self.choose(asked: "attic", [])))
        #expect(e.code == .invalidArgument && e.message.contains("attic"))
    }
}
