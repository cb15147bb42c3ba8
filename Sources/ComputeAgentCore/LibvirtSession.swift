import AgentAPI
import AgentProtocol
import Foundation
import Libvirt

/// The agent's one libvirt connection, opened on first use and reopened when libvirtd
/// went away (`virConnectIsAlive`). One shared connection also gives `test:///FILE.xml`
/// URIs (private state per connection) a consistent view across requests.
///
/// Blocking: ``connection()`` opens a connection; call it from `ComputeWork`.
final class LibvirtSession: @unchecked Sendable {
    let uri: String
    // Invariant: `current` is only touched with `lock` held.
    private let lock = NSLock()
    private var current: LibvirtConnection?

    init(uri: String) { self.uri = uri }

    func connection() throws(AgentError) -> LibvirtConnection {
        lock.lock()
        defer { lock.unlock() }
        if let c = current, c.isAlive { return c }
        let c = try lv(.connecting(uri: uri)) { try LibvirtConnection(uri: uri) }
        current = c
        return c
    }

    /// Forgets the connection (the next ``connection()`` opens a new one): after a call on
    /// it failed in a way that may mean libvirtd went away before `virConnectIsAlive` knew.
    func reset() {
        lock.lock()
        defer { lock.unlock() }
        current = nil
    }

    /// The domain called `name` (validated by the caller); `not-found` naming it.
    func domain(_ name: String) throws(AgentError) -> LibvirtDomain {
        let c = try connection()
        return try lv(.lookingUpDomain(name)) { try c.lookupDomain(name: name) }
    }
}

extension DomainState {
    /// The protocol's spelling: virsh's words with `-` for spaces (`shut-off`).
    var wire: DomainRunState { DomainRunState(rawValue: description.replacingOccurrences(of: " ", with: "-")) }
}
