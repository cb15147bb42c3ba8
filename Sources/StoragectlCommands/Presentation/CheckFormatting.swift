import AgentAPI
import Foundation

/// Pure renderings of `check` and `migrate`.
public enum CheckFormatting {
    /// One line per check: `RESULT  NAME  measured values  sentence`, and for a warn or
    /// a fail the remedy on the same line after `->`.
    public static func line(_ c: CheckResult) -> String {
        var s = c.result.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0) + c.name.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0)
        let values = c.measured.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        if !values.isEmpty { s += values + "  " }
        s += c.sentence
        if (c.result == .warn || c.result == .fail), !c.remedy.isEmpty { s += " -> " + c.remedy }
        return s
    }

    public static func text(_ r: CheckReport) -> String {
        var out = "check \(r.vm): \(r.source) -> \(r.destination) (\(r.mode), \(r.uri))\n"
        for c in r.checks { out += line(c) + "\n" }
        let counts = CheckOutcome.allCases.compactMap { o -> String? in
            let n = r.checks.filter { $0.result == o }.count
            return n == 0 ? nil : "\(n) \(o.rawValue)"
        }
        out += (r.ok ? "ready to migrate" : "not ready: \(r.failed.count) check(s) failed") + " (\(counts.joined(separator: ", ")); \(r.milliseconds) ms)\n"
        return out
    }

    /// `migrate`'s refusal: the failed lines only.
    public static func refusal(_ r: CheckReport) -> String {
        var out = "storagectl: migrate \(r.vm) to \(r.destination) refused: \(r.failed.count) check(s) failed (storagectl check \(r.vm) --to \(r.destination) shows them all):\n"
        for c in r.failed { out += line(c) + "\n" }
        return out
    }

    public static func json(_ r: CheckReport) throws -> String {
        String(decoding: try ShareFormatting.encoder().encode(r), as: UTF8.self)
    }

    /// A JSON Lines record (`migrate --json`): `{"type": TYPE, TYPE: value}` on one line.
    public static func record<T: Encodable>(_ type: String, _ value: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        return (try? String(decoding: e.encode(JSONRecord(type: type, value: value)), as: UTF8.self)) ?? "{}"
    }
}

/// Pure renderings of `migrate`'s progress and result.
public enum MigrateFormatting {
    /// `  migrate [#####.....]  45% 460.8 MiB/1.0 GiB, 563.2 MiB left, 110.0 MiB/s, pass 2, dirty 5.0 MiB/s`
    /// (`width` 0: no bar, for logs).
    public static func progressLine(_ p: MigrationProgress, width: Int) -> String {
        let fraction = p.total > 0 ? min(1, Double(p.done) / Double(p.total)) : 0
        var line = "  migrate "
        if width > 0 {
            let filled = Int((fraction * Double(width)).rounded(.down))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
        }
        line += String(format: "%3.0f%% ", fraction * 100) + "\(Bytes.human(p.done))/\(Bytes.human(p.total))"
        if let r = p.remaining { line += ", \(Bytes.human(r)) left" }
        if let r = p.rate { line += ", \(Bytes.human(r))/s" }
        if let i = p.iteration { line += ", pass \(i)" }
        if let d = p.dirtyRate { line += ", dirty \(Bytes.human(d))/s" }
        if let phase = p.phase, phase != "precopy" { line += ", \(phase)" }
        return line
    }

    public static func summary(_ r: MigrateResult) -> String {
        var out = ""
        if let why = r.aborted {
            out += "migration of \(r.vm) aborted (\(why == .interrupted ? "Ctrl-C" : "--timeout")): "
            out += r.runsOn == r.source ? "\(r.vm) still runs on \(r.source).\n" : "\(r.vm) is \(r.stateOnSource) on \(r.source).\n"
            out += "  \(r.destination): \(r.stateOnDestination == "absent" ? "nothing of \(r.vm) is left there" : "\(r.vm) is \(r.stateOnDestination) there")\n"
            if let e = r.error { out += "  the source agent said: \(e)\n" }
            return out
        }
        if r.abortTooLate { out += "the migration finished before the abort reached it.\n" }
        if r.mode == MigrationMode.offline.rawValue {
            out += "\(r.vm)'s definition moved to \(r.destination) (\(r.stateOnDestination)); on \(r.source): \(r.stateOnSource == "absent" ? "undefined" : r.stateOnSource).\n"
        } else if let host = r.runsOn {
            out += "\(r.vm) runs on \(host) now (\(r.stateOnSource == "absent" ? "undefined on" : "\(r.stateOnSource) on") \(r.source)).\n"
        } else {
            out += "\(r.vm) is \(r.stateOnDestination) on \(r.destination) and \(r.stateOnSource) on \(r.source).\n"
        }
        var facts = ["elapsed \(seconds(r.elapsedMs))"]
        if let d = r.downtimeMs { facts.append("paused \(d) ms") }
        if let b = r.dataBytes { facts.append("\(Bytes.human(b)) sent") }
        if let i = r.iterations { facts.append("\(i) pass(es)") }
        if r.postcopy { facts.append("post-copy") }
        out += "  " + facts.joined(separator: ", ") + "\n"
        return out
    }

    static func seconds(_ ms: UInt64) -> String { String(format: "%.1f s", Double(ms) / 1000) }
}

/// `{"type": TYPE, TYPE: value}`.
    struct JSONRecord<V: Encodable>: Encodable {
        var type: String
        var value: V
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(_ s: String) { stringValue = s }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(type, forKey: Key("type"))
            try c.encode(value, forKey: Key(type))
        }
    }
