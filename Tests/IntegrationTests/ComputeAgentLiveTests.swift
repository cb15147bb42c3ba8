import Foundation
import Testing
import TestSupport

/// The built compute-agent binary, on a unix socket, against libvirt's test driver (a
/// private node file) with its state dir and config file in a temporary directory.
@Suite("compute-agent binary (test driver)")
struct ComputeAgentLiveTests {
    static let node = """
        <node>
          <cpu><mhz>2000</mhz><model>x86_64</model><active>2</active>
            <nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
          <memory>4194304</memory>
          <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
            <name>w1</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
            <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
            <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
              <source file='/nonexistent/w1.qcow2'/><target dev='vda' bus='virtio'/></disk></devices>
            <test:runstate>5</test:runstate>
          </domain>
        </node>
        """

    @Test("serves DOMAIN, POOL-ENSURE (idempotent), RESTORE; --state-dir comes from the config file")
    func verbs() async throws {
        let dir = try TestSupport.temporaryDirectory("ca")
        defer { TestSupport.removeTree(dir) }
        try Self.node.write(toFile: dir + "/host.xml", atomically: true, encoding: .utf8)
        try "[compute-agent]\nstate-dir = \(dir)/state\nlibvirt-uri = test://\(dir)/host.xml\nshare-root = \(dir)\n"
            .write(toFile: dir + "/agent.conf", atomically: true, encoding: .utf8)
        let socket = dir + "/ca.sock"
        let child = try ChildProcess(try TestSupport.binary("compute-agent"),
                                     ["--listen", "unix:\(socket)", "--config", dir + "/agent.conf", "--log-level", "warning"],
                                     logDir: dir)
        defer { child.stop() }
        let up = try await TestSupport.waitUntil(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: socket) }
        try #require(up, "compute-agent did not listen: \(child.log)")
        let c = try RawSocket(unixPath: socket, timeout: 10)
        await c.send("HELLO version=1\n")
        #expect(await c.readLine()?.hasPrefix("OK version=1 agent=compute-agent") == true)

        await c.send("DOMAIN name=w1\n")
        let domain = await c.readResponse()
        #expect(domain.first?.hasPrefix("DATA disk=vda type=file device=disk source=/nonexistent/w1.qcow2 format=qcow2") == true, "\(domain)")
        #expect(domain.last?.hasPrefix("OK name=w1 uuid=6695eb01-f6a4-8304-79aa-97f2502e193f state=shut-off persistent=yes") == true, "\(domain)")

        let ensure = "POOL-ENSURE name=shared server=198.18.0.1 export=/srv/shared target=\(dir)/mnt\n"
        await c.send(ensure)
        #expect(await c.readResponse().last?.contains(" changed=yes ") == true)
        await c.send(ensure)
        #expect(await c.readResponse().last?.contains(" changed=no ") == true)

        await c.send("RESTORE domain=w1\n")
        #expect(await c.readResponse().last == "OK domain=w1 changed=no")
        await c.send("COPY domain=w1 pool=shared\n")
        let copy = await c.readResponse().last ?? ""
        #expect(copy.hasPrefix("ERR code=not-found"), "the image does not exist: \(copy)")

        child.signal(SIGTERM)
        #expect(try await child.wait(timeout: .seconds(5)) == 0, "\(child.log)")
    }
}
