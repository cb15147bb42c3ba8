import AgentAPI
import AgentProtocol

extension UnshareSteps {
    /// Export clients that no shared VM needs any more are removed (DOMAINS on each
    /// client, UNEXPORT); the ones still needed are named.
    @Sendable static func unexport(_ context: FlowContext, _ run: inout UnshareRun) async throws(ShareFailure) {
        let inventory = context.inventory, storage = inventory.storage, root = inventory.exportRoot
        let exports = try await context.send(.unexport, storage, ExportsQuery())
        let clients = exports.managedClients(of: root)
        let candidates = inventory.compute.filter { clients.contains($0.name) }
        let caller = context.caller
        let listed = await FlowContext.concurrently(candidates) { h in try await caller.send(h, DomainsQuery()) }
        var unneeded: [String] = []
        var keptFor: [(String, [String])] = []
        for (h, r) in zip(candidates, listed) {
            switch r {
            case .failure(let e):
                throw ShareFailure(step: .unexport, host: h.name, error: e,
                                   remedy: "\(run.options.vm) is on local disks already; run unshare again once \(h.name)'s agent answers (storagectl hosts) to drop export clients no shared VM needs")
            case .success(let domains):
                var sharedHere = domains.filter(\.shared).map(\.name)
                // With several storage hosts, only the VMs with a disk on this one keep
                // the host an export client of it (DOMAIN of each, on that host).
                if inventory.storageSites.count > 1, !sharedHere.isEmpty {
                    sharedHere = try await onThisSite(context, host: h, vms: sharedHere, vm: run.options.vm)
                }
                if sharedHere.isEmpty { unneeded.append(h.name) } else { keptFor.append((h.name, sharedHere)) }
            }
        }
        if !unneeded.isEmpty {
            // On the storage host, or on every gateway of a cluster.
            let answers = try await context.sendToEveryAgent(.unexport, UnexportRequest(path: root, clients: unneeded),
                                                             remedy: context.gatewayRemedy)
            for (host, answer) in answers {
                if answer.changed { run.result.changed.append(answers.count > 1 ? "unexport on \(host.name)" : "unexport") }
                run.result.remainingClients = answer.clients
                context.emit(.step(.unexport, host: host.name, detail: "\(root) no longer exported to \(unneeded.joined(separator: ", ")) (no shared VM there)"))
            }
            run.result.removedClients = unneeded
        } else {
            run.result.remainingClients = clients
        }
        for (h, vms) in keptFor.sorted(by: { $0.0 < $1.0 }) {
            context.emit(.note("\(h) stays an export client: shared VM(s) \(vms.joined(separator: ", "))"))
            // A definition of this VM on another host (left by migrate --persistent) still
            // names the shared image, which is stale from now on.
            if h != run.owner.name, vms.contains(run.options.vm) {
                run.result.staleDefinitions.append(h)
                context.emit(.note("warning: \(h) also defines \(run.options.vm) on the shared image (left by a migration), which is stale now that \(run.options.vm) runs from local disks on \(run.owner.name); starting it there would boot the old data: remove that definition (on \(h): virsh undefine \(run.options.vm))"))
            }
        }
    }
}

extension UnshareSteps {
    /// The VMs of `vms` that `host` defines with a disk on the context's storage host.
    static func onThisSite(_ context: FlowContext, host: Inventory.Host, vms: [String], vm: String) async throws(ShareFailure) -> [String] {
        let inventory = context.inventory
        var kept: [String] = []
        for name in vms {
            let domain: DomainQuery.Answer
            do {
                domain = try await context.send(.unexport, host, DomainQuery(name: name), timeout: .seconds(30),
                                                remedy: "\(vm) is on local disks already; run unshare again once \(host.name)'s agent answers (storagectl hosts) to drop export clients no shared VM needs")
            } catch where error.error.code == .notFound {
                continue  // undefined since DOMAINS listed it
            }
            if StoragePlacement.sites(of: domain.disks, in: inventory.storageSites).contains(where: { $0.name == inventory.site.name }) {
                kept.append(name)
            }
        }
        return kept
    }
}
