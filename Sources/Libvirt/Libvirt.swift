import CLibvirt

/// Process-wide libvirt set-up, run once before the first connection: initializes the
/// library (`virInitialize`, thread-safe) and replaces the default error handler, which
/// prints every error to stderr, with one that does nothing (errors are still returned
/// as ``LibvirtError``).
enum LibvirtLibrary {
    private static let initialized: Result<Void, LibvirtError> = {
        if virInitialize() < 0 {
            return .failure(LibvirtError.last(or: "virInitialize failed"))
        }
        clibvirt_silence_default_error_handler()
        return .success(())
    }()

    static func ensureInitialized() throws(LibvirtError) {
        try initialized.get()
    }
}

/// A libvirt version number (`major * 1_000_000 + minor * 1_000 + release`).
public struct LibvirtVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var release: Int

    public init(major: Int, minor: Int, release: Int) {
        self.major = major
        self.minor = minor
        self.release = release
    }

    /// Decodes libvirt's packed form, e.g. 9000000 -> 9.0.0.
    public init(packed: UInt) {
        self.init(major: Int(packed / 1_000_000), minor: Int(packed / 1_000 % 1_000),
                  release: Int(packed % 1_000))
    }

    public var description: String { "\(major).\(minor).\(release)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.major, lhs.minor, lhs.release) < (rhs.major, rhs.minor, rhs.release)
    }
}
