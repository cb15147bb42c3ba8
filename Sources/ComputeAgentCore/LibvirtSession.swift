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
        do {
            let c = try LibvirtConnection(uri: uri)
            current = c
            return c
        } catch let e as LibvirtError {
            throw AgentError(.unavailable, "cannot connect to libvirt at \(uri): \(e.message); start libvirtd or check --libvirt-uri")
        } catch {
            throw AgentError(.unavailable, "cannot connect to libvirt at \(uri): \(error)")
        }
    }

    /// The domain called `name` (validated by the caller); `not-found` naming it.
    func domain(_ name: String) throws(AgentError) -> LibvirtDomain {
        let c = try connection()
        do {
            return try c.lookupDomain(name: name)
        } catch let e as LibvirtError where e.code == .noDomain {
            throw AgentError(.notFound, "no domain called '\(name)' on this host (virsh list --all)")
        } catch let e as LibvirtError {
            throw ComputeWork.agentError(e)
        } catch {
            throw AgentError(.internal, "\(error)")
        }
    }
}

extension DomainState {
    /// The protocol's spelling: virsh's words with `-` for spaces (`shut-off`).
    var wire: DomainRunState { DomainRunState(rawValue: description.replacingOccurrences(of: " ", with: "-")) }
}
