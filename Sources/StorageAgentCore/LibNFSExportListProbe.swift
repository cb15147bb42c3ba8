import AgentProtocol
import LibNFS

/// Asks an NFS server's MOUNT service for its export list through libnfs
/// (`mount_getexports`, what `showmount -e` prints). Needs the portmapper on the server
/// (NFSv3); every call is a fresh RPC connection, run on the agent's libnfs thread.
public struct LibNFSExportListProbe: ExportListProbe {
    public let server: String
    public let timeout: Duration

    public init(server: String, timeout: Duration = .seconds(3)) {
        self.server = server
        self.timeout = timeout
    }

    public func exports() async throws(AgentError) -> [ListedExport] {
        let server = self.server
        let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        do {
            return try await BlockingWork.runNFS {
                try NFSContext.exports(server: server, timeout: ms).map { ListedExport(path: $0.path, groups: $0.groups) }
            }
        } catch {
            throw AgentError(.unavailable, "cannot ask the NFS server \(server) for its export list: \(error)")
        }
    }
}
