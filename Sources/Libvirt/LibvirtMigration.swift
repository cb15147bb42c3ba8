import CLibvirt

// Migration, domain jobs, dirty-rate calculation and the host facts a migration gate needs.
// Blocking and thread-safety: as ``LibvirtConnection`` (every call is synchronous; run it
// on a thread of its own, never on Swift's cooperative pool).

/// Flags of ``LibvirtDomain/migrate(toURI:flags:bandwidthMiB:)`` (`virDomainMigrateFlags`).
/// Peer-to-peer (`VIR_MIGRATE_PEER2PEER`) is always added by the call. `VIR_MIGRATE_UNSAFE`
/// is deliberately not offered: libvirt's own refusal of a migration without shared
/// storage (or with an unsafe cache mode) must stand.
public struct MigrationFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue & Self.offered }

    /// Everything this type may carry (anything else is dropped by `init(rawValue:)`).
    static let offered = UInt32(VIR_MIGRATE_LIVE.rawValue | VIR_MIGRATE_PERSIST_DEST.rawValue
                                | VIR_MIGRATE_UNDEFINE_SOURCE.rawValue | VIR_MIGRATE_OFFLINE.rawValue
                                | VIR_MIGRATE_AUTO_CONVERGE.rawValue | VIR_MIGRATE_POSTCOPY.rawValue)

    /// Keep the guest running while its memory is copied (without: paused during the copy).
    public static let live = MigrationFlags(rawValue: UInt32(VIR_MIGRATE_LIVE.rawValue))
    /// Define the domain persistently on the destination.
    public static let persistDestination = MigrationFlags(rawValue: UInt32(VIR_MIGRATE_PERSIST_DEST.rawValue))
    /// Remove the source's persistent definition once the migration succeeded.
    public static let undefineSource = MigrationFlags(rawValue: UInt32(VIR_MIGRATE_UNDEFINE_SOURCE.rawValue))
    /// Move only the definition of a shut-off domain (needs ``persistDestination``).
    public static let offline = MigrationFlags(rawValue: UInt32(VIR_MIGRATE_OFFLINE.rawValue))
    /// Throttle the guest's vCPUs when memory does not converge.
    public static let autoConverge = MigrationFlags(rawValue: UInt32(VIR_MIGRATE_AUTO_CONVERGE.rawValue))
    /// Allow switching to post-copy (``LibvirtDomain/startPostCopy()``).
    public static let postcopy = MigrationFlags(rawValue: UInt32(VIR_MIGRATE_POSTCOPY.rawValue))

    /// The flags passed to libvirt: these plus `VIR_MIGRATE_PEER2PEER`.
    public var libvirtFlags: UInt32 { rawValue | UInt32(VIR_MIGRATE_PEER2PEER.rawValue) }
}

/// The type of a domain job (`virDomainJobType`).
public enum DomainJobType: Sendable, Hashable {
    case none, bounded, unbounded, completed, failed, cancelled
    /// A value newer than this wrapper.
    case other(Int32)

    init(raw: Int32) {
        switch UInt32(bitPattern: raw) {
        case VIR_DOMAIN_JOB_NONE.rawValue: self = .none
        case VIR_DOMAIN_JOB_BOUNDED.rawValue: self = .bounded
        case VIR_DOMAIN_JOB_UNBOUNDED.rawValue: self = .unbounded
        case VIR_DOMAIN_JOB_COMPLETED.rawValue: self = .completed
        case VIR_DOMAIN_JOB_FAILED.rawValue: self = .failed
        case VIR_DOMAIN_JOB_CANCELLED.rawValue: self = .cancelled
        default: self = .other(raw)
        }
    }

    /// A job runs now (bounded or unbounded).
    public var isActive: Bool { self == .bounded || self == .unbounded }
}

/// What `virDomainGetJobStats` reports, typed; a field libvirt did not report is nil.
public struct DomainJobStats: Sendable, Hashable {
    public var type: DomainJobType
    /// `VIR_DOMAIN_JOB_OPERATION` (`virDomainJobOperation`: 6 = outgoing migration).
    public var operation: Int32?
    /// Milliseconds since the job began.
    public var elapsedMilliseconds: UInt64?
    /// Memory plus disk bytes: total, processed and remaining.
    public var dataTotal: UInt64?
    public var dataProcessed: UInt64?
    public var dataRemaining: UInt64?
    /// The current pass over the guest's memory (1 during the first).
    public var memoryIteration: UInt64?
    /// Pages the guest dirties per second, and the page size: ``dirtyBytesPerSecond``.
    public var memoryDirtyRatePages: UInt64?
    public var memoryPageSize: UInt64?
    /// Memory transfer rate, bytes per second.
    public var memoryBytesPerSecond: UInt64?
    /// The real downtime (ms) of a completed migration.
    public var downtimeMilliseconds: UInt64?
    /// Post-copy page requests from the destination (present once post-copy began).
    public var postcopyRequests: UInt64?
    /// libvirt's message for a failed job (`errmsg`), when it kept one.
    public var errorMessage: String?

    public init(type: DomainJobType) { self.type = type }

    /// Dirty pages per second times the page size, when both are known.
    public var dirtyBytesPerSecond: UInt64? {
        guard let pages = memoryDirtyRatePages, let size = memoryPageSize else { return nil }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: size)
        return overflow ? UInt64.max : bytes
    }
}

/// Flags of ``LibvirtDomain/jobStats(_:)`` (`virDomainGetJobStatsFlags`).
public enum JobStatsSelection: Sendable {
    /// The job running now (type `none` when there is none).
    case current
    /// The most recently completed job, forgotten by libvirt after this call.
    case completed
    /// The most recently completed job, kept for a later call.
    case completedKeep

    var flags: UInt32 {
        switch self {
        case .current: return 0
        case .completed: return UInt32(VIR_DOMAIN_JOB_STATS_COMPLETED.rawValue)
        case .completedKeep: return UInt32(VIR_DOMAIN_JOB_STATS_COMPLETED.rawValue | VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED.rawValue)
        }
    }
}

/// The state of libvirt's dirty-rate calculation (`dirtyrate.*` of the domain stats).
public struct DirtyRateStats: Sendable, Hashable {
    public enum Status: Sendable, Hashable { case unstarted, measuring, measured, other(Int32) }
    public var status: Status
    /// MiB the guest dirtied per second (`dirtyrate.megabytes_per_second`), once measured.
    public var mebibytesPerSecond: Int64?
    /// The window, seconds (`dirtyrate.calc_period`).
    public var period: Int32?
    /// Seconds since the epoch when the calculation began (`dirtyrate.calc_start_time`).
    public var startTime: Int64?

    public init(status: Status, mebibytesPerSecond: Int64? = nil, period: Int32? = nil, startTime: Int64? = nil) {
        self.status = status
        self.mebibytesPerSecond = mebibytesPerSecond
        self.period = period
        self.startTime = startTime
    }
}

/// The verdict of ``LibvirtConnection/compareHypervisorCPU(emulator:arch:machine:virtType:cpuXML:)``.
public enum CPUComparison: Sendable, Hashable {
    /// The host's CPU (as the hypervisor offers it) is this CPU.
    case identical
    /// The host offers everything this CPU needs, and more.
    case superset
    /// The CPU cannot run here; libvirt's sentence names the missing features.
    case incompatible(String)
}

extension LibvirtDomain {
    /// Migrates the domain peer to peer (`virDomainMigrateToURI3` with
    /// `VIR_MIGRATE_PEER2PEER`): this host's libvirtd connects to `destinationURI` itself.
    /// Returns when the migration has completed (the domain then runs at the destination)
    /// and throws when it failed or was aborted (``abortJob()``: code
    /// ``LibvirtError/Code/operationAborted``). Blocks for the whole migration.
    /// - Parameter bandwidthMiB: MiB/s cap (`VIR_MIGRATE_PARAM_BANDWIDTH`); nil: libvirt's default.
    public func migrate(toURI destinationURI: String, flags: MigrationFlags, bandwidthMiB: UInt64? = nil) throws(LibvirtError) {
        var params: virTypedParameterPtr?
        var count: Int32 = 0
        var capacity: Int32 = 0
        defer { if params != nil { virTypedParamsFree(params, count) } }
        if let bandwidthMiB {
            try check(virTypedParamsAddULLong(&params, &count, &capacity, VIR_MIGRATE_PARAM_BANDWIDTH, bandwidthMiB),
                      "virTypedParamsAddULLong(bandwidth)")
        }
        try check(virDomainMigrateToURI3(pointer, destinationURI, params, UInt32(count), flags.libvirtFlags),
                  "virDomainMigrateToURI3(\(destinationURI))")
    }

    /// Switches a running migration started with ``MigrationFlags/postcopy`` to post-copy
    /// (`virDomainMigrateStartPostCopy`): the guest runs at the destination from now on,
    /// pulling the pages it still lacks.
    public func startPostCopy() throws(LibvirtError) {
        try check(virDomainMigrateStartPostCopy(pointer, 0), "virDomainMigrateStartPostCopy")
    }

    /// Aborts the domain's running job (`virDomainAbortJob`): a migration stops and the
    /// domain keeps running here. Throws ``LibvirtError/Code/operationInvalid`` when no
    /// job runs.
    public func abortJob() throws(LibvirtError) {
        try check(virDomainAbortJob(pointer), "virDomainAbortJob")
    }

    /// The statistics of the running (or the last completed) job (`virDomainGetJobStats`).
    public func jobStats(_ selection: JobStatsSelection = .current) throws(LibvirtError) -> DomainJobStats {
        var type: Int32 = 0
        var params: virTypedParameterPtr?
        var count: Int32 = 0
        try check(virDomainGetJobStats(pointer, &type, &params, &count, selection.flags), "virDomainGetJobStats")
        defer { virTypedParamsFree(params, count) }
        let p = TypedParameters(params, count)
        var stats = DomainJobStats(type: DomainJobType(raw: type))
        stats.operation = p.int(VIR_DOMAIN_JOB_OPERATION)
        stats.elapsedMilliseconds = p.ullong(VIR_DOMAIN_JOB_TIME_ELAPSED)
        stats.dataTotal = p.ullong(VIR_DOMAIN_JOB_DATA_TOTAL)
        stats.dataProcessed = p.ullong(VIR_DOMAIN_JOB_DATA_PROCESSED)
        stats.dataRemaining = p.ullong(VIR_DOMAIN_JOB_DATA_REMAINING)
        stats.memoryIteration = p.ullong(VIR_DOMAIN_JOB_MEMORY_ITERATION)
        stats.memoryDirtyRatePages = p.ullong(VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE)
        stats.memoryPageSize = p.ullong(VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE)
        stats.memoryBytesPerSecond = p.ullong(VIR_DOMAIN_JOB_MEMORY_BPS)
        stats.downtimeMilliseconds = p.ullong(VIR_DOMAIN_JOB_DOWNTIME)
        stats.postcopyRequests = p.ullong(VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS)
        stats.errorMessage = p.string(VIR_DOMAIN_JOB_ERRMSG)
        return stats
    }

    /// Starts libvirt's dirty-rate calculation over `seconds` in page-sampling mode
    /// (`virDomainStartDirtyRateCalc`; the mode that works under TCG and KVM alike).
    /// Read the outcome with ``dirtyRate()`` once `seconds` have passed.
    public func startDirtyRateCalculation(seconds: Int32) throws(LibvirtError) {
        try check(virDomainStartDirtyRateCalc(pointer, seconds, UInt32(VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING.rawValue)),
                  "virDomainStartDirtyRateCalc")
    }

    /// The `dirtyrate.*` statistics of this domain (`virDomainListGetStats` with
    /// `VIR_DOMAIN_STATS_DIRTYRATE`).
    public func dirtyRate() throws(LibvirtError) -> DirtyRateStats {
        var records: UnsafeMutablePointer<virDomainStatsRecordPtr?>?
        var domains: [virDomainPtr?] = [pointer, nil]
        let n = try check(domains.withUnsafeMutableBufferPointer { buffer in
            virDomainListGetStats(buffer.baseAddress, UInt32(VIR_DOMAIN_STATS_DIRTYRATE.rawValue), &records, 0)
        }, "virDomainListGetStats(dirtyrate)")
        defer { if let records { virDomainStatsRecordListFree(records) } }
        guard n > 0, let records, let record = records[0] else { return DirtyRateStats(status: .unstarted) }
        let p = TypedParameters(record.pointee.params, record.pointee.nparams)
        let status: DirtyRateStats.Status
        switch p.int("dirtyrate.calc_status").map({ UInt32(bitPattern: $0) }) {
        case nil, VIR_DOMAIN_DIRTYRATE_UNSTARTED.rawValue: status = .unstarted
        case VIR_DOMAIN_DIRTYRATE_MEASURING.rawValue: status = .measuring
        case VIR_DOMAIN_DIRTYRATE_MEASURED.rawValue: status = .measured
        case let other?: status = .other(Int32(bitPattern: other))
        }
        return DirtyRateStats(status: status, mebibytesPerSecond: p.llong("dirtyrate.megabytes_per_second"),
                              period: p.int("dirtyrate.calc_period"), startTime: p.llong("dirtyrate.calc_start_time"))
    }

    /// The domain's current memory, bytes (`virDomainGetInfo`'s memory, KiB in libvirt).
    public var memoryBytes: UInt64 {
        get throws {
            var info = virDomainInfo()
            try check(virDomainGetInfo(pointer, &info), "virDomainGetInfo")
            let (bytes, overflow) = UInt64(info.memory).multipliedReportingOverflow(by: 1024)
            return overflow ? UInt64.max : bytes
        }
    }
}

extension LibvirtConnection {
    /// This host's capabilities XML (`virConnectGetCapabilities`).
    public func capabilities() throws(LibvirtError) -> String {
        try takeString(virConnectGetCapabilities(pointer), "virConnectGetCapabilities")
    }

    /// Free memory of the host, bytes (`virNodeGetFreeMemory`).
    public func freeMemoryBytes() throws(LibvirtError) -> UInt64 {
        let free = virNodeGetFreeMemory(pointer)
        // 0 is libvirt's failure value; a host with no free byte at all is not a case.
        guard free > 0 else { throw LibvirtError.last(or: "virNodeGetFreeMemory failed") }
        return free
    }

    /// Compares `cpuXML` (a `<cpu>` element) with the CPU the hypervisor can provide on this
    /// host for the given emulator, arch, machine type and virt type
    /// (`virConnectCompareHypervisorCPU` with `VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE`,
    /// so an incompatible CPU comes with libvirt's reason). nil arguments let libvirt pick.
    /// - Throws: ``LibvirtError`` when libvirt could not compare at all.
    public func compareHypervisorCPU(emulator: String?, arch: String?, machine: String?, virtType: String?,
                                     cpuXML: String) throws(LibvirtError) -> CPUComparison {
        let result = virConnectCompareHypervisorCPU(pointer, emulator, arch, machine, virtType, cpuXML,
                                                    UInt32(VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE.rawValue))
        switch result {
        case VIR_CPU_COMPARE_IDENTICAL.rawValue: return .identical
        case VIR_CPU_COMPARE_SUPERSET.rawValue: return .superset
        case VIR_CPU_COMPARE_INCOMPATIBLE.rawValue: return .incompatible("libvirt says the CPU is incompatible")
        default:
            let error = LibvirtError.last(or: "virConnectCompareHypervisorCPU failed")
            if error.code == .cpuIncompatible { return .incompatible(error.message) }
            throw error
        }
    }
}

/// Read access to a libvirt typed-parameter array (not owned).
struct TypedParameters {
    let params: virTypedParameterPtr?
    let count: Int32
    init(_ params: virTypedParameterPtr?, _ count: Int32) { self.params = params; self.count = count }

    func ullong(_ name: String) -> UInt64? {
        var value: UInt64 = 0
        return virTypedParamsGetULLong(params, count, name, &value) == 1 ? value : nil
    }

    func llong(_ name: String) -> Int64? {
        var value: Int64 = 0
        return virTypedParamsGetLLong(params, count, name, &value) == 1 ? value : nil
    }

    func int(_ name: String) -> Int32? {
        var value: Int32 = 0
        return virTypedParamsGetInt(params, count, name, &value) == 1 ? value : nil
    }

    func string(_ name: String) -> String? {
        var value: UnsafePointer<CChar>?
        guard virTypedParamsGetString(params, count, name, &value) == 1, let value else { return nil }
        return String(cString: value)
    }
}
