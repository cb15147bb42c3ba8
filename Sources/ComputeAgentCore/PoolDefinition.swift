import AgentAPI
import AgentProtocol
import FoundationXML

/// What POOL-ENSURE asks for: the share on `server:export`, under `name`, mounted at
/// `target` (mount mode), NFS version pinned, NFS locking off.
public struct PoolSpec: Sendable, Equatable, Codable {
    public var name: String
    public var server: String
    public var export: String
    /// The pool's target path (mount mode); nil in libnfs mode.
    public var target: String?
    public var attach: AttachMode
    public var nfsVersion: Int

    public static let fsNamespace = "http://libvirt.org/schemas/storagepool/fs/1.0"
    /// Mount options every storagectl pool carries. `nolock`: NFS locking must not be used
    /// (RHEL migration procedure; QEMU takes its own image locks).
    public static let mountOptions = ["nolock"]

    /// The pool XML for libvirt (mount mode), built with the XML library: every value is
    /// escaped by it, nothing is concatenated. `vers=` comes from `<protocol ver=.../>`,
    /// `nolock` from libvirt's `fs:mount_opts` (libvirt >= 5.1).
    public func poolXML() -> String {
        let root = XMLElement.make("pool", [("type", "netfs")])
        root.addNamespace(XMLNode.namespace(withName: "fs", stringValue: Self.fsNamespace) as! XMLNode)
        let nameElement = XMLElement(name: "name")
        nameElement.stringValue = name
        root.addChild(nameElement)
        root.addChild(XMLElement.make("source", children: [
            XMLElement.make("host", [("name", server)]),
            XMLElement.make("dir", [("path", export)]),
            XMLElement.make("format", [("type", "nfs")]),
            XMLElement.make("protocol", [("ver", String(nfsVersion))]),
        ]))
        let path = XMLElement(name: "path")
        path.stringValue = target ?? ""
        root.addChild(XMLElement.make("target", children: [path]))
        // The prefix is declared on <pool>; the names are constants.
        root.addChild(XMLElement.make("fs:mount_opts", children: Self.mountOptions.map { XMLElement.make("fs:option", [("name", $0)]) }))
        // Serialised from the element, with no XMLDocument: a document built around
        // elements made here frees its libxml2 doc before the elements it held, whose
        // nodes still point at it (use after free in xmlFreeNode, SIGSEGV; found by
        // Tests/Fuzz fuzz-xml). libvirt needs no XML declaration.
        return root.xmlString
    }
}

/// A pool as libvirt describes it (`virsh pool-dumpxml`), reduced to what is compared.
struct ExistingPool: Sendable, Equatable {
    var name: String
    var type: String
    var hosts: [String]
    var dir: String?
    var format: String?
    var protocolVersion: String?
    var target: String?
    /// nil when the XML has no `fs:mount_opts` element.
    var mountOptions: [String]?

    init(xml: String) throws(AgentError) {
        let document = try SafeXML.document(xml, what: "a pool definition from libvirt")
        guard let root = document.rootElement(), root.name == "pool" else {
            throw AgentError(.internal, "a pool definition from libvirt has no <pool> root")
        }
        name = root.child("name")?.stringValue ?? ""
        type = root.attr("type") ?? ""
        let source = root.child("source")
        hosts = source?.children(named: "host").compactMap { $0.attr("name") } ?? []
        dir = source?.child("dir")?.attr("path")
        format = source?.child("format")?.attr("type")
        protocolVersion = source?.child("protocol")?.attr("ver")
        target = root.child("target")?.child("path")?.stringValue
        mountOptions = root.child("mount_opts").map { opts in
            (opts.children ?? []).compactMap { $0 as? XMLElement }
                .filter { Self.local($0.name ?? "") == "option" }
                .compactMap { $0.attr("name") }
        }
    }

    /// How this pool differs from `spec`; empty when it is the pool storagectl would define.
    /// `checkMountOptions` is false for drivers that drop the `fs:` namespace.
    func differences(from spec: PoolSpec, checkMountOptions: Bool) -> [String] {
        var d: [String] = []
        if type != "netfs" { d.append("type \(type) (want netfs)") }
        if hosts != [spec.server] { d.append("source host \(hosts.joined(separator: ",")) (want \(spec.server))") }
        if dir.map(normalised) != spec.export { d.append("source dir \(dir ?? "none") (want \(spec.export))") }
        if format != "nfs" { d.append("format \(format ?? "none") (want nfs)") }
        if protocolVersion != String(spec.nfsVersion) { d.append("NFS version \(protocolVersion ?? "unpinned") (want \(spec.nfsVersion))") }
        if target.map(normalised) != spec.target { d.append("target \(target ?? "none") (want \(spec.target ?? ""))") }
        if checkMountOptions {
            let have = Set(mountOptions ?? [])
            let missing = PoolSpec.mountOptions.filter { !have.contains($0) }
            if !missing.isEmpty { d.append("mount options lack \(missing.joined(separator: ","))") }
        }
        return d
    }

    static func local(_ name: String) -> String { String(name.split(separator: ":").last ?? "") }

    func normalised(_ p: String) -> String {
        var p = p
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }
}
