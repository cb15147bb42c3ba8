import Foundation

/// Pure renderings of share's output.
public enum ShareFormatting {
    public static func progressLine(disk: String, done: UInt64, total: UInt64, bytesPerSecond: Double, width: Int) -> String {
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        var line = "  copy \(disk) "
        if width > 0 {
            let filled = Int((fraction * Double(width)).rounded(.down))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
        }
        line += String(format: "%3.0f%% ", fraction * 100) + "\(Bytes.human(done))/\(Bytes.human(total))"
        if bytesPerSecond > 0 {
            line += " \(Bytes.human(UInt64(bytesPerSecond)))/s"
            let left = Double(total - min(done, total)) / bytesPerSecond
            line += String(format: " ETA %d:%02d", Int(left) / 60, Int(left) % 60)
        }
        return line
    }

    public static func summary(_ r: ShareResult) -> String {
        if r.dryRun {
            return "dry run: share \(r.vm) from \(r.source) to \(r.destinations.joined(separator: ", ")) would:\n"
                + r.plan.enumerated().map { "  \($0.offset + 1). \($0.element)\n" }.joined()
                + "nothing was changed.\n"
        }
        var s = r.changed.isEmpty
            ? "\(r.vm) was already shared; nothing changed.\n"
            : "\(r.vm) is ready: its disks are on \(r.storage):\(r.export) (\(r.attach.rawValue)), seen by \(([r.source] + r.destinations).joined(separator: ", ")).\n"
        for d in r.disks {
            if r.mode == .live {
                // A live copy has no digest; QEMU's mirror walks the whole virtual size.
                let size = d.virtualSize.map { ", virtual size \(Bytes.human($0))" } ?? ""
                s += "  \(d.disk): \(r.export)/\(d.path) (\(d.format ?? "image")\(size), \(d.alreadyPresent ? "on the share already" : "copied live"))\n"
            } else {
                s += "  \(d.disk): \(r.export)/\(d.path) (\(Bytes.human(d.size)), digest \(DigestFormatting.short(d.digest)))\n"
            }
        }
        if let dest = r.destinations.first {
            // through the gate: check first, then libvirt's peer-to-peer migration
            s += "migrate it with: storagectl migrate \(r.vm) --to \(dest) --persistent (storagectl check \(r.vm) --to \(dest) says whether it can)\n"
        }
        return s
    }

    static func encoder(compact: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = compact ? [.sortedKeys] : [.prettyPrinted, .sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        return e
    }

    /// `share --repair`'s summary.
    public static func summary(_ r: RepairResult) -> String {
        var s = "\(r.vm) on \(r.storage): served by \(r.serving ?? "no gateway")"
        s += r.reachable.isEmpty ? ".\n" : ", reached by \(r.reachable.joined(separator: ", ")).\n"
        for g in r.gateways { s += "  \(g.name): \(g.state.rawValue) (\(g.detail))\n" }
        for (gateway, n) in r.evicted.sorted(by: { $0.key < $1.key }) { s += "  evicted \(n) CephFS session(s) of \(gateway)\n" }
        if !r.reexported.isEmpty { s += "  export brought in line on \(r.reexported.joined(separator: ", "))\n" }
        return s
    }

    public static func json(_ r: RepairResult, compact: Bool = false) throws -> String {
        String(decoding: try encoder(compact: compact).encode(r), as: UTF8.self)
    }

    public static func json(_ r: ShareResult, compact: Bool = false) throws -> String {
        String(decoding: try encoder(compact: compact).encode(r), as: UTF8.self)
    }

    /// One `--json-lines` record (JSON Lines, the shape of `migrate --json`) of a flow's
    /// event: `{"type":"step","step":{"step","host","detail"}}`, `{"type":"note","note":TEXT}`,
    /// `{"type":"progress","progress":{"disk","done","total","rate"}}` (bytes, bytes/s; at
    /// most every 0.25 s per flow, and always when a disk completes). Nil: a progress
    /// record held back (`lastRecord` is when the last one was printed).
    public static func record(_ event: ShareEvent, lastRecord: inout ContinuousClock.Instant) -> String? {
        struct Step: Encodable { var step: String; var host: String; var detail: String }
        struct Progress: Encodable { var disk: String; var done: UInt64; var total: UInt64; var rate: Double }
        switch event {
        case .step(let step, let host, let detail):
            return CheckFormatting.record("step", Step(step: step.rawValue, host: host, detail: detail))
        case .note(let text):
            return CheckFormatting.record("note", text)
        case .progress(let disk, let done, let total, let rate):
            guard total > 0, done >= total || ContinuousClock.now - lastRecord >= .milliseconds(250) else { return nil }
            lastRecord = .now
            return CheckFormatting.record("progress", Progress(disk: disk, done: done, total: total, rate: rate.isFinite ? rate : 0))
        }
    }

    /// The `--json-lines` records of one event, as `record` makes them, keeping each
    /// disk's last progress in `disks`: when the copy step (share's `copy`, unshare's
    /// `localize`) has finished, a disk whose last record was short of its total gets one
    /// record at its total. The agent sends progress every 0.25 s, so a copy that takes
    /// less had only its first record (0 bytes) otherwise, and the bar would stay at 0 %
    /// although the step says the disk was copied.
    public static func records(_ event: ShareEvent, lastRecord: inout ContinuousClock.Instant,
                               disks: inout [(disk: String, done: UInt64, total: UInt64)]) -> [String] {
        var lines: [String] = []
        switch event {
        case .progress(let disk, let done, let total, _):
            if let i = disks.firstIndex(where: { $0.disk == disk }) { disks[i] = (disk, done, total) } else { disks.append((disk, done, total)) }
        case .step(let step, _, _) where step == .copy || step == .localize:
            for d in disks where d.done < d.total {
                var now = ContinuousClock.now - .seconds(10)
                if let line = record(.progress(disk: d.disk, done: d.total, total: d.total, bytesPerSecond: 0), lastRecord: &now) { lines.append(line) }
            }
            disks.removeAll()
        default:
            break
        }
        // the completed disks first, then the step's line
        if let line = record(event, lastRecord: &lastRecord) { lines.append(line) }
        return lines
    }

    /// The last `--json-lines` record: `{"type":"result","result":DOC}` (DOC: the `--json`
    /// document) or `{"type":"failure","failure":DOC}` (the failure document).
    public static func finalRecord(_ type: String, document: String) -> String {
        "{\"type\":\"\(type)\",\"\(type)\":\(document)}"
    }

    public static func json(failure: ShareFailure, compact: Bool = false) throws -> String {
        struct Doc: Encodable {
            var ready = false; var failedStep: String; var host: String; var code: String; var message: String; var remedy: String
            var interrupted: Bool
        }
        return String(decoding: try encoder(compact: compact).encode(Doc(failedStep: failure.step.rawValue, host: failure.host, code: failure.error.code.rawValue,
                                                        message: failure.error.message, remedy: failure.remedy,
                                                        interrupted: failure.interrupted)), as: UTF8.self)
    }
}
