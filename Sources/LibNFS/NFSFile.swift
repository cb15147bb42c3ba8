import CNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An open file on an NFS export (`struct nfsfh`). Keeps its ``NFSContext`` alive.
///
/// Close it with ``close()`` to see the error of the final COMMIT/CLOSE; `deinit`
/// closes a file still open and ignores the result. Same threading rules as its context.
public final class NFSFile {
    /// The context the file was opened through.
    public let context: NFSContext
    /// The path it was opened with, relative to the export.
    public let path: String
    private var handle: OpaquePointer?

    init(context: NFSContext, handle: OpaquePointer?, path: String) throws {
        guard let handle else {
            throw NFSError(code: EIO, message: "libnfs returned no file handle for \(path)")
        }
        self.context = context
        self.handle = handle
        self.path = path
    }

    deinit {
        if let handle {
            _ = nfs_close(context.pointer, handle)
        }
    }

    private func openHandle() throws -> OpaquePointer {
        guard let handle else { throw NFSError(code: EBADF, message: "\(path) is closed") }
        return handle
    }

    /// Reads up to `buffer.count` bytes at `offset`; returns the number read (0 at end of
    /// file, possibly fewer than asked near it).
    public func pread(into buffer: UnsafeMutableRawBufferPointer, offset: UInt64) throws -> Int {
        let handle = try openHandle()
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let result = try context.call("nfs_pread(\(path))") {
            cnfs_pread(context.pointer, handle, base, buffer.count, offset)
        }
        return Int(result)
    }

    /// Reads up to `count` bytes at `offset`.
    public func pread(count: Int, offset: UInt64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let read = try bytes.withUnsafeMutableBytes { try pread(into: $0, offset: offset) }
        bytes.removeLast(count - read)
        return bytes
    }

    /// Writes `buffer` at `offset`; returns the number of bytes written (may be short).
    public func pwrite(_ buffer: UnsafeRawBufferPointer, offset: UInt64) throws -> Int {
        let handle = try openHandle()
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let result = try context.call("nfs_pwrite(\(path))") {
            cnfs_pwrite(context.pointer, handle, base, buffer.count, offset)
        }
        return Int(result)
    }

    /// Writes all of `buffer` at `offset`, repeating short writes.
    public func pwriteAll(_ buffer: UnsafeRawBufferPointer, offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let written = try pwrite(UnsafeRawBufferPointer(rebasing: buffer[done...]),
                                     offset: offset + UInt64(done))
            guard written > 0 else {
                throw NFSError(code: EIO, message: "nfs_pwrite(\(path)) wrote nothing at offset \(offset + UInt64(done))")
            }
            done += written
        }
    }

    /// Writes all of `bytes` at `offset`, repeating short writes.
    public func pwriteAll(_ bytes: [UInt8], offset: UInt64) throws {
        try bytes.withUnsafeBytes { try pwriteAll($0, offset: offset) }
    }

    /// Flushes written data to stable storage on the server (NFS COMMIT).
    public func fsync() throws {
        let handle = try openHandle()
        try context.call("nfs_fsync(\(path))") { nfs_fsync(context.pointer, handle) }
    }

    /// Truncates or extends the file to `length` bytes.
    public func truncate(to length: UInt64) throws {
        let handle = try openHandle()
        try context.call("nfs_ftruncate(\(path))") { nfs_ftruncate(context.pointer, handle, length) }
    }

    /// Attributes of the open file.
    public func stat() throws -> NFSStat {
        let handle = try openHandle()
        var raw = nfs_stat_64()
        try context.call("nfs_fstat64(\(path))") { nfs_fstat64(context.pointer, handle, &raw) }
        return NFSStat(raw)
    }

    /// Gives `body` the raw `struct nfsfh *` of the open file (for the async API in
    /// `CNFS`). Do not close it or let it escape `body`.
    /// - Throws: ``NFSError`` (EBADF) if the file is closed.
    public func withUnsafeFileHandle<R>(_ body: (OpaquePointer) throws -> R) throws -> R {
        try body(try openHandle())
    }

    /// Closes the file. Idempotent: later calls do nothing; other methods then throw EBADF.
    public func close() throws {
        guard let handle else { return }
        self.handle = nil
        try context.call("nfs_close(\(path))") { nfs_close(context.pointer, handle) }
    }
}

@available(*, unavailable, message: "libnfs file handles are bound to their context's thread")
extension NFSFile: Sendable {}
