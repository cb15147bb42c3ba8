import AgentProtocol
import AgentRuntime
import Crypto
import ExportsFile
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Read-only facts about the export root that `storagectl share` needs: free space
/// before a copy, and the checksum of a copy on the storage host's own disk.
extension StorageAgentHandler {
    /// `SPACE [path=P]`: the file system holding P (default: the export root).
    /// `OK path= total= free= available=` in bytes (`available` is what root may not use
    /// up: statvfs f_bavail).
    func space(_ request: Request) async throws -> Fields {
        try Self.requireKeys(request, allowed: ["path"])
        let path = request.fields["path"] ?? configuration.exportRoot
        try validated(path)
        let s = try await BlockingWork.agent { () throws(AgentError) -> statvfs in
            var s = statvfs()
            guard statvfs(path, &s) == 0 else {
                throw AgentError(errno == ENOENT ? .notFound : .internal, "cannot statvfs \(path): \(PosixFiles.errorText())")
            }
            return s
        }
        let unit = UInt64(s.f_frsize)
        return ["path": path, "total": String(UInt64(s.f_blocks) * unit), "free": String(UInt64(s.f_bfree) * unit),
                "available": String(UInt64(s.f_bavail) * unit)]
    }

    /// `CHECKSUM path=P`: SHA-256 of the regular file P under the export root, read from
    /// this host's disk (not through NFS). Streams `PROGRESS done= total=` twice a second.
    /// `OK path= size= sha256= seconds=`. A symbolic link anywhere is refused.
    func checksum(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try Self.requireKeys(request, allowed: ["path"])
        let path = try Self.single(request, "path")
        try validated(path)
        let root = configuration.exportRoot
        let started = ContinuousClock.now
        let progress = ProgressRelay()
        async let digest: (UInt64, String) = BlockingWork.agent { () throws(AgentError) in
            try Self.sha256(of: path, root: root, progress: progress)
        }
        while !progress.finished {
            try? await Task.sleep(for: .milliseconds(500))
            let (done, total) = progress.snapshot
            if !progress.finished { try? await reply.progress(["done": String(done), "total": String(total)]) }
        }
        let (size, hex) = try await digest
        let elapsed = ContinuousClock.now - started
        return ["path": path, "size": String(size), "sha256": hex,
                "seconds": String(format: "%.2f", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)]
    }

    private func validated(_ path: String) throws(AgentError) {
        do { _ = try policy.validatedPath(path) } catch { throw AgentError(error) }
    }

    /// Reads `path` (no symlinks: its real path must be itself, under `root`) and hashes it.
    static func sha256(of path: String, root: String, progress: ProgressRelay) throws(AgentError) -> (UInt64, String) {
        defer { progress.finish() }
        guard let real = realpath(path, nil) else {
            throw AgentError(errno == ENOENT ? .notFound : .internal, "\(path): \(PosixFiles.errorText())")
        }
        let resolved = String(cString: real)
        free(real)
        guard resolved == path, path.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            throw AgentError(.invalidArgument, "\(path) resolves to \(resolved), outside \(root) or through a symbolic link")
        }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw AgentError(.internal, "cannot open \(path): \(PosixFiles.errorText())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw AgentError(.invalidArgument, "\(path) is not a regular file")
        }
        let total = UInt64(st.st_size)
        progress.update(done: 0, total: total)
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var done: UInt64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AgentError(.internal, "reading \(path): \(PosixFiles.errorText())")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            done += UInt64(n)
            progress.update(done: done, total: total)
        }
        let hex = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        return (done, hex)
    }
}

/// Progress shared between a blocking worker and the task that reports it.
final class ProgressRelay: @unchecked Sendable {
    private let lock = NSLock()
    private var done: UInt64 = 0
    private var total: UInt64 = 0
    private var isFinished = false

    func update(done: UInt64, total: UInt64) { lock.withLock { self.done = done; self.total = total } }
    func finish() { lock.withLock { isFinished = true } }
    var finished: Bool { lock.withLock { isFinished } }
    var snapshot: (UInt64, UInt64) { lock.withLock { (done, total) } }
}
