import ContentDigest
import Foundation
import LibNFS
import SafeFiles

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a copy back from the share (the compute agent's LOCALIZE) reads the image.
public enum ShareSource: Sendable, Equatable {
    /// A file of a mounted share: `path` below `root` (the pool's target), opened from
    /// the root one component at a time without following a symbolic link
    /// (`RootedPath.open`: a link placed on the share is never followed on this host).
    case mounted(path: String, root: String)
    /// A file of an NFS export read through libnfs (NFSv3, the target's uid/gid).
    case nfs(NFSTarget, relativePath: String)
}

extension ImageCopier {
    /// Copies a shared image to the local file `destination` (absolute; its directory
    /// must exist), the way back from the share:
    ///
    /// - The data goes to `DIR/.NAME.storagectl-partial` (a leftover of that name is
    ///   replaced), created fresh and given its final size first, so holes of the source
    ///   (and all-zero chunks read through NFS, which has no SEEK_DATA) stay holes.
    /// - The content digest of what was read is computed while reading (mount: the
    ///   reader thread and its hash lanes, the same as COPY's); after `fsync` the
    ///   temporary file is read again and its digest must be the same
    ///   (``ImageCopyError/verificationFailed(path:expectedSize:actualSize:expectedDigest:actualDigest:)``).
    ///   A source that changed meanwhile (size, mtime) is ``ImageCopyError/sourceChanged(_:)``.
    /// - Permission bits are the source's without setuid, setgid and sticky bits.
    /// - Only then is it renamed to `destination` and the directory synced
    ///   (`AtomicFile.publish`). A regular file already there with the same size and
    ///   content digest is success (`alreadyPresent`: an earlier run made it; the
    ///   temporary file is removed); with other content it is
    ///   ``ImageCopyError/localTargetExists(path:size:digest:)`` and never overwritten;
    ///   anything else there (a symbolic link, a directory) is
    ///   ``ImageCopyError/targetNotRegularFile(_:)`` and left alone.
    /// - On failure or cancellation the temporary file is removed and `destination` is
    ///   untouched; the source is never written.
    ///
    /// Runs on a dedicated thread (plus the reader and hash threads in mount mode);
    /// `progress` is called every 250 ms and at the end on that thread.
    public func copyToLocal(from source: ShareSource, to destination: String,
                            progress: @escaping @Sendable (CopyProgress) -> Void) async throws -> CopyResult {
        let name = (destination as NSString).lastPathComponent
        let directory = (destination as NSString).deletingLastPathComponent
        guard destination.hasPrefix("/"), !directory.isEmpty, !name.isEmpty, name != ".", name != "..",
              !name.hasSuffix(".storagectl-partial") else {
            throw ImageCopyError.invalidPath("\(destination) is not an absolute path to a file name the engine may write")
        }
        if case .nfs(_, let relativePath) = source { try validateRelativePath(relativePath) }
        let configuration = self
        return try await CopyEngine(configuration: self).onDedicatedThread { cancel in
            try LocalCopySession(configuration: configuration, source: source, directory: directory, name: name,
                                 cancel: cancel, progress: progress).run()
        }
    }
}

/// One copy from the share to a local file, run on the calling (dedicated) thread.
struct LocalCopySession {
    let configuration: ImageCopier
    let source: ShareSource
    let directory: String
    let name: String
    let cancel: CancelFlag
    let progress: @Sendable (CopyProgress) -> Void

    var destination: String { directory + "/" + name }
    var temporary: String { ".\(name).storagectl-partial" }

    func run() throws(ImageCopyError) -> CopyResult {
        let start = monotonicSeconds()
        let dir: Int32
        do { dir = try AtomicFile.openDirectory(directory) } catch {
            throw .nfs(operation: "open the directory \(directory)", errno: error.errno, message: error.description)
        }
        defer { close(dir) }
        try requireRegularOrAbsent(name, in: dir)
        try requireRegularOrAbsent(temporary, in: dir)
        unlinkat(dir, temporary, 0)

        switch source {
        case .mounted(let path, let root):
            let local = try openMounted(path: path, root: root)
            let out = try createTemporary(in: dir, size: local.size)
            return try finishing(out, dir: dir, start: start) { () throws(ImageCopyError) -> (String, UInt64, UInt64, UInt32) in
                let (digest, dataBytes) = try copyMounted(local, to: out, start: start)
                guard local.unchanged() else { throw .sourceChanged(path) }
                return (digest, dataBytes, local.size, local.mode)
            }
        case .nfs(let target, let relativePath):
            let remote = try RemoteExport(target)
            guard let before = try remote.stat(relativePath) else { throw .targetNotFound(relativePath) }
            guard before.isRegularFile else { throw .sourceNotRegularFile(relativePath) }
            let out = try createTemporary(in: dir, size: before.size)
            return try finishing(out, dir: dir, start: start) { () throws(ImageCopyError) -> (String, UInt64, UInt64, UInt32) in
                let (digest, dataBytes) = try copyNFS(remote: remote, relativePath: relativePath, size: before.size, to: out, start: start)
                guard let after = try remote.stat(relativePath), after.size == before.size, after.mtime == before.mtime,
                      after.mtimeNanoseconds == before.mtimeNanoseconds else {
                    throw .sourceChanged("nfs://\(target.server)\(target.exportPath)/\(relativePath)")
                }
                return (digest, dataBytes, before.size, before.mode & 0o7777)
            }
        }
    }

    /// Runs `copy` into `out`, then syncs, re-reads and compares, sets the mode and
    /// publishes; removes the temporary file on any failure.
    private func finishing(_ out: Int32, dir: Int32, start: Double,
                           _ copy: () throws(ImageCopyError) -> (digest: String, dataBytes: UInt64, size: UInt64, mode: UInt32)) throws(ImageCopyError) -> CopyResult {
        var published = false
        defer {
            close(out)
            if !published { unlinkat(dir, temporary, 0) }
        }
        let (digest, dataBytes, size, mode) = try copy()
        if cancel.isSet { throw .cancelled }
        // Never setuid, setgid or sticky: a disk image needs none, and a share must not
        // be able to plant one on this host.
        guard fchmod(out, mode_t(mode & 0o777)) == 0, fsync(out) == 0 else {
            throw .nfs(operation: "fsync \(directory)/\(temporary)", errno: errno, message: String(cString: strerror(errno)))
        }
        let verifyStart = monotonicSeconds()
        let actual: String
        do {
            actual = try ContentDigest.ofFile(fd: out, size: size)
        } catch {
            throw .nfs(operation: "re-read \(directory)/\(temporary)", errno: error.errno, message: error.message)
        }
        guard actual == digest else {
            throw .verificationFailed(path: "\(directory)/\(temporary)", expectedSize: size, actualSize: size,
                                      expectedDigest: digest, actualDigest: actual)
        }
        let verifySeconds = monotonicSeconds() - verifyStart
        try requireRegularOrAbsent(name, in: dir)
        if let existing = try existingDigest(in: dir) {
            guard existing.size == size, existing.digest == digest else {
                throw .localTargetExists(path: destination, size: existing.size, digest: existing.digest)
            }
            return CopyResult(size: size, dataBytes: dataBytes, digest: digest, elapsedSeconds: monotonicSeconds() - start,
                              alreadyPresent: true, verifySeconds: verifySeconds)
        }
        do {
            try AtomicFile.publish(temporary: temporary, as: name, in: dir, directoryPath: directory)
        } catch {
            throw .nfs(operation: "rename \(temporary) to \(destination)", errno: error.errno, message: error.description)
        }
        published = true
        return CopyResult(size: size, dataBytes: dataBytes, digest: digest, elapsedSeconds: monotonicSeconds() - start,
                          alreadyPresent: false, verifySeconds: verifySeconds)
    }

    /// Size and content digest of the regular file `name` in `dir`, or nil when there is none.
    private func existingDigest(in dir: Int32) throws(ImageCopyError) -> (size: UInt64, digest: String)? {
        let fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .targetNotRegularFile(destination)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { throw .targetNotRegularFile(destination) }
        do {
            return (UInt64(st.st_size), try ContentDigest.ofFile(fd: fd, size: UInt64(st.st_size)))
        } catch {
            throw .nfs(operation: "read \(destination)", errno: error.errno, message: error.message)
        }
    }

    /// `name` in `dir` is absent or a regular file (never a link, directory or device).
    private func requireRegularOrAbsent(_ name: String, in dir: Int32) throws(ImageCopyError) {
        var st = stat()
        guard fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .targetNotRegularFile("\(directory)/\(name)") }
    }

    private func createTemporary(in dir: Int32, size: UInt64) throws(ImageCopyError) -> Int32 {
        let out = openat(dir, temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard out >= 0 else {
            throw .nfs(operation: "create \(directory)/\(temporary)", errno: errno, message: String(cString: strerror(errno)))
        }
        guard ftruncate(out, off_t(size)) == 0 else {
            let code = errno
            close(out)
            unlinkat(dir, temporary, 0)
            throw .nfs(operation: "truncate \(directory)/\(temporary)", errno: code, message: String(cString: strerror(code)))
        }
        return out
    }

    private func openMounted(path: String, root: String) throws(ImageCopyError) -> LocalSource {
        var fd: Int32
        do {
            do {
                fd = try RootedPath.open(path, under: root, flags: O_RDONLY | O_NONBLOCK | openNoAtime, regularFile: true)
            } catch .system(_, _, let code) where code == EPERM {
                fd = try RootedPath.open(path, under: root, flags: O_RDONLY | O_NONBLOCK, regularFile: true)  // O_NOATIME needs ownership
            }
        } catch .notRegularFile {
            throw .sourceNotRegularFile(path)
        } catch .symbolicLink(let link) {
            throw .sourceUnreadable(path: path, errno: ELOOP, message: "\(link) is a symbolic link; links on the share are not followed")
        } catch .outsideRoot {
            throw .invalidPath("\(path) is not under the share's mount point \(root)")
        } catch {
            throw .sourceUnreadable(path: path, errno: error.errno, message: error.description)
        }
        return try LocalSource(adopting: fd, path: path)
    }

    /// Mount mode: COPY's reader (SEEK_DATA/SEEK_HOLE, hash lanes) feeds this thread,
    /// which writes each data chunk at its offset. Returns (digest, data bytes written).
    private func copyMounted(_ local: LocalSource, to out: Int32, start: Double) throws(ImageCopyError) -> (String, UInt64) {
        let slots = configuration.inFlight + max(4, configuration.inFlight / 2)
        let buffers = SlotBuffers(count: slots, slotBytes: configuration.chunkBytes)
        let pipe = try ChunkPipe(slots: slots)
        var ticker = ProgressTicker(total: local.size, start: start, report: progress)
        ticker.tick(0, force: true)
        let chunkBytes = configuration.chunkBytes, lanes = configuration.hashThreads
        let reader = Thread { runReader(source: local, pipe: pipe, buffers: buffers, chunkBytes: chunkBytes, lanes: lanes) }
        reader.name = "image-localize-read"
        reader.start()

        var pending: [ChunkPipe.Chunk] = []
        var written: UInt64 = 0
        do throws(ImageCopyError) {
            while true {
                if cancel.isSet { throw ImageCopyError.cancelled }
                // Everything the reader pushed before it finished comes with its result.
                let state = pipe.drain(into: &pending)
                while let chunk = pending.popLast() {
                    defer { pipe.release(chunk.slot) }
                    try writeFully(out, buffers.slot(chunk.slot), count: chunk.length, offset: chunk.offset)
                    written += UInt64(chunk.length)
                }
                ticker.tick(state.passed + written)
                if let result = state.result {
                    let value = try result.get()
                    ticker.tick(local.size, force: true)
                    return (value.digest, value.dataBytes)
                }
                var fds = [pollfd(fd: pipe.wakeFD, events: Int16(POLLIN), revents: 0)]
                _ = poll(&fds, 1, 100)
                var sink = [UInt8](repeating: 0, count: 64)
                _ = read(pipe.wakeFD, &sink, sink.count)
            }
        } catch {
            pipe.abort()
            for chunk in pending { pipe.release(chunk.slot) }
            pipe.waitForReader()
            throw error
        }
    }

    /// libnfs mode: pipelined READs (the checksum's engine), each chunk hashed and,
    /// unless it is all zeros, written at its offset. Returns (digest, data bytes written).
    private func copyNFS(remote: RemoteExport, relativePath: String, size: UInt64, to out: Int32,
                         start: Double) throws(ImageCopyError) -> (String, UInt64) {
        let file = try remote.open(relativePath)
        defer { try? file.close() }
        let chunk = max(4096, min(configuration.chunkBytes, remote.maxRead > 0 ? remote.maxRead : configuration.chunkBytes))
        let buffers = SlotBuffers(count: configuration.inFlight * 2, slotBytes: chunk)
        var ticker = ProgressTicker(total: size, start: start, report: progress)
        ticker.tick(0, force: true)
        var digest = ContentDigest()
        var written: UInt64 = 0
        do {
            try file.withUnsafeFileHandle { fh in
                let pipeline = NFSPipeline(nfs: remote.pointer, fh: fh, path: relativePath, buffers: buffers,
                                           inFlight: configuration.inFlight, cancel: cancel)
                try pipeline.runRead(size: size, chunkBytes: chunk, ticker: &ticker) { bytes, offset throws(ImageCopyError) in
                    if ZeroBytes.isZero(bytes.baseAddress!, count: bytes.count) {
                        digest.updateZeros(UInt64(bytes.count))   // stays a hole
                    } else {
                        digest.update(bytes)
                        try writeFully(out, UnsafeMutableRawPointer(mutating: bytes.baseAddress!), count: bytes.count, offset: offset)
                        written += UInt64(bytes.count)
                    }
                }
            }
        } catch {
            throw RemoteExport.map(error, "read \(relativePath)")
        }
        return (digest.finalize(), written)
    }

    private func writeFully(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: UInt64) throws(ImageCopyError) {
        var done = 0
        while done < count {
            let n = pwrite(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                throw .nfs(operation: "write \(directory)/\(temporary)", errno: code, message: String(cString: strerror(code)))
            }
            done += n
        }
    }
}
