import AgentAPI
import AgentProtocol
import AgentRuntime
import Foundation
import MountInfo
#if canImport(Glibc)
import Glibc
#endif

/// What the `ganesha-ceph` backend knows beyond the exports: the CephFS mount under the
/// export root, the floating address, and the CephFS sessions of the gateways' NFS
/// servers (listed and evicted with the `ceph` command, argument vectors only).
enum CephGateway {
    /// File system types of a CephFS mount: the kernel client, or ceph-fuse.
    static let cephFileSystems: Set<String> = ["ceph", "fuse.ceph-fuse", "fuse.ceph"]

    /// HEALTH `cephfs-mount`: the export root must be a CephFS mount (the same CephFS
    /// directory the FSAL CEPH exports name), or the agent's directories, free space and
    /// digests would be those of the gateway's own disk. Blocking.
    static func mountCheck(root: String) -> HealthCheck {
        let text = (try? PosixFiles.read("/proc/self/mountinfo")).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let real = PosixFiles.realPath(root) ?? root
        return mountCheck(root: real, mountinfo: text)
    }

    /// The decision, pure: the last mount at `root` (the one that shadows the others).
    static func mountCheck(root: String, mountinfo: String) -> HealthCheck {
        let remedy = "mount the CephFS directory \(root) at \(root) on this gateway (ceph-fuse -r \(root) \(root), or mount -t ceph ...:\(root) \(root)); docs/storage.md, \"A CephFS gateway cluster\""
        guard let entry = MountInfo.parse(mountinfo).last(where: { $0.mountPoint == root }) else {
            return HealthCheck("cephfs-mount", ok: false, detail: "nothing is mounted at \(root): \(remedy)")
        }
        guard let type = entry.fileSystem, cephFileSystems.contains(type) else {
            return HealthCheck("cephfs-mount", ok: false, detail: "\(root) is a \(entry.fileSystem ?? "unknown") mount, not CephFS: \(remedy)")
        }
        return HealthCheck("cephfs-mount", ok: true, detail: "\(root) is a CephFS mount (\(type))", facts: ["fs-type": type])
    }

    /// HEALTH `ceph-write-cache` (advice): libcephfs should not cache writes on a gateway
    /// (`client_oc = false` for the NFS servers' Ceph user). With its object cacher on,
    /// nfs-ganesha acknowledges an NFSv3 UNSTABLE write while the data sits in its
    /// libcephfs cache; when that gateway dies, the floating address moves and the
    /// client's COMMIT reaches the other gateway, which never saw the write, and libnfs
    /// (QEMU's NFS client) does not compare write verifiers, so it never re-sends: the
    /// write is gone although the guest was told it is durable. With `client_oc = false`
    /// libcephfs writes to the OSDs before it returns. (The lab saw a one-sector hole
    /// after 2 of 58 gateway kills, not explained; none in 20 kills with the cache off,
    /// none in 20 with it on.) Blocking.
    static func writeCacheCheck(conf: String, user: String) -> HealthCheck {
        let text = ((try? PosixFiles.read(conf)) ?? nil).map { String(decoding: $0, as: UTF8.self) }
        guard let text else {
            return HealthCheck("ceph-write-cache", ok: false, detail: "\(conf) cannot be read: the gateway needs the Ceph configuration")
        }
        return writeCacheCheck(confText: text, conf: conf, user: user)
    }

    /// The decision, pure: `client_oc` (or `client oc`) as `[client.USER]`, else
    /// `[client]`, else `[global]` sets it; Ceph's default is true.
    static func writeCacheCheck(confText: String, conf: String, user: String) -> HealthCheck {
        var section = ""
        var values: [String: String] = [:]
        for raw in confText.split(separator: "\n") {
            var line = raw.trimmingCharacters(in: .whitespaces)
            if let hash = line.firstIndex(where: { $0 == "#" || $0 == ";" }) { line = String(line[..<hash]).trimmingCharacters(in: .whitespaces) }
            if line.hasPrefix("["), line.hasSuffix("]") { section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces); continue }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).replacingOccurrences(of: " ", with: "_")
                .replacingOccurrences(of: "-", with: "_")
            if key == "client_oc" { values[section] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces).lowercased() }
        }
        let value = values["client.\(user)"] ?? values["client"] ?? values["global"]
        let off = ["false", "0", "no", "off"].contains(value ?? "true")
        // Advice, not a failure (like export-root-fs): state=ok with a warning= fact.
        return off
            ? HealthCheck("ceph-write-cache", ok: true, detail: "client_oc is off for client.\(user) in \(conf): a write is on the OSDs before nfs-ganesha answers")
            : HealthCheck("ceph-write-cache", ok: true, detail: "warning: libcephfs caches writes for client.\(user) (client_oc is \(value ?? "true, the default")): nfs-ganesha acknowledges NFS writes whose data a gateway failover can lose; add 'client_oc = false' to [client] in \(conf), then restart nfs-ganesha",
                          facts: ["warning": "ceph-write-cache"])
    }

    /// HEALTH `floating-address`: whether this gateway holds the cluster's floating
    /// address now. A fact, never a failure (the standby gateway is healthy).
    static func floatingCheck(_ address: String) -> HealthCheck {
        let held = localAddresses().contains(address)
        return HealthCheck("floating-address", ok: true,
                           detail: held ? "this gateway holds \(address)" : "\(address) is held elsewhere (this gateway is a standby)",
                           facts: ["floating": held ? "held" : "standby", "address": address])
    }

    /// The host's IPv4 and IPv6 addresses, as text.
    static func localAddresses() -> Set<String> {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var result = Set<String>()
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                var a = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                if inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count)) != nil { result.insert(text(buffer)) }
            case AF_INET6:
                var a = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                if inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count)) != nil { result.insert(text(buffer)) }
            default: break
            }
        }
        return result
    }

    /// A NUL-terminated C string in `buffer`, as text.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `ceph --conf C --id ID --connect-timeout N tell mds.FS:0 ARGS...`.
    static func tell(_ c: StorageAgentConfiguration, _ args: [String]) -> [String] {
        [c.cephPath, "--conf", c.cephConf, "--id", c.cephAdminID, "--connect-timeout", "10",
         "tell", "mds.\(c.cephFilesystem):0"] + args
    }

    /// The NFS servers' sessions of `ceph tell mds.FS:0 client ls --format=json`, in the
    /// MDS's order: FSAL CEPH names each of its sessions `ganesha-HOST-EXPORTID`
    /// (`client_metadata.uuid`, one per export, whatever Ceph user the export names), and
    /// any session of `user` (FSAL CEPH's `User_Id` of storagectl's exports) counts too.
    /// A gateway's own CephFS mount (ceph-fuse, another user) is not one of them. Pure.
    static func sessions(json: String, user: String) throws(AgentError) -> [CephSession] {
        // stderr comes in the same pipe: log lines (`... ms_handle_reset on [v2:...]`)
        // before or after the JSON, which ceph prints on one line of its own.
        let list = json.split(separator: "\n").lazy.filter { $0.hasPrefix("[") }
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [[String: Any]] }.first
        guard let list else {
            throw AgentError(.internal, "ceph client ls did not print a JSON list: \(json.prefix(300))")
        }
        return list.compactMap { s -> CephSession? in
            guard let id = (s["id"] as? NSNumber)?.uint64Value else { return nil }
            let meta = s["client_metadata"] as? [String: Any] ?? [:]
            let entity = meta["entity_id"] as? String ?? ""
            guard entity == user || (meta["uuid"] as? String ?? "").hasPrefix("ganesha-") else { return nil }
            return CephSession(id: id, host: meta["hostname"] as? String ?? "", user: entity, state: s["state"] as? String ?? "")
        }
    }

    /// The NFS servers' sessions, as the MDS lists them now (`sessions(json:user:)`). Blocking.
    static func listSessions(_ c: StorageAgentConfiguration) throws(AgentError) -> [CephSession] {
        try sessions(json: run(tell(c, ["client", "ls", "--format=json"]), timeout: c.cephTimeout), user: c.cephUser)
    }

    /// Runs a `ceph` command; its output, or the error in the protocol's words. Blocking.
    static func run(_ argv: [String], timeout: Duration) throws(AgentError) -> String {
        let out = try CommandRunner.run(argv, timeout: timeout)
        guard out.status == 0 else {
            throw AgentError(.unavailable, "\(argv.joined(separator: " ")) exited \(out.status): \(out.output.suffix(400).trimmingCharacters(in: .whitespacesAndNewlines)); check that the Ceph cluster answers (ceph -s) and that the agent's Ceph user (--ceph-admin-id) may use the MDS")
        }
        return out.output
    }
}

extension StorageAgentHandler {
    /// `CEPH-SESSIONS`: the NFS servers' CephFS sessions the MDS holds (rank 0).
    func cephSessions(reply: ReplyStream) async throws -> Fields {
        let c = configuration
        let sessions = try await BlockingWork.agent { () throws(AgentError) -> [CephSession] in try CephGateway.listSessions(c) }
        return try await reply.answer(CephSessionsQuery.self, .init(sessions: sessions, host: Self.hostName()))
    }

    /// `CEPH-EVICT host=H`: evicts the NFS servers' sessions of host H, one by id (so a
    /// session that appears meanwhile is not touched by a filter).
    func cephEvict(_ asked: CephEvictRequest, context: RequestContext) async throws -> Fields {
        try context.authorize(asked)
        let own = Self.hostName()
        guard asked.host != own else {
            throw AgentError(.invalidArgument, "\(own) is this gateway: its own NFS server's sessions are not evicted through it; ask another gateway")
        }
        let c = configuration, host = asked.host
        let evicted = try await BlockingWork.agent { () throws(AgentError) -> Int in
            let list = try CephGateway.listSessions(c).filter { $0.host == host }
            for s in list {
                _ = try CephGateway.run(CephGateway.tell(c, ["client", "evict", "id=\(s.id)"]), timeout: c.cephTimeout)
            }
            return list.count
        }
        return CephEvictRequest.Answer(host: host, evicted: evicted).encoded()
    }

    /// gethostname(2), the name FSAL CEPH puts in its sessions' `client_metadata.hostname`
    /// (not `AgentMain.hostName()`, Foundation's resolved name, which may be the FQDN).
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        return gethostname(&buffer, buffer.count) == 0 ? CephGateway.text(buffer) : ""
    }
}
