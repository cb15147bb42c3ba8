import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import ConfigFile
import ContentDigest
import Foundation
import StorageAgentCore
@testable import ComputeAgentCore
@testable import StoragectlCommands
#if canImport(Glibc)
import Glibc
#endif

/// A small site whose agents are the real request handlers, in this process: a storage
/// host `store` (`StorageAgentHandler` on a `Sandbox`: an exports file in a temporary
/// directory, a recording exports applier) and compute hosts `src`, `dst1` and `dst2`
/// (`ComputeAgentHandler` on a `SimHost` each: libvirt's test driver with a node file
/// of its own, so no host sees another's domains or pools).
///
/// Shared storage, as the hosts see it: the storage host's export root is the one
/// directory every compute host's netfs pool has as its target (the test driver's netfs
/// pools mount nothing; the directory simply is the same). The inventory names that
/// directory as `export-root`, so POOL-ENSURE makes it each pool's target.
///
/// The NFS server is `127.0.0.1`, where nothing serves NFS: whatever goes through
/// libnfs (the libnfs attach mode) fails at once with a refused connection.
final class RealSite: @unchecked Sendable {
    static let vm = "roamer"
    static let uuid = "5d1f6c2a-7b3e-4f80-9a11-2c3d4e5f6a7b"
    static let nfsServer = "127.0.0.1"

    let sandbox: Sandbox
    let applier: RecordingApplier
    let storage: StorageAgentHandler
    let src: SimHost
    let dst1: SimHost
    let dst2: SimHost
    let inventory: Inventory
    let caller: InProcessAgents

    /// The export root, which is every compute host's pool target too.
    var root: String { sandbox.root }
    /// Where `roamer`'s disks are on `src` before share, and where LOCALIZE puts them
    /// back: its per-VM directory under the images root (the host's temporary images
    /// directory, never /var/lib/libvirt/images).
    var qcow2: String { src.images + "/roamer.qcow2" }
    var raw: String { src.images + "/roamer-data.img" }
    var localDirectory: String { src.images + "/roamer" }

    /// `residentOnDst2`: dst2 also runs a VM of its own, `resident`, whose disk is in the
    /// shared directory (`EXPORT_ROOT/resident/resident.img`). `damageCopies`: a byte of
    /// every copy changes after COPY took its digests (bad storage, say).
    init(residentOnDst2: Bool = false, damageCopies: Bool = false) async throws {
        let sandbox = try Sandbox()
        let applier = RecordingApplier()
        self.applier = applier
        let storage = try StorageAgentHandler(configuration: sandbox.configuration(clients: ["src", "dst1", "dst2"]), applier: applier)
        // roamer: shut off, on src only, a qcow2 system disk and a raw data disk.
        let src = try await SimHost(fixtures: false, configure: { $0.shareRoots.append(sandbox.root); $0.nfsServers = ["127.0.0.1"] })
        let images = src.images
        let roamer = SimHost.domain(Self.vm, Self.uuid, shutoff: true, disks: """
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='\(images)/roamer.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='\(images)/roamer-data.img'/>
              <target dev='vdb' bus='virtio'/>
            </disk>
            """)
        // The test driver reads the node file when the first request connects: add roamer.
        let node = src.dir + "/host.xml"
        let text = try String(contentsOfFile: node, encoding: .utf8)
        try text.replacingOccurrences(of: "</node>", with: roamer + "\n</node>").write(toFile: node, atomically: true, encoding: .utf8)
        try await SimHost.qemuImg(["create", "-q", "-f", "qcow2", images + "/roamer.qcow2", "16M"])
        // 5 MiB: two content-digest blocks, the second mostly a hole.
        try Self.writeData(images + "/roamer-data.img", size: 5 << 20, pattern: "roamer data ")
        let dst1 = try await SimHost(fixtures: false, configure: { $0.shareRoots.append(sandbox.root); $0.nfsServers = ["127.0.0.1"] })
        let resident = SimHost.domain("resident", "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d", shutoff: false, disks: """
            <disk type='file' device='disk'>
              <driver name='qemu' type='raw'/>
              <source file='\(sandbox.root)/resident/resident.img'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            """)
        let dst2 = try await SimHost(extraDomains: residentOnDst2 ? resident : "", fixtures: false,
                                    configure: { $0.shareRoots.append(sandbox.root); $0.nfsServers = ["127.0.0.1"] })
        inventory = try Inventory(ConfigFile.parse("""
            [storage store]
            agent = tcp:198.18.0.1:7700
            export-root = \(sandbox.root)
            nfs-server = \(Self.nfsServer)
            [compute src]
            agent = tcp:198.18.0.2:7700
            [compute dst1]
            agent = tcp:198.18.0.3:7700
            [compute dst2]
            agent = tcp:198.18.0.4:7700
            """, path: "real-site.conf"))
        caller = InProcessAgents([
            "store": storage,
            "src": SimComputeAgent(host: src, damageCopies: damageCopies),
            "dst1": SimComputeAgent(host: dst1),
            "dst2": SimComputeAgent(host: dst2),
        ])
        self.sandbox = sandbox
        self.storage = storage
        self.src = src
        self.dst1 = dst1
        self.dst2 = dst2
    }

    deinit { sandbox.remove() }

    func host(_ name: String) -> Inventory.Host { inventory.hosts.first { $0.name == name }! }

    func share(_ options: ShareOptions, events: ShareFlowTests.EventLog = .init()) async throws(ShareFailure) -> ShareResult {
        try await ShareFlow(inventory: inventory, caller: caller, emit: { events.append($0) }).run(options)
    }

    func unshare(events: ShareFlowTests.EventLog = .init()) async throws(ShareFailure) -> UnshareResult {
        try await UnshareFlow(inventory: inventory, caller: caller, emit: { events.append($0) }).run(UnshareOptions(vm: Self.vm))
    }

    func status() async throws -> VMStatus {
        try await StatusFlow(inventory: inventory, caller: caller).status(Self.vm)
    }

    /// roamer as `src`'s real compute agent describes it now (DOMAIN).
    func domain() async throws -> DomainQuery.Answer {
        try await caller.send(host("src"), DomainQuery(name: Self.vm))
    }

    /// The clients the real storage agent exports the root to now (EXPORTS).
    func exportClients() async throws -> [String] {
        try await caller.send(host("store"), ExportsQuery()).managedClients(of: root)
    }

    /// A sparse file of `size` bytes: `pattern` repeated over the first 4 MiB + 4 KiB,
    /// a hole after that.
    static func writeData(_ path: String, size: Int, pattern: String) throws {
        let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AgentError(.internal, "cannot create \(path)") }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: (4 << 20) + 4096)
        let p = Array(pattern.utf8)
        for i in bytes.indices { bytes[i] = p[i % p.count] }
        guard write(fd, bytes, bytes.count) == bytes.count, ftruncate(fd, off_t(size)) == 0 else {
            throw AgentError(.internal, "cannot write \(path)")
        }
    }

    /// The content digest (docs/protocol.md) and size of a file, as the agents compute it.
    static func digest(_ path: String) throws -> (size: UInt64, digest: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AgentError(.notFound, "\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw AgentError(.internal, "cannot stat \(path)") }
        return (UInt64(st.st_size), try ContentDigest.ofFile(fd: fd, size: UInt64(st.st_size)))
    }
}

/// A SimHost's compute agent as storagectl's flows meet it: the real
/// `ComputeAgentHandler` for every verb but two, which have small stand-ins here:
///
/// - COPY writes through libnfs to a live NFS server (the copy engine has no other
///   way), and none runs in unit tests. The stand-in makes the plan the real COPY makes
///   (`CopyPlan.make`: the same disks, the same skips, the same `DIR/FILE` names under
///   the export), copies each image with a plain local file copy to
///   `EXPORT_ROOT/DIR/FILE` (the export root is this host's pool target, and the
///   storage host's export path: one directory here), takes the content digest of the
///   copy with `ContentDigest` (the copy engine's function), and answers with the typed
///   `CopyRequest.Answer`. A copy already there with the source's size and digest is
///   not copied again (`already-present=yes`). It does not model a running job,
///   sparse writes, COMMIT verification or the job record.
/// Every other verb, LOCALIZE included, goes to the real handler (LOCALIZE writes under
/// the host's configured images root: its temporary images directory).
struct SimComputeAgent: RequestHandler {
    let host: SimHost
    /// After the answer's digests are taken, the last byte of each copy is changed (so
    /// that the storage agent's CHECKSUM has something to find).
    var damageCopies = false
    var verbs: [String] { host.handler.verbs }

    func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case CopyRequest.verb:
            return try await copyLocally(try CopyRequest(request), context: context, reply: reply)
        default:
            return try await host.handler.handle(request, context: context, reply: reply)
        }
    }

    /// COPY's stand-in (see above): the real plan, a local copy, the real digest.
    func copyLocally(_ copy: CopyRequest, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        try context.authorize(copy)
        let handler = host.handler
        let name = try Validation.domainName(copy.domain)
        let share = try await handler.share(copy.share)
        let session = handler.session
        let plan = try await ComputeWork.run { () throws -> CopyPlan in
            try CopyPlan.make(session, domain: name, share: share, requireShutOff: "COPY")
        }
        // The storage host's directory for the export: the pool's target in mount mode,
        // the export path itself in libnfs mode (the same directory in this test).
        let root = share.target ?? share.export
        let started = Date()
        var rows = plan.skipped.map { CopyRow.skipped(disk: $0.target, source: $0.source, reason: $0.reason) }
        var done: UInt64 = 0
        let total = plan.disks.reduce(UInt64(0)) { $0 + $1.size }
        for disk in plan.disks {
            let destination = root + "/" + disk.relativePath
            let source = try RealSite.digest(disk.source)
            let present = (try? RealSite.digest(destination)).map { $0 == source } ?? false
            if !present {
                let partial = (destination as NSString).deletingLastPathComponent + "/.standin-partial"
                try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent,
                                                        withIntermediateDirectories: true)
                try? FileManager.default.removeItem(atPath: partial)
                try FileManager.default.copyItem(atPath: disk.source, toPath: partial)
                guard rename(partial, destination) == 0 else { throw AgentError(.internal, "cannot rename \(partial) to \(destination)") }
            }
            let copied = try RealSite.digest(destination)
            done += disk.size
            try await reply.progress(TransferProgress(done: done, total: total, rate: nil, disk: disk.target))
            rows.append(.copied(CopiedImage(disk: disk.target, source: disk.source, path: disk.relativePath, size: copied.size,
                                            dataBytes: copied.size, digest: copied.digest, alreadyPresent: present)))
        }
        if damageCopies {
            for disk in plan.disks {
                let path = root + "/" + disk.relativePath
                let fd = open(path, O_WRONLY | O_CLOEXEC)
                defer { close(fd) }
                guard fd >= 0, disk.size > 0, pwrite(fd, [UInt8(0x5a)], 1, off_t(disk.size - 1)) == 1 else {
                    throw AgentError(.internal, "cannot damage \(path)")
                }
            }
        }
        return try await reply.answer(CopyRequest.self, CopyRequest.Answer(
            rows: rows, domain: name, share: share.facts, bytes: total, attached: false, restarted: false,
            seconds: Date().timeIntervalSince(started)))
    }
}
