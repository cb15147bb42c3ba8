import AgentProtocol
import Foundation
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// storagectl's record of ready shares: `<state-dir>/ready-shares`, one absolute share
/// root (a mount-mode pool's target) per line, which the migration hook reads
/// (docs/migration.md, "The hook"). The agent adds a target when POOL-ENSURE leaves its
/// pool active and when a VERIFY reads through it; it removes it when a VERIFY finds the
/// pool inactive. (The agent never destroys or undefines a pool; the hook also checks
/// that each root is mounted right now, so a stale line never lets a disk through.)
///
/// Replaced atomically (`AtomicFile`, mode 0644): the hook sees the old or the new list.
/// Blocking: call through ``StateStore/offPool(_:)``, whose single thread also
/// serialises the read-modify-write of concurrent requests.
struct ReadyShareRecord: Sendable {
    static let fileName = "ready-shares"
    let state: StateStore

    var path: String { "\(state.root)/\(Self.fileName)" }

    func roots() -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init).filter { $0.hasPrefix("/") }
    }

    /// Adds `root`; idempotent (no write when it is listed).
    func add(_ root: String) throws(AgentError) {
        var list = roots()
        guard !list.contains(root) else { return }
        list.append(root)
        try write(list)
    }

    /// Removes `root`; idempotent.
    func remove(_ root: String) throws(AgentError) {
        let list = roots()
        guard list.contains(root) else { return }
        try write(list.filter { $0 != root })
    }

    private func write(_ list: [String]) throws(AgentError) {
        let text = "# storagectl's record of the share roots this host has ready (compute agent; read by the migration hook)\n"
            + list.sorted().map { $0 + "\n" }.joined()
        if mkdir(state.root, 0o700) != 0 && errno != EEXIST {
            throw AgentError(.internal, "cannot create the state directory \(state.root): \(String(cString: strerror(errno)))")
        }
        do {
            try AtomicFile.write(Array(text.utf8), to: path, mode: 0o644, temporaryName: ".\(Self.fileName).tmp")
        } catch {
            throw AgentError(.internal, "cannot write the record of ready shares \(path): \(error)")
        }
    }
}
