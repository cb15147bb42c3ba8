import CNFS
import LibNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One NFSv3 connection to the target export, used by one thread (the copy's loop
/// thread) only. Synchronous metadata operations; the data path is ``NFSPipeline``.
final class RemoteExport {
    let target: NFSTarget
    let context: NFSContext

    /// Connects and mounts `target` over NFSv3 with its uid/gid.
    init(_ target: NFSTarget) throws(ImageCopyError) {
        self.target = target
        let url = "nfs://\(target.server)\(target.exportPath)"
        do {
            context = try NFSContext()
            // NFSv3: libnfs 4.0 fails WRITEs larger than a few KiB over NFSv4.
            try context.setVersion(3)
            context.setUID(Int(target.uid))
            context.setGID(Int(target.gid))
            // RPC timeout; the async loop calls nfs_service at least every 100 ms, which
            // is where libnfs expires requests.
            context.setTimeout(milliseconds: 60_000)
            try context.mount(server: target.server, export: target.exportPath)
        } catch let error as NFSError {
            throw .mountFailed(url: url, errno: error.code, message: error.message)
        } catch {
            throw .mountFailed(url: url, errno: EIO, message: "\(error)")
        }
    }

    var pointer: OpaquePointer { context.withUnsafeContextPointer { $0 } }

    static func map(_ error: any Error, _ operation: String) -> ImageCopyError {
        if let error = error as? ImageCopyError { return error }
        if let error = error as? NFSError { return .nfs(operation: operation, errno: error.code, message: error.message) }
        return .nfs(operation: operation, errno: EIO, message: "\(error)")
    }

    /// Attributes of `path`, or nil when it does not exist.
    func stat(_ path: String) throws(ImageCopyError) -> NFSStat? {
        do {
            return try context.stat(path)
        } catch let error as NFSError where error.code == ENOENT {
            return nil
        } catch {
            throw Self.map(error, "stat \(path)")
        }
    }

    /// Creates the missing parent directories of `path` (mode 0755).
    func makeParents(of path: String) throws(ImageCopyError) {
        let components = path.split(separator: "/").dropLast()
        var current = ""
        for component in components {
            current += current.isEmpty ? String(component) : "/" + component
            if let st = try stat(current) {
                guard st.isDirectory else { throw .nfs(operation: "mkdir \(current)", errno: ENOTDIR, message: "\(current) exists on the share and is not a directory") }
                continue
            }
            do {
                try context.mkdir(current, mode: 0o755)
            } catch let error as NFSError where error.code == EEXIST {
                continue
            } catch {
                throw Self.map(error, "mkdir \(current)")
            }
        }
    }

    func unlink(_ path: String) throws(ImageCopyError) {
        do { try context.unlink(path) } catch { throw Self.map(error, "unlink \(path)") }
    }

    /// Removes `path` if it exists; true when something was removed.
    @discardableResult
    func unlinkIfPresent(_ path: String) throws(ImageCopyError) -> Bool {
        do {
            try context.unlink(path)
            return true
        } catch let error as NFSError where error.code == ENOENT {
            return false
        } catch {
            throw Self.map(error, "unlink \(path)")
        }
    }

    func create(_ path: String, mode: Int32) throws(ImageCopyError) -> NFSFile {
        do { return try context.create(path, flags: O_EXCL, mode: mode) } catch { throw Self.map(error, "create \(path)") }
    }

    func open(_ path: String) throws(ImageCopyError) -> NFSFile {
        do { return try context.open(path, flags: O_RDONLY) } catch { throw Self.map(error, "open \(path)") }
    }

    func rename(_ from: String, to: String) throws(ImageCopyError) {
        do { try context.rename(from, to: to) } catch { throw Self.map(error, "rename \(from) -> \(to)") }
    }

    /// NFS LINK: `to` becomes a second name of `from`; fails with EEXIST when `to` exists
    /// (a rename that never replaces). Returns 0 or the positive errno.
    func link(_ from: String, to: String) -> (errno: Int32, message: String) {
        let result = context.withUnsafeContextPointer { nfs_link($0, from, to) }
        guard result < 0 else { return (0, "") }
        let message = context.withUnsafeContextPointer { nfs_get_error($0) }.map { String(cString: $0) } ?? ""
        return (-result, message)
    }

    /// The server's maximum WRITE and READ sizes.
    var maxWrite: Int { Int(clamping: context.maxWriteSize) }
    var maxRead: Int { Int(clamping: context.maxReadSize) }
}
