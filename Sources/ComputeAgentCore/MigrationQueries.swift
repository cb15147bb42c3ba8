import AgentAPI
import AgentProtocol
import AgentRuntime
import BlockingIO
import Foundation
import Libvirt

// The migration gate's questions (docs/migration.md): MIGRATION-FACTS, LIBVIRT-REACH and
// DIRTY-RATE asked of the source, MIGRATION-TARGET of the destination. They change nothing.

/// Where the migration verbs' long or possibly hanging libvirt calls run: a migration
/// (`virDomainMigrateToURI3` blocks for its whole duration) and opening a remote URI
/// (`virConnectOpen` can hang on an unresponsive host). Separate from ``ComputeWork`` so
/// neither can starve the agent's other verbs.
enum MigrationWork {
    static let migrations = BlockingExecutor(name: "migrate", threadCount: 4)
    static let reach = BlockingExecutor(name: "libvirt-reach", threadCount: 2)

    /// Runs `body` on `executor`, giving up after `timeout` (nil: timed out). The blocking
    /// call is not interrupted: it finishes on its thread and its result is dropped.
    static func bounded<T: Sendable>(_ executor: BlockingExecutor, timeout: Duration,
                                     _ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error>? {
        let once = Once<Result<T, any Error>?>()
        return await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>?, Never>) in
            once.set(continuation)
            let queued = executor.submit {
                let result: Result<T, any Error>
                do { result = .success(try body()) } catch { result = .failure(error) }
                once.resume(result)
            }
            if !queued { once.resume(.failure(AgentError(.unavailable, "the agent is shutting down"))) }
            Task {
                try? await Task.sleep(for: timeout)
                once.resume(nil)
            }
        }
    }

    /// Resumes a continuation exactly once, from whichever side comes first.
    final class Once<T: Sendable>: @unchecked Sendable {
        // Invariant: `continuation` is only touched with `lock` held.
        private let lock = NSLock()
        private var continuation: CheckedContinuation<T, Never>?
        private var early: T??
        func set(_ c: CheckedContinuation<T, Never>) {
            lock.withLock {
                if let early { c.resume(returning: early!) } else { continuation = c }
            }
        }
        func resume(_ value: T) {
            lock.withLock {
                if let c = continuation {
                    continuation = nil
                    early = .some(value)
                    c.resume(returning: value)
                } else if early == nil {
                    early = .some(value)
                }
            }
        }
    }
}

extension ComputeAgentHandler {
    // MARK: - MIGRATION-FACTS

    /// `MIGRATION-FACTS name=VM`: DOMAIN's disks with `fs=`, identity, state, memory, host
    /// UUID and the CPU definition of the domain's XML (live when running).
    func migrationFacts(_ request: MigrationFactsQuery) async throws -> MigrationFactsQuery.Answer {
        let name = try Validation.domainName(request.name, key: "name")
        let session = self.session
        return try await ComputeWork.run { () throws -> MigrationFactsQuery.Answer in
            let hostUUID = try CPUDefinitionXML.hostUUID(try session.connection())
            return try Self.migrationFacts(try session.domain(name), hostUUID: hostUUID)
        }
    }

    /// MIGRATION-FACTS' answer for `domain` on the host `hostUUID`. Blocking.
    static func migrationFacts(_ domain: LibvirtDomain, hostUUID: String) throws(AgentError) -> MigrationFactsQuery.Answer {
        let (report, xml) = try DomainReport.read(domain)
        let cpu = try CPUDefinitionXML.parse(xml)
        let memory = try lv { try domain.memoryBytes }
        let mounts = MountTable.current()
        let disks = report.answer.disks.map { d -> DiskRecord in
            var d = d
            if d.type == "file" || d.type == "block", !d.source.isEmpty {
                d.fileSystem = mounts.fileSystem(ofDiskSource: d.source)
            }
            return d
        }
        return MigrationFactsQuery.Answer(name: report.name, uuid: report.uuid, state: report.state.wire, persistent: report.persistent,
                                          memoryBytes: memory, hostUUID: hostUUID, cpu: cpu, disks: disks)
    }

    // MARK: - LIBVIRT-REACH

    /// How long LIBVIRT-REACH waits for `virConnectOpen` and the two questions after it.
    static let reachTimeout: Duration = .seconds(5)

    /// `LIBVIRT-REACH uri=URI`: opens the URI as this host's libvirt client (a hanging
    /// open is given up after ``reachTimeout``), asks hostname and host UUID, closes.
    func libvirtReach(_ request: LibvirtReachQuery, timeout: Duration = ComputeAgentHandler.reachTimeout) async throws -> LibvirtReachQuery.Answer {
        let uri = try Validation.libvirtURI(request.uri, allowLocal: false, testDriver: configuration.libvirtURI.hasPrefix("test:"))
        let start = ContinuousClock.now
        let outcome = await MigrationWork.bounded(MigrationWork.reach, timeout: timeout) { () throws -> (String, String?) in
            let connection = try LibvirtConnection(uri: uri)
            return (try connection.hostname, try CPUDefinitionXML.hostUUID(capabilities: try connection.capabilities()))
        }
        let ms = UInt64(max(0, (ContinuousClock.now - start) / .milliseconds(1)))
        switch outcome {
        case nil:
            return LibvirtReachQuery.Answer(uri: uri, reachable: false, error: "timeout", milliseconds: ms)
        case .success(let (hostname, hostUUID)):
            return LibvirtReachQuery.Answer(uri: uri, reachable: true, hostname: hostname, hostUUID: hostUUID, milliseconds: ms)
        case .failure(let error):
            let message = (error as? LibvirtError)?.message ?? ErrorMapping.agentError(error).message
            return LibvirtReachQuery.Answer(uri: uri, reachable: false, error: message, milliseconds: ms)
        }
    }

    // MARK: - DIRTY-RATE

    /// `DIRTY-RATE name=VM seconds=N`: libvirt's page-sampling dirty-rate calculation on a
    /// running domain; waits the window, then polls until measured (at most N + 3 s).
    func dirtyRate(_ request: DirtyRateQuery) async throws -> DirtyRateQuery.Answer {
        let name = try Validation.domainName(request.name, key: "name")
        let seconds = request.seconds
        guard (1...60).contains(seconds) else { throw AgentError.invalidArgument("seconds=\(seconds) is out of range (1 to 60)") }
        let session = self.session
        let (domain, previous) = try await ComputeWork.run { () throws -> (LibvirtDomain, Int64?) in
            let domain = try session.domain(name)
            let state = try lv { try domain.state }
            guard state == .running else {
                throw AgentError(.invalidState, "\(name) is \(state) here; the dirty rate can be measured on a running domain only",
                                 details: ["state": state.wire.rawValue])
            }
            // calc_start_time is QEMU's clock, not the wall clock: a measurement is this
            // request's when its start time differs from the one before it was started.
            let previous = try lv { try domain.dirtyRate() }.startTime
            try lv { try domain.startDirtyRateCalculation(seconds: Int32(seconds)) }
            return (domain, previous)
        }
        let deadline = ContinuousClock.now + .seconds(seconds + 3)
        try await Task.sleep(for: .seconds(seconds))
        while true {
            let stats = try await ComputeWork.run { () throws -> DirtyRateStats in try lv { try domain.dirtyRate() } }
            let fresh = stats.startTime != nil && stats.startTime != previous
            if stats.status == .measured, fresh, let mib = stats.mebibytesPerSecond {
                let (bytes, overflow) = UInt64(max(0, mib)).multipliedReportingOverflow(by: 1 << 20)
                return DirtyRateQuery.Answer(bytesPerSecond: overflow ? .max : bytes, seconds: seconds)
            }
            guard ContinuousClock.now < deadline else {
                throw AgentError(.timeout, "libvirt had not measured the dirty rate of \(name) \(seconds + 3) s after starting a \(seconds) s calculation")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    // MARK: - MIGRATION-TARGET

    /// `MIGRATION-TARGET ...`: the destination's own facts for an incoming VM.
    func migrationTarget(_ request: MigrationTargetQuery) async throws -> MigrationTargetQuery.Answer {
        let name = try Validation.domainName(request.name, key: "name")
        let uuid = try Validation.uuid(request.uuid)
        guard request.pools.count <= 64 else { throw AgentError.invalidArgument("at most 64 pool= are accepted (got \(request.pools.count))") }
        var poolNames: [String] = []
        for p in request.pools { poolNames.append(try Validation.poolName(p, key: "pool")) }
        let cpu = try Validation.cpuDefinition(request.cpu)
        let session = self.session
        let wanted = poolNames
        async let hook = self.hook.status()
        var answer = try await ComputeWork.run { () throws -> MigrationTargetQuery.Answer in
            let c = try session.connection()
            return try Self.migrationTarget(on: c, hostUUID: try CPUDefinitionXML.hostUUID(c), name: name, uuid: uuid, pools: wanted, cpu: cpu)
        }
        let status = await hook
        answer.hookInstalled = status.installed
        answer.hookLoaded = status.loaded
        answer.hookDetail = status.detail
        return answer
    }

    /// MIGRATION-TARGET's answer from `c` (hook fields unset) for validated values. Blocking.
    static func migrationTarget(on c: LibvirtConnection, hostUUID: String, name: String, uuid: String, pools wanted: [String],
                            cpu: CPUDefinition) throws(AgentError) -> MigrationTargetQuery.Answer {
        let free = try lv { try c.freeMemoryBytes() }
        var answer = MigrationTargetQuery.Answer(hostUUID: hostUUID, freeMemoryBytes: free, cpu: .unknown, cpuDetail: "",
                                                 hookInstalled: false, hookLoaded: false, hookDetail: "", pools: [])
        if let same = try Self.optionalDomain({ try c.lookupDomain(name: name) }) {
            answer.sameNameState = try lv { try same.state.wire }
        }
        if let same = try Self.optionalDomain({ try c.lookupDomain(uuidString: uuid) }) {
            answer.sameUUIDName = try lv { try same.name }
            answer.sameUUIDState = try lv { try same.state.wire }
        }
        for pool in wanted {
            let found: LibvirtStoragePool
            do { found = try c.lookupStoragePool(name: pool) } catch let e as LibvirtError where e.code == .noStoragePool {
                answer.pools.append(TargetPool(name: pool, exists: false, active: false, autostart: false))
                continue
            } catch { throw ErrorMapping.agentError(error) }
            answer.pools.append(try lv { TargetPool(name: pool, exists: true, active: try found.isActive, autostart: try found.autostart,
                                                    target: try found.targetPath) })
        }
        (answer.cpu, answer.cpuDetail) = Self.compareCPU(cpu, on: c)
        return answer
    }

    /// A domain lookup where "no such domain" is nil.
    static func optionalDomain(_ lookup: () throws -> LibvirtDomain) throws(AgentError) -> LibvirtDomain? {
        do { return try lookup() } catch let e as LibvirtError where e.code == .noDomain { return nil } catch {
            throw ErrorMapping.agentError(error)
        }
    }

    /// libvirt's comparison of the VM's CPU with what this host's hypervisor can provide
    /// for the same emulator, arch, machine and virt type. Blocking.
    static func compareCPU(_ cpu: CPUDefinition, on c: LibvirtConnection) -> (CPUVerdict, String) {
        switch cpu.mode {
        case nil:
            return (.unknown, "the domain has no <cpu> element: it gets the hypervisor's default CPU model, which libvirt does not compare")
        case "host-passthrough", "maximum":
            return (.unknown, "the domain's CPU mode is \(cpu.mode!): it takes whatever CPU the host has, so libvirt cannot compare it; use identical hosts")
        default:
            break
        }
        let xml = CPUDefinitionXML.build(cpu)
        do {
            switch try c.compareHypervisorCPU(emulator: cpu.emulator, arch: cpu.arch, machine: cpu.machine, virtType: cpu.virtType, cpuXML: xml) {
            case .identical: return (.compatible, "libvirt: the host's CPU is identical to the domain's")
            case .superset: return (.compatible, "libvirt: the host's CPU is a superset of the domain's")
            case .incompatible(let reason): return (.incompatible, reason)
            }
        } catch {
            return (.unknown, "libvirt could not compare the CPU: \(error.message)")
        }
    }
}
