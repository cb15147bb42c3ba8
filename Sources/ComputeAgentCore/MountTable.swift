import Foundation
import MountInfo

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

    /// The mounts of mountinfo text that name their file system type.
    static func parse(_ text: String) -> MountTable {
        MountTable(mounts: MountInfo.parse(text).compactMap { e in
            e.fileSystem.map { Mount(mountPoint: e.mountPoint, fileSystem: $0) }
        })
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
