import AgentAPI
import AgentProtocol
import AgentRuntime
import ConfigFile
import Foundation
import Testing
@testable import StoragectlCommands

@Suite("check and migrate flows")
struct CheckMigrateFlowTests {
    static let inventory = try! Inventory(ConfigFile.parse("""
    [storage store]
    agent = tcp:198.18.0.1:7700
    export-root = /srv/shared
    [compute src]
    agent = tcp:198.18.0.2:7700
    [compute dst]
    agent = tcp:198.18.0.3:7700
    migration-uri = qemu+tcp://dst/system
    migration-ports = 49200-49210
    [compute other]
    agent = tcp:198.18.0.4:7700
    """, path: "inv"))

    /// A running VM already shared (mount mode), every fact good.
    static func sharedRunning() -> FakeSite {
        let fake = FakeSite()
        fake.copied = true
        fake.adopted = true
        fake.running = true
        return fake
    }

    final class Events: @unchecked Sendable {
        let lock = NSLock()
        var all: [MigrateEvent] = []
        func add(_ e: MigrateEvent) { lock.withLock { all.append(e) } }
        var progress: [MigrationProgress] { lock.withLock { all.compactMap { if case .progress(let p) = $0 { return p } else { return nil } } } }
    }

    func check(_ fake: FakeSite, _ options: CheckOptions = CheckOptions(vm: "w1", to: "dst"), serialize: Bool = true) async throws(ShareFailure) -> CheckReport {
        try await CheckFlow(inventory: Self.inventory, caller: fake.caller(serializeConnections: serialize)).run(options)
    }

    @Test("a shared running VM passes every check; the URI and port range come from the inventory")
    func allPass() async throws {
        let fake = Self.sharedRunning()
        let report = try await check(fake)
        for c in report.checks { #expect(c.result == .pass, "\(CheckFormatting.line(c))") }
        #expect(report.checks.map(\.name) == CheckName.allCases.filter { $0 != .gateways })  // gateways: a cluster only
        #expect(report.exitStatus == 0 && report.mode == "live" && report.uri == "qemu+tcp://dst/system")
        #expect(fake.migration.with { $0.listenRequests.first.map { ($0.low, $0.high) } ?? (0, 0) } == (49200, 49210))
        let probe = try #require(fake.migration.with { $0.probeRequests.first })
        #expect(probe.host == "dst" && probe.ports == [49200, 16509] && probe.bandwidthPort == 49200)
        #expect(fake.migration.with { $0.targetRequests.first?.pools } == ["shared-images"])
        #expect(fake.verbs.contains("src VERIFY") && fake.verbs.contains("dst VERIFY"), "the storage test ran fresh")
    }

    @Test("the dirty-rate window and the port probe run on connections of their own, beside the other questions")
    func concurrent() async throws {
        let fake = Self.sharedRunning()
        // The window stays open until every other question has reached the agents: were
        // any of them queued behind it (or behind the probe), it would never close.
        fake.migration.with {
            $0.latency = .milliseconds(20)
            $0.dirtyWindowAwaits = ["src MIGRATION-FACTS", "src LIBVIRT-REACH", "src PORT-PROBE", "dst MIGRATION-TARGET", "dst VERIFY"]
        }
        let caller = fake.caller(serializeConnections: true)
        let report = try await CheckFlow(inventory: Self.inventory, caller: caller).run(CheckOptions(vm: "w1", to: "dst"))
        #expect(report.ok, "\(report.failed.map(CheckFormatting.line))")
        let log = caller.connectionLog.all
        #expect(log.contains("src dirty-rate DIRTY-RATE") && log.contains("src probe PORT-PROBE") && log.contains("src main MIGRATION-FACTS"))
    }

    @Test("check against answering agents takes a few round trips, not one per question")
    func fast() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.latency = .milliseconds(100) }
        let report = try await check(fake)
        // Six of the questions answer after 100 ms each (MIGRATION-FACTS, -TARGET,
        // LIBVIRT-REACH, PORT-LISTEN, PORT-PROBE, DIRTY-RATE): one after another >= 600 ms.
        // At once (one session per agent, plus the source's dirty-rate and probe
        // connections), four are in flight together: src's first session, dst's, the
        // dirty-rate window, then the probe. Alone on this machine: about 230 ms.
        #expect(report.ok)
        // No wall-clock bound: in the full parallel run a test's continuations resume
        // seconds late (seen: 9.4 s for this check). What makes it fast is asserted here
        // (questions in flight together); the real time is measured by make bench
        // (Tests/Lab/bench-check, docs/benchmarks.md).
        #expect(fake.migration.with { $0.maxInFlight } >= 3)
    }

    @Test("a VM with a local disk fails storage-ready and disks with share's command; exit 65")
    func local() async throws {
        let fake = FakeSite()
        fake.running = true
        let report = try await check(fake)
        let failed = report.failed.map(\.name)
        #expect(failed.contains(.storageReady) && failed.contains(.disks))
        #expect(report.failed.first { $0.name == .disks }?.remedy.contains("storagectl share w1 --to dst") == true)
        #expect(report.exitStatus == 65)
        #expect(CheckFormatting.text(report).contains("fail storage-ready"))
    }

    @Test("a failed agent call fails the checks that needed it, with the agent's words; the others still run")
    func agentError() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.failing["dst MIGRATION-TARGET"] = AgentError(.internal, "virConnectGetCapabilities failed") }
        let report = try await check(fake)
        for name in [CheckName.cpu, .memory, .nameUUID, .gateArmed, .destinationPool] {
            let c = try #require(report.checks.first { $0.name == name })
            #expect(c.result == .fail && c.sentence.contains("virConnectGetCapabilities failed") && c.code == .internal)
        }
        #expect(report.checks.first { $0.name == .storageReady }?.result == .pass)
        #expect(report.exitStatus == 65)
    }

    @Test("an unreachable destination agent: every check that needs it fails, exit status 69")
    func unreachable() async throws {
        let fake = Self.sharedRunning()
        let caller = fake.caller(hosts: ["store", "src", "other"])
        let report = try await CheckFlow(inventory: Self.inventory, caller: caller).run(CheckOptions(vm: "w1", to: "dst"))
        #expect(report.exitStatus == 69)
        #expect(report.checks.first { $0.name == .storageReady }?.code == .unavailable)
    }

    @Test("a shut-off VM is checked for an offline migration: memory, cpu and dirty-rate are skipped with the reason")
    func offline() async throws {
        let fake = Self.sharedRunning()
        fake.running = false
        fake.migration.with { $0.fs = "ext4"; $0.cache = "writeback" }   // the lab's bind mount: fine offline
        let report = try await check(fake)
        #expect(report.mode == "offline" && report.ok)
        for name in [CheckName.memory, .cpu, .dirtyRate] {
            let c = try #require(report.checks.first { $0.name == name })
            #expect(c.result == .skip && !c.sentence.isEmpty)
        }
        #expect(fake.migration.with { $0.listenRequests.isEmpty }, "no data port for an offline migration")
        #expect(fake.migration.with { $0.probeRequests.first?.ports } == [16509])
    }

    @Test("--live of a shut-off VM and --offline of a running one are refused (65) before any check")
    func modeMismatch() async throws {
        let fake = Self.sharedRunning()
        do { _ = try await check(fake, CheckOptions(vm: "w1", to: "dst", mode: .offline)); Issue.record("no refusal") } catch {
            #expect(error.error.code == .invalidState && error.remedy.contains("virsh shutdown w1"))
        }
        fake.running = false
        do { _ = try await check(fake, CheckOptions(vm: "w1", to: "dst", mode: .live)); Issue.record("no refusal") } catch {
            #expect(ExitStatus.code(for: error.error.code) == 65)
        }
    }

    @Test("a live migration of a file on a local file system fails (the lab's bind mount): libvirt would call it unsafe")
    func bindMount() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.fs = "ext4" }
        let report = try await check(fake)
        #expect(report.failed.map(\.name) == [.disks])
        #expect(report.failed[0].sentence.contains("libvirt refuses a live migration of it as unsafe"))
    }

    @Test("the dirty rate above the --bandwidth cap fails with the remedies")
    func dirtyOverCap() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.dirtyRate = 5 << 20 }
        let report = try await check(fake, CheckOptions(vm: "w1", to: "dst", bandwidthMiB: 1))
        let c = try #require(report.checks.first { $0.name == .dirtyRate })
        #expect(c.result == .fail)
        for r in ["raise --bandwidth", "--auto-converge", "--postcopy", "--offline"] { #expect(c.remedy.contains(r)) }
    }

    @Test("check --json: every check with name, result, measured values, sentence and remedy")
    func json() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.hookLoaded = false }
        let text = try CheckFormatting.json(try await check(fake))
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(doc["ok"] as? Bool == false && doc["vm"] as? String == "w1" && doc["destination"] as? String == "dst")
        let checks = try #require(doc["checks"] as? [[String: Any]])
        #expect(checks.map { $0["name"] as? String } == CheckName.allCases.filter { $0 != .gateways }.map(\.rawValue))
        let gate = try #require(checks.first { $0["name"] as? String == "gate-armed" })
        #expect(gate["result"] as? String == "fail")
        #expect((gate["measured"] as? [String: String])?["loaded"] == "no")
        #expect((gate["remedy"] as? String)?.contains("reload libvirtd") == true)
        #expect(Set(gate.keys) == ["name", "result", "measured", "sentence", "remedy"])
    }

    // MARK: - migrate

    @Test("migrate refuses on a failed check with the failed lines, and sends no MIGRATE")
    func refused() async throws {
        let fake = FakeSite()
        fake.running = true
        let outcome = try await MigrateFlow(inventory: Self.inventory, caller: fake.caller()).run(MigrateOptions(vm: "w1", to: "dst", persistent: true))
        guard case .refused(let report) = outcome else { Issue.record("not refused: \(outcome)"); return }
        let text = CheckFormatting.refusal(report)
        #expect(text.contains("fail storage-ready") && text.contains("fail disks") && !text.contains("pass "))
        #expect(report.exitStatus == 65)
        #expect(!fake.verbs.contains("src MIGRATE"))
    }

    @Test("migrate streams progress and says where the VM runs, its downtime and the time it took")
    func migrates() async throws {
        let fake = Self.sharedRunning()
        let events = Events()
        let outcome = try await MigrateFlow(inventory: Self.inventory, caller: fake.caller(serializeConnections: true), onEvent: events.add)
            .run(MigrateOptions(vm: "w1", to: "dst", persistent: true, bandwidthMiB: 500, autoConverge: true))
        guard case .migrated(_, let result) = outcome else { Issue.record("not migrated: \(outcome)"); return }
        #expect(result.runsOn == "dst" && result.stateOnDestination == "running" && result.stateOnSource == "shut-off")
        #expect(result.downtimeMs == 42 && result.elapsedMs == 1234)
        let request = try #require(fake.migration.with { $0.migrateRequests.first })
        #expect(request == MigrateRequest(name: "w1", uri: "qemu+tcp://dst/system", mode: .live, persistent: true, bandwidthMiB: 500, autoConverge: true))
        #expect(events.progress.count == 2 && events.progress.last?.iteration == 1)
        #expect(MigrateFormatting.summary(result).hasPrefix("w1 runs on dst now (shut-off on src)."))
        #expect(MigrateFormatting.summary(result).contains("paused 42 ms"))
    }

    @Test("Ctrl-C: MIGRATE-ABORT goes on a second connection while MIGRATE streams; the VM still runs on the source (130)")
    func interrupted() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.migrateWaitsForAbort = true }
        let events = Events()
        let caller = fake.caller(serializeConnections: true)
        let outcome = try await MigrateFlow(inventory: Self.inventory, caller: caller, onEvent: events.add)
            .run(MigrateOptions(vm: "w1", to: "dst", persistent: true)) {
                // "Ctrl-C" once the migration shows progress.
                while events.progress.isEmpty { try? await Task.sleep(for: .milliseconds(2)) }
            }
        guard case .aborted(_, let result) = outcome else { Issue.record("not aborted: \(outcome)"); return }
        #expect(result.aborted == .interrupted && AbortReason.interrupted.exitStatus == 130)
        #expect(result.runsOn == "src" && result.stateOnDestination == "absent")
        #expect(result.error?.contains("aborted") == true)
        #expect(caller.connectionLog.all.contains("src abort MIGRATE-ABORT"))
        #expect(events.all.contains(.aborting(.interrupted)))
        #expect(MigrateFormatting.summary(result).contains("w1 still runs on src"))
    }

    @Test("Ctrl-C during check: no MIGRATE is sent, the VM stays where it is")
    func interruptedDuringCheck() async throws {
        let fake = Self.sharedRunning()
        let outcome = try await MigrateFlow(inventory: Self.inventory, caller: fake.caller())
            .run(MigrateOptions(vm: "w1", to: "dst", persistent: true), interruptedAlready: { true })
        guard case .aborted(_, let result) = outcome else { Issue.record("not aborted: \(outcome)"); return }
        #expect(result.aborted == .interrupted && result.runsOn == "src")
        #expect(!fake.verbs.contains("src MIGRATE"))
    }

    @Test("--timeout aborts the same way, with its own status (124)")
    func timeout() async throws {
        let fake = Self.sharedRunning()
        fake.migration.with { $0.migrateWaitsForAbort = true }
        let outcome = try await MigrateFlow(inventory: Self.inventory, caller: fake.caller(serializeConnections: true))
            .run(MigrateOptions(vm: "w1", to: "dst", persistent: true, timeoutSeconds: 1))
        guard case .aborted(_, let result) = outcome else { Issue.record("not aborted: \(outcome)"); return }
        #expect(result.aborted == .timeout && AbortReason.timeout.exitStatus == 124)
        #expect(fake.migration.with { $0.migrateRequests.first?.timeoutSeconds } == 1)
    }

    @Test("--offline --persistent --undefine-source moves a shut-off VM's definition; --offline needs --persistent")
    func offlineMove() async throws {
        let fake = Self.sharedRunning()
        fake.running = false
        do {
            _ = try await MigrateFlow(inventory: Self.inventory, caller: fake.caller()).run(MigrateOptions(vm: "w1", to: "dst", mode: .offline))
            Issue.record("offline without --persistent went through")
        } catch {
            #expect(error.error.code == .invalidArgument && error.remedy.contains("--persistent"))
        }
        let outcome = try await MigrateFlow(inventory: Self.inventory, caller: fake.caller())
            .run(MigrateOptions(vm: "w1", to: "dst", mode: .offline, persistent: true, undefineSource: true, bandwidthMiB: 10))
        guard case .migrated(_, let result) = outcome else { Issue.record("not migrated: \(outcome)"); return }
        let request = try #require(fake.migration.with { $0.migrateRequests.first })
        #expect(request.mode == .offline && request.persistent && request.undefineSource && request.bandwidthMiB == nil)
        #expect(result.stateOnSource == "absent" && result.stateOnDestination == "shut-off" && result.undefinedSource)
        #expect(MigrateFormatting.summary(result).hasPrefix("w1's definition moved to dst (shut-off); on src: undefined."))
    }

    @Test("progress lines: bar, bytes, remaining, rate, pass and dirty rate; plain without the bar")
    func progressLine() {
        let p = MigrationProgress(done: 512 << 20, total: 1 << 30, remaining: 512 << 20, rate: 100 << 20, iteration: 2, dirtyRate: 5 << 20)
        #expect(MigrateFormatting.progressLine(p, width: 10)
                == "  migrate [#####.....]  50% 512.0 MiB/1.0 GiB, 512.0 MiB left, 100.0 MiB/s, pass 2, dirty 5.0 MiB/s")
        #expect(MigrateFormatting.progressLine(MigrationProgress(done: 0, total: 0), width: 0) == "  migrate   0% 0 B/0 B")
        let record = CheckFormatting.record("progress", p)
        #expect(record.hasPrefix("{\"progress\":{") && record.contains("\"dirty_rate\":5242880") && record.contains("\"type\":\"progress\""))
    }
}

@Suite("check and migrate arguments")
struct MigrateArgumentTests {
    @Test("refused before any agent is asked", arguments: [
        ["w1", "--to", "dst", "--offline"],                                   // offline needs --persistent
        ["w1", "--to", "dst", "--live", "--offline", "--persistent"],
        ["w1", "--to", "dst", "--undefine-source"],                           // would leave it defined nowhere
        ["w1", "--to", "dst", "--offline", "--persistent", "--postcopy"],
        ["w1", "--to", "dst", "--bandwidth", "0"],
        ["w1", "--to", "dst", "--timeout", "0"],
        ["w1", "--to", "dst", "--dirty-rate-seconds", "61"],
        ["w/1", "--to", "dst"],
    ])
    func migrateRefuses(_ args: [String]) {
        #expect(throws: (any Error).self) { try MigrateCommand.parse(args) }
    }

    @Test("accepted")
    func accepted() throws {
        let m = try MigrateCommand.parse(["w1", "--to", "dst", "--live", "--persistent", "--undefine-source", "--bandwidth", "100",
                                          "--timeout", "600", "--auto-converge", "--postcopy", "--json", "--agent-timeout", "3"])
        #expect(m.timeout == 600 && m.agentTimeout == 3 && m.bandwidth == 100)
        _ = try MigrateCommand.parse(["w1", "--to", "dst", "--offline", "--persistent", "--undefine-source"])
        let c = try CheckCommand.parse(["w1", "--to", "dst", "--bandwidth", "10", "--dirty-rate-seconds", "3", "--json"])
        #expect(c.dirtyRateSeconds == 3)
        #expect(throws: (any Error).self) { try CheckCommand.parse(["w1", "--to", "dst", "--live", "--offline"]) }
    }
}

@Suite("migrate's Ctrl-C")
struct InterruptTests {
    @Test("SIGINT to the process (as a terminal's Ctrl-C) wakes the abort and is remembered for a Ctrl-C during check")
    func sigint() async throws {
        let (wait, already) = Interrupts.install()
        #expect(!already())
        final class Woke: @unchecked Sendable {
            let lock = NSLock()
            var value = false
        }
        let woke = Woke()
        let waiter = Task {
            await wait()
            woke.lock.withLock { woke.value = true }
        }
        try await Task.sleep(for: .milliseconds(50))
        // Process-directed, as the terminal sends it (raise() would aim at this thread,
        // where the ignored signal is discarded before libdispatch sees it).
        kill(getpid(), SIGINT)
        for _ in 0..<500 where !woke.lock.withLock({ woke.value }) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(woke.lock.withLock { woke.value }, "the wait did not return within 5 s of SIGINT")
        #expect(already())
        waiter.cancel()
        // The first Ctrl-C put the default action back; so it stays for the test process.
        signal(SIGINT, SIG_DFL)
    }
}
