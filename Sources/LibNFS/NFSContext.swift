import CNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A libnfs client context (`struct nfs_context`): one connection to one NFS export,
/// destroyed in `deinit` (which closes the connection).
///
/// Threading: a context and everything opened through it must be used by one thread at
/// a time, and libnfs expects one context per thread; the type is deliberately not
/// `Sendable`. Create, use and drop a context inside one job of a serial
/// `BlockingExecutor` (module `BlockingIO`), never on Swift's cooperative pool: every
/// method here blocks (network round trips, up to the context's timeout).
///
/// Paths are relative to the mounted export (`/` is the export's root).
public final class NFSContext {
    let pointer: OpaquePointer

    /// Creates an unconnected context. Call ``mount(server:export:)`` or ``mount(url:)``.
    public init() throws {
        guard let context = nfs_init_context() else {
            throw NFSError(code: ENOMEM, message: "nfs_init_context failed")
        }
        self.pointer = context
    }

    deinit {
        nfs_destroy_context(pointer)
    }

    // MARK: Settings (before mounting)

    /// Selects NFS version 3 (default; needs MOUNT via the portmapper unless a
    /// `mountport=` URL parameter was given) or 4. libnfs 4.0 cannot write files larger
    /// than a few KiB over NFSv4.
    public func setVersion(_ version: Int) throws {
        let result = nfs_set_version(pointer, Int32(version))
        guard result == 0 else { throw NFSError.last(pointer, result: result, "nfs_set_version(\(version))") }
    }

    /// The numeric uid sent in AUTH_SYS credentials (default: the process's uid).
    public func setUID(_ uid: Int) {
        nfs_set_uid(pointer, Int32(truncatingIfNeeded: uid))
    }

    /// The numeric gid sent in AUTH_SYS credentials (default: the process's gid).
    public func setGID(_ gid: Int) {
        nfs_set_gid(pointer, Int32(truncatingIfNeeded: gid))
    }

    /// The timeout of each RPC in milliseconds (whole seconds in libnfs 4), -1 = none.
    public func setTimeout(milliseconds: Int) {
        nfs_set_timeout(pointer, Int32(clamping: milliseconds))
    }

    /// How often libnfs reconnects after a lost session: -1 forever, 0 never, N times.
    public func setAutoreconnect(_ retries: Int) {
        nfs_set_autoreconnect(pointer, Int32(clamping: retries))
    }

    // MARK: Mount

    /// Mounts `export` on `server` (a name or address; no `host:port`).
    public func mount(server: String, export: String) throws {
        try call("nfs_mount(\(server):\(export))") { nfs_mount(pointer, server, export) }
    }

    /// Parses `nfs://server/export[?version=4&uid=0&gid=0&nfsport=N&mountport=N...]`
    /// (the query is applied to this context; unknown parameters are ignored by libnfs)
    /// and mounts the export. The whole path is taken as the export.
    /// - Throws: ``NFSError`` if libnfs cannot parse the URL or the mount fails.
    public func mount(url: String) throws {
        guard let parsed = nfs_parse_url_dir(pointer, url) else {
            throw NFSError.last(pointer, result: -EINVAL, "nfs_parse_url_dir(\(url))")
        }
        defer { nfs_destroy_url(parsed) }
        guard let server = cnfs_url_server(parsed), let path = cnfs_url_path(parsed) else {
            throw NFSError(code: EINVAL, message: "NFS URL without server or path: \(url)")
        }
        let serverName = String(cString: server)
        let export = String(cString: path)
        try mount(server: serverName, export: export)
    }

    /// The largest READ and WRITE sizes the server accepts (valid after mounting).
    public var maxReadSize: UInt64 { nfs_get_readmax(pointer) }
    public var maxWriteSize: UInt64 { nfs_get_writemax(pointer) }

    // MARK: Files

    /// Attributes of `path` (follows symlinks).
    public func stat(_ path: String) throws -> NFSStat {
        var raw = nfs_stat_64()
        try call("nfs_stat64(\(path))") { nfs_stat64(pointer, path, &raw) }
        return NFSStat(raw)
    }

    /// Opens an existing file. `flags` are `O_RDONLY`, `O_WRONLY`, `O_RDWR`, optionally
    /// with `O_TRUNC`, `O_SYNC`, `O_APPEND`.
    public func open(_ path: String, flags: Int32 = O_RDONLY) throws -> NFSFile {
        var handle: OpaquePointer?
        try call("nfs_open(\(path))") { nfs_open(pointer, path, flags, &handle) }
        return try NFSFile(context: self, handle: handle, path: path)
    }

    /// Creates a file with permission bits `mode` and opens it for writing. `flags` may
    /// combine `O_EXCL` (fail with EEXIST if it exists; the default), `O_TRUNC`,
    /// `O_SYNC`, `O_APPEND`, `O_NOFOLLOW` (what `nfs_create` accepts).
    public func create(_ path: String, flags: Int32 = O_EXCL, mode: Int32 = 0o600) throws -> NFSFile {
        var handle: OpaquePointer?
        try call("nfs_create(\(path))") { nfs_create(pointer, path, flags, mode, &handle) }
        return try NFSFile(context: self, handle: handle, path: path)
    }

    /// `creat(2)`: creates or truncates `path` with permission bits `mode`.
    public func creat(_ path: String, mode: Int32 = 0o600) throws -> NFSFile {
        var handle: OpaquePointer?
        try call("nfs_creat(\(path))") { nfs_creat(pointer, path, mode, &handle) }
        return try NFSFile(context: self, handle: handle, path: path)
    }

    /// Removes a file.
    public func unlink(_ path: String) throws {
        try call("nfs_unlink(\(path))") { nfs_unlink(pointer, path) }
    }

    /// Renames `from` to `to`, atomically replacing `to` if it exists (NFS RENAME).
    public func rename(_ from: String, to: String) throws {
        try call("nfs_rename(\(from), \(to))") { nfs_rename(pointer, from, to) }
    }

    /// Creates a directory with permission bits `mode`.
    public func mkdir(_ path: String, mode: Int32 = 0o755) throws {
        try call("nfs_mkdir2(\(path))") { nfs_mkdir2(pointer, path, mode) }
    }

    /// Removes an empty directory.
    public func rmdir(_ path: String) throws {
        try call("nfs_rmdir(\(path))") { nfs_rmdir(pointer, path) }
    }

    /// The entries of directory `path`, without "." and "..", in server order.
    public func listDirectory(_ path: String) throws -> [NFSDirectoryEntry] {
        var directory: OpaquePointer?
        try call("nfs_opendir(\(path))") { nfs_opendir(pointer, path, &directory) }
        guard let directory else { return [] }
        defer { nfs_closedir(pointer, directory) }
        var entries: [NFSDirectoryEntry] = []
        // nfs_readdir does not block: opendir fetched the whole listing.
        while let entry = nfs_readdir(pointer, directory) {
            let name = String(cString: entry.pointee.name)
            if name == "." || name == ".." { continue }
            entries.append(NFSDirectoryEntry(entry.pointee, name: name))
        }
        return entries
    }

    /// Gives `body` the raw `struct nfs_context *` for libnfs calls this wrapper does not
    /// cover (e.g. the async API: `cnfs_pread_async`, `nfs_service`, `nfs_get_fd`,
    /// `nfs_which_events` from `CNFS`). Do not destroy it or let it escape `body`.
    public func withUnsafeContextPointer<R>(_ body: (OpaquePointer) throws -> R) rethrows -> R {
        try body(pointer)
    }

    /// Runs a libnfs call that returns 0 (or >= 0) on success and -errno on failure.
    @discardableResult
    func call(_ what: @autoclosure () -> String, _ body: () -> Int32) throws -> Int32 {
        let result = body()
        guard result >= 0 else { throw NFSError.last(pointer, result: result, what()) }
        return result
    }
}

@available(*, unavailable, message: "libnfs contexts are bound to one thread at a time")
extension NFSContext: Sendable {}

/// File attributes from `nfs_stat64`.
public struct NFSStat: Sendable, Hashable {
    public var size: UInt64
    /// Type and permission bits, as `st_mode`.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var nlink: UInt64
    public var inode: UInt64
    /// Bytes allocated on the server (sparse files use less than `size`).
    public var used: UInt64
    /// Modification time, seconds and nanoseconds since the epoch.
    public var mtime: Int64
    public var mtimeNanoseconds: Int64

    init(_ raw: nfs_stat_64) {
        size = raw.nfs_size
        mode = UInt32(truncatingIfNeeded: raw.nfs_mode)
        uid = UInt32(truncatingIfNeeded: raw.nfs_uid)
        gid = UInt32(truncatingIfNeeded: raw.nfs_gid)
        nlink = raw.nfs_nlink
        inode = raw.nfs_ino
        used = raw.nfs_used
        mtime = Int64(bitPattern: raw.nfs_mtime)
        mtimeNanoseconds = Int64(bitPattern: raw.nfs_mtime_nsec)
    }

    public var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
    public var isRegularFile: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    /// The permission bits (`mode & 0o7777`).
    public var permissions: UInt32 { mode & 0o7777 }
}

/// One entry of ``NFSContext/listDirectory(_:)``.
public struct NFSDirectoryEntry: Sendable, Hashable {
    public var name: String
    public var inode: UInt64
    /// Type and permission bits, as `st_mode`.
    public var mode: UInt32
    public var size: UInt64
    public var uid: UInt32
    public var gid: UInt32

    init(_ raw: nfsdirent, name: String) {
        self.name = name
        inode = raw.inode
        // READDIRPLUS gives the NFS3 type separately; fold it into st_mode bits.
        let typeBits: UInt32
        switch raw.type {
        case 1: typeBits = UInt32(S_IFREG)   // NF3REG
        case 2: typeBits = UInt32(S_IFDIR)   // NF3DIR
        case 3: typeBits = UInt32(S_IFBLK)   // NF3BLK
        case 4: typeBits = UInt32(S_IFCHR)   // NF3CHR
        case 5: typeBits = UInt32(S_IFLNK)   // NF3LNK
        case 6: typeBits = UInt32(S_IFSOCK)  // NF3SOCK
        case 7: typeBits = UInt32(S_IFIFO)   // NF3FIFO
        default: typeBits = 0
        }
        mode = (raw.mode & 0o7777) | typeBits
        size = raw.size
        uid = raw.uid
        gid = raw.gid
    }

    public var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
    public var isRegularFile: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
}
