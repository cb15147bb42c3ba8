import AgentAPI
import AgentProtocol
import Foundation
import Libvirt
import Testing
@testable import ComputeAgentCore

/// LIVE-COPY / LIVE-LOCALIZE planning, XML, the record and the job's logic (with a fake
/// libvirt), without a hypervisor.
@Suite("live copy: planning and job")
struct LiveCopyTests {
    static let mount = Share(pool: "shared-images", server: "198.18.0.1", export: "/var/lib/libvirt/shared-images", attach: .mount,
                             target: "/var/lib/libvirt/shared-images")
    static let libnfs = Share(pool: nil, server: "198.18.0.1", export: "/var/lib/libvirt/shared-images", attach: .libnfs, target: nil)
    static let uuid = "a0c51adf-decd-4b94-9fd7-e3deffae895c"

    static func domain(_ disks: String) -> String {
        "<domain type='kvm'><name>bc1</name><uuid>\(uuid)</uuid><devices>\(disks)</devices></domain>"
    }

    static let local = """
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
          <source file='/var/lib/libvirt/images/bc1.qcow2'/><backingStore/><target dev='vda' bus='virtio'/></disk>
        """
    static let cdrom = """
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
          <source file='/iso/x.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
        """
    static let shared = """
        <disk type='file' device='disk'><driver name='qemu' type='raw'/>
          <source file='/var/lib/libvirt/shared-images/bc1/data.raw'/><target dev='vdb' bus='virtio'/></disk>
        """
    static let otherNFS = """
        <disk type='network' device='disk'><driver name='qemu' type='raw'/>
          <source protocol='nfs' name='/srv/data.img'><host name='198.18.0.9'/></source><target dev='vdc' bus='virtio'/></disk>
        """

    static func copyPlan(_ disks: String, share: Share = mount, running: Bool = true, persistent: Bool = true) throws(AgentError) -> LivePlan {
        try LiveCopyPlanning.copy(domain(disks), domain: "bc1", uuid: uuid, running: running, persistent: persistent, share: share)
    }

    @Test("LIVE-COPY moves local file disks to DIR/FILE on the share; disks on the share are already there; cdroms and other network disks stay")
    func copyPlanMount() throws {
        let plan = try Self.copyPlan(Self.local + Self.cdrom + Self.shared + Self.otherNFS)
        #expect(plan.disks.map(\.target) == ["vda", "vdb"])
        let vda = plan.disks[0]
        #expect(vda.to == .file(path: "/var/lib/libvirt/shared-images/bc1/bc1.qcow2") && vda.path == "bc1/bc1.qcow2")
        #expect(vda.format == "qcow2" && !vda.already && !vda.join && vda.from == "/var/lib/libvirt/images/bc1.qcow2")
        #expect(plan.disks[1].already && plan.disks[1].path == "bc1/data.raw" && plan.disks[1].format == "raw")
        #expect(plan.moving.map(\.target) == ["vda"])
        #expect(plan.skipped.map(\.target) == ["hdc", "vdc"] && plan.skipped.map(\.reason) == ["cdrom", "network"])
    }

    @Test("in libnfs mode the destination is an NFS network disk EXPORT/REL of the server")
    func copyPlanLibNFS() throws {
        let plan = try Self.copyPlan(Self.local, share: Self.libnfs)
        #expect(plan.disks[0].to == .nfs(server: "198.18.0.1", name: "/var/lib/libvirt/shared-images/bc1/bc1.qcow2"))
        #expect(plan.disks[0].to.spelled == "nfs://198.18.0.1/var/lib/libvirt/shared-images/bc1/bc1.qcow2")
        // once pivoted, the network disk is on the share
        let after = try Self.copyPlan("""
            <disk type='network' device='disk'><driver name='qemu' type='qcow2'/>
              <source protocol='nfs' name='/var/lib/libvirt/shared-images/bc1/bc1.qcow2'><host name='198.18.0.1'/></source>
              <target dev='vda' bus='virtio'/></disk>
            """, share: Self.libnfs)
        #expect(after.disks.count == 1 && after.disks[0].already && after.moving.isEmpty)
    }

    @Test("LIVE-COPY refuses: not running (COPY/ADOPT named), transient, block device, backing chain, another format, two images of one name")
    func copyRefusals() throws {
        func refusal(_ body: () throws(AgentError) -> LivePlan) -> AgentError? {
            do { _ = try body(); return nil } catch { return error }
        }
        let off = refusal { () throws(AgentError) in try Self.copyPlan(Self.local, running: false) }
        #expect(off?.code == .invalidState && off?.message.contains("COPY and ADOPT") == true)
        #expect(refusal { () throws(AgentError) in try Self.copyPlan(Self.local, persistent: false) }?.message.contains("transient") == true)
        let block = refusal { () throws(AgentError) in try Self.copyPlan("""
            <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/sdb'/><target dev='vda'/></disk>
            """) }
        #expect(block?.code == .invalidState && block?.message.contains("block device") == true)
        let chain = refusal { () throws(AgentError) in try Self.copyPlan("""
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i/top.qcow2'/>
              <backingStore type='file'><format type='qcow2'/><source file='/i/base.qcow2'/><backingStore/></backingStore>
              <target dev='vda'/></disk>
            """) }
        #expect(chain?.code == .invalidState && chain?.message.contains("/i/base.qcow2") == true)
        let vmdk = refusal { () throws(AgentError) in try Self.copyPlan("""
            <disk type='file' device='disk'><driver name='qemu' type='vmdk'/><source file='/i/a.vmdk'/><target dev='vda'/></disk>
            """) }
        #expect(vmdk?.code == .invalidState && vmdk?.message.contains("vmdk") == true)
        let twice = refusal { () throws(AgentError) in try Self.copyPlan("""
            <disk type='file' device='disk'><driver type='raw'/><source file='/a/d.img'/><target dev='vda'/></disk>
            <disk type='file' device='disk'><driver type='raw'/><source file='/b/d.img'/><target dev='vdb'/></disk>
            """) }
        #expect(twice?.code == .invalidState && twice?.message.contains("d.img") == true)
    }

    static let mirroring = """
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
          <source file='/var/lib/libvirt/images/bc1.qcow2' index='1'/><backingStore/>
          <mirror type='file' file='%@' format='qcow2' job='copy' ready='yes'>
            <format type='qcow2'/><source file='%@' index='3'/><backingStore/></mirror>
          <target dev='vda' bus='virtio'/></disk>
        """

    @Test("a running block copy to the planned destination is joined; to anywhere else it is a conflict")
    func mirrorJoin() throws {
        let ours = "/var/lib/libvirt/shared-images/bc1/bc1.qcow2"
        let plan = try Self.copyPlan(Self.mirroring.replacingOccurrences(of: "%@", with: ours))
        #expect(plan.disks[0].join)
        #expect(throws: AgentError.self) { try Self.copyPlan(Self.mirroring.replacingOccurrences(of: "%@", with: "/elsewhere.qcow2")) }
        do { _ = try Self.copyPlan(Self.mirroring.replacingOccurrences(of: "%@", with: "/elsewhere.qcow2")) } catch {
            #expect(error.code == .conflict && error.message.contains("/elsewhere.qcow2") && error.details["disk"] == "vda")
        }
    }

    @Test("mirrors are read in their file and network forms, with ready=")
    func mirrors() throws {
        let xml = Self.domain(Self.mirroring.replacingOccurrences(of: "%@", with: "/s/bc1/bc1.qcow2") + """
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i/b.qcow2'/>
              <mirror type='network' job='copy'><format type='qcow2'/>
                <source protocol='nfs' name='/e/bc1/b.qcow2'><host name='198.18.0.1'/></source></mirror>
              <target dev='vdb' bus='virtio'/></disk>
            """)
        let m = try LiveCopyPlanning.mirrors(xml)
        #expect(m["vda"] == LiveMirror(job: "copy", ready: true, destination: .file(path: "/s/bc1/bc1.qcow2")))
        #expect(m["vdb"] == LiveMirror(job: "copy", ready: false, destination: .nfs(server: "198.18.0.1", name: "/e/bc1/b.qcow2")))
    }

    @Test("LIVE-LOCALIZE sends shared disks to DIR/<domain dir>/FILE and refuses a domain that is not running")
    func localizePlan() throws {
        let xml = Self.domain(Self.local + Self.shared)
        let plan = try LiveCopyPlanning.localize(xml, domain: "bc1", uuid: Self.uuid, running: true, persistent: true,
                                                 share: Self.mount, dir: "/var/lib/libvirt/images")
        #expect(plan.disks.map(\.target) == ["vdb"])
        #expect(plan.disks[0].to == .file(path: "/var/lib/libvirt/images/bc1/data.raw") && plan.disks[0].path == "bc1/data.raw")
        #expect(plan.disks[0].from == "/var/lib/libvirt/shared-images/bc1/data.raw" && plan.disks[0].format == "raw")
        #expect(throws: AgentError.self) {
            try LiveCopyPlanning.localize(xml, domain: "bc1", uuid: Self.uuid, running: false, persistent: true, share: Self.mount, dir: "/d")
        }
        // nothing on the share: nothing to do, whatever the state
        let none = try LiveCopyPlanning.localize(Self.domain(Self.local), domain: "bc1", uuid: Self.uuid, running: false,
                                                 persistent: true, share: Self.mount, dir: "/d")
        #expect(none.disks.isEmpty)
    }

    @Test("the destination XML is built with the XML library and reads back as the planned disk")
    func destinationXML() throws {
        let file = LiveCopyPlanning.destinationXML(.file(path: "/s/bc1/it's&.qcow2"), format: "qcow2")
        let f = try DomainDefinition.disks("<domain><devices>\(file)</devices></domain>")
        #expect(f.count == 1 && f[0].type == "file" && f[0].source == "/s/bc1/it's&.qcow2" && f[0].format == "qcow2")
        let nfs = LiveCopyPlanning.destinationXML(.nfs(server: "198.18.0.1", name: "/e/bc1/bc1.qcow2"), format: "raw")
        #expect(nfs.contains("<identity user=\"root\" group=\"root\""))
        let n = try DomainDefinition.disks("<domain><devices>\(nfs)</devices></domain>")
        #expect(n[0].type == "network" && n[0].networkProtocol == "nfs" && n[0].networkName == "/e/bc1/bc1.qcow2"
                && n[0].networkHosts == ["198.18.0.1"] && n[0].format == "raw")
    }

    @Test("the persistent definition is checked per disk; users of a destination are every definition naming it")
    func persistentAndUsers() throws {
        let xml = Self.domain(Self.local)
        #expect(try LiveCopyPlanning.definitionNames(xml, disk: "vda", .file(path: "/var/lib/libvirt/images/bc1.qcow2")) == true)
        #expect(try LiveCopyPlanning.definitionNames(xml, disk: "vda", .file(path: "/s/bc1/bc1.qcow2")) == false)
        #expect(try LiveCopyPlanning.definitionNames(xml, disk: "vdz", .file(path: "/x")) == nil)
        let disks = try DomainDefinition.disks(Self.domain(Self.local + Self.otherNFS))
        #expect(LiveCopyPlanning.users(of: .file(path: "/var/lib/libvirt/images/bc1.qcow2"), among: [("w", disks), ("v", [])]) == ["w"])
        #expect(LiveCopyPlanning.users(of: .nfs(server: "198.18.0.9", name: "/srv/data.img"), among: [("w", disks)]) == ["w"])
        #expect(LiveCopyPlanning.users(of: .nfs(server: "198.18.0.1", name: "/srv/data.img"), among: [("w", disks)]).isEmpty)
        #expect(LiveCopyPlanning.users(of: .file(path: "/nowhere"), among: [("w", disks)]).isEmpty)
    }

    static func record(_ disks: [LiveDisk], kind: LiveJobRecord.Kind = .copy) -> LiveJobRecord {
        LiveJobRecord(kind: kind, domain: "bc1", uuid: uuid, share: mount, dir: nil, disks: disks, phase: .mirroring, pivoted: [],
                      copied: [:], virtualSizes: [:], saved: "/state/domains/u.previous.xml", errorCode: nil, errorMessage: nil,
                      started: Date(timeIntervalSince1970: 1_000_000), finished: nil)
    }

    static func disk(_ target: String, already: Bool = false, join: Bool = false) -> LiveDisk {
        LiveDisk(target: target, from: "/i/\(target).qcow2", to: .file(path: "/s/bc1/\(target).qcow2"), path: "bc1/\(target).qcow2",
                 format: "qcow2", already: already, join: join)
    }

    @Test("the record survives JSON and answers: done with one row per disk, failed with the error and the pivoted disks")
    func recordCodec() throws {
        var r = Self.record([Self.disk("vda"), Self.disk("vdb", already: true), LiveDisk(
            target: "vdc", from: "/i/c.raw", to: .nfs(server: "198.18.0.1", name: "/e/bc1/c.raw"), path: "bc1/c.raw", format: "raw",
            already: false, join: true)])
        r.phase = .done
        r.pivoted = ["vda", "vdc"]
        r.copied = ["vda": 100, "vdc": 5]
        r.virtualSizes = ["vda": 1 << 30, "vdb": 2, "vdc": 3]
        r.finished = Date(timeIntervalSince1970: 1_000_002.04)
        let decoded = try JSONDecoder().decode(LiveJobRecord.self, from: JSONEncoder().encode(r))
        #expect(decoded == r)
        let a = try r.answer(attached: true)
        #expect(a.moved.map(\.disk) == ["vda", "vdb", "vdc"] && a.bytes == 105 && a.changed && a.attached && a.seconds == 2)
        #expect(a.moved[1].already && a.moved[2].to == "nfs://198.18.0.1/e/bc1/c.raw" && a.saved == "/state/domains/u.previous.xml")
        r.phase = .failed
        r.errorCode = "invalid-state"
        r.errorMessage = "the pivot of disk vdc failed"
        r.pivoted = ["vda"]
        do { _ = try r.answer(attached: false); Issue.record("a failed job answered") } catch {
            #expect(error.code == .invalidState && error.details["pivoted"] == "vda" && error.details["domain"] == "bc1")
        }
    }

    @Test("LIVE-ABORT wins before the pivot phase and loses once it began")
    func abortSwitch() {
        let s = LiveSwitch()
        #expect(s.requestAbort() == .requested && s.isAbortRequested && !s.beginPivot())
        let t = LiveSwitch()
        #expect(t.beginPivot() && t.requestAbort() == .pivoting && !t.isAbortRequested)
    }

    @Test("MiB/s become bytes/s; an overflowing value is refused")
    func bandwidth() throws {
        #expect(try ComputeAgentHandler.bandwidthBytes(nil) == nil)
        #expect(try ComputeAgentHandler.bandwidthBytes(3) == 3 << 20)
        #expect(throws: AgentError.self) { try ComputeAgentHandler.bandwidthBytes(UInt64.max) }
    }
}

/// A libvirt stand-in: each disk's job reaches `end` after `polls` polls; pivots can fail.
final class FakeBlockControl: LiveBlockControl, @unchecked Sendable {
    private let lock = NSLock()
    var jobs: [String: (cur: UInt64, end: UInt64)] = [:]
    var polls: [String: Int] = [:]
    var events: [String] = []
    var failPivot: Set<String> = []
    /// Disks whose job disappears at the first poll (the mirror failed).
    var vanish: Set<String> = []
    let readyAfter: Int

    init(running: [String] = [], readyAfter: Int = 2) {
        self.readyAfter = readyAfter
        for t in running { jobs[t] = (0, 1000) }
    }

    func note(_ e: String) { lock.withLock { events.append(e) } }
    var log: [String] { lock.withLock { events } }

    func start(_ disk: LiveDisk, bandwidthBytes: UInt64?) throws {
        note("start \(disk.target) \(bandwidthBytes.map(String.init) ?? "-")")
        lock.withLock { jobs[disk.target] = (0, 1000) }
    }
    func info(_ target: String) throws -> BlockJobInfo? {
        lock.withLock {
            guard var j = jobs[target] else { return nil }
            if vanish.contains(target) { jobs[target] = nil; return nil }
            polls[target, default: 0] += 1
            if polls[target]! >= readyAfter { j.cur = j.end } else { j.cur = j.end / 2 }
            jobs[target] = j
            return BlockJobInfo(type: .copy, bandwidthBytes: 0, cur: j.cur, end: j.end)
        }
    }
    func readyTargets() throws -> Set<String> {
        lock.withLock { Set(jobs.filter { $0.value.cur == $0.value.end }.keys) }
    }
    /// Disks whose pivot is reported failed although the disk switched.
    var switchedAnyway: Set<String> = []
    var switched: Set<String> = []
    func pivot(_ target: String) throws {
        note("pivot \(target)")
        if switchedAnyway.contains(target) {
            lock.withLock { _ = jobs.removeValue(forKey: target); _ = switched.insert(target) }
            throw AgentError(.timeout, "libvirt timed out")
        }
        if failPivot.contains(target) { throw AgentError(.invalidState, "QEMU refused the pivot") }
        lock.withLock { _ = jobs.removeValue(forKey: target); _ = switched.insert(target) }
    }
    func uses(_ disk: LiveDisk) throws -> Bool { lock.withLock { switched.contains(disk.target) } }
    func cancel(_ target: String) throws {
        note("cancel \(target)")
        _ = lock.withLock { jobs.removeValue(forKey: target) }
    }
    func removeDestination(_ disk: LiveDisk) throws { note("remove \(disk.target)") }
    var failPersist: Set<String> = []
    func persist(_ disk: LiveDisk) throws {
        note("persist \(disk.target)")
        if failPersist.contains(disk.target) { throw AgentError(.internal, "defineXML failed") }
    }
    func virtualSize(_ target: String) throws -> UInt64 { 1 << 30 }
}

@Suite("live copy: the job with a fake libvirt")
struct LiveCopyRunnerTests {
    final class Saved: @unchecked Sendable {
        let lock = NSLock()
        var phases: [LiveJobRecord.Phase] = []
        func add(_ r: LiveJobRecord) { lock.withLock { phases.append(r.phase) } }
    }

    static func runner(_ control: FakeBlockControl, saved: Saved = Saved(), abort: LiveSwitch = LiveSwitch()) -> LiveCopyRunner {
        var r = LiveCopyRunner(control: control, progress: JobProgress(total: 0, disk: ""), abort: abort, save: { saved.add($0) })
        r.abandon = { _ in control.note("abandon") }
        r.interval = .milliseconds(5)
        r.bandwidthBytes = 1 << 20
        return r
    }

    @Test("every mirror is started (a running one joined), all are pivoted once ready, each pivot is persisted")
    func success() async throws {
        let control = FakeBlockControl(running: ["vdb"])
        let saved = Saved()
        let record = LiveCopyTests.record([LiveCopyTests.disk("vda"), LiveCopyTests.disk("vdb", join: true),
                                           LiveCopyTests.disk("vdc", already: true)])
        let done = await Self.runner(control, saved: saved).run(record)
        #expect(done.phase == .done, "\(done.errorMessage ?? "")")
        #expect(control.log == ["start vda 1048576", "pivot vda", "persist vda", "pivot vdb", "persist vdb"])
        #expect(done.pivoted == ["vda", "vdb"] && done.copied == ["vda": 1000, "vdb": 1000] && done.virtualSizes.count == 3)
        #expect(saved.phases.first == .mirroring && saved.phases.contains(.pivoting) && saved.phases.last == .done)
        let answer = try done.answer(attached: false)
        #expect(answer.bytes == 2000 && answer.changed && answer.moved.count == 3)
    }

    @Test("LIVE-ABORT before the pivot cancels every mirror, removes the copies and ends invalid-state")
    func aborted() async throws {
        let control = FakeBlockControl(readyAfter: 1_000_000)
        let abort = LiveSwitch()
        let runner = Self.runner(control, abort: abort)
        let task = Task { await runner.run(LiveCopyTests.record([LiveCopyTests.disk("vda"), LiveCopyTests.disk("vdb")])) }
        // once both mirrors run (an abort asked for earlier starts none)
        for _ in 0..<1000 where !control.log.contains("start vdb 1048576") { try await Task.sleep(for: .milliseconds(5)) }
        #expect(abort.requestAbort() == .requested)
        let done = await task.value
        #expect(done.phase == .aborted && done.errorCode == "invalid-state")
        #expect(done.errorMessage == "the LIVE-COPY of bc1 was stopped by LIVE-ABORT; bc1 runs on its original disks")
        #expect(control.log == ["start vda 1048576", "start vdb 1048576", "cancel vda", "remove vda", "cancel vdb", "remove vdb", "abandon"])
        #expect(done.pivoted.isEmpty)
    }

    @Test("a failed pivot leaves the pivoted disks, cancels the rest (the failed one too) and removes their copies")
    func pivotFails() async throws {
        let control = FakeBlockControl()
        control.failPivot = ["vdb"]
        let done = await Self.runner(control).run(LiveCopyTests.record([LiveCopyTests.disk("vda"), LiveCopyTests.disk("vdb"),
                                                                         LiveCopyTests.disk("vdc")]))
        #expect(done.phase == .failed && done.errorCode == "invalid-state" && done.pivoted == ["vda"])
        #expect(done.errorMessage?.contains("pivot of disk vdb") == true && done.errorMessage?.contains("runs on") == true)
        // vda was pivoted: the kept definition stays (it is the one before the first pivot)
        #expect(Array(control.log.suffix(5)) == ["pivot vdb", "cancel vdb", "remove vdb", "cancel vdc", "remove vdc"])
        #expect(!control.log.contains("pivot vdc"))
    }

    @Test("a pivot reported failed that switched the disk anyway counts as pivoted: its copy is never removed")
    func pivotSwitchedAnyway() async throws {
        let control = FakeBlockControl()
        control.switchedAnyway = ["vda"]
        let done = await Self.runner(control).run(LiveCopyTests.record([LiveCopyTests.disk("vda"), LiveCopyTests.disk("vdb")]))
        #expect(done.phase == .done && done.pivoted == ["vda", "vdb"])
        #expect(!control.log.contains("remove vda") && control.log.contains("persist vda"))
    }

    @Test("a definition that cannot be made to name a pivoted disk stops the job: the rest are cancelled, the error says what to fix")
    func persistFails() async throws {
        let control = FakeBlockControl()
        control.failPersist = ["vda"]
        let done = await Self.runner(control).run(LiveCopyTests.record([LiveCopyTests.disk("vda"), LiveCopyTests.disk("vdb")]))
        #expect(done.phase == .failed && done.pivoted == ["vda"] && done.errorMessage?.contains("virsh edit bc1") == true)
        #expect(Array(control.log.suffix(2)) == ["cancel vdb", "remove vdb"] && !control.log.contains("remove vda"))
    }

    @Test("a mirror that ends by itself fails the job; the other mirrors are cancelled and every copy removed")
    func mirrorVanishes() async throws {
        let control = FakeBlockControl()
        control.vanish = ["vdb"]
        let done = await Self.runner(control).run(LiveCopyTests.record([LiveCopyTests.disk("vda"), LiveCopyTests.disk("vdb")]))
        #expect(done.phase == .failed && done.errorMessage?.contains("disk vdb") == true)
        #expect(control.log.contains("cancel vda") && control.log.contains("remove vda") && control.log.contains("remove vdb"))
        #expect(!control.log.contains { $0.hasPrefix("pivot") } && control.log.last == "abandon")
    }

    @Test("LIVE-LOCALIZE's other names for a taken local file: STEM-N.EXT, recognised when a mirror goes there")
    func localNames() {
        #expect(LiveCopyPlanning.localName("/i/bc1/bc1.qcow2", 1) == "/i/bc1/bc1.qcow2")
        #expect(LiveCopyPlanning.localName("/i/bc1/bc1.qcow2", 2) == "/i/bc1/bc1-2.qcow2")
        #expect(LiveCopyPlanning.localName("/i/bc1/disk", 3) == "/i/bc1/disk-3")
        #expect(LiveCopyPlanning.isLocalName("/i/bc1/bc1-7.qcow2", of: "/i/bc1/bc1.qcow2"))
        #expect(!LiveCopyPlanning.isLocalName("/i/other/bc1-7.qcow2", of: "/i/bc1/bc1.qcow2"))
        #expect(!LiveCopyPlanning.isLocalName("/i/bc1/bc1-x.qcow2", of: "/i/bc1/bc1.qcow2"))
    }
}
