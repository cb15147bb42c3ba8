#if canImport(Glibc)
import Glibc
#endif
import MountInfo

/// Where the hook reads this host's facts. Fixed in a release build; see
/// ``HookPaths/forThisProcess()`` for the test seam.
public struct HookPaths: Sendable, Equatable {
    /// The administrator's file: `exempt = NAME` lines, optionally `ready-shares = PATH`.
    public var config: String
    /// storagectl's record of ready shares, kept by the compute agent (one absolute
    /// share root per line). `ready-shares =` in ``config`` overrides it.
    public var readyShares: String
    /// The mount table the "is it mounted" test reads.
    public var mountInfo: String

    public init(config: String, readyShares: String, mountInfo: String) {
        self.config = config
        self.readyShares = readyShares
        self.mountInfo = mountInfo
    }

    public static let standard = HookPaths(config: "/etc/storagectl/migration-hook.conf",
                                           readyShares: "/var/lib/storagectl/ready-shares",
                                           mountInfo: "/proc/self/mountinfo")

    /// The environment variable that, in a DEBUG build only, moves every path under a
    /// test directory (`DIR/migration-hook.conf`, `DIR/ready-shares`, `DIR/mountinfo`).
    public static let testRootVariable = "STORAGECTL_MIGRATION_HOOK_TEST_ROOT"

    /// ``standard``. A debug build (what `swift test` runs) also honours
    /// ``testRootVariable``: the hook's tests run the built executable as libvirt would,
    /// against a record and mount table of their own. A release build (`make install`)
    /// compiles the seam out, so no environment can redirect the gate; libvirtd runs
    /// hooks with a cleared environment anyway (virCommandAddEnvPassCommon passes PATH,
    /// HOME, USER, LOGNAME, TMPDIR, LC_ALL and the LD_ variables only).
    public static func forThisProcess() -> HookPaths {
        #if DEBUG
        if let p = getenv(testRootVariable) {
            let dir = String(cString: p)
            if dir.hasPrefix("/") {
                return HookPaths(config: dir + "/migration-hook.conf", readyShares: dir + "/ready-shares", mountInfo: dir + "/mountinfo")
            }
        }
        #endif
        return standard
    }
}

/// The administrator's configuration (`/etc/storagectl/migration-hook.conf`):
/// `# comments`, blank lines, `exempt = NAME` (repeatable) and `ready-shares = PATH`.
/// Any other line is an error (the hook then refuses: fail closed). A missing file is an
/// empty configuration.
public struct HookConfig: Sendable, Equatable {
    public var exempt: Set<String> = []
    public var readyShares: String?

    public init(exempt: Set<String> = [], readyShares: String? = nil) {
        self.exempt = exempt
        self.readyShares = readyShares
    }

    public static func parse(_ text: String, file: String) throws(HookError) -> HookConfig {
        var config = HookConfig()
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingWhitespace
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw HookError("\(file) line \(n + 1) is not `key = value`")
            }
            let key = line[..<eq].trimmingWhitespace
            let value = line[line.index(after: eq)...].trimmingWhitespace
            guard !value.isEmpty else { throw HookError("\(file) line \(n + 1) has no value") }
            switch key {
            case "exempt": config.exempt.insert(value)
            case "ready-shares":
                guard value.hasPrefix("/") else { throw HookError("\(file) line \(n + 1): ready-shares must be an absolute path") }
                config.readyShares = value
            default: throw HookError("\(file) line \(n + 1): unknown key '\(key)' (exempt, ready-shares)")
            }
        }
        return config
    }
}

/// The share roots this host has ready right now: listed in storagectl's record, a real
/// directory (the canonical path is the path itself: no symbolic link, no `..`), and a
/// mount point in this host's mount table.
public struct ReadyShares: Sendable, Equatable {
    public var listed: [String]
    public var mountPoints: Set<String>

    public init(listed: [String], mountPoints: Set<String>) {
        self.listed = listed
        self.mountPoints = mountPoints
    }

    /// The record: one absolute path per line; `#` comments and blank lines ignored.
    public static func parseRecord(_ text: String, file: String) throws(HookError) -> [String] {
        var roots: [String] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingWhitespace
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard line.hasPrefix("/"), line != "/" else { throw HookError("\(file) line \(n + 1) is not an absolute share root") }
            roots.append(line)
        }
        return roots
    }

    /// The mount points of `/proc/self/mountinfo` (octal escapes `\040` etc. decoded).
    public static func parseMountInfo(_ text: String) -> Set<String> {
        Set(MountInfo.parse(text).map(\.mountPoint))
    }
}

/// The file system questions of the decision, behind a seam so the decision is pure.
public protocol PathResolver: Sendable {
    /// realpath(3): the canonical path (`..` and every symbolic link resolved), or nil
    /// when the file does not exist or cannot be resolved.
    func canonical(_ path: String) -> String?
}

/// realpath(3) on this host.
public struct RealPaths: PathResolver {
    public init() {}
    public func canonical(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}

extension StringProtocol {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
