import AgentProtocol
import Foundation
import Libvirt
#if canImport(Glibc)
import Glibc
#endif

/// One disk COPY moves, and where its copy lives on the share.
struct PlannedDisk: Sendable, Codable, Equatable {
    var target: String
    var source: String
    /// Path of the copy relative to the export: `<domain dir>/<image file name>`.
    var relativePath: String
    /// Logical size of the source file and its modification time when planned: a finished
    /// job is reused only while both are unchanged.
    var size: UInt64
    var mtime: Int64
}

/// A domain's disks sorted into what COPY does with each. Blocking (libvirt, stat, headers).
struct CopyPlan: Sendable {
    var domain: String
    var uuid: String
    var state: DomainState
    var persistent: Bool
    var disks: [PlannedDisk]
    /// Disks left alone, with the reason (`network`, `cdrom`, `already-shared`).
    var skipped: [(target: String, source: String, reason: String)]

    /// Reads the domain and decides. Refuses (`invalid-state`) a disk with a backing
    /// chain, a block device and two images with the same file name.
    /// `share` decides which file disks are already on the share (mount mode).
    /// With `requireShutOff` (the verb's name), a domain that is not shut off is refused
    /// before its images are looked at.
    static func make(_ session: LibvirtSession, domain name: String, share: Share?, requireShutOff verb: String? = nil) throws(AgentError) -> CopyPlan {
        let domain = try session.domain(name)
        let (state, persistent, uuid, xml) = try lv { () throws -> (DomainState, Bool, String, String) in
            let s = try domain.state
            return (s, try domain.isPersistent, try domain.uuidString, try domain.xmlDesc(flags: s == .shutoff ? [.inactive, .secure] : [.secure]))
        }
        var plan = CopyPlan(domain: name, uuid: uuid, state: state, persistent: persistent, disks: [], skipped: [])
        if let verb { try plan.requireShutOff(verb) }
        let dir = Validation.shareDirectory(domain: name, uuid: uuid)
        var names = Set<String>()
        for disk in try DomainDefinition.disks(xml) {
            let source = disk.source ?? ""
            if disk.type == "network" { plan.skipped.append((disk.target, source, "network")); continue }
            if disk.device != "disk" { plan.skipped.append((disk.target, source, disk.device)); continue }
            if disk.type == "block" {
                throw AgentError(.invalidState, "disk \(disk.target) of \(name) is the block device \(source); COPY copies file images only: convert it to a qcow2 file first (qemu-img convert -O qcow2 \(source) FILE) and point the domain at it")
            }
            guard disk.type == "file", let path = disk.source else {
                throw AgentError(.invalidState, "disk \(disk.target) of \(name) is a \(disk.type) disk; COPY copies file images only")
            }
            if let share, let target = share.target, share.attach == .mount, Validation.isWithin(path, root: target) {
                plan.skipped.append((disk.target, path, "already-shared")); continue
            }
            let facts = try ImageInspection.facts(path: path, driverFormat: disk.format)
            let chain = facts.backing.isEmpty ? disk.backingStore : facts.backing
            if !chain.isEmpty {
                throw AgentError(.invalidState, "disk \(disk.target) of \(name) (\(path)) has a backing chain (\(chain.joined(separator: " <- "))); its copy would still point at local storage. storagectl copies single images only: flatten it first (with the domain shut off: qemu-img convert -O qcow2 \(path) NEW.qcow2, then point the disk at NEW.qcow2)")
            }
            var st = stat()
            guard stat(path, &st) == 0 else {
                throw AgentError(.notFound, "disk \(disk.target) of \(name): cannot stat \(path): \(String(cString: strerror(errno)))")
            }
            let base = (path as NSString).lastPathComponent
            let file = (try? Validation.relativePath(base)) ?? "\(disk.target).img"
            guard names.insert(file).inserted else {
                throw AgentError(.invalidState, "two disks of \(name) are called \(file); their copies would collide in \(dir)/ on the share: rename one image first")
            }
            plan.disks.append(PlannedDisk(target: disk.target, source: path, relativePath: "\(dir)/\(file)",
                                          size: UInt64(max(0, st.st_size)), mtime: Int64(st.st_mtim.tv_sec)))
        }
        return plan
    }

    /// Refuses a domain that is not shut off, naming its state and the remedy.
    func requireShutOff(_ verb: String) throws(AgentError) {
        guard state == .shutoff else {
            throw AgentError(.invalidState, "\(domain) is \(state) (\(state.wire)); \(verb) needs it shut off: shut it down first (virsh shutdown \(domain)), or wait until it has stopped",
                             details: ["state": state.wire.rawValue])
        }
    }
}
