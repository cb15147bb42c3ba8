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
/// Swift's cooperative pool. Concurrent writers of one path are safe: each writes its
/// own temporary file (a unique name, created `O_EXCL` and held with `flock(2)` until
/// it is renamed), and the last rename wins; a leftover temporary file of a writer that
/// died (no lock held on it) is removed by the next write.
public enum AtomicFile {
    /// Replaces `path` with `bytes`.
    ///
    /// - `temporaryName`: the prefix, in `path`'s directory, of the name the bytes are
    ///   written under (default `.<name>.storagectl-tmp`; the file is `PREFIX.<unique>`).
    ///   Leftovers of earlier crashes (`PREFIX` itself, or `PREFIX.*` that no live
    ///   writer holds locked) are removed first.
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
        let prefix = temporaryName ?? ".\(name).storagectl-tmp"
        let dir = try openDirectory(directory)
        defer { close(dir) }
        var existing = stat()
        let exists = fstatat(dir, name, &existing, AT_SYMLINK_NOFOLLOW) == 0
        if exists && existing.st_mode & S_IFMT != S_IFREG { throw .notRegularFile(path: path) }
        removeLeftovers(prefix: prefix, in: dir)
        let finalMode = exists ? existing.st_mode & 0o7777 : mode
        let (fd, temp) = try createTemporary(prefix: prefix, in: dir, directoryPath: directory, mode: finalMode)
        let tempPath = join(directory, temp)
        // The descriptor (and with it the lock) is kept until after the rename.
        defer { close(fd) }
        var done = false
        defer { if !done { unlinkat(dir, temp, 0) } }
        try fill(fd, bytes, path: tempPath, mode: finalMode, owner: exists ? (existing.st_uid, existing.st_gid) : nil)
        try beforeRename()
        try publish(temporary: temp, as: name, in: dir, directoryPath: directory)
        done = true
    }

    /// Creates `PREFIX.<unique>` with `O_EXCL` and locks it (`flock`, exclusive), so
    /// that ``removeLeftovers(prefix:in:)`` of another writer leaves it alone. A file
    /// another writer removed between the create and the lock (it took the lock first)
    /// is given up and another name tried.
    private static func createTemporary(prefix: String, in dir: Int32, directoryPath: String,
                                        mode: mode_t) throws(FileError) -> (fd: Int32, name: String) {
        var attempts = 0
        while true {
            attempts += 1
            var g = SystemRandomNumberGenerator()
            let name = "\(prefix).\(getpid())-\(String(UInt64.random(in: .min ... .max, using: &g), radix: 36))"
            let fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
            if fd < 0 {
                let code = lastErrno()
                if code == EEXIST && attempts < 8 { continue }
                throw .system(operation: "create", path: join(directoryPath, name), errno: code)
            }
            var st = stat()
            guard flock(fd, LOCK_EX) == 0, fstat(fd, &st) == 0 else {
                let code = lastErrno()
                close(fd)
                unlinkat(dir, name, 0)
                throw .system(operation: "lock", path: join(directoryPath, name), errno: code)
            }
            if st.st_nlink > 0 { return (fd, name) }
            close(fd)
            if attempts >= 8 { throw .system(operation: "create", path: join(directoryPath, name), errno: EAGAIN) }
        }
    }

    /// Removes `prefix` (the fixed temporary name of earlier versions) and every
    /// `prefix.*` in `dir` that no writer holds locked: a writer that died released its
    /// lock with its last descriptor (flock(2)). Best effort.
    private static func removeLeftovers(prefix: String, in dir: Int32) {
        let listing = dup(dir)
        guard listing >= 0, let stream = fdopendir(listing) else {
            if listing >= 0 { close(listing) }
            return
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == prefix || name.hasPrefix(prefix + ".") { names.append(name) }
        }
        for name in names {
            let fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            if fd < 0 {
                // A link or something unopenable under a temporary name of ours: junk.
                if lastErrno() == ELOOP { unlinkat(dir, name, 0) }
                continue
            }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { unlinkat(dir, name, 0) }
            close(fd)
        }
    }

    /// Writes, sets mode (and owner) and syncs `fd` (the caller closes it).
    private static func fill(_ fd: Int32, _ bytes: [UInt8], path: String, mode: mode_t, owner: (uid_t, gid_t)?) throws(FileError) {
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
