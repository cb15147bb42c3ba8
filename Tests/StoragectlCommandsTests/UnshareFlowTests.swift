import AgentAPI
import AgentProtocol
import AgentRuntime
import ConfigFile
import Foundation
import Testing
@testable import StoragectlCommands

/// Agents simulated in memory for unshare: w1 on the share (mount or libnfs), an export
/// to src and dst, and optionally another shared VM on dst.
final class FakeUnshareAgents: AgentCaller, @unchecked Sendable {
    let lock = NSLock()
    var log: [String] = []
    var requests: [Request] = []
    var running = false
    var onShare = true
    var libnfs = false
    var otherSharedOnDst = false
    /// dst keeps a definition of w1 on the share (left by migrate --persistent).
    var w1DefinedOnDst = false
    var clients: Set<String> = ["src", "dst"]
    var failDomainsOn: String?
    var failLocalize: AgentError?
    let digest = "xxh3-128:" + String(repeating: "cd", count: 16)

    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        lock.withLock { respond(host, request, onLine: onLine) }
    }

    func respond(_ host: Inventory.Host, _ request: Request, onLine: (@Sendable (ResponseLine) -> Void)?) -> Response {
        log.append("\(host.name) \(request.verb)")
        requests.append(request)
        do {
            let (data, ok) = try answer(host.name, request, onLine: onLine)
            for d in data { onLine?(.data(d)) }
            return Response(data: data, result: .success(ok))
        } catch {
            return Response(result: .failure(error))
        }
    }

    /// Requests decoded with the typed contract (an unknown key is refused as a real
    /// agent refuses it), answers encoded with it.
    func answer(_ host: String, _ request: Request, onLine: (@Sendable (ResponseLine) -> Void)?) throws(AgentError) -> ([Fields], Fields) {
        let sharedSource = libnfs ? "nfs://store/srv/shared/w1/w1.qcow2" : "/srv/shared/w1/w1.qcow2"
        let facts = ShareFacts(pool: libnfs ? nil : "shared-images", server: "store", export: "/srv/shared",
                               attach: libnfs ? .libnfs : .mount, target: libnfs ? nil : "/srv/shared")
        switch (host, request.verb) {
        case (_, DomainQuery.verb):
            let q = try DomainQuery(request)
            guard host == "src", q.name == "w1" else { throw AgentError(.notFound, "no domain") }
            let disk = onShare
                ? DiskRecord(target: "vda", type: libnfs ? "network" : "file", source: sharedSource)
                : DiskRecord(target: "vda", type: "file", source: "/var/lib/libvirt/images/w1.qcow2")
            return DomainQuery.encodeAnswer(.init(name: "w1", uuid: "u", state: running ? .running : .shutOff, persistent: true,
                                                  disks: [disk, DiskRecord(target: "hdc", type: "file", device: "cdrom", source: "/iso/x.iso")]))
        case ("src", LocalizeRequest.verb):
            let q = try LocalizeRequest(request)
            if let failLocalize { throw failLocalize }
            guard onShare else {
                return LocalizeRequest.encodeAnswer(.init(moved: [], domain: q.domain, share: facts, dir: "/var/lib/libvirt/images", changed: false, restored: nil))
            }
            onLine?(.progress(TransferProgress(done: 0, total: 1048576, rate: 0, disk: "vda").encoded()))
            onLine?(.progress(TransferProgress(done: 1048576, total: 1048576, rate: 1048576, disk: "vda").encoded()))
            onShare = false
            return LocalizeRequest.encodeAnswer(.init(
                moved: [LocalizedImage(disk: "vda", from: sharedSource, to: "/var/lib/libvirt/images/w1.qcow2", size: 1048576, digest: digest)],
                domain: q.domain, share: facts, dir: "/var/lib/libvirt/images", changed: true, restored: nil))
        case ("src", LiveLocalizeRequest.verb):
            let q = try LiveLocalizeRequest(request)
            guard running else { throw AgentError(.invalidState, "w1 is shut off") }
            onLine?(.progress(TransferProgress(done: 1048576, total: 1048576, rate: 1048576, disk: "vda").encoded()))
            let moved = onShare ? [LiveMovedDisk(disk: "vda", from: sharedSource, to: "/var/lib/libvirt/images/w1/w1.qcow2", path: "w1/w1.qcow2",
                                                 format: "qcow2", virtualSize: 1 << 30, copied: 1048576, already: false)] : []
            onShare = false
            return LiveLocalizeRequest.encodeAnswer(.init(moved: moved, domain: q.domain, share: facts, bytes: 1048576, changed: !moved.isEmpty,
                                                          attached: false, dir: q.dir ?? "/var/lib/libvirt/images"))
        case (let h, DomainsQuery.verb):
            _ = try DomainsQuery(request)
            if h == failDomainsOn { throw AgentError(.unavailable, "\(h): connection refused") }
            switch h {
            case "src": return DomainsQuery.encodeAnswer([.init(name: "w1", state: .shutOff, persistent: true, shared: onShare)])
            case "dst":
                var list: [AgentAPI.DomainListing] = [.init(name: "w2", state: .running, persistent: true, shared: otherSharedOnDst)]
                if w1DefinedOnDst { list.append(.init(name: "w1", state: .shutOff, persistent: true, shared: true)) }
                return DomainsQuery.encodeAnswer(list)
            default: return DomainsQuery.encodeAnswer([])
            }
        case ("store", ExportsQuery.verb):
            _ = try ExportsQuery(request)
            let records = clients.isEmpty ? [] : [ExportRecord(owner: .storagectl, path: "/srv/shared", line: 1, clients: clients.sorted(), text: "")]
            return ExportsQuery.encodeAnswer(.init(records: records, block: .present, backend: .kernel))
        case ("store", UnexportRequest.verb):
            let q = try UnexportRequest(request)
            let gone = Set(q.clients)
            let changed = !gone.isDisjoint(with: clients)
            clients.subtract(gone)
            return UnexportRequest.encodeAnswer(.init(path: q.path, clients: clients.sorted(), changed: changed, backend: .kernel))
        default:
            throw AgentError(.unsupported, "fake: \(host) \(request.verb)")
        }
    }

    var verbs: [String] { lock.withLock { log } }
    func request(_ verb: String) -> Request? { lock.withLock { requests.first { $0.verb == verb } } }
}

@Suite("unshare flow")
struct UnshareFlowTests {
    func flow(_ fake: FakeUnshareAgents, events: ShareFlowTests.EventLog = .init()) -> UnshareFlow {
        UnshareFlow(inventory: ShareFlowTests.inventory, caller: fake, emit: { events.append($0) })
    }

    @Test("a first run localizes through the pool, checks, and drops clients no shared VM needs")
    func firstRun() async throws {
        let fake = FakeUnshareAgents()
        let events = ShareFlowTests.EventLog()
        let result = try await flow(fake, events: events).run(UnshareOptions(vm: "w1"))
        #expect(result.done && result.host == "src")
        #expect(result.changed == ["localize", "unexport"])
        #expect(result.disks == [LocalizedDisk(disk: "vda", from: "/srv/shared/w1/w1.qcow2", to: "/var/lib/libvirt/images/w1.qcow2",
                                               size: 1048576, digest: fake.digest)])
        let localize = try #require(fake.request("LOCALIZE"))
        #expect(localize.fields["pool"] == "shared-images" && localize.fields["server"] == nil)
        #expect(fake.clients.isEmpty)
        #expect(result.removedClients == ["src", "dst"] && result.remainingClients.isEmpty)
        #expect(result.leftOnShare == ["store:/srv/shared/w1/w1.qcow2"])
        let order = fake.verbs
        #expect(order.firstIndex(of: "src LOCALIZE")! < order.lastIndex(of: "src DOMAIN")!, "verified after LOCALIZE")
        #expect(order.last == "store UNEXPORT")
        #expect(events.events.contains(.progress(disk: "vda", done: 1048576, total: 1048576, bytesPerSecond: 1048576)))
        let summary = UnshareFormatting.summary(result)
        #expect(summary.hasPrefix("w1 is on local disks of src again."))
        #expect(summary.contains("store:/srv/shared/w1/w1.qcow2") && summary.contains("nothing is deleted"))
        #expect(summary.contains("  vda: /var/lib/libvirt/images/w1.qcow2 (1.0 MiB, digest xxh3-128:cdcdcdcdcdcdcdcd…)\n"))
        let json = try JSONSerialization.jsonObject(with: Data(try UnshareFormatting.json(result).utf8)) as! [String: Any]
        #expect((json["disks"] as? [[String: Any]])?.first?["digest"] as? String == fake.digest)
    }

    @Test("a second run changes nothing and says so")
    func secondRun() async throws {
        let fake = FakeUnshareAgents()
        _ = try await flow(fake).run(UnshareOptions(vm: "w1"))
        let again = try await flow(fake).run(UnshareOptions(vm: "w1"))
        #expect(again.changed.isEmpty && again.done)
        #expect(fake.verbs.filter { $0 == "src LOCALIZE" || $0 == "store UNEXPORT" }.count == 2, "only the first run changed anything")
        #expect(UnshareFormatting.summary(again).hasPrefix("w1 was already on local disks of src; nothing changed."))
    }

    @Test("libnfs mode: LOCALIZE by server and export; the share path comes from the NFS URL")
    func libnfs() async throws {
        let fake = FakeUnshareAgents()
        fake.libnfs = true
        let result = try await flow(fake).run(UnshareOptions(vm: "w1"))
        let localize = try #require(fake.request("LOCALIZE"))
        #expect(localize.fields["server"] == "store", "the inventory's nfs-server (default: the storage section's name)")
        #expect(localize.fields["export"] == "/srv/shared" && localize.fields["pool"] == nil)
        #expect(result.leftOnShare == ["store:/srv/shared/w1/w1.qcow2"])
    }

    @Test("a running VM is copied back live (LIVE-LOCALIZE), never stopped; --offline refuses it before anything changes")
    func running() async throws {
        let fake = FakeUnshareAgents()
        fake.running = true
        let result = try await flow(fake).run(UnshareOptions(vm: "w1"))
        #expect(result.mode == .live && result.done)
        #expect(result.disks == [LocalizedDisk(disk: "vda", from: "/srv/shared/w1/w1.qcow2", to: "/var/lib/libvirt/images/w1/w1.qcow2",
                                               size: 1048576, digest: "")])
        #expect(fake.verbs.contains("src LIVE-LOCALIZE") && !fake.verbs.contains("src LOCALIZE"))
        #expect(result.leftOnShare == ["store:/srv/shared/w1/w1.qcow2"])
        #expect(try UnshareFormatting.json(result).contains("\"mode\" : \"live\""))

        let offline = FakeUnshareAgents()
        offline.running = true
        do { _ = try await flow(offline).run(UnshareOptions(vm: "w1", mode: .offline)); Issue.record("no failure") } catch {
            #expect(error.step == .preflight && error.error.code == .invalidState && error.remedy.contains("drop --offline"))
            #expect(error.remedy.contains("virsh shutdown w1"))
        }
        #expect(offline.verbs.allSatisfy { $0.hasSuffix(" DOMAIN") })
        #expect(!offline.verbs.contains { $0.hasSuffix("LOCALIZE") || $0.hasSuffix("UNEXPORT") })
    }

    @Test("--live on a shut-off VM is refused before anything changes")
    func liveShutOff() async throws {
        let fake = FakeUnshareAgents()
        do { _ = try await flow(fake).run(UnshareOptions(vm: "w1", mode: .live)); Issue.record("no failure") } catch {
            #expect(error.step == .preflight && error.error.code == .invalidState && error.remedy.contains("virsh start w1"))
        }
        #expect(fake.verbs.allSatisfy { $0.hasSuffix(" DOMAIN") })
    }

    @Test("a definition of the VM left on another host by a migration is named as stale, with what to do")
    func staleDefinitionElsewhere() async throws {
        let fake = FakeUnshareAgents()
        fake.w1DefinedOnDst = true
        let events = ShareFlowTests.EventLog()
        let result = try await flow(fake, events: events).run(UnshareOptions(vm: "w1"))
        #expect(result.staleDefinitions == ["dst"] && result.remainingClients == ["dst"])
        #expect(events.events.contains { if case .note(let n) = $0 { return n.contains("dst also defines w1") && n.contains("virsh undefine w1") } else { return false } })
        #expect(UnshareFormatting.summary(result).contains("warning: dst still defines w1 on the shared image"))
        #expect(try UnshareFormatting.json(result).contains("\"stale_definitions\" : [\n    \"dst\""))
    }

    @Test("a host that still defines a shared VM stays an export client")
    func keepsNeededClient() async throws {
        let fake = FakeUnshareAgents()
        fake.otherSharedOnDst = true
        let events = ShareFlowTests.EventLog()
        let result = try await flow(fake, events: events).run(UnshareOptions(vm: "w1"))
        #expect(result.removedClients == ["src"] && result.remainingClients == ["dst"])
        #expect(fake.clients == ["dst"])
        let unexport = try #require(fake.request("UNEXPORT"))
        #expect(unexport.fields.all("client") == ["src"] && unexport.fields["path"] == "/srv/shared")
        #expect(events.events.contains(.note("dst stays an export client: shared VM(s) w2")))
    }

    @Test("a client whose agent does not answer is not dropped; the failure names it")
    func unreachableClient() async throws {
        let fake = FakeUnshareAgents()
        fake.failDomainsOn = "dst"
        do { _ = try await flow(fake).run(UnshareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .unexport && error.host == "dst" && error.error.code == .unavailable)
            #expect(error.remedy.contains("run unshare again"))
        }
        #expect(!fake.verbs.contains("store UNEXPORT"))
        #expect(!fake.onShare, "the VM itself was brought back")
        fake.failDomainsOn = nil
        let result = try await flow(fake).run(UnshareOptions(vm: "w1"))
        #expect(result.changed == ["unexport"] && fake.clients.isEmpty)
        #expect(UnshareFormatting.summary(result).hasPrefix("w1 was already on local disks of src.\nexport store:/srv/shared no longer lists src, dst (no client left)."))
    }

    @Test("a LOCALIZE failure names the host and the agent's words; nothing is unexported")
    func localizeFails() async throws {
        let fake = FakeUnshareAgents()
        fake.failLocalize = AgentError(.unavailable, "cannot stat /srv/shared/w1/w1.qcow2")
        do { _ = try await flow(fake).run(UnshareOptions(vm: "w1")); Issue.record("no failure") } catch {
            #expect(error.step == .localize && error.host == "src")
            #expect("\(error)".contains("localize on src failed: cannot stat /srv/shared/w1/w1.qcow2 [unavailable]"))
        }
        #expect(!fake.verbs.contains { $0.hasSuffix("UNEXPORT") || $0.hasSuffix("EXPORTS") })
    }

    @Test("an unknown VM is not-found")
    func unknownVM() async throws {
        do { _ = try await flow(FakeUnshareAgents()).run(UnshareOptions(vm: "ghost")); Issue.record("no failure") } catch {
            #expect(error.error.code == .notFound && error.step == .locate)
        }
    }
}
