import AgentAPI
import AgentProtocol

/// An agent call a check needed that did not answer: who, which verb, and its error.
public struct AgentCallFailure: Error, Sendable, Equatable {
    public var host: String
    public var verb: String
    public var error: AgentError
    public init(host: String, verb: String, error: AgentError) {
        self.host = host
        self.verb = verb
        self.error = error
    }
}

/// The thresholds of `storagectl check` (docs/migration.md, "storagectl check").
public enum CheckThresholds {
    /// Free memory on the destination beyond the VM's: 10 % of the VM's memory, at least
    /// 256 MiB (QEMU's own overhead, page tables, the destination's other guests'
    /// growth). Less than the VM's memory fails, less than VM + margin warns.
    public static func memoryMargin(_ vmBytes: UInt64) -> UInt64 { max(vmBytes / 10, 256 << 20) }
    /// Dirty rate over bandwidth: above this warns (a pre-copy needs many passes).
    public static let dirtyWarn = 0.5
    /// At or above this fails (a pre-copy never converges).
    public static let dirtyFail = 1.0
    /// File systems libvirt accepts as shared for a live migration (virFileIsSharedFS).
    public static let sharedFileSystems: Set<String> = ["nfs", "nfs4", "ceph", "gfs2", "ocfs2", "cifs", "smb", "smb2", "smb3", "afs",
                                                        "gpfs", "glusterfs", "fuse.glusterfs", "beegfs", "quobyte", "fuse.quobyte"]
    /// Cluster file systems, where libvirt accepts any cache mode (virFileIsClusterFS).
    public static let clusterFileSystems: Set<String> = ["gfs2", "ocfs2"]
    /// Cache modes libvirt accepts on shared storage for a live migration.
    public static let safeCacheModes: Set<String> = ["none", "directsync"]
}

/// Pure evaluations: facts the agents reported in, one ``CheckResult`` out. No I/O.
public enum CheckEvaluation {
    /// A disk not on the share: a file, block or volume disk whose source is not under
    /// the export root.
    static func isLocal(_ d: DiskRecord, exportRoot: String) -> Bool {
        !d.isNetwork && !d.source.isEmpty && !SharePath.isUnder(d.source, exportRoot)
    }

    static func isOnShare(_ d: DiskRecord, exportRoot: String) -> Bool {
        if d.isNetwork { return SharePath.relative(d.source, root: exportRoot) != nil }
        return SharePath.isUnder(d.source, exportRoot)
    }

    /// `gateways` (a VM on a CephFS gateway cluster): a healthy gateway holds the floating
    /// address, and no down gateway still holds CephFS sessions (they would block the
    /// VM's disks on the serving gateway, the destination's too).
    public static func gateways(vm: String, destination: String, health: ClusterHealth) -> CheckResult {
        var measured = health.gateways.map { Measured($0.name, $0.state.rawValue) }
        for (g, n) in health.lingering.sorted(by: { $0.key < $1.key }) { measured.append(Measured("\(g)-sessions", "\(n)")) }
        if let (sentence, remedy) = health.problem(vm: vm) {
            return CheckResult(.gateways, .fail, measured, sentence + "; \(destination) would attach through the same address", remedy: remedy,
                               code: .unavailable)
        }
        let serving = health.serving ?? "?"
        if !health.down.isEmpty {
            return CheckResult(.gateways, .warn, measured,
                               "\(serving) serves \(health.floatingAddress); \(health.down.map(\.name).joined(separator: ", ")) of \(health.site) is down (no CephFS session of it is left): there is no standby",
                               remedy: "bring \(health.down.map(\.name).joined(separator: ", ")) back (nfs-ganesha, storage agent; remount its CephFS if it was evicted)")
        }
        return CheckResult(.gateways, .pass, measured,
                           "\(serving) of \(health.site) serves \(health.floatingAddress); standby: \(health.gateways.filter { $0.state == .standby }.map(\.name).joined(separator: ", "))")
    }

    /// `storage-ready`: every disk on the share, and the destination sees it now.
    /// `verify` is nil when there was nothing to verify (no disk on the share).
    public static func storageReady(vm: String, source: String, destination: String, disks: [DiskRecord], exportRoot: String,
                                    verify: Result<UInt64, ShareFailure>?) -> CheckResult {
        let disks = disks.filter(\.isDisk)
        let local = disks.filter { isLocal($0, exportRoot: exportRoot) }
        let shared = disks.filter { isOnShare($0, exportRoot: exportRoot) }
        let foreign = disks.filter { $0.isNetwork && !isOnShare($0, exportRoot: exportRoot) }
        var measured = [Measured("on-share", "\(shared.count)"), Measured("local", "\(local.count)")]
        if !local.isEmpty {
            return CheckResult(.storageReady, .fail, measured,
                               "\(list(local.map(\.target))) of \(vm) \(local.count == 1 ? "is" : "are") not on the share (\(local.map(\.source).joined(separator: ", ")))",
                               remedy: "put them there: storagectl share \(vm) --to \(destination)")
        }
        switch verify {
        case .failure(let f)?:
            return CheckResult(.storageReady, .fail, measured, "\(f.step.rawValue) on \(f.host): \(f.error.message)",
                               remedy: f.remedy.isEmpty ? "storagectl share \(vm) --to \(destination)" : f.remedy, code: f.error.code)
        case .success(let ms)?:
            measured.append(Measured("ms", "\(ms)"))
            if !foreign.isEmpty {
                return CheckResult(.storageReady, .warn, measured,
                                   "\(destination) sees the share's disks, but \(list(foreign.map(\.target))) \(foreign.count == 1 ? "is a network disk" : "are network disks") outside it (\(foreign.map(\.source).joined(separator: ", "))) that storagectl cannot prove \(destination) reaches",
                                   remedy: "check that \(destination) reaches \(foreign.map(\.source).joined(separator: ", ")) before migrating")
            }
            return CheckResult(.storageReady, .pass, measured,
                               "\(destination) sees \(shared.count) disk(s) on the share and read a nonce \(source) wrote just now")
        case nil:
            if !foreign.isEmpty {
                return CheckResult(.storageReady, .warn, measured,
                                   "no disk is on the share; \(list(foreign.map(\.target))) \(foreign.count == 1 ? "is a network disk" : "are network disks") storagectl cannot prove \(destination) reaches",
                                   remedy: "check that \(destination) reaches \(foreign.map(\.source).joined(separator: ", ")) before migrating")
            }
            return CheckResult(.storageReady, .pass, measured, "\(vm) has no disk")
        }
    }

    /// `disks`: no local disk; for a live migration, what libvirt's own safety check
    /// (qemuMigrationSrcIsSafe) would refuse: a file on a file system it does not take
    /// as shared, or a cache mode other than none/directsync on a shared file that is not
    /// on a cluster file system (read-only disks and network disks are exempt).
    public static func disks(vm: String, source: String, destination: String, disks: [DiskRecord], mode: MigrationMode,
                             exportRoot: String) -> CheckResult {
        var fails: [String] = [], warns: [String] = [], remedies: [String] = []
        var measured: [Measured] = []
        func remedy(_ r: String) { if !remedies.contains(r) { remedies.append(r) } }
        let live = mode != .offline
        for d in disks where !d.source.isEmpty || d.isDisk {
            var desc = d.type
            if let fs = d.fileSystem { desc += " on \(fs)" }
            if d.isDisk { desc += ", cache \(d.cache)" }
            measured.append(Measured(d.target, desc))
            guard d.isDisk else {
                // A cdrom or floppy with a local image: the destination must have the
                // same file at the same path, or the migration fails there.
                if isLocal(d, exportRoot: exportRoot), !d.source.isEmpty {
                    warns.append("\(d.device) \(d.target) has a local image \(d.source)")
                    remedy("eject it (virsh change-media \(vm) \(d.target) --eject) or make sure \(destination) has \(d.source)")
                }
                continue
            }
            if isLocal(d, exportRoot: exportRoot) {
                fails.append("\(d.target) is on local storage of \(source) (\(d.source))")
                remedy("put it on the share: storagectl share \(vm) --to \(destination)")
                continue
            }
            guard live else { continue }
            // libvirt takes network disks as shared whatever their cache mode ("network
            // disks are safe again" in qemuMigrationSrcIsSafe): QEMU opens them itself.
            if d.isNetwork { continue }
            do {
                guard let fs = d.fileSystem?.lowercased() else {
                    warns.append("\(source) did not report the file system under \(d.target) (\(d.source))")
                    remedy("upgrade compute-agent on \(source) (MIGRATION-FACTS reports fs=)")
                    continue
                }
                guard CheckThresholds.sharedFileSystems.contains(fs) else {
                    fails.append("\(d.target) is a file on \(fs), not a shared file system: libvirt refuses a live migration of it as unsafe")
                    remedy("migrate it --offline (shut it down first), or attach the share with libnfs: storagectl share \(vm) --attach libnfs")
                    continue
                }
                if CheckThresholds.clusterFileSystems.contains(fs) || d.readOnly { continue }
            }
            if !CheckThresholds.safeCacheModes.contains(d.cache) {
                fails.append("\(d.target) has cache=\(d.cache): libvirt refuses a live migration with a cache other than none or directsync as unsafe")
                remedy("set <driver cache='none'/> on \(d.target) (virsh edit \(vm)) and restart \(vm)")
            }
        }
        if !fails.isEmpty {
            return CheckResult(.disks, .fail, measured, (fails + warns).joined(separator: "; "), remedy: remedies.joined(separator: "; "))
        }
        if !warns.isEmpty { return CheckResult(.disks, .warn, measured, warns.joined(separator: "; "), remedy: remedies.joined(separator: "; ")) }
        let n = disks.filter(\.isDisk).count
        return CheckResult(.disks, .pass, measured, n == 0 ? "\(vm) has no disk" : "every disk is on shared storage" + (live ? " with a cache mode libvirt accepts for a live migration" : ""))
    }

    /// `destination-pool`: every pool the VM's file disks are on exists on the
    /// destination and is active (else fail) and autostarted (else warn).
    public static func destinationPool(vm: String, destination: String, needed: [String],
                                       target: Result<MigrationTargetQuery.Answer, AgentCallFailure>) -> CheckResult {
        guard !needed.isEmpty else { return CheckResult(.destinationPool, .pass, [], "no disk of \(vm) is in a pool (network disks)") }
        let answer: MigrationTargetQuery.Answer
        switch target {
        case .failure(let f): return .agentFailed(.destinationPool, host: f.host, verb: f.verb, f.error)
        case .success(let a): answer = a
        }
        var fails: [String] = [], warns: [String] = [], remedies: [String] = [], measured: [Measured] = []
        for name in needed {
            guard let p = answer.pools.first(where: { $0.name == name }), p.exists else {
                measured.append(Measured(name, "absent"))
                fails.append("pool \(name) is not defined on \(destination)")
                remedies.append("storagectl share \(vm) --to \(destination) (it defines the pool)")
                continue
            }
            measured.append(Measured(name, (p.active ? "active" : "inactive") + (p.autostart ? ", autostart" : ", no autostart")))
            if !p.active {
                fails.append("pool \(name) is not active on \(destination)")
                remedies.append("virsh pool-start \(name) on \(destination), or storagectl share \(vm) --to \(destination)")
            } else if !p.autostart {
                warns.append("pool \(name) on \(destination) is not autostarted: after a reboot of \(destination) \(vm) cannot start there")
                remedies.append("virsh pool-autostart \(name) on \(destination)")
            }
        }
        if !fails.isEmpty { return CheckResult(.destinationPool, .fail, measured, (fails + warns).joined(separator: "; "), remedy: remedies.joined(separator: "; ")) }
        if !warns.isEmpty { return CheckResult(.destinationPool, .warn, measured, warns.joined(separator: "; "), remedy: remedies.joined(separator: "; ")) }
        return CheckResult(.destinationPool, .pass, measured, "\(list(needed)) \(needed.count == 1 ? "is" : "are") active and autostarted on \(destination)")
    }

    /// `libvirt-reachable`: the source's libvirtd opens the URI `migrate` uses (and it is
    /// the destination's daemon, when both host UUIDs are known).
    public static func libvirtReachable(uri: MigrationURI, source: String, destination: String,
                                        reach: Result<LibvirtReachQuery.Answer, AgentCallFailure>,
                                        destinationHostUUID: String?) -> CheckResult {
        let a: LibvirtReachQuery.Answer
        switch reach {
        case .failure(let f): return .agentFailed(.libvirtReachable, host: f.host, verb: f.verb, f.error, measured: [Measured("uri", uri.text)])
        case .success(let v): a = v
        }
        var measured = [Measured("uri", uri.text), Measured("ms", "\(a.milliseconds)")]
        guard a.reachable else {
            let how: String
            switch uri.scheme {
            case "qemu+tcp": how = "let libvirtd on \(destination) listen on TCP \(uri.libvirtPort) (libvirtd-tcp.socket) for \(source)"
            case "qemu+ssh", "qemu+libssh", "qemu+libssh2": how = "give root on \(source) an ssh key that \(destination) accepts (ssh \(uri.host) must work without a password)"
            default: how = "set up libvirt TLS between the hosts (libvirtd-tls.socket on \(destination), the client certificate on \(source): docs/install.md)"
            }
            return CheckResult(.libvirtReachable, .fail, measured, "\(source)'s libvirtd cannot open \(uri.text): \(a.error ?? "no reason given")",
                               remedy: how + ", or set migration-uri in [compute \(destination)] of storagectl.conf")
        }
        if let h = a.hostname { measured.append(Measured("hostname", h)) }
        if let got = a.hostUUID, let want = destinationHostUUID, got.lowercased() != want.lowercased() {
            return CheckResult(.libvirtReachable, .fail, measured,
                               "\(uri.text) reaches a libvirtd with host UUID \(got) (\(a.hostname ?? "?")), not \(destination)'s \(want)",
                               remedy: "fix migration-uri in [compute \(destination)] of storagectl.conf so that it names \(destination)")
        }
        return CheckResult(.libvirtReachable, .pass, measured, "\(source)'s libvirtd opened \(uri.text) in \(a.milliseconds) ms")
    }

    /// `migration-ports`: the destination listens inside the migration range and the
    /// source connects to it; the source connects to the URI's libvirt port. `listen` is
    /// nil for an offline migration (no memory is copied: only libvirt's port matters).
    public static func migrationPorts(source: String, destination: String, uri: MigrationURI, range: ClosedRange<Int>,
                                      listen: Result<PortListenRequest.Answer, AgentCallFailure>?,
                                      probe: Result<PortProbeRequest.Answer, AgentCallFailure>) -> CheckResult {
        var dataPort: Int?
        if let listen {
            switch listen {
            case .failure(let f):
                var r = CheckResult.agentFailed(.migrationPorts, host: f.host, verb: f.verb, f.error, measured: [Measured("range", "\(range.lowerBound)-\(range.upperBound)")])
                if f.error.code != .unavailable, f.error.code != .timeout {
                    r.remedy = "free a port in \(range.lowerBound)-\(range.upperBound) on \(destination) or widen migration-ports in [compute \(destination)]"
                }
                return r
            case .success(let a): dataPort = a.port
            }
        }
        let p: PortProbeRequest.Answer
        switch probe {
        case .failure(let f): return .agentFailed(.migrationPorts, host: f.host, verb: f.verb, f.error)
        case .success(let v): p = v
        }
        var measured: [Measured] = []
        var fails: [String] = [], remedies: [String] = []
        func look(_ port: Int, _ label: String, _ remedy: String) {
            guard let r = p.ports.first(where: { $0.port == port }) else {
                measured.append(Measured(label, "\(port) not probed"))
                fails.append("\(source) did not report port \(port)")
                remedies.append("upgrade compute-agent on \(source)")
                return
            }
            measured.append(Measured(label, "\(port) " + (r.reachable ? "open (\(r.milliseconds) ms)" : "closed")))
            if !r.reachable {
                fails.append("\(source) cannot connect to \(uri.host):\(port) (\(label))" + (r.error.map { ": \($0)" } ?? ""))
                remedies.append(remedy)
            }
        }
        if let dataPort {
            look(dataPort, "data-port", "open TCP \(range.lowerBound)-\(range.upperBound) on \(destination)'s firewall for \(source)")
        }
        look(uri.libvirtPort, "libvirt-port", "open TCP \(uri.libvirtPort) on \(destination)'s firewall for \(source), and check that libvirtd listens on it")
        if !fails.isEmpty {
            return CheckResult(.migrationPorts, .fail, measured, fails.joined(separator: "; "), remedy: remedies.joined(separator: "; "))
        }
        return CheckResult(.migrationPorts, .pass, measured,
                           dataPort == nil ? "\(source) reaches \(destination)'s libvirt port \(uri.libvirtPort)"
                                           : "\(source) reaches \(destination) on port \(dataPort!) of \(range.lowerBound)-\(range.upperBound) and on libvirt's \(uri.libvirtPort)")
    }

    /// `cpu`: libvirt's comparison on the destination (live only: an offline migration
    /// moves a definition; libvirt compares when it starts).
    public static func cpu(destination: String, mode: MigrationMode, target: Result<MigrationTargetQuery.Answer, AgentCallFailure>) -> CheckResult {
        guard mode != .offline else {
            return .skip(.cpu, "an offline migration moves the definition only; libvirt compares the CPU when the VM starts on \(destination)")
        }
        switch target {
        case .failure(let f): return .agentFailed(.cpu, host: f.host, verb: f.verb, f.error)
        case .success(let a):
            let measured = [Measured("verdict", a.cpu.rawValue)]
            switch a.cpu {
            case .compatible: return CheckResult(.cpu, .pass, measured, "\(destination) can run the VM's CPU" + (a.cpuDetail.isEmpty ? "" : " (\(a.cpuDetail))"))
            case .incompatible:
                return CheckResult(.cpu, .fail, measured, "\(destination) cannot run the VM's CPU definition" + (a.cpuDetail.isEmpty ? "" : ": \(a.cpuDetail)"),
                                   remedy: "give the VM a CPU model both hosts run (virsh domcapabilities on \(destination); a custom model or host-model), then restart it")
            case .unknown:
                return CheckResult(.cpu, .warn, measured, "libvirt could not compare the VM's CPU with \(destination)'s" + (a.cpuDetail.isEmpty ? "" : ": \(a.cpuDetail)"),
                                   remedy: "make sure \(destination)'s CPU is the same model as the source's (host-passthrough needs identical hosts)")
            }
        }
    }

    /// `memory`: the destination's free memory against the VM's current memory plus
    /// ``CheckThresholds/memoryMargin(_:)`` (live only).
    public static func memory(vm: String, destination: String, mode: MigrationMode, vmBytes: UInt64?,
                              target: Result<MigrationTargetQuery.Answer, AgentCallFailure>) -> CheckResult {
        guard mode != .offline else { return .skip(.memory, "a shut-off VM takes no memory on \(destination) until it starts") }
        let a: MigrationTargetQuery.Answer
        switch target {
        case .failure(let f): return .agentFailed(.memory, host: f.host, verb: f.verb, f.error)
        case .success(let v): a = v
        }
        guard let vmBytes else { return CheckResult(.memory, .warn, [], "the source did not report \(vm)'s memory", remedy: "run check again") }
        let margin = CheckThresholds.memoryMargin(vmBytes)
        let measured = [Measured("vm", Bytes.human(vmBytes)), Measured("free", Bytes.human(a.freeMemoryBytes)), Measured("margin", Bytes.human(margin))]
        if a.freeMemoryBytes < vmBytes {
            return CheckResult(.memory, .fail, measured, "\(destination) has \(Bytes.human(a.freeMemoryBytes)) free, \(vm) uses \(Bytes.human(vmBytes))",
                               remedy: "free memory on \(destination) (or pick another destination), or shrink \(vm)'s memory (virsh setmem)")
        }
        if a.freeMemoryBytes < vmBytes + margin {
            return CheckResult(.memory, .warn, measured,
                               "\(destination) has \(Bytes.human(a.freeMemoryBytes)) free: \(vm)'s \(Bytes.human(vmBytes)) fits, but with less than \(Bytes.human(margin)) to spare",
                               remedy: "free memory on \(destination) before migrating, or expect it to swap")
        }
        return CheckResult(.memory, .pass, measured, "\(destination) has \(Bytes.human(a.freeMemoryBytes)) free for \(vm)'s \(Bytes.human(vmBytes))")
    }

    /// `name-uuid`: no domain of the VM's name or UUID runs on the destination, no other
    /// domain there has its name or UUID (libvirt refuses both), and the two hosts do
    /// not share a libvirt host UUID. A shut-off definition of the same VM (same name,
    /// same UUID) is replaced with `--persistent` (pass) and warned about without it.
    public static func nameUUID(vm: String, uuid: String, source: String, destination: String, sourceHostUUID: String?,
                                persistent: Bool, target: Result<MigrationTargetQuery.Answer, AgentCallFailure>) -> CheckResult {
        let a: MigrationTargetQuery.Answer
        switch target {
        case .failure(let f): return .agentFailed(.nameUUID, host: f.host, verb: f.verb, f.error)
        case .success(let v): a = v
        }
        var measured = [Measured("uuid", uuid), Measured("host-uuid", a.hostUUID)]
        if let s = a.sameNameState { measured.append(Measured("same-name", s.rawValue)) }
        if let n = a.sameUUIDName { measured.append(Measured("same-uuid", "\(n) (\(a.sameUUIDState?.rawValue ?? "?"))")) }
        if let s = sourceHostUUID, s.lowercased() == a.hostUUID.lowercased() {
            return CheckResult(.nameUUID, .fail, measured, "\(source) and \(destination) both report libvirt host UUID \(a.hostUUID): libvirt refuses to migrate between them",
                               remedy: "give \(destination) a host UUID of its own (host_uuid in /etc/libvirt/libvirtd.conf, or host_uuid_source = machine-id with a unique /etc/machine-id), then restart libvirtd")
        }
        let active: (DomainRunState?) -> Bool = { s in s != nil && s != .shutOff }
        if active(a.sameNameState) || (a.sameUUIDName != nil && active(a.sameUUIDState)) {
            let who = active(a.sameNameState) ? "a domain called \(vm)" : "domain \(a.sameUUIDName ?? "?") with \(vm)'s UUID"
            return CheckResult(.nameUUID, .fail, measured, "\(who) is already running on \(destination)",
                               remedy: "find out which copy is current before anything else; if the one on \(destination) is stale, stop and undefine it there (virsh destroy, virsh undefine)")
        }
        if let other = a.sameUUIDName, other != vm {
            return CheckResult(.nameUUID, .fail, measured, "\(destination) defines domain \(other) with \(vm)'s UUID \(uuid): libvirt refuses",
                               remedy: "undefine \(other) on \(destination) if it is stale, or give one of them a new UUID")
        }
        if a.sameNameState != nil, a.sameUUIDName != vm {
            return CheckResult(.nameUUID, .fail, measured, "\(destination) defines another domain called \(vm) (another UUID): libvirt refuses",
                               remedy: "rename or undefine the \(vm) on \(destination) (virsh domrename / virsh undefine)")
        }
        if a.sameNameState != nil {
            if persistent {
                return CheckResult(.nameUUID, .pass, measured, "\(destination) has a shut-off definition of \(vm) (same UUID): the migration replaces it")
            }
            return CheckResult(.nameUUID, .warn, measured,
                               "\(destination) has a shut-off definition of \(vm) (same UUID), older than the source's: without --persistent it stays and is what \(vm) becomes when it shuts down there",
                               remedy: "migrate with --persistent (it replaces the stale definition), or undefine it on \(destination)")
        }
        return CheckResult(.nameUUID, .pass, measured, "no domain on \(destination) has \(vm)'s name or UUID; the host UUIDs differ")
    }

    /// `dirty-rate` (live, running VM): the dirty-page rate measured now against the
    /// bandwidth (the smaller of the measured one and the `--bandwidth` cap).
    public static func dirtyRate(vm: String, source: String, destination: String, mode: MigrationMode, state: DomainRunState,
                                 dirty: Result<DirtyRateQuery.Answer, AgentCallFailure>?, measuredBandwidth: UInt64?,
                                 bandwidthError: String?, capMiB: UInt64?) -> CheckResult {
        guard mode != .offline else { return .skip(.dirtyRate, "an offline migration copies no memory") }
        guard state == .running, let dirty else { return .skip(.dirtyRate, "\(vm) is \(state), not running: its memory does not change") }
        let d: DirtyRateQuery.Answer
        switch dirty {
        case .failure(let f): return .agentFailed(.dirtyRate, host: f.host, verb: f.verb, f.error)
        case .success(let v): d = v
        }
        var measured = [Measured("dirty", Bytes.human(d.bytesPerSecond) + "/s"), Measured("window", "\(d.seconds) s")]
        let measuredBW = measuredBandwidth.flatMap { $0 > 0 ? $0 : nil }
        if let m = measuredBW { measured.append(Measured("link", Bytes.human(m) + "/s")) }
        let cap = capMiB.map { $0 << 20 }
        if let cap { measured.append(Measured("cap", Bytes.human(cap) + "/s")) }
        let bandwidth: UInt64
        switch (measuredBW, cap) {
        case (let m?, let c?): bandwidth = min(m, c)
        case (let m?, nil): bandwidth = m
        case (nil, let c?): bandwidth = c
        case (nil, nil):
            return CheckResult(.dirtyRate, .warn, measured,
                               "\(vm) dirties \(Bytes.human(d.bytesPerSecond))/s; the bandwidth \(source) -> \(destination) could not be measured" + (bandwidthError.map { ": \($0)" } ?? ""),
                               remedy: "pass --bandwidth MiB/s (the link's speed) to compare against")
        }
        let ratio = Double(d.bytesPerSecond) / Double(bandwidth)
        measured.append(Measured("ratio", "\(Int((ratio * 100).rounded())) %"))
        let capLimits = cap != nil && (measuredBW == nil || cap! < measuredBW!)
        let over = "\(vm) dirties \(Bytes.human(d.bytesPerSecond))/s, \(Int((ratio * 100).rounded())) % of the \(Bytes.human(bandwidth))/s " + (capLimits ? "--bandwidth cap" : "measured between the hosts")
        var remedies: [String] = []
        if capLimits { remedies.append("raise --bandwidth") }
        remedies += ["use --auto-converge (throttles the guest until it converges)", "use --postcopy (switches to post-copy after the first pass)",
                     "or shut it down and migrate --offline"]
        if ratio >= CheckThresholds.dirtyFail {
            return CheckResult(.dirtyRate, .fail, measured, over + ": a pre-copy migration would never converge", remedy: remedies.joined(separator: ", "))
        }
        if ratio > CheckThresholds.dirtyWarn {
            return CheckResult(.dirtyRate, .warn, measured, over + ": the migration will need many passes and a longer pause", remedy: remedies.joined(separator: ", "))
        }
        return CheckResult(.dirtyRate, .pass, measured, over)
    }

    /// `gate-armed`: the destination's migration hook is installed and libvirtd loaded it.
    public static func gateArmed(destination: String, target: Result<MigrationTargetQuery.Answer, AgentCallFailure>) -> CheckResult {
        let a: MigrationTargetQuery.Answer
        switch target {
        case .failure(let f): return .agentFailed(.gateArmed, host: f.host, verb: f.verb, f.error)
        case .success(let v): a = v
        }
        let measured = [Measured("installed", WireValue.yesNo(a.hookInstalled)), Measured("loaded", WireValue.yesNo(a.hookLoaded))]
        let detail = a.hookDetail.isEmpty ? "" : " (\(a.hookDetail))"
        if !a.hookInstalled {
            return CheckResult(.gateArmed, .fail, measured, "the migration hook is not installed on \(destination)" + detail,
                               remedy: "run compute-agent install-hook as root on \(destination) (it installs the hook and makes libvirtd load it: docs/install.md)")
        }
        if !a.hookLoaded {
            return CheckResult(.gateArmed, .fail, measured, "the migration hook is installed on \(destination), but libvirtd has not loaded it" + detail,
                               remedy: "run compute-agent install-hook as root on \(destination) again, or reload libvirtd there (systemctl reload libvirtd: it reads hooks at start and on SIGHUP)")
        }
        return CheckResult(.gateArmed, .pass, measured, "\(destination)'s libvirtd runs the migration hook")
    }

    static func list(_ names: [String]) -> String { names.joined(separator: ", ") }
}
