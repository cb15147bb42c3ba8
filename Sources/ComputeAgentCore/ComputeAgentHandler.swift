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
/// Verbs that change the host (POOL-ENSURE, COPY, ADOPT, RESTORE, LOCALIZE, VERIFY with a nonce)
/// are served only to authenticated peers (unix socket as root, or mutual TLS).
public struct ComputeAgentHandler: RequestHandler {
    public let configuration: ComputeAgentConfiguration
    let hypervisor: any HypervisorProbe
    let session: LibvirtSession
    let state: StateStore
    let jobs: CopyJobs

    public init(configuration: ComputeAgentConfiguration, hypervisor: any HypervisorProbe) {
        self.configuration = configuration
        self.hypervisor = hypervisor
        session = LibvirtSession(uri: configuration.libvirtURI)
        state = StateStore(root: configuration.stateDir)
        jobs = CopyJobs(state: state, copier: ImageCopier(inFlight: configuration.copyInFlight, chunkBytes: configuration.copyChunkBytes,
                                                                 verification: configuration.copyVerification))
    }

    public var verbs: [String] { ["HEALTH", "DOMAIN", "DOMAINS", "POOL-ENSURE", "COPY", "ADOPT", "RESTORE", "VERIFY", "LOCALIZE"] }

    var pools: Pools { Pools(session: session, state: state, checkMountOptions: configuration.driverKeepsMountOptions) }

    public func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case "HEALTH":
            return try await Health.answer([await hypervisor.check()], context: context, reply: reply)
        case "DOMAIN":
            return try await domain(request, reply: reply)
        case "DOMAINS":
            return try await domains(request, reply: reply)
        case "LOCALIZE":
            try context.requireAuthenticated(request.verb)
            return try await localize(request, reply: reply)
        case "POOL-ENSURE":
            try context.requireAuthenticated(request.verb)
            return try await poolEnsure(request)
        case "COPY":
            try context.requireAuthenticated(request.verb)
            return try await copy(request, reply: reply)
        case "ADOPT":
            try context.requireAuthenticated(request.verb)
            return try await adopt(request, reply: reply)
        case "RESTORE":
            try context.requireAuthenticated(request.verb)
            return try await restore(request)
        case "VERIFY":
            if request.fields["nonce-write"] != nil || request.fields["nonce-read"] != nil {
                try context.requireAuthenticated("VERIFY with a nonce")
            }
            return try await verify(request)
        default:
            throw unknownVerb(request.verb)
        }
    }

    // MARK: - DOMAIN

    /// `DOMAIN name=N`: one `DATA` per disk, then the domain's identity and state.
    func domain(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try request.requireKeys(["name"])
        let name = try Validation.domainName(try request.single("name"), key: "name")
        let session = self.session
        let report = try await ComputeWork.run { () throws -> DomainReport in try DomainReport.read(session, name: name) }
        for line in report.dataLines { try await reply.data(line) }
        return report.okFields
    }

    // MARK: - POOL-ENSURE

    /// Parses and validates POOL-ENSURE; pure.
    static func poolSpec(_ request: Request) throws(AgentError) -> PoolSpec {
        try request.requireKeys(["name", "server", "export", "target", "attach", "nfs-version"])
        let name = try Validation.poolName(try request.single("name"))
        let server = try Validation.server(try request.single("server"))
        let export = try Validation.absolutePath(try request.single("export"), key: "export")
        let attachText = try request.optional("attach") ?? "mount"
        guard let attach = AttachMode(rawValue: attachText) else {
            throw .invalidArgument("attach= must be mount or libnfs, not '\(attachText)'")
        }
        let version = try request.optional("nfs-version") ?? "3"
        guard version == "3" else {
            throw AgentError(.unsupported, "nfs-version=\(version) is not supported: storagectl pins NFSv3 (QEMU's nfs driver speaks only v3, and libnfs 4.0 cannot write large files over v4)")
        }
        var target: String?
        switch attach {
        case .mount:
            target = try Validation.absolutePath(try request.single("target"), key: "target")
        case .libnfs:
            if request.fields["target"] != nil {
                throw .invalidArgument("target= is for attach=mount; in attach=libnfs nothing is mounted")
            }
        }
        return PoolSpec(name: name, server: server, export: export, target: target, attach: attach, nfsVersion: 3)
    }

    func poolEnsure(_ request: Request) async throws -> Fields {
        let spec = try Self.poolSpec(request)
        let pools = self.pools
        let outcome = try await ComputeWork.run { () throws -> Pools.Outcome in
            spec.attach == .mount ? try pools.ensureMount(spec) : try pools.ensureLibNFS(spec)
        }
        var f: Fields = ["name": spec.name, "attach": spec.attach.rawValue, "server": spec.server, "export": spec.export]
        if let t = spec.target { f.append("target", t) }
        f.append("nfs-version", String(spec.nfsVersion))
        if spec.attach == .mount {
            f.append("type", "netfs")
            f.append("mount-options", PoolSpec.mountOptions.joined(separator: ","))
            f.append("state", outcome.active ? "active" : "inactive")
            f.append("autostart", outcome.autostart ? "yes" : "no")
        } else {
            f.append("ready", "yes")
        }
        f.append("changed", outcome.changed ? "yes" : "no")
        f.append("actions", outcome.actions.joined(separator: ","))
        return f
    }

    // MARK: - share selection

    /// `pool=NAME`, or `server=S export=E` (libnfs, no pool). Validated; blocking lookups
    /// run through `ComputeWork`.
    func share(_ request: Request, allowPoolTarget: Bool = false) async throws -> Share {
        let pool = try request.optional("pool")
        let server = try request.optional("server")
        let export = try request.optional("export")
        let poolTarget = allowPoolTarget ? try request.optional("pool-target") : nil
        let given = [pool != nil, server != nil || export != nil, poolTarget != nil].filter { $0 }.count
        guard given == 1 else {
            let choices = allowPoolTarget ? "pool=NAME, pool-target=PATH or attach=libnfs server=HOST export=PATH"
                                          : "pool=NAME or server=HOST export=PATH"
            throw AgentError.invalidArgument("\(request.verb) needs exactly one of \(choices)")
        }
        let pools = self.pools
        if let pool {
            let name = try Validation.poolName(pool, key: "pool")
            return try await ComputeWork.run { () throws -> Share in try pools.resolve(name) }
        }
        if let poolTarget {
            let path = try Validation.absolutePath(poolTarget, key: "pool-target")
            let found = try await ComputeWork.run { () throws -> Share? in try pools.share(containing: path + "/x") }
            guard let found, found.target == path else {
                throw AgentError(.notFound, "no netfs pool on this host has the target path \(path); create it with POOL-ENSURE")
            }
            return found
        }
        guard let server, let export else {
            throw AgentError.invalidArgument("\(request.verb) needs both server= and export=")
        }
        return Share(pool: nil, server: try Validation.server(server), export: try Validation.absolutePath(export, key: "export"),
                     attach: .libnfs, target: nil)
    }

    // MARK: - COPY

    /// `COPY domain=D (pool=P | server=S export=E)`: copies every local file disk of the
    /// shut-off domain into the share, streaming `PROGRESS`; see docs/protocol.md.
    func copy(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try request.requireKeys(["domain", "pool", "server", "export"])
        let name = try Validation.domainName(try request.single("domain"))
        let share = try await share(request)
        let session = self.session
        // A running job is attached to whatever state the domain is in now.
        let verb: String? = await jobs.isRunning(name) ? nil : "COPY"
        let plan = try await ComputeWork.run { () throws -> CopyPlan in
            try CopyPlan.make(session, domain: name, share: share, requireShutOff: verb)
        }
        var start = try await jobs.start(plan, share: share)
        // A finished record is only as good as the share: if a copy it names is gone or
        // has another size (removed on the server, say), copy again.
        if case .finished = start, !(await Self.copiesPresent(plan, share: share)) {
            start = try await jobs.start(plan, share: share, trustFinished: false)
        }
        switch start {
        case .finished(let record):
            for line in record.dataLines { try await reply.data(line) }
            return try record.outcome(attached: true, restarted: false)
        case .job(let job, let attached):
            for s in plan.skipped { try await reply.data(["disk": s.target, "source": s.source, "skipped": s.reason]) }
            let record = try await stream(job, reply: reply)
            for line in record.dataLines { try await reply.data(line) }
            return try record.outcome(attached: attached, restarted: job.restarted)
        }
    }

    /// Sends the job's progress every `progressInterval` until it ends. When the client
    /// goes away the job goes on; the request just stops streaming.
    func stream(_ job: CopyJob, reply: ReplyStream) async throws -> CopyJobRecord {
        try await JobStreaming.awaitJob(job, every: configuration.progressInterval, reply: reply)
    }

    // MARK: - ADOPT / RESTORE

    func adopt(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try request.requireKeys(["domain", "pool", "pool-target", "attach", "server", "export"])
        let name = try Validation.domainName(try request.single("domain"))
        if let attach = try request.optional("attach") {
            guard attach == "libnfs" || attach == "mount" else {
                throw AgentError.invalidArgument("attach= must be mount or libnfs, not '\(attach)'")
            }
            if attach == "libnfs", request.fields["server"] == nil, request.fields["pool"] == nil {
                throw AgentError.invalidArgument("ADOPT attach=libnfs needs server= and export= (or pool= of a libnfs share)")
            }
        }
        let share = try await share(request, allowPoolTarget: true)
        if let attach = request.fields["attach"], attach != share.attach.rawValue {
            throw AgentError.invalidArgument("attach=\(attach) does not match the share, which is in \(share.attach.rawValue) mode")
        }
        guard await !jobs.isRunning(name) else {
            throw AgentError(.busy, "a COPY of \(name) is running; ADOPT after it has finished")
        }
        if share.attach == .mount {
            let pools = self.pools
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted); run POOL-ENSURE again")
            }
        }
        let adoption = Adoption(session: session, state: state)
        let outcome = try await ComputeWork.run { () throws -> Adoption.Outcome in try adoption.adopt(domain: name, share: share) }
        for m in outcome.moved { try await reply.data(["disk": m.target, "from": m.from, "to": m.to]) }
        var f: Fields = ["domain": name]
        f.append(contentsOf: share.fields)
        f.append("disks", String(outcome.moved.count))
        f.append("changed", outcome.changed ? "yes" : "no")
        if let saved = outcome.saved { f.append("saved", saved) }
        return f
    }

    func restore(_ request: Request) async throws -> Fields {
        try request.requireKeys(["domain"])
        let name = try Validation.domainName(try request.single("domain"))
        guard await !jobs.isRunning(name) else {
            throw AgentError(.busy, "a COPY of \(name) is running; RESTORE after it has finished")
        }
        let adoption = Adoption(session: session, state: state)
        let outcome = try await ComputeWork.run { () throws -> (Bool, String?) in try adoption.restore(domain: name) }
        var f: Fields = ["domain": name, "changed": outcome.0 ? "yes" : "no"]
        if let from = outcome.1 { f.append("from", from) }
        return f
    }

    // MARK: - LOCALIZE / DOMAINS

    /// Where LOCALIZE puts the local copies unless `dir=` says otherwise.
    static let defaultLocalDirectory = "/var/lib/libvirt/images"

    /// `LOCALIZE domain=D (pool=P | server=S export=E) [dir=PATH]`: copies every disk
    /// of the shut-off domain that is on the share to `DIR/<file name>` (content-digest
    /// verified) and redefines the domain onto the local copies; see docs/protocol.md.
    func localize(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try request.requireKeys(["domain", "pool", "server", "export", "dir"])
        let name = try Validation.domainName(try request.single("domain"))
        let dir = try Validation.absolutePath(try request.optional("dir") ?? Self.defaultLocalDirectory, key: "dir")
        let share = try await share(request)
        if share.attach == .mount, share.pool != nil {
            let pools = self.pools
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted); run POOL-ENSURE again")
            }
        }
        // A running LOCALIZE of the domain is attached to; else a new job (or nothing to do).
        let job: LocalizeJob, attached: Bool
        if let running = try await jobs.runningLocalize(name, share: share, dir: dir) {
            (job, attached) = (running, true)
        } else {
            let localization = Localization(session: session, state: state)
            guard let plan = try await ComputeWork.run({ () throws -> LocalizePlan? in try localization.prepare(domain: name, share: share, dir: dir) }) else {
                var f: Fields = ["domain": name]
                f.append(contentsOf: share.fields)
                f.append("dir", dir)
                f.append("disks", "0")
                f.append("changed", "no")
                return f
            }
            (job, attached) = try await jobs.startLocalize(plan) { moved in
                try await ComputeWork.run { () throws -> String? in try localization.redefine(domain: name, moved: moved, dir: dir) }
            }
        }
        let record = try await JobStreaming.awaitJob(job, every: configuration.progressInterval, reply: reply)
        let lines = try record.dataLines()
        if let last = record.finalProgress { try await reply.progress(last) }
        for line in lines { try await reply.data(line) }
        var f: Fields = ["domain": name]
        f.append(contentsOf: share.fields)
        f.append("dir", dir)
        f.append("disks", String(record.moved.count))
        f.append("changed", "yes")
        if let from = record.restoredFrom { f.append("restored", from) }
        f.append("attached", attached ? "yes" : "no")
        f.append("restarted", job.restarted ? "yes" : "no")
        return f
    }

    /// `DOMAINS`: one `DATA name= state= persistent= shared=` per domain (persistent or
    /// running), `shared=yes` when a disk is under a netfs pool target or an NFS network disk.
    func domains(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try request.requireKeys([])
        let session = self.session
        let entries = try await ComputeWork.run { () throws -> [DomainListing.Entry] in try DomainListing.list(session) }
        for e in entries {
            try await reply.data(["name": e.name, "state": e.state, "persistent": e.persistent ? "yes" : "no", "shared": e.shared ? "yes" : "no"])
        }
        return ["domains": String(entries.count), "shared": String(entries.filter(\.shared).count)]
    }

    // MARK: - VERIFY

    func verify(_ request: Request) async throws -> Fields {
        try request.requireKeys(["path", "pool", "server", "export", "nonce-write", "nonce-read", "value"])
        let path = try request.single("path")
        var parsedNonce = Verification.Nonce.none
        let write = try request.optional("nonce-write"), read = try request.optional("nonce-read"), value = try request.optional("value")
        switch (write, read, value) {
        case (nil, nil, nil): break
        case (let w?, nil, nil): parsedNonce = .write(name: try Validation.nonceName(w, key: "nonce-write"))
        case (nil, let r?, let v?):
            guard !v.isEmpty, v.utf8.count <= 128, v.utf8.allSatisfy({ Validation.isAlnum($0) }) else {
                throw AgentError.invalidArgument("value= must be the nonce-value= the writing host answered (letters and digits)")
            }
            parsedNonce = .read(name: try Validation.nonceName(r, key: "nonce-read"), value: v)
        default:
            throw AgentError.invalidArgument("VERIFY takes nonce-write=NAME, or nonce-read=NAME with value=V, or neither")
        }
        let nonce = parsedNonce
        let outcome: Verification.Outcome
        var f = Fields()
        if path.hasPrefix("/") {
            // Mount mode: an absolute path under the target of a netfs pool of this host.
            guard request.fields["pool"] == nil, request.fields["server"] == nil, request.fields["export"] == nil else {
                throw AgentError.invalidArgument("an absolute path= names a file under a pool's target; give pool= or server= export= only with a relative path")
            }
            let abs = try Validation.absolutePath(path, key: "path")
            let pools = self.pools
            guard let share = try await ComputeWork.run({ () throws -> Share? in try pools.share(containing: abs) }) else {
                throw AgentError(.invalidArgument, "\(abs) is not under the target path of a netfs pool of this host; VERIFY reads shared copies only")
            }
            guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted here); run POOL-ENSURE")
            }
            outcome = try await ComputeWork.run { () throws -> Verification.Outcome in try Verification.local(path: abs, nonce: nonce) }
            f.append("path", abs)
            f.append("via", "mount")
            if let p = share.pool { f.append("pool", p) }
        } else {
            let relative = try Validation.relativePath(path)
            let share = try await share(request)
            if share.attach == .mount, let target = share.target {
                let abs = target + "/" + relative
                let pools = self.pools
                guard try await ComputeWork.run({ () throws -> Bool in try pools.isActive(share) }) else {
                    throw AgentError(.invalidState, "pool \(share.pool ?? "") is not active (the share is not mounted here); run POOL-ENSURE")
                }
                outcome = try await ComputeWork.run { () throws -> Verification.Outcome in try Verification.local(path: abs, nonce: nonce) }
                f.append("path", abs)
                f.append("via", "mount")
            } else {
                outcome = try await ComputeWork.run { () throws -> Verification.Outcome in
                    try Verification.remote(share: share, relative: relative, nonce: nonce)
                }
                f.append("path", relative)
                f.append("via", "libnfs")
                f.append("server", share.server)
                f.append("export", share.export)
            }
        }
        f.append("size", String(outcome.size))
        if let a = outcome.allocated { f.append("allocated", String(a)) }
        f.append("format", outcome.header.format)
        if let v = outcome.header.virtualSize { f.append("virtual-size", String(v)) }
        f.append(contentsOf: outcome.nonce)
        return f
    }
}

extension ComputeAgentHandler {
    /// True when every planned copy exists on the share with the source's size (libnfs
    /// stat, as root, on a blocking thread). Any failure to ask counts as absent.
    static func copiesPresent(_ plan: CopyPlan, share: Share) async -> Bool {
        let target = share.nfsTarget
        let disks = plan.disks.map { ("/" + $0.relativePath, $0.size) }
        return (try? await ComputeWork.run { () throws -> Bool in
            let nfs = try NFSContext()
            try nfs.setVersion(3)
            try nfs.mount(server: target.server, export: target.exportPath)
            for (path, size) in disks {
                guard let st = try? nfs.stat(path), st.size == size else { return false }
            }
            return true
        }) ?? false
    }
}
