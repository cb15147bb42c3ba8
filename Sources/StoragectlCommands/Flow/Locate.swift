import AgentAPI
import AgentProtocol
import SafeFiles

/// Where a VM is defined, and what its disks are, as its compute agent reports them.
public struct VMLocation: Sendable {
    public var host: Inventory.Host
    public var domain: DomainQuery.Answer
    public var disks: [DiskRecord] { domain.disks }
    public var state: DomainRunState { domain.state }
}

extension FlowContext {
    /// Asks every compute agent (or only `from`) for the VM; exactly one may define it
    /// (a transient, running-only definition on a migration peer is not the owner), or,
    /// when several do, exactly one may run it (the others keep the shut-off definition
    /// a persistent migration left behind).
    ///
    /// `running`: the place a migration starts from, the one host that runs the VM when
    /// one does, even as a transient domain (a `migrate` without `--persistent` leaves it
    /// running transient on the destination and defined shut off where it came from; a
    /// migration back must start where it runs).
    func locate(_ vm: String, from: String?, running: Bool = false) async throws(ShareFailure) -> VMLocation {
        var candidates = inventory.compute
        if let from {
            guard let h = inventory.compute.first(where: { $0.name == from }) else {
                throw ShareFailure(step: .locate, host: from, error: AgentError(.invalidArgument, "--from \(from) is not a compute host of the inventory"),
                                   remedy: "use one of: \(inventory.compute.map(\.name).joined(separator: ", "))")
            }
            candidates = [h]
        }
        let caller = self.caller
        let query = DomainQuery(name: vm)
        let answers = await Self.concurrently(candidates) { h in try await caller.send(h, query, timeout: .seconds(30)) }
        var found: [VMLocation] = []
        var unreachable: [(Inventory.Host, AgentError)] = []
        for (h, r) in zip(candidates, answers) {
            switch r {
            case .success(let domain): found.append(VMLocation(host: h, domain: domain))
            case .failure(let e) where e.code == .notFound: continue
            case .failure(let e): unreachable.append((h, e))
            }
        }
        let persistent = found.filter(\.domain.persistent)
        var owners = persistent.isEmpty ? found : persistent
        // A persistent migration (`migrate --persistent`, `virsh migrate --persistent`)
        // leaves the shut-off definition on the host the VM left: the one that runs it
        // owns it. A migration (`running`) starts where it runs in any case.
        let active = found.filter { $0.state == .running || $0.state == .paused }
        if (running || owners.count > 1), active.count == 1 { owners = active }
        guard owners.count <= 1 else {
            throw ShareFailure(step: .locate, host: owners.map(\.host.name).joined(separator: ","),
                               error: AgentError(.conflict, "\(vm) is defined on \(owners.map(\.host.name).joined(separator: " and "))"),
                               remedy: "name the host that owns it with --from HOST")
        }
        guard let owner = owners.first else {
            if let (h, e) = unreachable.first {
                throw ShareFailure(step: .locate, host: h.name, error: e,
                                   remedy: "\(vm) was not found on the hosts that answered; check \(h.name) (storagectl hosts) or pass --from HOST")
            }
            throw ShareFailure(step: .locate, host: candidates.map(\.name).joined(separator: ","),
                               error: AgentError(.notFound, "no compute host of the inventory defines \(vm)"),
                               remedy: "check the name (virsh list --all on the hosts) or add the host to the inventory")
        }
        return owner
    }

    /// The destinations named (`--to`), or every other compute host of the inventory.
    func destinations(_ names: [String], vm: String, source: Inventory.Host) throws(ShareFailure) -> [Inventory.Host] {
        if names.isEmpty {
            let others = inventory.compute.filter { $0 != source }
            guard !others.isEmpty else {
                throw ShareFailure(step: .locate, host: source.name, error: AgentError(.invalidArgument, "the inventory has no other compute host to share \(vm) with"),
                                   remedy: "add the migration peers to the inventory as [compute NAME] sections")
            }
            return others
        }
        var result: [Inventory.Host] = []
        for name in names {
            guard let h = inventory.compute.first(where: { $0.name == name }) else {
                throw ShareFailure(step: .locate, host: name, error: AgentError(.invalidArgument, "destination \(name) is not a compute host of the inventory"),
                                   remedy: "use one of: \(inventory.compute.map(\.name).joined(separator: ", "))")
            }
            guard h != source else {
                throw ShareFailure(step: .locate, host: name, error: AgentError(.invalidArgument, "\(name) is the source; a destination must be another host"), remedy: "")
            }
            if !result.contains(h) { result.append(h) }
        }
        return result
    }

    /// A disk on a share: an NFS network disk, or a file under an export root (of any
    /// storage host of the inventory).
    func isShared(_ d: DiskRecord) -> Bool {
        d.isDisk && (d.isNetwork || isUnderExportRoot(d.source))
    }

    /// A file disk on local storage (to be copied into the share).
    func isLocal(_ d: DiskRecord) -> Bool {
        d.isDisk && d.isFile && !isUnderExportRoot(d.source)
    }

    private func isUnderExportRoot(_ path: String) -> Bool {
        SharePath.isUnder(path, inventory.exportRoot) || inventory.storageSites.contains { SharePath.isUnder(path, $0.exportRoot) }
    }
}

/// Paths on the share, as storagectl names them (lexical, through SafeFiles' one
/// "under this root" check: the agents resolve and check again).
enum SharePath {
    /// `path` is strictly below `root`.
    static func isUnder(_ path: String, _ root: String) -> Bool {
        RootedPath.isBelow(path, root: root)
    }

    /// The path of a shared copy on the storage host, from a disk source: a file under
    /// the export root (mount mode), or `nfs://SERVER/PATH` (libnfs), whose PATH is the
    /// export path followed by the file's place in the share.
    static func onServer(_ source: String) -> String {
        if source.hasPrefix("nfs://") {
            let rest = source.dropFirst("nfs://".count)
            if let slash = rest.firstIndex(of: "/") { return String(rest[slash...]) }
        }
        return source
    }

    /// The file's place in the share (`wanderer1/wanderer1.qcow2`), or nil when it is not
    /// under `root`.
    static func relative(_ source: String, root: String) -> String? {
        guard let parts = RootedPath.components(of: onServer(source), under: root), !parts.isEmpty else { return nil }
        return parts.joined(separator: "/")
    }
}
