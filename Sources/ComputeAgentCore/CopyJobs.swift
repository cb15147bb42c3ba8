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
        /// SHA-256 (a `sha256` key) does not decode: it counts as no record.
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
}

/// A running COPY: survives its client; others attach to it.
final class CopyJob: Sendable {
    let domain: String
    let share: Share
    let progress: JobProgress
    let restarted: Bool
    let task: Task<CopyJobRecord, Error>

    init(domain: String, share: Share, progress: JobProgress, restarted: Bool, task: Task<CopyJobRecord, Error>) {
        self.domain = domain
        self.share = share
        self.progress = progress
        self.restarted = restarted
        self.task = task
    }
}

/// COPY jobs, keyed by domain name. A job runs in a task owned by this actor, not by
/// the request that started it, so a client that disconnects does not stop it; asking
/// again attaches to it. The record in the state dir makes a restarted agent either
/// answer a finished job or start an interrupted one again (the engine writes under a
/// temporary name and replaces a leftover one, so nothing partial is ever visible
/// under a final name).
actor CopyJobs {
    let state: StateStore
    let copier: ImageCopier
    private var running: [String: CopyJob] = [:]

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
    /// - Throws: `busy` when a job for the domain runs to another share.
    /// `trustFinished: false` starts a new job even when a finished record matches (the
    /// caller found that a copy it names is gone from the share).
    func start(_ plan: CopyPlan, share: Share, trustFinished: Bool = true) throws(AgentError) -> Start {
        if let job = running[plan.domain] {
            guard job.share == share else {
                throw AgentError(.busy, "a COPY of \(plan.domain) to \(job.share.server):\(job.share.export) is running; wait for it (COPY domain=\(plan.domain) attaches to it)")
            }
            return .job(job, attached: true)
        }
        let name = plan.uuid + ".json"
        let previous = state.readJSON(CopyJobRecord.self, "jobs", name)
        if trustFinished, let previous, previous.phase == .done, previous.share == share, previous.disks == plan.disks {
            return .finished(previous)
        }
        let restarted = previous?.phase == .running && previous?.share == share
        var record = CopyJobRecord(domain: plan.domain, uuid: plan.uuid, share: share, disks: plan.disks, phase: .running,
                                   results: [:], errorCode: nil, errorMessage: nil, started: Date(), finished: nil,
                                   attempts: restarted ? (previous?.attempts ?? 0) + 1 : 1)
        try state.writeJSON(record, "jobs", name)
        let total = plan.disks.reduce(UInt64(0)) { $0 + $1.size }
        let progress = JobProgress(total: total, disk: plan.disks.first?.target ?? "")
        let copier = self.copier
        let store = self.state
        let task = Task<CopyJobRecord, Error> {
            let start = ContinuousClock.now
            var base: UInt64 = 0
            do {
                for disk in plan.disks {
                    let offset = base
                    let result = try await copier.copy(source: disk.source, to: share.nfsTarget, relativePath: disk.relativePath) { p in
                        let elapsed = (ContinuousClock.now - start) / .seconds(1)
                        let done = offset + min(p.done, disk.size)
                        progress.set(.init(done: done, total: total, rate: elapsed > 0 ? UInt64(Double(done) / elapsed) : 0, disk: disk.target))
                    }
                    base += disk.size
                    record.results[disk.target] = .init(size: result.size, dataBytes: result.dataBytes, digest: result.digest,
                                                        alreadyPresent: result.alreadyPresent, seconds: result.elapsedSeconds)
                    try? store.writeJSON(record, "jobs", name)
                }
                record.phase = .done
            } catch {
                let e = (error as? ImageCopyError)?.agentError ?? (error as? AgentError) ?? AgentError(.internal, "\(error)")
                record.phase = .failed
                record.errorCode = e.code.rawValue
                record.errorMessage = e.message
            }
            let elapsed = (ContinuousClock.now - start) / .seconds(1)
            progress.set(.init(done: record.phase == .done ? total : base, total: total,
                               rate: elapsed > 0 ? UInt64(Double(base) / elapsed) : 0, disk: ""))
            record.finished = Date()
            try? store.writeJSON(record, "jobs", name)
            self.finished(plan.domain)
            return record
        }
        let job = CopyJob(domain: plan.domain, share: share, progress: progress, restarted: restarted, task: task)
        running[plan.domain] = job
        return .job(job, attached: false)
    }

    private func finished(_ domain: String) {
        running[domain] = nil
    }

    /// Whether a job for `domain` runs now (ADOPT and RESTORE refuse meanwhile).
    func isRunning(_ domain: String) -> Bool { running[domain] != nil }
}

extension CopyJobRecord {
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
                                      seconds: finished.map { $0.timeIntervalSince(started) })
        case .failed:
            let code = errorCode.flatMap(AgentError.Code.init(rawValue:)) ?? .internal
            throw AgentError(code, errorMessage ?? "the copy failed", details: ["domain": domain])
        case .running:
            throw AgentError(.internal, "the copy of \(domain) has not finished")
        }
    }
}
