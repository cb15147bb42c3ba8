import AgentAPI
import AgentProtocol
import AgentRuntime
import BlockingIO
import Libvirt

/// Checks that libvirt answers at the configured URI: opens a connection (on a blocking
/// thread, bounded by `timeout`) and reports the library and hypervisor versions.
public struct LibvirtProbe: HypervisorProbe {
    public let uri: String
    public let timeout: Duration
    let executor: BlockingExecutor

    public init(uri: String, timeout: Duration = .seconds(5), executor: BlockingExecutor = .shared) {
        self.uri = uri
        self.timeout = timeout
        self.executor = executor
    }

    struct Facts: Sendable {
        var libVersion: String
        var hypervisorVersion: String?
        var hostname: String?
    }

    public func check() async -> HealthCheck {
        let uri = self.uri
        do {
            let facts = try await withThrowingTaskGroup(of: Facts?.self) { group in
                group.addTask {
                    try await executor.run {
                        let connection = try LibvirtConnection(uri: uri)
                        return Facts(libVersion: "\(try connection.libVersion)",
                                     hypervisorVersion: (try? connection.hypervisorVersion).map { "\($0)" },
                                     hostname: try? connection.hostname)
                    }
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first
            }
            guard let facts else {
                return HealthCheck("libvirt", ok: false,
                                   detail: "libvirt at \(uri) did not answer within \(timeout); is libvirtd (or virtqemud) running?",
                                   facts: ["uri": uri])
            }
            var f: Fields = ["uri": uri, "libvirt-version": facts.libVersion]
            if let h = facts.hypervisorVersion { f.append("hypervisor-version", h) }
            return HealthCheck("libvirt", ok: true,
                               detail: "libvirt \(facts.libVersion) answers at \(uri)", facts: f)
        } catch {
            return HealthCheck("libvirt", ok: false, detail: ErrorMapping.agentError(error, .connecting(uri: uri)).message,
                               facts: ["uri": uri])
        }
    }
}
