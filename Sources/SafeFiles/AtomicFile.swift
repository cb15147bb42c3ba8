#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Durable, atomic replacement of a file: the one implementation of write-temporary,
/// `fsync`, `rename`, `fsync` of the directory in this code base.
///
/// A reader, or a crash at any instant, sees the old content or the new one, never a
/// mix, an empty file or a partial one: the bytes go to a temporary name in the same
/// directory, are flushed with `fsync(2)`, then `rename(2)` replaces the final name in
/// one step, and `fsync` of the directory makes the rename itself durable
/// (rename(2), fsync(2): a rename is only on disk once its directory is).
///
/// Every function blocks: call it from a blocking executor (`BlockingIO`), never on
/// Swift's cooperative pool. None takes a lock; a caller that may race with itself on
/// one path serialises the writes (the temporary name is fixed per path).
public enum AtomicFile {
    /// Replaces `path` with `bytes`.
    ///
    /// - `temporaryName`: the name, in `path`'s directory, the bytes are written under
    ///   (default `.<name>.storagectl-tmp`); a leftover file of that name (an earlier
    ///   crash) is removed first.
    /// - An existing `path` must be a regular file (a symbolic link, directory or device
    ///   is refused with ``FileError/notRegularFile(path:)``, nothing written); its
    ///   permission bits and owner are kept. A new file gets `mode` exactly (the umask
    ///   does not apply) and the caller's owner.
    /// - On any failure the temporary file is removed and `path` is untouched.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644,
                             temporaryName: String? = nil) throws(FileError) {
        try write(bytes, to: path, mode: mode, temporaryName: temporaryName, beforeRename: { () throws(FileError) in })
    }

    /// `write` with a hook run after the temporary file is complete and synced, just
    /// before the rename (tests interrupt the write there).
    static func write(_ bytes: [UInt8], to path: String, mode: mode_t, temporaryName: String?,
                      beforeRename: () throws(FileError) -> Void) throws(FileError) {
        let (directory, name) = split(path)
        let temp = temporaryName ?? ".\(name).storagectl-tmp"
        let dir = try openDirectory(directory)
        defer { close(dir) }
        var existing = stat()
        let exists = fstatat(dir, name, &existing, AT_SYMLINK_NOFOLLOW) == 0
        if exists && existing.st_mode & S_IFMT != S_IFREG { throw .notRegularFile(path: path) }
        let tempPath = join(directory, temp)
        unlinkat(dir, temp, 0)
        let finalMode = exists ? existing.st_mode & 0o7777 : mode
        let fd = openat(dir, temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, finalMode)
        guard fd >= 0 else { throw .system(operation: "create", path: tempPath, errno: lastErrno()) }
        var done = false
        defer { if !done { unlinkat(dir, temp, 0) } }
        try fill(fd, bytes, path: tempPath, mode: finalMode, owner: exists ? (existing.st_uid, existing.st_gid) : nil)
        try beforeRename()
        try publish(temporary: temp, as: name, in: dir, directoryPath: directory)
        done = true
    }

    /// Writes, sets mode (and owner), syncs and closes `fd`.
    private static func fill(_ fd: Int32, _ bytes: [UInt8], path: String, mode: mode_t, owner: (uid_t, gid_t)?) throws(FileError) {
        defer { close(fd) }
        try writeAll(fd, bytes, path: path)
        // open(2)'s mode is filtered by the umask: set it exactly.
        guard fchmod(fd, mode) == 0 else { throw .system(operation: "chmod", path: path, errno: lastErrno()) }
        if let owner { _ = fchown(fd, owner.0, owner.1) }
        guard fsync(fd) == 0 else { throw .system(operation: "fsync", path: path, errno: lastErrno()) }
    }

    /// Gives the complete, synced file `temporary` the name `name` in the directory
    /// open as `dir` (replacing a file of that name), then syncs the directory. The
    /// second half of ``write(_:to:mode:temporaryName:)``; also used by callers that
    /// fill the temporary file themselves (the copy engine's local copies).
    public static func publish(temporary: String, as name: String, in dir: Int32, directoryPath: String) throws(FileError) {
        guard renameat(dir, temporary, dir, name) == 0 else {
            throw .system(operation: "rename \(temporary) to", path: join(directoryPath, name), errno: lastErrno())
        }
        guard fsync(dir) == 0 else { throw .system(operation: "fsync the directory", path: directoryPath, errno: lastErrno()) }
    }

    /// `fsync` of the directory holding `path`, so that a rename in it is durable.
    public static func syncDirectory(of path: String) throws(FileError) {
        let directory = split(path).directory
        let dir = try openDirectory(directory)
        defer { close(dir) }
        guard fsync(dir) == 0 else { throw .system(operation: "fsync the directory", path: directory, errno: lastErrno()) }
    }

    /// Writes every byte of `bytes` at the file offset, continuing short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(FileError) {
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if lastErrno() == EINTR { continue }
                throw .system(operation: "write", path: path, errno: lastErrno())
            }
            written += n
        }
    }

    /// Opens a directory for `*at` calls and `fsync`.
    public static func openDirectory(_ path: String) throws(FileError) -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "open the directory", path: path, errno: lastErrno()) }
        return fd
    }

    /// (directory, last component) of `path`; a bare name is in `.`.
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
