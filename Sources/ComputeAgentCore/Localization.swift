import AgentAPI
import AgentProtocol
import Foundation
import ImageCopy
import SafeFiles
import Libvirt
import LibNFS
#if canImport(Glibc)
import Glibc
#endif

/// LOCALIZE: the way back from the share. Plans which disks of a shut-off domain live
/// on the share and where their local copies go (`DIR/<domain dir>/<file name>`, a
/// directory of the domain's own, so two domains' `disk.qcow2` never meet); the copies are a
/// job of `CopyJobs` made by the copy engine (`ImageCopier.copyToLocal`: holes kept,
/// content digest of what was read compared with the written file, renamed only when
/// verified); then the domain is redefined onto the local files. Blocking: run
/// `prepare` and `redefine` through `ComputeWork`.
struct Localization: Sendable {
    let session: LibvirtSession
    let state: StateStore
    /// `--images-root`: `dir` is opened from it without following a symbolic link.
    var imagesRoot: String = "/var/lib/libvirt/images"

    /// One disk that is on the share, and where its local copy goes.
    struct Planned: Sendable {
        var target: String
        /// As the domain names it: a file path (mount) or `nfs://SERVER/NAME`.
        var from: String
        enum Source: Sendable { case file(String), nfs(relative: String) }
        var source: Source
        var to: String
    }

    typealias Moved = LocalizeJobRecord.Moved

    /// The disks of `xml` that are on `share`: files under the pool's target (mount
    /// mode) or NFS network disks of the share's server and export. Pure.
    static func plan(_ xml: String, share: Share, dir: String, domain: String, uuid: String) throws(AgentError) -> [Planned] {
        let own = dir + "/" + Validation.shareDirectory(domain: domain, uuid: uuid.lowercased())
        var planned: [Planned] = []
        var names = Set<String>()
        for disk in try DomainDefinition.disks(xml) where disk.device == "disk" {
            var relative: String?
            var source: Planned.Source?
            var from = disk.source ?? ""
            if disk.type == "file", let path = disk.source, let target = share.target, share.attach == .mount,
               let below = RootedPath.components(of: path, under: target), !below.isEmpty {
                relative = below.joined(separator: "/")
                source = .file(path)
            } else if disk.type == "network", disk.networkProtocol == "nfs", let name = disk.networkName,
                      disk.networkHosts.first == share.server,
                      let below = RootedPath.components(of: name, under: share.export), !below.isEmpty {
                let rel = below.joined(separator: "/")
                relative = rel
                source = .nfs(relative: rel)
                from = "nfs://\(share.server)\(name)"
            }
            guard let relative, let source else { continue }
            guard (try? Validation.relativePath(relative)) != nil else {
                throw AgentError(.invalidState, "disk \(disk.target) of \(domain) is \(from), a path LOCALIZE does not handle (only A-Z a-z 0-9 . _ + ~ @ - and '/'); copy it by hand")
            }
            let file = (relative as NSString).lastPathComponent
            guard names.insert(file).inserted else {
                throw AgentError(.invalidState, "two disks of \(domain) on the share are called \(file); their local copies would collide in \(dir): rename one image first")
            }
            planned.append(Planned(target: disk.target, from: from, source: source, to: own + "/" + file))
        }
        return planned
    }

    /// Reads the domain, refuses what LOCALIZE cannot do (not shut off, transient, no
    /// such `dir`), and sizes each disk on the share. nil when no disk of the domain is
    /// on the share (LOCALIZE answers `disks=0 changed=no`: it is idempotent).
    func prepare(domain name: String, share: Share, dir: String) throws(AgentError) -> LocalizePlan? {
        let domain = try session.domain(name)
        let (s, persistent, uuid, xml) = try lv { () throws -> (DomainState, Bool, String, String) in
            let s = try domain.state
            return (s, try domain.isPersistent, try domain.uuidString, try domain.xmlDesc(flags: s == .shutoff ? [.inactive, .secure] : [.secure]))
        }
        let planned = try Self.plan(xml, share: share, dir: dir, domain: name, uuid: uuid)
        guard !planned.isEmpty else { return nil }
        guard s == .shutoff else {
            throw AgentError(.invalidState, "\(name) is \(s) (\(s.wire)); LOCALIZE needs it shut off: shut it down first (virsh shutdown \(name)), or wait until it has stopped",
                             details: ["state": s.wire.rawValue])
        }
        guard persistent else {
            throw AgentError(.invalidState, "\(name) is transient; LOCALIZE redefines persistent domains only")
        }
        // A path another disk of this host uses is never a target (the copy would
        // become that disk): refused before anything is written.
        let targets = Set(planned.map(\.to))
        for (user, path) in try Self.diskPaths(session, except: uuid.lowercased(), xml: xml, moving: Set(planned.map(\.target)))
        where targets.contains(path) {
            throw AgentError(.conflict, "\(path), where LOCALIZE would put a disk of \(name), is a disk of \(user); it is never overwritten: move that disk or give another dir=",
                             details: ["domain": user])
        }
        let own = try Self.domainDirectory(dir, under: imagesRoot, name: (planned[0].to as NSString).deletingLastPathComponent)
        defer { close(own) }
        var disks: [LocalizePlan.Disk] = []
        var needed: UInt64 = 0
        for p in planned {
            let source: ShareSource
            switch p.source {
            case .file(let path): source = .mounted(path: path, root: share.target ?? "/")
            case .nfs(let relative): source = .nfs(share.nfsTarget, relativePath: relative)
            }
            let (size, allocated) = try Self.size(of: p, share: share)
            disks.append(.init(target: p.target, from: p.from, to: p.to, size: size, source: source))
            needed = needed.addingReportingOverflow(min(size, allocated)).overflow ? .max : needed + min(size, allocated)
        }
        var fs = statvfs()
        if fstatvfs(own, &fs) == 0 {
            let (free, overflow) = UInt64(fs.f_bavail).multipliedReportingOverflow(by: UInt64(fs.f_frsize))
            try Self.requireSpace(needed: needed, free: overflow ? .max : free, dir: dir)
        }
        return LocalizePlan(domain: name, uuid: uuid.lowercased(), share: share, dir: dir, disks: disks)
    }

    /// Refuses a copy of `needed` bytes (the shared images' allocated bytes) into a file
    /// system with `free` bytes available. Pure.
    static func requireSpace(needed: UInt64, free: UInt64, dir: String) throws(AgentError) {
        guard needed <= free else {
            throw AgentError(.invalidState, "the local copies need \(needed) bytes and the file system of \(dir) has \(free) bytes free; free some space (or give another dir=) and run LOCALIZE again")
        }
    }

    /// Opens `dir` from `root` without following a symbolic link, creates the domain's
    /// own directory `own` in it (mode 0755) when it is missing, and returns it open.
    /// Blocking.
    static func domainDirectory(_ dir: String, under root: String, name own: String) throws(AgentError) -> Int32 {
        let parent: Int32
        do { parent = try RootedPath.openDirectory(dir, under: root) } catch {
            throw AgentError(.invalidState, "\(dir) is not a directory on this host reached without symbolic links (\(error.description)); create it or give another dir=")
        }
        defer { close(parent) }
        let leaf = (own as NSString).lastPathComponent
        if mkdirat(parent, leaf, 0o755) == 0 {
            _ = fchmodat(parent, leaf, 0o755, 0)   // exactly 0755, whatever the umask
        } else if errno != EEXIST {
            throw AgentError(.unavailable, "cannot create \(own): \(String(cString: strerror(errno)))")
        }
        let fd = openat(parent, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw AgentError(.invalidState, "\(own) is not a directory (a symbolic link or a file is there: \(String(cString: strerror(errno)))); move it away and run LOCALIZE again")
        }
        return fd
    }

    /// (domain name, path) of every file a disk of this host's domains uses (sources
    /// and libvirt's backing chains), except the disks `moving` of the domain `except`
    /// (whose definition is `xml`). Blocking.
    static func diskPaths(_ session: LibvirtSession, except uuid: String, xml: String, moving: Set<String>) throws(AgentError) -> [(String, String)] {
        var result: [(String, String)] = []
        func add(_ owner: String, _ disks: [DomainDisk], skip: Set<String>) {
            for d in disks where !skip.contains(d.target) {
                if d.type == "file" || d.type == "block", let s = d.source { result.append((owner, s)) }
                for b in d.backingStore { result.append((owner, b)) }
            }
        }
        let c = try session.connection()
        let others = try lv { () throws -> [(String, String)] in
            try c.listAllDomains().compactMap { d -> (String, String)? in
                guard try d.uuidString.lowercased() != uuid else { return nil }
                let s = try d.state
                // Both definitions of a running persistent domain count.
                return (try d.name, try d.xmlDesc(flags: s == .shutoff ? [.inactive] : []))
            }
        }
        for (owner, other) in others { add(owner, try DomainDefinition.disks(other), skip: []) }
        add("this domain (another disk)", try DomainDefinition.disks(xml), skip: moving)
        return result
    }

    /// Defines `name` onto the verified local copies: from the definition ADOPT saved
    /// when there is one (its disks set to the copies; the saved file is then removed),
    /// else from the current one. Returns the saved definition's path when it was used.
    func redefine(domain name: String, moved: [Moved], dir: String) throws(AgentError) -> String? {
        let domain = try session.domain(name)
        let (uuid, xml) = try lv { () throws -> (String, String) in (try domain.uuidString, try domain.xmlDesc(flags: [.inactive, .secure])) }
        var placements: [String: DomainDefinition.Placement] = [:]
        for m in moved { placements[m.target] = .file(path: m.to) }
        let file = Adoption.savedName(uuid.lowercased())
        var base = xml
        var restoredFrom: String?
        if let data = try state.read("domains", file) {
            let saved = String(decoding: data, as: UTF8.self)
            let identity = try DomainDefinition.identity(saved)
            guard identity.uuid == uuid.lowercased(), identity.name == name else {
                throw AgentError(.conflict, "the saved definition \(state.path("domains", file)) is for \(identity.name) (\(identity.uuid)), not \(name); it was left alone (the local copies are in \(dir))")
            }
            let savedDisks = Set(try DomainDefinition.disks(saved).map(\.target))
            if Set(placements.keys).isSubset(of: savedDisks) {
                base = saved
                restoredFrom = state.path("domains", file)
            }
        }
        let rewritten = try DomainDefinition.rewrite(base, placements: placements)
        let c = try session.connection()
        _ = try lv { try c.defineXML(rewritten) }
        if restoredFrom != nil { state.remove("domains", file) }
        return restoredFrom
    }

    /// (logical size, allocated bytes) of a disk on the share.
    static func size(of p: Planned, share: Share) throws(AgentError) -> (UInt64, UInt64) {
        switch p.source {
        case .file(let path):
            var st = stat()
            guard stat(path, &st) == 0 else {
                let e = errno
                throw AgentError(e == ENOENT ? .notFound : .unavailable, "cannot stat \(path) (disk \(p.target)): \(String(cString: strerror(e))); is the pool active (mounted)?")
            }
            let (allocated, overflow) = UInt64(max(0, st.st_blocks)).multipliedReportingOverflow(by: 512)
            return (UInt64(st.st_size), overflow ? .max : allocated)
        case .nfs(let relative):
            return try SharedFiles.withNFS(share) { nfs throws(AgentError) -> (UInt64, UInt64) in
                do { let st = try nfs.stat("/" + relative); return (st.size, st.used) } catch {
                    throw AgentError(.unavailable, "cannot stat \(relative) on \(share.server):\(share.export) (disk \(p.target)): \(error)")
                }
            }
        }
    }
}

/// What a LOCALIZE job copies: the disks of one domain on the share, and where to.
struct LocalizePlan: Sendable {
    struct Disk: Sendable {
        var target: String
        var from: String
        var to: String
        /// Logical size when planned (the progress total).
        var size: UInt64
        var source: ShareSource
    }
    var domain: String
    var uuid: String
    var share: Share
    var dir: String
    var disks: [Disk]
}

/// The persisted record of a domain's last LOCALIZE (`jobs/<uuid>.localize.json`). A
/// record still `running` when an agent starts means that agent was interrupted: the
/// next LOCALIZE starts the job again (`restarted=yes`).
struct LocalizeJobRecord: Sendable, Codable, Equatable {
    enum Phase: String, Sendable, Codable { case running, done, failed }
    struct Moved: Sendable, Codable, Equatable {
        var target: String
        var from: String
        var to: String
        var size: UInt64
        /// The content digest of the local copy (lowercase hex).
        var digest: String
    }
    var domain: String
    var uuid: String
    var share: Share
    var dir: String
    /// Disk targets planned, in order.
    var disks: [String]
    var phase: Phase
    var moved: [Moved]
    var restoredFrom: String?
    var errorCode: String?
    var errorMessage: String?
    var started: Date
    var finished: Date?
    var attempts: Int

    init(domain: String, uuid: String, share: Share, dir: String, disks: [LocalizePlan.Disk], phase: Phase, moved: [Moved],
         restoredFrom: String?, errorCode: String?, errorMessage: String?, started: Date, finished: Date?, attempts: Int) {
        self.domain = domain
        self.uuid = uuid
        self.share = share
        self.dir = dir
        self.disks = disks.map(\.target)
        self.phase = phase
        self.moved = moved
        self.restoredFrom = restoredFrom
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.started = started
        self.finished = finished
        self.attempts = attempts
    }

    /// The last `PROGRESS` of a finished job (`done` = `total`), sent before its `DATA`.
    var finalProgress: TransferProgress? {
        guard let last = moved.last else { return nil }
        let total = moved.reduce(UInt64(0)) { $0 + $1.size }
        let elapsed = (finished ?? started).timeIntervalSince(started)
        return TransferProgress(done: total, total: total, rate: elapsed > 0 ? UInt64(Double(total) / elapsed) : 0, disk: last.target)
    }

    /// The disks the job copied (one `DATA` line each), or its error.
    func images() throws(AgentError) -> [LocalizedImage] {
        switch phase {
        case .done:
            return moved.map { LocalizedImage(disk: $0.target, from: $0.from, to: $0.to, size: $0.size, digest: $0.digest) }
        case .failed:
            let code = errorCode.flatMap(AgentError.Code.init(rawValue:)) ?? .internal
            throw AgentError(code, errorMessage ?? "LOCALIZE failed", details: ["domain": domain])
        case .running:
            throw AgentError(.internal, "the LOCALIZE of \(domain) has not finished")
        }
    }
}

/// `DOMAINS`: every domain of this host (persistent or running) and whether a disk of
/// it is on shared storage. Blocking.
enum DomainListing {
    struct Entry: Sendable { var name: String; var state: String; var persistent: Bool; var shared: Bool }

    static func list(_ session: LibvirtSession) throws(AgentError) -> [Entry] {
        let c = try session.connection()
        let targets = try lv { () throws -> [String] in
            try c.listAllStoragePools().compactMap { pool -> String? in
                let xml = try (try? pool.xmlDesc(inactive: true)) ?? pool.xmlDesc()
                let p = try ExistingPool(xml: xml)
                guard p.type == "netfs", let t = p.target else { return nil }
                return p.normalised(t)
            }
        }
        return try lv { () throws -> [Entry] in
            try c.listAllDomains().compactMap { d -> Entry? in
                let s = try d.state
                let persistent = try d.isPersistent
                guard persistent || s != .shutoff else { return nil }
                let xml = try d.xmlDesc(flags: s == .shutoff ? [.inactive] : [])
                let shared = try DomainDefinition.disks(xml).contains { disk in
                    if disk.type == "network" { return disk.networkProtocol == "nfs" }
                    guard disk.type == "file", let src = disk.source else { return false }
                    return targets.contains { Validation.isWithin(src, root: $0) && src != $0 }
                }
                return Entry(name: try d.name, state: s.wire.rawValue, persistent: persistent, shared: shared)
            }
        }
    }
}
