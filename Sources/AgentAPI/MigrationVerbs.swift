import AgentProtocol

// The migration gate's verbs (docs/migration.md). storagectl's `check` asks the source
// (MIGRATION-FACTS, LIBVIRT-REACH, DIRTY-RATE, PORT-PROBE) and the destination
// (MIGRATION-TARGET, PORT-LISTEN) fresh every time; `migrate` then runs MIGRATE on the
// source (MIGRATE-ABORT from a second connection on Ctrl-C).

// MARK: - CPU definition

/// A domain's `<cpu>` and the emulator facts libvirt's CPU comparison needs, as fields:
/// `arch= machine= virt-type= emulator= [cpu-mode=] [cpu-model=] [cpu-match=]
/// [cpu-check=] [cpu-fallback=] [cpu-feature=POLICY:NAME ...]`. Carried from the source's
/// MIGRATION-FACTS answer to the destination's MIGRATION-TARGET request; the destination
/// agent rebuilds the `<cpu>` XML with an XML library from these validated fields.
public struct CPUDefinition: Sendable, Equatable, Codable {
    public struct Feature: Sendable, Equatable, Codable {
        /// `require`, `disable`, `force`, `optional`, `forbid`.
        public var policy: String
        public var name: String
        public init(policy: String, name: String) { self.policy = policy; self.name = name }
    }

    public var arch: String
    public var machine: String
    /// `qemu` (TCG) or `kvm`.
    public var virtType: String
    public var emulator: String
    /// `custom`, `host-model`, `host-passthrough`, `maximum`; nil when the domain has no
    /// `<cpu>` (the hypervisor's default model).
    public var mode: String?
    public var model: String?
    public var match: String?
    public var check: String?
    public var fallback: String?
    public var features: [Feature]

    public init(arch: String, machine: String, virtType: String, emulator: String, mode: String? = nil, model: String? = nil,
                match: String? = nil, check: String? = nil, fallback: String? = nil, features: [Feature] = []) {
        self.arch = arch
        self.machine = machine
        self.virtType = virtType
        self.emulator = emulator
        self.mode = mode
        self.model = model
        self.match = match
        self.check = check
        self.fallback = fallback
        self.features = features
    }

    static let keys = ["arch", "machine", "virt-type", "emulator", "cpu-mode", "cpu-model", "cpu-match", "cpu-check",
                       "cpu-fallback", "cpu-feature"]

    init(decoding r: FieldReader) throws(AgentError) {
        arch = try r.string("arch")
        machine = try r.string("machine")
        virtType = try r.string("virt-type")
        emulator = try r.string("emulator")
        mode = try r.optional("cpu-mode")
        model = try r.optional("cpu-model")
        match = try r.optional("cpu-match")
        check = try r.optional("cpu-check")
        fallback = try r.optional("cpu-fallback")
        var features: [Feature] = []
        for f in r.all("cpu-feature") {
            guard let colon = f.firstIndex(of: ":"), colon != f.startIndex, f.index(after: colon) != f.endIndex else {
                throw AgentError(r.strict ? .invalidArgument : .unsupported,
                                 "cpu-feature=\(f) is not POLICY:NAME (require:vmx, disable:svm)")
            }
            features.append(Feature(policy: String(f[..<colon]), name: String(f[f.index(after: colon)...])))
        }
        self.features = features
    }

    func encode(into w: inout FieldWriter) {
        w.add("arch", arch)
        w.add("machine", machine)
        w.add("virt-type", virtType)
        w.add("emulator", emulator)
        w.add("cpu-mode", mode)
        w.add("cpu-model", model)
        w.add("cpu-match", match)
        w.add("cpu-check", check)
        w.add("cpu-fallback", fallback)
        w.addEach("cpu-feature", features.map { "\($0.policy):\($0.name)" })
    }
}

// MARK: - MIGRATION-FACTS (source)

/// `MIGRATION-FACTS name=VM`: what the source knows of a domain it is about to migrate:
/// one `DATA` per disk (``DiskRecord`` with `fs=`, the file system under a file disk),
/// then identity, state, memory, host UUID and CPU definition.
public struct MigrationFactsQuery: AgentVerb, Equatable {
    public static let verb = "MIGRATION-FACTS"
    public var changesHost: Bool { false }
    public static let keys = ["name"]
    public var name: String

    public init(name: String) { self.name = name }
    public init(decoding r: FieldReader) throws(AgentError) { name = try r.string("name") }
    public func encode(into w: inout FieldWriter) { w.add("name", name) }

    public struct Answer: Sendable, Equatable {
        public var name: String
        public var uuid: String
        public var state: DomainRunState
        public var persistent: Bool
        /// The domain's current memory (libvirt's `<currentMemory>` / `virDomainGetInfo`'s
        /// memory), bytes.
        public var memoryBytes: UInt64
        /// This host's libvirt host UUID (capabilities `<host><uuid>`).
        public var hostUUID: String
        public var cpu: CPUDefinition
        /// Disks with ``DiskRecord/fileSystem`` set for file and block disks.
        public var disks: [DiskRecord]

        public init(name: String, uuid: String, state: DomainRunState, persistent: Bool, memoryBytes: UInt64,
                    hostUUID: String, cpu: CPUDefinition, disks: [DiskRecord]) {
            self.name = name
            self.uuid = uuid
            self.state = state
            self.persistent = persistent
            self.memoryBytes = memoryBytes
            self.hostUUID = hostUUID
            self.cpu = cpu
            self.disks = disks
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(name: try r.string("name"), uuid: try r.string("uuid"), state: try r.value("state", as: DomainRunState.self),
                      persistent: try r.bool("persistent"), memoryBytes: try r.uint64("memory"),
                      hostUUID: try r.string("host-uuid"), cpu: try CPUDefinition(decoding: r),
                      disks: try rows(data, verb: verb, as: DiskRecord.self))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("name", a.name)
        w.add("uuid", a.uuid)
        w.add("state", a.state)
        w.add("persistent", a.persistent)
        w.add("memory", a.memoryBytes)
        w.add("host-uuid", a.hostUUID)
        a.cpu.encode(into: &w)
        w.add("disks", a.disks.count)
        return (a.disks.map { $0.encoded() }, w.fields)
    }
}

// MARK: - LIBVIRT-REACH (source)

/// `LIBVIRT-REACH uri=URI`: the source agent opens `uri` with libvirt (the credentials a
/// peer-to-peer migration from this host uses) and closes it again.
public struct LibvirtReachQuery: AgentVerb, Equatable {
    public static let verb = "LIBVIRT-REACH"
    public var changesHost: Bool { false }
    public static let keys = ["uri"]
    public var uri: String

    public init(uri: String) { self.uri = uri }
    public init(decoding r: FieldReader) throws(AgentError) { uri = try r.string("uri") }
    public func encode(into w: inout FieldWriter) { w.add("uri", uri) }

    public struct Answer: AgentRecord, Equatable {
        public var uri: String
        public var reachable: Bool
        /// The remote daemon's hostname and host UUID when reachable.
        public var hostname: String?
        public var hostUUID: String?
        /// libvirt's message when not reachable.
        public var error: String?
        public var milliseconds: UInt64

        public init(uri: String, reachable: Bool, hostname: String? = nil, hostUUID: String? = nil, error: String? = nil,
                    milliseconds: UInt64) {
            self.uri = uri
            self.reachable = reachable
            self.hostname = hostname
            self.hostUUID = hostUUID
            self.error = error
            self.milliseconds = milliseconds
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            uri = try r.string("uri")
            reachable = try r.bool("reachable")
            hostname = try r.optional("hostname")
            hostUUID = try r.optional("host-uuid")
            error = try r.optional("error")
            milliseconds = try r.uint64("ms")
        }

        public func encode(into w: inout FieldWriter) {
            w.add("uri", uri)
            w.add("reachable", reachable)
            w.add("hostname", hostname)
            w.add("host-uuid", hostUUID)
            w.add("error", error)
            w.add("ms", milliseconds)
        }
    }
}

// MARK: - DIRTY-RATE (source)

/// `DIRTY-RATE name=VM [seconds=N]`: libvirt's dirty-rate calculation (page sampling) over
/// a window of N seconds (1 to 60, default 1) on a running domain.
public struct DirtyRateQuery: AgentVerb, Equatable {
    public static let verb = "DIRTY-RATE"
    public var changesHost: Bool { false }
    public static let keys = ["name", "seconds"]
    public var name: String
    public var seconds: Int

    public init(name: String, seconds: Int = 1) {
        self.name = name
        self.seconds = seconds
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("name")
        seconds = r.has("seconds") ? try r.int("seconds") : 1
        guard (1...60).contains(seconds) else {
            throw AgentError.invalidArgument("seconds=\(seconds) is out of range (1 to 60)")
        }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("name", name)
        w.add("seconds", seconds)
    }

    public struct Answer: AgentRecord, Equatable {
        /// Bytes per second the guest dirtied during the window.
        public var bytesPerSecond: UInt64
        public var seconds: Int
        /// `page-sampling` (the mode that works under TCG and KVM alike).
        public var method: String

        public init(bytesPerSecond: UInt64, seconds: Int, method: String = "page-sampling") {
            self.bytesPerSecond = bytesPerSecond
            self.seconds = seconds
            self.method = method
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            bytesPerSecond = try r.uint64("rate")
            seconds = try r.int("seconds")
            method = try r.optional("method") ?? "page-sampling"
        }

        public func encode(into w: inout FieldWriter) {
            w.add("rate", bytesPerSecond)
            w.add("seconds", seconds)
            w.add("method", method)
        }
    }
}

// MARK: - MIGRATION-TARGET (destination)

/// How the destination's libvirt compares the VM's CPU with what it can run.
public enum CPUVerdict: String, Sendable, CaseIterable, Codable {
    /// The destination runs it (libvirt: identical or superset).
    case compatible
    /// libvirt says incompatible.
    case incompatible
    /// Not comparable (host-passthrough, or libvirt could not compare): `detail` says why.
    case unknown
}

/// A pool of the destination, as MIGRATION-TARGET reports it.
public struct TargetPool: Sendable, Equatable, Codable, AgentRecord {
    public var name: String
    public var exists: Bool
    public var active: Bool
    public var autostart: Bool
    /// The pool's target (mount mode) or nil.
    public var target: String?

    public init(name: String, exists: Bool, active: Bool, autostart: Bool, target: String? = nil) {
        self.name = name
        self.exists = exists
        self.active = active
        self.autostart = autostart
        self.target = target
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("pool")
        exists = try r.bool("exists")
        active = try r.bool("active")
        autostart = try r.bool("autostart")
        target = try r.optional("target")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("pool", name)
        w.add("exists", exists)
        w.add("active", active)
        w.add("autostart", autostart)
        w.add("target", target)
    }
}

/// `MIGRATION-TARGET name=VM uuid=U memory=BYTES pool=P... CPU fields`: the destination's
/// own facts for an incoming VM: free memory, host UUID, a domain of the same name or
/// UUID, the pools the VM's disks are on, libvirt's CPU comparison, and the hook.
public struct MigrationTargetQuery: AgentVerb, Equatable {
    public static let verb = "MIGRATION-TARGET"
    public var changesHost: Bool { false }
    public static let keys = ["name", "uuid", "memory", "pool"] + CPUDefinition.keys
    public var name: String
    public var uuid: String
    public var memoryBytes: UInt64
    /// Pools (by name) the VM's disks are on; may be empty (libnfs-mode disks).
    public var pools: [String]
    public var cpu: CPUDefinition

    public init(name: String, uuid: String, memoryBytes: UInt64, pools: [String], cpu: CPUDefinition) {
        self.name = name
        self.uuid = uuid
        self.memoryBytes = memoryBytes
        self.pools = pools
        self.cpu = cpu
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("name")
        uuid = try r.string("uuid")
        memoryBytes = try r.uint64("memory")
        pools = r.all("pool")
        cpu = try CPUDefinition(decoding: r)
    }

    public func encode(into w: inout FieldWriter) {
        w.add("name", name)
        w.add("uuid", uuid)
        w.add("memory", memoryBytes)
        w.addEach("pool", pools)
        cpu.encode(into: &w)
    }

    public struct Answer: Sendable, Equatable {
        public var hostUUID: String
        /// Free memory of the destination host (libvirt's node free memory), bytes.
        public var freeMemoryBytes: UInt64
        /// A domain called `name` on the destination: its state (nil: none).
        public var sameNameState: DomainRunState?
        /// A domain with the VM's UUID on the destination: its name and state (nil: none).
        public var sameUUIDName: String?
        public var sameUUIDState: DomainRunState?
        public var cpu: CPUVerdict
        public var cpuDetail: String
        /// The migration hook (`HEALTH`'s `migration-hook` check, asked again).
        public var hookInstalled: Bool
        public var hookLoaded: Bool
        public var hookDetail: String
        public var pools: [TargetPool]

        public init(hostUUID: String, freeMemoryBytes: UInt64, sameNameState: DomainRunState? = nil, sameUUIDName: String? = nil,
                    sameUUIDState: DomainRunState? = nil, cpu: CPUVerdict, cpuDetail: String, hookInstalled: Bool,
                    hookLoaded: Bool, hookDetail: String, pools: [TargetPool]) {
            self.hostUUID = hostUUID
            self.freeMemoryBytes = freeMemoryBytes
            self.sameNameState = sameNameState
            self.sameUUIDName = sameUUIDName
            self.sameUUIDState = sameUUIDState
            self.cpu = cpu
            self.cpuDetail = cpuDetail
            self.hookInstalled = hookInstalled
            self.hookLoaded = hookLoaded
            self.hookDetail = hookDetail
            self.pools = pools
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(hostUUID: try r.string("host-uuid"), freeMemoryBytes: try r.uint64("free-memory"),
                      sameNameState: try r.optionalValue("same-name-state", as: DomainRunState.self),
                      sameUUIDName: try r.optional("same-uuid-name"),
                      sameUUIDState: try r.optionalValue("same-uuid-state", as: DomainRunState.self),
                      cpu: try r.value("cpu", as: CPUVerdict.self), cpuDetail: try r.optional("cpu-detail") ?? "",
                      hookInstalled: try r.bool("hook-installed"), hookLoaded: try r.bool("hook-loaded"),
                      hookDetail: try r.optional("hook-detail") ?? "", pools: try rows(data, verb: verb, as: TargetPool.self))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("host-uuid", a.hostUUID)
        w.add("free-memory", a.freeMemoryBytes)
        w.add("same-name-state", a.sameNameState)
        w.add("same-uuid-name", a.sameUUIDName)
        w.add("same-uuid-state", a.sameUUIDState)
        w.add("cpu", a.cpu)
        w.add("cpu-detail", a.cpuDetail)
        w.add("hook-installed", a.hookInstalled)
        w.add("hook-loaded", a.hookLoaded)
        w.add("hook-detail", a.hookDetail)
        return (a.pools.map { $0.encoded() }, w.fields)
    }
}

// MARK: - PORT-LISTEN (destination), PORT-PROBE (source)

/// `PORT-LISTEN [range=LOW-HIGH] [seconds=N]`: the destination agent listens on the first
/// free TCP port in the range (default libvirt's migration range 49152-49215) on every
/// address, for at most N seconds (1 to 30, default 5), and answers with the port. Each
/// connection it accepts in that time gets the probe exchange (docs/protocol.md): the
/// prober sends an 8-byte big-endian length and that many bytes; the listener discards
/// them and answers the 8-byte count it received. The listener is closed after N seconds.
public struct PortListenRequest: AgentVerb, Equatable {
    public static let verb = "PORT-LISTEN"
    /// Opens a listening socket (briefly): an admin request.
    public var changesHost: Bool { true }
    public static let keys = ["range", "seconds"]
    public var low: Int
    public var high: Int
    public var seconds: Int

    public init(low: Int = 49152, high: Int = 49215, seconds: Int = 5) {
        self.low = low
        self.high = high
        self.seconds = seconds
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        if let range = try r.optional("range") {
            let parts = range.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let lo = Int(parts[0]), let hi = Int(parts[1]), 1024 <= lo, lo <= hi, hi <= 65535 else {
                throw AgentError.invalidArgument("range=\(range) is not LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
            }
            low = lo
            high = hi
        } else {
            low = 49152
            high = 49215
        }
        seconds = r.has("seconds") ? try r.int("seconds") : 5
        guard (1...30).contains(seconds) else { throw AgentError.invalidArgument("seconds=\(seconds) is out of range (1 to 30)") }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("range", "\(low)-\(high)")
        w.add("seconds", seconds)
    }

    public struct Answer: AgentRecord, Equatable {
        public var port: Int
        public var seconds: Int
        public init(port: Int, seconds: Int) { self.port = port; self.seconds = seconds }
        public init(decoding r: FieldReader) throws(AgentError) {
            port = try r.int("port")
            seconds = try r.int("seconds")
        }
        public func encode(into w: inout FieldWriter) {
            w.add("port", port)
            w.add("seconds", seconds)
        }
    }
}

/// One port PORT-PROBE tried: `DATA port=N reachable=yes|no ms=N [error=...]`.
public struct PortReach: Sendable, Equatable, Codable, AgentRecord {
    public var port: Int
    public var reachable: Bool
    public var milliseconds: UInt64
    public var error: String?

    public init(port: Int, reachable: Bool, milliseconds: UInt64, error: String? = nil) {
        self.port = port
        self.reachable = reachable
        self.milliseconds = milliseconds
        self.error = error
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        port = try r.int("port")
        reachable = try r.bool("reachable")
        milliseconds = try r.uint64("ms")
        error = try r.optional("error")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("port", port)
        w.add("reachable", reachable)
        w.add("ms", milliseconds)
        w.add("error", error)
    }
}

/// `PORT-PROBE host=H port=N... [bandwidth-port=N] [bytes=B] [seconds=S]`: the source
/// agent connects to each `port` of `host` (connect only, at most S seconds each, default
/// 2), and when `bandwidth-port=` is given (a PORT-LISTEN port), runs the probe exchange
/// with B bytes (default 64 MiB, at most 1 GiB), stopping early at S seconds, to measure
/// the bandwidth between the two hosts now.
public struct PortProbeRequest: AgentVerb, Equatable {
    public static let verb = "PORT-PROBE"
    public var changesHost: Bool { false }
    public static let keys = ["host", "port", "bandwidth-port", "bytes", "seconds"]
    public var host: String
    public var ports: [Int]
    public var bandwidthPort: Int?
    public var bytes: UInt64
    public var seconds: Int

    public init(host: String, ports: [Int], bandwidthPort: Int? = nil, bytes: UInt64 = 64 << 20, seconds: Int = 2) {
        self.host = host
        self.ports = ports
        self.bandwidthPort = bandwidthPort
        self.bytes = bytes
        self.seconds = seconds
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        host = try r.string("host")
        var ports: [Int] = []
        for p in r.all("port") {
            guard let n = Int(p), (1...65535).contains(n) else { throw AgentError.invalidArgument("port=\(p) is not a TCP port") }
            ports.append(n)
        }
        guard ports.count <= 16 else { throw AgentError.invalidArgument("PORT-PROBE takes at most 16 port= (got \(ports.count))") }
        self.ports = ports
        if r.has("bandwidth-port") {
            let n = try r.int("bandwidth-port")
            guard (1...65535).contains(n) else { throw AgentError.invalidArgument("bandwidth-port=\(n) is not a TCP port") }
            bandwidthPort = n
        } else {
            bandwidthPort = nil
        }
        bytes = r.has("bytes") ? try r.uint64("bytes") : 64 << 20
        guard bytes >= 1 << 16, bytes <= 1 << 30 else { throw AgentError.invalidArgument("bytes=\(bytes) is out of range (64 KiB to 1 GiB)") }
        seconds = r.has("seconds") ? try r.int("seconds") : 2
        guard (1...30).contains(seconds) else { throw AgentError.invalidArgument("seconds=\(seconds) is out of range (1 to 30)") }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("host", host)
        w.addEach("port", ports.map(String.init))
        if let bandwidthPort { w.add("bandwidth-port", bandwidthPort) }
        w.add("bytes", bytes)
        w.add("seconds", seconds)
    }

    public struct Answer: Sendable, Equatable {
        public var ports: [PortReach]
        /// The bandwidth probe: bytes the listener confirmed, over how long; nil when not
        /// asked. `bandwidthError` says why a probe that was asked for failed.
        public var bandwidthBytes: UInt64?
        public var bandwidthMilliseconds: UInt64?
        public var bandwidthError: String?

        public init(ports: [PortReach], bandwidthBytes: UInt64? = nil, bandwidthMilliseconds: UInt64? = nil,
                    bandwidthError: String? = nil) {
            self.ports = ports
            self.bandwidthBytes = bandwidthBytes
            self.bandwidthMilliseconds = bandwidthMilliseconds
            self.bandwidthError = bandwidthError
        }

        /// Bytes per second, when measured.
        public var bytesPerSecond: UInt64? {
            guard let b = bandwidthBytes, let ms = bandwidthMilliseconds else { return nil }
            return ms == 0 ? b * 1000 : b * 1000 / ms
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        return Answer(ports: try rows(data, verb: verb, as: PortReach.self), bandwidthBytes: try r.optionalUInt64("bandwidth-bytes"),
                      bandwidthMilliseconds: try r.optionalUInt64("bandwidth-ms"), bandwidthError: try r.optional("bandwidth-error"))
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("ports", a.ports.count)
        w.add("bandwidth-bytes", a.bandwidthBytes)
        w.add("bandwidth-ms", a.bandwidthMilliseconds)
        w.add("bandwidth-error", a.bandwidthError)
        return (a.ports.map { $0.encoded() }, w.fields)
    }
}

// MARK: - MIGRATE, MIGRATE-ABORT (source)

/// How MIGRATE moves the domain.
public enum MigrationMode: String, Sendable, CaseIterable, Codable {
    /// A running domain, while it runs (VIR_MIGRATE_LIVE).
    case live
    /// A running domain paused during the transfer (no VIR_MIGRATE_LIVE).
    case paused
    /// A shut-off domain's definition only (VIR_MIGRATE_OFFLINE, needs persistent).
    case offline
}

/// `PROGRESS` of MIGRATE, from libvirt's job statistics:
/// `PROGRESS done= total= [remaining=] [rate=] [iteration=] [dirty-rate=] [phase=]`.
public struct MigrationProgress: Sendable, Equatable, Codable, AgentRecord {
    /// Memory (and disk, if any) bytes processed and total.
    public var done: UInt64
    public var total: UInt64
    public var remaining: UInt64?
    /// Transfer rate, bytes per second.
    public var rate: UInt64?
    /// Memory iteration (pass) number.
    public var iteration: UInt64?
    /// Pages dirtied per second, in bytes.
    public var dirtyRate: UInt64?
    /// `precopy`, `postcopy`.
    public var phase: String?
    public var elapsedMilliseconds: UInt64?

    public init(done: UInt64, total: UInt64, remaining: UInt64? = nil, rate: UInt64? = nil, iteration: UInt64? = nil,
                dirtyRate: UInt64? = nil, phase: String? = nil, elapsedMilliseconds: UInt64? = nil) {
        self.done = done
        self.total = total
        self.remaining = remaining
        self.rate = rate
        self.iteration = iteration
        self.dirtyRate = dirtyRate
        self.phase = phase
        self.elapsedMilliseconds = elapsedMilliseconds
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        done = try r.uint64("done")
        total = try r.uint64("total")
        remaining = try r.optionalUInt64("remaining")
        rate = try r.optionalUInt64("rate")
        iteration = try r.optionalUInt64("iteration")
        dirtyRate = try r.optionalUInt64("dirty-rate")
        phase = try r.optional("phase")
        elapsedMilliseconds = try r.optionalUInt64("elapsed-ms")
    }

    public func encode(into w: inout FieldWriter) {
        w.add("done", done)
        w.add("total", total)
        w.add("remaining", remaining)
        w.add("rate", rate)
        w.add("iteration", iteration)
        w.add("dirty-rate", dirtyRate)
        w.add("phase", phase)
        w.add("elapsed-ms", elapsedMilliseconds)
    }

    /// The progress a `PROGRESS` line of MIGRATE carries; nil for other lines or a malformed one.
    public static func from(_ line: ResponseLine) -> MigrationProgress? {
        guard case .progress(let f) = line else { return nil }
        return try? MigrationProgress(answer: MigrateRequest.verb, f)
    }
}

/// `MIGRATE name=VM uri=URI mode=live|paused|offline [persistent=yes] [undefine-source=yes]
/// [bandwidth=MiB/s] [auto-converge=yes] [postcopy=yes] [timeout=S]`: peer-to-peer
/// migration through libvirt's API (never VIR_MIGRATE_UNSAFE), streaming PROGRESS from
/// the job statistics at least twice a second. The job is aborted (the domain keeps
/// running here) on MIGRATE-ABORT, at `timeout`, or when the client's connection closes.
public struct MigrateRequest: AgentVerb, Equatable {
    public static let verb = "MIGRATE"
    public var changesHost: Bool { true }
    public static let keys = ["name", "uri", "mode", "persistent", "undefine-source", "bandwidth", "auto-converge", "postcopy",
                              "timeout"]
    public var name: String
    public var uri: String
    public var mode: MigrationMode
    public var persistent: Bool
    public var undefineSource: Bool
    /// MiB/s cap (VIR_MIGRATE_PARAM_BANDWIDTH); nil: libvirt's default (unlimited).
    public var bandwidthMiB: UInt64?
    public var autoConverge: Bool
    /// Enable post-copy and switch to it after the first pass.
    public var postcopy: Bool
    /// Abort after this many seconds; nil: no limit.
    public var timeoutSeconds: Int?

    public init(name: String, uri: String, mode: MigrationMode, persistent: Bool = false, undefineSource: Bool = false,
                bandwidthMiB: UInt64? = nil, autoConverge: Bool = false, postcopy: Bool = false, timeoutSeconds: Int? = nil) {
        self.name = name
        self.uri = uri
        self.mode = mode
        self.persistent = persistent
        self.undefineSource = undefineSource
        self.bandwidthMiB = bandwidthMiB
        self.autoConverge = autoConverge
        self.postcopy = postcopy
        self.timeoutSeconds = timeoutSeconds
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("name")
        uri = try r.string("uri")
        mode = try r.value("mode", as: MigrationMode.self)
        persistent = try r.bool("persistent", default: false)
        undefineSource = try r.bool("undefine-source", default: false)
        bandwidthMiB = try r.optionalUInt64("bandwidth")
        if let b = bandwidthMiB, b == 0 || b > 1 << 20 {
            throw AgentError.invalidArgument("bandwidth=\(b) is out of range (1 to 1048576 MiB/s)")
        }
        autoConverge = try r.bool("auto-converge", default: false)
        postcopy = try r.bool("postcopy", default: false)
        timeoutSeconds = r.has("timeout") ? try r.int("timeout") : nil
        if let t = timeoutSeconds, t < 1 || t > 7 * 86400 {
            throw AgentError.invalidArgument("timeout=\(t) is out of range (1 s to 7 days)")
        }
        if mode == .offline {
            guard persistent else { throw AgentError.invalidArgument("mode=offline moves the definition only: it needs persistent=yes") }
            guard !postcopy, !autoConverge, bandwidthMiB == nil else {
                throw AgentError.invalidArgument("mode=offline copies no memory: postcopy=, auto-converge= and bandwidth= do not apply")
            }
        }
    }

    public func encode(into w: inout FieldWriter) {
        w.add("name", name)
        w.add("uri", uri)
        w.add("mode", mode)
        if persistent { w.add("persistent", true) }
        if undefineSource { w.add("undefine-source", true) }
        w.add("bandwidth", bandwidthMiB)
        if autoConverge { w.add("auto-converge", true) }
        if postcopy { w.add("postcopy", true) }
        if let timeoutSeconds { w.add("timeout", timeoutSeconds) }
    }

    /// `OK` of MIGRATE: how it went, from the completed job's statistics where libvirt
    /// kept them.
    public struct Answer: AgentRecord, Equatable {
        public var name: String
        public var uri: String
        public var mode: MigrationMode
        public var elapsedMilliseconds: UInt64
        /// How long the guest was paused (libvirt's `downtime`); nil when libvirt did not say.
        public var downtimeMilliseconds: UInt64?
        public var dataBytes: UInt64?
        public var iterations: UInt64?
        public var persistent: Bool
        public var undefinedSource: Bool
        public var postcopyUsed: Bool

        public init(name: String, uri: String, mode: MigrationMode, elapsedMilliseconds: UInt64, downtimeMilliseconds: UInt64? = nil,
                    dataBytes: UInt64? = nil, iterations: UInt64? = nil, persistent: Bool, undefinedSource: Bool,
                    postcopyUsed: Bool = false) {
            self.name = name
            self.uri = uri
            self.mode = mode
            self.elapsedMilliseconds = elapsedMilliseconds
            self.downtimeMilliseconds = downtimeMilliseconds
            self.dataBytes = dataBytes
            self.iterations = iterations
            self.persistent = persistent
            self.undefinedSource = undefinedSource
            self.postcopyUsed = postcopyUsed
        }

        public init(decoding r: FieldReader) throws(AgentError) {
            name = try r.string("name")
            uri = try r.string("uri")
            mode = try r.value("mode", as: MigrationMode.self)
            elapsedMilliseconds = try r.uint64("elapsed-ms")
            downtimeMilliseconds = try r.optionalUInt64("downtime-ms")
            dataBytes = try r.optionalUInt64("data")
            iterations = try r.optionalUInt64("iterations")
            persistent = try r.bool("persistent")
            undefinedSource = try r.bool("undefined-source")
            postcopyUsed = try r.bool("postcopy", default: false)
        }

        public func encode(into w: inout FieldWriter) {
            w.add("name", name)
            w.add("uri", uri)
            w.add("mode", mode)
            w.add("elapsed-ms", elapsedMilliseconds)
            w.add("downtime-ms", downtimeMilliseconds)
            w.add("data", dataBytes)
            w.add("iterations", iterations)
            w.add("persistent", persistent)
            w.add("undefined-source", undefinedSource)
            w.add("postcopy", postcopyUsed)
        }
    }
}

/// `MIGRATE-ABORT name=VM`: aborts the domain's migration job (virDomainAbortJob); the
/// MIGRATE in progress then answers `ERR code=conflict` ("aborted").
public struct MigrateAbortRequest: AgentVerb, Equatable {
    public static let verb = "MIGRATE-ABORT"
    public var changesHost: Bool { true }
    public static let keys = ["name"]
    public var name: String

    public init(name: String) { self.name = name }
    public init(decoding r: FieldReader) throws(AgentError) { name = try r.string("name") }
    public func encode(into w: inout FieldWriter) { w.add("name", name) }

    public struct Answer: AgentRecord, Equatable {
        /// A migration job was running and libvirt aborted it.
        public var aborted: Bool
        public init(aborted: Bool) { self.aborted = aborted }
        public init(decoding r: FieldReader) throws(AgentError) { aborted = try r.bool("aborted") }
        public func encode(into w: inout FieldWriter) { w.add("aborted", aborted) }
    }
}
