import CLibvirt

/// A libvirt domain (VM), owning its `virDomainPtr` (freed in `deinit`; the domain
/// itself is untouched). Keeps its connection alive.
///
/// Blocking and thread-safety: as ``LibvirtConnection``.
public final class LibvirtDomain: @unchecked Sendable {
    let pointer: OpaquePointer
    /// The connection this domain was obtained from.
    public let connection: LibvirtConnection

    init(owning pointer: OpaquePointer, connection: LibvirtConnection) {
        self.pointer = pointer
        self.connection = connection
    }

    deinit {
        virDomainFree(pointer)
    }

    /// The domain's name.
    public var name: String {
        get throws { try borrowString(virDomainGetName(pointer), "virDomainGetName") }
    }

    /// The domain's UUID, lower-case with dashes.
    public var uuidString: String {
        get throws {
            try readFixedString(capacity: VIR_UUID_STRING_BUFLEN, "virDomainGetUUIDString") { virDomainGetUUIDString(pointer, $0) }
        }
    }

    /// The domain's current run state.
    public var state: DomainState {
        get throws {
            var state: Int32 = 0
            var reason: Int32 = 0
            try check(virDomainGetState(pointer, &state, &reason, 0), "virDomainGetState")
            return DomainState(rawState: state)
        }
    }

    /// Whether the domain has a persistent definition (survives shutdown).
    public var isPersistent: Bool {
        get throws { try check(virDomainIsPersistent(pointer), "virDomainIsPersistent") == 1 }
    }

    /// Whether the domain is running (or paused, ...): has a live instance.
    public var isActive: Bool {
        get throws { try check(virDomainIsActive(pointer), "virDomainIsActive") == 1 }
    }

    /// The domain's XML description. With `.inactive` the persistent definition (what the
    /// next boot uses) rather than the live one; `.secure` includes secrets (passwords).
    public func xmlDesc(flags: DomainXMLFlags = []) throws -> String {
        try takeString(virDomainGetXMLDesc(pointer, flags.rawValue), "virDomainGetXMLDesc")
    }

    /// Starts the defined, inactive domain (`virDomainCreate`).
    /// - Throws: ``LibvirtError`` (``LibvirtError/Code/operationInvalid``) if it is already active.
    public func create() throws {
        try check(virDomainCreate(pointer), "virDomainCreate")
    }

    /// Stops the domain immediately, like pulling the plug (`virDomainDestroy`).
    /// A persistent domain stays defined; a transient one disappears.
    public func destroy() throws {
        try check(virDomainDestroy(pointer), "virDomainDestroy")
    }

    /// Removes the persistent definition. An active domain keeps running as transient.
    /// `flags` are `virDomainUndefineFlagsValues` (0 = none).
    public func undefine(flags: UInt32 = 0) throws {
        try check(virDomainUndefineFlags(pointer, flags), "virDomainUndefineFlags")
    }
}

/// Flags of ``LibvirtDomain/xmlDesc(flags:)`` (`virDomainXMLFlags`).
public struct DomainXMLFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Include security-sensitive data such as VNC passwords.
    public static let secure = DomainXMLFlags(rawValue: UInt32(VIR_DOMAIN_XML_SECURE.rawValue))
    /// The persistent (next boot) definition instead of the live one.
    public static let inactive = DomainXMLFlags(rawValue: UInt32(VIR_DOMAIN_XML_INACTIVE.rawValue))
    /// Update guest CPU requirements according to the host CPU.
    public static let updateCPU = DomainXMLFlags(rawValue: UInt32(VIR_DOMAIN_XML_UPDATE_CPU.rawValue))
    /// XML suitable for migration (drops details the destination fills in).
    public static let migratable = DomainXMLFlags(rawValue: UInt32(VIR_DOMAIN_XML_MIGRATABLE.rawValue))
}

/// A domain's run state (`virDomainState`).
public enum DomainState: Sendable, Hashable, CustomStringConvertible {
    case running
    case blocked
    case paused
    case shutdown
    case shutoff
    case crashed
    case pmsuspended
    /// `VIR_DOMAIN_NOSTATE` or a value newer than this wrapper.
    case unknown

    /// Maps libvirt's `virDomainState` value.
    public init(rawState: Int32) {
        switch UInt32(bitPattern: rawState) {
        case VIR_DOMAIN_RUNNING.rawValue: self = .running
        case VIR_DOMAIN_BLOCKED.rawValue: self = .blocked
        case VIR_DOMAIN_PAUSED.rawValue: self = .paused
        case VIR_DOMAIN_SHUTDOWN.rawValue: self = .shutdown
        case VIR_DOMAIN_SHUTOFF.rawValue: self = .shutoff
        case VIR_DOMAIN_CRASHED.rawValue: self = .crashed
        case VIR_DOMAIN_PMSUSPENDED.rawValue: self = .pmsuspended
        default: self = .unknown
        }
    }

    /// The words `virsh domstate` prints ("running", "shut off", ...).
    public var description: String {
        switch self {
        case .running: return "running"
        case .blocked: return "idle"
        case .paused: return "paused"
        case .shutdown: return "in shutdown"
        case .shutoff: return "shut off"
        case .crashed: return "crashed"
        case .pmsuspended: return "pmsuspended"
        case .unknown: return "no state"
        }
    }
}
