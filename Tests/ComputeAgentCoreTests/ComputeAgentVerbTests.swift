import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import Testing
@testable import ComputeAgentCore

@Suite("compute agent verbs (libvirt test driver)")
struct ComputeAgentVerbTests {
    // MARK: DOMAIN

    @Test("DOMAIN lists every disk with type, source, format, sizes, cache and backing, then identity and state")
    func domainReport() async throws {
        let host = try await SimHost()
        let answer = await host.ask("DOMAIN name=wanderer1")
        let ok = try #require(answer.result.ok, "\(String(describing: answer.result.error))")
        #expect(ok["name"] == "wanderer1")
        #expect(ok["uuid"] == "6695eb01-f6a4-8304-79aa-97f2502e193f")
        #expect(ok["state"] == "shut-off")
        #expect(ok["persistent"] == "yes")
        let disks = answer.lines.data
        #expect(disks.count == 2)
        let vda = try #require(disks.first { $0["disk"] == "vda" })
        #expect(vda["type"] == "file")
        #expect(vda["device"] == "disk")
        #expect(vda["source"] == host.images + "/wanderer1.qcow2")
        #expect(vda["format"] == "qcow2")
        #expect(vda["cache"] == "none")
        #expect(vda["backing"] == "")
        #expect(vda["allocated"].flatMap(UInt64.init) ?? 0 > 0)
        let vdb = try #require(disks.first { $0["disk"] == "vdb" })
        #expect(vdb["type"] == "network")
        #expect(vdb["source"] == "nfs://198.18.0.1/srv/data.img")
        #expect(vdb["cache"] == "default")
    }

    @Test("DOMAIN reports libvirt's backing chain and a running state")
    func domainChainAndState() async throws {
        let host = try await SimHost()
        let layered = await host.ask("DOMAIN name=layered")
        #expect(layered.lines.data.first?.all("backing") == ["/var/lib/libvirt/images/base.qcow2"])
        let runner = await host.ask("DOMAIN name=runner")
        #expect(runner.result.ok?["state"] == "running")
        #expect(runner.lines.data.first?["missing"] == "yes")
    }

    @Test("DOMAIN refuses hostile names before libvirt sees them, and names an unknown domain", arguments: [
        "DOMAIN name=a%2Fb", "DOMAIN name=", "DOMAIN name=..", "DOMAIN name=\(String(repeating: "x", count: 300))",
        "DOMAIN", "DOMAIN name=a name=b", "DOMAIN name=x extra=1",
    ])
    func domainHostile(_ line: String) async throws {
        let host = try await SimHost()
        #expect(await host.ask(line).result.error?.code == .invalidArgument)
    }

    @Test("DOMAIN of an unknown domain is not-found, with a remedy")
    func domainUnknown() async throws {
        let e = await (try await SimHost()).ask("DOMAIN name=nosuch").result.error
        #expect(e?.code == .notFound)
        #expect(e?.message.contains("virsh list --all") == true)
    }

    // MARK: POOL-ENSURE

    static let ensure = "POOL-ENSURE name=shared server=198.18.0.1 export=/var/lib/libvirt/shared-images target=/var/lib/libvirt/shared-images"

    @Test("POOL-ENSURE defines, builds, starts and autostarts once, then answers changed=no")
    func poolEnsureIdempotent() async throws {
        let host = try await SimHost()
        let first = await host.ask(Self.ensure)
        let ok = try #require(first.result.ok, "\(String(describing: first.result.error))")
        #expect(ok["changed"] == "yes")
        #expect(ok["actions"] == "defined,built,started,autostarted")
        #expect(ok["state"] == "active")
        #expect(ok["autostart"] == "yes")
        #expect(ok["mount-options"] == "nolock")
        #expect(ok["nfs-version"] == "3")
        let again = await host.ask(Self.ensure + " attach=mount nfs-version=3")
        #expect(again.result.ok?["changed"] == "no")
        #expect(again.result.ok?["actions"] == "")
    }

    @Test("POOL-ENSURE names a conflicting pool and never redefines it", arguments: [
        // same name, other server
        ("POOL-ENSURE name=shared server=198.18.0.9 export=/var/lib/libvirt/shared-images target=/var/lib/libvirt/shared-images", "shared"),
        // same name, other target
        ("POOL-ENSURE name=shared server=198.18.0.1 export=/var/lib/libvirt/shared-images target=/srv/other", "shared"),
        // other name, same target
        ("POOL-ENSURE name=other server=198.18.0.1 export=/srv/x target=/var/lib/libvirt/shared-images", "shared"),
        // other name, same source
        ("POOL-ENSURE name=other server=198.18.0.1 export=/var/lib/libvirt/shared-images target=/srv/y", "shared"),
        // a dir pool holding the target
        ("POOL-ENSURE name=other server=198.18.0.1 export=/srv/z target=/var/lib/libvirt/images", "default"),
    ])
    func poolConflicts(_ line: String, _ named: String) async throws {
        let host = try await SimHost(pools: """
            <pool type='dir'><name>default</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
              <source/><target><path>/var/lib/libvirt/images</path></target></pool>
            """, configure: { $0.shareRoots += ["/srv", "/var/lib/libvirt/images"] })
        _ = try await #require(host.ask(Self.ensure).result.ok)
        let e = await host.ask(line).result.error
        #expect(e?.code == .conflict, "\(String(describing: e))")
        #expect(e?.details["pool"] == named)
        #expect(e?.message.contains("'\(named)'") == true, "\(e?.message ?? "")")
        // still exactly the pool we defined
        #expect(await host.ask(Self.ensure).result.ok?["changed"] == "no")
    }

    @Test("hostile or invalid POOL-ENSURE requests change nothing", arguments: [
        "POOL-ENSURE name=a%2Fb server=198.18.0.1 export=/e target=/t",
        "POOL-ENSURE name=p server=198.18.0.1%3Cx export=/e target=/t",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e%27%3E%3Cx target=/t",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e/../etc target=/t",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e target=relative",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e target=/t%20x",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e target=/t attach=fuse",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e target=/t options=lock",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e attach=libnfs target=/t",
        "POOL-ENSURE name=p server=198.18.0.1 export=/e",
    ])
    func poolHostile(_ line: String) async throws {
        let host = try await SimHost()
        #expect(await host.ask(line).result.error?.code == .invalidArgument)
        #expect(await host.ask(Self.ensure).result.ok?["actions"] == "defined,built,started,autostarted", "nothing was defined before")
    }

    @Test("NFS versions other than 3 are unsupported")
    func poolVersion() async throws {
        let e = await (try await SimHost()).ask(Self.ensure + " nfs-version=4").result.error
        #expect(e?.code == .unsupported)
    }

    @Test("the pool XML is built by the XML library: version pinned, nolock, values escaped")
    func poolXML() throws {
        let spec = PoolSpec(name: "shared", server: "cargo-bay", export: "/srv/a&b", target: "/mnt/x'y", attach: .mount, nfsVersion: 3)
        let xml = spec.poolXML()
        #expect(xml.contains("<protocol ver=\"3\""))
        #expect(xml.contains("xmlns:fs=\"http://libvirt.org/schemas/storagepool/fs/1.0\""))
        #expect(xml.contains("<fs:option name=\"nolock\""))
        #expect(xml.contains("/srv/a&amp;b"))
        let parsed = try ExistingPool(xml: xml)
        #expect(parsed.differences(from: spec, checkMountOptions: true).isEmpty)
        #expect(parsed.mountOptions == ["nolock"])
        var other = spec
        other.nfsVersion = 4
        #expect(!parsed.differences(from: other, checkMountOptions: true).isEmpty)
    }

    // MARK: COPY / ADOPT / RESTORE refusals

    @Test("COPY and ADOPT refuse a running domain, naming its state and the remedy")
    func runningRefused() async throws {
        let host = try await SimHost()
        _ = try await #require(host.ask(Self.ensureHere(host)).result.ok)
        for line in ["COPY domain=runner pool=shared", "ADOPT domain=runner pool=shared"] {
            let e = await host.ask(line).result.error
            #expect(e?.code == .invalidState, "\(line): \(String(describing: e))")
            #expect(e?.message.contains("running") == true)
            #expect(e?.message.contains("virsh shutdown runner") == true)
            #expect(e?.details["state"] == "running")
        }
    }

    @Test("COPY refuses a disk whose backing chain points at local storage")
    func backingChainRefused() async throws {
        let host = try await SimHost()
        _ = try await #require(host.ask(Self.ensureHere(host)).result.ok)
        let e = await host.ask("COPY domain=layered pool=shared").result.error
        #expect(e?.code == .invalidState)
        #expect(e?.message.contains("backing chain") == true)
        #expect(e?.message.contains("/var/lib/libvirt/images/base.qcow2") == true)
    }

    @Test("every verb but HEALTH is refused over plain TCP, and every changing verb to a certificate that is no admin", arguments: [
        "POOL-ENSURE name=p server=198.18.0.1 export=/e target=/t", "COPY domain=wanderer1 pool=shared",
        "ADOPT domain=wanderer1 pool=shared", "RESTORE domain=wanderer1",
        "VERIFY path=/x nonce-write=n1", "LOCALIZE domain=wanderer1 pool=shared",
    ])
    func tcpRefused(_ line: String) async throws {
        let host = try await SimHost()
        #expect(await host.ask(line, transport: .tcp).result.error?.code == .permissionDenied)
        #expect(await host.ask("DOMAIN name=wanderer1", transport: .tcp).result.error?.code == .permissionDenied)
        // A certificate from the CA on no list, and one on the reader list: neither may change the host.
        let hostCert = PeerIdentity(transport: .tls, subject: "CN=dest-example,O=Lab", alternativeNames: ["DNS:dest-example"])
        for policy in [AccessPolicy(admins: ["CN=storagectl-admin,*"]), AccessPolicy(admins: ["CN=storagectl-admin,*"], readers: ["DNS:dest-*"])] {
            let e = await host.ask(line, transport: .tls, client: hostCert, policy: policy).result.error
            #expect(e?.code == .permissionDenied && e?.message.contains("CN=dest-example,O=Lab") == true && e?.message.contains("allow-admin") == true,
                    "\(String(describing: e))")
        }
    }

    @Test("a reader certificate reads (DOMAIN, VERIFY without nonce); an admin certificate passes to validation")
    func tlsRoles() async throws {
        let host = try await SimHost()
        let policy = AccessPolicy(admins: ["CN=storagectl-admin"], readers: ["CN=dest-example"])
        let reader = PeerIdentity(transport: .tls, subject: "CN=dest-example")
        #expect(await host.ask("DOMAIN name=wanderer1", transport: .tls, client: reader, policy: policy).result.ok != nil)
        let admin = PeerIdentity(transport: .tls, subject: "CN=storagectl-admin")
        let e = await host.ask("POOL-ENSURE name=p server=198.18.0.1 export=relative target=/t", transport: .tls, client: admin, policy: policy)
            .result.error
        #expect(e?.code == .invalidArgument, "past authorization, refused by validation: \(String(describing: e))")
    }

    @Test("HEALTH over plain TCP is a summary: no DATA, no details")
    func healthSummary() async throws {
        let host = try await SimHost()
        let tcp = await host.ask("HEALTH", transport: .tcp)
        #expect(tcp.result.ok?["health"] != nil && tcp.lines.isEmpty)
        let unix = await host.ask("HEALTH")
        #expect(!unix.lines.isEmpty)
    }

    @Test("ADOPT without a shared copy says to COPY first; a wrong-sized copy is refused")
    func adoptNeedsCopy() async throws {
        let host = try await SimHost()
        _ = try await #require(host.ask(Self.ensureHere(host)).result.ok)
        var e = await host.ask("ADOPT domain=wanderer1 pool=shared").result.error
        #expect(e?.code == .invalidState)
        #expect(e?.message.contains("COPY domain=wanderer1") == true)
        try FileManager.default.createDirectory(atPath: host.share + "/wanderer1", withIntermediateDirectories: true)
        try Data("short".utf8).write(to: URL(fileURLWithPath: host.share + "/wanderer1/wanderer1.qcow2"))
        e = await host.ask("ADOPT domain=wanderer1 pool=shared").result.error
        #expect(e?.code == .invalidState)
        #expect(e?.message.contains("bytes") == true)
    }

    // MARK: ADOPT + RESTORE (mount mode)

    static func ensureHere(_ host: SimHost) -> String {
        "POOL-ENSURE name=shared server=198.18.0.1 export=/var/lib/libvirt/shared-images target=\(host.share)"
    }

    @Test("ADOPT points the file disk at the copy under the pool target, keeps the old definition; RESTORE puts it back")
    func adoptAndRestore() async throws {
        let host = try await SimHost()
        _ = try await #require(host.ask(Self.ensureHere(host)).result.ok)
        try FileManager.default.createDirectory(atPath: host.share + "/wanderer1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: host.images + "/wanderer1.qcow2", toPath: host.share + "/wanderer1/wanderer1.qcow2")
        let adopt = await host.ask("ADOPT domain=wanderer1 pool=shared")
        let ok = try #require(adopt.result.ok, "\(String(describing: adopt.result.error))")
        #expect(ok["changed"] == "yes")
        #expect(ok["attach"] == "mount")
        #expect(ok["disks"] == "1")
        let saved = try #require(ok["saved"])
        #expect(saved == host.state + "/domains/6695eb01-f6a4-8304-79aa-97f2502e193f.previous.xml")
        #expect(try String(contentsOfFile: saved, encoding: .utf8).contains(host.images + "/wanderer1.qcow2"))
        #expect(adopt.lines.data == [["disk": "vda", "from": host.images + "/wanderer1.qcow2",
                                      "to": host.share + "/wanderer1/wanderer1.qcow2"]])
        var disks = await host.ask("DOMAIN name=wanderer1").lines.data
        #expect(disks.first { $0["disk"] == "vda" }?["source"] == host.share + "/wanderer1/wanderer1.qcow2")
        #expect(disks.first { $0["disk"] == "vda" }?["cache"] == "none", "the rest of the disk is kept")
        #expect(disks.first { $0["disk"] == "vdb" }?["source"] == "nfs://198.18.0.1/srv/data.img")

        // idempotent, by pool name or by target path
        #expect(await host.ask("ADOPT domain=wanderer1 pool=shared").result.ok?["changed"] == "no")
        #expect(await host.ask("ADOPT domain=wanderer1 pool-target=\(host.share)").result.ok?["changed"] == "no")

        let restore = await host.ask("RESTORE domain=wanderer1")
        #expect(restore.result.ok?["changed"] == "yes", "\(String(describing: restore.result.error))")
        disks = await host.ask("DOMAIN name=wanderer1").lines.data
        #expect(disks.first { $0["disk"] == "vda" }?["source"] == host.images + "/wanderer1.qcow2")
        #expect(!FileManager.default.fileExists(atPath: saved))
        #expect(await host.ask("RESTORE domain=wanderer1").result.ok?["changed"] == "no")
    }

    @Test("ADOPT needs exactly one way to name the share")
    func adoptArguments() async throws {
        let host = try await SimHost()
        for line in ["ADOPT domain=wanderer1", "ADOPT domain=wanderer1 pool=shared server=198.18.0.1 export=/e",
                     "ADOPT domain=wanderer1 attach=libnfs", "ADOPT domain=wanderer1 pool-target=relative",
                     "ADOPT domain=wanderer1 attach=nbd server=198.18.0.1 export=/e"] {
            #expect(await host.ask(line).result.error?.code == .invalidArgument, "\(line)")
        }
        #expect(await host.ask("ADOPT domain=wanderer1 pool=nosuch").result.error?.code == .notFound)
    }

    // MARK: VERIFY (mount mode, local)

    @Test("VERIFY reads size and header through the pool target, and nonces round-trip")
    func verifyLocal() async throws {
        let host = try await SimHost()
        _ = try await #require(host.ask(Self.ensureHere(host)).result.ok)
        try FileManager.default.createDirectory(atPath: host.share + "/wanderer1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: host.images + "/wanderer1.qcow2", toPath: host.share + "/wanderer1/wanderer1.qcow2")
        let path = host.share + "/wanderer1/wanderer1.qcow2"
        let v = try #require(await host.ask("VERIFY path=\(path)").result.ok)
        #expect(v["format"] == "qcow2")
        #expect(v["virtual-size"] == String(64 << 20))
        #expect(v["via"] == "mount")
        let w = try #require(await host.ask("VERIFY path=\(path) nonce-write=t1").result.ok)
        let value = try #require(w["nonce-value"])
        #expect(await host.ask("VERIFY path=\(path) nonce-read=t1 value=0000").result.error?.code == .invalidState)
        #expect(await host.ask("VERIFY path=\(path) nonce-read=t1 value=\(value)").result.ok?["nonce-match"] == "yes")
        #expect(await host.ask("VERIFY path=\(path) nonce-read=t1 value=\(value)").result.error?.code == .notFound, "the reader removed it")
        #expect(await host.ask("VERIFY pool=shared path=wanderer1/wanderer1.qcow2").result.ok?["size"] == v["size"])
        // files outside a pool's target are not VERIFY's business
        #expect(await host.ask("VERIFY path=\(host.images)/wanderer1.qcow2").result.error?.code == .invalidArgument)
        #expect(await host.ask("VERIFY path=\(path) nonce-write=a%2Fb").result.error?.code == .invalidArgument)
        #expect(await host.ask("VERIFY pool=shared path=../etc/passwd").result.error?.code == .invalidArgument)
    }
}

@Suite("domain XML rewriting")
struct DomainXMLTests {
    static let xml = """
        <domain type='kvm'>
          <name>w1</name>
          <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2' cache='none'/>
              <source file='/var/lib/libvirt/images/w1.qcow2'/>
              <backingStore/>
              <target dev='vda' bus='virtio'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
            </disk>
            <disk type='file' device='cdrom'>
              <source file='/iso/x.iso'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
            </disk>
            <graphics type='vnc' passwd='s&amp;cret'/>
          </devices>
        </domain>
        """

    @Test("libnfs mode: the disk becomes an NFS network disk; everything else is kept")
    func libnfs() throws {
        let out = try DomainDefinition.rewrite(Self.xml, placements: ["vda": .nfs(server: "198.18.0.1", name: "/var/lib/libvirt/shared-images/w1/w1.qcow2")])
        let disks = try DomainDefinition.disks(out)
        #expect(disks[0].type == "network")
        #expect(disks[0].networkProtocol == "nfs")
        #expect(disks[0].networkName == "/var/lib/libvirt/shared-images/w1/w1.qcow2")
        #expect(disks[0].networkHosts == ["198.18.0.1"])
        #expect(disks[0].cache == "none")
        #expect(disks[0].format == "qcow2")
        #expect(out.contains("<identity user=\"root\" group=\"root\""))
        #expect(!out.contains("backingStore"))
        #expect(out.contains("slot=\"0x04\""))
        #expect(disks[1].source == "/iso/x.iso", "the cdrom is untouched")
        #expect(out.contains("s&amp;cret"), "entities stay escaped")
    }

    @Test("mount mode: the file source changes, nothing else")
    func mount() throws {
        let out = try DomainDefinition.rewrite(Self.xml, placements: ["vda": .file(path: "/mnt/share/w1/w1 'x'.qcow2")])
        let disks = try DomainDefinition.disks(out)
        #expect(disks[0].type == "file")
        #expect(disks[0].source == "/mnt/share/w1/w1 'x'.qcow2")
        #expect(try DomainDefinition.identity(out) == ("w1", "6695eb01-f6a4-8304-79aa-97f2502e193f"))
    }

    @Test("empty, malformed or foreign XML is an error, never a crash", arguments: [
        "", "   ", "<domain>", "<domain><devices><disk></devices></domain>", "not xml", "<pool/>",
    ])
    func hostileXML(_ text: String) {
        #expect(throws: AgentError.self) { _ = try DomainDefinition.rewrite(text, placements: [:]) }
    }

    @Test("a disk that is not in the definition is an error")
    func missingDisk() {
        #expect(throws: AgentError.self) { _ = try DomainDefinition.rewrite(Self.xml, placements: ["vdz": .file(path: "/x")]) }
    }
}
