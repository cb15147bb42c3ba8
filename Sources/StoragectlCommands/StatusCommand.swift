import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation

/// `storagectl status VM`.
public struct StatusCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show whether a shared VM is ready to run on its migration peers, asked fresh from the agents.",
        discussion: """
            Without VM: every VM that has a disk on the share (as the compute agents report \
            it). For each VM: the host that defines it, its disks (shared or local), and per compute host \
            whether it is an export client, whether it sees every shared disk (VERIFY through \
            its own pool or libnfs), and so whether it can run the VM.

            EXIT STATUS
              0   ready (every VM listed)
              1   not ready (at least one)
              66  no compute host defines VM
              69  an agent could not be reached
            """)

    @OptionGroup public var global: GlobalOptions

    @Argument(help: "The libvirt domain name (default: every VM with a disk on the share).")
    public var vm: String?

    @Flag(name: .customLong("json"), help: "Print one JSON document.")
    public var json = false

    public init() {}

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let vm = self.vm
            let statuses = try await LiveAgentCaller.with(inventory, connectTimeout: global.timeoutDuration) { caller in
                let flow = StatusFlow(inventory: inventory, caller: caller)
                if let vm { return [try await flow.status(vm)] }
                return try await flow.statusOfAll()
            }
            if json {
                let e = ShareFormatting.encoder()
                if vm != nil {
                    print(String(decoding: try e.encode(statuses[0]), as: UTF8.self))
                } else {
                    struct Doc: Encodable { var vms: [VMStatus] }
                    print(String(decoding: try e.encode(Doc(vms: statuses)), as: UTF8.self))
                }
            } else if statuses.isEmpty {
                print("no VM has a disk on the share (storagectl share VM puts one there)")
            } else {
                print(statuses.map(StatusFormatting.table).joined(separator: "\n"), terminator: "")
            }
            if statuses.contains(where: { !$0.ready }) { throw ExitCode(ExitStatus.failure) }
        }
    }
}
