import AgentAPI
import AgentProtocol
import AgentRuntime
import ContentDigest
import ExportsFile
import Foundation
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// Read-only facts about the export root that `storagectl share` needs: free space
/// before a copy, and the content digest of a copy on the storage host's own disk.
extension StorageAgentHandler {
    /// `SPACE [path=P]`: the file system holding P (default: the export root).
    /// `OK path= total= free= available=` in bytes (`available` is what root may not use
    /// up: statvfs f_bavail).
    func space(_ request: SpaceQuery, context: RequestContext) async throws -> Fields {
        try context.authorize(request)
        let path = request.path ?? configuration.exportRoot
        try validated(path)
        let root = configuration.exportRoot
        let s = try await BlockingWork.agent { () throws(AgentError) -> statvfs in
            // Opened from the root without following links (O_PATH: nothing is read).
            let fd = try Self.openUnderRoot(path, root: root, flags: openPathOnly | O_RDONLY, regularFile: false)
            defer { close(fd) }
            var s = statvfs()
            guard fstatvfs(fd, &s) == 0 else {
                throw AgentError(.internal, "cannot statvfs \(path): \(PosixFiles.errorText())")
            }
            return s
        }
        let unit = UInt64(s.f_frsize)
        return SpaceQuery.Answer(path: path, total: UInt64(s.f_blocks) * unit, free: UInt64(s.f_bfree) * unit,
                                 available: UInt64(s.f_bavail) * unit).encoded()
    }

    /// `CHECKSUM path=P`: the content digest (docs/protocol.md, "Content digest") of the
    /// regular file P under the export root, read from this host's disk (not through
    /// NFS) by `ContentDigest.defaultThreads` threads, holes skipped (SEEK_DATA). Streams
    /// `PROGRESS done= total=` twice a second. `OK path= size= digest= seconds=`. A
    /// symbolic link anywhere is refused. Read-only. A client that goes away (its
    /// PROGRESS cannot be written) stops the reading.
    func checksum(_ request: ChecksumRequest, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        try context.authorize(request)
        let path = request.path
        try validated(path)
        let root = configuration.exportRoot
        let started = ContinuousClock.now
        let progress = ProgressRelay()
        async let digest: (UInt64, String) = BlockingWork.agent(on: BlockingWork.images) { () throws(AgentError) in
            try Self.contentDigest(of: path, root: root, progress: progress)
        }
        while !progress.finished {
            try? await Task.sleep(for: .milliseconds(500))
            if Task.isCancelled { progress.cancel() }
            let (done, total) = progress.snapshot
            if !progress.finished {
                do { try await reply.progress(TransferProgress(done: done, total: total)) } catch { progress.cancel() }
            }
        }
        let (size, hex) = try await digest
        let elapsed = ContinuousClock.now - started
        return ChecksumRequest.Answer(path: path, size: size, digest: hex,
                                      seconds: String(format: "%.2f", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)).encoded()
    }

    private func validated(_ path: String) throws(AgentError) {
        do { _ = try policy.validatedPath(path) } catch { throw AgentError(error) }
    }

    /// Opens `path` under `root` component by component without following a symbolic
    /// link (`RootedPath.open`), in the protocol's words: a link, a path outside the
    /// root or (with `regularFile`) anything but a regular file is `invalid-argument`, a
    /// missing one `not-found`. Blocking.
    static func openUnderRoot(_ path: String, root: String, flags: Int32, regularFile: Bool) throws(AgentError) -> Int32 {
        do {
            return try RootedPath.open(path, under: root, flags: flags, regularFile: regularFile)
        } catch .symbolicLink(let link) {
            throw AgentError(.invalidArgument, "\(path) passes through the symbolic link \(link); the agent does not follow links under \(root)")
        } catch .outsideRoot {
            throw AgentError(.invalidArgument, "\(path) is not under the export root \(root)")
        } catch .notRegularFile {
            throw AgentError(.invalidArgument, "\(path) is not a regular file")
        } catch {
            throw AgentError(error.errno == ENOENT ? .notFound : .internal, error.description)
        }
    }

    /// Opens `path` (under `root`, no symbolic link anywhere below it, a regular file;
    /// `openUnderRoot`) and computes its content digest. Blocking: run through
    /// `BlockingWork`. Returns the size read (the file's size when it was opened).
    static func contentDigest(of path: String, root: String, progress: ProgressRelay,
                              threads: Int = ContentDigest.defaultThreads) throws(AgentError) -> (UInt64, String) {
        defer { progress.finish() }
        // O_NONBLOCK: never waits on a FIFO (refused anyway); no effect on a regular file.
        let fd = try openUnderRoot(path, root: root, flags: O_RDONLY | O_NONBLOCK, regularFile: true)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw AgentError(.invalidArgument, "\(path) is not a regular file")
        }
        let total = UInt64(st.st_size)
        progress.update(done: 0, total: total)
        do throws(FileDigestError) {
            let hex = try ContentDigest.ofFile(fd: fd, size: total, threads: threads,
                                               isCancelled: { progress.cancelled },
                                               progress: { done in progress.update(done: done, total: total) })
            return (total, hex)
        } catch {
            throw digestError(error, path: path, fd: fd, size: total)
        }
    }

    /// A read failure in the words of the protocol: the file changed size while it was
    /// read (`invalid-state`: retry when nothing writes it), the request was abandoned,
    /// or an I/O error (`internal`, with errno's text and the offset).
    static func digestError(_ error: FileDigestError, path: String, fd: Int32, size: UInt64) -> AgentError {
        if error.errno == ECANCELED {
            return AgentError(.unavailable, "CHECKSUM of \(path) stopped: the client went away")
        }
        var now = stat()
        if fstat(fd, &now) == 0, UInt64(now.st_size) != size {
            return AgentError(.invalidState, "\(path) changed size while it was read (\(size) bytes, now \(now.st_size)); ask again once nothing writes it")
        }
        return AgentError(.internal, "reading \(path) at byte \(error.offset): \(error.message)")
    }
}

/// Progress shared between a blocking worker and the task that reports it.
final class ProgressRelay: @unchecked Sendable {
    private let lock = NSLock()
    private var done: UInt64 = 0
    private var total: UInt64 = 0
    private var isFinished = false
    private var isCancelled = false

    /// Progress from the worker; `done` only grows (the digest threads report out of order).
    func update(done: UInt64, total: UInt64) { lock.withLock { self.done = max(self.done, done); self.total = total } }
    func finish() { lock.withLock { isFinished = true } }
    /// Asks the worker to stop (the client has gone).
    func cancel() { lock.withLock { isCancelled = true } }
    var finished: Bool { lock.withLock { isFinished } }
    var cancelled: Bool { lock.withLock { isCancelled } }
    var snapshot: (UInt64, UInt64) { lock.withLock { (done, total) } }
}
