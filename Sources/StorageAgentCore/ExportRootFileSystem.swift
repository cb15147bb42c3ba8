import Foundation
import MountInfo
#if canImport(Glibc)
import Glibc
#endif

/// Whether the export root is a file system of its own. exports(5): with
/// `no_subtree_check` the server does not check that a file handle lies inside the
/// exported directory, so a client that has (or guesses) a handle of another file on the
/// same file system reaches it: export whole file systems.
enum ExportRootFileSystem {
    /// nil when `root` is the root of a file system of its own; else a sentence saying why
    /// not and what to do. A root that does not exist (yet) is nil (the export-root check
    /// says so). Blocking.
    static func problem(root: String) -> String? {
        guard let real = PosixFiles.realPath(root) else { return nil }
        let mountinfo = (try? PosixFiles.read("/proc/self/mountinfo")).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) }
        var st = stat(), parent = stat()
        let devices: (UInt64, UInt64)? = stat(real, &st) == 0 && stat(real + "/..", &parent) == 0
            ? (UInt64(st.st_dev), UInt64(parent.st_dev)) : nil
        return problem(realRoot: real, mountinfo: mountinfo ?? "", devices: devices)
    }

    /// The decision, pure: the mount at `realRoot` in `mountinfo` (the last one, which
    /// shadows the others) must mount the root of its file system (`/`, not a bind mount
    /// of a subdirectory); without a mount there, a device that differs from the parent's
    /// (`devices`: root's, parent's) counts too (btrfs subvolumes).
    static func problem(realRoot: String, mountinfo: String, devices: (UInt64, UInt64)?) -> String? {
        let advice = "exports(5) advises exporting whole file systems with no_subtree_check: a client holding a file handle "
            + "(guessed or kept) can reach files outside the export on the same file system. Mount a file system of its own at \(realRoot)"
        if let entry = mounts(mountinfo).last(where: { $0.mountPoint == realRoot }) {
            if entry.root == "/" { return nil }
            return "the export root \(realRoot) is a bind mount of \(entry.root), a directory of a larger file system; " + advice
        }
        if let devices, devices.0 != devices.1 { return nil }
        return "the export root \(realRoot) is not a file system of its own (it is a directory of the file system of its parent); " + advice
    }

    /// (root within the file system, mount point) of each mountinfo line (proc(5)).
    static func mounts(_ mountinfo: String) -> [(root: String, mountPoint: String)] {
        MountInfo.parse(mountinfo).map { ($0.root, $0.mountPoint) }
    }
}
