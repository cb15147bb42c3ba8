import AgentAPI
import AgentProtocol
import Foundation
import ImageCopy
import Libvirt
import LibNFS

/// Where a domain's shared copies live, as this host reaches them.
public struct Share: Sendable, Equatable, Codable {
    /// The pool (or libnfs share record) name; nil for an ad-hoc `server= export=`.
    public var pool: String?
    public var server: String
    public var export: String
    public var attach: AttachMode
    /// Mount mode: the pool's target path on this host.
    public var target: String?

    /// The copy engine's view: the export over NFSv3, as root.
    var nfsTarget: NFSTarget { NFSTarget(server: server, exportPath: export) }

    /// How the answers of COPY, ADOPT and LOCALIZE name it.
    var facts: ShareFacts { ShareFacts(pool: pool, server: server, export: export, attach: attach, target: target) }
}

/// Pools: POOL-ENSURE and resolving `pool=NAME` for the other verbs. Blocking: every
/// method calls libvirt or libnfs; run them through `ComputeWork`.
struct Pools: Sendable {
    let session: LibvirtSession
    let state: StateStore
    let checkMountOptions: Bool
    /// Checks the target again after the pool is built, before it is mounted (libvirt
    /// and the kernel resolve it then): a real directory under its share root.
    var checkBuiltTarget: @Sendable (String) throws(AgentError) -> Void = { _ throws(AgentError) in }

    struct Outcome: Sendable {
        var changed: Bool
        var actions: [String]
        var active: Bool
        var autostart: Bool
    }

    /// Defines, builds, starts and autostarts the `netfs` pool of `spec` (mount mode).
    /// Idempotent: a matching pool is only started/autostarted when it is not; a pool
    /// that shares the name, the target or the source with other settings is a
    /// `conflict` naming it, and is never redefined.
    func ensureMount(_ spec: PoolSpec) throws(AgentError) -> Outcome {
        let c = try session.connection()
        if FileStatus.exists("shares", spec.name, in: state) {
            throw AgentError(.conflict, "a libnfs-mode share called '\(spec.name)' is recorded on this host (\(state.path("shares", spec.name + ".json"))); remove it or choose another pool name")
        }
        let ours = try lv { try c.listAllStoragePools() }
        var match: LibvirtStoragePool?
        for pool in ours {
            let existing = try describe(pool)
            if existing.name == spec.name {
                let d = existing.differences(from: spec, checkMountOptions: checkMountOptions)
                guard d.isEmpty else {
                    throw AgentError(.conflict, "pool '\(spec.name)' already exists with another definition (\(d.joined(separator: "; "))); storagectl never redefines a pool: remove it (virsh pool-destroy \(spec.name); virsh pool-undefine \(spec.name)) or choose another name",
                                     details: ["pool": spec.name])
                }
                match = pool
                continue
            }
            if let t = existing.target.map(existing.normalised), t == spec.target {
                throw AgentError(.conflict, "pool '\(existing.name)' already uses the target path \(t); a path can hold one pool: use that pool's name or another target",
                                 details: ["pool": existing.name])
            }
            if existing.type == "netfs", existing.hosts == [spec.server], existing.dir.map(existing.normalised) == spec.export {
                throw AgentError(.conflict, "pool '\(existing.name)' already mounts \(spec.server):\(spec.export) (at \(existing.target ?? "?")); use that pool's name, or remove it first",
                                 details: ["pool": existing.name])
            }
        }
        var actions: [String] = []
        let pool: LibvirtStoragePool
        if let match {
            pool = match
        } else {
            pool = try lv { try c.definePoolXML(spec.poolXML()) }
            actions.append("defined")
        }
        if try !lv({ try pool.isActive }) {
            // build (mkdir -p of the target) is harmless on an existing directory.
            try lv { try pool.build() }
            if match == nil { actions.append("built") }
            if let target = spec.target { try checkBuiltTarget(target) }
            try lv(.startingPool(name: spec.name, mount: "\(spec.server):\(spec.export) at \(spec.target ?? "")")) { try pool.create() }
            actions.append("started")
        }
        if try !lv({ try pool.autostart }) {
            try lv { try pool.setAutostart(true) }
            actions.append("autostarted")
        }
        return Outcome(changed: !actions.isEmpty, actions: actions, active: try lv { try pool.isActive },
                       autostart: try lv { try pool.autostart })
    }

    /// Records a libnfs-mode share (no libvirt pool, nothing mounted) after proving with
    /// libnfs that the export can be mounted by this host. Idempotent; a record or a
    /// libvirt pool of the same name with other settings is a `conflict`.
    func ensureLibNFS(_ spec: PoolSpec) throws(AgentError) -> Outcome {
        let c = try session.connection()
        for pool in try lv({ try c.listAllStoragePools() }) where try lv({ try pool.name }) == spec.name {
            throw AgentError(.conflict, "a libvirt pool called '\(spec.name)' exists on this host; a libnfs-mode share needs a name of its own (or use attach=mount)",
                             details: ["pool": spec.name])
        }
        let recorded = state.readJSON(PoolSpec.self, "shares", spec.name + ".json")
        if let recorded, recorded != spec {
            throw AgentError(.conflict, "share '\(spec.name)' is already recorded for \(recorded.server):\(recorded.export) (nfs-version \(recorded.nfsVersion)); remove \(state.path("shares", spec.name + ".json")) or choose another name",
                             details: ["pool": spec.name])
        }
        for other in state.list("shares") where other != spec.name + ".json" {
            if let s = state.readJSON(PoolSpec.self, "shares", other), s.server == spec.server, s.export == spec.export {
                throw AgentError(.conflict, "share '\(s.name)' already records \(spec.server):\(spec.export); use that name",
                                 details: ["pool": s.name])
            }
        }
        try Self.probe(server: spec.server, export: spec.export)
        if recorded == nil { try state.writeJSON(spec, "shares", spec.name + ".json") }
        return Outcome(changed: recorded == nil, actions: recorded == nil ? ["recorded"] : [], active: true, autostart: true)
    }

    /// Mounts the export through libnfs (NFSv3, as root) and stats its root. A refused
    /// MOUNT is asked again for up to `refusalGrace`: nfs-ganesha with FSAL CEPH lists an
    /// export it has just added on SIGHUP (which is how the storage agent verifies an
    /// EXPORT) some 50-100 ms before it lets clients mount it, and share probes at once
    /// (lab: the first MOUNT after EXPORT's OK got MNT3ERR_ACCES, the next one served).
    /// An export that really does not list this host fails after the grace.
    static func probe(server: String, export: String, refusalGrace: Duration = .seconds(3)) throws(AgentError) {
        let deadline = ContinuousClock.now + refusalGrace
        while true {
            do {
                let nfs = try NFSContext()
                nfs.setUID(0)
                nfs.setGID(0)
                nfs.setTimeout(milliseconds: 10_000)
                try nfs.mount(server: server, export: export)
                _ = try nfs.stat("/")
                return
            } catch let e as NFSError {
                if isRefusal(e), ContinuousClock.now < deadline {
                    usleep(100_000)
                    continue
                }
                throw AgentError(.unavailable, "cannot reach \(server):\(export) through libnfs (NFSv3): \(e.message); check that it is exported to this host")
            } catch {
                throw AgentError(.unavailable, "cannot reach \(server):\(export) through libnfs: \(error)")
            }
        }
    }

    /// A MOUNT the server refused (MNT3ERR_ACCES), as opposed to one that never got an answer.
    static func isRefusal(_ error: NFSError) -> Bool {
        error.code == EACCES || error.message.contains("MNT3ERR_ACCES")
    }

    /// The NFS servers of this host's shares: netfs pools' hosts and libnfs share records.
    func knownServers() throws(AgentError) -> Set<String> {
        let c = try session.connection()
        var servers = Set<String>()
        for pool in try lv({ try c.listAllStoragePools() }) {
            let p = try describe(pool)
            if p.type == "netfs" { servers.formUnion(p.hosts) }
        }
        for record in state.list("shares") {
            if let s = state.readJSON(PoolSpec.self, "shares", record) { servers.insert(s.server) }
        }
        return servers
    }

    /// `pool=NAME`: a libvirt netfs pool (mount mode) or a recorded libnfs share.
    func resolve(_ name: String) throws(AgentError) -> Share {
        let c = try session.connection()
        let pool: LibvirtStoragePool?
        do {
            pool = try c.lookupStoragePool(name: name)
        } catch let e as LibvirtError where e.code == .noStoragePool {
            pool = nil
        } catch {
            throw ErrorMapping.agentError(error)
        }
        if let pool {
            let p = try describe(pool)
            guard p.type == "netfs", let host = p.hosts.first, let dir = p.dir, let target = p.target else {
                throw AgentError(.invalidState, "pool '\(name)' is a \(p.type) pool, not an NFS (netfs) pool")
            }
            return Share(pool: name, server: host, export: p.normalised(dir), attach: .mount, target: p.normalised(target))
        }
        if let s = state.readJSON(PoolSpec.self, "shares", name + ".json") {
            return Share(pool: name, server: s.server, export: s.export, attach: .libnfs, target: nil)
        }
        throw AgentError(.notFound, "no pool or share called '\(name)' on this host; create it with POOL-ENSURE")
    }

    /// Whether the mount-mode pool named by the share is active (mounted).
    func isActive(_ share: Share) throws(AgentError) -> Bool {
        guard share.attach == .mount, let name = share.pool else { return true }
        let c = try session.connection()
        return try lv { try c.lookupStoragePool(name: name).isActive }
    }

    /// The netfs pool whose target path holds `path` (mount mode), or nil.
    func share(containing path: String) throws(AgentError) -> Share? {
        let c = try session.connection()
        for pool in try lv({ try c.listAllStoragePools() }) {
            let p = try describe(pool)
            guard p.type == "netfs", let target = p.target.map(p.normalised), let host = p.hosts.first, let dir = p.dir else { continue }
            if Validation.isWithin(path, root: target), path != target {
                return Share(pool: p.name, server: host, export: p.normalised(dir), attach: .mount, target: target)
            }
        }
        return nil
    }

    private func describe(_ pool: LibvirtStoragePool) throws(AgentError) -> ExistingPool {
        // The persistent definition when the driver has one (the test driver refuses
        // the INACTIVE flag).
        let xml = try lv { () throws -> String in
            if let persistent = try? pool.xmlDesc(inactive: true) { return persistent }
            return try pool.xmlDesc()
        }
        return try ExistingPool(xml: xml)
    }
}


enum FileStatus {
    static func exists(_ kind: String, _ name: String, in state: StateStore) -> Bool {
        FileManager.default.fileExists(atPath: state.path(kind, name + ".json"))
    }
}
