import AgentAPI
import AgentProtocol

/// One gateway of a CephFS cluster as its storage agent reported it.
public struct GatewayState: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        /// Healthy and holding the cluster's floating address: compute hosts attach through it.
        case serving
        /// Healthy, not holding the floating address.
        case standby
        /// Its agent does not answer, or reports a failed check (its NFS server, say).
        case down
    }

    public var name: String
    public var state: State
    /// Why it is down, or what it said.
    public var detail: String

    public init(name: String, state: State, detail: String) {
        self.name = name
        self.state = state
        self.detail = detail
    }

    /// The state of one gateway from its HEALTH answer (or the failure to get one). Pure.
    public static func from(_ name: String, _ health: Result<HealthQuery.Answer, AgentError>) -> GatewayState {
        switch health {
        case .failure(let e):
            return GatewayState(name: name, state: .down, detail: "its storage agent does not answer: \(e.message)")
        case .success(let h):
            let failed = h.checks.filter { !$0.ok }
            if !failed.isEmpty {
                return GatewayState(name: name, state: .down,
                                    detail: failed.map { "\($0.name): \($0.detail)" }.joined(separator: "; "))
            }
            let floating = h.checks.first { $0.name == "floating-address" }
            if floating?.facts["floating"] == "held" {
                return GatewayState(name: name, state: .serving, detail: floating?.detail ?? "holds the floating address")
            }
            return GatewayState(name: name, state: .standby, detail: floating?.detail ?? "healthy")
        }
    }
}

/// What `share --repair` did on a gateway cluster.
public struct RepairResult: Sendable, Codable, Equatable {
    public var vm: String
    public var storage: String
    /// The gateway compute hosts attach through now (it holds the floating address).
    public var serving: String?
    public var gateways: [GatewayState]
    /// Down gateway -> CephFS sessions evicted.
    public var evicted: [String: Int]
    /// Healthy gateways whose export was brought in line (EXPORT changed something).
    public var reexported: [String]
    /// Compute hosts that reach the floating address's NFS server.
    public var reachable: [String]
    public var ready: Bool
}

extension FlowContext {
    /// HEALTH of every gateway of the selected site's cluster, at once (none for one NFS server).
    func gatewayStates() async -> [GatewayState] {
        let site = inventory.site, caller = self.caller
        guard site.isCluster else { return [] }
        let answers = await Self.concurrently(site.gateways) { g in try await caller.send(g, HealthQuery(), timeout: .seconds(10)) }
        return zip(site.gateways, answers).map { GatewayState.from($0.name, $1) }
    }

    /// This context with the cluster's agent set to the gateway that serves (healthy and
    /// holding the floating address), else the first healthy one; unchanged for one NFS
    /// server. Also the gateways' states (empty for one NFS server).
    func servingGateway() async -> (FlowContext, [GatewayState]) {
        let site = inventory.site
        guard site.isCluster else { return (self, []) }
        let states = await gatewayStates()
        let chosen = states.first { $0.state == .serving } ?? states.first { $0.state == .standby }
        guard let chosen, let gateway = site.gateways.first(where: { $0.name == chosen.name }) else { return (self, states) }
        var narrowed = site
        narrowed.host = gateway
        return (on(narrowed), states)
    }

    /// `verb` on the storage agent of every host holding the site's exports (the one
    /// storage host, or every gateway of a cluster) at once; the first failure, in the
    /// inventory's order, names its gateway.
    func sendToEveryAgent<V: AgentVerb>(_ step: ShareStep, _ verb: V, remedy: (Inventory.Host, AgentError) -> String) async throws(ShareFailure) -> [(Inventory.Host, V.Answer)] {
        let agents = inventory.site.agents, caller = self.caller
        let answers = await Self.concurrently(agents) { h in try await caller.send(h, verb) }
        var result: [(Inventory.Host, V.Answer)] = []
        for (h, r) in zip(agents, answers) {
            switch r {
            case .failure(let e):
                throw ShareFailure(step: step, host: h.name, error: e, remedy: remedy(h, e))
            case .success(let answer): result.append((h, answer))
            }
        }
        return result
    }

    /// The remedy for a gateway whose agent failed a step every gateway must take.
    func gatewayRemedy(_ h: Inventory.Host, _ e: AgentError) -> String {
        guard inventory.site.isCluster else { return Self.remedy(e) }
        return "every gateway of \(inventory.site.name) holds the export (any of them may take over the floating address): start \(h.name)'s storage agent and nfs-ganesha, then run the command again; a gateway lost for good comes out of [storage \(inventory.site.name)] in the inventory"
    }
}

/// `storagectl share --repair VM`: after a gateway of the VM's CephFS cluster died, the
/// dead gateway's CephFS sessions are evicted through a healthy gateway (until then the
/// inodes it touched, the VM's disks among them, stay blocked for the MDS's session
/// timeout), every healthy gateway's export is brought in line, and each compute host of
/// the export must reach the floating address. The VM's disks are not touched.
public struct RepairFlow: Sendable {
    public let context: FlowContext

    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void) {
        context = FlowContext(inventory: inventory, caller: caller, emit: emit)
    }

    public func run(vm: String, from: String?) async throws(ShareFailure) -> RepairResult {
        let location = try await context.locate(vm, from: from)
        let sites = StoragePlacement.sites(of: location.disks, in: context.inventory.storageSites)
        guard let site = sites.first else {
            throw ShareFailure(step: .locate, host: location.host.name, error: AgentError(.invalidState, "\(vm) has no disk on shared storage"),
                               remedy: "share it first (storagectl share \(vm))")
        }
        guard site.isCluster else {
            throw ShareFailure(step: .locate, host: site.name,
                               error: AgentError(.invalidArgument, "\(vm) is on \(site.name), one NFS server: --repair is for a gateway cluster ([storage NAME] with gateway lines)"),
                               remedy: "run storagectl share \(vm) to finish or check a share on one NFS server")
        }
        let (context, states) = await self.context.on(site).servingGateway()
        for s in states { context.emit(.step(.locate, host: s.name, detail: "gateway \(s.state.rawValue): \(s.detail)")) }
        guard states.contains(where: { $0.state != .down }) else {
            throw ShareFailure(step: .locate, host: site.name, error: AgentError(.unavailable, "no gateway of \(site.name) is healthy"),
                               remedy: "start nfs-ganesha and the storage agent on one gateway (storagectl hosts names what fails), then run share --repair \(vm) again")
        }
        let through = context.inventory.storage
        var result = RepairResult(vm: vm, storage: site.name, serving: states.first { $0.state == .serving }?.name, gateways: states,
                                  evicted: [:], reexported: [], reachable: [], ready: false)
        // 1. The dead gateways' CephFS sessions, evicted through a healthy one.
        let down = states.filter { $0.state == .down }.map(\.name)
        if !down.isEmpty {
            let sessions = try await context.send(.export, through, CephSessionsQuery(), timeout: .seconds(60),
                                                  remedy: "check that the Ceph cluster answers on \(through.name) (ceph -s) and that its storage agent runs with --backend ganesha-ceph")
            for gateway in down {
                let held = sessions.of(gateway)
                guard !held.isEmpty else {
                    context.emit(.step(.export, host: through.name, detail: "\(gateway) holds no CephFS session (nothing to evict)"))
                    result.evicted[gateway] = 0
                    continue
                }
                let answer = try await context.send(.export, through, CephEvictRequest(host: gateway), timeout: .seconds(90),
                                                    remedy: "evict by hand on a gateway: ceph tell mds.FS:0 client evict id=ID (ids from client ls), then run share --repair \(vm) again")
                result.evicted[gateway] = answer.evicted
                context.emit(.step(.export, host: through.name, detail: "evicted \(answer.evicted) CephFS session(s) of \(gateway) (ids \(held.map { String($0.id) }.joined(separator: ",")))"))
            }
        }
        // 2. Every healthy gateway exports the root to the clients the serving one lists.
        let root = site.exportRoot
        let clients = try await context.send(.export, through, ExportsQuery()).managedClients(of: root)
        if !clients.isEmpty {
            for gateway in site.gateways where states.contains(where: { $0.name == gateway.name && $0.state != .down }) {
                let answer = try await context.send(.export, gateway, ExportRequest(path: root, clients: clients))
                if answer.changed { result.reexported.append(gateway.name) }
                context.emit(.step(.export, host: gateway.name, detail: "\(root) to \(answer.clients.joined(separator: ",")) (\(answer.changed ? "changed" : "unchanged"))"))
            }
        }
        // 3. Each compute host of the export reaches the floating address's NFS server.
        guard let serving = result.serving else {
            throw ShareFailure(step: .verify, host: site.name,
                               error: AgentError(.unavailable, "no healthy gateway of \(site.name) holds the floating address \(site.nfsServer)"),
                               remedy: "check keepalived on the healthy gateways (ip addr on each; its log names the VRRP state), then run share --repair \(vm) again")
        }
        let hosts = context.inventory.compute.filter { clients.contains($0.name) || $0 == location.host }
        let caller = context.caller, server = site.nfsServer
        let probes = await FlowContext.concurrently(hosts) { h in
            try await caller.send(h, PortProbeRequest(host: server, ports: [2049], seconds: 3), timeout: .seconds(15))
        }
        for (h, r) in zip(hosts, probes) {
            switch r {
            case .failure(let e):
                throw ShareFailure(step: .verify, host: h.name, error: e, remedy: FlowContext.remedy(e))
            case .success(let answer):
                guard let p = answer.ports.first, p.reachable else {
                    throw ShareFailure(step: .verify, host: h.name,
                                       error: AgentError(.unavailable, "\(h.name) does not reach \(server):2049 (\(answer.ports.first?.error ?? "no answer")), which \(serving) holds"),
                                       remedy: "check the network between \(h.name) and \(server), then run share --repair \(vm) again")
                }
                result.reachable.append(h.name)
                context.emit(.step(.verify, host: h.name, detail: "reaches \(server):2049 (served by \(serving))"))
            }
        }
        result.ready = true
        return result
    }
}

/// A gateway cluster as `status` and `check` see it: each gateway's state, and the
/// CephFS sessions the down ones still hold (asked through a healthy gateway).
public struct ClusterHealth: Sendable, Equatable {
    public var site: String
    public var floatingAddress: String
    public var gateways: [GatewayState]
    /// Down gateway -> CephFS sessions it still holds.
    public var lingering: [String: Int]
    /// Why the sessions could not be listed (a down gateway, and no healthy one answered).
    public var sessionsError: String?

    public init(site: String, floatingAddress: String, gateways: [GatewayState], lingering: [String: Int] = [:], sessionsError: String? = nil) {
        self.site = site
        self.floatingAddress = floatingAddress
        self.gateways = gateways
        self.lingering = lingering
        self.sessionsError = sessionsError
    }

    public var serving: String? { gateways.first { $0.state == .serving }?.name }
    public var down: [GatewayState] { gateways.filter { $0.state == .down } }

    /// Why a VM on this cluster cannot run or migrate now, and what to do; nil when it
    /// can. Pure.
    public func problem(vm: String) -> (sentence: String, remedy: String)? {
        let repair = "storagectl share --repair \(vm)"
        guard let serving else {
            let states = gateways.map { "\($0.name) \($0.state.rawValue)" }.joined(separator: ", ")
            return ("no healthy gateway of \(site) holds the floating address \(floatingAddress) (\(states))",
                    "start nfs-ganesha and the storage agent on a gateway and check keepalived there (storagectl hosts names what fails), then run \(repair)")
        }
        if !down.isEmpty, let sessionsError {
            return ("\(down.map(\.name).joined(separator: ", ")) of \(site) \(down.count == 1 ? "is" : "are") down, and whether CephFS sessions of \(down.count == 1 ? "it" : "them") linger is unknown: \(sessionsError)",
                    "run \(repair)")
        }
        let held = lingering.filter { $0.value > 0 }.sorted { $0.key < $1.key }
        if !held.isEmpty {
            let what = held.map { "\($0.key) (\($0.value) session(s))" }.joined(separator: ", ")
            return ("gateway \(what) of \(site) is down but CephFS still holds its sessions: the files it had open, \(vm)'s disks among them, stay blocked on \(serving) until they are evicted (the MDS drops them by itself only after its session timeout, about 300 s)",
                    "run \(repair)")
        }
        return nil
    }
}

extension FlowContext {
    /// The cluster health from `states` (``servingGateway()``'s, asked once; nil for one
    /// NFS server): when a gateway is down, CEPH-SESSIONS through this context's
    /// gateway, the serving one.
    func clusterHealth(states: [GatewayState]) async -> ClusterHealth? {
        let site = inventory.site
        guard site.isCluster else { return nil }
        var health = ClusterHealth(site: site.name, floatingAddress: site.nfsServer, gateways: states)
        let down = health.down
        guard !down.isEmpty else { return health }
        guard states.contains(where: { $0.state != .down }) else {
            health.sessionsError = "no healthy gateway to ask"
            return health
        }
        do {
            let sessions = try await caller.send(inventory.storage, CephSessionsQuery(), timeout: .seconds(60))
            for g in down { health.lingering[g.name] = sessions.of(g.name).count }
        } catch {
            health.sessionsError = "CEPH-SESSIONS on \(inventory.storage.name): \(error.message)"
        }
        return health
    }
}
