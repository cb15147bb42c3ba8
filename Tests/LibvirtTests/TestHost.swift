import Foundation
import Libvirt

/// A simulated libvirt host: a private test-driver XML file in a fresh temp directory,
/// so each connection has its own state (unlike the shared `test:///default`).
final class TestHost {
    let directory: URL
    let uri: String

    init(name: String = "host", nodeXML: String = TestHost.defaultNodeXML) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("libvirt-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("\(name).xml")
        try nodeXML.write(to: file, atomically: true, encoding: .utf8)
        uri = "test://" + file.path
    }

    deinit {
        try? FileManager.default.removeItem(at: directory)
    }

    func connect() throws -> LibvirtConnection {
        try LibvirtConnection(uri: uri)
    }

    static func domainXML(name: String, uuid: String, disk: String, shutoff: Bool) -> String {
        """
        <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
          <name>\(name)</name>
          <uuid>\(uuid)</uuid>
          <memory unit='MiB'>128</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64'>hvm</type></os>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='\(disk)'/>
              <target dev='vda' bus='virtio'/>
            </disk>
          </devices>
          \(shutoff ? "<test:runstate>5</test:runstate>" : "")
        </domain>
        """
    }

    static let defaultNodeXML = """
        <node>
          <cpu>
            <mhz>2000</mhz><model>x86_64</model><active>2</active>
            <nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
          </cpu>
          <memory>4194304</memory>
          \(domainXML(name: "wanderer1", uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f",
                      disk: "/var/lib/libvirt/images/wanderer1.qcow2", shutoff: true))
          \(domainXML(name: "runner", uuid: "3c36e4b8-0b50-4bb4-a1d0-6a0a3bd6b3a1",
                      disk: "/var/lib/libvirt/images/runner.qcow2", shutoff: false))
          <pool type='dir'>
            <name>default</name>
            <uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
            <capacity>107374182400</capacity>
            <allocation>0</allocation>
            <available>107374182400</available>
            <source/>
            <target><path>/var/lib/libvirt/images</path></target>
            <volume type='file'>
              <name>wanderer1.qcow2</name>
              <capacity>10737418240</capacity>
              <allocation>1073741824</allocation>
              <target><path>/var/lib/libvirt/images/wanderer1.qcow2</path></target>
            </volume>
          </pool>
        </node>
        """

    static func netfsPoolXML(name: String, server: String, export: String, target: String) -> String {
        """
        <pool type='netfs'>
          <name>\(name)</name>
          <source>
            <host name='\(server)'/>
            <dir path='\(export)'/>
            <format type='nfs'/>
          </source>
          <target><path>\(target)</path></target>
        </pool>
        """
    }
}

/// Captures what is written to the process's stderr (fd 2) while `body` runs, then
/// writes it back so nothing is lost. Other tests running in parallel may add their
/// own lines to the capture: check for specific content, not for emptiness.
func capturingStandardError<T>(_ body: () throws -> T) rethrows -> (result: T, stderr: String) {
    fflush(nil)
    let saved = dup(2)
    let file = FileManager.default.temporaryDirectory
        .appendingPathComponent("stderr-\(UUID().uuidString)").path
    let fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    dup2(fd, 2)
    defer {
        fflush(nil)
        dup2(saved, 2)
        close(saved)
        close(fd)
        unlink(file)
    }
    let result = try body()
    fflush(nil)
    let captured = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
    if !captured.isEmpty {
        _ = captured.withCString { write(saved, $0, strlen($0)) }
    }
    return (result, captured)
}
