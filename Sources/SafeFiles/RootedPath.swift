#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// "Is this path under that root", the one implementation: a lexical check, and a
/// resolution that opens the path from the root one component at a time without
/// following any symbolic link below the root.
///
/// The lexical check alone does not make a path safe to open (a directory below the
/// root may be a link to `/etc`); resolving with `realpath(3)` and then opening leaves
/// a window in which a component can be replaced by a link. ``open(_:under:flags:mode:regularFile:)``
/// closes it: each directory is opened with `openat(parent, name, O_NOFOLLOW |
/// O_DIRECTORY)` and the last component with `O_NOFOLLOW`, so the file descriptor the
/// caller gets is the file the path names, reached only through real directories.
public enum RootedPath {
    /// The components of `path` below `root`, or nil when `path` is not lexically at or
    /// below `root`. Both must be absolute; empty and `.` components are ignored (so
    /// `/a//b/` is `/a/b`); a `..` component in either makes the answer nil (it is never
    /// resolved lexically: `/root/x/..` may not be `/root` when `x` is a link). Pure.
    public static func components(of path: String, under root: String) -> [Substring]? {
        guard path.hasPrefix("/"), root.hasPrefix("/") else { return nil }
        let p = path.split(separator: "/").filter { $0 != "." }
        let r = root.split(separator: "/").filter { $0 != "." }
        guard !p.contains(".."), !r.contains(".."), p.count >= r.count, p.starts(with: r) else { return nil }
        return Array(p.dropFirst(r.count))
    }

    /// Whether `path` is `root` or lexically below it (see ``components(of:under:)``). Pure.
    public static func isWithin(_ path: String, root: String) -> Bool {
        components(of: path, under: root) != nil
    }

    /// Whether `path` is strictly below `root` (not `root` itself). Pure.
    public static func isBelow(_ path: String, root: String) -> Bool {
        (components(of: path, under: root)?.count ?? 0) > 0
    }

    /// Opens `path`, which must be lexically at or below `root`, without following a
    /// symbolic link anywhere below the root (`root` itself is configuration and is
    /// followed). Returns a file descriptor the caller closes; `O_CLOEXEC` and
    /// `O_NOFOLLOW` are added to `flags`. `path == root` opens the root with `flags`.
    ///
    /// - `regularFile`: the last component must be a regular file; it is checked
    ///   before the open (so a FIFO or device is never opened, which could block or
    ///   have side effects) and again on the descriptor.
    /// - Throws ``FileError/outsideRoot(path:root:)``, ``FileError/symbolicLink(path:)``
    ///   (naming the component that is a link), ``FileError/notRegularFile(path:)``, or
    ///   ``FileError/system(operation:path:errno:)`` (ENOENT for a missing component).
    /// Blocking (directory lookups).
    public static func open(_ path: String, under root: String, flags: Int32 = O_RDONLY, mode: mode_t = 0,
                            regularFile: Bool = false) throws(FileError) -> Int32 {
        guard let parts = components(of: path, under: root) else { throw .outsideRoot(path: path, root: root) }
        var fd = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "open", path: root, errno: lastErrno()) }
        guard let last = parts.last else {
            defer { close(fd) }
            let reopened = openat(fd, ".", flags | O_CLOEXEC, mode)
            guard reopened >= 0 else { throw .system(operation: "open", path: root, errno: lastErrno()) }
            return reopened
        }
        var walked = root.hasSuffix("/") ? String(root.dropLast()) : root
        for part in parts.dropLast() {
            walked += "/" + part
            let next = openat(fd, String(part), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let code = lastErrno()
            if next < 0 {
                let error = classify(parent: fd, name: String(part), path: walked, errno: code)
                close(fd)
                throw error
            }
            close(fd)
            fd = next
        }
        defer { close(fd) }
        walked += "/" + last
        let name = String(last)
        if regularFile {
            var st = stat()
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw .system(operation: "stat", path: walked, errno: lastErrno())
            }
            if st.st_mode & S_IFMT == S_IFLNK { throw .symbolicLink(path: walked) }
            guard st.st_mode & S_IFMT == S_IFREG else { throw .notRegularFile(path: walked) }
        }
        let file = openat(fd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)
        guard file >= 0 else { throw classify(parent: fd, name: name, path: walked, errno: lastErrno()) }
        // O_PATH | O_NOFOLLOW opens a symbolic link itself instead of failing (open(2)):
        // look at what was opened.
        var st = stat()
        guard fstat(file, &st) == 0 else {
            let code = lastErrno()
            close(file)
            throw .system(operation: "stat", path: walked, errno: code)
        }
        if st.st_mode & S_IFMT == S_IFLNK {
            close(file)
            throw .symbolicLink(path: walked)
        }
        if regularFile && st.st_mode & S_IFMT != S_IFREG {
            close(file)
            throw .notRegularFile(path: walked)
        }
        return file
    }

    /// Opens the directory `path` under `root` (see ``open(_:under:flags:mode:regularFile:)``).
    public static func openDirectory(_ path: String, under root: String) throws(FileError) -> Int32 {
        try open(path, under: root, flags: O_RDONLY | O_DIRECTORY)
    }

    /// ELOOP (O_NOFOLLOW on a link) or ENOTDIR (O_DIRECTORY on a link, on some kernels)
    /// are reported as the link they are; anything else as the system error.
    private static func classify(parent: Int32, name: String, path: String, errno code: Int32) -> FileError {
        var st = stat()
        if (code == ELOOP || code == ENOTDIR), fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0,
           st.st_mode & S_IFMT == S_IFLNK {
            return .symbolicLink(path: path)
        }
        return .system(operation: "open", path: path, errno: code)
    }
}
