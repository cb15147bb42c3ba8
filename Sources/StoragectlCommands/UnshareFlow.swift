import AgentProtocol
import AgentRuntime
import Foundation

public struct UnshareOptions: Sendable {
    public var vm: String
    public var from: String?

    public init(vm: String, from: String? = nil) {
        self.vm = vm
        self.from = from
    }
}

/// One disk brought back to local storage.
public struct LocalizedDisk: Sendable, Equatable, Codable {
    public var disk: String
    public var from: String
    public var to: String
    public var size: UInt64
    /// The content digest of the local copy (docs/protocol.md, "Content digest").
    public var digest: String
}

/// The result of an `unshare` run.
public struct UnshareResult: Sendable, Codable, Equatable {
    public var vm: String
    public var host: String
    public var storage: String
    public var export: String
    public var disks: [LocalizedDisk]
    /// Steps that changed something; empty when the run changed nothing.
    public var changed: [String]
    /// Export clients removed, and the ones left (other shared VMs need them, or they are
    /// not compute hosts of the inventory).
    public var removedClients: [String]
    public var remainingClients: [String]
    /// The copies left on the share (`STORAGE-HOST:PATH`): nothing is deleted.
    public var leftOnShare: [String]
    public var done: Bool
}

/// `storagectl unshare`: the way back. The VM's disks are copied from the share to the
/// local storage of the host that defines it (LOCALIZE, verified), its definition is
/// put back onto them, the result is checked (DOMAIN), and export clients that no
/// shared VM needs any more are removed (DOMAINS on each client, UNEXPORT). Every step
/// is idempotent; the copies on the share are kept.
public struct UnshareFlow: Sendable {
    public let inventory: Inventory
    public let caller: any AgentCaller
    public let emit: @Sendable (ShareEvent) -> Void

    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void) {
        self.inventory = inventory
        self.caller = caller
        self.emit = emit
    }

    func isShared(_ d: DiskFact) -> Bool {
        d.device == "disk" && (d.type == "network" || Self.isWithin(d.source, inventory.exportRoot))
    }

    static func isWithin(_ path: String, _ root: String) -> Bool { path.hasPrefix(root + "/") }

    public func run(_ options: UnshareOptions) async throws(ShareFailure) -> UnshareResult {
        let storage = inventory.storage
        let root = inventory.exportRoot
        let caller = self.caller
        let emit = self.emit
        let share = ShareFlow(inventory: inventory, caller: caller, emit: emit)

        // 1. locate, and refuse a running VM before anything changes
        let (owner, disks, state) = try await share.locate(ShareOptions(vm: options.vm, from: options.from))
        let shared = disks.filter(isShared)
        emit(.step(.locate, host: owner.name, detail: "\(options.vm) is defined here (\(state)); \(shared.count) disk(s) on the share"))
        if !shared.isEmpty && state != "shut-off" {
            throw ShareFailure(step: .preflight, host: owner.name,
                               error: AgentError(.invalidState, "\(options.vm) is \(state); its disks can only be copied back while it is shut off"),
                               remedy: "shut it down (virsh shutdown \(options.vm)), then run unshare again")
        }
        var result = UnshareResult(vm: options.vm, host: owner.name, storage: storage.name, export: root, disks: [], changed: [],
                                   removedClients: [], remainingClients: [], leftOnShare: [], done: false)

        // 2. LOCALIZE on the owner: mount mode through the pool, libnfs mode by server/export
        if !shared.isEmpty {
            var localize = Request("LOCALIZE", ["domain": options.vm])
            if shared.contains(where: { $0.type == "network" }) {
                localize.fields.append("server", inventory.nfsServer)
                localize.fields.append("export", root)
            } else {
                localize.fields.append("pool", inventory.poolName)
            }
            let answer = try await share.step(.localize, owner, remedy: "run unshare again: the shared copies are untouched until a local copy is verified") { () throws(AgentError) in
                try await caller.ok(owner, localize, timeout: .seconds(24 * 3600)) { line in
                    if case .progress(let f) = line {
                        emit(.progress(disk: f["disk"] ?? "?", done: UInt64(f["done"] ?? "") ?? 0,
                                       total: UInt64(f["total"] ?? "") ?? 0, bytesPerSecond: Double(f["rate"] ?? "") ?? 0))
                    }
                }
            }
            for row in answer.data where row["to"] != nil {
                result.disks.append(LocalizedDisk(disk: row["disk"] ?? "", from: row["from"] ?? "", to: row["to"] ?? "",
                                                  size: UInt64(row["size"] ?? "") ?? 0, digest: row["digest"] ?? ""))
            }
            let ok = (try? answer.get()) ?? [:]
            if ok["changed"] == "yes" { result.changed.append("localize") }
            result.leftOnShare = result.disks.map { storage.name + ":" + Self.sharePath($0.from, root: root) }
            emit(.step(.localize, host: owner.name, detail: "\(result.disks.count) disk(s) copied to local storage and verified; \(options.vm) redefined onto them"))
        }

        // 3. verify: every disk of the VM is local now
        let (_, after, _) = try await share.locate(ShareOptions(vm: options.vm, from: owner.name))
        if let left = after.first(where: isShared) {
            throw ShareFailure(step: .verify, host: owner.name,
                               error: AgentError(.invalidState, "disk \(left.target) of \(options.vm) is still on the share (\(left.source))"),
                               remedy: "run unshare again; if it persists: storagectl call \(owner.name) DOMAIN name=\(options.vm)")
        }
        emit(.step(.verify, host: owner.name, detail: "every disk of \(options.vm) is local (\(after.filter { $0.device == "disk" }.map(\.source).joined(separator: ", ")))"))

        // 4. export clients no shared VM needs any more
        let exports = try await share.step(.unexport, storage) { () throws(AgentError) in
            try await caller.ok(storage, Request("EXPORTS")).data
        }
        let clients = exports.filter { $0["owner"] == "storagectl" && $0["path"] == root }
            .flatMap { ($0["clients"] ?? "").split(separator: ",").map(String.init) }
        let candidates = inventory.compute.filter { clients.contains($0.name) }
        let listed = await ShareFlow.concurrently(candidates) { h in try await caller.ok(h, Request("DOMAINS")).data }
        var unneeded: [String] = []
        var keptFor: [String: [String]] = [:]
        for (h, r) in zip(candidates, listed) {
            switch r {
            case .failure(let e):
                throw ShareFailure(step: .unexport, host: h.name, error: e,
                                   remedy: "\(options.vm) is on local disks already; run unshare again once \(h.name)'s agent answers (storagectl hosts) to drop export clients no shared VM needs")
            case .success(let rows):
                let sharedHere = rows.filter { $0["shared"] == "yes" }.compactMap { $0["name"] }
                if sharedHere.isEmpty { unneeded.append(h.name) } else { keptFor[h.name] = sharedHere }
            }
        }
        if !unneeded.isEmpty {
            var unexport = Request("UNEXPORT", ["path": root])
            for c in unneeded { unexport.fields.append("client", c) }
            let answer = try await share.step(.unexport, storage) { () throws(AgentError) in try await caller.ok(storage, unexport).get() }
            if answer["changed"] == "yes" { result.changed.append("unexport") }
            result.removedClients = unneeded
            result.remainingClients = (answer["clients"] ?? "").split(separator: ",").map(String.init)
            emit(.step(.unexport, host: storage.name, detail: "\(root) no longer exported to \(unneeded.joined(separator: ", ")) (no shared VM there)"))
        } else {
            result.remainingClients = clients
        }
        for (h, vms) in keptFor.sorted(by: { $0.key < $1.key }) {
            emit(.note("\(h) stays an export client: shared VM(s) \(vms.joined(separator: ", "))"))
        }
        result.done = true
        return result
    }

    /// The path of a shared copy on the storage host, from the disk source the VM had:
    /// a file under the export root (mount mode) or `nfs://SERVER/PATH` (libnfs).
    static func sharePath(_ from: String, root: String) -> String {
        if from.hasPrefix("nfs://") {
            let rest = from.dropFirst("nfs://".count)
            if let slash = rest.firstIndex(of: "/") { return String(rest[slash...]) }
        }
        return from
    }
}

/// Pure renderings of unshare's output.
public enum UnshareFormatting {
    public static func summary(_ r: UnshareResult) -> String {
        var s = r.changed.isEmpty ? "\(r.vm) was already on local disks of \(r.host); nothing changed.\n"
            : r.changed.contains("localize") ? "\(r.vm) is on local disks of \(r.host) again.\n"
            : "\(r.vm) was already on local disks of \(r.host).\n"
        for d in r.disks { s += "  \(d.disk): \(d.to) (\(Bytes.human(d.size))\(d.digest.isEmpty ? "" : ", digest \(d.digest.prefix(16))…"))\n" }
        if !r.removedClients.isEmpty {
            s += "export \(r.storage):\(r.export) no longer lists \(r.removedClients.joined(separator: ", "))"
                + (r.remainingClients.isEmpty ? " (no client left)" : "; still exported to \(r.remainingClients.joined(separator: ", "))") + ".\n"
        }
        if !r.leftOnShare.isEmpty {
            s += "the copies on the share were kept (nothing is deleted); remove them when no longer needed:\n"
            for p in r.leftOnShare { s += "  \(p)\n" }
        }
        return s
    }

    public static func json(_ r: UnshareResult) throws -> String {
        String(decoding: try ShareFormatting.encoder().encode(r), as: UTF8.self)
    }
}
