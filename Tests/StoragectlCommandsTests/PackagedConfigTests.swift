import AgentRuntime
import ConfigFile
import Foundation
import Testing
import TestSupport
@testable import StorageAgentCore
@testable import ComputeAgentCore
@testable import StoragectlCommands

/// The conffiles the Debian packages install in /etc/storagectl (debian/conf/): every
/// key the programs know is there, commented out, with the default the program really
/// has, and the files as shipped change nothing. Tests/Packaging/run checks that the
/// installed programs read them.
@Suite("packaged configuration files")
struct PackagedConfigTests {
    static func text(_ name: String) throws -> String {
        try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("debian/conf/" + name), encoding: .utf8)
    }

    /// The file with its example lines (`#key = value`, `#[section]`) made real.
    static func uncommented(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.range(of: #"^#(\[[a-z -]+\]|[a-z-]+ = .*)$"#, options: .regularExpression) != nil ? String(line.dropFirst()) : String(line)
        }.joined(separator: "\n")
    }

    /// Keys shown commented out: `#key = value`.
    static func commentedKeys(_ text: String) -> Set<String> {
        Set(text.split(separator: "\n").compactMap { line -> String? in
            guard line.range(of: #"^#[a-z-]+ = "#, options: .regularExpression) != nil else { return nil }
            return String(line.dropFirst().prefix { $0 != " " })
        })
    }

    @Test("storage-agent.conf: every key, commented, with the agent's defaults")
    func storageAgent() throws {
        let text = try Self.text("storage-agent.conf")
        let shipped = try ConfigFile.parse(text, path: "storage-agent.conf")
        #expect(shipped.sections.allSatisfy { $0.entries.isEmpty })
        #expect(Self.commentedKeys(text) == AgentOptions.configKeys.union(StorageAgentCommand.sectionKeys))
        let examples = try ConfigFile.parse(Self.uncommented(text), path: "storage-agent.conf")
        let c = try StorageAgentCommand.parse([]).resolved(examples)
        let d = StorageAgentConfiguration()
        #expect(c.exportsFile == d.exportsFile && c.exportRoot == d.exportRoot && c.backend == d.backend)
        #expect(c.etabPath == d.etabPath && c.ganeshaExportsFile == d.ganeshaExportsFile && c.ganeshaPidFile == d.ganeshaPidFile)
        #expect(c.nfsServer == d.nfsServer && c.lockTimeout == d.lockTimeout && c.verifiesExportList == d.verifiesExportList)
        #expect(c.cephFilesystem == d.cephFilesystem && c.cephUser == d.cephUser && c.cephAdminID == d.cephAdminID && c.cephConf == d.cephConf)
        var options = try AgentOptions.parse([])
        try options.merge(examples)
        #expect(options.limits().maxConnections == ServerLimits().maxConnections)
        #expect(options.limits().readTimeout == ServerLimits().readTimeout)
        #expect(options.tlsFiles == TLSFiles.libvirtServer && options.logLevel == "info" && !options.plainTCP)
    }

    @Test("compute-agent.conf: every key, commented, with the agent's defaults")
    func computeAgent() throws {
        let text = try Self.text("compute-agent.conf")
        let shipped = try ConfigFile.parse(text, path: "compute-agent.conf")
        #expect(shipped.sections.allSatisfy { $0.entries.isEmpty })
        #expect(Self.commentedKeys(text) == AgentOptions.configKeys.union(ComputeAgentCommand.sectionKeys))
        let c = try ComputeAgentCommand.parse([]).resolved(ConfigFile.parse(Self.uncommented(text), path: "compute-agent.conf"))
        let d = ComputeAgentConfiguration()
        #expect(c.libvirtURI == d.libvirtURI && c.stateDir == d.stateDir && c.shareRoots == d.shareRoots)
        #expect(c.imagesRoot == d.imagesRoot && c.copyVerification == d.copyVerification)
    }

    @Test("storagectl.conf: no host until the administrator names them; the examples are a valid inventory with the defaults")
    func inventory() throws {
        let text = try Self.text("storagectl.conf")
        let shipped = try ConfigFile.parse(text, path: "storagectl.conf")
        #expect(shipped.sections.isEmpty)
        #expect(try Inventory.tlsFiles(shipped) == TLSFiles.libvirtClient)
        #expect(throws: ConfigError.self) { try Inventory(shipped) }
        let examples = try Inventory(ConfigFile.parse(Self.uncommented(text), path: "storagectl.conf"))
        #expect(examples.exportRoot == "/var/lib/libvirt/shared-images" && examples.poolName == "shared-images")
        #expect(examples.nfsServer == examples.storage.name && examples.tls == TLSFiles.libvirtClient)
        let compute = try #require(examples.compute.first)
        #expect(compute.migrationTarget == MigrationURI.default(for: compute.name))
        #expect(compute.migrationPorts == MigrationURI.defaultPorts)
    }

    @Test("the inventory's [tls] section is read without any host (call --endpoint)")
    func tlsWithoutHosts() throws {
        let file = try ConfigFile.parse("# hosts to come\n[tls]\ncert = /etc/pki/admin/cert.pem\n", path: "inv")
        let tls = try Inventory.tlsFiles(file)
        #expect(tls.certificate == "/etc/pki/admin/cert.pem" && tls.ca == TLSFiles.libvirtClient.ca)
        #expect(throws: ConfigError.self) { try Inventory.tlsFiles(ConfigFile.parse("[tls]\nkey = relative.pem\n", path: "inv")) }
    }
}
