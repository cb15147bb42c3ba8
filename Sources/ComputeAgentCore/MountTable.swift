import Foundation

/// The file system a path is on, from `/proc/self/mountinfo` (the mount point that is
/// the longest prefix of the path, component-wise; the last such mount wins, as it hides
/// earlier ones). For MIGRATION-FACTS' `fs=`: a disk on `nfs`/`nfs4` is shared storage,
/// one on `ext4` or `xfs` is not.
struct MountTable: Sendable, Equatable {
    struct Mount: Sendable, Equatable {
        var mountPoint: String
        var fileSystem: String
    }
    var mounts: [Mount]

    /// Reads the calling process's mount table. Blocking (a small procfs read).
    static func current() -> MountTable {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return MountTable(mounts: []) }
        return parse(text)
    }

    /// Parses mountinfo lines: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
    static func parse(_ text: String) -> MountTable {
        var mounts: [Mount] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 1 < fields.count else { continue }
            mounts.append(Mount(mountPoint: unescape(String(fields[4])), fileSystem: String(fields[dash + 1])))
        }
        return MountTable(mounts: mounts)
    }

    /// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var bytes: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "\\"), i + 3 < u.count,
               let v = UInt8(String(decoding: u[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                bytes.append(v)
                i += 4
            } else {
                bytes.append(u[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The file system type of the mount `path` is on (nil when no mount matches, which
    /// only a relative path does). `path` should be resolved (no symbolic links).
    func fileSystem(of path: String) -> String? {
        var best: Mount?
        for m in mounts where Self.isUnder(path, m.mountPoint) {
            if best == nil || m.mountPoint.utf8.count >= best!.mountPoint.utf8.count { best = m }
        }
        return best?.fileSystem
    }

    static func isUnder(_ path: String, _ mountPoint: String) -> Bool {
        if mountPoint == "/" { return path.hasPrefix("/") }
        return path == mountPoint || path.hasPrefix(mountPoint + "/")
    }

    /// The type for a disk's source: symbolic links resolved when the path exists.
    func fileSystem(ofDiskSource source: String) -> String? {
        let resolved = source.withCString { realpath($0, nil) }.map { p -> String in defer { free(p) }; return String(cString: p) }
        return fileSystem(of: resolved ?? source)
    }
}
