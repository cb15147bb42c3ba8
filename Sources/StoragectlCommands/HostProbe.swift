import AgentAPI
import AgentProtocol
import AgentRuntime

/// What `storagectl hosts` learned about one host, asked fresh from its agent.
public struct HostReport: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable {
        case healthy, degraded, unreachable
    }

    public struct Check: Sendable, Equatable, Codable {
        public var name: String
        public var ok: Bool
        public var detail: String
        public var facts: [String: String]
    }

    public var name: String
    public var role: Inventory.Role
    public var agent: String
    public var state: State
    public var agentVersion: String?
    public var reportedHost: String?
    public var uptimeSeconds: Int?
    public var roundTripMilliseconds: Double?
    public var checks: [Check]
    public var error: String?
    public var errorCode: String?
    /// What to do when the agent could not be asked (`HostsFormatting.remedy`).
    public var remedy: String? = nil

    enum CodingKeys: String, CodingKey {
        case name, role, agent, state, checks, error, remedy
        case agentVersion = "agent_version"
        case reportedHost = "reported_host"
        case uptimeSeconds = "uptime_seconds"
        case roundTripMilliseconds = "rtt_ms"
        case errorCode = "error_code"
    }
}

/// Asks one agent `HELLO`, `PING` (timed) and `HEALTH`, bounded by `timeout`.
public enum HostProbe {
    public static func probe(_ host: Inventory.Host, tls: TLSFiles, timeout: Duration) async -> HostReport {
        var report = HostReport(name: host.name, role: host.role, agent: host.agent.description,
                                state: .unreachable, checks: [])
        do {
            try await AgentClient.withSession(to: host.agent, connectTimeout: timeout, tls: tls) { session in
                let clock = ContinuousClock()
                let start = clock.now
                _ = try Ping.answer(try await session.call(Ping().request, timeout: timeout))
                let rtt = clock.now - start
                report.roundTripMilliseconds = Double(rtt.components.seconds) * 1000
                    + Double(rtt.components.attoseconds) / 1e15
                let health = try HealthQuery.answer(try await session.call(HealthQuery().request, timeout: timeout))
                report.agentVersion = health.version
                report.reportedHost = health.host
                report.uptimeSeconds = health.uptimeSeconds
                report.checks = health.checks.map {
                    HostReport.Check(name: $0.name, ok: $0.ok, detail: $0.detail,
                                     facts: Dictionary($0.facts.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }))
                }
                report.state = health.healthy ? .healthy : .degraded
            }
        } catch let e as AgentError {
            report.error = e.message
            report.errorCode = e.code.rawValue
        } catch {
            report.error = "\(error)"
            report.errorCode = AgentError.Code.internal.rawValue
        }
        if let code = report.errorCode { report.remedy = HostsFormatting.remedy(host: host.name, role: host.role, code: code) }
        return report
    }

    /// Probes every host concurrently; results in inventory order.
    public static func probeAll(_ hosts: [Inventory.Host], tls: TLSFiles, timeout: Duration) async -> [HostReport] {
        await withTaskGroup(of: (Int, HostReport).self) { group in
            for (i, host) in hosts.enumerated() {
                group.addTask { (i, await probe(host, tls: tls, timeout: timeout)) }
            }
            var reports = [HostReport?](repeating: nil, count: hosts.count)
            for await (i, r) in group { reports[i] = r }
            return reports.compactMap { $0 }
        }
    }
}
