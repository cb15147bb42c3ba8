import Foundation

/// Pure renderings of unshare's output.
public enum UnshareFormatting {
    public static func summary(_ r: UnshareResult) -> String {
        var s = r.changed.isEmpty ? "\(r.vm) was already on local disks of \(r.host); nothing changed.\n"
            : r.changed.contains("localize") ? "\(r.vm) is on local disks of \(r.host) again.\n"
            : "\(r.vm) was already on local disks of \(r.host).\n"
        for d in r.disks { s += "  \(d.disk): \(d.to) (\(Bytes.human(d.size))\(d.digest.isEmpty ? "" : ", digest \(DigestFormatting.short(d.digest))"))\n" }
        if !r.removedClients.isEmpty {
            s += "export \(r.storage):\(r.export) no longer lists \(r.removedClients.joined(separator: ", "))"
                + (r.remainingClients.isEmpty ? " (no client left)" : "; still exported to \(r.remainingClients.joined(separator: ", "))") + ".\n"
        }
        if !r.leftOnShare.isEmpty {
            s += "the copies on the share were kept (nothing is deleted); remove them when no longer needed:\n"
            for p in r.leftOnShare { s += "  \(p)\n" }
        }
        return s
    }

    public static func json(_ r: UnshareResult) throws -> String {
        String(decoding: try ShareFormatting.encoder().encode(r), as: UTF8.self)
    }
}
