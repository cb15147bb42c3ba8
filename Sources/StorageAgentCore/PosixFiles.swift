import AgentProtocol
import Foundation
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// Blocking file-system primitives of the storage agent. Every function blocks (`fsync`,
/// `flock`): call them through `BlockingWork`, never on the cooperative pool. Every
/// failure becomes an `AgentError` naming the path and the errno text.
enum PosixFiles {
    static func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// The whole file, or nil when it does not exist. Refuses a symlink in the last
    /// component (O_NOFOLLOW): the agent never reads or replaces a file through a link.
    static func read(_ path: String) throws(AgentError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            let e = errno
            if e == ENOENT { return nil }
            if e == ELOOP { throw AgentError(.invalidState, "\(path) is a symbolic link; the agent only edits regular files: replace the link with the file it points to") }
            throw AgentError(.internal, "cannot open \(path): \(errorText(e))")
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AgentError(.internal, "cannot read \(path): \(errorText())")
            }
            if n == 0 { break }
            out.append(contentsOf: buffer[0..<n])
        }
        return out
    }

    /// Replaces `path` with `bytes` atomically and durably (`AtomicFile.write`: a
    /// temporary file `<path>.storagectl.tmp` in the same directory, written in full,
    /// `fsync`ed, renamed over `path`, then the directory `fsync`ed). A reader (or a crash
    /// at any instant) sees the old or the new content, never a mix or an empty file. An
    /// existing file's mode and owner are kept; a new file gets `mode`. The caller holds
    /// the store lock, so the fixed temporary name has one writer at a time.
    static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(AgentError) {
        let name = (path as NSString).lastPathComponent
        do {
            try AtomicFile.write(bytes, to: path, mode: mode, temporaryName: name + ".storagectl.tmp")
        } catch .notRegularFile {
            throw AgentError(.invalidState, "\(path) is not a regular file; the agent only replaces regular files")
        } catch .system(_, _, let code) where code == EROFS {
            // systemd's ProtectSystem=strict: only the unit's ReadWritePaths= are writable.
            let directory = (path as NSString).deletingLastPathComponent
            throw AgentError(.invalidState, "cannot replace \(path): \(directory) is read-only for the agent (under systemd: not in the unit's ReadWritePaths=); write the drop-in that `storage-agent --print-unit-drop-in` prints (docs/install.md, \"Units\"), or set exports-file to a file in a writable directory")
        } catch .system(let operation, _, let code) where code == EBUSY && operation.hasPrefix("rename") {
            // rename(2): EBUSY when the target is a mount point, e.g. a file made
            // writable by systemd's ReadWritePaths=/etc/exports (a bind mount).
            throw AgentError(.invalidState, "cannot replace \(path): it is a mount point (a bind-mounted file, e.g. systemd ReadWritePaths= naming the file); make its directory writable instead")
        } catch {
            throw AgentError(.internal, error.description)
        }
    }

    /// `fsync` of the directory holding `path`, so that a rename in it is durable.
    static func syncDirectory(of path: String) throws(AgentError) {
        do { try AtomicFile.syncDirectory(of: path) } catch { throw AgentError(.internal, error.description) }
    }

    /// The target of the symbolic link `path`, or nil.
    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The real path of an existing path (`realpath(3)`), or nil.
    static func realPath(_ path: String) -> String? {
        guard let resolved = Glibc.realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// An exclusive `flock(2)` on `<exports-file>.storagectl.lock`, shared by every process
/// that edits the file (two agents, or an agent and a second instance started by hand).
/// flock locks belong to the open file description, so a second lock taken in the same
/// process also waits. Released by `unlock()` or when the process dies (kill -9 included).
final class FileLock: Sendable {
    let path: String
    private let fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    /// Takes the lock, polling every 10 ms until `timeout` passes; then throws `busy`.
    /// Blocks the calling thread.
    static func acquire(_ path: String, timeout: Duration) throws(AgentError) -> FileLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw AgentError(.internal, "cannot open lock file \(path): \(PosixFiles.errorText())") }
        let deadline = ContinuousClock.now + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            guard e == EWOULDBLOCK || e == EINTR else {
                close(fd)
                throw AgentError(.internal, "cannot lock \(path): \(PosixFiles.errorText(e))")
            }
            if ContinuousClock.now >= deadline {
                close(fd)
                throw AgentError(.busy, "another process holds \(path) (an export change is in progress); try again")
            }
            usleep(10_000)
        }
        return FileLock(path: path, fd: fd)
    }

    func unlock() {
        _ = flock(fd, LOCK_UN)
        close(fd)
    }
}
