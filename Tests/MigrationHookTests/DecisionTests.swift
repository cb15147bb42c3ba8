import Testing
@testable import MigrationHook

/// A resolver over a fixed map (path -> canonical path); a path not in it does not exist.
struct FakePaths: PathResolver {
    var map: [String: String]
    func canonical(_ path: String) -> String? { map[path] }
}

func domainXML(_ name: String = "w1", disks: String) -> [UInt8] {
    Array("<domain type='qemu'><name>\(name)</name><uuid>5c1ab000-0000-4000-8000-000000000009</uuid><devices>\(disks)</devices></domain>".utf8)
}

func fileDisk(_ path: String, target: String = "vda", device: String = "disk") -> String {
    "<disk type='file' device='\(device)'><driver name='qemu' type='qcow2'/><source file='\(path)'><seclabel model='none'/></source><backingStore/><target dev='\(target)' bus='virtio'/></disk>"
}

@Suite("migration hook: reading the domain XML")
struct DomainStorageTests {
    @Test("disk sources, backing chains, mirrors and data files are all found, with their types")
    func layers() throws {
        let xml = domainXML(disks: """
            <disk type='file' device='disk'><source file='/s/a.qcow2'><dataStore type='block'><format type='raw'/><source dev='/dev/sdz'/></dataStore></source>\
            <backingStore type='file'><format type='qcow2'/><source file='/s/base.qcow2'/><backingStore type='block'><source dev='/dev/sdb'/><backingStore/></backingStore></backingStore>\
            <mirror type='file' job='copy'><source file='/elsewhere/m.qcow2'/></mirror><target dev='vda'/></disk>\
            <disk type='network' device='disk'><source protocol='nfs' name='/shared-images/w1.qcow2'><host name='198.18.0.1'/></source><target dev='vdb'/></disk>\
            <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>\
            <disk type='volume' device='disk'><source pool='default' volume='v1'/><target dev='vdc'/></disk>
            """)
        let d = try DomainStorage.parse(xml)
        #expect(d.name == "w1")
        #expect(d.disks.map(\.target) == ["vda", "vdb", "hdc", "vdc"])
        #expect(d.disks[0].layers.map(\.type) == ["file", "block", "file", "block", "file"])
        #expect(d.disks[0].layers.map(\.path) == ["/s/a.qcow2", "/dev/sdz", "/s/base.qcow2", "/dev/sdb", "/elsewhere/m.qcow2"])
        #expect(d.disks[1].layers == [.init(type: "network", path: nil, volume: nil)])
        #expect(d.disks[2].device == "cdrom" && d.disks[2].layers[0].path == nil)
        #expect(d.disks[3].layers[0].volume == "default/v1")
    }

    @Test("empty, blank, oversize, malformed, non-domain, nameless, DOCTYPE, ENTITY and processing-instruction input is refused",
          arguments: ["", "  \n", "<domain><name>w1</name>", "<domain><name>w1</name></domain><x/>", "<pool><name>p</name></pool>",
                      "<domain><devices/></domain>", "<!DOCTYPE domain [<!ENTITY x 'w1'>]><domain><name>&x;</name></domain>",
                      "<!doctype domain><domain><name>w1</name></domain>", "<domain><name>w1</name><?x?></domain>", "<?x?>",
                      "<domain><name>w1</name>\u{0}</domain>", "garbage", "<domain><name>w1</name><devices></domain>"])
    func refused(_ text: String) {
        #expect(throws: HookError.self) { _ = try DomainStorage.parse(Array(text.utf8)) }
    }

    @Test("more than 4 MiB is refused before parsing")
    func oversize() {
        let big = Array("<domain><name>w1</name><description>".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 4 << 20) + Array("</description></domain>".utf8)
        #expect(throws: HookError("the domain XML on stdin is larger than 4 MiB")) { _ = try DomainStorage.parse(big) }
    }

    @Test("mountinfo: the mount point field, octal escapes decoded")
    func mountInfo() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n22 1 0:21 / /var/lib/libvirt/shared-images rw - nfs 198.18.0.1:/x rw\n"
        #expect(ReadyShares.parseMountInfo(text) == ["/mnt/with space", "/var/lib/libvirt/shared-images"])
    }

    @Test("configuration: exempt and ready-shares; anything else is an error naming the line")
    func config() throws {
        let c = try HookConfig.parse("# c\n\nexempt = build-vm\nexempt=other\nready-shares = /srv/r\n", file: "f")
        #expect(c.exempt == ["build-vm", "other"] && c.readyShares == "/srv/r")
        #expect(throws: HookError("f line 1: unknown key 'exmpt' (exempt, ready-shares)")) { _ = try HookConfig.parse("exmpt = x", file: "f") }
        #expect(throws: HookError.self) { _ = try HookConfig.parse("exempt", file: "f") }
        #expect(throws: HookError.self) { _ = try HookConfig.parse("ready-shares = relative", file: "f") }
        #expect(throws: HookError.self) { _ = try ReadyShares.parseRecord("/ok\nrelative\n", file: "r") }
        #expect(try ReadyShares.parseRecord("# x\n/a\n\n/b\n", file: "r") == ["/a", "/b"])
    }
}

@Suite("migration hook: the decision")
struct DecisionTests {
    let root = "/var/lib/libvirt/shared-images"
    var ready: ReadyShares { ReadyShares(listed: [root], mountPoints: [root, "/"]) }
    var paths: FakePaths {
        FakePaths(map: [root: root, "\(root)/w1/w1.qcow2": "\(root)/w1/w1.qcow2",
                        "\(root)/w1/escape.qcow2": "/var/lib/libvirt/images/w1.qcow2",
                        "\(root)/../images/w1.qcow2": "/var/lib/libvirt/images/w1.qcow2",
                        "/var/lib/libvirt/shared-images-x/w1.qcow2": "/var/lib/libvirt/shared-images-x/w1.qcow2",
                        "/var/lib/libvirt/images/w1.qcow2": "/var/lib/libvirt/images/w1.qcow2",
                        "/iso/boot.iso": "/iso/boot.iso", root + "/iso/boot.iso": root + "/iso/boot.iso"])
    }

    func decide(_ disks: String, config: HookConfig = HookConfig(), ready: ReadyShares? = nil) throws -> HookDecision {
        MigrationGate.decide(try DomainStorage.parse(domainXML(disks: disks)), config: config, ready: ready ?? self.ready, paths: paths)
    }

    @Test("a disk inside a ready, mounted share passes; so do network disks, empty drives and no disks")
    func allowed() throws {
        #expect(try decide(fileDisk("\(root)/w1/w1.qcow2")) == .allow(exempted: false))
        #expect(try decide("<disk type='network' device='disk'><source protocol='nfs' name='/x/w1.qcow2'><host name='198.18.0.1'/></source><target dev='vda'/></disk>") == .allow(exempted: false))
        #expect(try decide("<disk type='file' device='cdrom'><target dev='hdc'/></disk>") == .allow(exempted: false))
        #expect(try decide("") == .allow(exempted: false))
        #expect(try decide(fileDisk("\(root)/iso/boot.iso", target: "hdc", device: "cdrom")) == .allow(exempted: false))
    }

    @Test("local, lookalike, `..`, escaping symlink, missing, unmounted, unlisted: refused with one sentence naming the disk and storagectl share",
          arguments: [("/var/lib/libvirt/images/w1.qcow2", "it is not inside a share this host has ready"),
                      ("/var/lib/libvirt/shared-images-x/w1.qcow2", "it is not inside a share"),
                      ("/var/lib/libvirt/shared-images/../images/w1.qcow2", "it resolves to /var/lib/libvirt/images/w1.qcow2"),
                      ("/var/lib/libvirt/shared-images/w1/escape.qcow2", "it resolves to /var/lib/libvirt/images/w1.qcow2"),
                      ("/var/lib/libvirt/shared-images/w1/gone.qcow2", "it does not exist on this host"),
                      ("relative/w1.qcow2", "its path is not absolute")])
    func refused(_ path: String, _ why: String) throws {
        guard case .refuse(let sentence) = try decide(fileDisk(path)) else { Issue.record("\(path) was let through"); return }
        #expect(sentence.contains(why), "\(sentence)")
        #expect(sentence.contains("its disk vda (\(path))"))
        #expect(sentence.contains("`storagectl share w1`"))
        #expect(sentence.hasPrefix("storagectl refuses") && sentence.hasSuffix(".") && !sentence.contains("\n"))
    }

    @Test("a listed share that is not mounted, or not listed at all, is not ready")
    func notReady() throws {
        let disk = fileDisk("\(root)/w1/w1.qcow2")
        guard case .refuse(let s1) = try decide(disk, ready: ReadyShares(listed: [root], mountPoints: ["/"])) else { Issue.record("let through"); return }
        #expect(s1.contains("the share \(root) is not mounted on this host"))
        guard case .refuse(let s2) = try decide(disk, ready: ReadyShares(listed: [], mountPoints: [root])) else { Issue.record("let through"); return }
        #expect(s2.contains("this host has no share ready"))
    }

    @Test("a backing file, a cdrom image or a mirror outside the share is refused too")
    func everyLayer() throws {
        let backing = "<disk type='file' device='disk'><source file='\(root)/w1/w1.qcow2'/><backingStore type='file'><source file='/var/lib/libvirt/images/w1.qcow2'/><backingStore/></backingStore><target dev='vda'/></disk>"
        #expect(try decide(backing) != .allow(exempted: false))
        #expect(try decide(fileDisk("/iso/boot.iso", target: "hdc", device: "cdrom")) != .allow(exempted: false))
        let mirror = "<disk type='file' device='disk'><source file='\(root)/w1/w1.qcow2'/><mirror type='file' file='/var/lib/libvirt/images/w1.qcow2' job='copy'/><target dev='vda'/></disk>"
        #expect(try decide(mirror) != .allow(exempted: false))
    }

    @Test("volume, nvme and unknown disk types are refused (the hook cannot place them without libvirt)")
    func unknownTypes() throws {
        guard case .refuse(let s) = try decide("<disk type='volume' device='disk'><source pool='default' volume='v'/><target dev='vdc'/></disk>") else { Issue.record("let through"); return }
        #expect(s.contains("libvirt storage volume default/v"))
        #expect(try decide("<disk type='nvme' device='disk'><source type='pci' managed='yes' namespace='1'/><target dev='vdd'/></disk>") != .allow(exempted: false))
    }

    @Test("a domain exempted by name passes whatever its disks")
    func exempt() throws {
        #expect(try decide(fileDisk("/var/lib/libvirt/images/w1.qcow2"), config: HookConfig(exempt: ["w1"])) == .allow(exempted: true))
        #expect(try decide(fileDisk("/var/lib/libvirt/images/w1.qcow2"), config: HookConfig(exempt: ["w2"])) != .allow(exempted: false))
    }

    @Test("a root listed as a symbolic link (not its canonical path) is not ready")
    func linkedRoot() throws {
        var p = paths
        p.map["/srv/link"] = root
        p.map["/srv/link/w1/w1.qcow2"] = "\(root)/w1/w1.qcow2"
        let d = try DomainStorage.parse(domainXML(disks: fileDisk("/srv/link/w1/w1.qcow2")))
        let decision = MigrationGate.decide(d, config: HookConfig(), ready: ReadyShares(listed: ["/srv/link"], mountPoints: ["/srv/link", root]), paths: p)
        #expect(decision != .allow(exempted: false))
    }
}
