import AgentProtocol
import BlockingIO
import Foundation
import SafeFiles
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

    /// The state dir's own blocking thread: one, so writes of one record never overtake
    /// each other, and an `fsync` never holds a thread of Swift's cooperative pool.
    static let executor = BlockingExecutor(name: "state-io", threadCount: 1)

    /// Runs `body` with this store on ``executor``. `AgentError` passes through; a
    /// failure of the executor itself is `internal`.
    func offPool<T: Sendable>(_ body: @escaping @Sendable (StateStore) throws -> T) async throws(AgentError) -> T {
        let store = self
        do {
            return try await Self.executor.run { () throws -> T in try body(store) }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.internal, "state directory I/O failed: \(error)")
        }
    }

    /// ``offPool(_:)`` for reads that cannot fail (a missing or unreadable record is nil).
    func readOffPool<T: Sendable>(_ body: @escaping @Sendable (StateStore) -> T?) async -> T? {
        let store = self
        return (try? await Self.executor.run { () -> T? in body(store) }) ?? nil
    }

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
        // A crash leaves the old or the new file (AtomicFile: temporary, fsync, rename,
        // directory fsync); the dot-named temporary is never listed.
        do {
            try AtomicFile.write([UInt8](data), to: "\(dir)/\(name)", mode: 0o600, temporaryName: ".\(name).tmp")
        } catch {
            throw AgentError(.internal, "cannot write the agent state: \(error)")
        }
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
