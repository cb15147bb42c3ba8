import AgentAPI
import Foundation

/// Pure renderings of status's output.
public enum StatusFormatting {
    public static func table(_ s: VMStatus) -> String {
        if let problem = s.problem { return "\(s.vm): NOT READY: \(problem)\n" }
        var out = "\(s.vm): \(s.ready ? "READY" : "NOT READY") (defined on \(s.owner ?? "?"), \(s.state ?? "?")); storage \(s.storage):\(s.export)\n"
        if let gateways = s.gateways {
            out += "  gateways: " + gateways.map { g in g.state == .down ? "\(g.name) down (\(g.detail))" : "\(g.name) \(g.state.rawValue)" }
                .joined(separator: "; ") + "\n"
        }
        if let problem = s.gatewayProblem { out += "  gateway problem: \(problem)\n" }
        if let remedy = s.remedy { out += "  what to do: \(remedy)\n" }
        if !s.localDisks.isEmpty { out += "  local disks (not shared): \(s.localDisks.joined(separator: ", "))\n" }
        out += "  shared disks: \(s.sharedDisks.isEmpty ? "none" : s.sharedDisks.joined(separator: ", "))\n"
        let rows = [["HOST", "DEFINES", "EXPORTED", "SEES-DISKS", "CAN-RUN", "PROBLEM"]] + s.hosts.map {
            [$0.host, WireValue.yesNo($0.definesVM), WireValue.yesNo($0.exported), WireValue.yesNo($0.seesDisks), WireValue.yesNo($0.canRun), $0.problem ?? ""]
        }
        var widths = [Int](repeating: 0, count: 6)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        for r in rows {
            out += "  " + r.enumerated().map { i, c in i == 5 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces) + "\n"
        }
        return out
    }
}
