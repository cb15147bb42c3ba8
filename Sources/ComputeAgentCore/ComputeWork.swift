import AgentProtocol
import BlockingIO
import Libvirt

/// Where the compute agent runs blocking work (libvirt calls, file and libnfs I/O):
/// never on Swift's cooperative pool. The copy engine runs its own threads.
enum ComputeWork {
    static let executor = BlockingExecutor(name: "compute-io", threadCount: 3)

    /// Runs `body` off the cooperative pool. `AgentError` passes through; a
    /// ``LibvirtError`` becomes the protocol error for it; anything else is `internal`.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws(AgentError) -> T {
        do {
            return try await executor.run(body)
        } catch let error as AgentError {
            throw error
        } catch let error as LibvirtError {
            throw agentError(error)
        } catch {
            throw AgentError(.internal, "\(error)")
        }
    }

    /// Like ``run(_:)``, with the outcome as a `Result` (the caller cleans up first).
    static func capture<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async -> Result<T, AgentError> {
        do { return .success(try await run(body)) } catch { return .failure(error) }
    }

    /// The one place a libvirt failure becomes a protocol error.
    static func agentError(_ e: LibvirtError) -> AgentError {
        switch e.code {
        case .noDomain, .noStoragePool, .noStorageVolume: return AgentError(.notFound, e.message)
        case .operationInvalid: return AgentError(.invalidState, e.message)
        case .noSupport: return AgentError(.unsupported, e.message)
        case .authFailed: return AgentError(.permissionDenied, e.message)
        case .invalidArgument, .xmlError: return AgentError(.invalidArgument, e.message)
        case .systemError where e.message.contains("Failed to connect"):
            return AgentError(.unavailable, "libvirt is not reachable: \(e.message)")
        default: return AgentError(.internal, "libvirt: \(e.message)")
        }
    }
}
