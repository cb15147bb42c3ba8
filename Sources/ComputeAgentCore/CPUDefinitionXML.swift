import AgentAPI
import AgentProtocol
import Foundation
import FoundationXML
import Libvirt

/// A domain's CPU definition as MIGRATION-FACTS reads it, and the `<cpu>` XML
/// MIGRATION-TARGET rebuilds from it for libvirt's comparison. Both through ``SafeXML``.
enum CPUDefinitionXML {
    /// The CPU definition of a domain XML (`<domain type>`, `<os><type arch machine>`,
    /// `<devices><emulator>`, `<cpu>`). A domain without `<cpu>` has `mode` nil.
    static func parse(_ xml: String) throws(AgentError) -> CPUDefinition {
        let document = try SafeXML.document(xml, what: "the domain XML from libvirt")
        guard let root = document.rootElement(), root.name == "domain" else {
            throw AgentError(.internal, "the domain XML from libvirt has no <domain> root")
        }
        let osType = root.child("os")?.child("type")
        var cpu = CPUDefinition(arch: osType?.attr("arch") ?? "", machine: osType?.attr("machine") ?? "",
                                virtType: root.attr("type") ?? "",
                                emulator: root.child("devices")?.child("emulator")?.stringValue?.trimmed ?? "")
        if let e = root.child("cpu") {
            let model = e.child("model")
            // libvirt's default mode for a <cpu> with a model is custom.
            cpu.mode = e.attr("mode") ?? (model != nil ? "custom" : nil)
            cpu.model = model?.stringValue?.trimmed.nonEmpty
            cpu.match = e.attr("match")
            cpu.check = e.attr("check")
            cpu.fallback = model?.attr("fallback")
            cpu.features = e.children(named: "feature").compactMap { f in
                guard let name = f.attr("name") else { return nil }
                return CPUDefinition.Feature(policy: f.attr("policy") ?? "require", name: name)
            }
        }
        return cpu
    }

    /// The `<cpu>` element for `virConnectCompareHypervisorCPU`, built with the XML
    /// library from a definition that passed ``Validation/cpuDefinition(_:)``.
    static func build(_ cpu: CPUDefinition) -> String {
        var attributes: [(String, String)] = []
        if let mode = cpu.mode { attributes.append(("mode", mode)) }
        if let match = cpu.match { attributes.append(("match", match)) }
        if let check = cpu.check { attributes.append(("check", check)) }
        let element = XMLElement.make("cpu", attributes)
        if let model = cpu.model {
            let m = XMLElement.make("model", cpu.fallback.map { [("fallback", $0)] } ?? [])
            m.stringValue = model
            element.addChild(m)
        }
        for f in cpu.features { element.addChild(XMLElement.make("feature", [("policy", f.policy), ("name", f.name)])) }
        return element.xmlString
    }

    /// The host UUID of libvirt's capabilities XML (`<capabilities><host><uuid>`), or nil
    /// when it has none (libvirt's test driver; a real daemon always reports one).
    static func hostUUID(capabilities xml: String) throws(AgentError) -> String? {
        let document = try SafeXML.document(xml, what: "libvirt's capabilities XML")
        guard let uuid = document.rootElement()?.child("host")?.child("uuid")?.stringValue?.trimmed, !uuid.isEmpty else { return nil }
        return uuid.lowercased()
    }

    /// The host UUID of the daemon behind `connection`. Blocking.
    /// - Throws: `unavailable` when libvirt reports none: the gate cannot tell hosts apart.
    static func hostUUID(_ connection: LibvirtConnection) throws(AgentError) -> String {
        let xml = try lv { try connection.capabilities() }
        guard let uuid = try hostUUID(capabilities: xml) else {
            let uri = (try? connection.uri) ?? "?"
            throw AgentError(.unavailable, "libvirt at \(uri) reports no host UUID (<host><uuid> of virsh capabilities); the migration gate needs it to tell hosts apart")
        }
        return uuid
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
    var nonEmpty: String? { isEmpty ? nil : self }
}
