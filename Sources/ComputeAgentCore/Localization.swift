import AgentProtocol
import ContentDigest
import Foundation
import Libvirt
import LibNFS
#if canImport(Glibc)
import Glibc
#endif

/// LOCALIZE: the way back from the share. Copies each disk of a shut-off domain that
/// lives on the share to local storage (`DIR/<file name>`), verified by its content
/// digest (`ContentDigest`: what was read against what was written), and
/// redefines the domain onto the local files. Blocking: run through `ComputeWork`.
struct Localization: Sendable {
    let session: LibvirtSession
    let state: StateStore

    /// Bytes read and written per step of the copy loop.
    static let chunkBytes = 4 << 20

    /// One disk that is on the share, and where its local copy goes.
    struct Planned: Sendable {
        var target: String
        /// As the domain names it: a file path (mount) or `nfs://SERVER/NAME`.
        var from: String
        enum Source: Sendable { case file(String), nfs(relative: String) }
        var source: Source
        var to: String
    }

    struct Moved: Sendable, Equatable {
        var target: String
        var from: String
        var to: String
        var size: UInt64
        /// The content digest of the copy (lowercase hex).
        var digest: String
    }

    struct Outcome: Sendable {
        var changed: Bool
        var moved: [Moved]
        /// The saved pre-ADOPT definition the new one was built from, if any.
        var restoredFrom: String?
    }

    /// The disks of `xml` that are on `share`: files under the pool's target (mount
    /// mode) or NFS network disks of the share's server and export. Pure.
    static func plan(_ xml: String, share: Share, dir: String, domain: String) throws(AgentError) -> [Planned] {
        var planned: [Planned] = []
        var names = Set<String>()
        for disk in try DomainDefinition.disks(xml) where disk.device == "disk" {
            var relative: String?
            var source: Planned.Source?
            var from = disk.source ?? ""
            if disk.type == "file", let path = disk.source, let target = share.target, share.attach == .mount,
               Validation.isWithin(path, root: target), path != target {
                relative = String(path.dropFirst(target.count + 1))
                source = .file(path)
            } else if disk.type == "network", disk.networkProtocol == "nfs", let name = disk.networkName,
                      disk.networkHosts.first == share.server, Validation.isWithin(name, root: share.export), name != share.export {
                let rel = String(name.dropFirst(share.export.count + 1))
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
            planned.append(Planned(target: disk.target, from: from, source: source, to: dir + "/" + file))
        }
        return planned
    }

    /// Copies every shared disk of `name` to `dir` and redefines the domain onto the
    /// local copies. Idempotent: a domain with no disk on the share is `changed=no`.
    func localize(domain name: String, share: Share, dir: String, progress: JobProgress) throws(AgentError) -> Outcome {
        let domain = try session.domain(name)
        let (s, persistent, uuid, xml) = try lv { () throws -> (DomainState, Bool, String, String) in
            let s = try domain.state
            return (s, try domain.isPersistent, try domain.uuidString, try domain.xmlDesc(flags: s == .shutoff ? [.inactive, .secure] : [.secure]))
        }
        let planned = try Self.plan(xml, share: share, dir: dir, domain: name)
        guard !planned.isEmpty else { return Outcome(changed: false, moved: [], restoredFrom: nil) }
        guard s == .shutoff else {
            throw AgentError(.invalidState, "\(name) is \(s) (\(s.wire)); LOCALIZE needs it shut off: shut it down first (virsh shutdown \(name)), or wait until it has stopped",
                             details: ["state": s.wire.rawValue])
        }
        guard persistent else {
            throw AgentError(.invalidState, "\(name) is transient; LOCALIZE redefines persistent domains only")
        }
        var st = stat()
        guard stat(dir, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw AgentError(.invalidState, "\(dir) is not a directory on this host; create it or give another dir=")
        }

        // Sizes first, for the progress total.
        var sizes: [UInt64] = []
        for p in planned { sizes.append(try Self.size(of: p, share: share)) }
        let total = sizes.reduce(0, +)
        progress.set(.init(done: 0, total: total, rate: 0, disk: planned[0].target))
        let start = ContinuousClock.now
        var base: UInt64 = 0
        var moved: [Moved] = []
        for (p, size) in zip(planned, sizes) {
            let offset = base
            let digest = try Self.copy(p, size: size, share: share) { done in
                let elapsed = (ContinuousClock.now - start) / .seconds(1)
                let all = offset + done
                progress.set(.init(done: all, total: total, rate: elapsed > 0 ? UInt64(Double(all) / elapsed) : 0, disk: p.target))
            }
            base += size
            moved.append(Moved(target: p.target, from: p.from, to: p.to, size: size, digest: digest))
        }

        // Redefine onto the local files: from the definition ADOPT saved when there is
        // one (its disks set to the verified copies), else from the current one.
        var placements: [String: DomainDefinition.Placement] = [:]
        for m in moved { placements[m.target] = .file(path: m.to) }
        let file = Adoption.savedName(uuid.lowercased())
        var base_ = xml
        var restoredFrom: String?
        if let data = try state.read("domains", file) {
            let saved = String(decoding: data, as: UTF8.self)
            let identity = try DomainDefinition.identity(saved)
            guard identity.uuid == uuid.lowercased(), identity.name == name else {
                throw AgentError(.conflict, "the saved definition \(state.path("domains", file)) is for \(identity.name) (\(identity.uuid)), not \(name); it was left alone (the local copies are in \(dir))")
            }
            let savedDisks = Set(try DomainDefinition.disks(saved).map(\.target))
            if Set(placements.keys).isSubset(of: savedDisks) {
                base_ = saved
                restoredFrom = state.path("domains", file)
            }
        }
        let rewritten = try DomainDefinition.rewrite(base_, placements: placements)
        let c = try session.connection()
        _ = try lv { try c.defineXML(rewritten) }
        if restoredFrom != nil { state.remove("domains", file) }
        return Outcome(changed: true, moved: moved, restoredFrom: restoredFrom)
    }

    static func size(of p: Planned, share: Share) throws(AgentError) -> UInt64 {
        switch p.source {
        case .file(let path):
            var st = stat()
            guard stat(path, &st) == 0 else {
                let e = errno
                throw AgentError(e == ENOENT ? .notFound : .unavailable, "cannot stat \(path) (disk \(p.target)): \(String(cString: strerror(e))); is the pool active (mounted)?")
            }
            return UInt64(st.st_size)
        case .nfs(let relative):
            return try SharedFiles.withNFS(share) { nfs throws(AgentError) -> UInt64 in
                do { return try nfs.stat("/" + relative).size } catch {
                    throw AgentError(.unavailable, "cannot stat \(relative) on \(share.server):\(share.export) (disk \(p.target)): \(error)")
                }
            }
        }
    }

    /// Reads the shared image, writes `.NAME.storagectl-partial` beside the final name
    /// (holes stay holes), fsyncs it, re-reads it and compares its content digest with
    /// the digest of what was read, then renames it over the final name. Returns the
    /// content digest.
    static func copy(_ p: Planned, size: UInt64, share: Share, progress: (UInt64) -> Void) throws(AgentError) -> String {
        let dir = (p.to as NSString).deletingLastPathComponent
        let temp = dir + "/." + (p.to as NSString).lastPathComponent + ".storagectl-partial"
        unlink(temp)
        let out = open(temp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard out >= 0 else { throw AgentError(.unavailable, "cannot create \(temp): \(String(cString: strerror(errno)))") }
        var keep = false
        defer { close(out); if !keep { unlink(temp) } }

        var digest = ContentDigest()
        var buffer = [UInt8](repeating: 0, count: chunkBytes)
        let read: (inout [UInt8], UInt64, Int) throws(AgentError) -> Int
        var nfsHolder: (NFSContext, NFSFile)?
        var inFD: Int32 = -1
        defer { if inFD >= 0 { close(inFD) } }
        switch p.source {
        case .file(let path):
            inFD = open(path, O_RDONLY | O_CLOEXEC)
            guard inFD >= 0 else { throw AgentError(.unavailable, "cannot open \(path): \(String(cString: strerror(errno)))") }
            let fd = inFD
            var st = stat()
            if fstat(fd, &st) == 0 { _ = fchmod(out, st.st_mode & 0o7777) }
            read = { (buf: inout [UInt8], offset: UInt64, count: Int) throws(AgentError) -> Int in
                let n = buf.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) }
                guard n >= 0 else { throw AgentError(.unavailable, "reading \(path) failed: \(String(cString: strerror(errno)))") }
                return n
            }
        case .nfs(let relative):
            do {
                let nfs = try NFSContext()
                nfs.setUID(0)
                nfs.setGID(0)
                nfs.setTimeout(milliseconds: 30_000)
                try nfs.mount(server: share.server, export: share.export)
                nfsHolder = (nfs, try nfs.open("/" + relative))
                if let st = try? nfs.stat("/" + relative) { _ = fchmod(out, mode_t(st.mode & 0o7777)) }
            } catch {
                throw AgentError(.unavailable, "cannot open \(relative) on \(share.server):\(share.export) through libnfs: \(error)")
            }
            let file = nfsHolder!.1
            let limit = Int(max(65536, min(UInt64(chunkBytes), nfsHolder!.0.maxReadSize)))
            read = { (buf: inout [UInt8], offset: UInt64, count: Int) throws(AgentError) -> Int in
                do {
                    return try buf.withUnsafeMutableBytes { raw in
                        try file.pread(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<min(count, limit)]), offset: offset)
                    }
                } catch {
                    throw AgentError(.unavailable, "reading \(relative) on \(share.server):\(share.export) failed: \(error)")
                }
            }
        }

        var offset: UInt64 = 0
        while offset < size {
            let want = Int(min(UInt64(chunkBytes), size - offset))
            let n = try read(&buffer, offset, want)
            guard n > 0 else { throw AgentError(.unavailable, "\(p.from) ended at \(offset) bytes, expected \(size); it changed while being read") }
            // Holes stay holes: an all-zero range is not written (and costs the digest no hashing).
            let zero = buffer.withUnsafeBytes { ZeroBytes.isZero($0.baseAddress!, count: n) }
            if zero {
                digest.updateZeros(UInt64(n))
            } else {
                buffer.withUnsafeBytes { digest.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                var written = 0
                while written < n {
                    let w = buffer.withUnsafeBytes { Glibc.pwrite(out, $0.baseAddress! + written, n - written, off_t(offset) + off_t(written)) }
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw AgentError(.unavailable, "writing \(temp) failed: \(String(cString: strerror(errno)))")
                    }
                    written += w
                }
            }
            offset += UInt64(n)
            progress(offset)
        }
        _ = nfsHolder
        guard ftruncate(out, off_t(size)) == 0, fsync(out) == 0 else {
            throw AgentError(.unavailable, "cannot finish \(temp): \(String(cString: strerror(errno)))")
        }
        let expected = digest.finalize()

        // Re-read what was written (every byte of data; its holes read as zeros).
        let actual: String
        do throws(FileDigestError) {
            actual = try ContentDigest.ofFile(fd: out, size: size)
        } catch {
            throw AgentError(.unavailable, "re-reading \(temp) failed at \(error.offset) bytes: \(error.message)")
        }
        guard actual == expected else {
            throw AgentError(.internal, "the local copy \(temp) has digest \(actual), the shared image read \(expected); nothing was replaced")
        }
        guard rename(temp, p.to) == 0 else {
            throw AgentError(.unavailable, "cannot rename \(temp) to \(p.to): \(String(cString: strerror(errno)))")
        }
        keep = true
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
        return expected
    }
}

/// Domains with a LOCALIZE in progress (a second one for the same domain is `busy`).
final class NameLocks: @unchecked Sendable {
    // Invariant: `names` is only touched with `lock` held.
    private let lock = NSLock()
    private var names = Set<String>()
    func take(_ name: String) -> Bool { lock.withLock { names.insert(name).inserted } }
    func release(_ name: String) { _ = lock.withLock { names.remove(name) } }
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
