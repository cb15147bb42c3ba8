import AgentAPI
import AgentProtocol
import AgentRuntime
import ConfigFile
import Foundation
import Testing
@testable import StoragectlCommands

@Suite("share flow")
struct ShareFlowTests {
    static let inventory = try! Inventory(ConfigFile.parse("""
    [storage store]
    agent = tcp:198.18.0.1:7700
    export-root = /srv/shared
    [compute src]
    agent = tcp:198.18.0.2:7700
    [compute dst]
    agent = tcp:198.18.0.3:7700
    [compute other]
    agent = tcp:198.18.0.4:7700
    """, path: "inv"))

    func flow(_ fake: FakeSite, events: EventLog = EventLog()) -> ShareFlow {
        ShareFlow(inventory: Self.inventory, caller: fake.caller(), emit: { events.append($0) })
    }

    final class EventLog: @unchecked Sendable {
        let lock = NSLock()
        var events: [ShareEvent] = []
        func append(_ e: ShareEvent) { lock.withLock { events.append(e) } }
    }

    @Test("a first run exports, makes pools, copies, checks, verifies and adopts, in that order")
    func firstRun() async throws {
        let fake = FakeSite()
        let events = EventLog()
        let result = try await flow(fake, events: events).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(result.ready)
        #expect(result.source == "src" && result.destinations == ["dst"])
        #expect(result.changed == ["export", "pool on src", "pool on dst", "copy", "adopt"])
        #expect(fake.clients == ["src", "dst"], "explicit clients only: the source and the named destination")
        let mutating = fake.verbs.filter { !$0.hasSuffix("DOMAIN") && !$0.hasSuffix("SPACE") }
        #expect(mutating.first == "store EXPORT")
        #expect(mutating.firstIndex(of: "src COPY")! < mutating.firstIndex(of: "store CHECKSUM")!)
        #expect(mutating.firstIndex(of: "store CHECKSUM")! < mutating.firstIndex(of: "src ADOPT")!)
        #expect(mutating.last == "src ADOPT")
        #expect(events.events.contains(.progress(disk: "vda", done: 1048576, total: 1048576, bytesPerSecond: 1048576)))
        // every step's wall time, and together no more than the whole run
        #expect(Set(result.stepSeconds.keys) == ["locate", "preflight", "export", "pool", "copy", "checksum", "verify", "adopt"])
        #expect(result.stepSeconds.values.allSatisfy { $0 >= 0 } && result.stepSeconds.values.reduce(0, +) <= result.totalSeconds)
    }

    @Test("a second run changes nothing and says so")
    func secondRun() async throws {
        let fake = FakeSite()
        _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        let again = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(again.changed.isEmpty)
        #expect(again.ready)
        #expect(ShareFormatting.summary(again).hasPrefix("w1 was already shared; nothing changed."))
    }

    @Test("destinations default to every other compute host")
    func defaultDestinations() async throws {
        let fake = FakeSite()
        let result = try await flow(fake).run(ShareOptions(vm: "w1"))
        #expect(result.destinations == ["dst", "other"])
        #expect(fake.clients == ["src", "dst", "other"])
    }

    @Test("--offline refuses a running VM before anything changes, and says how to copy it live")
    func runningOffline() async throws {
        let fake = FakeSite()
        fake.running = true
        await #expect(throws: ShareFailure.self) { try await flow(fake).run(ShareOptions(vm: "w1", mode: .offline)) }
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1", mode: .offline)) } catch {
            #expect(error.step == .preflight && error.error.code == .invalidState && error.remedy.contains("virsh shutdown w1"))
            #expect(error.remedy.contains("drop --offline"))
        }
        #expect(!fake.verbs.contains { $0.hasSuffix("EXPORT") || $0.hasSuffix("COPY") })
    }

    @Test("a running VM is copied live: export, pools, LIVE-COPY, verify by format and virtual size; no COPY, CHECKSUM or ADOPT")
    func runningLive() async throws {
        let fake = FakeSite()
        fake.running = true
        let events = EventLog()
        let result = try await flow(fake, events: events).run(ShareOptions(vm: "w1", to: ["dst"], bandwidthMiB: 50))
        #expect(result.ready && result.mode == .live)
        #expect(result.changed == ["export", "pool on src", "pool on dst", "copy"])
        #expect(result.disks == [CopiedDisk(disk: "vda", path: "w1/w1.qcow2", size: 1048576, digest: "", alreadyPresent: false,
                                            format: "qcow2", virtualSize: 10 * 1048576)])
        let verbs = fake.verbs
        #expect(!verbs.contains { $0.hasSuffix(" COPY") || $0.hasSuffix("CHECKSUM") || $0.hasSuffix("ADOPT") })
        #expect(verbs.firstIndex(of: "src LIVE-COPY")! < verbs.firstIndex(of: "dst VERIFY")!, "verified after the pivot")
        #expect(events.events.contains(.progress(disk: "vda", done: 1048576, total: 1048576, bytesPerSecond: 1048576)))
        #expect(events.events.contains { if case .step(.adopt, "src", let d) = $0 { return d.contains("now runs from the shared copies") } else { return false } })
        #expect(try ShareFormatting.json(result).contains("\"mode\" : \"live\""))
        #expect(ShareFormatting.summary(result).contains("vda: /srv/shared/w1/w1.qcow2 (qcow2, virtual size 10.0 MiB, copied live)"))

        // A second run joins nothing and copies nothing: the disk is on the share already.
        let again = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(again.ready && again.mode == .live && again.changed.isEmpty)
    }

    @Test("LIVE-COPY carries bandwidth= when --bandwidth is given")
    func liveBandwidth() async throws {
        let fake = FakeSite()
        fake.running = true
        let caller = fake.caller()
        _ = try await ShareFlow(inventory: Self.inventory, caller: caller, emit: { _ in }).run(ShareOptions(vm: "w1", to: ["dst"], bandwidthMiB: 7))
        let sent = try #require(fake.lock.withLock { fake.liveRequest })
        #expect(sent.bandwidthMiB == 7 && sent.share == .pool("shared-images") && sent.domain == "w1")
    }

    @Test("--live refuses a shut-off VM; --dry-run of a running VM says the copy is live and changes nothing")
    func liveModes() async throws {
        let fake = FakeSite()
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1", mode: .live)); Issue.record("no failure") } catch {
            #expect(error.step == .preflight && error.error.code == .invalidState && error.remedy.contains("virsh start w1"))
        }
        fake.running = true
        let plan = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"], dryRun: true))
        #expect(plan.mode == .live && plan.dryRun && !plan.ready)
        #expect(plan.plan.contains { $0.contains("live from src") && $0.contains("block copy") })
        #expect(!fake.verbs.contains { $0.hasSuffix("EXPORT") || $0.hasSuffix("LIVE-COPY") })
    }

    @Test("Ctrl-C once the pivot has begun: the job finishes, share stops with 130 saying the VM is on the shared copies, and a re-run finishes")
    func liveInterruptedAfterPivot() async throws {
        let fake = FakeSite()
        fake.running = true
        fake.holdLive = true
        fake.pivotDespiteAbort = true
        let (ctrlC, press) = AsyncStream.makeStream(of: Void.self)
        let caller = fake.caller()
        let flow = ShareFlow(inventory: Self.inventory, caller: caller, emit: { e in
            if case .progress = e { press.yield() }
        }, interrupted: { for await _ in ctrlC { return } })
        do { _ = try await flow.run(ShareOptions(vm: "w1", to: ["dst"])); Issue.record("no failure") } catch {
            #expect(error.interrupted && error.exitStatus == 130 && error.step == .copy)
            #expect(error.error.message.contains("after the pivot") && error.error.message.contains("runs from the shared copies"))
        }
        #expect(caller.connectionLog.all.contains("src abort LIVE-ABORT"))
        #expect(!fake.verbs.contains { $0.hasSuffix("VERIFY") })
        fake.holdLive = false
        let again = try await ShareFlow(inventory: Self.inventory, caller: fake.caller(), emit: { _ in }).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(again.ready && again.mode == .live && again.disks.allSatisfy(\.alreadyPresent))
    }

    @Test("Ctrl-C during the mirror sends LIVE-ABORT on a second connection, waits for the copy's end, and exits 130 saying the VM is unchanged")
    func liveInterrupted() async throws {
        let fake = FakeSite()
        fake.running = true
        fake.holdLive = true
        let (ctrlC, press) = AsyncStream.makeStream(of: Void.self)
        let events = EventLog()
        let caller = fake.caller()
        let flow = ShareFlow(inventory: Self.inventory, caller: caller, emit: { e in
            events.append(e)
            if case .progress = e { press.yield() }
        }, interrupted: { for await _ in ctrlC { return } })
        do { _ = try await flow.run(ShareOptions(vm: "w1", to: ["dst"])); Issue.record("no failure") } catch {
            #expect(error.interrupted && error.exitStatus == 130 && error.step == .copy)
            #expect(error.error.message.contains("w1 runs on its original disks"))
            #expect(error.remedy.contains("run share again"))
        }
        #expect(caller.connectionLog.all.contains("src abort LIVE-ABORT"))
        #expect(fake.verbs.contains("src LIVE-COPY cancelled"))
        #expect(!fake.verbs.contains { $0.hasSuffix("VERIFY") || $0.hasSuffix("ADOPT") })
    }

    @Test("too little space on the storage host is refused before anything changes")
    func space() async throws {
        let fake = FakeSite()
        fake.available = 1 << 20
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .preflight && error.host == "store")
        }
        #expect(!fake.verbs.contains { $0.hasSuffix("EXPORT") })
    }

    @Test("a destination outside the inventory, or the source itself, is refused", arguments: [["nowhere"], ["src"]])
    func badDestination(_ to: [String]) async throws {
        let fake = FakeSite()
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1", to: to)); Issue.record("no failure") } catch {
            #expect(error.error.code == .invalidArgument)
        }
        #expect(fake.verbs.allSatisfy { $0.hasSuffix("DOMAIN") })
    }

    @Test("an unknown VM is not-found")
    func unknownVM() async throws {
        do { _ = try await flow(FakeSite()).run(ShareOptions(vm: "ghost")); Issue.record("no failure") } catch {
            #expect(error.error.code == .notFound && error.step == .locate)
        }
    }

    @Test("--dry-run asks but changes nothing")
    func dryRun() async throws {
        let fake = FakeSite()
        let result = try await flow(fake).run(ShareOptions(vm: "w1", dryRun: true))
        #expect(result.dryRun && !result.ready && result.plan.count == 6)
        #expect(fake.verbs.allSatisfy { $0.hasSuffix("DOMAIN") || $0.hasSuffix("SPACE") })
        #expect(ShareFormatting.summary(result).contains("nothing was changed"))
    }

    @Test("a content digest that differs on the storage host stops before ADOPT")
    func checksumMismatch() async throws {
        let fake = FakeSite()
        fake.corruptChecksum = true
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .checksum && error.host == "store" && error.error.code == .invalidState)
            #expect(error.error.message.contains("has digest xxh3-128:\(String(repeating: "00", count: 16))"))
            #expect(error.error.message.contains("the copy reported digest \(fake.digest)"))
        }
        #expect(!fake.adopted)
    }

    @Test("agents that answer sha256= instead of digest= (older versions) stop share before ADOPT, saying to upgrade")
    func olderAgents() async throws {
        let compute = FakeSite()
        compute.oldComputeAgent = true
        do { _ = try await flow(compute).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .copy && error.host == "src" && error.error.code == .unsupported)
            #expect(error.error.message.contains("without digest=") && error.remedy.contains("upgrade"))
        }
        #expect(!compute.adopted)
        let storage = FakeSite()
        storage.oldStorageAgent = true
        do { _ = try await flow(storage).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .checksum && error.host == "store" && error.error.code == .unsupported)
            #expect(error.error.message.contains("CHECKSUM without digest=") && error.remedy.contains("upgrade storage-agent"))
        }
        #expect(!storage.adopted)
    }

    @Test("agents that answer a SHA-256 content digest (before XXH3-128) stop share before ADOPT, saying to upgrade; no digest of one algorithm is compared with the other's")
    func sha256Agents() async throws {
        let compute = FakeSite()
        compute.sha256ComputeAgent = true
        do { _ = try await flow(compute).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .copy && error.host == "src" && error.error.code == .unsupported)
            #expect(error.error.message.contains("digest=\(compute.sha256Digest), a SHA-256 content digest"), "\(error.error.message)")
            #expect(error.error.message.contains("Upgrade") && error.remedy.contains("upgrade"))
        }
        #expect(!compute.adopted)
        let storage = FakeSite()
        storage.sha256StorageAgent = true
        do { _ = try await flow(storage).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .checksum && error.host == "store" && error.error.code == .unsupported)
            #expect(error.error.message.contains("CHECKSUM with digest=\(storage.sha256Digest)"), "\(error.error.message)")
            #expect(error.remedy.contains("upgrade storage-agent"))
        }
        #expect(!storage.adopted)
    }

    @Test("the result names each copy's content digest: summary and JSON key digest")
    func digestInResult() async throws {
        let fake = FakeSite()
        let result = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(result.disks == [CopiedDisk(disk: "vda", path: "w1/w1.qcow2", size: 1048576, digest: fake.digest, alreadyPresent: false)])
        #expect(ShareFormatting.summary(result).contains("  vda: /srv/shared/w1/w1.qcow2 (1.0 MiB, digest xxh3-128:abababababababab…)\n"))
        let json = try JSONSerialization.jsonObject(with: Data(try ShareFormatting.json(result).utf8)) as! [String: Any]
        let disks = json["disks"] as! [[String: Any]]
        #expect(disks.first?["digest"] as? String == fake.digest)
        #expect(disks.first?["sha256"] == nil)
    }

    @Test("a pool conflict names the host and the agent's words, and a re-run continues")
    func poolConflict() async throws {
        let fake = FakeSite()
        fake.failPoolOn = "dst"
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"])); Issue.record("no failure") } catch {
            #expect(error.step == .pool && error.host == "dst" && error.error.code == .conflict)
            #expect("\(error)".contains("pool on dst failed: pool 'x' already uses the target [conflict]"))
        }
        #expect(!fake.copied)
        fake.failPoolOn = nil
        let result = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(result.ready && result.changed.contains("pool on dst") && !result.changed.contains("pool on src"))
    }

    @Test("status: ready once every disk is shared and a peer sees it")
    func status() async throws {
        let fake = FakeSite()
        let before = try await StatusFlow(inventory: Self.inventory, caller: fake.caller()).status("w1")
        #expect(!before.ready && before.localDisks == ["vda"])
        _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        let after = try await StatusFlow(inventory: Self.inventory, caller: fake.caller()).status("w1")
        #expect(after.ready)
        #expect(after.hosts.first { $0.host == "dst" }?.canRun == true)
        #expect(after.hosts.first { $0.host == "other" }?.canRun == false, "not an export client")
        #expect(StatusFormatting.table(after).hasPrefix("w1: READY"))
    }

    @Test("status without a VM: every VM with a disk on the share")
    func statusAll() async throws {
        let fake = FakeSite()
        #expect(try await StatusFlow(inventory: Self.inventory, caller: fake.caller()).statusOfAll().isEmpty)
        _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        let all = try await StatusFlow(inventory: Self.inventory, caller: fake.caller()).statusOfAll()
        #expect(all.map(\.vm) == ["w1"] && all[0].ready)
    }

    @Test("progress lines show bytes, rate and ETA")
    func progress() {
        let line = ShareFormatting.progressLine(disk: "vda", done: 512 << 20, total: 1 << 30, bytesPerSecond: Double(256 << 20), width: 10)
        #expect(line == "  copy vda [#####.....]  50% 512.0 MiB/1.0 GiB 256.0 MiB/s ETA 0:02")
    }
}

@Suite("share flow: found by review")
struct ShareFlowRegressionTests {
    @Test("share to two destinations: each gets a nonce of its own (a real VERIFY nonce is single-use)")
    func twoDestinations() async throws {
        let site = FakeSite()
        let result = try await ShareFlow(inventory: ShareFlowTests.inventory, caller: site.caller(), emit: { _ in })
            .run(ShareOptions(vm: "w1", to: ["dst", "other"]))
        #expect(result.ready && result.destinations == ["dst", "other"])
        #expect(site.nonces.isEmpty)
    }

    @Test("status of a VM on NFS network disks (libnfs) verifies the path under the export, not '/var'")
    func statusLibNFS() async throws {
        let site = FakeSite()
        _ = try await ShareFlow(inventory: ShareFlowTests.inventory, caller: site.caller(), emit: { _ in })
            .run(ShareOptions(vm: "w1", to: ["dst"], attach: .libnfs))
        let status = try await StatusFlow(inventory: ShareFlowTests.inventory, caller: site.caller()).status("w1")
        #expect(status.sharedDisks == ["vda"])
        #expect(status.hosts.first { $0.host == "dst" }?.seesDisks == true, "\(status.hosts)")
        #expect(status.ready)
    }

    @Test("share paths: nfs:// sources and files under the export root")
    func sharePaths() {
        #expect(SharePath.relative("nfs://198.18.0.1/var/lib/libvirt/shared-images/w1/w1.qcow2", root: "/var/lib/libvirt/shared-images") == "w1/w1.qcow2")
        #expect(SharePath.relative("/var/lib/libvirt/shared-images/w1/w1.qcow2", root: "/var/lib/libvirt/shared-images") == "w1/w1.qcow2")
        #expect(SharePath.relative("/var/lib/libvirt/shared-images-x/w1.qcow2", root: "/var/lib/libvirt/shared-images") == nil)
        #expect(SharePath.onServer("nfs://store/srv/shared/w1/w1.qcow2") == "/srv/shared/w1/w1.qcow2")
    }
}
