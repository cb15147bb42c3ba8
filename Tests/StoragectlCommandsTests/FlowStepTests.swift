import AgentAPI
import AgentProtocol
import AgentRuntime
import ConfigFile
import Foundation
import Testing
@testable import StoragectlCommands

/// Each step of share and unshare on its own, against the simulated site.
@Suite("flow steps")
struct FlowStepTests {
    func context(_ site: FakeSite, events: ShareFlowTests.EventLog = .init()) -> FlowContext {
        FlowContext(inventory: ShareFlowTests.inventory, caller: site.caller(), emit: { events.append($0) })
    }

    func started(_ site: FakeSite, _ options: ShareOptions = ShareOptions(vm: "w1", to: ["dst"])) async throws -> (FlowContext, ShareRun) {
        let ctx = context(site)
        return (ctx, try await ShareFlow.start(ctx, options))
    }

    @Test("locate finds the owner and its local disks; the destinations are the named ones")
    func locate() async throws {
        let (_, run) = try await started(FakeSite())
        #expect(run.source.name == "src" && run.destinations.map(\.name) == ["dst"])
        #expect(run.local.map(\.target) == ["vda"] && run.shared.isEmpty)
        #expect(run.location.state == .shutOff)
    }

    @Test("locate: defined on two hosts after a persistent migration, the host that runs it owns it; shut off on both is a conflict")
    func locateAfterPersistentMigration() async throws {
        let site = FakeSite()
        site.migration.lock.withLock { site.migration.migratedTo = "dst" }
        let location = try await context(site).locate("w1", from: nil)
        #expect(location.host.name == "dst" && location.state == .running)
        site.migration.lock.withLock { site.migration.offlineMoved = true }
        await #expect(throws: ShareFailure.self) { try await context(site).locate("w1", from: nil) }
        do {
            _ = try await context(site).locate("w1", from: nil)
        } catch {
            #expect(error.error.code == .conflict && error.remedy.contains("--from"))
        }
    }

    @Test("locate after a migration without --persistent: share's owner is the persistent definition, a migration starts where the VM runs")
    func locateAfterTransientMigration() async throws {
        let site = FakeSite()
        site.migration.lock.withLock {
            site.migration.migratedTo = "dst"
            site.migration.persistentAtDestination = false
        }
        let owner = try await context(site).locate("w1", from: nil)
        #expect(owner.host.name == "src" && owner.state == .shutOff)
        let running = try await context(site).locate("w1", from: nil, running: true)
        #expect(running.host.name == "dst" && running.state == .running)
        let (location, dest, mode) = try await CheckFlow(context: context(site)).locate(CheckOptions(vm: "w1", to: "src"))
        #expect(location.host.name == "dst" && dest.name == "src" && mode == .live)
    }

    @Test("preflight writes the plan and ends a dry run; asks SPACE only")
    func preflight() async throws {
        let site = FakeSite()
        var (ctx, run) = try await started(site, ShareOptions(vm: "w1", dryRun: true))
        site.reset()
        try await ShareSteps.preflight(ctx, &run)
        #expect(run.finished && run.result.plan.count == 6)
        #expect(site.verbs == ["store SPACE"])
    }

    @Test("export names the source and the destinations as clients")
    func export() async throws {
        let site = FakeSite()
        var (ctx, run) = try await started(site)
        try await ShareSteps.export(ctx, &run)
        #expect(site.clients == ["src", "dst"] && run.result.changed == ["export"])
        try await ShareSteps.export(ctx, &run)
        #expect(run.result.changed == ["export"], "the second EXPORT changed nothing")
    }

    @Test("pools: one POOL-ENSURE per host; a conflict names the host")
    func pools() async throws {
        let site = FakeSite()
        var (ctx, run) = try await started(site)
        try await ShareSteps.pools(ctx, &run)
        #expect(site.pools == ["src", "dst"])
        #expect(run.result.changed == ["pool on src", "pool on dst"])
        site.failPoolOn = "dst"
        do { try await ShareSteps.pools(ctx, &run); Issue.record("no failure") } catch {
            #expect(error.step == .pool && error.host == "dst" && error.error.code == .conflict)
        }
    }

    @Test("copy records each copy with its digest, and streams progress")
    func copy() async throws {
        let site = FakeSite()
        site.disks = [("vda", "w1.qcow2", 1048576), ("vdb", "data.qcow2", 2048)]
        let events = ShareFlowTests.EventLog()
        let ctx = context(site, events: events)
        var run = try await ShareFlow.start(ctx, ShareOptions(vm: "w1", to: ["dst"]))
        try await ShareSteps.copy(ctx, &run)
        #expect(run.result.disks.map(\.path) == ["w1/w1.qcow2", "w1/data.qcow2"])
        #expect(run.result.changed == ["copy"] && run.result.copySeconds == 0.1)
        #expect(events.events.contains(.progress(disk: "vda", done: 1050624, total: 1050624, bytesPerSecond: 1050624)))
    }

    @Test("checksum compares every copy's digest and size on the storage host")
    func checksum() async throws {
        let site = FakeSite()
        var (ctx, run) = try await started(site)
        try await ShareSteps.copy(ctx, &run)
        try await ShareSteps.checksum(ctx, &run)
        site.corruptChecksum = true
        do { try await ShareSteps.checksum(ctx, &run); Issue.record("no failure") } catch {
            #expect(error.step == .checksum && error.error.code == .invalidState)
        }
    }

    @Test("verify: one nonce per destination, each read once, every disk seen")
    func verify() async throws {
        let site = FakeSite()
        site.disks = [("vda", "w1.qcow2", 1048576), ("vdb", "data.qcow2", 2048)]
        var (ctx, run) = try await started(site, ShareOptions(vm: "w1", to: ["dst", "other"]))
        try await ShareSteps.copy(ctx, &run)
        site.reset()
        try await ShareSteps.verify(ctx, &run)
        #expect(site.nonces.isEmpty, "every nonce written was read (and removed) by its destination")
        let verbs = site.verbs
        #expect(verbs.filter { $0 == "src VERIFY" }.count == 2, "one nonce written per destination")
        #expect(verbs.filter { $0 == "dst VERIFY" }.count == 2 && verbs.filter { $0 == "other VERIFY" }.count == 2,
                "one VERIFY per disk per destination, the nonce read with the first")
    }

    @Test("verify: a destination that does not see the source's nonce is named, with what to do")
    func verifyNotSame() async throws {
        let site = FakeSite()
        var (ctx, run) = try await started(site)
        try await ShareSteps.copy(ctx, &run)
        // Another host consumed the nonce file first (or the destination sees other storage).
        let caller = site.caller()
        let hijack = InProcessAgents(["src": caller.handlers["src"]!, "dst": DropNonces(site: site), "store": caller.handlers["store"]!])
        let ctx2 = FlowContext(inventory: ctx.inventory, caller: hijack)
        do { try await ShareSteps.verify(ctx2, &run); Issue.record("no failure") } catch {
            #expect(error.step == .verify && error.host == "dst" && error.error.code == .notFound)
            #expect(error.remedy.contains("do not see the same storage"))
        }
    }

    /// A destination whose share holds no nonce files.
    struct DropNonces: RequestHandler {
        let site: FakeSite
        var verbs: [String] { [] }
        func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
            site.lock.withLock { site.nonces = [:] }
            return try await FakeSite.Agent(site: site, host: "dst").handle(request, context: context, reply: reply)
        }
    }

    @Test("adopt: mount mode by pool, libnfs mode by server and export")
    func adopt() async throws {
        let site = FakeSite()
        var (ctx, run) = try await started(site, ShareOptions(vm: "w1", to: ["dst"], attach: .libnfs))
        try await ShareSteps.adopt(ctx, &run)
        #expect(run.result.ready && run.result.changed == ["adopt"] && site.adoptedLibNFS)
    }

    @Test("the fakes refuse a misspelt key as the agents do")
    func misspeltKey() async throws {
        let caller = FakeSite().caller()
        let src = ShareFlowTests.inventory.compute[0]
        let response = try await caller.call(src, Request("COPY", ["domian": "w1", "pool": "shared-images"]), timeout: .seconds(5), onLine: nil)
        #expect(throws: AgentError.self) { try response.get() }
        if case .failure(let e) = response.result {
            #expect(e.code == .invalidArgument && e.message.contains("'domian'"))
        }
    }

    @Test("unshare steps: localize, then every disk is local, then unneeded clients go")
    func unshareSteps() async throws {
        let site = FakeSite()
        _ = try await ShareFlow(inventory: ShareFlowTests.inventory, caller: site.caller(), emit: { _ in })
            .run(ShareOptions(vm: "w1", to: ["dst"]))
        let ctx = context(site)
        var run = try await UnshareFlow.start(ctx, UnshareOptions(vm: "w1"))
        #expect(run.shared.map(\.target) == ["vda"])
        try await UnshareSteps.preflight(ctx, &run)
        try await UnshareSteps.localize(ctx, &run)
        #expect(run.result.disks.map(\.to) == ["/var/lib/libvirt/images/w1/w1.qcow2"])
        try await UnshareSteps.verifyLocal(ctx, &run)
        try await UnshareSteps.unexport(ctx, &run)
        #expect(run.result.removedClients == ["src", "dst"] && site.clients.isEmpty)
    }
}
