import AgentProtocol
import BlockingIO

/// Where the compute agent runs blocking work (libvirt calls, file and libnfs I/O):
/// never on Swift's cooperative pool. The copy engine runs its own threads.
enum ComputeWork {
    static let executor = BlockingExecutor(name: "compute-io", threadCount: 3)

    /// Runs `body` off the cooperative pool. What it throws becomes a protocol error
    /// through ``ErrorMapping`` (`AgentError` passes through).
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws(AgentError) -> T {
        do {
            return try await executor.run(body)
        } catch {
            throw ErrorMapping.agentError(error)
        }
    }

    /// Like ``run(_:)``, with the outcome as a `Result` (the caller cleans up first).
    static func capture<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async -> Result<T, AgentError> {
        do { return .success(try await run(body)) } catch { return .failure(error) }
    }
}
