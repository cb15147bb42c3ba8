import AgentProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The agent's state directory (`--state-dir`): small files written atomically
/// (temporary file, `fsync`, `rename`, directory `fsync`), so a crash leaves the old or
/// the new content. Blocking: call from `ComputeWork`.
///
/// Layout (file names are domain UUIDs or validated pool names, never raw wire values):
/// - `jobs/<uuid>.json`: the last COPY job of a domain;
/// - `domains/<uuid>.previous.xml`: the definition ADOPT replaced (for RESTORE);
/// - `shares/<pool>.json`: shares in libnfs attach mode (no libvirt pool).
struct StateStore: Sendable {
    let root: String

    func path(_ kind: String, _ name: String) -> String { "\(root)/\(kind)/\(name)" }

    func read(_ kind: String, _ name: String) throws(AgentError) -> Data? {
        let p = path(kind, name)
        guard FileManager.default.fileExists(atPath: p) else { return nil }
        do { return try Data(contentsOf: URL(fileURLWithPath: p)) } catch {
            throw AgentError(.internal, "cannot read \(p): \(error.localizedDescription)")
        }
    }

    func write(_ kind: String, _ name: String, _ data: Data) throws(AgentError) {
        let dir = "\(root)/\(kind)"
        try ensureDirectory(root)
        try ensureDirectory(dir)
        let final = "\(dir)/\(name)"
        let temp = "\(dir)/.\(name).tmp"
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw AgentError(.internal, "cannot create \(temp): \(errnoText())") }
        let ok = data.withUnsafeBytes { raw -> Bool in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 { if errno == EINTR { continue }; return false }
                off += n
            }
            return true
        }
        let synced = ok && fsync(fd) == 0
        close(fd)
        guard synced, rename(temp, final) == 0 else {
            let text = errnoText()
            unlink(temp)
            throw AgentError(.internal, "cannot write \(final): \(text)")
        }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    func remove(_ kind: String, _ name: String) {
        unlink(path(kind, name))
    }

    func list(_ kind: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(kind)")) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    private func ensureDirectory(_ dir: String) throws(AgentError) {
        var st = stat()
        if lstat(dir, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw AgentError(.invalidState, "\(dir) exists and is not a directory; fix --state-dir")
            }
            return
        }
        guard mkdir(dir, 0o700) == 0 || errno == EEXIST else {
            throw AgentError(.internal, "cannot create the state directory \(dir): \(errnoText()); set --state-dir to a writable place")
        }
    }

    private func errnoText() -> String { String(cString: strerror(errno)) }

    func readJSON<T: Decodable>(_ type: T.Type, _ kind: String, _ name: String) -> T? {
        guard let data = try? read(kind, name) else { return nil }
        return try? JSONDecoder().decode(T.self, from: data)
    }

    func writeJSON<T: Encodable>(_ value: T, _ kind: String, _ name: String) throws(AgentError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do { data = try encoder.encode(value) } catch { throw AgentError(.internal, "cannot encode state: \(error)") }
        try write(kind, name, data)
    }
}
