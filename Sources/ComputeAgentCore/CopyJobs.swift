import AgentAPI
import AgentProtocol
import Foundation
import ImageCopy

/// The persisted record of a domain's last COPY (`jobs/<uuid>.json` in the state dir).
struct CopyJobRecord: Sendable, Codable, Equatable {
    enum Phase: String, Sendable, Codable { case running, done, failed }
    struct DiskResult: Sendable, Codable, Equatable {
        var size: UInt64
        var dataBytes: UInt64
        /// The content digest of the copy. A record written before digests replaced
        /// SHA-256 (a `sha256` key) does not decode: it counts as no record; one whose
        /// digests are not `xxh3-128:` (SHA-256 content digests, agents from before
        /// XXH3-128) is not answered either (``CopyJobRecord/hasCurrentDigests``).
        var digest: String
        var alreadyPresent: Bool
        var seconds: Double
    }

    var domain: String
    var uuid: String
    var share: Share
    var disks: [PlannedDisk]
    var phase: Phase
    /// Results by disk target, filled in as each disk completes.
    var results: [String: DiskResult]
    var errorCode: String?
    var errorMessage: String?
    var started: Date
    var finished: Date?
    /// How many times the job was started (a restart after an agent crash adds one).
    var attempts: Int
}

/// Progress of a running job, updated from the copy engine's threads.
final class JobProgress: @unchecked Sendable {
    struct Snapshot: Sendable {
        var done: UInt64; var total: UInt64; var rate: UInt64; var disk: String
        /// The `PROGRESS` record.
        var wire: TransferProgress { TransferProgress(done: done, total: total, rate: rate, disk: disk.isEmpty ? nil : disk) }
    }
    // Invariant: `value` is only touched with `lock` held.
    private let lock = NSLock()
    private var value: Snapshot
    init(total: UInt64, disk: String) { value = Snapshot(done: 0, total: total, rate: 0, disk: disk) }
    var snapshot: Snapshot { lock.withLock { value } }
    func set(_ s: Snapshot) { lock.withLock { value = s } }

    /// `done` bytes of the current disk (which starts at `base` of the total), the
    /// average rate since `start`.
    func advance(base: UInt64, done: UInt64, since start: ContinuousClock.Instant, disk: String) {
        let elapsed = (ContinuousClock.now - start) / .seconds(1)
        let all = base + done
        lock.withLock {
            value = Snapshot(done: all, total: value.total, rate: elapsed > 0 ? UInt64(Double(all) / elapsed) : 0, disk: disk)
        }
    }

    /// The job has ended with `done` bytes handled.
    func finish(done: UInt64, since start: ContinuousClock.Instant) {
        let elapsed = (ContinuousClock.now - start) / .seconds(1)
        lock.withLock {
            value = Snapshot(done: done, total: value.total, rate: elapsed > 0 ? UInt64(Double(done) / elapsed) : 0, disk: "")
        }
    }
}

/// A running job (COPY or LOCALIZE) of one domain: survives its client; others attach
/// to it. `Record` is what the job ends with (also when it fails: phase `failed`).
final class AgentJob<Record: Sendable>: Sendable {
    let domain: String
    let share: Share
    /// LOCALIZE: the local directory the copies go to; nil for COPY.
    let dir: String?
    let progress: JobProgress
    let restarted: Bool
    let task: Task<Record, Error>

    init(domain: String, share: Share, dir: String? = nil, progress: JobProgress, restarted: Bool, task: Task<Record, Error>) {
        self.domain = domain
        self.share = share
        self.dir = dir
        self.progress = progress
        self.restarted = restarted
        self.task = task
    }
}

typealias CopyJob = AgentJob<CopyJobRecord>
typealias LocalizeJob = AgentJob<LocalizeJobRecord>

/// A running LIVE-COPY or LIVE-LOCALIZE: the job, and LIVE-ABORT's handle on it.
final class LiveJob: Sendable {
    let kind: LiveJobRecord.Kind
    let job: AgentJob<LiveJobRecord>
    let abort: LiveSwitch

    var verb: String { kind.verb }

    init(kind: LiveJobRecord.Kind, job: AgentJob<LiveJobRecord>, abort: LiveSwitch) {
        self.kind = kind
        self.job = job
        self.abort = abort
    }
}

/// The agent's COPY and LOCALIZE jobs, keyed by domain name (one job per domain: a
/// LOCALIZE while a COPY of the domain runs, or the reverse, is `busy`). A job runs in a
/// task owned by this actor, not by the request that started it, so a client that
/// disconnects does not stop it; asking again attaches to it. The record in the state
/// dir (`jobs/UUID.json`, `jobs/UUID.localize.json`) makes a restarted agent answer a
/// finished COPY, or start an interrupted job again on the next request (both engines
/// write under a temporary name and replace a leftover one, so nothing partial is ever
/// visible under a final name).
///
/// Every state-dir read and write goes through `StateStore`'s blocking executor, never
/// on the cooperative pool. Between such an await and the insertion of a job the table
/// is checked again (actor reentrancy), so one domain never gets two jobs.
actor CopyJobs {
    let state: StateStore
    let copier: ImageCopier
    private var running: [String: CopyJob] = [:]
    private var localizing: [String: LocalizeJob] = [:]
    /// LIVE-COPY and LIVE-LOCALIZE jobs (one per domain, as the others).
    private var live: [String: LiveJob] = [:]

    init(state: StateStore, copier: ImageCopier) {
        self.state = state
        self.copier = copier
    }

    enum Start: Sendable {
        /// A job (new, restarted or already running) to stream.
        case job(CopyJob, attached: Bool)
        /// A finished job whose record still matches the domain's disks.
        case finished(CopyJobRecord)
    }

    /// The running job of `plan.domain`, or the finished one, or a new one.
    /// - Throws: `busy` when a job for the domain runs to another share, or a LOCALIZE
    ///   of it runs. `trustFinished: false` starts a new job even when a finished record
    ///   matches (the caller found that a copy it names is gone from the share).
    func start(_ plan: CopyPlan, share: Share, trustFinished: Bool = true) async throws(AgentError) -> Start {
        if let attached = try attachCopy(plan.domain, share: share) { return attached }
        let name = plan.uuid + ".json"
        let previous = await state.readOffPool { $0.readJSON(CopyJobRecord.self, "jobs", name) }
        // Another request may have started a job while the record was read.
        if let attached = try attachCopy(plan.domain, share: share) { return attached }
        if trustFinished, let previous, previous.phase == .done, previous.share == share, previous.disks == plan.disks,
           previous.hasCurrentDigests {
            return .finished(previous)
        }
        let restarted = previous?.phase == .running && previous?.share == share
        var record = CopyJobRecord(domain: plan.domain, uuid: plan.uuid, share: share, disks: plan.disks, phase: .running,
                                   results: [:], errorCode: nil, errorMessage: nil, started: Date(), finished: nil,
                                   attempts: restarted ? (previous?.attempts ?? 0) + 1 : 1)
        let total = plan.disks.reduce(UInt64(0)) { $0 + $1.size }
        let progress = JobProgress(total: total, disk: plan.disks.first?.target ?? "")
        let copier = self.copier
        let store = self.state
        let task = Task<CopyJobRecord, Error> {
            let start = ContinuousClock.now
            var base: UInt64 = 0
            do {
                try await store.offPool { [record] in try $0.writeJSON(record, "jobs", name) }
                for disk in plan.disks {
                    let offset = base
                    let result = try await copier.copy(source: disk.source, to: share.nfsTarget, relativePath: disk.relativePath) { p in
                        progress.advance(base: offset, done: min(p.done, disk.size), since: start, disk: disk.target)
                    }
                    base += disk.size
                    record.results[disk.target] = .init(size: result.size, dataBytes: result.dataBytes, digest: result.digest,
                                                        alreadyPresent: result.alreadyPresent, seconds: result.elapsedSeconds)
                    let snapshot = record
                    try? await store.offPool { try $0.writeJSON(snapshot, "jobs", name) }
                }
                record.phase = .done
            } catch {
                let e = Self.agentError(error)
                record.phase = .failed
                record.errorCode = e.code.rawValue
                record.errorMessage = e.message
            }
            progress.finish(done: record.phase == .done ? total : base, since: start)
            record.finished = Date()
            let final = record
            try? await store.offPool { try $0.writeJSON(final, "jobs", name) }
            self.finished(plan.domain)
            return record
        }
        let job = CopyJob(domain: plan.domain, share: share, progress: progress, restarted: restarted, task: task)
        running[plan.domain] = job
        return .job(job, attached: false)
    }

    /// The running COPY of `domain` to attach to; `busy` for a LOCALIZE or another share.
    private func attachCopy(_ domain: String, share: Share) throws(AgentError) -> Start? {
        if localizing[domain] != nil {
            throw AgentError(.busy, "a LOCALIZE of \(domain) is running; COPY after it has finished")
        }
        if let job = live[domain] {
            throw AgentError(.busy, "a \(job.verb) of \(domain) is running; COPY after it has finished (or stop it: LIVE-ABORT domain=\(domain))")
        }
        guard let job = running[domain] else { return nil }
        guard job.share == share else {
            throw AgentError(.busy, "a COPY of \(domain) to \(job.share.server):\(job.share.export) is running; wait for it (COPY domain=\(domain) attaches to it)")
        }
        return .job(job, attached: true)
    }

    /// The running LOCALIZE of `domain` to attach to (same share and directory), or nil.
    /// - Throws: `busy` when a COPY of the domain runs, or a LOCALIZE to another place.
    func runningLocalize(_ domain: String, share: Share, dir: String) throws(AgentError) -> LocalizeJob? {
        if running[domain] != nil {
            throw AgentError(.busy, "a COPY of \(domain) is running; LOCALIZE after it has finished")
        }
        if let job = live[domain] {
            throw AgentError(.busy, "a \(job.verb) of \(domain) is running; LOCALIZE after it has finished (or stop it: LIVE-ABORT domain=\(domain))")
        }
        guard let job = localizing[domain] else { return nil }
        guard job.share == share, job.dir == dir else {
            throw AgentError(.busy, "a LOCALIZE of \(domain) from \(job.share.server):\(job.share.export) to \(job.dir ?? "?") is running; wait for it, then ask again")
        }
        return job
    }

    /// Starts the LOCALIZE job of `plan` (or attaches to one started meanwhile): copies
    /// each disk with the copy engine (`ImageCopier.copyToLocal`), then `redefine`s the
    /// domain onto the local copies (returns the saved definition it used, if any).
    /// `restarted`: the record says an earlier agent was interrupted in this job.
    func startLocalize(_ plan: LocalizePlan,
                       redefine: @escaping @Sendable ([LocalizeJobRecord.Moved]) async throws -> String?) async throws(AgentError) -> (LocalizeJob, attached: Bool) {
        if let job = try runningLocalize(plan.domain, share: plan.share, dir: plan.dir) { return (job, true) }
        let name = plan.uuid + ".localize.json"
        let previous = await state.readOffPool { $0.readJSON(LocalizeJobRecord.self, "jobs", name) }
        if let job = try runningLocalize(plan.domain, share: plan.share, dir: plan.dir) { return (job, true) }
        let restarted = previous?.phase == .running && previous?.share == plan.share && previous?.dir == plan.dir
        var record = LocalizeJobRecord(domain: plan.domain, uuid: plan.uuid, share: plan.share, dir: plan.dir, disks: plan.disks,
                                       phase: .running, moved: [], restoredFrom: nil, errorCode: nil, errorMessage: nil,
                                       started: Date(), finished: nil, attempts: restarted ? (previous?.attempts ?? 0) + 1 : 1)
        let total = plan.disks.reduce(UInt64(0)) { $0 + $1.size }
        let progress = JobProgress(total: total, disk: plan.disks.first?.target ?? "")
        let copier = self.copier
        let store = self.state
        let task = Task<LocalizeJobRecord, Error> {
            let start = ContinuousClock.now
            var base: UInt64 = 0
            do {
                try await store.offPool { [record] in try $0.writeJSON(record, "jobs", name) }
                for disk in plan.disks {
                    let offset = base
                    let result = try await copier.copyToLocal(from: disk.source, to: disk.to) { p in
                        progress.advance(base: offset, done: min(p.done, disk.size), since: start, disk: disk.target)
                    }
                    base += disk.size
                    record.moved.append(.init(target: disk.target, from: disk.from, to: disk.to, size: result.size, digest: result.digest))
                    let snapshot = record
                    try? await store.offPool { try $0.writeJSON(snapshot, "jobs", name) }
                }
                record.restoredFrom = try await redefine(record.moved)
                record.phase = .done
            } catch {
                let e = Self.agentError(error)
                record.phase = .failed
                record.errorCode = e.code.rawValue
                record.errorMessage = e.message
            }
            progress.finish(done: record.phase == .done ? total : base, since: start)
            record.finished = Date()
            let final = record
            try? await store.offPool { try $0.writeJSON(final, "jobs", name) }
            self.finishedLocalize(plan.domain)
            return record
        }
        let job = LocalizeJob(domain: plan.domain, share: plan.share, dir: plan.dir, progress: progress, restarted: restarted, task: task)
        localizing[plan.domain] = job
        return (job, false)
    }

    static func agentError(_ error: any Error) -> AgentError {
        (error as? ImageCopyError)?.agentError ?? (error as? AgentError) ?? AgentError(.internal, "\(error)")
    }

    private func finished(_ domain: String) {
        running[domain] = nil
    }

    private func finishedLocalize(_ domain: String) {
        localizing[domain] = nil
    }

    /// Whether a COPY, LOCALIZE, LIVE-COPY or LIVE-LOCALIZE of `domain` runs now (ADOPT
    /// and RESTORE refuse meanwhile).
    func isRunning(_ domain: String) -> Bool { running[domain] != nil || localizing[domain] != nil || live[domain] != nil }

    /// The verb of the job of `domain` that runs now, for `busy` messages.
    func runningVerb(_ domain: String) -> String? {
        if running[domain] != nil { return "COPY" }
        if localizing[domain] != nil { return "LOCALIZE" }
        return live[domain]?.verb
    }

    // MARK: - live copies

    /// The running live copy of `domain` of the same kind, share and directory to attach
    /// to, or nil. `busy` when another job of the domain runs.
    func runningLive(_ domain: String, kind: LiveJobRecord.Kind, share: Share, dir: String?) throws(AgentError) -> LiveJob? {
        let verb = kind.verb
        if running[domain] != nil {
            throw AgentError(.busy, "a COPY of \(domain) is running; \(verb) after it has finished")
        }
        if localizing[domain] != nil {
            throw AgentError(.busy, "a LOCALIZE of \(domain) is running; \(verb) after it has finished")
        }
        guard let job = live[domain] else { return nil }
        guard job.kind == kind, job.job.share == share, job.job.dir == dir else {
            throw AgentError(.busy, "a \(job.verb) of \(domain) (\(job.job.share.server):\(job.job.share.export)\(job.job.dir.map { ", dir \($0)" } ?? "")) is running; wait for it (asking the same again attaches to it) or stop it with LIVE-ABORT domain=\(domain)")
        }
        return job
    }

    /// Starts the live copy `record` with `runner` (or attaches to one started meanwhile).
    func startLive(_ record: LiveJobRecord, runner: LiveCopyRunner) throws(AgentError) -> (LiveJob, attached: Bool) {
        if let job = try runningLive(record.domain, kind: record.kind, share: record.share, dir: record.dir) { return (job, true) }
        let domain = record.domain
        let task = Task<LiveJobRecord, Error> {
            let final = await runner.run(record)
            self.finishedLive(domain)
            return final
        }
        let job = LiveJob(kind: record.kind, job: AgentJob(domain: domain, share: record.share, dir: record.dir, progress: runner.progress,
                                                           restarted: false, task: task), abort: runner.abort)
        live[domain] = job
        return (job, false)
    }

    /// The running live copy of `domain`, for LIVE-ABORT.
    func liveJob(_ domain: String) -> LiveJob? { live[domain] }

    private func finishedLive(_ domain: String) {
        live[domain] = nil
    }
}

extension CopyJobRecord {
    /// Whether every digest in the record is spelled as this version's (`xxh3-128:`). A
    /// finished record of an agent from before XXH3-128 (SHA-256 content digests) counts
    /// as no record: the copies are checked again and digested anew, so a digest of one
    /// algorithm is never answered where storagectl compares the other's.
    var hasCurrentDigests: Bool { results.values.allSatisfy { ContentDigestSpelling.isCurrent($0.digest) } }

    /// One row per disk of a finished job.
    var rows: [CopyRow] {
        disks.compactMap { d in
            guard let r = results[d.target] else { return nil }
            return .copied(CopiedImage(disk: d.target, source: d.source, path: d.relativePath, size: r.size,
                                       dataBytes: r.dataBytes, digest: r.digest, alreadyPresent: r.alreadyPresent))
        }
    }

    /// The typed answer (`skipped` rows first), or the job's error.
    func answer(skipped: [CopyRow] = [], attached: Bool, restarted: Bool) throws(AgentError) -> CopyRequest.Answer {
        switch phase {
        case .done:
            return CopyRequest.Answer(rows: skipped + rows, domain: domain, share: share.facts,
                                      bytes: disks.reduce(UInt64(0)) { $0 + $1.size }, attached: attached, restarted: restarted,
                                      seconds: finished.map { ($0.timeIntervalSince(started) * 10).rounded() / 10 })
        case .failed:
            let code = errorCode.flatMap(AgentError.Code.init(rawValue:)) ?? .internal
            throw AgentError(code, errorMessage ?? "the copy failed", details: ["domain": domain])
        case .running:
            throw AgentError(.internal, "the copy of \(domain) has not finished")
        }
    }
}
