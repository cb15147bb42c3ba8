import AgentAPI
import AgentProtocol
import Foundation
import Testing
@testable import StoragectlCommands

@Suite("check evaluation")
struct CheckEvaluationTests {
    static let root = "/srv/shared"

    static func target(free: UInt64 = 8 << 30, hostUUID: String = "dst-uuid", sameName: DomainRunState? = nil, sameUUIDName: String? = nil,
                       sameUUIDState: DomainRunState? = nil, cpu: CPUVerdict = .compatible, installed: Bool = true, loaded: Bool = true,
                       pools: [TargetPool] = []) -> Result<MigrationTargetQuery.Answer, AgentCallFailure> {
        .success(.init(hostUUID: hostUUID, freeMemoryBytes: free, sameNameState: sameName, sameUUIDName: sameUUIDName, sameUUIDState: sameUUIDState,
                       cpu: cpu, cpuDetail: "", hookInstalled: installed, hookLoaded: loaded, hookDetail: "", pools: pools))
    }

    static let failedTarget: Result<MigrationTargetQuery.Answer, AgentCallFailure> =
        .failure(AgentCallFailure(host: "dst", verb: "MIGRATION-TARGET", error: AgentError(.internal, "libvirt: cannot read capabilities")))

    struct DiskCase: Sendable, CustomTestStringConvertible {
        var disk: DiskRecord
        var mode: MigrationMode
        var expected: CheckOutcome
        var mentions: String
        var testDescription: String { "\(disk.type) \(disk.source) fs=\(disk.fileSystem ?? "-") cache=\(disk.cache) \(mode) -> \(expected)" }
    }

    static let diskCases: [DiskCase] = [
        .init(disk: DiskRecord(target: "vda", type: "file", source: "/var/lib/libvirt/images/w1.qcow2", cache: "none", fileSystem: "ext4"),
              mode: .live, expected: .fail, mentions: "storagectl share w1"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: "/var/lib/libvirt/images/w1.qcow2", cache: "none", fileSystem: "ext4"),
              mode: .offline, expected: .fail, mentions: "storagectl share w1"),
        .init(disk: DiskRecord(target: "vda", type: "block", source: "/dev/sdb", cache: "none"), mode: .live, expected: .fail, mentions: "local storage"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "none", fileSystem: "nfs"),
              mode: .live, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "directsync", fileSystem: "nfs4"),
              mode: .live, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "writeback", fileSystem: "nfs"),
              mode: .live, expected: .fail, mentions: "cache=writeback"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "default", fileSystem: "nfs"),
              mode: .live, expected: .fail, mentions: "cache='none'"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "writeback", fileSystem: "nfs"),
              mode: .offline, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "writeback", fileSystem: "gfs2"),
              mode: .live, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "writeback", readOnly: true, fileSystem: "nfs"),
              mode: .live, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "none", fileSystem: "ext4"),
              mode: .live, expected: .fail, mentions: "libvirt refuses a live migration of it as unsafe"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "none", fileSystem: "ext4"),
              mode: .offline, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "none"),
              mode: .live, expected: .warn, mentions: "did not report the file system"),
        .init(disk: DiskRecord(target: "vda", type: "network", source: "nfs://198.18.0.1" + root + "/w1/w1.qcow2", cache: "none"),
              mode: .live, expected: .pass, mentions: "every disk"),
        // libvirt takes a network disk as shared whatever its cache mode (the lab's libnfs
        // disks have cache=default and migrate live)
        .init(disk: DiskRecord(target: "vda", type: "network", source: "nfs://198.18.0.1" + root + "/w1/w1.qcow2", cache: "default"),
              mode: .live, expected: .pass, mentions: "every disk"),
        .init(disk: DiskRecord(target: "vda", type: "file", source: root + "/w1/w1.qcow2", cache: "writeback", fileSystem: "nfs"),
              mode: .live, expected: .fail, mentions: "cache=writeback"),
        .init(disk: DiskRecord(target: "hdc", type: "file", device: "cdrom", source: "/isos/debian.iso"),
              mode: .live, expected: .warn, mentions: "change-media"),
    ]

    @Test("disks: local, file system and cache mode per migration mode", arguments: diskCases)
    func disks(_ c: DiskCase) {
        let r = CheckEvaluation.disks(vm: "w1", source: "src", destination: "dst", disks: [c.disk], mode: c.mode, exportRoot: Self.root)
        #expect(r.result == c.expected)
        #expect((r.sentence + " " + r.remedy).contains(c.mentions), "\(r.sentence) -> \(r.remedy)")
        if c.expected == .pass { #expect(r.remedy.isEmpty) } else { #expect(!r.remedy.isEmpty) }
    }

    static let gib: UInt64 = 1 << 30
    static let mib: UInt64 = 1 << 20
    static let memoryCases: [(UInt64, UInt64, CheckOutcome)] = [
        (4 * gib, 3 * gib, .fail),
        (4 * gib, 4 * gib, .warn),                            // fits, no margin
        (4 * gib, 4 * gib + 4 * gib / 10 - 1, .warn),         // 10 % margin, one byte short
        (4 * gib, 4 * gib + 4 * gib / 10, .pass),
        (512 * mib, 767 * mib, .warn),                        // the 256 MiB floor
        (512 * mib, 768 * mib, .pass),
    ]

    @Test("memory: fail below the VM's memory, warn below VM + max(10 %, 256 MiB)", arguments: memoryCases)
    func memory(vm: UInt64, free: UInt64, expected: CheckOutcome) {
        let r = CheckEvaluation.memory(vm: "w1", destination: "dst", mode: .live, vmBytes: vm, target: Self.target(free: free))
        #expect(r.result == expected, "\(r.sentence)")
        #expect(CheckEvaluation.memory(vm: "w1", destination: "dst", mode: .offline, vmBytes: vm, target: Self.target(free: 0)).result == .skip)
    }

    struct DirtyCase: Sendable {
        var dirty: UInt64
        var link: UInt64?
        var capMiB: UInt64?
        var expected: CheckOutcome
        var remedy: String
    }

    @Test("dirty-rate: warn above 50 %, fail at 100 % of min(link, cap)", arguments: [
        DirtyCase(dirty: 50 << 20, link: 100 << 20, capMiB: nil, expected: .pass, remedy: ""),          // exactly 50 %: pass
        DirtyCase(dirty: (50 << 20) + 1, link: 100 << 20, capMiB: nil, expected: .warn, remedy: "--auto-converge"),
        DirtyCase(dirty: (100 << 20) - 1, link: 100 << 20, capMiB: nil, expected: .warn, remedy: "--postcopy"),
        DirtyCase(dirty: 100 << 20, link: 100 << 20, capMiB: nil, expected: .fail, remedy: "--offline"),
        DirtyCase(dirty: 2 << 20, link: 1000 << 20, capMiB: 1, expected: .fail, remedy: "raise --bandwidth"),   // the cap limits
        DirtyCase(dirty: 2 << 20, link: 1 << 20, capMiB: 1000, expected: .fail, remedy: "--auto-converge"),     // the link limits
        DirtyCase(dirty: 2 << 20, link: nil, capMiB: 10, expected: .pass, remedy: ""),
        DirtyCase(dirty: 2 << 20, link: nil, capMiB: nil, expected: .warn, remedy: "--bandwidth"),
        DirtyCase(dirty: 2 << 20, link: 0, capMiB: nil, expected: .warn, remedy: "--bandwidth"),
    ])
    func dirtyRate(_ c: DirtyCase) {
        let r = CheckEvaluation.dirtyRate(vm: "w1", source: "src", destination: "dst", mode: .live, state: .running,
                                          dirty: .success(.init(bytesPerSecond: c.dirty, seconds: 1)), measuredBandwidth: c.link,
                                          bandwidthError: c.link == nil ? "refused" : nil, capMiB: c.capMiB)
        #expect(r.result == c.expected, "\(r.sentence)")
        #expect(c.remedy.isEmpty ? r.remedy.isEmpty : r.remedy.contains(c.remedy))
        if c.expected == .fail, c.capMiB == nil || c.link.map({ $0 < c.capMiB! << 20 }) == true {
            #expect(!r.remedy.contains("raise --bandwidth"), "the cap is not what limits")
        }
    }

    @Test("dirty-rate applies to a running VM migrated live only")
    func dirtyRateSkips() {
        let dirty: Result<DirtyRateQuery.Answer, AgentCallFailure> = .success(.init(bytesPerSecond: 1, seconds: 1))
        #expect(CheckEvaluation.dirtyRate(vm: "w1", source: "s", destination: "d", mode: .offline, state: .shutOff, dirty: nil,
                                          measuredBandwidth: nil, bandwidthError: nil, capMiB: nil).result == .skip)
        #expect(CheckEvaluation.dirtyRate(vm: "w1", source: "s", destination: "d", mode: .live, state: .paused, dirty: dirty,
                                          measuredBandwidth: 10, bandwidthError: nil, capMiB: nil).result == .skip)
        let failed = CheckEvaluation.dirtyRate(vm: "w1", source: "s", destination: "d", mode: .live, state: .running,
                                               dirty: .failure(AgentCallFailure(host: "s", verb: "DIRTY-RATE", error: AgentError(.unsupported, "no calc"))),
                                               measuredBandwidth: 10, bandwidthError: nil, capMiB: nil)
        #expect(failed.result == .fail && failed.code == .unsupported && failed.sentence.contains("no calc"))
    }

    @Test("name-uuid: running or conflicting domains fail, a stale definition warns without --persistent", arguments: [
        (nil as DomainRunState?, nil as String?, nil as DomainRunState?, "src-uuid", false, CheckOutcome.pass),
        (.running, "w1", .running, "src-uuid", true, .fail),
        (.paused, "w1", .paused, "src-uuid", true, .fail),
        (nil, "w9", .running, "src-uuid", true, .fail),
        (nil, "w9", .shutOff, "src-uuid", true, .fail),
        (.shutOff, nil, nil, "src-uuid", true, .fail),              // same name, another UUID
        (.shutOff, "w1", .shutOff, "src-uuid", false, .warn),
        (.shutOff, "w1", .shutOff, "src-uuid", true, .pass),
        (nil, nil, nil, "dst-uuid", true, .fail),                   // same host UUID
    ])
    func nameUUID(sameName: DomainRunState?, sameUUIDName: String?, sameUUIDState: DomainRunState?, sourceHost: String, persistent: Bool,
                  expected: CheckOutcome) {
        let r = CheckEvaluation.nameUUID(vm: "w1", uuid: "vm-uuid", source: "src", destination: "dst", sourceHostUUID: sourceHost,
                                         persistent: persistent,
                                         target: Self.target(sameName: sameName, sameUUIDName: sameUUIDName, sameUUIDState: sameUUIDState))
        #expect(r.result == expected, "\(r.sentence)")
    }

    @Test("destination-pool: absent or inactive fails, not autostarted warns", arguments: [
        ([TargetPool(name: "shared-images", exists: true, active: true, autostart: true)], CheckOutcome.pass),
        ([TargetPool(name: "shared-images", exists: true, active: true, autostart: false)], .warn),
        ([TargetPool(name: "shared-images", exists: true, active: false, autostart: true)], .fail),
        ([TargetPool(name: "shared-images", exists: false, active: false, autostart: false)], .fail),
        ([], .fail),
    ])
    func pools(_ pools: [TargetPool], expected: CheckOutcome) {
        let r = CheckEvaluation.destinationPool(vm: "w1", destination: "dst", needed: ["shared-images"], target: Self.target(pools: pools))
        #expect(r.result == expected)
        #expect(CheckEvaluation.destinationPool(vm: "w1", destination: "dst", needed: [], target: Self.failedTarget).result == .pass)
    }

    @Test("cpu: incompatible fails, unknown warns, offline skips")
    func cpu() {
        #expect(CheckEvaluation.cpu(destination: "dst", mode: .live, target: Self.target(cpu: .compatible)).result == .pass)
        #expect(CheckEvaluation.cpu(destination: "dst", mode: .live, target: Self.target(cpu: .incompatible)).result == .fail)
        #expect(CheckEvaluation.cpu(destination: "dst", mode: .live, target: Self.target(cpu: .unknown)).result == .warn)
        #expect(CheckEvaluation.cpu(destination: "dst", mode: .offline, target: Self.target(cpu: .incompatible)).result == .skip)
        let failed = CheckEvaluation.cpu(destination: "dst", mode: .live, target: Self.failedTarget)
        #expect(failed.result == .fail && failed.sentence.contains("MIGRATION-TARGET on dst failed: libvirt: cannot read capabilities"))
    }

    @Test("gate-armed: installed and loaded, or fail with how to arm it")
    func gate() {
        #expect(CheckEvaluation.gateArmed(destination: "dst", target: Self.target()).result == .pass)
        let notLoaded = CheckEvaluation.gateArmed(destination: "dst", target: Self.target(loaded: false))
        #expect(notLoaded.result == .fail && notLoaded.remedy.contains("systemctl reload libvirtd"))
        #expect(CheckEvaluation.gateArmed(destination: "dst", target: Self.target(installed: false, loaded: false)).result == .fail)
    }

    @Test("libvirt-reachable: the remedy follows the URI's transport; another host's UUID fails")
    func reach() {
        let tcp = MigrationURI("qemu+tcp://dst/system")!
        let no = CheckEvaluation.libvirtReachable(uri: tcp, source: "src", destination: "dst",
                                                  reach: .success(.init(uri: tcp.text, reachable: false, error: "Connection refused", milliseconds: 1)),
                                                  destinationHostUUID: nil)
        #expect(no.result == .fail && no.remedy.contains("16509") && no.sentence.contains("Connection refused"))
        let wrong = CheckEvaluation.libvirtReachable(uri: tcp, source: "src", destination: "dst",
                                                     reach: .success(.init(uri: tcp.text, reachable: true, hostname: "elsewhere", hostUUID: "x", milliseconds: 1)),
                                                     destinationHostUUID: "y")
        #expect(wrong.result == .fail && wrong.remedy.contains("migration-uri"))
        let ok = CheckEvaluation.libvirtReachable(uri: tcp, source: "src", destination: "dst",
                                                  reach: .success(.init(uri: tcp.text, reachable: true, hostUUID: "Y", milliseconds: 1)),
                                                  destinationHostUUID: "y")
        #expect(ok.result == .pass)
    }

    @Test("migration-ports: a closed data or libvirt port fails naming the port to open")
    func ports() {
        let uri = MigrationURI("qemu+tls://dst/system")!
        func run(closed: Set<Int>, listen: Bool = true) -> CheckResult {
            let ports = (listen ? [49152] : []) + [16514]
            return CheckEvaluation.migrationPorts(source: "src", destination: "dst", uri: uri, range: 49152...49215,
                                                  listen: listen ? .success(.init(port: 49152, seconds: 5)) : nil,
                                                  probe: .success(.init(ports: ports.map { PortReach(port: $0, reachable: !closed.contains($0), milliseconds: 1) })))
        }
        #expect(run(closed: []).result == .pass)
        #expect(run(closed: [49152]).result == .fail && run(closed: [49152]).remedy.contains("49152-49215"))
        #expect(run(closed: [16514]).result == .fail && run(closed: [16514]).remedy.contains("TCP 16514"))
        #expect(run(closed: [], listen: false).result == .pass)
    }

    @Test("storage-ready: a local disk fails with share's command; a failed VERIFY carries its remedy")
    func storageReady() {
        let shared = DiskRecord(target: "vda", type: "file", source: Self.root + "/w1/a.qcow2")
        let local = DiskRecord(target: "vdb", type: "file", source: "/var/lib/libvirt/images/b.qcow2")
        let l = CheckEvaluation.storageReady(vm: "w1", source: "src", destination: "dst", disks: [shared, local], exportRoot: Self.root, verify: .success(1))
        #expect(l.result == .fail && l.remedy == "put them there: storagectl share w1 --to dst")
        let failure = ShareFailure(step: .verify, host: "dst", error: AgentError(.notFound, "no nonce"), remedy: "check both pools")
        let v = CheckEvaluation.storageReady(vm: "w1", source: "src", destination: "dst", disks: [shared], exportRoot: Self.root, verify: .failure(failure))
        #expect(v.result == .fail && v.code == .notFound && v.remedy == "check both pools")
        #expect(CheckEvaluation.storageReady(vm: "w1", source: "src", destination: "dst", disks: [shared], exportRoot: Self.root, verify: .success(3)).result == .pass)
    }

    @Test("exit status: 0 without a fail, 65 for a failed check, the transport's status for an unreachable agent")
    func exitStatus() {
        func report(_ checks: [CheckResult]) -> CheckReport {
            CheckReport(vm: "w1", source: "src", destination: "dst", uri: "u", mode: "live", state: "running", checks: checks, milliseconds: 1)
        }
        #expect(report([CheckResult(.cpu, .warn, [], "w", remedy: "r"), CheckResult(.memory, .skip, [], "s")]).exitStatus == 0)
        #expect(report([CheckResult(.cpu, .fail, [], "f", remedy: "r", code: .internal)]).exitStatus == 65)
        #expect(report([CheckResult(.cpu, .fail, [], "f"), CheckResult(.memory, .fail, [], "f", code: .unavailable)]).exitStatus == 69)
        #expect(report([CheckResult(.cpu, .fail, [], "f", code: .timeout)]).exitStatus == 75)
    }

    @Test("a check line: result, name, measured values, sentence, and the remedy for a warn or a fail")
    func line() {
        let l = CheckFormatting.line(CheckResult(.memory, .warn, [Measured("vm", "1.0 GiB"), Measured("free", "1.1 GiB")], "tight", remedy: "free memory"))
        #expect(l == "warn memory            vm=1.0 GiB free=1.1 GiB  tight -> free memory")
        #expect(!CheckFormatting.line(CheckResult(.memory, .pass, [], "ok", remedy: "x")).contains("->"))
    }

    @Test("the inventory's migration-uri and migration-ports: defaults, validation, the libvirt port of each scheme")
    func uris() {
        #expect(MigrationURI("qemu+tcp://dest-example/system")?.libvirtPort == 16509)
        #expect(MigrationURI("qemu+tls://dest-example/system")?.libvirtPort == 16514)
        #expect(MigrationURI("qemu://dest-example/system")?.libvirtPort == 16514)
        #expect(MigrationURI("qemu+ssh://root@dest-example/system")?.libvirtPort == 22)
        #expect(MigrationURI("qemu+tcp://198.18.0.3:16600/system")?.libvirtPort == 16600)
        #expect(MigrationURI("qemu+tcp://[fd00::3]/system")?.host == "fd00::3")
        for bad in ["qemu+tcp://dest/session", "xen://dest/system", "qemu+tcp:///system", "qemu+tcp://de st/system", "qemu+tcp://-x/system",
                    "qemu+tcp://dest:99999/system", "qemu+ext://dest/system", "qemu+tcp://dest/system?command=/bin/sh"] {
            #expect(MigrationURI(bad) == nil, "\(bad)")
        }
        #expect(MigrationURI.ports("49152-49215") == 49152...49215)
        #expect(MigrationURI.ports("80-90") == nil && MigrationURI.ports("5000-4000") == nil && MigrationURI.ports("5000") == nil)
    }
}
