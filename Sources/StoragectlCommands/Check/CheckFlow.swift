import AgentAPI
import AgentProtocol

public struct CheckOptions: Sendable {
    public var vm: String
    public var to: String
    /// `.live` or `.offline`; nil: live for a running VM, offline for a shut-off one.
    public var mode: MigrationMode?
    /// MiB/s cap the migration will use (`--bandwidth`).
    public var bandwidthMiB: UInt64?
    public var dirtyRateSeconds: Int
    /// The migration will pass `--persistent` (offline always does).
    public var persistent: Bool

    public init(vm: String, to: String, mode: MigrationMode? = nil, bandwidthMiB: UInt64? = nil, dirtyRateSeconds: Int = 1,
                persistent: Bool = false) {
        self.vm = vm
        self.to = to
        self.mode = mode
        self.bandwidthMiB = bandwidthMiB
        self.dirtyRateSeconds = dirtyRateSeconds
        self.persistent = persistent
    }
}

/// `storagectl check VM --to HOST`: asks the source's and the destination's agents
/// everything at once (fresh: nothing is cached), then evaluates each check with a pure
/// function of the answers (``CheckEvaluation``). An agent call that fails makes the
/// checks that needed it fail with the agent's words; only locating the VM can end the
/// run with a ``ShareFailure``.
public struct CheckFlow: Sendable {
    public let context: FlowContext

    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void = { _ in }) {
        context = FlowContext(inventory: inventory, caller: caller, emit: emit)
    }

    init(context: FlowContext) { self.context = context }

    /// The second connections `check` opens to the source: the dirty-rate window and the
    /// port probe do not wait behind (or hold up) the other questions.
    static let dirtyRateConnection = "dirty-rate"
    static let probeConnection = "probe"

    /// Locates the VM and the destination, and resolves the mode.
    func locate(_ options: CheckOptions) async throws(ShareFailure) -> (VMLocation, Inventory.Host, MigrationMode) {
        let location = try await context.locate(options.vm, from: nil, running: true)
        let dest = try context.destinations([options.to], vm: options.vm, source: location.host)[0]
        let state = location.state
        let mode = options.mode ?? (state == .shutOff ? .offline : .live)
        if mode == .live, state == .shutOff {
            throw ShareFailure(step: .check, host: location.host.name,
                               error: AgentError(.invalidState, "\(options.vm) is shut off: a live migration needs a running VM"),
                               remedy: "migrate its definition with --offline --persistent, or start it first")
        }
        if mode == .offline, state != .shutOff {
            throw ShareFailure(step: .check, host: location.host.name,
                               error: AgentError(.invalidState, "\(options.vm) is \(state): an offline migration moves a shut-off VM's definition"),
                               remedy: "migrate it --live, or shut it down first (virsh shutdown \(options.vm))")
        }
        return (location, dest, mode)
    }

    public func run(_ options: CheckOptions) async throws(ShareFailure) -> CheckReport {
        let started = ContinuousClock.now
        let (location, dest, mode) = try await locate(options)
        return await run(options, location: location, destination: dest, mode: mode, started: started)
    }

    /// Every question at once: MIGRATION-FACTS then MIGRATION-TARGET; the storage test;
    /// LIBVIRT-REACH; PORT-LISTEN then PORT-PROBE (with the bandwidth exchange when the
    /// dirty rate is checked); DIRTY-RATE over its window.
    func run(_ options: CheckOptions, location: VMLocation, destination dest: Inventory.Host, mode: MigrationMode,
             started: ContinuousClock.Instant) async -> CheckReport {
        // The storage host the VM's disks are on (of several in the inventory).
        let context = self.context.onSite(of: location.disks), caller = context.caller, inventory = context.inventory
        let source = location.host, vm = options.vm
        let uri = dest.migrationTarget
        let measureDirty = mode != .offline && location.state == .running
        let root = inventory.exportRoot

        @Sendable func ask<V: AgentVerb>(_ host: Inventory.Host, _ verb: V, timeout: Duration = .seconds(30),
                                         connection: String? = nil) async -> Result<V.Answer, AgentCallFailure> {
            do {
                return .success(try await caller.send(host, verb, timeout: timeout, connection: connection))
            } catch {
                return .failure(AgentCallFailure(host: host.name, verb: V.verb, error: error))
            }
        }

        // The dirty-rate window first: it is the longest, and runs beside everything else.
        async let dirty: Result<DirtyRateQuery.Answer, AgentCallFailure>? = measureDirty
            ? ask(source, DirtyRateQuery(name: vm, seconds: options.dirtyRateSeconds), timeout: .seconds(options.dirtyRateSeconds + 30),
                  connection: Self.dirtyRateConnection)
            : nil

        async let factsAndTarget: (Result<MigrationFactsQuery.Answer, AgentCallFailure>, Result<MigrationTargetQuery.Answer, AgentCallFailure>) = {
            let facts = await ask(source, MigrationFactsQuery(name: vm))
            switch facts {
            case .failure(let f): return (facts, .failure(f))
            case .success(let a):
                let pools = a.disks.contains { $0.isDisk && !$0.isNetwork && SharePath.isUnder($0.source, root) } ? [inventory.poolName] : []
                let query = MigrationTargetQuery(name: vm, uuid: a.uuid, memoryBytes: a.memoryBytes, pools: pools, cpu: a.cpu)
                return (facts, await ask(dest, query))
            }
        }()

        async let storage: (Result<UInt64, ShareFailure>?) = Self.verifyStorage(context, vm: vm, source: source, destination: dest,
                                                                                 disks: location.disks)

        async let reach = ask(source, LibvirtReachQuery(uri: uri.text))
        async let cluster: ClusterHealth? = {
            let (serving, states) = await context.servingGateway()
            return await serving.clusterHealth(states: states)
        }()

        async let ports: (Result<PortListenRequest.Answer, AgentCallFailure>?, Result<PortProbeRequest.Answer, AgentCallFailure>) = {
            var listen: Result<PortListenRequest.Answer, AgentCallFailure>?
            var probe = PortProbeRequest(host: uri.host, ports: [uri.libvirtPort], seconds: 2)
            if mode != .offline {
                let range = dest.migrationPorts
                let l = await ask(dest, PortListenRequest(low: range.lowerBound, high: range.upperBound,
                                                          seconds: min(30, max(5, options.dirtyRateSeconds + 4))))
                listen = l
                guard case .success(let open) = l else { return (l, .failure(AgentCallFailure(host: dest.name, verb: PortListenRequest.verb, error: AgentError(.invalidState, "no listener to probe")))) }
                probe.ports = [open.port, uri.libvirtPort]
                if measureDirty {
                    // A bounded transfer between the hosts, within the dirty-rate window.
                    probe.bandwidthPort = open.port
                    probe.seconds = max(1, min(options.dirtyRateSeconds, 30))
                }
            }
            return (listen, await ask(source, probe, timeout: .seconds(60), connection: Self.probeConnection))
        }()

        let (facts, target) = await factsAndTarget
        let factsAnswer = try? facts.get()
        let disks = factsAnswer?.disks ?? location.disks
        let targetAnswer = try? target.get()
        let (listen, probe) = await ports
        let probeAnswer = try? probe.get()
        let storageResult = await storage
        let reachResult = await reach
        let dirtyResult = await dirty

        var checks: [CheckResult] = []
        checks.append(CheckEvaluation.storageReady(vm: vm, source: source.name, destination: dest.name, disks: location.disks,
                                                   exportRoot: root, verify: storageResult))
        var diskCheck = CheckEvaluation.disks(vm: vm, source: source.name, destination: dest.name, disks: disks, mode: mode, exportRoot: root)
        if case .failure(let f) = facts, mode != .offline, diskCheck.result == .pass {
            diskCheck = .agentFailed(.disks, host: f.host, verb: f.verb, f.error, measured: diskCheck.measured)
        }
        checks.append(diskCheck)
        let needed = disks.contains { $0.isDisk && !$0.isNetwork && SharePath.isUnder($0.source, root) } ? [inventory.poolName] : []
        checks.append(CheckEvaluation.destinationPool(vm: vm, destination: dest.name, needed: needed, target: target))
        checks.append(CheckEvaluation.libvirtReachable(uri: uri, source: source.name, destination: dest.name, reach: reachResult,
                                                       destinationHostUUID: targetAnswer?.hostUUID))
        checks.append(CheckEvaluation.migrationPorts(source: source.name, destination: dest.name, uri: uri, range: dest.migrationPorts,
                                                     listen: listen, probe: probe))
        checks.append(CheckEvaluation.cpu(destination: dest.name, mode: mode, target: target))
        checks.append(CheckEvaluation.memory(vm: vm, destination: dest.name, mode: mode, vmBytes: factsAnswer?.memoryBytes, target: target))
        checks.append(CheckEvaluation.nameUUID(vm: vm, uuid: factsAnswer?.uuid ?? location.domain.uuid, source: source.name, destination: dest.name,
                                               sourceHostUUID: factsAnswer?.hostUUID, persistent: options.persistent || mode == .offline,
                                               target: target))
        checks.append(CheckEvaluation.dirtyRate(vm: vm, source: source.name, destination: dest.name, mode: mode, state: location.state,
                                                dirty: dirtyResult, measuredBandwidth: probeAnswer?.bytesPerSecond,
                                                bandwidthError: probeAnswer?.bandwidthError ?? probeFailure(probe),
                                                capMiB: options.bandwidthMiB))
        checks.append(CheckEvaluation.gateArmed(destination: dest.name, target: target))
        if let health = await cluster { checks.append(CheckEvaluation.gateways(vm: vm, destination: dest.name, health: health)) }
        let elapsed = ContinuousClock.now - started
        return CheckReport(vm: vm, source: source.name, destination: dest.name, uri: uri.text, mode: mode.rawValue,
                           state: location.state.rawValue, checks: checks, milliseconds: Self.milliseconds(elapsed))
    }

    private func probeFailure(_ r: Result<PortProbeRequest.Answer, AgentCallFailure>) -> String? {
        if case .failure(let f) = r { return "\(f.verb) on \(f.host): \(f.error.message)" }
        return nil
    }

    static func milliseconds(_ d: Duration) -> UInt64 {
        UInt64(max(0, d.components.seconds)) * 1000 + UInt64(max(0, d.components.attoseconds) / 1_000_000_000_000_000)
    }

    /// The storage test: share's cross-host VERIFY of every disk on the share with a
    /// fresh nonce from the source (nil when no disk is on the share). Local disks fail
    /// in the evaluation before this matters.
    static func verifyStorage(_ context: FlowContext, vm: String, source: Inventory.Host, destination: Inventory.Host,
                              disks: [DiskRecord]) async -> Result<UInt64, ShareFailure>? {
        let inventory = context.inventory, root = inventory.exportRoot
        let started = ContinuousClock.now
        var files: [SharedFile] = []
        for d in disks where d.isDisk && CheckEvaluation.isOnShare(d, exportRoot: root) {
            if d.isNetwork {
                guard let relative = SharePath.relative(d.source, root: root) else { continue }
                let ref = ShareRef.nfs(server: inventory.nfsServer, export: root)
                files.append(SharedFile(label: d.target, size: nil) { VerifyRequest(path: relative, share: ref, nonce: $0) })
            } else {
                let path = d.source
                files.append(SharedFile(label: d.target, size: nil) { VerifyRequest(path: path, nonce: $0) })
            }
        }
        guard !files.isEmpty else { return nil }
        do {
            try await context.crossVerify(vm: vm, source: source, destinations: [destination], files: files,
                                          rerun: "run storagectl share \(vm) --to \(destination.name)")
        } catch {
            return .failure(error)
        }
        return .success(milliseconds(ContinuousClock.now - started))
    }
}
