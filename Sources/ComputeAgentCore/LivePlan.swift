import AgentProtocol
import Foundation
import FoundationXML
import SafeFiles

// LIVE-COPY and LIVE-LOCALIZE (docs/protocol.md, "Live copy"): which disks of a running
// domain a live copy moves, where to, and the `<disk>` XML libvirt's block copy gets.
// Everything here is pure; LiveCopyPreparation does the blocking checks.

/// Where a live copy puts one disk (or where a disk is already).
enum LiveDestination: Sendable, Codable, Equatable, Hashable {
    /// A file on this host: under the pool's target (mount mode) or a new local image.
    case file(path: String)
    /// An NFS network disk QEMU reaches through libnfs: `name` is `/EXPORT/REL`.
    case nfs(server: String, name: String)

    /// How answers spell it: the path, or `nfs://SERVER/NAME`.
    var spelled: String {
        switch self {
        case .file(let path): return path
        case .nfs(let server, let name): return "nfs://\(server)\(name)"
        }
    }

    /// The same place in the terms of ``DomainDefinition/rewrite(_:placements:)``.
    var placement: DomainDefinition.Placement {
        switch self {
        case .file(let path): return .file(path: path)
        case .nfs(let server, let name): return .nfs(server: server, name: name)
        }
    }

    /// Whether the disk (as parsed from a definition) uses this image.
    func isSource(of disk: DomainDisk) -> Bool {
        switch self {
        case .file(let path):
            return (disk.type == "file" || disk.type == "block") && disk.source == path
        case .nfs(let server, let name):
            return disk.type == "network" && disk.networkProtocol == "nfs" && disk.networkName == name
                && (disk.networkHosts.first ?? server) == server
        }
    }
}

/// One disk of a live copy.
struct LiveDisk: Sendable, Codable, Equatable {
    /// `vda`.
    var target: String
    /// The image the domain uses when planned, spelled as ``LiveDestination/spelled``.
    var from: String
    /// Where the copy goes (for an `already` disk: where it is).
    var to: LiveDestination
    /// Relative to the export: the copy on the share (LIVE-COPY) or the image the disk
    /// leaves (LIVE-LOCALIZE).
    var path: String
    /// `qcow2` or `raw` (the destination is made in the source's format).
    var format: String
    /// On the destination already: nothing to do.
    var already: Bool
    /// A block copy of this disk to `to` runs already (an earlier agent started it): it
    /// is joined, never started twice.
    var join: Bool
}

/// A mirror (`<mirror>`) libvirt shows in the live XML of a disk with a block job.
struct LiveMirror: Sendable, Equatable {
    /// `copy` for a block copy, `active-commit` for a commit.
    var job: String
    /// `yes` once QEMU reported the mirror synchronised.
    var ready: Bool
    /// Where it copies to, when it is a file or an NFS network image.
    var destination: LiveDestination?
}

/// The disks a live copy moves and the ones it leaves alone. Pure.
struct LivePlan: Sendable {
    var domain: String
    var uuid: String
    var disks: [LiveDisk]
    /// Disks left alone, with the reason (`network`, `cdrom`, ...).
    var skipped: [(target: String, source: String, reason: String)]

    /// Disks with something to do.
    var moving: [LiveDisk] { disks.filter { !$0.already } }
}

enum LiveCopyPlanning {
    static let formats: Set<String> = ["qcow2", "raw"]

    /// The `<mirror>` of each disk (by target dev) in a live domain XML.
    static func mirrors(_ xml: String) throws(AgentError) -> [String: LiveMirror] {
        let document = try SafeXML.document(xml, what: "the domain XML from libvirt")
        guard let root = document.rootElement(), root.name == "domain" else {
            throw AgentError(.internal, "the domain XML from libvirt has no <domain> root")
        }
        var result: [String: LiveMirror] = [:]
        for disk in root.child("devices")?.children(named: "disk") ?? [] {
            guard let dev = disk.child("target")?.attr("dev"), let m = disk.child("mirror") else { continue }
            let source = m.child("source")
            var destination: LiveDestination?
            switch m.attr("type") ?? "file" {
            case "file":
                if let f = m.attr("file") ?? source?.attr("file") { destination = .file(path: f) }
            case "network":
                if source?.attr("protocol") == "nfs", let name = source?.attr("name"), let host = source?.child("host")?.attr("name") {
                    destination = .nfs(server: host, name: name)
                }
            default: break
            }
            result[dev] = LiveMirror(job: m.attr("job") ?? "copy", ready: m.attr("ready") == "yes", destination: destination)
        }
        return result
    }

    /// Refuses what no live copy does: a domain that is not running, a transient one.
    static func requireRunningPersistent(domain: String, running: Bool, persistent: Bool, verb: String, offline: String) throws(AgentError) {
        guard running else {
            throw AgentError(.invalidState, "\(domain) is not running; \(verb) moves the disks of a running domain: for a shut-off domain use \(offline)")
        }
        guard persistent else {
            throw AgentError(.invalidState, "\(domain) is transient; \(verb) moves the disks of persistent domains only (the definition must name the new images): virsh define it first")
        }
    }

    /// A disk with a block job: joined when it is our copy to `to`, else `conflict`.
    static func join(_ mirror: LiveMirror?, disk: String, domain: String, to: LiveDestination) throws(AgentError) -> Bool {
        guard let mirror else { return false }
        if mirror.job == "copy", mirror.destination == to { return true }
        let what = mirror.destination.map { "a \(mirror.job) to \($0.spelled)" } ?? "a \(mirror.job) job"
        throw AgentError(.conflict, "disk \(disk) of \(domain) has a block job running (\(what)), not the live copy to \(to.spelled); wait for it to end or end it (virsh blockjob \(domain) \(disk) --abort), then ask again",
                         details: ["disk": disk])
    }

    /// LIVE-COPY: every local file disk of the running, persistent domain (live XML
    /// `xml`) goes to `<share directory>/FILE` on `share`. Pure.
    static func copy(_ xml: String, domain: String, uuid: String, running: Bool, persistent: Bool, share: Share) throws(AgentError) -> LivePlan {
        try requireRunningPersistent(domain: domain, running: running, persistent: persistent, verb: "LIVE-COPY",
                                     offline: "COPY and ADOPT (storagectl share --offline)")
        let mirrors = try mirrors(xml)
        let dir = Validation.shareDirectory(domain: domain, uuid: uuid.lowercased())
        var plan = LivePlan(domain: domain, uuid: uuid.lowercased(), disks: [], skipped: [])
        var names = Set<String>()
        for disk in try DomainDefinition.disks(xml) {
            let source = disk.source ?? ""
            if disk.device != "disk" { plan.skipped.append((disk.target, source, disk.device)); continue }
            let format = disk.format ?? "raw"
            // On the share already (an earlier run pivoted it).
            if let here = onShare(disk, share: share) {
                plan.disks.append(LiveDisk(target: disk.target, from: here.1.spelled, to: here.1, path: here.0, format: format,
                                           already: true, join: false))
                continue
            }
            if disk.type == "network" { plan.skipped.append((disk.target, source, "network")); continue }
            if disk.type == "block" {
                throw AgentError(.invalidState, "disk \(disk.target) of \(domain) is the block device \(source); LIVE-COPY copies file images only: convert it to a qcow2 file first and point the domain at it")
            }
            guard disk.type == "file", let path = disk.source else {
                throw AgentError(.invalidState, "disk \(disk.target) of \(domain) is a \(disk.type) disk; LIVE-COPY copies file images only")
            }
            guard formats.contains(format) else {
                throw AgentError(.invalidState, "disk \(disk.target) of \(domain) (\(path)) is in format \(format); LIVE-COPY copies qcow2 and raw images only")
            }
            if !disk.backingStore.isEmpty {
                throw AgentError(.invalidState, "disk \(disk.target) of \(domain) (\(path)) has a backing chain (\(disk.backingStore.joined(separator: " <- "))); storagectl copies single images only: flatten it first (virsh blockpull \(domain) \(disk.target) --wait)")
            }
            let base = (path as NSString).lastPathComponent
            let file = (try? Validation.relativePath(base)) ?? "\(disk.target).img"
            guard names.insert(file).inserted else {
                throw AgentError(.invalidState, "two disks of \(domain) are called \(file); their copies would collide in \(dir)/ on the share: rename one image first")
            }
            let relative = "\(dir)/\(file)"
            let to: LiveDestination
            switch share.attach {
            case .mount: to = .file(path: (share.target ?? "") + "/" + relative)
            case .libnfs: to = .nfs(server: share.server, name: share.export + "/" + relative)
            }
            let join = try join(mirrors[disk.target], disk: disk.target, domain: domain, to: to)
            plan.disks.append(LiveDisk(target: disk.target, from: path, to: to, path: relative, format: format, already: false, join: join))
        }
        // A disk on the share with a block job: someone copies it elsewhere (a LIVE-LOCALIZE).
        for disk in plan.disks where disk.already {
            if let m = mirrors[disk.target] {
                let what = m.destination.map { "a \(m.job) to \($0.spelled)" } ?? "a \(m.job) job"
                throw AgentError(.conflict, "disk \(disk.target) of \(domain) is on the share and has a block job running (\(what)); wait for it to end or end it (LIVE-ABORT domain=\(domain), or virsh blockjob \(domain) \(disk.target) --abort), then ask again",
                                 details: ["disk": disk.target])
            }
        }
        return plan
    }

    /// (path relative to the export, where it is) of a disk that is on `share`, or nil.
    static func onShare(_ disk: DomainDisk, share: Share) -> (String, LiveDestination)? {
        if disk.type == "file", let path = disk.source, share.attach == .mount, let target = share.target,
           let below = RootedPath.components(of: path, under: target), !below.isEmpty {
            return (below.joined(separator: "/"), .file(path: path))
        }
        if disk.type == "network", disk.networkProtocol == "nfs", let name = disk.networkName, disk.networkHosts.first == share.server,
           let below = RootedPath.components(of: name, under: share.export), !below.isEmpty {
            return (below.joined(separator: "/"), .nfs(server: share.server, name: name))
        }
        return nil
    }

    /// LIVE-LOCALIZE: every disk of the running, persistent domain that is on `share`
    /// goes to `DIR/<domain dir>/FILE` (``Localization/plan(_:share:dir:domain:uuid:)``). Pure.
    static func localize(_ xml: String, domain: String, uuid: String, running: Bool, persistent: Bool, share: Share, dir: String) throws(AgentError) -> LivePlan {
        let planned = try Localization.plan(xml, share: share, dir: dir, domain: domain, uuid: uuid)
        var plan = LivePlan(domain: domain, uuid: uuid.lowercased(), disks: [], skipped: [])
        guard !planned.isEmpty else { return plan }
        try requireRunningPersistent(domain: domain, running: running, persistent: persistent, verb: "LIVE-LOCALIZE",
                                     offline: "LOCALIZE (storagectl unshare --offline)")
        let mirrors = try mirrors(xml)
        let disks = Dictionary(try DomainDefinition.disks(xml).map { ($0.target, $0) }, uniquingKeysWith: { a, _ in a })
        for p in planned {
            guard let disk = disks[p.target], let here = onShare(disk, share: share) else { continue }
            let format = disk.format ?? "raw"
            guard formats.contains(format) else {
                throw AgentError(.invalidState, "disk \(p.target) of \(domain) (\(p.from)) is in format \(format); LIVE-LOCALIZE copies qcow2 and raw images only")
            }
            var to = LiveDestination.file(path: p.to)
            // A mirror of ours may go to another free name of the same file (an earlier
            // run found FILE taken: ``localName(_:_:)``): joined as well.
            if let m = mirrors[p.target], m.job == "copy", case .file(let mpath)? = m.destination, isLocalName(mpath, of: p.to) {
                to = .file(path: mpath)
            }
            let join = try join(mirrors[p.target], disk: p.target, domain: domain, to: to)
            plan.disks.append(LiveDisk(target: p.target, from: p.from, to: to, path: here.0, format: format, already: false, join: join))
        }
        return plan
    }

    /// The `n`th name LIVE-LOCALIZE tries for a local file when `path` is taken (an
    /// image kept from an earlier round trip, or another domain's disk: never
    /// overwritten): `DIR/STEM-N.EXT` (`n` >= 2), or `path` itself for `n` = 1. Pure.
    static func localName(_ path: String, _ n: Int) -> String {
        guard n > 1 else { return path }
        let dir = (path as NSString).deletingLastPathComponent, file = (path as NSString).lastPathComponent
        let ext = (file as NSString).pathExtension
        let stem = ext.isEmpty ? file : (file as NSString).deletingPathExtension
        return dir + "/" + stem + "-\(n)" + (ext.isEmpty ? "" : "." + ext)
    }

    /// Whether `candidate` is one of ``localName(_:_:)``'s names for `path`. Pure.
    static func isLocalName(_ candidate: String, of path: String) -> Bool {
        (1...localNameLimit).contains { localName(path, $0) == candidate }
    }

    /// How many names LIVE-LOCALIZE tries before it gives up with `conflict`.
    static let localNameLimit = 99

    /// The `<disk>` element libvirt's block copy gets for `to`, built with the XML
    /// library (values escaped): a file, or an NFS network disk with root's identity.
    static func destinationXML(_ to: LiveDestination, format: String) -> String {
        let driver = XMLElement.make("driver", [("name", "qemu"), ("type", format)])
        let disk: XMLElement
        switch to {
        case .file(let path):
            disk = XMLElement.make("disk", [("type", "file"), ("device", "disk")], children: [
                driver, XMLElement.make("source", [("file", path)]),
            ])
        case .nfs(let server, let name):
            disk = XMLElement.make("disk", [("type", "network"), ("device", "disk")], children: [
                driver,
                XMLElement.make("source", [("protocol", "nfs"), ("name", name)], children: [
                    XMLElement.make("host", [("name", server)]),
                    XMLElement.make("identity", [("user", "root"), ("group", "root")]),
                ]),
            ])
        }
        return disk.xmlString
    }

    /// Whether the definition `xml` (persistent or live) has `disk` on `to` (nil: no
    /// such disk).
    static func definitionNames(_ xml: String, disk: String, _ to: LiveDestination) throws(AgentError) -> Bool? {
        guard let d = try DomainDefinition.disks(xml).first(where: { $0.target == disk }) else { return nil }
        return to.isSource(of: d)
    }

    /// The domains (and `this` for other disks of the domain itself) whose disks use
    /// `destination`: (owner, disk XML) pairs are what ``LiveCopyPreparation`` read.
    static func users(of destination: LiveDestination, among definitions: [(owner: String, disks: [DomainDisk])]) -> [String] {
        var owners: [String] = []
        for (owner, disks) in definitions {
            let uses = disks.contains { d in
                if destination.isSource(of: d) { return true }
                if case .file(let path) = destination { return d.backingStore.contains(path) }
                return false
            }
            if uses, !owners.contains(owner) { owners.append(owner) }
        }
        return owners
    }
}
