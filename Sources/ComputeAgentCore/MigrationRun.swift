import AgentAPI
import AgentProtocol
import AgentRuntime
import Foundation
import Libvirt

// MIGRATE and MIGRATE-ABORT (docs/migration.md): a peer-to-peer migration through
// libvirt's API, watched through its job statistics.

/// What a MIGRATE drives: libvirt's migration of one domain. The seam that lets the
/// watching logic (progress, post-copy switch, abort on timeout or a gone client) be
/// tested without a real libvirtd. Every method blocks; ``MigrationRunner`` calls them
/// on threads (``MigrationWork``, ``ComputeWork``), never on the cooperative pool.
protocol MigrationControl: Sendable {
    /// Runs the migration to its end: returns when it completed, throws when it failed
    /// or was aborted.
    func migrate() throws
    /// The running job's statistics.
    func stats() throws -> DomainJobStats
    /// The completed job's statistics (nil when libvirt kept none).
    func completedStats() -> DomainJobStats?
    /// Aborts the running job.
    func abort() throws
    /// Switches the running migration to post-copy.
    func startPostCopy() throws
}

/// libvirt's side of ``MigrationControl`` for one domain.
struct LibvirtMigration: MigrationControl {
    let domain: LibvirtDomain
    let uri: String
    let flags: MigrationFlags
    let bandwidthMiB: UInt64?
    let uuid: String

    func migrate() throws { try domain.migrate(toURI: uri, flags: flags, bandwidthMiB: bandwidthMiB) }
    func stats() throws -> DomainJobStats { try domain.jobStats(.current) }
    func abort() throws { try domain.abortJob() }
    func startPostCopy() throws { try domain.startPostCopy() }

    /// The source keeps a completed job's statistics on its domain object while it exists
    /// (a persistent domain, or until it is undefined); else the destination's libvirt
    /// has them for the incoming job.
    func completedStats() -> DomainJobStats? {
        if let s = try? domain.jobStats(.completed), s.type == .completed { return s }
        guard let remote = try? LibvirtConnection(uri: uri), let there = try? remote.lookupDomain(uuidString: uuid),
              let s = try? there.jobStats(.completed), s.type == .completed else { return nil }
        return s
    }
}

/// Watches one running migration: streams PROGRESS, switches to post-copy, aborts.
struct MigrationRunner: Sendable {
    enum AbortReason: Sendable, Equatable {
        /// MIGRATE-ABORT.
        case requested
        /// timeout= passed.
        case timeout
        /// The client's connection closed (a PROGRESS line could not be written) or the
        /// request's task was cancelled.
        case clientGone
    }

    enum Outcome: Sendable {
        case completed(last: DomainJobStats?, completed: DomainJobStats?, postcopy: Bool, elapsed: Duration)
        /// Aborted by us (reason), with the error libvirt's migrate call ended with.
        case aborted(AbortReason, AgentError)
        case failed(AgentError)
    }

    let control: any MigrationControl
    let interval: Duration
    let postcopy: Bool
    let timeout: Duration?
    /// Whether a MIGRATE-ABORT asked for this migration to stop.
    let abortRequested: @Sendable () async -> Bool

    /// Runs the migration on a ``MigrationWork`` thread and watches it until it ends.
    func run(reply: ReplyStream) async -> Outcome {
        let control = self.control
        let start = ContinuousClock.now
        let migration = Task { () -> Result<Void, AgentError> in
            do {
                try await MigrationWork.migrations.run { try control.migrate() }
                return .success(())
            } catch {
                return .failure(ErrorMapping.agentError(error))
            }
        }
        let finished = Flag()
        // Set when this request's task is cancelled. The watcher itself is never cancelled:
        // it must still abort the job then (cancelled tasks get no blocking work run and
        // no sleep), and keep watching until the migration call returns.
        let cancelled = Flag()
        let watcher = Task { () -> (AbortReason?, DomainJobStats?, Bool) in
            var last: DomainJobStats?
            var switched = false
            var reason: AbortReason?
            var abortAccepted = false
            while !finished.isSet {
                if reason == nil {
                    if cancelled.isSet { reason = .clientGone }
                    else if await abortRequested() { reason = .requested }
                    else if let timeout, ContinuousClock.now - start >= timeout { reason = .timeout }
                }
                // Until libvirt accepted the abort (a job that has not started yet cannot be
                // aborted; MIGRATE-ABORT may have aborted it already): ask again each turn.
                if reason != nil, !abortAccepted {
                    if case .success = await ComputeWork.capture({ try control.abort() }) { abortAccepted = true }
                }
                if reason == nil, let stats = try? await ComputeWork.run({ try control.stats() }), stats.type.isActive {
                    last = stats
                    if postcopy, !switched, (stats.memoryIteration ?? 0) >= 2 {
                        if case .success = await ComputeWork.capture({ try control.startPostCopy() }) { switched = true }
                    }
                    let progress = Self.progress(stats, postcopy: switched)
                    do { try await reply.progress(progress.encoded()) } catch {
                        // The client's connection is gone: stop the migration (next turn).
                        reason = .clientGone
                        continue
                    }
                }
                try? await Task.sleep(for: interval)
            }
            return (reason, last, switched)
        }
        // Cancelling this request's task makes the watcher abort the job; the
        // migration itself is waited for either way (the blocking call cannot be left).
        let result = await withTaskCancellationHandler {
            await migration.value
        } onCancel: {
            cancelled.set()
        }
        finished.set()
        let (reason, last, switched) = await watcher.value
        switch result {
        case .success:
            let completed = await ComputeWork.capture { control.completedStats() }
            return .completed(last: last, completed: (try? completed.get()) ?? nil, postcopy: switched,
                              elapsed: ContinuousClock.now - start)
        case .failure(let error):
            let ourAbort = reason ?? (Self.wasAborted(error) ? .requested : nil)
            if let ourAbort { return .aborted(ourAbort, error) }
            return .failed(error)
        }
    }

    /// libvirt's "operation aborted" (the job was cancelled, by us or by another client).
    static func wasAborted(_ error: AgentError) -> Bool {
        (error.cause as? LibvirtError)?.code == .operationAborted
    }

    /// The PROGRESS of a job's statistics.
    static func progress(_ s: DomainJobStats, postcopy: Bool) -> MigrationProgress {
        MigrationProgress(done: s.dataProcessed ?? 0, total: s.dataTotal ?? 0, remaining: s.dataRemaining,
                          rate: s.memoryBytesPerSecond, iteration: s.memoryIteration, dirtyRate: s.dirtyBytesPerSecond,
                          phase: postcopy || (s.postcopyRequests ?? 0) > 0 ? "postcopy" : "precopy",
                          elapsedMilliseconds: s.elapsedMilliseconds)
    }

    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var isSet: Bool { lock.withLock { value } }
        func set() { lock.withLock { value = true } }
    }
}

/// Migrations running on this agent, by domain name: MIGRATE-ABORT marks one so its
/// MIGRATE answers "aborted" (the libvirt job is aborted by MIGRATE-ABORT itself).
actor MigrationRegistry {
    private var running: [String: Bool] = [:]
    func begin(_ name: String) { running[name] = false }
    func end(_ name: String) { running[name] = nil }
    /// Marks the migration of `name` as asked to stop; false when none runs here.
    func requestAbort(_ name: String) -> Bool {
        guard running[name] != nil else { return false }
        running[name] = true
        return true
    }
    func abortRequested(_ name: String) -> Bool { running[name] ?? false }
}

extension ComputeAgentHandler {
    /// The libvirt flags for a MIGRATE request (PEER2PEER is added by the wrapper; UNSAFE
    /// is never set). Pure.
    static func migrationFlags(_ r: MigrateRequest) -> MigrationFlags {
        var flags: MigrationFlags = []
        switch r.mode {
        case .live: flags.insert(.live)
        case .paused: break
        case .offline: flags.insert(.offline)
        }
        if r.persistent { flags.insert(.persistDestination) }
        if r.undefineSource { flags.insert(.undefineSource) }
        if r.autoConverge { flags.insert(.autoConverge) }
        if r.postcopy { flags.insert(.postcopy) }
        return flags
    }

    // MARK: - MIGRATE

    /// `MIGRATE name=VM uri=URI mode=...`: holds the domain (``DomainLocks``) for the whole
    /// migration; streams PROGRESS; aborts on MIGRATE-ABORT, at timeout= or when the
    /// client goes away.
    func migrate(_ request: MigrateRequest, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        let name = try Validation.domainName(request.name, key: "name")
        let uri = try Validation.libvirtURI(request.uri, testDriver: configuration.libvirtURI.hasPrefix("test:"))
        let flags = Self.migrationFlags(request)
        let session = self.session
        let registry = self.migrations
        let interval = min(configuration.progressInterval, .milliseconds(400))
        let host = context.identity.host
        return try await exclusive(name) { () async throws -> Fields in
            let (domain, uuid) = try await ComputeWork.run { () throws -> (LibvirtDomain, String) in
                let domain = try session.domain(name)
                let (state, persistent, uuid) = try lv { (try domain.state, try domain.isPersistent, try domain.uuidString) }
                switch request.mode {
                case .live, .paused:
                    guard state == .running || state == .paused else {
                        throw AgentError(.invalidState, "\(name) is \(state) here; mode=\(request.mode.rawValue) migrates a running domain (mode=offline moves a shut-off one's definition)",
                                         details: ["state": state.wire.rawValue])
                    }
                case .offline:
                    guard state == .shutoff, persistent else {
                        throw AgentError(.invalidState, "mode=offline moves the definition of a shut-off, persistent domain; \(name) is \(state)\(persistent ? "" : " and transient")",
                                         details: ["state": state.wire.rawValue])
                    }
                }
                // libvirt keeps jobs of active domains only (and refuses to ask a shut-off one).
                if state != .shutoff, try lv({ try domain.jobStats(.current) }).type.isActive {
                    throw AgentError(.busy, "a libvirt job of \(name) runs already (virsh domjobinfo \(name)); wait for it or abort it")
                }
                return (domain, uuid)
            }
            let control = LibvirtMigration(domain: domain, uri: uri, flags: flags, bandwidthMiB: request.bandwidthMiB, uuid: uuid)
            await registry.begin(name)
            let runner = MigrationRunner(control: control, interval: interval, postcopy: request.postcopy,
                                         timeout: request.timeoutSeconds.map { .seconds($0) },
                                         abortRequested: { await registry.abortRequested(name) })
            let outcome = await runner.run(reply: reply)
            await registry.end(name)
            switch outcome {
            case .completed(let last, let completed, let postcopy, let elapsed):
                let s = completed ?? last
                let answer = MigrateRequest.Answer(
                    name: name, uri: uri, mode: request.mode,
                    elapsedMilliseconds: completed?.elapsedMilliseconds ?? UInt64(max(0, elapsed / .milliseconds(1))),
                    downtimeMilliseconds: completed?.downtimeMilliseconds, dataBytes: s?.dataProcessed,
                    iterations: s?.memoryIteration, persistent: request.persistent, undefinedSource: request.undefineSource,
                    postcopyUsed: postcopy)
                return answer.encoded()
            case .aborted(let reason, let error):
                let why: String
                switch reason {
                case .requested: why = "MIGRATE-ABORT"
                case .timeout: why = "timeout"
                case .clientGone: why = "client-gone"
                }
                throw AgentError(.conflict, "the migration of \(name) was aborted; it still runs on \(host)",
                                 details: ["reason": why, "libvirt": error.message], cause: error)
            case .failed(let error):
                throw error
            }
        }
    }

    // MARK: - MIGRATE-ABORT

    /// `MIGRATE-ABORT name=VM`: aborts the domain's libvirt job when one runs. Does not
    /// take the domain's lock (the MIGRATE it stops holds it).
    func migrateAbort(_ request: MigrateAbortRequest) async throws -> MigrateAbortRequest.Answer {
        let name = try Validation.domainName(request.name, key: "name")
        let session = self.session
        let marked = await migrations.requestAbort(name)
        let aborted = try await ComputeWork.run { () throws -> Bool in
            let domain = try session.domain(name)
            // A shut-off domain has no job (libvirt refuses to ask it for one).
            guard try lv({ try domain.isActive }), try lv({ try domain.jobStats(.current) }).type.isActive else { return false }
            do {
                try domain.abortJob()
                return true
            } catch let e as LibvirtError where e.code == .operationInvalid {
                return false        // the job ended meanwhile
            } catch {
                throw ErrorMapping.agentError(error)
            }
        }
        // A MIGRATE of this agent that had not started its libvirt job yet aborts it as
        // soon as it has (its watcher keeps trying).
        return MigrateAbortRequest.Answer(aborted: aborted || marked)
    }
}
