import AgentAPI
import AgentProtocol
import AgentRuntime
import Foundation
@testable import StoragectlCommands

/// The migration gate's verbs on ``FakeSite``: MIGRATION-FACTS, LIBVIRT-REACH,
/// DIRTY-RATE, PORT-PROBE, MIGRATE, MIGRATE-ABORT on `src`; MIGRATION-TARGET and
/// PORT-LISTEN on any other compute host. Requests are decoded with the typed contract;
/// every setting below is one fact or one behaviour a test can change.
final class MigrationFake: @unchecked Sendable {
    let lock = NSLock()
    var fs = "nfs"
    var cache = "none"
    var memory: UInt64 = 1 << 30
    var free: UInt64 = 8 << 30
    var sourceHostUUID = "11111111-1111-4111-8111-111111111111"
    var destHostUUID = "22222222-2222-4222-8222-222222222222"
    var sameNameState: DomainRunState?
    var sameUUIDName: String?
    var sameUUIDState: DomainRunState?
    var cpu: CPUVerdict = .compatible
    var hookInstalled = true
    var hookLoaded = true
    var pools = [TargetPool(name: "shared-images", exists: true, active: true, autostart: true, target: "/srv/shared")]
    var reachable = true
    var closedPorts: Set<Int> = []
    var dirtyRate: UInt64 = 1 << 20
    /// The bandwidth exchange: bytes over milliseconds (nil: the probe reports an error).
    var bandwidth: (bytes: UInt64, ms: UInt64)? = (64 << 20, 500)
    /// Every migration verb answers after this long; DIRTY-RATE after `dirtyWindow`.
    var latency: Duration = .zero
    var dirtyWindow: Duration = .zero
    /// DIRTY-RATE's window stays open until these requests (`HOST VERB`) have arrived
    /// (at most 3 s; then it fails): proves they were not queued behind it.
    var dirtyWindowAwaits: [String] = []
    /// Migration requests being answered now, and the most at once.
    var inFlight = 0
    var maxInFlight = 0
    /// `HOST VERB` -> the error that request answers with.
    var failing: [String: AgentError] = [:]
    /// MIGRATE streams two PROGRESS lines, then waits for MIGRATE-ABORT (answering
    /// `ERR conflict aborted`) instead of finishing.
    var migrateWaitsForAbort = false
    var abortReceived = false
    var migratedTo: String?
    var offlineMoved = false
    /// The domain at the destination is persistent (`--persistent`, or offline).
    var persistentAtDestination = true
    var undefinedSource = false
    var migrateRequests: [MigrateRequest] = []
    var listenRequests: [PortListenRequest] = []
    var probeRequests: [PortProbeRequest] = []
    var reachRequests: [LibvirtReachQuery] = []
    var targetRequests: [MigrationTargetQuery] = []

    static let verbs: Set<String> = [MigrationFactsQuery.verb, LibvirtReachQuery.verb, DirtyRateQuery.verb, PortProbeRequest.verb,
                                     MigrateRequest.verb, MigrateAbortRequest.verb, MigrationTargetQuery.verb, PortListenRequest.verb]

    func with<T>(_ body: (MigrationFake) -> T) -> T { lock.withLock { body(self) } }

    static let cpuDefinition = CPUDefinition(arch: "x86_64", machine: "pc-q35-7.2", virtType: "kvm", emulator: "/usr/bin/qemu-system-x86_64",
                                             mode: "custom", model: "qemu64", match: "exact", features: [.init(policy: "require", name: "x2apic")])

    /// DOMAIN after a migration: where it went, and what is left at the source.
    func domain(site: FakeSite, host: String, name: String) throws(AgentError) -> ([Fields], Fields)? {
        let (to, offline, undefined, persistent) = lock.withLock { (migratedTo, offlineMoved, undefinedSource, persistentAtDestination) }
        guard let to, name == "w1" else { return nil }
        if host == to {
            return DomainQuery.encodeAnswer(.init(name: "w1", uuid: "8f0b5a2e-5b1e-4c55-9b0f-3a8f6f0d2c11", state: offline ? .shutOff : .running,
                                                  persistent: persistent, disks: []))
        }
        if host == "src" {
            if undefined { throw AgentError(.notFound, "no domain called 'w1' on this host") }
            return DomainQuery.encodeAnswer(.init(name: "w1", uuid: "8f0b5a2e-5b1e-4c55-9b0f-3a8f6f0d2c11", state: .shutOff, persistent: true, disks: []))
        }
        return nil
    }

    /// Answers a migration verb (nil: not one of them).
    func handle(site: FakeSite, host: String, request: Request, reply: ReplyStream) async throws -> Fields? {
        guard Self.verbs.contains(request.verb) else { return nil }
        site.lock.withLock { site.log.append("\(host) \(request.verb)") }
        let (latency, failure) = lock.withLock { () -> (Duration, AgentError?) in
            inFlight += 1
            maxInFlight = max(maxInFlight, inFlight)
            return (self.latency, failing["\(host) \(request.verb)"])
        }
        defer { lock.withLock { inFlight -= 1 } }
        if latency > .zero { try await Task.sleep(for: latency) }
        if let failure { throw failure }
        let isSource = host == "src"
        switch request.verb {
        case MigrationFactsQuery.verb where isSource:
            let q = try MigrationFactsQuery(request)
            guard q.name == "w1" else { throw AgentError(.notFound, "no domain called '\(q.name)' on this host") }
            let (running, adopted, libnfs, disks, root) = site.lock.withLock { (site.running, site.adopted, site.adoptedLibNFS, site.disks, site.root) }
            let records = lock.withLock {
                disks.map { d in
                    adopted && libnfs
                        ? DiskRecord(target: d.target, type: "network", source: "nfs://198.18.0.1" + root + "/w1/" + d.file, format: "qcow2", cache: cache)
                        : DiskRecord(target: d.target, type: "file", source: adopted ? root + "/w1/" + d.file : "/var/lib/libvirt/images/" + d.file,
                                     format: "qcow2", cache: cache, fileSystem: adopted ? fs : "ext4")
                }
            }
            let answer = lock.withLock {
                MigrationFactsQuery.Answer(name: "w1", uuid: "8f0b5a2e-5b1e-4c55-9b0f-3a8f6f0d2c11", state: running ? .running : .shutOff,
                                           persistent: true, memoryBytes: memory, hostUUID: sourceHostUUID, cpu: Self.cpuDefinition, disks: records)
            }
            return try await reply.answer(MigrationFactsQuery.self, answer)
        case LibvirtReachQuery.verb where isSource:
            let q = try LibvirtReachQuery(request)
            let answer = lock.withLock {
                reachRequests.append(q)
                return reachable ? LibvirtReachQuery.Answer(uri: q.uri, reachable: true, hostname: "dst", hostUUID: destHostUUID, milliseconds: 3)
                                 : LibvirtReachQuery.Answer(uri: q.uri, reachable: false, error: "unable to connect to server: Connection refused", milliseconds: 1)
            }
            return try await reply.answer(LibvirtReachQuery.self, answer)
        case DirtyRateQuery.verb where isSource:
            let q = try DirtyRateQuery(request)
            let (window, rate, awaits) = lock.withLock { (dirtyWindow, dirtyRate, dirtyWindowAwaits) }
            if window > .zero { try await Task.sleep(for: window) }
            for _ in 0..<600 where !Set(awaits).isSubset(of: Set(site.verbs)) { try await Task.sleep(for: .milliseconds(5)) }
            let missing = Set(awaits).subtracting(site.verbs)
            if !missing.isEmpty { throw AgentError(.timeout, "the dirty-rate window closed before \(missing.sorted()) arrived") }
            return try await reply.answer(DirtyRateQuery.self, .init(bytesPerSecond: rate, seconds: q.seconds))
        case PortProbeRequest.verb where isSource:
            let q = try PortProbeRequest(request)
            let answer = lock.withLock {
                probeRequests.append(q)
                var a = PortProbeRequest.Answer(ports: q.ports.map { p in
                    closedPorts.contains(p) ? PortReach(port: p, reachable: false, milliseconds: 1000, error: "Connection refused")
                                            : PortReach(port: p, reachable: true, milliseconds: 1)
                })
                if q.bandwidthPort != nil {
                    if let bandwidth {
                        a.bandwidthBytes = bandwidth.bytes
                        a.bandwidthMilliseconds = bandwidth.ms
                    } else {
                        a.bandwidthError = "the listener closed the connection"
                    }
                }
                return a
            }
            return try await reply.answer(PortProbeRequest.self, answer)
        case PortListenRequest.verb where !isSource:
            let q = try PortListenRequest(request)
            lock.withLock { listenRequests.append(q) }
            return try await reply.answer(PortListenRequest.self, .init(port: q.low, seconds: q.seconds))
        case MigrationTargetQuery.verb where !isSource:
            let q = try MigrationTargetQuery(request)
            let answer = lock.withLock {
                targetRequests.append(q)
                return MigrationTargetQuery.Answer(hostUUID: destHostUUID, freeMemoryBytes: free, sameNameState: sameNameState,
                                                   sameUUIDName: sameUUIDName, sameUUIDState: sameUUIDState, cpu: cpu,
                                                   cpuDetail: cpu == .unknown ? "host-passthrough is not comparable" : "",
                                                   hookInstalled: hookInstalled, hookLoaded: hookLoaded, hookDetail: "",
                                                   pools: pools.filter { q.pools.contains($0.name) })
            }
            return try await reply.answer(MigrationTargetQuery.self, answer)
        case MigrateRequest.verb where isSource:
            let q = try MigrateRequest(request)
            let (waits, memory) = lock.withLock { () -> (Bool, UInt64) in
                migrateRequests.append(q)
                return (migrateWaitsForAbort, self.memory)
            }
            if q.mode != .offline {
                try await reply.progress(MigrationProgress(done: 0, total: memory, remaining: memory, rate: 0, iteration: 1).encoded())
                try await reply.progress(MigrationProgress(done: memory / 2, total: memory, remaining: memory / 2, rate: 100 << 20,
                                                           iteration: 1, dirtyRate: 1 << 20, phase: "precopy", elapsedMilliseconds: 500).encoded())
            }
            if waits {
                // Until MIGRATE-ABORT arrives on another connection (at most 5 s).
                for _ in 0..<1000 {
                    if lock.withLock({ abortReceived }) { throw AgentError(.conflict, "migration of w1 aborted: the VM keeps running here") }
                    try await Task.sleep(for: .milliseconds(5))
                }
                throw AgentError(.timeout, "the fake MIGRATE waited 5 s for MIGRATE-ABORT")
            }
            let to = q.uri.contains("dest-b") ? "other" : "dst"
            lock.withLock {
                migratedTo = to
                offlineMoved = q.mode == .offline
                persistentAtDestination = q.persistent || q.mode == .offline
                undefinedSource = q.undefineSource
            }
            return try await reply.answer(MigrateRequest.self, .init(name: q.name, uri: q.uri, mode: q.mode, elapsedMilliseconds: 1234,
                                                                     downtimeMilliseconds: q.mode == .offline ? nil : 42,
                                                                     dataBytes: q.mode == .offline ? nil : memory, iterations: q.mode == .offline ? nil : 3,
                                                                     persistent: q.persistent, undefinedSource: q.undefineSource))
        case MigrateAbortRequest.verb where isSource:
            _ = try MigrateAbortRequest(request)
            let aborted = lock.withLock { () -> Bool in
                let running = migrateWaitsForAbort && !abortReceived
                abortReceived = true
                return running
            }
            return try await reply.answer(MigrateAbortRequest.self, .init(aborted: aborted))
        default:
            throw AgentError(.unsupported, "unknown verb '\(request.verb)' on fake \(host)")
        }
    }
}
