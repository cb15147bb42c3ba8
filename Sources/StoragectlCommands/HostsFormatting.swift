import AgentProtocol
import Foundation

/// Pure renderings of `storagectl hosts` results.
public enum HostsFormatting {
    public static func table(_ reports: [HostReport]) -> String {
        let header = ["HOST", "ROLE", "AGENT", "STATE", "VERSION", "RTT"]
        var rows = [header]
        for r in reports {
            rows.append([
                r.name, r.role.rawValue, r.agent, r.state.rawValue,
                r.agentVersion ?? "-",
                r.roundTripMilliseconds.map { String(format: "%.1f ms", $0) } ?? "-",
            ])
        }
        var widths = [Int](repeating: 0, count: header.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var out = ""
        for row in rows {
            let cells = row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }
            out += cells.joined(separator: "  ") + "\n"
        }
        var notes = ""
        for r in reports {
            if let error = r.error { notes += "\(r.name): \(error)\n" }
            if let remedy = r.remedy { notes += "  what to do: \(remedy)\n" }
            for c in r.checks where !c.ok { notes += "\(r.name): \(c.name): \(c.detail)\n" }
        }
        return notes.isEmpty ? out : out + "\n" + notes
    }

    public static func json(_ reports: [HostReport]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct Envelope: Encodable { var hosts: [HostReport] }
        return String(decoding: try encoder.encode(Envelope(hosts: reports)), as: UTF8.self) + "\n"
    }

    /// What to do about an agent that could not be asked, by the error's code (nil when
    /// there is nothing specific to say).
    public static func remedy(host: String, role: Inventory.Role, code: String) -> String? {
        let unit = role == .storage ? "storage-agent" : "compute-agent"
        switch AgentError.Code(rawValue: code) {
        case .unavailable?:
            return "start the agent on \(host) (systemctl start \(unit).socket) and check that its address in the inventory is reachable from here"
        case .timeout?, .busy?:
            return "the agent on \(host) did not answer in time: check that it runs and is not stopped (systemctl status \(unit).service on \(host)), then refresh"
        case .permissionDenied?:
            return "reach the agent over tls: with a client certificate the agent on \(host) allows (docs/install.md)"
        case .unsupported?:
            return "upgrade \(unit) on \(host) to this storagectl's version"
        default:
            return nil
        }
    }

    /// 0 when every host is healthy, 69 when any is unreachable, 1 when any is degraded.
    public static func exitStatus(_ reports: [HostReport]) -> Int32 {
        if reports.contains(where: { $0.state == .unreachable }) { return 69 }
        if reports.contains(where: { $0.state == .degraded }) { return 1 }
        return 0
    }
}
