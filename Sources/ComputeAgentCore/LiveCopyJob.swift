import AgentAPI
import AgentProtocol
import Foundation
import Libvirt
import LibNFS
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// The persisted record of a domain's live copy (`jobs/<uuid>.live.json`): what it moves,
/// how far it got. A restarted agent does not resume from it: the next request plans
/// again from the live XML and joins a mirror it finds there.
struct LiveJobRecord: Sendable, Codable, Equatable {
    enum Kind: String, Sendable, Codable {
        case copy, localize
        /// The verb that starts a job of this kind.
        var verb: String { self == .copy ? LiveCopyRequest.verb : LiveLocalizeRequest.verb }
    }
    enum Phase: String, Sendable, Codable { case mirroring, pivoting, done, failed, aborted }
    var kind: Kind
    var domain: String
    var uuid: String
    var share: Share
    /// LIVE-LOCALIZE: the directory the local images go to.
    var dir: String?
    var disks: [LiveDisk]
    var phase: Phase
    /// Targets pivoted, in order.
    var pivoted: [String]
    /// Bytes each mirror copied (its `end` at the pivot), by target.
    var copied: [String: UInt64]
    /// Virtual size of each disk, by target.
    var virtualSizes: [String: UInt64]
    /// LIVE-COPY: the saved definition (ADOPT's); LIVE-LOCALIZE: the one it used up.
    var saved: String?
    var errorCode: String?
    var errorMessage: String?
    var started: Date
    var finished: Date?

    var verb: String { kind.verb }

    /// The answer of a finished job, or its error.
    func answer(attached: Bool) throws(AgentError) -> LiveCopyAnswer {
        switch phase {
        case .done:
            let moved = disks.map { d in
                LiveMovedDisk(disk: d.target, from: d.from, to: d.to.spelled, path: d.path, format: d.format,
                              virtualSize: virtualSizes[d.target] ?? 0, copied: copied[d.target] ?? 0, already: d.already)
            }
            return LiveCopyAnswer(moved: moved, domain: domain, share: share.facts, bytes: copied.values.reduce(0, +),
                                  changed: !pivoted.isEmpty, attached: attached, saved: kind == .copy ? saved : nil, dir: dir,
                                  seconds: finished.map { ($0.timeIntervalSince(started) * 10).rounded() / 10 })
        case .failed, .aborted:
            let code = errorCode.flatMap(AgentError.Code.init(rawValue:)) ?? .internal
            var details: Fields = ["domain": domain]
            if !pivoted.isEmpty { details.append("pivoted", pivoted.joined(separator: ",")) }
            throw AgentError(code, errorMessage ?? "the live copy failed", details: details)
        case .mirroring, .pivoting:
            throw AgentError(.internal, "the live copy of \(domain) has not finished")
        }
    }
}

/// LIVE-ABORT's handle on a running live copy: abort before the pivot phase, never in it.
final class LiveSwitch: @unchecked Sendable {
    enum AbortOutcome: Sendable, Equatable { case requested, pivoting }
    // Invariant: both flags are only touched with `lock` held; once one is set the other
    // never is.
    private let lock = NSLock()
    private var abortRequested = false
    private var pivoting = false

    /// Asks the job to cancel its mirrors; `.pivoting` when it has begun pivoting.
    func requestAbort() -> AbortOutcome {
        lock.withLock {
            if pivoting { return .pivoting }
            abortRequested = true
            return .requested
        }
    }

    /// The job enters the pivot phase, unless an abort was asked for first.
    func beginPivot() -> Bool {
        lock.withLock {
            if abortRequested { return false }
            pivoting = true
            return true
        }
    }

    var isAbortRequested: Bool { lock.withLock { abortRequested } }
}

/// What a live copy drives: libvirt's block jobs on one domain, and the destinations.
/// The seam that lets the job's logic (progress, ready, pivot, abort, pivot failure) be
/// tested without libvirt. Every method blocks: ``LiveCopyRunner`` calls them through
/// ``ComputeWork``.
protocol LiveBlockControl: Sendable {
    /// Starts the block copy of `disk` to its destination.
    func start(_ disk: LiveDisk, bandwidthBytes: UInt64?) throws
    /// The disk's block job, nil when none runs.
    func info(_ target: String) throws -> BlockJobInfo?
    /// Targets whose mirror libvirt shows `ready='yes'` in the live XML.
    func readyTargets() throws -> Set<String>
    /// Switches the disk to its copy (waits for it).
    func pivot(_ target: String) throws
    /// Cancels the disk's block job without a pivot (waits for it).
    func cancel(_ target: String) throws
    /// Whether the domain's live definition has the disk on its destination (pivoted).
    func uses(_ disk: LiveDisk) throws -> Bool
    /// Removes the (partial) destination of a cancelled mirror.
    func removeDestination(_ disk: LiveDisk) throws
    /// After a pivot: makes the persistent definition name the new image.
    func persist(_ disk: LiveDisk) throws
    /// The disk's virtual size.
    func virtualSize(_ target: String) throws -> UInt64
}

/// Runs one live copy: start (or join) every mirror, wait until all are synchronised,
/// pivot each, keep the definition in step. Cancels and cleans up on LIVE-ABORT, a
/// mirror that ends by itself, or a failed pivot.
struct LiveCopyRunner: Sendable {
    let control: any LiveBlockControl
    let progress: JobProgress
    let abort: LiveSwitch
    var interval: Duration = .milliseconds(250)
    /// Writes the record (phase changes, each pivot).
    let save: @Sendable (LiveJobRecord) async -> Void
    /// Called after every pivot (LIVE-LOCALIZE: the redefinition onto the local files).
    var finish: @Sendable (LiveJobRecord) async throws -> String? = { _ in nil }
    var bandwidthBytes: UInt64?
    /// Called when the job ends without having pivoted any disk (aborted or failed):
    /// LIVE-COPY forgets the definition it kept, when this job kept it.
    var abandon: @Sendable (LiveJobRecord) async -> Void = { _ in }
    /// Prints to the agent's log.
    var log: @Sendable (String) -> Void = { _ in }

    /// How far back the progress rate looks.
    static let rateWindow: Duration = .seconds(3)

    func run(_ initial: LiveJobRecord) async -> LiveJobRecord {
        var record = initial
        let control = self.control
        let moving = record.disks.filter { !$0.already }
        // The disks with a mirror of this job (started or joined).
        var running: [LiveDisk] = []
        let start = ContinuousClock.now
        let stopped = "the \(record.verb) of \(record.domain) was stopped by LIVE-ABORT; \(record.domain) runs on its original disks"
        do {
            for d in record.disks {
                record.virtualSizes[d.target] = try await ComputeWork.run { try control.virtualSize(d.target) }
            }
            await save(record)
            for d in moving {
                if abort.isAbortRequested { break }
                if d.join {
                    log("\(record.verb) of \(record.domain): joining the running block copy of \(d.target) to \(d.to.spelled)")
                } else {
                    let bandwidth = bandwidthBytes
                    try await ComputeWork.run { try control.start(d, bandwidthBytes: bandwidth) }
                }
                running.append(d)
            }
            var ends: [String: UInt64] = [:]
            // What joined mirrors had copied before this job: not counted in its rate.
            var joinedBefore: UInt64?
            // The rate is taken over the last few seconds (QEMU skips the holes of an image
            // in a burst, and a bandwidth cap only shows after it): (time, done) samples.
            var window: [(at: ContinuousClock.Instant, done: UInt64)] = []
            while true {
                if abort.isAbortRequested {
                    record.phase = .aborted
                    throw AgentError(.invalidState, stopped)
                }
                var done: UInt64 = 0, total: UInt64 = 0, joined: UInt64 = 0
                var behind: String?
                for d in running {
                    guard let info = try await ComputeWork.run({ try control.info(d.target) }) else {
                        throw AgentError(.invalidState, "the block copy of disk \(d.target) of \(record.domain) to \(d.to.spelled) ended before it was synchronised (libvirt ended the job: its log says why); the mirrors were cancelled and \(record.domain) runs on its original disks",
                                         details: ["disk": d.target])
                    }
                    done += info.cur
                    total += info.end
                    if d.join, joinedBefore == nil { joined += info.cur }
                    ends[d.target] = info.end
                    if behind == nil, info.cur < info.end || info.end == 0 { behind = d.target }
                }
                if joinedBefore == nil { joinedBefore = joined }
                let now = ContinuousClock.now
                let fresh = done - min(done, joinedBefore ?? 0)
                window.append((now, fresh))
                if window.count > 1, now - window[0].at > Self.rateWindow { window.removeFirst() }
                let (since, base) = window.count > 1 ? (window[0].at, window[0].done) : (start, 0)
                let seconds = (now - since) / .seconds(1)
                progress.set(.init(done: done, total: total, rate: seconds > 0 ? UInt64(Double(fresh - min(fresh, base)) / seconds) : 0,
                                   disk: behind ?? running.last?.target ?? ""))
                if behind == nil {
                    let ready = try await ComputeWork.run { try control.readyTargets() }
                    if running.allSatisfy({ ready.contains($0.target) }) { break }
                }
                try? await Task.sleep(for: interval)
            }
            guard abort.beginPivot() else {
                record.phase = .aborted
                throw AgentError(.invalidState, stopped)
            }
            record.phase = .pivoting
            await save(record)
            for d in running {
                record.copied[d.target] = ends[d.target] ?? 0
                do {
                    try await ComputeWork.run { try control.pivot(d.target) }
                } catch {
                    // A pivot libvirt reports failed may still have switched the disk:
                    // the live definition decides (and its copy is then never removed).
                    if (try? await ComputeWork.run({ try control.uses(d) })) != true {
                        let before = record.pivoted.isEmpty ? "" : " (\(record.pivoted.joined(separator: ", ")) had been pivoted and stay on their copies)"
                        let rest = running.filter { !record.pivoted.contains($0.target) }.map(\.target)
                        throw AgentError(.invalidState, "the pivot of disk \(d.target) of \(record.domain) onto \(d.to.spelled) failed: \(error.message); \(rest.joined(separator: ", ")) stay on their original images\(before), their mirrors were cancelled; \(record.domain) runs on",
                                         details: ["disk": d.target])
                    }
                    log("\(record.verb) of \(record.domain): the pivot of \(d.target) was reported failed (\(error.message)) but the disk runs on \(d.to.spelled)")
                }
                record.pivoted.append(d.target)
                await save(record)
                do {
                    try await ComputeWork.run { try control.persist(d) }
                } catch {
                    throw AgentError(.internal, "disk \(d.target) of \(record.domain) runs on \(d.to.spelled) now, but its persistent definition could not be made to name it (\(error.message)); the remaining mirrors were cancelled. Fix the definition before \(record.domain) restarts (virsh edit \(record.domain): the source of \(d.target) is \(d.to.spelled))",
                                     details: ["disk": d.target])
                }
            }
            for d in running where record.copied[d.target] == nil { record.copied[d.target] = 0 }
            let saved = try await finish(record)
            if record.kind == .localize { record.saved = saved }
            record.phase = .done
            let total = record.copied.values.reduce(0, +)
            progress.finish(done: total, since: start)
        } catch {
            let e = CopyJobs.agentError(error)
            if record.phase != .aborted { record.phase = .failed }
            record.errorCode = e.code.rawValue
            record.errorMessage = e.message
            // Every mirror not pivoted is cancelled and its partial copy removed.
            await cancel(running.filter { !record.pivoted.contains($0.target) }, record: record)
        }
        if record.phase != .done, record.pivoted.isEmpty { await abandon(record) }
        record.finished = Date()
        await save(record)
        return record
    }

    /// Cancels the mirrors of `disks` and removes their destinations, unless the domain
    /// runs on one (best effort: what fails is logged; a leftover copy is recognised and
    /// removed by the next run).
    func cancel(_ disks: [LiveDisk], record: LiveJobRecord) async {
        let control = self.control
        for d in disks {
            do {
                if try await ComputeWork.run({ try control.info(d.target) }) != nil {
                    try await ComputeWork.run { try control.cancel(d.target) }
                }
                if try await ComputeWork.run({ try control.uses(d) }) {
                    log("\(record.verb) of \(record.domain): \(d.target) runs on \(d.to.spelled): it is kept")
                    continue
                }
                try await ComputeWork.run { try control.removeDestination(d) }
                log("\(record.verb) of \(record.domain): cancelled the block copy of \(d.target) and removed \(d.to.spelled)")
            } catch {
                log("\(record.verb) of \(record.domain): cancelling the block copy of \(d.target) to \(d.to.spelled): \(error.message)")
            }
        }
    }
}

extension Error {
    /// The message of an ``AgentError`` or the error's description.
    var message: String { (self as? AgentError)?.message ?? "\(self)" }
}

/// libvirt's side of ``LiveBlockControl`` for one domain. Blocking.
struct LibvirtLiveControl: LiveBlockControl {
    let session: LibvirtSession
    let domain: String
    let share: Share
    /// Where a file destination's directory is opened from when it is removed: the
    /// share root (LIVE-COPY in mount mode) or the images root (LIVE-LOCALIZE).
    let fileRoot: String

    func start(_ disk: LiveDisk, bandwidthBytes: UInt64?) throws {
        let d = try session.domain(domain)
        let xml = LiveCopyPlanning.destinationXML(disk.to, format: disk.format)
        try lv { try d.blockCopy(disk: disk.target, destinationXML: xml, bandwidthBytes: bandwidthBytes, flags: [.transientJob]) }
    }

    func info(_ target: String) throws -> BlockJobInfo? {
        let d = try session.domain(domain)
        return try lv { try d.blockJobInfo(disk: target) }
    }

    func readyTargets() throws -> Set<String> {
        let d = try session.domain(domain)
        let xml = try lv { try d.xmlDesc() }
        return Set(try LiveCopyPlanning.mirrors(xml).filter { $0.value.ready && $0.value.job == "copy" }.keys)
    }

    func pivot(_ target: String) throws {
        let d = try session.domain(domain)
        try lv { try d.blockJobAbort(disk: target, pivot: true) }
    }

    func cancel(_ target: String) throws {
        let d = try session.domain(domain)
        try lv { try d.blockJobAbort(disk: target, pivot: false) }
    }

    func uses(_ disk: LiveDisk) throws -> Bool {
        let d = try session.domain(domain)
        let xml = try lv { try d.xmlDesc() }
        return try LiveCopyPlanning.definitionNames(xml, disk: disk.target, disk.to) == true
    }

    func removeDestination(_ disk: LiveDisk) throws {
        try LiveCopyPreparation.remove(disk.to, share: share, root: fileRoot)
    }

    /// libvirt 9 updates the persistent definition at the pivot; an older one (or a
    /// driver that does not) is caught here: the definition is rewritten so the next
    /// boot never uses the stale image.
    func persist(_ disk: LiveDisk) throws {
        let d = try session.domain(domain)
        let inactive = try lv { try d.xmlDesc(flags: [.inactive, .secure]) }
        guard try LiveCopyPlanning.definitionNames(inactive, disk: disk.target, disk.to) == false else { return }
        let rewritten = try DomainDefinition.rewrite(inactive, placements: [disk.target: disk.to.placement])
        let c = try session.connection()
        _ = try lv { try c.defineXML(rewritten) }
    }

    func virtualSize(_ target: String) throws -> UInt64 {
        let d = try session.domain(domain)
        return try lv { try d.blockInfo(disk: target).capacity }
    }
}

/// The blocking steps before a live copy starts: read the domain, plan, check each
/// destination (a leftover copy of this domain's is removed), create the domain's
/// directory, keep the definition. Run through ``ComputeWork`` (libvirt) and
/// ``RemoteWork`` (libnfs).
enum LiveCopyPreparation {
    struct Domain: Sendable {
        var uuid: String
        var running: Bool
        var persistent: Bool
        var xml: String
        /// (owner, disks) of every definition of this host (both of a running persistent
        /// domain), this domain's own under the name `this domain`.
        var definitions: [(owner: String, disks: [DomainDisk])]
    }

    /// Reads the domain and every disk of every domain of this host. Blocking.
    static func read(_ session: LibvirtSession, domain name: String) throws(AgentError) -> Domain {
        let d = try session.domain(name)
        let (s, persistent, uuid, xml) = try lv { () throws -> (DomainState, Bool, String, String) in
            let s = try d.state
            return (s, try d.isPersistent, try d.uuidString.lowercased(), try d.xmlDesc(flags: s == .shutoff ? [.inactive, .secure] : [.secure]))
        }
        let c = try session.connection()
        let all = try lv { () throws -> [(String, String)] in
            var result: [(String, String)] = []
            for other in try c.listAllDomains() {
                let mine = try other.uuidString.lowercased() == uuid
                let owner = mine ? "this domain" : try other.name
                let st = try other.state
                result.append((owner, try other.xmlDesc(flags: st == .shutoff ? [.inactive] : [])))
                if st != .shutoff, try other.isPersistent { result.append((owner, try other.xmlDesc(flags: [.inactive]))) }
            }
            return result
        }
        var definitions: [(owner: String, disks: [DomainDisk])] = []
        for (owner, x) in all { definitions.append((owner, try DomainDefinition.disks(x))) }
        let running = s == .running || s == .paused || s == .blocked
        return Domain(uuid: uuid, running: running, persistent: persistent, xml: xml, definitions: definitions)
    }

    /// Refuses a local image whose header names a backing file (the live XML may not
    /// show it). Blocking.
    static func requireSingleImages(_ plan: LivePlan) throws(AgentError) {
        for d in plan.moving where !d.join {
            let facts = try ImageInspection.facts(path: d.from, driverFormat: d.format)
            if !facts.backing.isEmpty {
                throw AgentError(.invalidState, "disk \(d.target) of \(plan.domain) (\(d.from)) has a backing chain (\(facts.backing.joined(separator: " <- "))); storagectl copies single images only: flatten it first (virsh blockpull \(plan.domain) \(d.target) --wait)")
            }
        }
    }

    /// The existing file at a destination: nil when there is none.
    enum Existing: Sendable, Equatable { case regularFile, other }

    /// Opens the directory holding `path` from `root` without following a symbolic link.
    static func parent(of path: String, under root: String) throws(AgentError) -> (fd: Int32, leaf: String) {
        let dir = (path as NSString).deletingLastPathComponent
        do {
            return (try RootedPath.openDirectory(dir, under: root), (path as NSString).lastPathComponent)
        } catch {
            throw AgentError(.invalidState, "\(dir) is not a directory reached from \(root) without symbolic links (\(error.description)); move what is there away and ask again")
        }
    }

    /// What is at `to` now (never following a link: a link is `.other`). `root`: where a
    /// file destination's directory is opened from (the share root or the images root).
    /// Blocking (the mount, or libnfs).
    static func existing(_ to: LiveDestination, share: Share, root: String) throws(AgentError) -> Existing? {
        switch to {
        case .file(let path):
            let (fd, leaf) = try parent(of: path, under: root)
            defer { close(fd) }
            return try existing(leaf, in: fd, path: path)
        case .nfs(_, let name):
            let relative = String(name.dropFirst(share.export.count))
            return try SharedFiles.withNFS(share) { nfs throws(AgentError) -> Existing? in
                do {
                    let st = try nfs.stat(relative)
                    return st.isRegularFile ? .regularFile : .other
                } catch let e as NFSError where e.code == ENOENT {
                    return nil
                } catch {
                    throw AgentError(.unavailable, "cannot stat \(relative) on \(share.server):\(share.export): \(error)")
                }
            }
        }
    }

    /// What `leaf` in the open directory `fd` is (never following a link), nil when it
    /// does not exist; `path` names it in errors. Blocking.
    private static func existing(_ leaf: String, in fd: Int32, path: String) throws(AgentError) -> Existing? {
        var st = stat()
        if fstatat(fd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 {
            if errno == ENOENT { return nil }
            throw AgentError(.unavailable, "cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        return (st.st_mode & S_IFMT) == S_IFREG ? .regularFile : .other
    }

    /// Removes the regular file at `to` (absent is fine; anything else is left and
    /// refused). Blocking.
    static func remove(_ to: LiveDestination, share: Share, root: String) throws(AgentError) {
        switch to {
        case .file(let path):
            let (fd, leaf) = try parent(of: path, under: root)
            defer { close(fd) }
            guard let found = try existing(leaf, in: fd, path: path) else { return }
            guard found == .regularFile else {
                throw AgentError(.conflict, "\(path) is not a regular file; it was left alone")
            }
            guard unlinkat(fd, leaf, 0) == 0 || errno == ENOENT else {
                throw AgentError(.unavailable, "cannot remove \(path): \(String(cString: strerror(errno)))")
            }
        case .nfs(_, let name):
            let relative = String(name.dropFirst(share.export.count))
            try SharedFiles.withNFS(share) { nfs throws(AgentError) in
                do { try nfs.unlink(relative) } catch let e as NFSError where e.code == ENOENT {
                } catch {
                    throw AgentError(.unavailable, "cannot remove \(relative) on \(share.server):\(share.export): \(error)")
                }
            }
        }
    }

    /// LIVE-COPY: first the domain's share directory is made (mount: under the target,
    /// opened from the share root without following a link; libnfs: through libnfs).
    /// Then each destination that exists and is no mirror of ours is this domain's
    /// leftover (a regular file in its own share directory that no domain of this host
    /// uses: removed, and said so in `log`) or a `conflict`. Blocking.
    static func prepareShare(_ plan: LivePlan, share: Share, shareRoot: String?, definitions: [(owner: String, disks: [DomainDisk])],
                             log: (String) -> Void) throws(AgentError) {
        let moving = plan.moving.filter { !$0.join }
        guard let first = moving.first else { return }
        let dir = (first.path as NSString).deletingLastPathComponent
        let root = shareRoot ?? share.target ?? "/"
        switch share.attach {
        case .mount:
            guard let target = share.target else { return }
            let parent: Int32
            do { parent = try RootedPath.openDirectory(target, under: root) } catch {
                throw AgentError(.invalidState, "the pool target \(target) is not a directory reached without symbolic links (\(error.description)); is the pool active?")
            }
            defer { close(parent) }
            if mkdirat(parent, dir, 0o755) != 0, errno != EEXIST {
                throw AgentError(.unavailable, "cannot create \(target)/\(dir): \(String(cString: strerror(errno)))")
            }
            let fd = openat(parent, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else {
                throw AgentError(.invalidState, "\(target)/\(dir) is not a directory (a symbolic link or a file is there); move it away and ask again")
            }
            close(fd)
        case .libnfs:
            try SharedFiles.withNFS(share) { nfs throws(AgentError) in
                do { try nfs.mkdir("/" + dir) } catch let e as NFSError where e.code == EEXIST {
                } catch {
                    throw AgentError(.unavailable, "cannot create \(dir) on \(share.server):\(share.export): \(error)")
                }
                guard let st = try? nfs.stat("/" + dir), st.isDirectory else {
                    throw AgentError(.invalidState, "\(dir) on \(share.server):\(share.export) is not a directory; move it away and ask again")
                }
            }
        }
        for d in moving {
            guard let found = try existing(d.to, share: share, root: root) else { continue }
            let users = LiveCopyPlanning.users(of: d.to, among: definitions)
            guard found == .regularFile, users.isEmpty else {
                let why = users.isEmpty ? "it is not a regular file" : "it is a disk of \(users.joined(separator: ", "))"
                throw AgentError(.conflict, "\(d.to.spelled), where LIVE-COPY would copy disk \(d.target) of \(plan.domain), exists and \(why); it is never overwritten: move it away (or rename the image of \(plan.domain)) and ask again",
                                 details: ["disk": d.target])
            }
            try remove(d.to, share: share, root: root)
            log("LIVE-COPY of \(plan.domain): removed \(d.to.spelled), a leftover copy of disk \(d.target) that no domain of this host uses (from an interrupted live copy, or the shared image a LIVE-LOCALIZE left)")
        }
    }

    /// LIVE-COPY: keeps the persistent definition before the first pivot as ADOPT does
    /// (`domains/UUID.previous.xml`, only when none is kept). Returns its path and
    /// whether this call wrote it. Blocking.
    static func saveDefinition(_ session: LibvirtSession, state: StateStore, domain name: String) throws(AgentError) -> (path: String, created: Bool) {
        let d = try session.domain(name)
        let (uuid, xml) = try lv { () throws -> (String, String) in (try d.uuidString.lowercased(), try d.xmlDesc(flags: [.inactive, .secure])) }
        let file = Adoption.savedName(uuid)
        var created = false
        if try state.read("domains", file) == nil {
            try state.write("domains", file, Data(xml.utf8))
            created = true
        }
        return (state.path("domains", file), created)
    }

    /// The first of ``LiveCopyPlanning/localName(_:_:)``'s names for `planned` that is
    /// neither in the directory `own` (open; nothing followed) nor in `taken` nor a disk
    /// of `definitions`; nil when all are. Blocking.
    static func freeLocalName(_ planned: String, in own: Int32, taken: Set<String>,
                              definitions: [(owner: String, disks: [DomainDisk])]) -> String? {
        for n in 1...LiveCopyPlanning.localNameLimit {
            let candidate = LiveCopyPlanning.localName(planned, n)
            var st = stat()
            let exists = fstatat(own, (candidate as NSString).lastPathComponent, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT
            guard !exists, !taken.contains(candidate),
                  LiveCopyPlanning.users(of: .file(path: candidate), among: definitions).isEmpty else { continue }
            return candidate
        }
        return nil
    }

    /// LIVE-LOCALIZE: each local destination must be a new file: when the planned name
    /// exists (an image kept from an earlier round trip) or is another disk's, the next
    /// free name `STEM-N.EXT` is taken instead (``LiveCopyPlanning/localName(_:_:)``):
    /// nothing is ever overwritten. A mirror of ours is joined, not checked. The domain's
    /// directory is made and the space checked (the shared images' allocated bytes).
    /// Returns the plan with the names chosen. Blocking.
    static func prepareLocal(_ plan: LivePlan, share: Share, dir: String, imagesRoot: String,
                             definitions: [(owner: String, disks: [DomainDisk])], session: LibvirtSession) throws(AgentError) -> LivePlan {
        var plan = plan
        let moving = plan.moving.filter { !$0.join }
        guard let first = moving.first, case .file(let firstPath) = first.to else { return plan }
        let own = try Localization.domainDirectory(dir, under: imagesRoot, name: (firstPath as NSString).deletingLastPathComponent)
        defer { close(own) }
        var needed: UInt64 = 0
        let d = try session.domain(plan.domain)
        var chosen = Set<String>()
        for disk in moving {
            guard case .file(let planned) = disk.to else { continue }
            guard let path = freeLocalName(planned, in: own, taken: chosen, definitions: definitions) else {
                throw AgentError(.conflict, "\(planned) and the next \(LiveCopyPlanning.localNameLimit - 1) names after it exist, where LIVE-LOCALIZE would put disk \(disk.target) of \(plan.domain); they are never overwritten: remove old copies or give another dir=",
                                 details: ["disk": disk.target])
            }
            chosen.insert(path)
            if let i = plan.disks.firstIndex(where: { $0.target == disk.target }) { plan.disks[i].to = .file(path: path) }
            let info = try lv { try d.blockInfo(disk: disk.target) }
            // A raw image read through QEMU's nfs driver (libnfs mode) has no holes to
            // report, so its local copy is fully allocated (seen in the lab); through the
            // mount, and for qcow2, the copy holds what the source holds.
            let full = disk.format == "raw" && share.attach == .libnfs
            let n = full || info.allocation == 0 ? info.capacity : min(info.allocation, info.capacity)
            needed = needed.addingReportingOverflow(n).overflow ? .max : needed + n
        }
        var fs = statvfs()
        if fstatvfs(own, &fs) == 0 {
            let (free, overflow) = UInt64(fs.f_bavail).multipliedReportingOverflow(by: UInt64(fs.f_frsize))
            try Localization.requireSpace(needed: needed, free: overflow ? .max : free, dir: dir)
        }
        return plan
    }
}
