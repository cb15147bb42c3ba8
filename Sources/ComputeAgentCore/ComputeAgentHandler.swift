import AgentAPI
import AgentProtocol
import LibNFS
import AgentRuntime
import ImageCopy

/// Answers whether the hypervisor is usable; the seam between the handler and libvirt.
public protocol HypervisorProbe: Sendable {
    func check() async -> HealthCheck
}

/// The compute agent's verbs: wire decoding, validation and answers. The work is in
/// `Pools`, `CopyPlan` + `CopyJobs`, `Adoption` and `Verification`; everything that
/// blocks runs through `ComputeWork`.
///
/// Verbs that change the host (POOL-ENSURE, COPY, ADOPT, RESTORE, LOCALIZE, LIVE-COPY,
/// LIVE-LOCALIZE, LIVE-ABORT, VERIFY with a nonce)
/// are served only to authenticated peers (unix socket as root, or mutual TLS).
public struct ComputeAgentHandler: RequestHandler {
    public let configuration: ComputeAgentConfiguration
    let hypervisor: any HypervisorProbe
    /// Whether the migration hook is installed and loaded (HEALTH's `migration-hook`,
    /// MIGRATION-TARGET).
    let hook: any MigrationHookProbe
    /// HEALTH's checks, shared by the requests that arrive while they run (`SharedProbe`).
    let health: SharedProbe<[HealthCheck]>
    let session: LibvirtSession
    let state: StateStore
    let jobs: CopyJobs
    /// One changing request per domain at a time (docs/compute-agent.md).
    let locks = DomainLocks()
    /// MIGRATEs running on this agent (MIGRATE-ABORT marks them).
    let migrations = MigrationRegistry()
    var confinement: Confinement { Confinement(configuration) }

    public init(configuration: ComputeAgentConfiguration, hypervisor: any HypervisorProbe, hook: any MigrationHookProbe) {
        self.configuration = configuration
        self.hypervisor = hypervisor
        self.hook = hook
        health = SharedProbe { () async -> [HealthCheck] in
            async let libvirt = hypervisor.check()
            async let gate = Self.hookCheck(hook)
            return await [libvirt, gate]
        }
        session = LibvirtSession(uri: configuration.libvirtURI)
        state = StateStore(root: configuration.stateDir)
        jobs = CopyJobs(state: state, copier: ImageCopier(inFlight: configuration.copyInFlight, chunkBytes: configuration.copyChunkBytes,
                                                                 verification: configuration.copyVerification))
    }

    public var verbs: [String] {
        [HealthQuery.verb, DomainQuery.verb, DomainsQuery.verb, PoolEnsureRequest.verb, CopyRequest.verb, AdoptRequest.verb,
         RestoreRequest.verb, VerifyRequest.verb, LocalizeRequest.verb, MigrationFactsQuery.verb, LibvirtReachQuery.verb,
         DirtyRateQuery.verb, MigrationTargetQuery.verb, MigrateRequest.verb, MigrateAbortRequest.verb, PortListenRequest.verb,
         PortProbeRequest.verb, LiveCopyRequest.verb, LiveLocalizeRequest.verb, LiveAbortRequest.verb]
    }

    var pools: Pools { Pools(session: session, state: state, checkMountOptions: configuration.driverKeepsMountOptions) }

    /// Runs a changing request's work holding `domain` (``DomainLocks``).
    func exclusive<T: Sendable>(_ domain: String, _ body: @Sendable () async throws -> T) async throws -> T {
        try await locks.withDomain(domain, wait: configuration.domainWait, body)
    }

    /// Runs libnfs work of a request on ``RemoteWork`` with the configured deadline.
    func remote<T: Sendable>(_ what: String, _ body: @escaping @Sendable () throws -> T) async throws(AgentError) -> T {
        try await RemoteWork.run(timeout: configuration.nfsRequestTimeout, what: what, body)
    }

    public func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case HealthQuery.verb:
            _ = try HealthQuery(request)
            return try await Health.answer(await health.run(), context: context, reply: reply)
        case DomainQuery.verb:
            let query = try DomainQuery(request)
            try context.authorize(query)
            return try await reply.answer(DomainQuery.self, try await domain(query))
        case DomainsQuery.verb:
            try context.authorize(DomainsQuery(request))
            return try await reply.answer(DomainsQuery.self, try await domains())
        case LocalizeRequest.verb:
            let localize = try LocalizeRequest(request)
            try context.authorize(localize)
            return try await self.localize(localize, reply: reply)
        case PoolEnsureRequest.verb:
            let ensure = try PoolEnsureRequest(request)
            try context.authorize(ensure)
            return try await poolEnsure(ensure).encoded()
        case CopyRequest.verb:
            let copy = try CopyRequest(request)
            try context.authorize(copy)
            return try await self.copy(copy, reply: reply)
        case AdoptRequest.verb:
            let adopt = try AdoptRequest(request)
            try context.authorize(adopt)
            return try await reply.answer(AdoptRequest.self, try await self.adopt(adopt))
        case RestoreRequest.verb:
            let restore = try RestoreRequest(request)
            try context.authorize(restore)
            return try await self.restore(restore).encoded()
        case VerifyRequest.verb:
            let verify = try VerifyRequest(request)
            try context.authorize(verify)
            return try await self.verify(verify).encoded()
        case LiveCopyRequest.verb:
            let live = try LiveCopyRequest(request)
            try context.authorize(live)
            return try await liveCopy(live, reply: reply)
        case LiveLocalizeRequest.verb:
            let live = try LiveLocalizeRequest(request)
            try context.authorize(live)
            return try await liveLocalize(live, reply: reply)
        case LiveAbortRequest.verb:
            let abort = try LiveAbortRequest(request)
            try context.authorize(abort)
            return try await liveAbort(abort).encoded()
        case PortListenRequest.verb: return try portListen(request, context: context)
        case PortProbeRequest.verb: return try await portProbe(request, context: context, reply: reply)
        case MigrationFactsQuery.verb:
            let facts = try MigrationFactsQuery(request)
            try context.authorize(facts)
            return try await reply.answer(MigrationFactsQuery.self, try await migrationFacts(facts))
        case LibvirtReachQuery.verb:
            let reach = try LibvirtReachQuery(request)
            try context.authorize(reach)
            return try await libvirtReach(reach).encoded()
        case DirtyRateQuery.verb:
            let rate = try DirtyRateQuery(request)
            try context.authorize(rate)
            return try await dirtyRate(rate).encoded()
        case MigrationTargetQuery.verb:
            let target = try MigrationTargetQuery(request)
            try context.authorize(target)
            return try await reply.answer(MigrationTargetQuery.self, try await migrationTarget(target))
        case MigrateRequest.verb:
            let migrate = try MigrateRequest(request)
            try context.authorize(migrate)
            return try await self.migrate(migrate, context: context, reply: reply)
        case MigrateAbortRequest.verb:
            let abort = try MigrateAbortRequest(request)
            try context.authorize(abort)
            return try await migrateAbort(abort).encoded()
        default:
            throw unknownVerb(request.verb)
        }
    }

    /// HEALTH's `migration-hook`: ok only when the hook is installed and libvirtd has
    /// loaded it; the detail says what to do otherwise.
    static func hookCheck(_ hook: any MigrationHookProbe) async -> HealthCheck {
        let s = await hook.status()
        return HealthCheck("migration-hook", ok: s.installed && s.loaded, detail: s.detail,
                           facts: ["installed": s.installed ? "yes" : "no", "loaded": s.loaded ? "yes" : "no"])
    }

    /// Notes in storagectl's record of ready shares (read by the migration hook) that
    /// this host has the share at `target` ready, or no longer has it.
    func recordReady(_ target: String, ready: Bool) async throws(AgentError) {
        try await state.offPool { (store: StateStore) throws -> Void in
            let record = ReadyShareRecord(state: store)
            if ready { try record.add(target) } else { try record.remove(target) }
        }
    }

    // MARK: - DOMAIN

    /// `DOMAIN name=N`: one `DATA` per disk, then the domain's identity and state.
    func domain(_ request: DomainQuery) async throws -> DomainQuery.Answer {
        let name = try Validation.domainName(request.name, key: "name")
        let session = self.session
        return try await ComputeWork.run { () throws -> DomainReport in try DomainReport.read(session, name: name) }.answer
    }

    // MARK: - POOL-ENSURE

    /// Validates POOL-ENSURE's values; pure.
    static func poolSpec(_ request: PoolEnsureRequest) throws(AgentError) -> PoolSpec {
        let name = try Validation.poolName(request.name)
        let server = try Validation.server(request.server)
        let export = try Validation.absolutePath(request.export, key: "export")
        guard request.nfsVersion == "3" else {
            throw AgentError(.unsupported, "nfs-version=\(request.nfsVersion) is not supported: storagectl pins NFSv3 (QEMU's nfs driver speaks only v3, and libnfs 4.0 cannot write large files over v4)")
        }
        let target = try request.target.map { (t: String) throws(AgentError) -> String in try Validation.absolutePath(t, key: "target") }
        return PoolSpec(name: name, server: server, export: export, target: target, attach: request.attach, nfsVersion: 3)
    }

    func poolEnsure(_ request: PoolEnsureRequest) async throws -> PoolEnsureRequest.Answer {
        let spec = try Self.poolSpec(request)
        var pools = self.pools
        if let target = spec.target {
            let root = try confinement.shareRoot(of: target, key: "target")
            _ = try await ComputeWork.run { () throws -> Bool in try Confinement.requireRealDirectories(target, under: root, key: "target") }
            let mustExist = configuration.driverBuildsTargets
            pools.checkBuiltTarget = { (t: String) throws(AgentError) in
                let exists = try Confinement.requireRealDirectories(t, under: root, key: "target")
                if mustExist && !exists {
                    throw AgentError(.invalidState, "the target \(t) of pool \(spec.name) is not a directory after libvirt built it; it was not mounted")
                }
            }
        }
        let checked = pools
        let outcome = try await ComputeWork.run { () throws -> Pools.Outcome in
            let pools = checked
            return spec.attach == .mount ? try pools.ensureMount(spec) : try pools.ensureLibNFS(spec)
        }
        if spec.attach == .mount, let target = spec.target, outcome.active {
            try await recordReady(target, ready: true)
        }
        return PoolEnsureRequest.Answer(
            name: spec.name, attach: spec.attach, server: spec.server, export: spec.export, target: spec.target,
            nfsVersion: String(spec.nfsVersion), mountOptions: PoolSpec.mountOptions,
            active: spec.attach == .mount ? outcome.active : true, autostart: outcome.autostart,
            changed: outcome.changed, actions: outcome.actions)
    }

    // MARK: - share selection

    /// The share a request names (`pool=NAME`, `pool-target=PATH`, or `server=S export=E`
    /// for libnfs), validated; blocking lookups run through `ComputeWork`.
    func share(_ ref: ShareRef) async throws -> Share {
        let pools = self.pools
        switch ref {
        case .pool(let pool):
            let name = try Validation.poolName(pool, key: "pool")
            let share = try await ComputeWork.run { () throws -> Share in try pools.resolve(name) }
            if let target = share.target { _ = try confinement.shareRoot(of: target, key: "the target of pool \(name), target") }
            return share
        case .poolTarget(let target):
            let path = try Validation.absolutePath(target, key: "pool-target")
            _ = try confinement.shareRoot(of: path, key: "pool-target")
            let found = try await ComputeWork.run { () throws -> Share? in try pools.share(containing: path + "/x") }
            guard let found, found.target == path else {
                throw AgentError(.notFound, "no netfs pool on this host has the target path \(path); create it with POOL-ENSURE")
            }
            return found
        case .nfs(let server, let export):
            let server = try Validation.server(server)
            let export = try Validation.absolutePath(export, key: "export")
            // A request must not make this host mount, as root, a server it does not use.
            if !configuration.nfsServers.contains(server) {
                let known = try await ComputeWork.run { () throws -> Set<String> in try pools.knownServers() }
                try confinement.requireServer(server, known: known)
            }
            return Share(pool: nil, server: server, export: export, attach: .libnfs, target: nil)
        }
    }

    // MARK: - COPY

    /// `COPY domain=D (pool=P | server=S export=E)`: copies every local file disk of the
    /// shut-off domain into the share, streaming `PROGRESS`; see docs/protocol.md.
    func copy(_ request: CopyRequest, reply: ReplyStream) async throws -> Fields {
        let name = try Validation.domainName(request.domain)
        let share = try await share(request.share)
        let session = self.session
        let jobs = self.jobs
        let timeout = configuration.nfsRequestTimeout
        // Starting (or attaching to) the job holds the domain; streaming it does not.
        let (plan, start) = try await exclusive(name) { () async throws -> (CopyPlan, CopyJobs.Start) in
            // A running job is attached to whatever state the domain is in now.
            let verb: String? = await jobs.isRunning(name) ? nil : "COPY"
            let plan = try await ComputeWork.run { () throws -> CopyPlan in
                try CopyPlan.make(session, domain: name, share: share, requireShutOff: verb)
            }
            var start = try await jobs.start(plan, share: share)
            // A finished record is only as good as the share: if a copy it names is gone or
            // has another size (removed on the server, say), copy again.
            if case .finished = start, !(await Self.copiesPresent(plan, share: share, timeout: timeout)) {
                start = try await jobs.start(plan, share: share, trustFinished: false)
            }
            return (plan, start)
        }
        switch start {
        case .finished(let record):
            return try await reply.answer(CopyRequest.self, try record.answer(attached: true, restarted: false))
        case .job(let job, let attached):
            let skipped = plan.skipped.map { CopyRow.skipped(disk: $0.target, source: $0.source, reason: $0.reason) }
            for row in skipped { try await reply.data(row.encoded()) }
            let record = try await stream(job, reply: reply)
            let answer = try record.answer(attached: attached, restarted: job.restarted)
            return try await reply.answer(CopyRequest.self, answer)
        }
    }

    /// Sends the job's progress every `progressInterval` until it ends. When the client
    /// goes away the job goes on; the request just stops streaming.
    func stream(_ job: CopyJob, reply: ReplyStream) async throws -> CopyJobRecord {
        try await JobStreaming.awaitJob(job, every: configuration.progressInterval, reply: reply)
    }

    // MARK: - ADOPT / RESTORE

    func adopt(_ request: AdoptRequest) async throws -> AdoptRequest.Answer {
        let name = try Validation.domainName(request.domain)
        let share = try await share(request.share)
        if let attach = request.attach, attach != share.attach {
            throw AgentError.invalidArgument("attach=\(attach.rawValue) does not match the share, which is in \(share.attach.rawValue) mode")
        }
        if let running = await jobs.runningVerb(name) {
            throw AgentError(.busy, "a \(running) of \(name) is running; ADOPT after it has finished")
        }
        if share.attach == .mount {
            let pools = self.pools
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted); run POOL-ENSURE again")
            }
        }
        let adoption = Adoption(session: session, state: state)
        let outcome = try await exclusive(name) { () async throws -> Adoption.Outcome in
            if let running = await jobs.runningVerb(name) {
                throw AgentError(.busy, "a \(running) of \(name) is running; ADOPT after it has finished")
            }
            // libnfs mode stats the copies through libnfs: on the NFS threads, bounded.
            if share.attach == .libnfs {
                return try await remote("ADOPT of \(name) (reading \(share.server):\(share.export))") { () throws -> Adoption.Outcome in
                    try adoption.adopt(domain: name, share: share)
                }
            }
            return try await ComputeWork.run { () throws -> Adoption.Outcome in try adoption.adopt(domain: name, share: share) }
        }
        return AdoptRequest.Answer(moved: outcome.moved.map { MovedDisk(disk: $0.target, from: $0.from, to: $0.to) },
                                   domain: name, share: share.facts, changed: outcome.changed, saved: outcome.saved)
    }

    func restore(_ request: RestoreRequest) async throws -> RestoreRequest.Answer {
        let name = try Validation.domainName(request.domain)
        if let running = await jobs.runningVerb(name) {
            throw AgentError(.busy, "a \(running) of \(name) is running; RESTORE after it has finished")
        }
        let adoption = Adoption(session: session, state: state)
        let jobs = self.jobs
        let outcome = try await exclusive(name) { () async throws -> (Bool, String?) in
            if let running = await jobs.runningVerb(name) {
                throw AgentError(.busy, "a \(running) of \(name) is running; RESTORE after it has finished")
            }
            return try await ComputeWork.run { () throws -> (Bool, String?) in try adoption.restore(domain: name) }
        }
        return RestoreRequest.Answer(domain: name, changed: outcome.0, from: outcome.1)
    }

    // MARK: - LOCALIZE / DOMAINS

    /// `LOCALIZE domain=D (pool=P | server=S export=E) [dir=PATH]`: copies every disk
    /// of the shut-off domain that is on the share to `DIR/<domain dir>/<file name>`
    /// (content-digest verified; `DIR`: `dir=`, under `--images-root`, which is the
    /// default) and redefines the domain onto the local copies; see docs/protocol.md.
    func localize(_ request: LocalizeRequest, reply: ReplyStream) async throws -> Fields {
        let name = try Validation.domainName(request.domain)
        let dir = try Validation.absolutePath(request.dir ?? configuration.imagesRoot, key: "dir")
        try confinement.imagesDirectory(dir, key: "dir")
        let share = try await share(request.share)
        if share.attach == .mount, share.pool != nil {
            let pools = self.pools
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted); run POOL-ENSURE again")
            }
        }
        // A running LOCALIZE of the domain is attached to; else a new job (or nothing to do).
        // Planning and starting hold the domain; streaming the job does not.
        let jobs = self.jobs
        let localization = Localization(session: session, state: state, imagesRoot: configuration.imagesRoot)
        let started = try await exclusive(name) { () async throws -> (LocalizeJob, Bool)? in
            if let running = try await jobs.runningLocalize(name, share: share, dir: dir) { return (running, true) }
            let prepare = { @Sendable () throws -> LocalizePlan? in try localization.prepare(domain: name, share: share, dir: dir) }
            let plan = share.attach == .libnfs
                ? try await remote("LOCALIZE of \(name) (reading \(share.server):\(share.export))", prepare)
                : try await ComputeWork.run(prepare)
            guard let plan else { return nil }
            let (job, attached) = try await jobs.startLocalize(plan) { moved in
                try await ComputeWork.run { () throws -> String? in try localization.redefine(domain: name, moved: moved, dir: dir) }
            }
            return (job, attached)
        }
        guard let started else {
            return try await reply.answer(LocalizeRequest.self, LocalizeRequest.Answer(
                moved: [], domain: name, share: share.facts, dir: dir, changed: false, restored: nil))
        }
        let (job, attached) = started
        let record = try await JobStreaming.awaitJob(job, every: configuration.progressInterval, reply: reply)
        let moved = try record.images()
        if let last = record.finalProgress { try await reply.progress(last) }
        return try await reply.answer(LocalizeRequest.self, LocalizeRequest.Answer(
            moved: moved, domain: name, share: share.facts, dir: dir, changed: true, restored: record.restoredFrom,
            attached: attached, restarted: job.restarted))
    }

    /// `DOMAINS`: one `DATA name= state= persistent= shared=` per domain (persistent or
    /// running), `shared=yes` when a disk is under a netfs pool target or an NFS network disk.
    func domains() async throws -> [AgentAPI.DomainListing] {
        let session = self.session
        let entries = try await ComputeWork.run { () throws -> [DomainListing.Entry] in try DomainListing.list(session) }
        return entries.map {
            AgentAPI.DomainListing(name: $0.name, state: DomainRunState(rawValue: $0.state), persistent: $0.persistent, shared: $0.shared)
        }
    }

    // MARK: - VERIFY

    func verify(_ request: VerifyRequest) async throws -> VerifyRequest.Answer {
        let nonce: Verification.Nonce
        switch request.nonce {
        case .none: nonce = .none
        case .write(let name): nonce = .write(name: try Validation.nonceName(name, key: "nonce-write"))
        case .read(let name, let v):
            guard !v.isEmpty, v.utf8.count <= 128, v.utf8.allSatisfy({ Validation.isAlnum($0) }) else {
                throw AgentError.invalidArgument("value= must be the nonce-value= the writing host answered (letters and digits)")
            }
            nonce = .read(name: try Validation.nonceName(name, key: "nonce-read"), value: v)
        }
        let outcome: Verification.Outcome
        var answer: VerifyRequest.Answer
        let pools = self.pools
        if let ref = request.share {
            let relative = try Validation.relativePath(request.path)
            let share = try await share(ref)
            if share.attach == .mount, let target = share.target {
                let abs = target + "/" + relative
                guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                    try? await recordReady(target, ready: false)
                    throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted here); run POOL-ENSURE")
                }
                outcome = try await remote("VERIFY of \(abs)") { () throws -> Verification.Outcome in
                    try Verification.local(path: abs, root: target, nonce: nonce)
                }
                try await recordReady(target, ready: true)
                answer = VerifyRequest.Answer(path: abs, via: .mount, size: outcome.size, format: outcome.header.format)
            } else {
                outcome = try await remote("VERIFY of \(share.server):\(share.export)/\(relative)") { () throws -> Verification.Outcome in
                    try Verification.remote(share: share, relative: relative, nonce: nonce)
                }
                answer = VerifyRequest.Answer(path: relative, via: .libnfs, server: share.server, export: share.export,
                                              size: outcome.size, format: outcome.header.format)
            }
        } else {
            // Mount mode: an absolute path under the target of a netfs pool of this host.
            let abs = try Validation.absolutePath(request.path, key: "path")
            _ = try confinement.shareRoot(of: abs, key: "path")
            guard let share = try await ComputeWork.run({ () throws -> Share? in try pools.share(containing: abs) }) else {
                throw AgentError(.invalidArgument, "\(abs) is not under the target path of a netfs pool of this host; VERIFY reads shared copies only")
            }
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                if let target = share.target { try? await recordReady(target, ready: false) }
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted here); run POOL-ENSURE")
            }
            let target = share.target ?? abs
            _ = try confinement.shareRoot(of: target, key: "the target of pool \(share.pool ?? ""), target")
            outcome = try await remote("VERIFY of \(abs)") { () throws -> Verification.Outcome in
                try Verification.local(path: abs, root: target, nonce: nonce)
            }
            try await recordReady(target, ready: true)
            answer = VerifyRequest.Answer(path: abs, via: .mount, pool: share.pool, size: outcome.size, format: outcome.header.format)
        }
        answer.allocated = outcome.allocated
        answer.virtualSize = outcome.header.virtualSize
        answer.nonce = outcome.nonce.name
        answer.nonceValue = outcome.nonce.value
        answer.nonceMatch = outcome.nonce.matched
        return answer
    }
}

extension ComputeAgentHandler {
    /// True when every planned copy exists on the share with the source's size (libnfs
    /// stat, as root, on a blocking thread). Any failure to ask counts as absent.
    static func copiesPresent(_ plan: CopyPlan, share: Share, timeout: Duration) async -> Bool {
        let disks = plan.disks.map { ("/" + $0.relativePath, $0.size) }
        return (try? await RemoteWork.run(timeout: timeout, what: "checking the copies on \(share.server):\(share.export)") { () throws -> Bool in
            try SharedFiles.withNFS(share) { nfs throws(AgentError) -> Bool in
                for (path, size) in disks {
                    guard let st = try? nfs.stat(path), st.size == size else { return false }
                }
                return true
            }
        }) ?? false
    }
}
