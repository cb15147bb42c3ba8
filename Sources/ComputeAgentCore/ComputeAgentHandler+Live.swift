import AgentAPI
import AgentProtocol
import AgentRuntime
import Foundation

// LIVE-COPY, LIVE-LOCALIZE and LIVE-ABORT (docs/protocol.md, "Live copy").

extension ComputeAgentHandler {
    /// MiB/s of `bandwidth=` as libvirt's bytes/s.
    static func bandwidthBytes(_ mib: UInt64?) throws(AgentError) -> UInt64? {
        guard let mib else { return nil }
        let (bytes, overflow) = mib.multipliedReportingOverflow(by: 1 << 20)
        guard !overflow else { throw AgentError.invalidArgument("bandwidth=\(mib) MiB/s is too large") }
        return bytes
    }

    /// The share, refused when a mount-mode pool is not active.
    func activeShare(_ ref: ShareRef) async throws -> Share {
        let share = try await share(ref)
        if share.attach == .mount, share.pool != nil {
            let pools = self.pools
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted); run POOL-ENSURE again")
            }
        }
        return share
    }

    static func logLine(_ line: String) {
        FileHandle.standardError.write(Data("compute-agent: \(line)\n".utf8))
    }

    /// `LIVE-COPY domain=D (pool=P | server=S export=E) [bandwidth=MIB]`.
    func liveCopy(_ request: LiveCopyRequest, reply: ReplyStream) async throws -> Fields {
        let name = try Validation.domainName(request.domain)
        let bandwidth = try Self.bandwidthBytes(request.bandwidthMiB)
        let share = try await activeShare(request.share)
        let shareRoot = try share.target.map { (t: String) throws(AgentError) -> String in
            try confinement.shareRoot(of: t, key: "the target of pool \(share.pool ?? ""), target")
        }
        let session = self.session
        let state = self.state
        let jobs = self.jobs
        let started = try await exclusive(name) { () async throws -> LiveStart in
            if let job = try await jobs.runningLive(name, kind: .copy, share: share, dir: nil) { return .job(job, attached: true) }
            let read = try await ComputeWork.run { () throws -> LiveCopyPreparation.Domain in try LiveCopyPreparation.read(session, domain: name) }
            let plan = try LiveCopyPlanning.copy(read.xml, domain: name, uuid: read.uuid, running: read.running, persistent: read.persistent, share: share)
            if plan.moving.isEmpty { return .nothing(plan, uuid: read.uuid) }
            try await ComputeWork.run { () throws -> Void in try LiveCopyPreparation.requireSingleImages(plan) }
            let definitions = read.definitions
            let prepare = { @Sendable () throws -> Void in
                try LiveCopyPreparation.prepareShare(plan, share: share, shareRoot: shareRoot, definitions: definitions, log: Self.logLine)
            }
            if share.attach == .libnfs {
                try await remote("LIVE-COPY of \(name) (preparing \(share.server):\(share.export))", prepare)
            } else {
                try await ComputeWork.run(prepare)
            }
            let saved = try await ComputeWork.run { () throws -> (path: String, created: Bool) in
                try LiveCopyPreparation.saveDefinition(session, state: state, domain: name)
            }
            let record = LiveJobRecord(kind: .copy, domain: name, uuid: read.uuid, share: share, dir: nil, disks: plan.disks,
                                       phase: .mirroring, pivoted: [], copied: [:], virtualSizes: [:], saved: saved.path,
                                       errorCode: nil, errorMessage: nil, started: Date(), finished: nil)
            var runner = liveRunner(record, share: share, fileRoot: shareRoot ?? "/", bandwidth: bandwidth, finish: { _ in nil })
            // Nothing pivoted: the definition is still the one kept; a kept copy this job
            // made would outlive its reason (and go stale if the definition changes).
            if saved.created {
                let uuid = read.uuid
                runner.abandon = { _ in _ = await state.readOffPool { s -> Bool? in s.remove("domains", Adoption.savedName(uuid)); return true } }
            }
            let (job, attached) = try await jobs.startLive(record, runner: runner)
            return .job(job, attached: attached)
        }
        return try await finishLive(started, verb: LiveCopyRequest.self, share: share, dir: nil, reply: reply)
    }

    /// `LIVE-LOCALIZE domain=D (pool=P | server=S export=E) [dir=PATH] [bandwidth=MIB]`.
    func liveLocalize(_ request: LiveLocalizeRequest, reply: ReplyStream) async throws -> Fields {
        let name = try Validation.domainName(request.domain)
        let bandwidth = try Self.bandwidthBytes(request.bandwidthMiB)
        let dir = try Validation.absolutePath(request.dir ?? configuration.imagesRoot, key: "dir")
        try confinement.imagesDirectory(dir, key: "dir")
        let share = try await activeShare(request.share)
        let session = self.session
        let jobs = self.jobs
        let localization = Localization(session: session, state: state, imagesRoot: configuration.imagesRoot)
        let imagesRoot = configuration.imagesRoot
        let started = try await exclusive(name) { () async throws -> LiveStart in
            if let job = try await jobs.runningLive(name, kind: .localize, share: share, dir: dir) { return .job(job, attached: true) }
            let read = try await ComputeWork.run { () throws -> LiveCopyPreparation.Domain in try LiveCopyPreparation.read(session, domain: name) }
            let planned = try LiveCopyPlanning.localize(read.xml, domain: name, uuid: read.uuid, running: read.running,
                                                        persistent: read.persistent, share: share, dir: dir)
            if planned.moving.isEmpty { return .nothing(planned, uuid: read.uuid) }
            let definitions = read.definitions
            let plan = try await ComputeWork.run { () throws -> LivePlan in
                try LiveCopyPreparation.prepareLocal(planned, share: share, dir: dir, imagesRoot: imagesRoot, definitions: definitions, session: session)
            }
            let record = LiveJobRecord(kind: .localize, domain: name, uuid: read.uuid, share: share, dir: dir, disks: plan.disks,
                                       phase: .mirroring, pivoted: [], copied: [:], virtualSizes: [:], saved: nil,
                                       errorCode: nil, errorMessage: nil, started: Date(), finished: nil)
            // Once every disk is pivoted: the definition ADOPT or LIVE-COPY kept, onto the
            // local files (LOCALIZE's redefine; the saved file is used up).
            let runner = liveRunner(record, share: share, fileRoot: imagesRoot, bandwidth: bandwidth, finish: { r in
                let moved = r.disks.filter { r.pivoted.contains($0.target) }.compactMap { d -> LocalizeJobRecord.Moved? in
                    guard case .file(let path) = d.to else { return nil }
                    return LocalizeJobRecord.Moved(target: d.target, from: d.from, to: path, size: r.virtualSizes[d.target] ?? 0, digest: "")
                }
                return try await ComputeWork.run { () throws -> String? in try localization.redefine(domain: name, moved: moved, dir: dir) }
            })
            let (job, attached) = try await jobs.startLive(record, runner: runner)
            return .job(job, attached: attached)
        }
        return try await finishLive(started, verb: LiveLocalizeRequest.self, share: share, dir: dir, reply: reply)
    }

    enum LiveStart: Sendable {
        case job(LiveJob, attached: Bool)
        /// Nothing to move (every disk is there already, or none is on the share).
        case nothing(LivePlan, uuid: String)
    }

    func liveRunner(_ record: LiveJobRecord, share: Share, fileRoot: String, bandwidth: UInt64?,
                    finish: @escaping @Sendable (LiveJobRecord) async throws -> String?) -> LiveCopyRunner {
        let store = state
        let name = record.uuid + ".live.json"
        let control = LibvirtLiveControl(session: session, domain: record.domain, share: share, fileRoot: fileRoot)
        var runner = LiveCopyRunner(control: control, progress: JobProgress(total: 0, disk: record.disks.first { !$0.already }?.target ?? ""),
                                    abort: LiveSwitch(), save: { r in try? await store.offPool { try $0.writeJSON(r, "jobs", name) } })
        runner.finish = finish
        runner.bandwidthBytes = bandwidth
        runner.log = Self.logLine
        return runner
    }

    /// Streams the job (or answers at once when there is nothing to do).
    func finishLive<V: AgentVerb>(_ started: LiveStart, verb: V.Type, share: Share, dir: String?,
                                  reply: ReplyStream) async throws -> Fields where V.Answer == LiveCopyAnswer {
        switch started {
        case .nothing(let plan, let uuid):
            var saved: String?
            if V.self == LiveCopyRequest.self {
                let state = self.state
                saved = try await state.offPool { (s: StateStore) throws -> String? in
                    try s.read("domains", Adoption.savedName(uuid)) == nil ? nil : s.path("domains", Adoption.savedName(uuid))
                }
            }
            let session = self.session
            let domain = plan.domain
            let disks = plan.disks
            let sizes = try await ComputeWork.run { () throws -> [String: UInt64] in
                let d = try session.domain(domain)
                var sizes: [String: UInt64] = [:]
                for disk in disks { sizes[disk.target] = try lv { try d.blockInfo(disk: disk.target).capacity } }
                return sizes
            }
            let moved = plan.disks.map {
                LiveMovedDisk(disk: $0.target, from: $0.from, to: $0.to.spelled, path: $0.path, format: $0.format,
                              virtualSize: sizes[$0.target] ?? 0, copied: 0, already: true)
            }
            return try await reply.answer(V.self, LiveCopyAnswer(moved: moved, domain: plan.domain, share: share.facts, bytes: 0,
                                                                 changed: false, attached: false, saved: saved, dir: dir))
        case .job(let job, let attached):
            let record = try await JobStreaming.awaitJob(job.job, every: configuration.progressInterval, reply: reply)
            let answer = try record.answer(attached: attached)
            if record.phase == .done, answer.bytes > 0 {
                try await reply.progress(TransferProgress(done: answer.bytes, total: answer.bytes, rate: job.job.progress.snapshot.rate,
                                                          disk: record.pivoted.last))
            }
            return try await reply.answer(V.self, answer)
        }
    }

    /// `LIVE-ABORT domain=D`: cancels the live copy of D before its pivot phase; waits
    /// until its mirrors are cancelled and its destinations removed.
    func liveAbort(_ request: LiveAbortRequest) async throws -> LiveAbortRequest.Answer {
        let name = try Validation.domainName(request.domain)
        guard let job = await jobs.liveJob(name) else { return .init(aborted: false, pivoted: false) }
        switch job.abort.requestAbort() {
        case .pivoting:
            return .init(aborted: false, pivoted: true)
        case .requested:
            // The job cancels its mirrors and removes their copies, then ends.
            _ = try? await job.job.task.value
            return .init(aborted: true, pivoted: false)
        }
    }
}
