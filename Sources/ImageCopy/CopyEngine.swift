import BlockingIO
import Foundation
import LibNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs one copy or checksum on a dedicated thread of its own (the libnfs loop thread;
/// the copy also starts a reader thread), translating task cancellation into a flag the
/// threads poll.
struct CopyEngine: Sendable {
    var configuration: ImageCopier

    func copy(source: String, to target: NFSTarget, relativePath: String,
              progress: @escaping @Sendable (CopyProgress) -> Void) async throws -> CopyResult {
        try validateRelativePath(relativePath)
        let configuration = self.configuration
        return try await onDedicatedThread { cancel in
            try CopySession(configuration: configuration, source: source, target: target,
                            relativePath: relativePath, cancel: cancel, progress: progress).run()
        }
    }

    func checksum(of relativePath: String, on target: NFSTarget) async throws -> (size: UInt64, digest: String) {
        try validateRelativePath(relativePath, allowPartialName: true)
        let configuration = self.configuration
        let value = try await onDedicatedThread { cancel in
            let remote = try RemoteExport(target)
            guard let st = try remote.stat(relativePath) else { throw ImageCopyError.targetNotFound(relativePath) }
            guard st.isRegularFile else { throw ImageCopyError.targetNotRegularFile(relativePath) }
            let sha = try remoteChecksum(remote: remote, path: relativePath, size: st.size, configuration: configuration,
                                         cancel: cancel, progress: { _ in })
            return ChecksumValue(size: st.size, digest: sha)
        }
        return (value.size, value.digest)
    }

    private struct ChecksumValue: Sendable { var size: UInt64; var digest: String }

    func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable (CancelFlag) throws -> T) async throws -> T {
        let cancel = CancelFlag()
        let executor = BlockingExecutor(name: "image-copy", threadCount: 1)
        defer { executor.shutdown() }
        do {
            return try await withTaskCancellationHandler {
                try await executor.run { try body(cancel) }
            } onCancel: {
                cancel.set()
            }
        } catch is CancellationError {
            throw ImageCopyError.cancelled
        }
    }
}

/// Checks a path relative to the export: non-empty, no leading `/`, no empty, `.` or
/// `..` components, no control bytes, components of at most 255 bytes, and (unless
/// asked otherwise) not one of the engine's own temporary names.
func validateRelativePath(_ path: String, allowPartialName: Bool = false) throws(ImageCopyError) {
    guard !path.isEmpty else { throw .invalidPath("the path is empty") }
    guard !path.hasPrefix("/") else { throw .invalidPath("\(path) must be relative to the export") }
    guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
        throw .invalidPath("\(path.debugDescription) contains control characters")
    }
    for component in path.split(separator: "/", omittingEmptySubsequences: false) {
        guard !component.isEmpty, component != ".", component != ".." else {
            throw .invalidPath("\(path) has an empty, '.' or '..' component")
        }
        guard component.utf8.count <= 240 else { throw .invalidPath("a component of \(path) is too long") }
    }
    if !allowPartialName && path.hasSuffix(".storagectl-partial") {
        throw .invalidPath("\(path) is a temporary name of the copy engine")
    }
}

/// The content digest of a file on the export, pipelined reads on `remote`'s context.
func remoteChecksum(remote: RemoteExport, path: String, size: UInt64, configuration: ImageCopier,
                    cancel: CancelFlag, progress: @escaping @Sendable (CopyProgress) -> Void) throws(ImageCopyError) -> String {
    let file = try remote.open(path)
    let chunk = max(4096, min(configuration.chunkBytes, remote.maxRead > 0 ? remote.maxRead : configuration.chunkBytes))
    let buffers = SlotBuffers(count: configuration.inFlight * 2, slotBytes: chunk)
    var ticker = ProgressTicker(total: size, start: monotonicSeconds(), report: progress)
    let sha: String
    do {
        sha = try file.withUnsafeFileHandle { fh in
            let pipeline = NFSPipeline(nfs: remote.pointer, fh: fh, path: path, buffers: buffers,
                                       inFlight: configuration.inFlight, cancel: cancel)
            return try pipeline.runChecksum(size: size, chunkBytes: chunk, ticker: &ticker)
        }
    } catch {
        throw RemoteExport.map(error, "read \(path)")
    }
    try? file.close()
    return sha
}

/// One copy, run entirely on the calling (dedicated) thread plus a reader thread.
struct CopySession {
    let configuration: ImageCopier
    let source: String
    let target: NFSTarget
    let relativePath: String
    let cancel: CancelFlag
    let progress: @Sendable (CopyProgress) -> Void

    init(configuration: ImageCopier, source: String, target: NFSTarget, relativePath: String,
         cancel: CancelFlag, progress: @escaping @Sendable (CopyProgress) -> Void) {
        self.configuration = configuration
        self.source = source
        self.target = target
        self.relativePath = relativePath
        self.cancel = cancel
        self.progress = progress
    }

    func run() throws(ImageCopyError) -> CopyResult {
        let start = monotonicSeconds()
        let local = try LocalSource(path: source)
        let remote = try RemoteExport(target)
        let temporary = ImageCopier.temporaryPath(for: relativePath)

        // An existing final name: identical content is success, anything else is refused.
        if let existing = try remote.stat(relativePath) {
            return try settleExisting(existing, local: local, remote: remote, temporary: temporary, start: start)
        }
        try remote.makeParents(of: relativePath)
        // A leftover temporary file (crash, kill, lost connection) is replaced.
        if let leftover = try remote.stat(temporary) {
            guard leftover.isRegularFile else { throw .targetNotRegularFile(temporary) }
            try remote.unlink(temporary)
        }
        if cancel.isSet { throw .cancelled }

        var written: Written
        do {
            do {
                written = try writeVerified(local: local, remote: remote, temporary: temporary, start: start)
            } catch ImageCopyError.serverRestarted {
                // The server may have dropped unstable writes: write everything again, once.
                removeTemporary(temporary, remote: remote)
                written = try writeVerified(local: local, remote: remote, temporary: temporary, start: start)
                written.serverRestarts = 1
            }
            if cancel.isSet { throw ImageCopyError.cancelled }
            guard local.unchanged() else { throw ImageCopyError.sourceChanged(source) }
        } catch let error as ImageCopyError {
            removeTemporary(temporary, remote: remote)
            throw error
        } catch {
            removeTemporary(temporary, remote: remote)
            throw RemoteExport.map(error, "copy \(relativePath)")
        }
        var result = try publish(temporary: temporary, remote: remote, local: local, written: written, start: start)
        result.serverRestarts = written.serverRestarts
        return result
    }

    /// Creates the temporary file, sets its size (holes stay holes), streams the data
    /// extents with read-back, commits, and checks the size the server reports.
    private func writeVerified(local: LocalSource, remote: RemoteExport, temporary: String, start: Double) throws(ImageCopyError) -> Written {
        let mode = Int32(local.mode & 0o777 | 0o600)
        let file = try remote.create(temporary, mode: mode)
        do {
            try file.truncate(to: local.size)
        } catch {
            throw RemoteExport.map(error, "truncate \(temporary)")
        }
        let writeMax = remote.maxWrite > 0 ? remote.maxWrite : configuration.chunkBytes
        let chunk = max(4096, min(configuration.chunkBytes, writeMax))
        // inFlight slots are on the wire; the extra slots are the reader's read-ahead.
        let slots = configuration.inFlight + max(4, configuration.inFlight / 2)
        let buffers = SlotBuffers(count: slots, slotBytes: chunk)
        let pipe = try ChunkPipe(slots: slots)
        var ticker = ProgressTicker(total: local.size, start: start, report: progress)
        ticker.tick(0, force: true)

        let reader = Thread {
            runReader(source: local, pipe: pipe, buffers: buffers, chunkBytes: chunk, lanes: configuration.hashThreads)
        }
        reader.name = "image-copy-read"
        reader.start()

        let result: (digest: String, dataBytes: UInt64)
        var commitSeconds = 0.0
        do {
            result = try file.withUnsafeFileHandle { fh in
                let pipeline = NFSPipeline(nfs: remote.pointer, fh: fh, path: temporary, buffers: buffers,
                                           inFlight: configuration.inFlight, cancel: cancel)
                guard pipeline.fh3.data.data_len > 0 else {
                    throw ImageCopyError.nfs(operation: "open \(temporary)", errno: EINVAL, message: "libnfs gave no NFSv3 file handle")
                }
                pipeline.verifyReads = configuration.verification == .readBack
                pipeline.commitInterval = configuration.commitInterval
                let value = try pipeline.runCopy(pipe: pipe, total: local.size, ticker: &ticker)
                // COMMIT: every byte is on the server's disk, under the verifier of the WRITEs.
                let commitStart = monotonicSeconds()
                try pipeline.commitAll()
                commitSeconds = monotonicSeconds() - commitStart
                return value
            }
        } catch {
            pipe.abort()
            pipe.waitForReader()
            throw RemoteExport.map(error, "write \(temporary)")
        }
        pipe.waitForReader()
        do {
            let st = try file.stat()
            guard st.size == local.size else {
                throw ImageCopyError.verificationFailed(path: temporary, expectedSize: local.size, actualSize: st.size,
                                                        expectedDigest: result.digest, actualDigest: "")
            }
            try file.close()
        } catch {
            throw RemoteExport.map(error, "check the size of \(temporary)")
        }
        var verifySeconds = 0.0
        if configuration.verification == .fullChecksum {
            let verifyStart = monotonicSeconds()
            defer { verifySeconds = monotonicSeconds() - verifyStart }
            let sha = try remoteChecksum(remote: remote, path: temporary, size: local.size, configuration: configuration,
                                         cancel: cancel, progress: { _ in })
            guard sha == result.digest else {
                throw .verificationFailed(path: temporary, expectedSize: local.size, actualSize: local.size,
                                          expectedDigest: result.digest, actualDigest: sha)
            }
        }
        return Written(digest: result.digest, dataBytes: result.dataBytes, verifySeconds: verifySeconds, commitSeconds: commitSeconds)
    }

    struct Written {
        var digest: String
        var dataBytes: UInt64
        var verifySeconds: Double
        var commitSeconds: Double
        var serverRestarts = 0
    }

    /// Gives the verified temporary file its final name with NFS LINK (fails instead of
    /// replacing an existing name), then removes the temporary name.
    private func publish(temporary: String, remote: RemoteExport, local: LocalSource,
                         written: Written, start: Double) throws(ImageCopyError) -> CopyResult {
        let link = remote.link(temporary, to: relativePath)
        switch link.errno {
        case 0:
            break
        case EEXIST:
            // Someone created the final name while we copied: compare with it.
            defer { removeTemporary(temporary, remote: remote) }
            guard let existing = try remote.stat(relativePath) else { throw .nfs(operation: "link \(relativePath)", errno: EEXIST, message: link.message) }
            return try settleExisting(existing, local: local, remote: remote, temporary: nil, start: start, knownDigest: written.digest)
        case ENOTSUP, EOPNOTSUPP, EPERM, EXDEV, EMLINK:
            // No hard links on this server: rename, after checking the name is still free.
            if let existing = try remote.stat(relativePath) {
                defer { removeTemporary(temporary, remote: remote) }
                return try settleExisting(existing, local: local, remote: remote, temporary: nil, start: start, knownDigest: written.digest)
            }
            try remote.rename(temporary, to: relativePath)
            return CopyResult(size: local.size, dataBytes: written.dataBytes, digest: written.digest,
                              elapsedSeconds: monotonicSeconds() - start, alreadyPresent: false,
                              verifySeconds: written.verifySeconds, commitSeconds: written.commitSeconds)
        default:
            removeTemporary(temporary, remote: remote)
            throw .nfs(operation: "link \(temporary) -> \(relativePath)", errno: link.errno, message: link.message)
        }
        // The final name is in place; a temporary name that cannot be removed now is
        // replaced by the next copy to this path.
        _ = try? remote.unlinkIfPresent(temporary)
        return CopyResult(size: local.size, dataBytes: written.dataBytes, digest: written.digest,
                          elapsedSeconds: monotonicSeconds() - start, alreadyPresent: false,
                          verifySeconds: written.verifySeconds, commitSeconds: written.commitSeconds)
    }

    /// The final name exists: success (`alreadyPresent`) if it holds the same bytes,
    /// `.targetExists` otherwise. Never modifies it.
    private func settleExisting(_ existing: NFSStat, local: LocalSource, remote: RemoteExport, temporary: String?,
                                start: Double, knownDigest: String? = nil) throws(ImageCopyError) -> CopyResult {
        guard existing.isRegularFile else { throw .targetNotRegularFile(relativePath) }
        guard existing.size == local.size else { throw .targetExists(path: relativePath, size: existing.size, digest: nil) }
        let localDigest: String
        if let knownDigest { localDigest = knownDigest } else { localDigest = try digestOfLocalFile(local) }
        let remoteDigest = try remoteChecksum(remote: remote, path: relativePath, size: existing.size,
                                           configuration: configuration, cancel: cancel, progress: progress)
        guard remoteDigest == localDigest else {
            throw .targetExists(path: relativePath, size: existing.size, digest: remoteDigest)
        }
        guard local.unchanged() else { throw .sourceChanged(source) }
        if let temporary { _ = try? remote.unlinkIfPresent(temporary) }
        return CopyResult(size: local.size, dataBytes: 0, digest: localDigest,
                          elapsedSeconds: monotonicSeconds() - start, alreadyPresent: true)
    }

    /// Best effort: removes the temporary file, on a fresh connection if the current one failed.
    private func removeTemporary(_ temporary: String, remote: RemoteExport) {
        if (try? remote.unlinkIfPresent(temporary)) != nil { return }
        if let fresh = try? RemoteExport(target) {
            _ = try? fresh.unlinkIfPresent(temporary)
        }
    }
}

