import Foundation

/// Pure renderings of unshare's output.
public enum UnshareFormatting {
    public static func summary(_ r: UnshareResult) -> String {
        var s = r.changed.isEmpty ? "\(r.vm) was already on local disks of \(r.host); nothing changed.\n"
            : r.changed.contains("localize") ? "\(r.vm) is on local disks of \(r.host) again.\n"
            : "\(r.vm) was already on local disks of \(r.host).\n"
        for d in r.disks {
            // A live copy has no digest, and the bytes QEMU's mirror walked are the virtual size.
            s += r.mode == .live ? "  \(d.disk): \(d.to) (copied live)\n"
                : "  \(d.disk): \(d.to) (\(Bytes.human(d.size))\(d.digest.isEmpty ? "" : ", digest \(DigestFormatting.short(d.digest))"))\n"
        }
        if !r.removedClients.isEmpty {
            s += "export \(r.storage):\(r.export) no longer lists \(r.removedClients.joined(separator: ", "))"
                + (r.remainingClients.isEmpty ? " (no client left)" : "; still exported to \(r.remainingClients.joined(separator: ", "))") + ".\n"
        }
        for h in r.staleDefinitions {
            s += "warning: \(h) still defines \(r.vm) on the shared image, which is stale now: remove that definition (on \(h): virsh undefine \(r.vm)).\n"
        }
        if !r.leftOnShare.isEmpty {
            s += "the copies on the share were kept (nothing is deleted); remove them when no longer needed:\n"
            for p in r.leftOnShare { s += "  \(p)\n" }
        }
        return s
    }

    public static func json(_ r: UnshareResult, compact: Bool = false) throws -> String {
        String(decoding: try ShareFormatting.encoder(compact: compact).encode(r), as: UTF8.self)
    }
}
