import CNFS
import SystemPackage
import Foundation

/// Where an image copy goes: an NFSv3 export, addressed by its REAL path on the server
/// (`/var/lib/libvirt/shared-images`), as NFSv3 MOUNT wants it. Writes always use NFSv3:
/// libnfs 4.0 cannot write files larger than a few KiB over NFSv4.
public struct NFSTarget: Sendable, Equatable {
    /// Server name or address (no `:port`).
    public var server: String
    /// The export's real path on the server.
    public var exportPath: String
    /// AUTH_SYS credentials sent with every request (the export must not squash them
    /// for the copy to be owned by this uid/gid).
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0

    public init(server: String, exportPath: String, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.server = server
        self.exportPath = exportPath
        self.uid = uid
        self.gid = gid
    }
}

/// A progress report: logical bytes of the source handled so far (holes count as done
/// when they are passed), the logical size, and the average rate since the start.
public struct CopyProgress: Sendable {
    public var done: UInt64
    public var total: UInt64
    /// Logical bytes per second since the copy started.
    public var bytesPerSecond: Double

    public init(done: UInt64, total: UInt64, bytesPerSecond: Double) {
        self.done = done
        self.total = total
        self.bytesPerSecond = bytesPerSecond
    }
}

/// The outcome of ``ImageCopier/copy(source:to:relativePath:progress:)``.
public struct CopyResult: Sendable, Equatable {
    /// Logical size of the file in bytes.
    public var size: UInt64
    /// Bytes of data extents sent over the wire (holes excluded); 0 when `alreadyPresent`.
    public var dataBytes: UInt64
    /// The content digest of the logical content (holes read as zeros): `xxh3-128:` and
    /// 32 lowercase hex digits (docs/protocol.md, "Content digest").
    public var digest: String
    public var elapsedSeconds: Double
    /// The target already held identical content: nothing was written.
    public var alreadyPresent: Bool
    /// Seconds of `elapsedSeconds` spent in a separate verification pass
    /// (``ImageCopier/Verification/fullChecksum``); 0 with the default read-back, which
    /// runs interleaved with the writes.
    public var verifySeconds: Double
    /// Seconds of `elapsedSeconds` spent waiting for the last COMMIT after the last WRITE.
    public var commitSeconds: Double
    /// Times the data was written again because the server's write verifier changed
    /// (it restarted during the copy): 0 or 1.
    public var serverRestarts: Int = 0

    public init(size: UInt64, dataBytes: UInt64, digest: String, elapsedSeconds: Double, alreadyPresent: Bool,
                verifySeconds: Double = 0, commitSeconds: Double = 0) {
        self.size = size
        self.dataBytes = dataBytes
        self.digest = digest
        self.elapsedSeconds = elapsedSeconds
        self.alreadyPresent = alreadyPresent
        self.verifySeconds = verifySeconds
        self.commitSeconds = commitSeconds
    }
}

/// Failures of the copy engine, with the system error behind them (``systemErrno``).
/// The engine knows nothing of the agent protocol: the compute agent maps these to it
/// in one place (`ComputeAgentCore/ErrorMapping.swift`).
public enum ImageCopyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `relativePath` is empty, absolute, contains `..`, `.` or empty components, or
    /// control bytes; or the final name would collide with the temporary naming scheme.
    case invalidPath(String)
    /// The local source cannot be opened or read (errno, message).
    case sourceUnreadable(path: String, errno: Int32, message: String)
    /// The source is not a regular file.
    case sourceNotRegularFile(String)
    /// The source changed (size or content) while it was being copied.
    case sourceChanged(String)
    /// The target exists with other content (size/digest of what is there). Never overwritten.
    case targetExists(path: String, size: UInt64, digest: String?)
    /// The local target of a copy back from the share exists with other content (its
    /// size and digest). Never overwritten.
    case localTargetExists(path: String, size: UInt64, digest: String?)
    /// The target path exists and is not a regular file.
    case targetNotRegularFile(String)
    /// The file under `relativePath` does not exist on the export.
    case targetNotFound(String)
    /// Connecting or mounting the export failed.
    case mountFailed(url: String, errno: Int32, message: String)
    /// An NFS operation failed (errno, libnfs's message).
    case nfs(operation: String, errno: Int32, message: String)
    /// What the server holds after writing differs from what was read.
    case verificationFailed(path: String, expectedSize: UInt64, actualSize: UInt64, expectedDigest: String, actualDigest: String)
    /// The copy was cancelled; the temporary file was removed when possible.
    case cancelled
    /// The server's write verifier changed during the copy: it restarted and may have
    /// dropped data it had acknowledged but not yet committed.
    case serverRestarted(path: String)

    public var description: String {
        switch self {
        case .invalidPath(let message):
            return "invalid target path: \(message)"
        case .sourceUnreadable(let path, _, let message):
            return "cannot read \(path): \(message)"
        case .sourceNotRegularFile(let path):
            return "\(path) is not a regular file"
        case .sourceChanged(let path):
            return "\(path) changed while it was being copied; shut off the domain and retry"
        case .targetExists(let path, let size, let digest):
            return "\(path) already exists on the share with other content (size \(size)\(digest.map { ", digest \($0)" } ?? "")); it is never overwritten: remove or rename it first"
        case .localTargetExists(let path, let size, let digest):
            return "\(path) already exists on this host with other content (size \(size)\(digest.map { ", digest \($0)" } ?? "")); it is never overwritten: remove or rename it first"
        case .targetNotRegularFile(let path):
            return "\(path) exists on the share and is not a regular file"
        case .targetNotFound(let path):
            return "\(path) does not exist on the share"
        case .mountFailed(let url, _, let message):
            return "cannot mount \(url): \(message)"
        case .nfs(let operation, _, let message):
            return "\(operation) failed: \(message)"
        case .verificationFailed(let path, let expectedSize, let actualSize, let expected, let actual):
            return "verification of \(path) failed: server holds \(actualSize) bytes digest \(actual), expected \(expectedSize) bytes digest \(expected)"
        case .cancelled:
            return "the copy was cancelled"
        case .serverRestarted(let path):
            return "the NFS server restarted while \(path) was written and may have lost acknowledged data; run the copy again"
        }
    }

    /// The system error behind `sourceUnreadable`, `mountFailed` and `nfs` as a typed
    /// value (`.noSpace`, `.timedOut`, ...); nil for the engine's own failures. The
    /// compute agent maps it to the protocol's vocabulary (`ComputeAgentCore/ErrorMapping`).
    public var systemErrno: Errno? {
        switch self {
        case .sourceUnreadable(_, let code, _), .mountFailed(_, let code, _), .nfs(_, let code, _):
            return Errno(rawValue: code)
        default:
            return nil
        }
    }
}

/// The image copy engine: copies a local (possibly sparse) file into an NFS export with
/// libnfs, pipelined, checksummed, under a temporary name, renamed only once verified.
///
/// Each call opens its own NFS context on its own dedicated thread (libnfs contexts are
/// bound to one thread) and closes it before returning; calls may run concurrently.
public struct ImageCopier: Sendable {
    /// Write requests in flight at once on the one NFS connection.
    public var inFlight: Int
    /// Bytes per write request (capped at the server's maximum WRITE size).
    public var chunkBytes: Int

    /// How the copy is confirmed before it gets its final name.
    public var verification: Verification

    /// How a copy is confirmed before the rename (see `docs/image-copy.md`).
    public enum Verification: Sendable, Equatable {
        /// NFS's own durability contract, checked: every WRITE reply and the final
        /// COMMIT carry the same server write verifier (a new one means the server
        /// restarted and may have lost data: the copy fails with
        /// ``ImageCopyError/serverRestarted(path:)`` and is redone), and the size the
        /// server reports is the source's. The content digest is computed while
        /// reading; the storage host recomputes it on its own disk (`CHECKSUM`) before
        /// `share` lets a VM use the copy. The default: costs nothing beyond the writes.
        case commit
        /// As ``commit``, and every data chunk is read back from the server right after
        /// its WRITE and compared byte for byte with the bytes that were hashed.
        /// Pipelined with the writes; costs a second transfer of the data.
        case readBack
        /// As ``commit``, then a second pass reads the whole file back (holes
        /// included) and compares its content digest with the source's.
        case fullChecksum
    }

    /// Bytes written between two COMMITs during the copy (0: one COMMIT at the end).
    /// Early COMMITs let the server write back while data still arrives.
    public var commitInterval: UInt64

    /// Threads hashing the content digest while the copy runs (the reader thread and
    /// `hashThreads - 1` helpers; 4 MiB blocks are spread over them).
    public var hashThreads: Int

    public init(inFlight: Int = 6, chunkBytes: Int = 512 << 10, verification: Verification = .commit,
                commitInterval: UInt64 = 128 << 20, hashThreads: Int = ImageCopier.defaultHashThreads) {
        self.inFlight = max(1, inFlight)
        self.chunkBytes = max(4096, chunkBytes)
        self.verification = verification
        self.commitInterval = commitInterval
        self.hashThreads = max(1, hashThreads)
    }

    /// Keeps freed memory of up to 8 MiB blocks in the process (glibc malloc). libnfs
    /// allocates and frees a buffer per WRITE (the request plus its data); by default
    /// glibc gives such memory back to the kernel at once (madvise), and every later
    /// request page-faults and zeroes it again: ~5 % of the copy's CPU in the lab.
    /// Process-wide: call it once from an executable that runs copies.
    public static func tuneMallocForCopies() {
        cnfs_keep_request_buffers(8 << 20, 64 << 20)
    }

    /// Two hashing threads where there are two cores or more, else one.
    public static var defaultHashThreads: Int { min(2, max(1, ProcessInfo.processInfo.activeProcessorCount)) }

    /// The temporary name a copy to `relativePath` is written under:
    /// `dir/.<name>.storagectl-partial`.
    public static func temporaryPath(for relativePath: String) -> String {
        let components = relativePath.split(separator: "/", omittingEmptySubsequences: true)
        guard let last = components.last else { return ".storagectl-partial" }
        let dir = components.dropLast().joined(separator: "/")
        let name = ".\(last).storagectl-partial"
        return dir.isEmpty ? name : dir + "/" + name
    }

    /// Copies the local file `source` to `relativePath` under the export; writes under a temporary name
    /// (`.<name>.storagectl-partial`), renames only after size and content digest of what the server holds are confirmed.
    /// Identical existing target -> success with alreadyPresent = true; different existing target -> .exists error.
    ///
    /// Side effects: creates missing parent directories of `relativePath` (mode 0755),
    /// replaces a leftover temporary file of an earlier attempt, never modifies `source`.
    /// Cancellation: stops within about 100 ms, removes the temporary file when the
    /// server is reachable, throws ``ImageCopyError/cancelled``.
    public func copy(source: String, to target: NFSTarget, relativePath: String,
                     progress: @escaping @Sendable (CopyProgress) -> Void) async throws -> CopyResult {
        try await CopyEngine(configuration: self).copy(source: source, to: target, relativePath: relativePath, progress: progress)
    }

    /// The content digest of a file on the NFS export (read back through libnfs, pipelined).
    /// - Throws: ``ImageCopyError/targetNotFound(_:)`` if it does not exist.
    public func checksum(of relativePath: String, on target: NFSTarget) async throws -> (size: UInt64, digest: String) {
        try await CopyEngine(configuration: self).checksum(of: relativePath, on: target)
    }
}
