/// Everything the compute agent needs to know about its host.
public struct ComputeAgentConfiguration: Sendable {
    /// libvirt connection URI (virsh(1) `-c`).
    public var libvirtURI: String = "qemu:///system"

    public init() {}
}
