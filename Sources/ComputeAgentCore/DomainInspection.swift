import AgentAPI
import AgentProtocol
import Foundation
import ImageCopy
import Libvirt
#if canImport(Glibc)
import Glibc
#endif

/// Facts about one disk image file on this host.
struct ImageFacts: Sendable, Equatable {
    var format: String?          // from the header: qcow2, or nil (raw or unreadable)
    var virtualSize: UInt64?
    var fileSize: UInt64
    var allocated: UInt64
    /// The backing chain, nearest first, as absolute paths where they could be resolved.
    var backing: [String]
}

enum ImageInspection {
    /// Longest backing chain followed (a loop or a pathological chain stops here).
    static let maxChain = 16

    /// stat, and for a disk libvirt opens as qcow2 (`<driver type='qcow2'>`) its header
    /// and the backing chain of the headers. Any other disk is raw: virtual size = file
    /// size, no chain, and its bytes are never parsed (a raw disk's first bytes are the
    /// guest's: a guest must not be able to fake a header, a chain, or crash the agent
    /// with a hostile one). Blocking.
    static func facts(path: String, driverFormat: String?) throws(AgentError) -> ImageFacts {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errno
            throw AgentError(e == ENOENT ? .notFound : .internal, "cannot stat \(path): \(String(cString: strerror(e)))")
        }
        let fileSize = UInt64(max(0, st.st_size))
        let (allocated, overflow) = UInt64(max(0, st.st_blocks)).multipliedReportingOverflow(by: 512)
        var facts = ImageFacts(format: nil, virtualSize: nil, fileSize: fileSize,
                               allocated: overflow ? fileSize : allocated, backing: [])
        guard driverFormat == "qcow2" else {
            facts.format = driverFormat ?? "raw"
            facts.virtualSize = facts.format == "raw" ? fileSize : nil
            return facts
        }
        // An unreadable or malformed header leaves format and virtual size unknown.
        let header: QCOW2Header?
        do { header = try QCOW2Header.read(path: path) } catch { return facts }
        if let h = header {
            facts.format = "qcow2"
            facts.virtualSize = h.virtualSize
            facts.backing = chain(from: h, at: path)
        } else {
            facts.format = "raw"
            facts.virtualSize = fileSize
        }
        return facts
    }

    /// Follows backing file names from `header` (relative names are relative to the
    /// directory of the image that names them).
    static func chain(from header: QCOW2Header, at path: String) -> [String] {
        var result: [String] = []
        var current = header
        var currentPath = path
        while let name = current.backingFile, result.count < maxChain {
            let resolved = name.hasPrefix("/") ? name
                : ((currentPath as NSString).deletingLastPathComponent as NSString).appendingPathComponent(name)
            if result.contains(resolved) || resolved == path { break }
            result.append(resolved)
            // Only a backing file the header says is qcow2 is read as qcow2: a raw one
            // holds guest bytes (and without a format QEMU would not probe it either).
            guard current.backingFormat == "qcow2", let next = (try? QCOW2Header.read(path: resolved)) ?? nil else { break }
            current = next
            currentPath = resolved
        }
        return result
    }
}

/// `DOMAIN`: what libvirt and the images say about a domain's disks.
struct DomainReport: Sendable {
    var name: String
    var uuid: String
    var state: DomainState
    var persistent: Bool
    var disks: [(disk: DomainDisk, facts: ImageFacts?)]

    /// Reads the domain (live definition when running, else the persistent one) and
    /// inspects each local image. Blocking.
    static func read(_ session: LibvirtSession, name: String) throws(AgentError) -> DomainReport {
        let domain = try session.domain(name)
        return try read(domain).report
    }

    /// ``read(_:name:)`` for a domain already looked up; also gives the XML it read (the
    /// live definition when the domain is not shut off, else the persistent one). Blocking.
    static func read(_ domain: LibvirtDomain) throws(AgentError) -> (report: DomainReport, xml: String) {
        try lv {
            let state = try domain.state
            let xml = try domain.xmlDesc(flags: state == .shutoff ? [.inactive] : [])
            let disks = try DomainDefinition.disks(xml)
            let report = DomainReport(
                name: try domain.name, uuid: try domain.uuidString, state: state, persistent: try domain.isPersistent,
                disks: disks.map { d in
                    guard d.type == "file", let src = d.source else { return (d, nil) }
                    return (d, try? ImageInspection.facts(path: src, driverFormat: d.format))
                })
            return (report, xml)
        }
    }

    /// The typed answer of `DOMAIN`.
    var answer: DomainQuery.Answer {
        DomainQuery.Answer(name: name, uuid: uuid, state: state.wire, persistent: persistent, disks: disks.map { d, facts in
            let chain = (facts?.backing.isEmpty ?? true) ? d.backingStore : facts!.backing
            return DiskRecord(target: d.target, type: d.type, device: d.device, source: d.source ?? "",
                              format: d.format ?? facts?.format ?? "", virtualSize: facts?.virtualSize, allocated: facts?.allocated,
                              cache: d.cache ?? "default", readOnly: d.readOnly, backing: chain, missing: d.type == "file" && facts == nil)
        })
    }
}
