import AgentAPI
import AgentProtocol

/// What `storagectl status VM` found, asked fresh from the agents.
public struct VMStatus: Sendable, Codable, Equatable {
    public struct HostView: Sendable, Codable, Equatable {
        public var host: String
        public var definesVM: Bool
        public var exported: Bool
        public var seesDisks: Bool
        public var canRun: Bool
        public var problem: String?
    }
    public var vm: String
    public var owner: String?
    public var state: String?
    public var storage: String
    public var export: String
    public var sharedDisks: [String]
    public var localDisks: [String]
    public var hosts: [HostView]
    /// Every disk is on the share and at least one other host can run the VM.
    public var ready: Bool
    /// Why the VM's status could not be worked out (it is then not ready).
    public var problem: String? = nil
    /// A VM on a CephFS gateway cluster: each gateway's state (nil for one NFS server).
    public var gateways: [GatewayState]? = nil
    /// What keeps the cluster from serving the VM (a gateway down with CephFS sessions
    /// left, no gateway holding the floating address), and what to do (the VM is then
    /// not ready).
    public var gatewayProblem: String? = nil
    public var remedy: String? = nil
}

/// Computes a VM's status from the agents' answers: locate, the export's clients, and
/// each compute host's view of the shared disks (VERIFY through its own pool or libnfs).
public struct StatusFlow: Sendable {
    public let context: FlowContext

    public init(inventory: Inventory, caller: any AgentCaller) {
        context = FlowContext(inventory: inventory, caller: caller)
    }

    public func status(_ vm: String) async throws(AgentError) -> VMStatus {
        let location: VMLocation
        do { location = try await context.locate(vm, from: nil) } catch { throw error.error }
        // The storage host the VM's disks are on (of several in the inventory); for a
        // gateway cluster, its serving gateway.
        let (context, states) = await self.context.onSite(of: location.disks).servingGateway()
        let inventory = context.inventory, root = inventory.exportRoot
        let disks = location.disks.filter(\.isDisk)
        let shared = disks.filter(context.isShared)
        let local = disks.filter { !context.isShared($0) }
        let clients = Set(try await context.caller.send(inventory.storage, ExportsQuery()).managedClients(of: root))
        async let cluster = context.clusterHealth(states: states)
        let views = await FlowContext.concurrently(inventory.compute) { [context] h in
            await Self.view(context, host: h, owner: location.host, exported: clients.contains(h.name), shared: shared, local: local)
        }
        let hosts = views.compactMap { try? $0.get() }
        var ready = local.isEmpty && !shared.isEmpty && hosts.contains { !$0.definesVM && $0.canRun }
            && hosts.contains { $0.definesVM && $0.seesDisks }
        var status = VMStatus(vm: vm, owner: location.host.name, state: location.state.rawValue, storage: inventory.site.name, export: root,
                              sharedDisks: shared.map(\.target), localDisks: local.map(\.target), hosts: hosts, ready: ready)
        if let health = await cluster {
            status.gateways = health.gateways
            if let (sentence, remedy) = health.problem(vm: vm) {
                status.gatewayProblem = sentence
                status.remedy = remedy
                ready = false
            }
            status.ready = ready
        }
        return status
    }

    /// One compute host's view: does it see every shared disk, and so can it run the VM.
    static func view(_ context: FlowContext, host h: Inventory.Host, owner: Inventory.Host, exported: Bool,
                     shared: [DiskRecord], local: [DiskRecord]) async -> VMStatus.HostView {
        var view = VMStatus.HostView(host: h.name, definesVM: h == owner, exported: exported, seesDisks: false, canRun: false, problem: nil)
        guard !shared.isEmpty else { view.problem = "no disk on the share"; return view }
        let root = context.inventory.exportRoot, pool = context.inventory.poolName
        let seen = await FlowContext.capture { () async throws -> Void in
            for d in shared {
                let request: VerifyRequest
                if d.isNetwork {
                    guard let relative = SharePath.relative(d.source, root: root) else {
                        throw AgentError(.invalidState, "\(d.source) is not under the export \(root)")
                    }
                    request = VerifyRequest(path: relative, share: .pool(pool))
                } else {
                    request = VerifyRequest(path: d.source)
                }
                _ = try await context.caller.send(h, request)
            }
        }
        switch seen {
        case .success: view.seesDisks = true
        case .failure(let e): view.problem = e.message
        }
        view.canRun = view.seesDisks && (view.exported || view.definesVM) && local.isEmpty
        if view.seesDisks, !view.exported { view.problem = "not an export client of \(root)" }
        return view
    }

    /// Every shared VM of the inventory: the domains the compute agents report with a
    /// disk on the share (`DOMAINS`, `shared=yes`), each name once, sorted.
    public func sharedVMs() async throws(AgentError) -> [String] {
        let caller = context.caller, compute = context.inventory.compute
        let answers = await FlowContext.concurrently(compute) { h in try await caller.send(h, DomainsQuery()) }
        var names: [String] = []
        for (h, answer) in zip(compute, answers) {
            switch answer {
            case .failure(let e): throw AgentError(e.code, "\(h.name): \(e.message)")
            case .success(let domains):
                for d in domains where d.shared && !names.contains(d.name) { names.append(d.name) }
            }
        }
        return names.sorted()
    }

    /// `status` of every shared VM.
    public func statusOfAll() async throws(AgentError) -> [VMStatus] {
        var all: [VMStatus] = []
        for vm in try await sharedVMs() {
            do {
                all.append(try await status(vm))
            } catch {
                all.append(VMStatus(vm: vm, owner: nil, state: nil, storage: context.inventory.site.name, export: context.inventory.exportRoot,
                                    sharedDisks: [], localDisks: [], hosts: [], ready: false,
                                    problem: "\(error.message) [\(error.code.rawValue)]"))
            }
        }
        return all
    }
}
