import AgentProtocol
import ImageCopy
import Libvirt
import SystemPackage

/// The one place the compute agent's error sources become protocol errors: libvirt
/// (matched on libvirt's error number and domain, never on its message text) and the
/// copy engine (matched on its cases and their typed errno). Every `AgentError` made here
/// keeps the original error as its `cause`, for logs.
enum ErrorMapping {
    /// What the agent was doing when libvirt failed; it shapes the message, and for
    /// `connecting` every failure means libvirt is `unavailable`.
    enum LibvirtContext: Sendable {
        /// Any call on an open connection.
        case call
        /// Opening a connection to `uri`.
        case connecting(uri: String)
        /// Looking up the domain called `name`.
        case lookingUpDomain(String)
        /// Starting (mounting) a netfs pool.
        case startingPool(name: String, mount: String)
    }

    /// Any error thrown by compute work: `AgentError` passes through, a `LibvirtError`
    /// or `ImageCopyError` is mapped, anything else is `internal`.
    static func agentError(_ error: any Error, _ context: LibvirtContext = .call) -> AgentError {
        switch error {
        case let e as AgentError: return e
        case let e as LibvirtError: return agentError(e, context)
        case let e as ImageCopyError: return agentError(e)
        default:
            if case .connecting(let uri) = context {
                return AgentError(.unavailable, "cannot connect to libvirt at \(uri): \(error)", cause: error)
            }
            return AgentError(.internal, "\(error)", cause: error)
        }
    }

    /// A libvirt failure as the protocol's error.
    static func agentError(_ e: LibvirtError, _ context: LibvirtContext = .call) -> AgentError {
        switch context {
        case .call:
            break
        case .connecting(let uri):
            return AgentError(.unavailable, "cannot connect to libvirt at \(uri): \(e.message); start libvirtd or check --libvirt-uri", cause: e)
        case .lookingUpDomain(let name) where e.code == .noDomain:
            return AgentError(.notFound, "no domain called '\(name)' on this host (virsh list --all)", cause: e)
        case .lookingUpDomain:
            break
        case .startingPool(let name, let mount):
            return AgentError(.unavailable, "pool '\(name)' is defined but could not be started (mounting \(mount)): \(e.message); check that the export is reachable and exported to this host, then retry", cause: e)
        }
        if isUnreachable(e) {
            return AgentError(.unavailable, "libvirt is not reachable: \(e.message)", cause: e)
        }
        let code: AgentError.Code
        switch e.code {
        case .noDomain, .noStoragePool, .noStorageVolume: code = .notFound
        case .domainExists, .storageVolumeExists: code = .exists
        case .operationInvalid: code = .invalidState
        case .noSupport, .operationUnsupported, .configUnsupported, .argumentUnsupported: code = .unsupported
        case .authFailed, .authUnavailable, .authCancelled, .operationDenied: code = .permissionDenied
        case .invalidArgument, .xmlError: code = .invalidArgument
        case .operationTimeout: code = .timeout
        // A domain job (a migration) aborted by a client: the domain stays as it was.
        case .operationAborted: code = .conflict
        // libvirt's own refusal of a migration without shared storage (never overridden).
        case .migrateUnsafe: code = .invalidState
        default: return AgentError(.internal, "libvirt: \(e.message)", cause: e)
        }
        return AgentError(code, e.message, cause: e)
    }

    /// The daemon cannot be reached or went away: no connection could be made
    /// (`VIR_ERR_NO_CONNECT`), the RPC layer failed (`VIR_ERR_RPC`), or a system call
    /// failed inside the RPC layer (`VIR_ERR_SYSTEM_ERROR` from `VIR_FROM_RPC`: "Failed
    /// to connect socket to ...", connection reset).
    static func isUnreachable(_ e: LibvirtError) -> Bool {
        switch e.code {
        case .noConnect, .rpc: return true
        case .systemError: return e.domain == .rpc || e.domain == .remote
        default: return false
        }
    }

    /// A copy-engine failure as the protocol's error.
    static func agentError(_ e: ImageCopyError) -> AgentError {
        let code: AgentError.Code
        switch (e, e.systemErrno) {
        case (.invalidPath, _), (.sourceNotRegularFile, _): code = .invalidArgument
        case (.sourceChanged, _), (.targetNotRegularFile, _): code = .conflict
        case (.targetExists, _), (.localTargetExists, _): code = .exists
        case (.targetNotFound, _): code = .notFound
        case (.verificationFailed, _): code = .internal
        case (.cancelled, _), (.serverRestarted, _): code = .unavailable

        case (.sourceUnreadable, Errno.noSuchFileOrDirectory): code = .notFound                  // ENOENT
        case (.sourceUnreadable, Errno.permissionDenied), (.sourceUnreadable, Errno.notPermitted):   // EACCES, EPERM
            code = .permissionDenied
        case (.sourceUnreadable, _): code = .internal

        case (.mountFailed, Errno.permissionDenied), (.mountFailed, Errno.notPermitted): code = .permissionDenied
        case (.mountFailed, Errno.timedOut): code = .timeout                                    // ETIMEDOUT
        case (.mountFailed, _): code = .unavailable

        case (.nfs, Errno.permissionDenied), (.nfs, Errno.notPermitted): code = .permissionDenied
        case (.nfs, Errno.noSuchFileOrDirectory): code = .notFound
        case (.nfs, Errno.timedOut): code = .timeout
        case (.nfs, Errno.noSpace), (.nfs, Errno.diskQuotaExceeded): code = .unavailable           // ENOSPC, EDQUOT
        case (.nfs, Errno.connectionReset), (.nfs, Errno.connectionRefused), (.nfs, Errno.brokenPipe), (.nfs, Errno.ioError):
            code = .unavailable                                            // ECONNRESET, ECONNREFUSED, EPIPE, EIO
        case (.nfs, _): code = .internal
        }
        return AgentError(code, e.description, cause: e)
    }
}

extension ImageCopyError {
    /// The protocol error for this failure, as the compute agent reports it (also used
    /// by `storagectl-copy-bench`, so the lab sees the agent's codes).
    public var agentError: AgentError { ErrorMapping.agentError(self) }
}

/// Runs a libvirt call (or several), turning what it throws into the protocol's error
/// through ``ErrorMapping``. Blocking: call it from `ComputeWork`.
func lv<T>(_ body: () throws -> T) throws(AgentError) -> T {
    try lv(.call, body)
}

/// ``lv(_:)`` for a call made in `context` (connecting, a domain lookup, ...).
func lv<T>(_ context: ErrorMapping.LibvirtContext, _ body: () throws -> T) throws(AgentError) -> T {
    do {
        return try body()
    } catch {
        throw ErrorMapping.agentError(error, context)
    }
}
