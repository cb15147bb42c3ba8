import AgentProtocol
import Foundation
import Libvirt
import LibNFS
#if canImport(Glibc)
import Glibc
#endif

/// ADOPT and RESTORE. Blocking: run through `ComputeWork`.
struct Adoption: Sendable {
    let session: LibvirtSession
    let state: StateStore

    struct Outcome: Sendable {
        var changed: Bool
        var moved: [(target: String, from: String, to: String)]
        var saved: String?
    }

    static func savedName(_ uuid: String) -> String { uuid + ".previous.xml" }

    /// Points each local file disk of the shut-off, persistent `domain` at its copy on
    /// `share` (mount: a file under the pool's target; libnfs: an NFS network disk),
    /// after checking that every copy exists with the original's size. The definition it
    /// replaces is kept in the state dir for RESTORE. Idempotent: a domain whose disks
    /// are all on the share is left alone (`changed=no`).
    func adopt(domain name: String, share: Share) throws(AgentError) -> Outcome {
        let plan = try CopyPlan.make(session, domain: name, share: share, requireShutOff: "ADOPT")
        guard plan.persistent else {
            throw AgentError(.invalidState, "\(name) is transient; ADOPT redefines persistent domains only (virsh define it first)")
        }
        guard !plan.disks.isEmpty else { return Outcome(changed: false, moved: [], saved: nil) }
        var placements: [String: DomainDefinition.Placement] = [:]
        var moved: [(String, String, String)] = []
        for disk in plan.disks {
            let size = try Self.sharedSize(share, disk.relativePath)
            guard let size else {
                throw AgentError(.invalidState, "the shared copy of disk \(disk.target) (\(disk.relativePath) on \(share.server):\(share.export)) does not exist; run COPY domain=\(name) first")
            }
            guard size == disk.size else {
                throw AgentError(.invalidState, "the shared copy of disk \(disk.target) (\(disk.relativePath)) has \(size) bytes, the original \(disk.size); run COPY domain=\(name) again")
            }
            switch share.attach {
            case .mount:
                let path = share.target! + "/" + disk.relativePath
                placements[disk.target] = .file(path: path)
                moved.append((disk.target, disk.source, path))
            case .libnfs:
                let nfsName = share.export + "/" + disk.relativePath
                placements[disk.target] = .nfs(server: share.server, name: nfsName)
                moved.append((disk.target, disk.source, "nfs://\(share.server)\(nfsName)"))
            }
        }
        let domain = try session.domain(name)
        let previous = try lv { try domain.xmlDesc(flags: [.inactive, .secure]) }
        let rewritten = try DomainDefinition.rewrite(previous, placements: placements)
        let identity = try DomainDefinition.identity(previous)
        // The first ADOPT's saved definition is the original (local disks); a later ADOPT
        // (another share, a disk added since) must not replace it with an adopted one:
        // it stays until RESTORE or LOCALIZE uses it up.
        if try state.read("domains", Self.savedName(identity.uuid)) == nil {
            try state.write("domains", Self.savedName(identity.uuid), Data(previous.utf8))
        }
        let c = try session.connection()
        _ = try lv { try c.defineXML(rewritten) }
        return Outcome(changed: true, moved: moved, saved: state.path("domains", Self.savedName(identity.uuid)))
    }

    /// Size of the copy on the share, or nil when it does not exist.
    static func sharedSize(_ share: Share, _ relative: String) throws(AgentError) -> UInt64? {
        switch share.attach {
        case .mount:
            var st = stat()
            let path = share.target! + "/" + relative
            if stat(path, &st) != 0 {
                if errno == ENOENT { return nil }
                throw AgentError(.unavailable, "cannot stat \(path): \(String(cString: strerror(errno))); is pool \(share.pool ?? "") active (mounted)?")
            }
            return UInt64(st.st_size)
        case .libnfs:
            return try SharedFiles.withNFS(share) { nfs throws(AgentError) -> UInt64? in
                do { return try nfs.stat("/" + relative).size } catch let e as NFSError where e.code == ENOENT {
                    return nil
                } catch {
                    throw AgentError(.unavailable, "cannot stat \(relative) on \(share.server):\(share.export): \(error)")
                }
            }
        }
    }

    /// Puts back the definition ADOPT replaced, then forgets it. Idempotent: nothing
    /// saved answers `changed=no`.
    func restore(domain name: String) throws(AgentError) -> (changed: Bool, restoredFrom: String?) {
        let domain = try session.domain(name)
        let (s, uuid) = try lv { (try domain.state, try domain.uuidString) }
        guard s == .shutoff else {
            throw AgentError(.invalidState, "\(name) is \(s) (\(s.wire)); RESTORE needs it shut off: shut it down first (virsh shutdown \(name))",
                             details: ["state": s.wire.rawValue])
        }
        let file = Self.savedName(uuid.lowercased())
        guard let data = try state.read("domains", file) else { return (false, nil) }
        let xml = String(decoding: data, as: UTF8.self)
        let identity = try DomainDefinition.identity(xml)
        guard identity.uuid == uuid.lowercased(), identity.name == name else {
            throw AgentError(.conflict, "the saved definition \(state.path("domains", file)) is for \(identity.name) (\(identity.uuid)), not \(name); it was left alone")
        }
        let c = try session.connection()
        _ = try lv { try c.defineXML(xml) }
        state.remove("domains", file)
        return (true, state.path("domains", file))
    }
}

/// Reading and writing files on the share, through the mount (mount mode) or libnfs.
enum SharedFiles {
    /// Runs `body` with a libnfs context mounted on the share (NFSv3, as root). Blocking;
    /// the context lives and dies inside this call (one thread).
    static func withNFS<T>(_ share: Share, _ body: (NFSContext) throws(AgentError) -> T) throws(AgentError) -> T {
        let nfs: NFSContext
        do {
            nfs = try NFSContext()
            nfs.setUID(0)
            nfs.setGID(0)
            nfs.setTimeout(milliseconds: 10_000)
            try nfs.setVersion(3)
            try nfs.mount(server: share.server, export: share.export)
        } catch {
            throw AgentError(.unavailable, "cannot mount \(share.server):\(share.export) through libnfs: \(error)")
        }
        return try body(nfs)
    }
}
