import AgentAPI
import AgentProtocol
import AgentRuntime
import ComputeAgentCore
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A simulated compute host: libvirt's test driver with a private node file, and a
/// temporary directory holding the images, a share directory and the state dir.
///
/// Each host has a node file of its own (`test:///DIR/host.xml`): libvirt keeps such a
/// connection's state private to it, so hosts never see each other's domains or pools
/// (`test:///default` would be one state shared by the whole process).
public final class SimHost: @unchecked Sendable {
    public let dir: String
    public let uri: String
    public var images: String { dir + "/images" }
    public var share: String { dir + "/share" }
    public var state: String { dir + "/state" }
    public let handler: ComputeAgentHandler

    /// `fixtures`: the domains the compute agent's own tests use (wanderer1 with a local
    /// qcow2 disk and an NFS network disk, runner, layered) besides `extraDomains`.
    /// `placed`: more domains, given the host's directory (for disks under its share);
    /// `configure`: changes to the agent's configuration (share roots: the share and
    /// /var/lib/libvirt/shared-images; images root: the images directory).
    public init(extraDomains: String = "", pools: String = "", fixtures: Bool = true, placed: (String) -> String = { _ in "" },
                configure: (inout ComputeAgentConfiguration) -> Void = { _ in }) async throws {
        var template = Array("/tmp/sctl-cac-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw AgentError(.internal, "mkdtemp failed")
        }
        let dir = String(cString: p)
        self.dir = dir
        let images = dir + "/images", share = dir + "/share", state = dir + "/state"
        for d in [images, share] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        if fixtures { try await Self.qemuImg(["create", "-q", "-f", "qcow2", images + "/wanderer1.qcow2", "64M"]) }
        let standard = !fixtures ? "" : """
              \(Self.domain("wanderer1", "6695eb01-f6a4-8304-79aa-97f2502e193f", shutoff: true, disks: """
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2' cache='none'/>
                  <source file='\(images)/wanderer1.qcow2'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <disk type='network' device='disk'>
                  <driver name='qemu' type='raw'/>
                  <source protocol='nfs' name='/srv/data.img'><host name='198.18.0.1'/></source>
                  <target dev='vdb' bus='virtio'/>
                </disk>
                """))
              \(Self.domain("runner", "3c36e4b8-0b50-4bb4-a1d0-6a0a3bd6b3a1", shutoff: false, disks: """
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='\(images)/runner.qcow2'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                """))
              \(Self.domain("layered", "1f0e2b9c-3a3b-4c5d-8e9f-0a1b2c3d4e5f", shutoff: true, disks: """
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='\(images)/wanderer1.qcow2'/>
                  <backingStore type='file'><format type='qcow2'/><source file='/var/lib/libvirt/images/base.qcow2'/><backingStore/></backingStore>
                  <target dev='vda' bus='virtio'/>
                </disk>
                """))
            """
        let node = """
            <node>
              <cpu><mhz>2000</mhz><model>x86_64</model><active>2</active>
                <nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
              <memory>4194304</memory>
              \(standard)
              \(extraDomains)
              \(placed(dir))
              \(pools)
            </node>
            """
        let file = dir + "/host.xml"
        try node.write(toFile: file, atomically: true, encoding: .utf8)
        let uri = "test://" + file
        self.uri = uri
        var c = ComputeAgentConfiguration()
        c.libvirtURI = uri
        c.stateDir = state
        c.progressInterval = .milliseconds(50)
        c.shareRoots = [share, "/var/lib/libvirt/shared-images"]
        c.imagesRoot = images
        configure(&c)
        self.handler = ComputeAgentHandler(configuration: c, hypervisor: NoProbe(), hook: FixedHookProbe())
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// A domain of the test driver's node file, shut off or running.
    public static func domain(_ name: String, _ uuid: String, shutoff: Bool, disks: String) -> String {
        """
        <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
          <name>\(name)</name><uuid>\(uuid)</uuid>
          <memory unit='MiB'>128</memory><vcpu>1</vcpu>
          <os><type arch='x86_64'>hvm</type></os>
          <devices>\(disks)</devices>
          \(shutoff ? "<test:runstate>5</test:runstate>" : "")
        </domain>
        """
    }

    public static func qemuImg(_ args: [String]) async throws {
        // posix_spawn, polled (TestSupport): no cooperative-pool thread waits on a child
        let result = try await runProgram("/usr/bin/qemu-img", args)
        guard result.status == 0 else { throw AgentError(.internal, "qemu-img \(args) failed: \(result.stderr)") }
    }
}

/// A hypervisor that is always healthy (the test driver needs no probe).
/// A migration hook that reports a fixed status (installed and loaded unless told otherwise).
public struct FixedHookProbe: MigrationHookProbe {
    public var fixed: HookStatus
    public init(_ status: HookStatus = HookStatus(installed: true, loaded: true, detail: "test: installed and loaded")) { fixed = status }
    public func status() async -> HookStatus { fixed }
}

public struct NoProbe: HypervisorProbe {
    public init() {}
    public func check() async -> HealthCheck { HealthCheck("libvirt", ok: true, detail: "test") }
}
