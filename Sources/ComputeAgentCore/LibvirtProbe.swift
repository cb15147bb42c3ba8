import AgentAPI
import AgentProtocol
import AgentRuntime
import BlockingIO
import Libvirt

/// Checks that libvirt answers at the configured URI (on a blocking thread, bounded by
/// `timeout`) and reports the library and hypervisor versions. It asks over a connection
/// it keeps open between probes (two RPCs to libvirtd, ~0.3 ms) instead of opening one per
/// probe (~5-8 ms under load: the compute agent's HEALTH p99 at 50 connections,
/// docs/benchmarks.md). A call that fails on the kept connection is retried once on a new
/// one, so a libvirtd restart costs no false failure; libvirtd down fails the new one.
public struct LibvirtProbe: HypervisorProbe {
    public let uri: String
    public let timeout: Duration
    let executor: BlockingExecutor
    let session: LibvirtSession

    public init(uri: String, timeout: Duration = .seconds(5), executor: BlockingExecutor = .shared) {
        self.uri = uri
        self.timeout = timeout
        self.executor = executor
        session = LibvirtSession(uri: uri)
    }

    struct Facts: Sendable {
        var libVersion: String
        var hypervisorVersion: String?
    }

    /// Blocking: two RPCs on `connection`.
    static func facts(_ connection: LibvirtConnection) throws -> Facts {
        Facts(libVersion: "\(try connection.libVersion)",
              hypervisorVersion: (try? connection.hypervisorVersion).map { "\($0)" })
    }

    public func check() async -> HealthCheck {
        let uri = self.uri
        do {
            let facts = try await withThrowingTaskGroup(of: Facts?.self) { group in
                group.addTask { [session] in
                    try await executor.run {
                        do {
                            return try Self.facts(session.connection())
                        } catch {
                            session.reset()
                            return try Self.facts(session.connection())
                        }
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
