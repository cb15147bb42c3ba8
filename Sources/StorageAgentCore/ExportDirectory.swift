import AgentProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Creates export directories under the export root without ever following a link.
enum ExportDirectory {
    /// Ensures the directory `path` (validated: equal to or below `root`) exists and
    /// returns its real path. Blocking.
    ///
    /// - The export root is the administrator's configuration: it may sit behind
    ///   symlinks (e.g. `/var/lib` on another disk); it is created with its missing
    ///   parents when absent.
    /// - Below the root every component is opened with `O_NOFOLLOW | O_DIRECTORY`
    ///   relative to its parent (`openat`), so a symlink planted inside the root can
    ///   never redirect the export elsewhere: it is refused with `invalid-state`.
    /// - Directories the agent creates get mode 0755 and owner root:root (when the agent
    ///   runs as root); existing directories are left exactly as they are.
    /// - Idempotent: an existing directory is fine.
    static func ensure(_ path: String, root: String) throws(AgentError) -> String {
        if access(root, F_OK) != 0 {
            do {
                try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o755])
            } catch {
                throw AgentError(.internal, "cannot create the export root \(root): \(error.localizedDescription)")
            }
        }
        guard let realRoot = PosixFiles.realPath(root) else {
            throw AgentError(.internal, "cannot resolve the export root \(root): \(PosixFiles.errorText())")
        }
        var fd = open(realRoot, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw AgentError(.invalidState, "the export root \(root) is not a directory: \(PosixFiles.errorText())")
        }
        defer { close(fd) }
        let relative = path == root ? "" : String(path.dropFirst(root.count + 1))
        var real = realRoot
        for component in relative.split(separator: "/").map(String.init) {
            real += "/" + component
            var next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT {
                if mkdirat(fd, component, 0o755) != 0 && errno != EEXIST {
                    throw AgentError(.internal, "cannot create \(real): \(PosixFiles.errorText())")
                }
                next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if next >= 0 {
                    _ = fchmod(next, 0o755)  // mkdirat's mode is filtered by the umask
                    if geteuid() == 0 { _ = fchown(next, 0, 0) }
                }
            }
            if next < 0 {
                let e = errno
                if e == ELOOP || e == ENOTDIR {
                    throw AgentError(.invalidState, "\(real) exists and is not a directory (a symbolic link or a file); the agent never exports through links: remove or rename it")
                }
                throw AgentError(.internal, "cannot open \(real): \(PosixFiles.errorText(e))")
            }
            close(fd)
            fd = next
        }
        return real
    }
}
