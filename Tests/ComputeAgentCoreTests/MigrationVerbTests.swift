import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import Libvirt
import Testing
@testable import ComputeAgentCore

/// A migration that runs until it is aborted or `finishAt` passes, reporting a new
/// iteration every `iterationEvery`.
final class FakeMigration: MigrationControl, @unchecked Sendable {
    private let lock = NSLock()
    private var aborted = false
    private(set) var abortCalls = 0
    private(set) var postcopyCalls = 0
    private(set) var postcopyAtIteration: UInt64?
    /// When ``migrate()`` began (a busy executor may start it late).
    private var began = ContinuousClock.now
    var start: ContinuousClock.Instant { lock.withLock { began } }
    let finishAt: Duration?
    let iterationEvery: Duration

    init(finishAt: Duration? = nil, iterationEvery: Duration = .milliseconds(150)) {
        self.finishAt = finishAt
        self.iterationEvery = iterationEvery
    }

    var abortCount: Int { lock.withLock { abortCalls } }
    var postcopyCount: Int { lock.withLock { postcopyCalls } }

    func migrate() throws {
        lock.withLock { began = .now }
        while true {
            if lock.withLock({ aborted }) {
                throw LibvirtError(code: .operationAborted, domain: .none, message: "operation aborted: job 'migration out' canceled by client")
            }
            if let finishAt, ContinuousClock.now - start >= finishAt { return }
            usleep(10_000)
        }
    }

    func stats() throws -> DomainJobStats {
        var s = DomainJobStats(type: lock.withLock { aborted } ? .none : .unbounded)
        let elapsed = ContinuousClock.now - start
        s.elapsedMilliseconds = UInt64(elapsed / .milliseconds(1))
        s.memoryIteration = UInt64(elapsed / iterationEvery) + 1
        s.dataTotal = 1000
        s.dataProcessed = min(1000, s.elapsedMilliseconds!)
        s.memoryDirtyRatePages = 10
        s.memoryPageSize = 4096
        return s
    }

    func completedStats() -> DomainJobStats? {
        var s = DomainJobStats(type: .completed)
        s.downtimeMilliseconds = 42
        s.elapsedMilliseconds = 500
        s.dataProcessed = 1000
        s.memoryIteration = 3
        return s
    }

    func abort() throws {
        lock.withLock { aborted = true; abortCalls += 1 }
    }

    func startPostCopy() throws {
        let iteration = try stats().memoryIteration
        lock.withLock { postcopyCalls += 1; postcopyAtIteration = iteration }
    }

    var switchedAt: UInt64? { lock.withLock { postcopyAtIteration } }
}

/// A reply stream that fails every write after the first `accept`.
final class ClosingReply: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    let accept: Int
    init(accept: Int) { self.accept = accept }
    var stream: ReplyStream {
        ReplyStream { _ in
            let n = self.lock.withLock { self.count += 1; return self.count }
            if n > self.accept { throw AgentError(.unavailable, "connection closed") }
        }
    }
}

@Suite("MIGRATE's watcher: progress, post-copy, abort (fake libvirt job)")
struct MigrationRunnerTests {
    func runner(_ control: FakeMigration, postcopy: Bool = false, timeout: Duration? = nil,
                abort: @escaping @Sendable () async -> Bool = { false }) -> MigrationRunner {
        MigrationRunner(control: control, interval: .milliseconds(40), postcopy: postcopy, timeout: timeout, abortRequested: abort)
    }

    @Test("a completed migration streams PROGRESS and answers from the completed job's statistics")
    func completes() async throws {
        let fake = FakeMigration(finishAt: .milliseconds(1200))
        let collected = Collected()
        let outcome = await runner(fake).run(reply: collected.stream)
        guard case .completed(_, let completed, let postcopy, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(completed?.downtimeMilliseconds == 42)
        #expect(!postcopy)
        #expect(fake.abortCount == 0)
        let progress = collected.lines.compactMap(MigrationProgress.from)
        #expect(progress.count >= 2, "at least twice a second: \(progress.count)")
        #expect(progress.allSatisfy { $0.total == 1000 && $0.phase == "precopy" && $0.dirtyRate == 40960 })
    }

    @Test("postcopy=yes switches once, after the first iteration has completed")
    func postcopy() async throws {
        let fake = FakeMigration(finishAt: .milliseconds(600))
        let collected = Collected()
        let outcome = await runner(fake, postcopy: true).run(reply: collected.stream)
        guard case .completed(_, _, let postcopy, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(postcopy)
        #expect(fake.postcopyCount == 1)
        #expect((fake.switchedAt ?? 0) >= 2)
        #expect(collected.lines.compactMap(MigrationProgress.from).last?.phase == "postcopy")
    }

    @Test("timeout= aborts the libvirt job")
    func timeout() async throws {
        let fake = FakeMigration()
        let outcome = await runner(fake, timeout: .milliseconds(200)).run(reply: Collected().stream)
        guard case .aborted(let reason, let error) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason == .timeout)
        #expect(error.code == .conflict)
        #expect(fake.abortCount == 1)
    }

    @Test("a client whose connection closed (PROGRESS cannot be written) gets its migration aborted")
    func clientGone() async throws {
        let fake = FakeMigration()
        let outcome = await runner(fake).run(reply: ClosingReply(accept: 2).stream)
        guard case .aborted(let reason, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason == .clientGone)
        #expect(fake.abortCount == 1)
    }

    @Test("cancelling the request's task aborts the libvirt job")
    func cancelled() async throws {
        let fake = FakeMigration()
        let r = runner(fake)
        let task = Task { await r.run(reply: Collected().stream) }
        try await Task.sleep(for: .milliseconds(150))
        task.cancel()
        let outcome = await task.value
        guard case .aborted(let reason, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason == .clientGone)
        #expect(fake.abortCount == 1)
    }

    @Test("MIGRATE-ABORT (the registry's flag) aborts it")
    func requested() async throws {
        let fake = FakeMigration()
        let start = ContinuousClock.now
        let outcome = await runner(fake, abort: { ContinuousClock.now - start > .milliseconds(150) }).run(reply: Collected().stream)
        guard case .aborted(let reason, _) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason == .requested)
    }
}

@Suite("migration verbs (libvirt test driver)")
struct MigrationVerbTests {
    static let targetLine = "MIGRATION-TARGET name=wanderer1 uuid=6695eb01-f6a4-8304-79aa-97f2502e193f memory=134217728 "
        + "arch=x86_64 machine=pc virt-type=kvm emulator=/usr/bin/qemu-system-x86_64 cpu-mode=custom cpu-model=qemu64"

    @Test("MIGRATION-FACTS: disks with fs= for file disks, identity, state, memory, CPU definition")
    func facts() async throws {
        let host = try await SimHost()
        let c = try LibvirtConnection(uri: host.uri)
        let answer = try ComputeAgentHandler.migrationFacts(try c.lookupDomain(name: "wanderer1"), hostUUID: "5c1ab000-0000-4000-8000-000000000002")
        #expect(answer.uuid == "6695eb01-f6a4-8304-79aa-97f2502e193f")
        #expect(answer.state.rawValue == "shut-off")
        #expect(answer.persistent)
        #expect(answer.memoryBytes == 128 << 20)
        #expect(answer.cpu.arch == "x86_64" && answer.cpu.virtType == "test" && answer.cpu.mode == nil)
        let vda = try #require(answer.disks.first { $0.target == "vda" })
        #expect(vda.fileSystem == MountTable.current().fileSystem(of: host.images + "/wanderer1.qcow2"))
        #expect(vda.fileSystem != nil)
        #expect(answer.disks.first { $0.target == "vdb" }?.fileSystem == nil, "a network disk has no local file system")
        // encoded like DOMAIN's rows plus fs=
        let (data, ok) = MigrationFactsQuery.encodeAnswer(answer)
        #expect(data.first?["fs"] == vda.fileSystem)
        #expect(try MigrationFactsQuery.decodeAnswer(data: data, ok: ok) == answer)
    }

    @Test("MIGRATION-FACTS on a daemon without a host UUID (the test driver) says so; hostile names are refused")
    func factsErrors() async throws {
        let host = try await SimHost()
        let e = await host.ask("MIGRATION-FACTS name=wanderer1").result.error
        #expect(e?.code == .unavailable && e?.message.contains("host UUID") == true, "\(String(describing: e))")
        #expect(await host.ask("MIGRATION-FACTS name=a%2Fb").result.error?.code == .invalidArgument)
        #expect(await host.ask("MIGRATION-FACTS name=x extra=1").result.error?.code == .invalidArgument)
    }

    @Test("MIGRATION-TARGET: free memory, same name and UUID, pools, CPU verdict")
    func target() async throws {
        // test:///default (read only here): its NUMA cells give a free memory figure, which
        // a node file without cells does not (libvirt then fails the call).
        let c = try LibvirtConnection(uri: "test:///default")
        let cpu = CPUDefinition(arch: "x86_64", machine: "pc", virtType: "kvm", emulator: "/usr/bin/qemu-system-x86_64",
                                mode: "custom", model: "qemu64")
        let a = try ComputeAgentHandler.migrationTarget(on: c, hostUUID: "u", name: "test", uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f",
                                                        pools: ["default-pool", "absent"], cpu: cpu)
        #expect(a.freeMemoryBytes > 0)
        #expect(a.sameNameState?.rawValue == "running")
        #expect(a.sameUUIDName == "test" && a.sameUUIDState?.rawValue == "running")
        #expect(a.pools == [TargetPool(name: "default-pool", exists: true, active: true, autostart: false, target: "/default-pool"),
                            TargetPool(name: "absent", exists: false, active: false, autostart: false)])
        // the test driver cannot compare CPUs: unknown, with libvirt's reason
        #expect(a.cpu == .unknown && a.cpuDetail.contains("could not compare"), "\(a.cpuDetail)")
        let none = try ComputeAgentHandler.migrationTarget(on: c, hostUUID: "u", name: "newvm", uuid: "00000000-0000-4000-8000-000000000000",
                                                           pools: [], cpu: CPUDefinition(arch: "x86_64", machine: "pc", virtType: "kvm",
                                                                                         emulator: "/usr/bin/qemu", mode: "host-passthrough"))
        #expect(none.sameNameState == nil && none.sameUUIDName == nil)
        #expect(none.cpu == .unknown && none.cpuDetail.contains("host-passthrough"))
        let bare = CPUDefinition(arch: "x86_64", machine: "pc", virtType: "kvm", emulator: "/usr/bin/qemu")
        #expect(ComputeAgentHandler.compareCPU(bare, on: c).0 == .unknown)
    }

    @Test("MIGRATION-TARGET refuses hostile values before libvirt sees them", arguments: [
        targetLine + " cpu-model=a%3Cb", targetLine.replacingOccurrences(of: "uuid=6695eb01", with: "uuid=zz95eb01"),
        targetLine + " pool=a%2Fb", targetLine + " cpu-feature=want:vmx", targetLine + " cpu-feature=require:vm%27x",
        targetLine.replacingOccurrences(of: "emulator=/usr/bin/qemu-system-x86_64", with: "emulator=qemu"),
        targetLine.replacingOccurrences(of: "machine=pc", with: "machine=pc%20x"),
    ])
    func targetHostile(_ line: String) async throws {
        let host = try await SimHost()
        #expect(await host.ask(line).result.error?.code == .invalidArgument)
    }

    @Test("LIBVIRT-REACH: the test driver answers; a refused URI never reaches libvirt; a hanging open times out")
    func reach() async throws {
        let host = try await SimHost()
        let ok = await host.ask("LIBVIRT-REACH uri=test:///default")
        let fields = try #require(ok.result.ok, "\(String(describing: ok.result.error))")
        #expect(fields["reachable"] == "yes" && fields["hostname"] != nil)
        #expect(await host.ask("LIBVIRT-REACH uri=qemu%2Bext://x/system").result.error?.code == .invalidArgument)
        #expect(await host.ask("LIBVIRT-REACH uri=qemu%2Btcp://x/system%3Fcommand=sh").result.error?.code == .invalidArgument)
        // the bound: a call that does not return in time is answered reachable=no error=timeout
        let start = ContinuousClock.now
        let slow = await MigrationWork.bounded(MigrationWork.reach, timeout: .milliseconds(100)) { () -> Int in usleep(3_000_000); return 1 }
        #expect(slow == nil)
        #expect(ContinuousClock.now - start < .seconds(2))
    }

    @Test("DIRTY-RATE needs a running domain; MIGRATE checks state; MIGRATE-ABORT and MIGRATE need admin")
    func states() async throws {
        let host = try await SimHost()
        let e = await host.ask("DIRTY-RATE name=wanderer1 seconds=1").result.error
        #expect(e?.code == .invalidState && e?.message.contains("running domain only") == true, "\(String(describing: e))")
        #expect(await host.ask("DIRTY-RATE name=wanderer1 seconds=61").result.error?.code == .invalidArgument)
        let m = await host.ask("MIGRATE name=wanderer1 uri=test:///default mode=live").result.error
        #expect(m?.code == .invalidState, "\(String(describing: m))")
        #expect(await host.ask("MIGRATE name=runner uri=qemu%2Bssh://root@d/system mode=live").result.error?.code == .invalidArgument)
        #expect(await host.ask("MIGRATE name=runner uri=qemu%2Btcp://d/system mode=live", transport: .tcp).result.error?.code == .permissionDenied)
        #expect(await host.ask("MIGRATE-ABORT name=runner", transport: .tcp).result.error?.code == .permissionDenied)
        #expect(await host.ask("MIGRATION-FACTS name=runner", transport: .tcp).result.error?.code == .permissionDenied)
    }

    @Test("MIGRATE holds the domain for the whole migration; MIGRATE-ABORT does not need it")
    func lockNotTakenByAbort() async throws {
        let host = try await SimHost()
        // a migration attempt on the test driver fails (no support) and releases the domain
        let m = await host.ask("MIGRATE name=runner uri=test:///default mode=live").result.error
        #expect(m != nil)
        #expect(await host.handler.locks.isHeld("runner") == false)
        // MIGRATE-ABORT while another request holds the domain still answers at once
        let held = Task { try await host.handler.exclusive("runner") { try await Task.sleep(for: .seconds(2)) } }
        try await Task.sleep(for: .milliseconds(100))
        let start = ContinuousClock.now
        _ = await host.ask("MIGRATE-ABORT name=runner")
        #expect(ContinuousClock.now - start < .seconds(1))
        held.cancel()
    }
}
