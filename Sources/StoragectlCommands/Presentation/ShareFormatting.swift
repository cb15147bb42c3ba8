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

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        return e
    }

    public static func json(_ r: ShareResult) throws -> String {
        String(decoding: try encoder().encode(r), as: UTF8.self)
    }

    public static func json(failure: ShareFailure) throws -> String {
        struct Doc: Encodable {
            var ready = false; var failedStep: String; var host: String; var code: String; var message: String; var remedy: String
            var interrupted: Bool
        }
        return String(decoding: try encoder().encode(Doc(failedStep: failure.step.rawValue, host: failure.host, code: failure.error.code.rawValue,
                                                        message: failure.error.message, remedy: failure.remedy,
                                                        interrupted: failure.interrupted)), as: UTF8.self)
    }
}
