import AgentProtocol
import FoundationXML

/// One `<disk>` of a domain definition, as libvirt describes it.
public struct DomainDisk: Sendable, Equatable {
    /// `<target dev=...>`: vda, sdb, ...
    public var target: String
    /// `<disk type=...>`: file, block, network, volume, dir.
    public var type: String
    /// `<disk device=...>`: disk, cdrom, floppy, lun.
    public var device: String
    /// file path, block device, `nfs://host/name` for network disks, `pool/volume` for volumes.
    public var source: String?
    /// `<driver type=...>`: qcow2, raw, ...
    public var format: String?
    /// `<driver cache=...>`, nil when unset (hypervisor default).
    public var cache: String?
    public var readOnly: Bool
    /// Sources of libvirt's `<backingStore>` chain, nearest first (may be empty even when
    /// the image has one: libvirt fills it only for running domains or after probing).
    public var backingStore: [String]
    /// For network disks: protocol and host names.
    public var networkProtocol: String?
    public var networkName: String?
    public var networkHosts: [String]

    /// A local file disk that COPY and ADOPT move to the share.
    public var isLocalFileDisk: Bool { type == "file" && device == "disk" && source != nil }
}

/// Reading and rewriting libvirt domain XML (`virsh dumpxml`), with the guards of ``SafeXML``.
enum DomainDefinition {
    /// The disks of a domain, in document order.
    static func disks(_ xml: String) throws(AgentError) -> [DomainDisk] {
        let document = try SafeXML.document(xml, what: "the domain XML from libvirt")
        guard let root = document.rootElement(), root.name == "domain" else {
            throw AgentError(.internal, "the domain XML from libvirt has no <domain> root")
        }
        return (root.child("devices")?.children(named: "disk") ?? []).map(disk)
    }

    static func disk(_ e: XMLElement) -> DomainDisk {
        let type = e.attr("type") ?? "file"
        let sourceElement = e.child("source")
        var source: String?
        var proto: String?, name: String?, hosts: [String] = []
        switch type {
        case "file": source = sourceElement?.attr("file")
        case "block": source = sourceElement?.attr("dev")
        case "dir": source = sourceElement?.attr("dir")
        case "volume":
            if let pool = sourceElement?.attr("pool"), let vol = sourceElement?.attr("volume") { source = pool + "/" + vol }
        case "network":
            proto = sourceElement?.attr("protocol")
            name = sourceElement?.attr("name")
            hosts = sourceElement?.children(named: "host").compactMap { $0.attr("name") } ?? []
            if let proto, let name {
                let host = hosts.first ?? ""
                source = "\(proto)://\(host)\(name.hasPrefix("/") ? "" : "/")\(name)"
            }
        default: source = nil
        }
        var chain: [String] = []
        var store = e.child("backingStore")
        while let s = store, let src = s.child("source"), chain.count < 32 {
            if let f = src.attr("file") ?? src.attr("dev") ?? src.attr("name") { chain.append(f) }
            store = s.child("backingStore")
        }
        return DomainDisk(
            target: e.child("target")?.attr("dev") ?? "",
            type: type,
            device: e.attr("device") ?? "disk",
            source: source,
            format: e.child("driver")?.attr("type"),
            cache: e.child("driver")?.attr("cache"),
            readOnly: e.child("readonly") != nil,
            backingStore: chain,
            networkProtocol: proto, networkName: name, networkHosts: hosts)
    }

    /// The `<name>` and `<uuid>` of a domain XML.
    static func identity(_ xml: String) throws(AgentError) -> (name: String, uuid: String) {
        let document = try SafeXML.document(xml, what: "a domain definition")
        guard let root = document.rootElement(), root.name == "domain",
              let name = root.child("name")?.stringValue, let uuid = root.child("uuid")?.stringValue else {
            throw AgentError(.internal, "a domain definition without <name> or <uuid>")
        }
        return (name, uuid.lowercased())
    }

    /// Where ADOPT points a disk.
    enum Placement: Sendable, Equatable {
        /// A file under the pool's target path (mount mode).
        case file(path: String)
        /// An NFS network disk QEMU reaches through libnfs (libnfs mode):
        /// `<source protocol='nfs' name='/EXPORT/REL'><host name='SERVER'/>...`.
        case nfs(server: String, name: String)
    }

    /// Rewrites the disks named in `placements` (by target dev) so they use the shared
    /// copies; every other element and attribute is kept as libvirt wrote it. The
    /// `<backingStore>` of a rewritten disk is dropped (libvirt probes it again). Values
    /// are set through the XML library, which escapes them. Pure.
    static func rewrite(_ xml: String, placements: [String: Placement]) throws(AgentError) -> String {
        let document = try SafeXML.document(xml, what: "the domain XML from libvirt")
        guard let root = document.rootElement(), root.name == "domain", let devices = root.child("devices") else {
            throw AgentError(.internal, "the domain XML from libvirt has no <domain><devices>")
        }
        var done = Set<String>()
        for disk in devices.children(named: "disk") {
            guard let dev = disk.child("target")?.attr("dev"), let placement = placements[dev] else { continue }
            done.insert(dev)
            disk.removeChildren(named: "backingStore")
            let old = disk.child("source")
            let index = old.map { $0.index } ?? 0
            if old != nil { disk.removeChild(at: index) }
            let source: XMLElement
            switch placement {
            case .file(let path):
                disk.setAttr("type", "file")
                source = XMLElement.make("source", [("file", path)])
            case .nfs(let server, let name):
                disk.setAttr("type", "network")
                source = XMLElement.make("source", [("protocol", "nfs"), ("name", name)], children: [
                    XMLElement.make("host", [("name", server)]),
                    // QEMU's libnfs driver sends these ids in AUTH_SYS (the export must
                    // not squash root for the guest's image to stay root-owned).
                    XMLElement.make("identity", [("user", "root"), ("group", "root")]),
                ])
            }
            disk.insertChild(source, at: min(index, disk.childCount))
        }
        if let missing = Set(placements.keys).subtracting(done).sorted().first {
            throw AgentError(.internal, "disk \(missing) is not in the domain definition")
        }
        return document.xmlString
    }
}
