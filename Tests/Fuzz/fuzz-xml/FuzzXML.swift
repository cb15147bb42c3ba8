// fuzz-xml: the libvirt XML readers of the compute agent (docs/fuzzing.md): domain XML
// (`virsh dumpxml`: DOMAIN, ADOPT, RESTORE read its disks; ADOPT rewrites them) and pool
// XML (`virsh pool-dumpxml`: POOL-ENSURE compares an existing pool). libvirt hands back
// what a domain's owner defined, and FoundationXML is known to crash (SIGSEGV) on some
// documents: every reader goes through `SafeXML.document`, whose guard this target tests.
// A crash here, SIGSEGV included, is a finding.
@testable import ComputeAgentCore
import AgentAPI
import AgentProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzXML(_ start: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    // libvirt's XML reaches the agent as a C string: UTF-8, no NUL.
    guard !bytes.contains(0), let xml = String(validating: bytes, as: UTF8.self) else { return 0 }
    domain(xml)
    pool(xml)
    return 0
}

private func domain(_ xml: String) {
    _ = try? DomainDefinition.identity(xml)
    guard let disks = try? DomainDefinition.disks(xml) else { return }
    var placements: [String: DomainDefinition.Placement] = [:]
    for (index, disk) in disks.enumerated() where !disk.target.isEmpty {
        placements[disk.target] = index % 2 == 0
            ? .file(path: "/var/lib/libvirt/shared-images/\(disk.target).qcow2")
            : .nfs(server: "storage.example", name: "/srv/images/\(disk.target).qcow2")
    }
    guard let rewritten = try? DomainDefinition.rewrite(xml, placements: placements) else { return }
    // What ADOPT writes is what libvirt is asked to define and what RESTORE reads back.
    guard let again = try? DomainDefinition.disks(rewritten) else {
        fatalError("the rewritten domain XML does not read back: \(rewritten.prefix(2048).debugDescription)")
    }
    for disk in again {
        guard let placement = placements[disk.target] else { continue }
        let expected: String
        switch placement {
        case .file(let path): expected = path
        case .nfs(let server, let name): expected = "nfs://\(server)\(name)"
        }
        if disk.source != expected {
            fatalError("disk \(disk.target) reads back as \(String(describing: disk.source)), not \(expected)")
        }
    }
}

private func pool(_ xml: String) {
    guard let existing = try? ExistingPool(xml: xml) else { return }
    let spec = PoolSpec(name: existing.name, server: "storage.example", export: "/srv/images",
                        target: "/var/lib/libvirt/shared-images", attach: .mount, nfsVersion: 4)
    _ = existing.differences(from: spec, checkMountOptions: true)
    // The pool XML storagectl writes must compare equal to its own spec.
    guard let mine = try? ExistingPool(xml: spec.poolXML()) else { fatalError("our own pool XML does not read back") }
    if !mine.differences(from: spec, checkMountOptions: true).isEmpty && !spec.name.isEmpty {
        fatalError("our own pool XML differs from its spec: \(mine.differences(from: spec, checkMountOptions: true))")
    }
}
