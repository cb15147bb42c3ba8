import AgentAPI
import AgentProtocol
import Foundation
import Libvirt
import Testing
@testable import ComputeAgentCore

@Suite("migration gate: validation, CPU XML, mount table, libvirt flags")
struct MigrationValidationTests {
    static let cpu = CPUDefinition(arch: "x86_64", machine: "pc-i440fx-7.2", virtType: "kvm", emulator: "/usr/bin/qemu-system-x86_64",
                                   mode: "custom", model: "Skylake-Client-IBRS", match: "exact", check: "partial", fallback: "forbid",
                                   features: [.init(policy: "require", name: "vmx"), .init(policy: "disable", name: "svm")])

    @Test("libvirt URIs: qemu, qemu+tcp, qemu+tls, qemu+ssh to HOST[:PORT]/system", arguments: [
        "qemu+tcp://dest-example/system", "qemu+tls://198.18.0.3/system", "qemu+ssh://dest.example.org/system",
        "qemu://dest-example/system", "qemu+tcp://dest-example:16509/system",
    ])
    func uriAccepted(_ uri: String) throws {
        #expect(try Validation.libvirtURI(uri) == uri)
    }

    @Test("hostile or unsupported libvirt URIs are refused", arguments: [
        "qemu+tcp://dest-example/system?command=/bin/sh", "qemu+ssh://root@dest-example/system",
        "qemu+unix:///system?socket=/tmp/x", "qemu+ext://dest/system", "xen://dest/system", "test:///default",
        "qemu+tcp://dest-example/session", "qemu+tcp://dest example/system", "qemu+tcp://dest-example/system\n",
        "qemu+tcp://dest-example/system#x", "qemu:///system", "qemu+tcp://-bad/system", "qemu+tcp://dest:0/system",
        "qemu+tcp://dest:99999/system", "qemu+tcp://[::1]/system", "qemu+tcp://dest%2Fx/system", "", "dest-example",
        "qemu+tcp://dest-example/system/", "qemu+tcp://dest-example/system\u{85}",
    ])
    func uriRefused(_ uri: String) {
        #expect(throws: AgentError.self) { try Validation.libvirtURI(uri) }
    }

    @Test("the test driver's URIs pass only for an agent on the test driver")
    func testURIs() throws {
        #expect(try Validation.libvirtURI("test:///default", testDriver: true) == "test:///default")
        #expect(try Validation.libvirtURI("test:///tmp/host.xml", testDriver: true) == "test:///tmp/host.xml")
        #expect(throws: AgentError.self) { try Validation.libvirtURI("test:///../etc/x", testDriver: true) }
        #expect(throws: AgentError.self) { try Validation.libvirtURI("test:///default") }
    }

    @Test("UUIDs: 8-4-4-4-12 hex, answered lower-case")
    func uuids() throws {
        #expect(try Validation.uuid("6695EB01-f6a4-8304-79aa-97f2502e193f") == "6695eb01-f6a4-8304-79aa-97f2502e193f")
        for bad in ["", "6695eb01f6a48304", "6695eb01-f6a4-8304-79aa-97f2502e193g", "6695eb01-f6a4-8304-79aa-97f2502e193f-",
                    "6695eb01-f6a4-8304-79aa-97f2502e193", "'><x/>"] {
            #expect(throws: AgentError.self, "\(bad)") { try Validation.uuid(bad) }
        }
    }

    @Test("CPU definitions: identifiers only, known modes and policies, an absolute emulator")
    func cpuFields() throws {
        #expect(try Validation.cpuDefinition(Self.cpu) == Self.cpu)
        var hostile: [CPUDefinition] = []
        func with(_ change: (inout CPUDefinition) -> Void) { var c = Self.cpu; change(&c); hostile.append(c) }
        with { $0.model = "qemu64'/><feature policy='forbid' name='x" }
        with { $0.model = "" }
        with { $0.arch = "x86 64" }
        with { $0.machine = "-pc" }
        with { $0.virtType = "kvm&amp;" }
        with { $0.emulator = "usr/bin/qemu" }
        with { $0.emulator = "/usr/bin/../../bin/sh" }
        with { $0.mode = "passthrough" }
        with { $0.match = "loose" }
        with { $0.check = "always" }
        with { $0.fallback = "maybe" }
        with { $0.features = [.init(policy: "want", name: "vmx")] }
        with { $0.features = [.init(policy: "require", name: "vmx<")] }
        with { $0.features = Array(repeating: .init(policy: "require", name: "vmx"), count: 257) }
        for c in hostile {
            #expect(throws: AgentError.self, "\(c)") { try Validation.cpuDefinition(c) }
        }
    }

    @Test("a domain's CPU definition round-trips through the <cpu> XML MIGRATION-TARGET builds")
    func cpuRoundTrip() throws {
        let domain = """
            <domain type='kvm'>
              <name>vm</name>
              <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
              <cpu mode='custom' match='exact' check='partial'>
                <model fallback='forbid'>Skylake-Client-IBRS</model>
                <feature policy='require' name='vmx'/>
                <feature policy='disable' name='svm'/>
              </cpu>
              <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
            </domain>
            """
        let parsed = try CPUDefinitionXML.parse(domain)
        #expect(parsed == Self.cpu)
        let built = CPUDefinitionXML.build(parsed)
        // the built element, put back into a domain with the same emulator facts, reads the same
        let again = try CPUDefinitionXML.parse("""
            <domain type='kvm'><os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>\(built)
            <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>
            """)
        #expect(again == parsed)
        // on the wire and back
        var w = FieldWriter()
        MigrationTargetQuery(name: "vm", uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f", memoryBytes: 1, pools: [], cpu: parsed).encode(into: &w)
        let line = try Request.parse(Request("MIGRATION-TARGET", w.fields).line)
        #expect(try MigrationTargetQuery(line).cpu == parsed)
    }

    @Test("no <cpu>, host-passthrough, and a <cpu> with a model but no mode (custom)")
    func cpuModes() throws {
        let bare = try CPUDefinitionXML.parse("<domain type='qemu'><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>")
        #expect(bare.mode == nil && bare.model == nil && bare.features.isEmpty && bare.virtType == "qemu" && bare.emulator == "")
        let passthrough = try CPUDefinitionXML.parse("<domain type='kvm'><cpu mode='host-passthrough' check='none'/></domain>")
        #expect(passthrough.mode == "host-passthrough" && passthrough.check == "none")
        let model = try CPUDefinitionXML.parse("<domain type='kvm'><cpu><model>qemu64</model></cpu></domain>")
        #expect(model.mode == "custom" && model.model == "qemu64")
    }

    @Test("the XML library escapes what it is given: a value can never add an element")
    func cpuBuildEscapes() throws {
        var c = Self.cpu
        c.model = "a'\"<b>&"
        let xml = CPUDefinitionXML.build(c)
        let back = try CPUDefinitionXML.parse("<domain>\(xml)</domain>")
        #expect(back.model == "a'\"<b>&")
        #expect(back.features.count == 2)
    }

    @Test("host UUID from capabilities; none in the test driver's")
    func hostUUID() throws {
        #expect(try CPUDefinitionXML.hostUUID(capabilities: "<capabilities><host><uuid>5C1AB000-0000-4000-8000-000000000002</uuid></host></capabilities>")
                == "5c1ab000-0000-4000-8000-000000000002")
        #expect(try CPUDefinitionXML.hostUUID(capabilities: "<capabilities><host><cpu/></host></capabilities>") == nil)
        #expect(throws: AgentError.self) { try CPUDefinitionXML.hostUUID(capabilities: "") }
    }

    @Test("mountinfo: the longest mount point that holds the path wins; escapes decoded")
    func mountTable() {
        let table = MountTable.parse("""
            22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
            40 22 0:40 / /var/lib/libvirt/shared-images rw,relatime shared:20 - nfs 198.18.0.1:/srv rw,vers=3
            41 22 0:41 / /var/lib/libvirt/shared rw - nfs4 198.18.0.1:/x rw
            42 22 0:42 / /mnt/with\\040space rw - xfs /dev/sdb rw
            43 22 0:43 / /var/lib/libvirt/shared-images/sub rw - tmpfs tmpfs rw
            bad line
            """)
        #expect(table.fileSystem(of: "/var/lib/libvirt/shared-images/vm/vm.qcow2") == "nfs")
        #expect(table.fileSystem(of: "/var/lib/libvirt/shared/vm.qcow2") == "nfs4")
        #expect(table.fileSystem(of: "/var/lib/libvirt/shared-imagesX/vm.qcow2") == "ext4")
        #expect(table.fileSystem(of: "/var/lib/libvirt/shared-images/sub/a") == "tmpfs")
        #expect(table.fileSystem(of: "/mnt/with space/a.img") == "xfs")
        #expect(table.fileSystem(of: "relative") == nil)
        #expect(MountTable.current().fileSystem(of: "/") != nil)
    }

    @Test("MIGRATE's libvirt flags: peer-to-peer always, UNSAFE never")
    func flags() {
        let p2p = UInt32(1 << 1), unsafe = UInt32(1 << 9)
        for mode in MigrationMode.allCases {
            for extra in [false, true] {
                let r = MigrateRequest(name: "vm", uri: "qemu+tcp://d/system", mode: mode, persistent: true, undefineSource: extra,
                                       autoConverge: extra, postcopy: extra && mode != .offline)
                let f = ComputeAgentHandler.migrationFlags(r).libvirtFlags
                #expect(f & p2p != 0)
                #expect(f & unsafe == 0)
                #expect((f & 1 != 0) == (mode == .live))
            }
        }
        #expect(MigrationFlags(rawValue: unsafe).rawValue == 0, "UNSAFE cannot be smuggled in through rawValue")
    }
}
