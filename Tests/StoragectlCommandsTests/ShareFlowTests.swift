import AgentProtocol
import AgentRuntime
import ConfigFile
import Foundation
import Testing
@testable import StoragectlCommands

/// Agents simulated in memory: what share asks, and what real agents would answer.
final class FakeAgents: AgentCaller, @unchecked Sendable {
    let lock = NSLock()
    var log: [String] = []
    var running = false
    var available: UInt64 = 100 << 30
    var clients: Set<String> = []
    var pools: Set<String> = []
    var copied = false
    var adopted = false
    var corruptChecksum = false
    /// Answer as agents from before content digests did (`sha256=`).
    var oldComputeAgent = false
    var oldStorageAgent = false
    var failPoolOn: String?
    let digest = String(repeating: "ab", count: 32)

    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        try answer(host, request, onLine: onLine).get()
    }

    func answer(_ host: Inventory.Host, _ request: Request,
                onLine: (@Sendable (ResponseLine) -> Void)?) -> Result<Response, AgentError> {
        lock.lock(); defer { lock.unlock() }
        return .success(respond(host, request, onLine: onLine))
    }

    func respond(_ host: Inventory.Host, _ request: Request, onLine: (@Sendable (ResponseLine) -> Void)?) -> Response {
        log.append("\(host.name) \(request.verb)")
        func ok(_ f: Fields, data: [Fields] = []) -> Response {
            for d in data { onLine?(.data(d)) }
            return Response(data: data, result: .success(f))
        }
        func err(_ e: AgentError) -> Response { Response(result: .failure(e)) }
        switch (host.name, request.verb) {
        case ("src", "DOMAIN") where request.fields["name"] == "w1":
            let source = adopted ? "/srv/shared/w1/w1.qcow2" : "/var/lib/libvirt/images/w1.qcow2"
            return ok(["name": "w1", "state": running ? "running" : "shut-off", "persistent": "yes"],
                      data: [["disk": "vda", "type": "file", "device": "disk", "source": source, "allocated": "1048576", "virtual-size": "10485760"]])
        case (_, "DOMAIN"):
            return err(AgentError(.notFound, "no domain"))
        case ("store", "SPACE"):
            return ok(["available": String(available)])
        case ("store", "EXPORT"):
            let new = Set(request.fields.all("client"))
            let changed = !new.isSubset(of: clients)
            clients.formUnion(new)
            return ok(["clients": clients.sorted().joined(separator: ","), "changed": changed ? "yes" : "no"])
        case ("src", "DOMAINS"):
            return ok(["domains": "2"], data: [["name": "w1", "shared": adopted ? "yes" : "no"], ["name": "local-only", "shared": "no"]])
        case (_, "DOMAINS"):
            return ok(["domains": "0"])
        case ("store", "EXPORTS"):
            return ok(["exports": "1"], data: [["owner": "storagectl", "path": "/srv/shared", "clients": clients.sorted().joined(separator: ",")]])
        case (_, "POOL-ENSURE"):
            if host.name == failPoolOn { return err(AgentError(.conflict, "pool 'x' already uses the target")) }
            let changed = !pools.contains(host.name)
            pools.insert(host.name)
            return ok(["state": "active", "changed": changed ? "yes" : "no", "actions": changed ? "defined,built,started,autostarted" : ""])
        case ("src", "COPY"):
            if adopted { return ok(["bytes": "0"], data: [["disk": "vda", "skipped": "already-shared"]]) }
            onLine?(.progress(["done": "0", "total": "1048576", "rate": "0", "disk": "vda"]))
            onLine?(.progress(["done": "1048576", "total": "1048576", "rate": "1048576", "disk": "vda"]))
            let present = copied
            copied = true
            return ok(["bytes": "1048576", "seconds": "0.1"],
                      data: [["disk": "vda", "path": "w1/w1.qcow2", "size": "1048576", oldComputeAgent ? "sha256" : "digest": digest,
                             "already-present": present ? "yes" : "no"]])
        case ("store", "CHECKSUM"):
            return ok(["size": "1048576", oldStorageAgent ? "sha256" : "digest": corruptChecksum ? String(repeating: "00", count: 32) : digest])
        case (_, "VERIFY"):
            if request.fields["nonce-write"] != nil { return ok(["size": "1048576", "format": "qcow2", "nonce-value": "n1"]) }
            if request.fields["nonce-read"] != nil {
                return request.fields["value"] == "n1" ? ok(["nonce-match": "yes"]) : err(AgentError(.invalidState, "other value"))
            }
            return ok(["size": "1048576", "format": "qcow2"])
        case ("src", "ADOPT"):
            let changed = !adopted
            adopted = true
            return ok(["changed": changed ? "yes" : "no"])
        default:
            return err(AgentError(.unsupported, "fake: \(host.name) \(request.verb)"))
        }
    }

    var verbs: [String] { lock.withLock { log } }
    func reset() { lock.withLock { log = [] } }
}

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

    func flow(_ fake: FakeAgents, events: EventLog = EventLog()) -> ShareFlow {
        ShareFlow(inventory: Self.inventory, caller: fake, emit: { events.append($0) })
    }

    final class EventLog: @unchecked Sendable {
        let lock = NSLock()
        var events: [ShareEvent] = []
        func append(_ e: ShareEvent) { lock.withLock { events.append(e) } }
    }

    @Test("a first run exports, makes pools, copies, checks, verifies and adopts, in that order")
    func firstRun() async throws {
        let fake = FakeAgents()
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
    }

    @Test("a second run changes nothing and says so")
    func secondRun() async throws {
        let fake = FakeAgents()
        _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        let again = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(again.changed.isEmpty)
        #expect(again.ready)
        #expect(ShareFormatting.summary(again).hasPrefix("w1 was already shared; nothing changed."))
    }

    @Test("destinations default to every other compute host")
    func defaultDestinations() async throws {
        let fake = FakeAgents()
        let result = try await flow(fake).run(ShareOptions(vm: "w1"))
        #expect(result.destinations == ["dst", "other"])
        #expect(fake.clients == ["src", "dst", "other"])
    }

    @Test("a running VM is refused before anything changes")
    func running() async throws {
        let fake = FakeAgents()
        fake.running = true
        await #expect(throws: ShareFailure.self) { try await flow(fake).run(ShareOptions(vm: "w1")) }
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1")) } catch {
            #expect(error.step == .preflight && error.error.code == .invalidState && error.remedy.contains("virsh shutdown w1"))
        }
        #expect(!fake.verbs.contains { $0.hasSuffix("EXPORT") || $0.hasSuffix("COPY") })
    }

    @Test("too little space on the storage host is refused before anything changes")
    func space() async throws {
        let fake = FakeAgents()
        fake.available = 1 << 20
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .preflight && error.host == "store")
        }
        #expect(!fake.verbs.contains { $0.hasSuffix("EXPORT") })
    }

    @Test("a destination outside the inventory, or the source itself, is refused", arguments: [["nowhere"], ["src"]])
    func badDestination(_ to: [String]) async throws {
        let fake = FakeAgents()
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1", to: to)); Issue.record("no failure") } catch {
            #expect(error.error.code == .invalidArgument)
        }
        #expect(fake.verbs.allSatisfy { $0.hasSuffix("DOMAIN") })
    }

    @Test("an unknown VM is not-found")
    func unknownVM() async throws {
        do { _ = try await flow(FakeAgents()).run(ShareOptions(vm: "ghost")); Issue.record("no failure") } catch {
            #expect(error.error.code == .notFound && error.step == .locate)
        }
    }

    @Test("--dry-run asks but changes nothing")
    func dryRun() async throws {
        let fake = FakeAgents()
        let result = try await flow(fake).run(ShareOptions(vm: "w1", dryRun: true))
        #expect(result.dryRun && !result.ready && result.plan.count == 6)
        #expect(fake.verbs.allSatisfy { $0.hasSuffix("DOMAIN") || $0.hasSuffix("SPACE") })
        #expect(ShareFormatting.summary(result).contains("nothing was changed"))
    }

    @Test("a content digest that differs on the storage host stops before ADOPT")
    func checksumMismatch() async throws {
        let fake = FakeAgents()
        fake.corruptChecksum = true
        do { _ = try await flow(fake).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .checksum && error.host == "store" && error.error.code == .invalidState)
            #expect(error.error.message.contains("has digest \(String(repeating: "00", count: 32))"))
            #expect(error.error.message.contains("the copy reported digest \(fake.digest)"))
        }
        #expect(!fake.adopted)
    }

    @Test("agents that answer sha256= instead of digest= (older versions) stop share before ADOPT, saying to upgrade")
    func olderAgents() async throws {
        let compute = FakeAgents()
        compute.oldComputeAgent = true
        do { _ = try await flow(compute).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .copy && error.host == "src" && error.error.code == .unsupported)
            #expect(error.error.message.contains("sha256=") && error.remedy.contains("upgrade"))
        }
        #expect(!compute.adopted)
        let storage = FakeAgents()
        storage.oldStorageAgent = true
        do { _ = try await flow(storage).run(ShareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .checksum && error.host == "store" && error.error.code == .unsupported)
            #expect(error.remedy.contains("upgrade storage-agent on store"))
        }
        #expect(!storage.adopted)
    }

    @Test("the result names each copy's content digest: summary and JSON key digest")
    func digestInResult() async throws {
        let fake = FakeAgents()
        let result = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        #expect(result.disks == [CopiedDisk(disk: "vda", path: "w1/w1.qcow2", size: 1048576, digest: fake.digest, alreadyPresent: false)])
        #expect(ShareFormatting.summary(result).contains("  vda: /srv/shared/w1/w1.qcow2 (1.0 MiB, digest abababababababab…)\n"))
        let json = try JSONSerialization.jsonObject(with: Data(try ShareFormatting.json(result).utf8)) as! [String: Any]
        let disks = json["disks"] as! [[String: Any]]
        #expect(disks.first?["digest"] as? String == fake.digest)
        #expect(disks.first?["sha256"] == nil)
    }

    @Test("a pool conflict names the host and the agent's words, and a re-run continues")
    func poolConflict() async throws {
        let fake = FakeAgents()
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
        let fake = FakeAgents()
        let before = try await StatusFlow(inventory: Self.inventory, caller: fake).status("w1")
        #expect(!before.ready && before.localDisks == ["vda"])
        _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        let after = try await StatusFlow(inventory: Self.inventory, caller: fake).status("w1")
        #expect(after.ready)
        #expect(after.hosts.first { $0.host == "dst" }?.canRun == true)
        #expect(after.hosts.first { $0.host == "other" }?.canRun == false, "not an export client")
        #expect(StatusFlow.table(after).hasPrefix("w1: READY"))
    }

    @Test("status without a VM: every VM with a disk on the share")
    func statusAll() async throws {
        let fake = FakeAgents()
        #expect(try await StatusFlow(inventory: Self.inventory, caller: fake).statusOfAll().isEmpty)
        _ = try await flow(fake).run(ShareOptions(vm: "w1", to: ["dst"]))
        let all = try await StatusFlow(inventory: Self.inventory, caller: fake).statusOfAll()
        #expect(all.map(\.vm) == ["w1"] && all[0].ready)
    }

    @Test("progress lines show bytes, rate and ETA")
    func progress() {
        let line = ShareFormatting.progressLine(disk: "vda", done: 512 << 20, total: 1 << 30, bytesPerSecond: Double(256 << 20), width: 10)
        #expect(line == "  copy vda [#####.....]  50% 512.0 MiB/1.0 GiB 256.0 MiB/s ETA 0:02")
    }
}
