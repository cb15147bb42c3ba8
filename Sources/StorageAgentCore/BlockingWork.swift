import AgentProtocol
import BlockingIO

/// Where the storage agent runs blocking work (file I/O with `fsync`, `flock`, child
/// processes, libnfs RPCs): never on Swift's cooperative pool.
enum BlockingWork {
    /// File and process work: a few threads (changes are serialised by `ExportsStore`;
    /// HEALTH and EXPORTS may run beside one).
    static let files = BlockingExecutor(name: "storage-io", threadCount: 2)
    /// libnfs wants one context per thread: a serial executor of its own.
    static let nfs = BlockingExecutor(name: "storage-nfs", threadCount: 1)
    /// Reading whole images (CHECKSUM): threads of their own, so that two long digests
    /// never hold the threads EXPORT and UNEXPORT need.
    static let images = BlockingExecutor(name: "storage-images", threadCount: 2)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await files.run(body)
    }

    static func runNFS<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await nfs.run(body)
    }

    /// Runs `body` off the cooperative pool (on `executor`, by default the file
    /// threads); its `AgentError` passes through, anything else (cancellation, a
    /// shut-down executor) becomes `internal`.
    static func agent<T: Sendable>(on executor: BlockingExecutor = files,
                                   _ body: @escaping @Sendable () throws(AgentError) -> T) async throws(AgentError) -> T {
        do {
            return try await executor.run { () throws -> T in try body() }
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(.internal, "blocking work failed: \(error)")
        }
    }
}
