import AgentAPI
import AgentProtocol
import Foundation
import Testing
@testable import StoragectlCommands

/// storagectl's `share`, `unshare` and `status` flows against the real agent handlers
/// (`RealSite`: a `StorageAgentHandler` on a sandbox, a `ComputeAgentHandler` on a
/// `SimHost` per compute host, one directory as export root and pool target). Only
/// COPY's data transfer is a stand-in (`SimComputeAgent`): it needs a live NFS server.
///
/// Each test builds a site of its own (private test-driver node files, temporary
/// directories), so nothing is shared between tests; the suite is serialized anyway to
/// keep the load (qemu-img, libvirt connections, copies) low on a busy machine.
@Suite("flows on the real agent handlers", .serialized)
struct RealFlowTests {
    typealias Events = ShareFlowTests.EventLog

    var vm: String { RealSite.vm }

    @Test("share to one destination: a nonce across hosts, ADOPT in the source's test driver, CHECKSUM of the copies")
    func shareToOne() async throws {
        let site = try await RealSite()
        let before = try await site.status()
        #expect(!before.ready && before.owner == "src" && before.state == "shut-off")
        #expect(before.sharedDisks.isEmpty && before.localDisks == ["vda", "vdb"])
        #expect(before.hosts.map(\.problem) == Array(repeating: "no disk on the share", count: 3))

        let events = Events()
        let result = try await site.share(ShareOptions(vm: vm, to: ["dst1"]), events: events)
        #expect(result.ready && result.source == "src" && result.destinations == ["dst1"])
        #expect(result.changed == ["export", "pool on src", "pool on dst1", "copy", "adopt"])
        let qcow2 = try RealSite.digest(site.qcow2), raw = try RealSite.digest(site.raw)
        #expect(result.disks == [
            CopiedDisk(disk: "vda", path: "roamer/roamer.qcow2", size: qcow2.size, digest: qcow2.digest, alreadyPresent: false),
            CopiedDisk(disk: "vdb", path: "roamer/roamer-data.img", size: raw.size, digest: raw.digest, alreadyPresent: false),
        ])
        #expect(events.events.contains(.progress(disk: "vdb", done: qcow2.size + raw.size, total: qcow2.size + raw.size, bytesPerSecond: 0)))
        // CHECKSUM: the storage agent digested each copy in its export root.
        for (path, digest) in [("roamer/roamer.qcow2", qcow2.digest), ("roamer/roamer-data.img", raw.digest)] {
            #expect(events.events.contains(.step(.checksum, host: "store", detail: "\(path) digest \(DigestFormatting.short(digest, hexDigits: 12)) matches")))
        }
        // VERIFY: dst1 read, through the shared directory, the nonce src's agent wrote
        // there; reading it removed it.
        #expect(events.events.contains(.step(.verify, host: "dst1", detail: "sees 2 copy(ies) and src's nonce")))
        let onShare = try FileManager.default.contentsOfDirectory(atPath: site.root + "/roamer").sorted()
        #expect(onShare == ["roamer-data.img", "roamer.qcow2"], "no nonce file is left behind")
        // ADOPT: src's test driver defines roamer onto the shared copies.
        let domain = try await site.domain()
        #expect(domain.disks.filter(\.isDisk).map(\.source) == [site.root + "/roamer/roamer.qcow2", site.root + "/roamer/roamer-data.img"])
        #expect(domain.state == .shutOff && domain.persistent)
        // EXPORT: the root, to the source and the one destination (the exports file keeps
        // clients sorted), next to the administrator's line.
        #expect(try await site.exportClients() == ["dst1", "src"])
        #expect(site.sandbox.read(site.sandbox.exports)?.contains("/srv/data 198.18.0.9(ro,sync,no_subtree_check)") == true)
        #expect(site.applier.applied.count == 1)

        // status: READY through dst1; dst2 has no pool and is not an export client.
        let after = try await site.status()
        #expect(after.ready && after.sharedDisks == ["vda", "vdb"] && after.localDisks.isEmpty)
        let views = Dictionary(uniqueKeysWithValues: after.hosts.map { ($0.host, $0) })
        #expect(views["src"]?.definesVM == true && views["src"]?.seesDisks == true && views["src"]?.problem == nil)
        #expect(views["dst1"]?.canRun == true && views["dst1"]?.problem == nil)
        #expect(views["dst2"]?.seesDisks == false && views["dst2"]?.exported == false && views["dst2"]?.canRun == false)
        #expect(views["dst2"]?.problem == "\(site.root)/roamer/roamer.qcow2 is not under the target path of a netfs pool of this host; VERIFY reads shared copies only")
    }

    @Test("share to two destinations: status READY with every host seeing the disks; a second share changes nothing")
    func shareToTwo() async throws {
        let site = try await RealSite()
        let events = Events()
        let first = try await site.share(ShareOptions(vm: vm), events: events)
        #expect(first.ready && first.destinations == ["dst1", "dst2"], "every other compute host by default")
        #expect(first.changed == ["export", "pool on src", "pool on dst1", "pool on dst2", "copy", "adopt"])
        for dest in ["dst1", "dst2"] {
            #expect(events.events.contains(.step(.verify, host: dest, detail: "sees 2 copy(ies) and src's nonce")))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: site.root + "/roamer").count == 2, "both nonces were read and removed")

        let status = try await site.status()
        #expect(status.ready && status.owner == "src" && status.sharedDisks == ["vda", "vdb"])
        #expect(status.hosts.map(\.host) == ["src", "dst1", "dst2"])
        for view in status.hosts {
            #expect(view.seesDisks && view.exported && view.canRun && view.problem == nil, "\(view.host): \(view.problem ?? "")")
        }
        #expect(try await StatusFlow(inventory: site.inventory, caller: site.caller).sharedVMs() == [vm])

        let exports = site.sandbox.read(site.sandbox.exports)
        let applied = site.applier.applied.count
        let adopted = try await site.domain()
        let second = try await site.share(ShareOptions(vm: vm))
        #expect(second.changed.isEmpty && second.ready)
        #expect(second.disks.isEmpty, "COPY skips disks already on the share")
        #expect(ShareFormatting.summary(second).hasPrefix("\(vm) was already shared; nothing changed."))
        #expect(site.sandbox.read(site.sandbox.exports) == exports && site.applier.applied.count == applied)
        #expect(try await site.domain() == adopted)
        #expect(try await site.status() == status)
    }

    @Test("a copy that is not what COPY read is caught by the storage agent's CHECKSUM; the VM stays on its local disks")
    func damagedCopy() async throws {
        let site = try await RealSite(damageCopies: true)
        let qcow2 = try RealSite.digest(site.qcow2)
        let path = site.root + "/roamer/roamer.qcow2"
        do {
            let result = try await site.share(ShareOptions(vm: vm, to: ["dst1"]))
            Issue.record("share adopted a damaged copy: \(result)")
        } catch {
            let damaged = try RealSite.digest(path)
            #expect(damaged.digest != qcow2.digest && damaged.size == qcow2.size)
            #expect(error.step == .checksum && error.host == "store" && error.error.code == .invalidState)
            #expect(error.error.message == "\(path) on store has digest \(damaged.digest) and size \(damaged.size); the copy reported digest \(qcow2.digest) and size \(qcow2.size)")
            #expect(error.remedy == "remove the damaged copy on store and run share again")
        }
        #expect(try await site.domain().disks.filter(\.isDisk).map(\.source) == [site.qcow2, site.raw], "not adopted")
    }

    @Test("unshare: LOCALIZE copies back from the shared directory, the domain is defined onto the local copies, clients dropped")
    func unshare() async throws {
        let site = try await RealSite()
        _ = try await site.share(ShareOptions(vm: vm))
        // The VM ran from the share meanwhile (on dst1, say): its data disk changed there.
        let sharedQcow2 = site.root + "/roamer/roamer.qcow2", sharedRaw = site.root + "/roamer/roamer-data.img"
        try RealSite.writeData(sharedRaw, size: 5 << 20, pattern: "ran on dst1 ")
        let qcow2 = try RealSite.digest(sharedQcow2), raw = try RealSite.digest(sharedRaw)
        #expect(try raw.digest != RealSite.digest(site.raw).digest, "the shared copy differs from the original now")

        let events = Events()
        let result = try await site.unshare(events: events)
        let local = site.localDirectory
        #expect(result.done && result.host == "src")
        #expect(result.changed == ["localize", "unexport"])
        #expect(result.disks == [
            LocalizedDisk(disk: "vda", from: sharedQcow2, to: local + "/roamer.qcow2", size: qcow2.size, digest: qcow2.digest),
            LocalizedDisk(disk: "vdb", from: sharedRaw, to: local + "/roamer-data.img", size: raw.size, digest: raw.digest),
        ])
        #expect(try Data(contentsOf: URL(fileURLWithPath: local + "/roamer-data.img")) == Data(contentsOf: URL(fileURLWithPath: sharedRaw)))
        #expect(try RealSite.digest(local + "/roamer-data.img").digest == raw.digest)
        // The domain is defined onto the local copies (in src's test driver).
        let domain = try await site.domain()
        #expect(domain.disks.filter(\.isDisk).map(\.source) == [local + "/roamer.qcow2", local + "/roamer-data.img"])
        #expect(events.events.contains(.step(.verify, host: "src",
                                              detail: "every disk of \(vm) is local (\(local)/roamer.qcow2, \(local)/roamer-data.img)")))
        // No VM on the share is left anywhere: every client is dropped; the copies stay.
        #expect(result.removedClients == ["src", "dst1", "dst2"] && result.remainingClients.isEmpty)
        #expect(try await site.exportClients().isEmpty)
        #expect(result.leftOnShare == ["store:" + sharedQcow2, "store:" + sharedRaw])
        #expect(FileManager.default.fileExists(atPath: sharedQcow2) && FileManager.default.fileExists(atPath: sharedRaw))

        let status = try await site.status()
        #expect(!status.ready && status.sharedDisks.isEmpty && status.localDisks == ["vda", "vdb"])
        #expect(try await StatusFlow(inventory: site.inventory, caller: site.caller).sharedVMs().isEmpty)

        let again = try await site.unshare()
        #expect(again.done && again.changed.isEmpty && again.disks.isEmpty && again.removedClients.isEmpty)
    }

    @Test("unshare keeps the export client a shared VM of another host still needs")
    func unshareKeepsClient() async throws {
        let site = try await RealSite(residentOnDst2: true)
        _ = try await site.share(ShareOptions(vm: vm))
        #expect(try await StatusFlow(inventory: site.inventory, caller: site.caller).sharedVMs() == ["resident", vm])
        let events = Events()
        let result = try await site.unshare(events: events)
        #expect(result.done && result.changed == ["localize", "unexport"])
        #expect(result.removedClients == ["src", "dst1"] && result.remainingClients == ["dst2"])
        #expect(events.events.contains(.note("dst2 stays an export client: shared VM(s) resident")))
        #expect(try await site.exportClients() == ["dst2"])
    }

    /// The libnfs attach mode reaches the storage through libnfs on every compute host:
    /// POOL-ENSURE attach=libnfs proves it can mount the export, VERIFY and ADOPT stat
    /// and read the copies there. Unit tests have no NFS server (the site's is
    /// 127.0.0.1, where nothing listens), so these steps fail; the test pins the real
    /// handlers' errors instead of faking an NFS server.
    /// libnfs's own words (`nfs_get_error`) when its synchronous mount finds the
    /// connection to the server's portmapper refused: the agents pass them on verbatim.
    static let refused = "nfs_service failed"

    @Test("check's migration-ports questions on the real handlers: PORT-LISTEN on the destination, PORT-PROBE with the bandwidth exchange from the source")
    func migrationPorts() async throws {
        let site = try await RealSite()
        let uri = MigrationURI("qemu+tcp://127.0.0.1/system")!
        let range = MigrationURI.defaultPorts
        // The requests CheckFlow sends for a live migration of a running VM with a 1 s window.
        let listen = try await site.caller.send(site.host("dst1"), PortListenRequest(low: range.lowerBound, high: range.upperBound, seconds: 5))
        #expect(range.contains(listen.port))
        let probe = try await site.caller.send(site.host("src"), PortProbeRequest(host: uri.host, ports: [listen.port], bandwidthPort: listen.port, seconds: 1),
                                               timeout: .seconds(30))
        let result = CheckEvaluation.migrationPorts(source: "src", destination: "dst1", uri: uri, range: range,
                                                    listen: .success(listen), probe: .success(probe))
        #expect(probe.ports.first { $0.port == listen.port }?.reachable == true, "\(probe)")
        #expect(probe.bytesPerSecond.map { $0 > 0 } == true, "the bandwidth exchange measured nothing: \(probe)")
        // Port 16509 is not probed here (no port= for it): the evaluation says so.
        #expect(result.result == .fail && result.sentence.contains("did not report port 16509"))
    }

    @Test("libnfs attach mode: the steps that need a live NFS server fail with the agents' own errors")
    func libnfs() async throws {
        let site = try await RealSite()
        let root = site.root, server = RealSite.nfsServer
        do {
            let result = try await site.share(ShareOptions(vm: vm, to: ["dst1"], attach: .libnfs))
            Issue.record("share in libnfs mode succeeded without an NFS server: \(result)")
        } catch {
            // The first host in order (the source) answers POOL-ENSURE attach=libnfs with
            // the libnfs probe's failure: mounting the export needs a live NFS server.
            #expect(error.step == .pool && error.host == "src" && error.error.code == .unavailable)
            #expect(error.error.message == "cannot reach \(server):\(root) through libnfs (NFSv3): \(Self.refused); check that it is exported to this host")
            #expect(error.remedy == FlowContext.remedy(error.error))
        }
        // The export was made (the step before); nothing was copied or redefined.
        #expect(try await site.exportClients() == ["dst1", "src"])
        #expect(!FileManager.default.fileExists(atPath: root + "/roamer"))
        #expect(try await site.domain().disks.filter(\.isDisk).map(\.source) == [site.qcow2, site.raw])

        // COPY in libnfs mode (server= export=, the stand-in) puts the copies in place;
        // VERIFY through libnfs on a destination, and ADOPT attach=libnfs on the source,
        // then fail where they mount the export through libnfs.
        let share = ShareRef.nfs(server: server, export: root)
        let copied = try await site.caller.send(site.host("src"), CopyRequest(domain: vm, share: share))
        #expect(copied.copies.map(\.path) == ["roamer/roamer.qcow2", "roamer/roamer-data.img"])
        #expect(copied.share.attach == .libnfs && copied.share.export == root)
        let verify = await #expect(throws: AgentError.self) {
            try await site.caller.send(site.host("dst1"), VerifyRequest(path: "roamer/roamer.qcow2", share: share))
        }
        #expect(verify?.code == .unavailable)
        #expect(verify?.message == "cannot mount \(server):\(root) through libnfs: \(Self.refused)")
        let adopt = await #expect(throws: AgentError.self) {
            try await site.caller.send(site.host("src"), AdoptRequest(domain: vm, share: share, attach: .libnfs))
        }
        #expect(adopt?.code == .unavailable)
        #expect(adopt?.message == "cannot mount \(server):\(root) through libnfs: \(Self.refused)")
        #expect(try await site.domain().disks.filter(\.isDisk).map(\.source) == [site.qcow2, site.raw], "ADOPT changed nothing")
    }
}
