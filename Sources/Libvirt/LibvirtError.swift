import CLibvirt

/// An error reported by libvirt, copied from its thread-local last error right after the
/// failing call (see `LibvirtError.last(or:)`).
public struct LibvirtError: Error, Sendable, Equatable, CustomStringConvertible {
    /// libvirt's error number (`virErrorNumber`), e.g. ``Code/noDomain``.
    public var code: Code
    /// The part of libvirt that raised the error (`virErrorDomain`, e.g. ``Domain/rpc``).
    public var domain: Domain
    /// libvirt's own human-readable message, e.g. "Domain not found: no domain with
    /// matching name 'x'".
    public var message: String

    public init(code: Code, domain: Domain, message: String) {
        self.code = code
        self.domain = domain
        self.message = message
    }

    public var description: String { message }

    /// libvirt's `virErrorNumber` as an open set of known values.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// No error was recorded (a wrapper-level failure with no libvirt error set).
        public static let ok = Code(rawValue: Int32(VIR_ERR_OK.rawValue))
        public static let internalError = Code(rawValue: Int32(VIR_ERR_INTERNAL_ERROR.rawValue))
        public static let noSupport = Code(rawValue: Int32(VIR_ERR_NO_SUPPORT.rawValue))
        public static let invalidArgument = Code(rawValue: Int32(VIR_ERR_INVALID_ARG.rawValue))
        public static let operationFailed = Code(rawValue: Int32(VIR_ERR_OPERATION_FAILED.rawValue))
        public static let operationInvalid = Code(rawValue: Int32(VIR_ERR_OPERATION_INVALID.rawValue))
        public static let xmlError = Code(rawValue: Int32(VIR_ERR_XML_ERROR.rawValue))
        public static let noDomain = Code(rawValue: Int32(VIR_ERR_NO_DOMAIN.rawValue))
        public static let noStoragePool = Code(rawValue: Int32(VIR_ERR_NO_STORAGE_POOL.rawValue))
        public static let noStorageVolume = Code(rawValue: Int32(VIR_ERR_NO_STORAGE_VOL.rawValue))
        public static let authFailed = Code(rawValue: Int32(VIR_ERR_AUTH_FAILED.rawValue))
        public static let systemError = Code(rawValue: Int32(VIR_ERR_SYSTEM_ERROR.rawValue))
        public static let hookScriptFailed = Code(rawValue: Int32(VIR_ERR_HOOK_SCRIPT_FAILED.rawValue))
        public static let migrateUnsafe = Code(rawValue: Int32(VIR_ERR_MIGRATE_UNSAFE.rawValue))
        /// The connection to the hypervisor or daemon could not be made.
        public static let noConnect = Code(rawValue: Int32(VIR_ERR_NO_CONNECT.rawValue))
        public static let invalidConnection = Code(rawValue: Int32(VIR_ERR_INVALID_CONN.rawValue))
        /// An RPC failure, e.g. the daemon closed the connection.
        public static let rpc = Code(rawValue: Int32(VIR_ERR_RPC.rawValue))
        public static let operationDenied = Code(rawValue: Int32(VIR_ERR_OPERATION_DENIED.rawValue))
        public static let operationTimeout = Code(rawValue: Int32(VIR_ERR_OPERATION_TIMEOUT.rawValue))
        public static let operationUnsupported = Code(rawValue: Int32(VIR_ERR_OPERATION_UNSUPPORTED.rawValue))
        public static let configUnsupported = Code(rawValue: Int32(VIR_ERR_CONFIG_UNSUPPORTED.rawValue))
        public static let argumentUnsupported = Code(rawValue: Int32(VIR_ERR_ARGUMENT_UNSUPPORTED.rawValue))
        public static let authUnavailable = Code(rawValue: Int32(VIR_ERR_AUTH_UNAVAILABLE.rawValue))
        public static let authCancelled = Code(rawValue: Int32(VIR_ERR_AUTH_CANCELLED.rawValue))
        public static let domainExists = Code(rawValue: Int32(VIR_ERR_DOM_EXIST.rawValue))
        public static let storageVolumeExists = Code(rawValue: Int32(VIR_ERR_STORAGE_VOL_EXIST.rawValue))
        /// A domain job was aborted (``LibvirtDomain/abortJob()``, e.g. a migration).
        public static let operationAborted = Code(rawValue: Int32(VIR_ERR_OPERATION_ABORTED.rawValue))
        /// ``LibvirtConnection/compareHypervisorCPU(emulator:arch:machine:virtType:cpuXML:)``:
        /// the CPU cannot run on this host; the message says why.
        public static let cpuIncompatible = Code(rawValue: Int32(VIR_ERR_CPU_INCOMPATIBLE.rawValue))

        public var description: String { "virErrorNumber(\(rawValue))" }
    }

    /// libvirt's `virErrorDomain` (which part of libvirt raised the error) as an open set.
    public struct Domain: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let none = Domain(rawValue: Int32(VIR_FROM_NONE.rawValue))
        /// The RPC layer: sockets to libvirtd/virtqemud ("Failed to connect socket to ...").
        public static let rpc = Domain(rawValue: Int32(VIR_FROM_RPC.rawValue))
        /// The remote driver (a client connection to a daemon).
        public static let remote = Domain(rawValue: Int32(VIR_FROM_REMOTE.rawValue))
        public static let test = Domain(rawValue: Int32(VIR_FROM_TEST.rawValue))

        public var description: String { "virErrorDomain(\(rawValue))" }
    }

    /// The ONE place a libvirt failure becomes a Swift error: copies and clears the calling
    /// thread's last libvirt error. Call it on the same thread, immediately after the
    /// failing C call and before any other libvirt call (libvirt errors are thread-local).
    /// `fallback` is the message used when libvirt recorded no error.
    static func last(or fallback: @autoclosure () -> String) -> LibvirtError {
        var raw = clibvirt_error()
        clibvirt_copy_last_error(&raw)
        defer { clibvirt_error_dispose(&raw) }
        let message = raw.message.map { String(cString: $0) }
        return LibvirtError(
            code: Code(rawValue: raw.code),
            domain: Domain(rawValue: raw.domain),
            message: message ?? fallback()
        )
    }
}

/// Checks the return value of a libvirt call that signals failure with -1.
@discardableResult
func check(_ result: Int32, _ what: @autoclosure () -> String) throws(LibvirtError) -> Int32 {
    guard result >= 0 else { throw LibvirtError.last(or: "\(what()) failed") }
    return result
}

/// Unwraps a pointer returned by a libvirt call that signals failure with NULL.
func check<P>(_ pointer: P?, _ what: @autoclosure () -> String) throws(LibvirtError) -> P {
    guard let pointer else { throw LibvirtError.last(or: "\(what()) failed") }
    return pointer
}

/// Takes ownership of a caller-owned `char *` returned by libvirt: copies it and frees it.
func takeString(_ pointer: UnsafeMutablePointer<CChar>?, _ what: @autoclosure () -> String) throws(LibvirtError) -> String {
    guard let pointer else { throw LibvirtError.last(or: "\(what()) failed") }
    defer { clibvirt_free_string(pointer) }
    return String(cString: pointer)
}

/// Copies a library-owned `const char *` (never freed here).
func borrowString(_ pointer: UnsafePointer<CChar>?, _ what: @autoclosure () -> String) throws(LibvirtError) -> String {
    guard let pointer else { throw LibvirtError.last(or: "\(what()) failed") }
    return String(cString: pointer)
}

/// Reads a string that a libvirt call writes into a caller-provided, fixed-size buffer
/// (e.g. UUID strings, `VIR_UUID_STRING_BUFLEN` bytes).
func readFixedString(
    capacity: Int32,
    _ what: @autoclosure () -> String,
    _ fill: (UnsafeMutablePointer<CChar>) -> Int32
) throws -> String {
    try withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(capacity)) { buffer in
        buffer.initialize(repeating: 0)
        let base = buffer.baseAddress!
        try check(fill(base), what())
        buffer[buffer.count - 1] = 0
        return String(cString: base)
    }
}
