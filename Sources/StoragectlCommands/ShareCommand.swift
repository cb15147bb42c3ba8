import AgentAPI
import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `storagectl share VM`: the provisioning flow.
public struct ShareCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "share",
        abstract: "Put a VM's disks on shared NFS storage so its migration peers can run it.",
        discussion: """
            Finds the compute host that defines VM (or --from), then: exports the share on the \
            storage host to the source and every destination (rw, no_root_squash, explicit \
            clients only), makes the libvirt pool ready on each of them, copies every local \
            disk of the (shut off) VM into the share over NFS (sparse, verified by its content \
            digest, written under a temporary name), has the storage host compute each copy's \
            content digest on its own disk and compares it with the copy's (see storagectl \
            digest --help), proves every destination sees the copies and a nonce written by \
            the source, and redefines the VM onto the shared copies (the original images are \
            kept).

            Every step is idempotent and derived from what the agents report: run share again \
            after any failure and it continues where it stopped; a finished copy is never \
            redone, a running one is joined. Destinations default to every other compute host \
            of the inventory.

            EXIT STATUS
              0   the VM is ready (or, with --dry-run, the plan was printed)
              64  bad arguments (unknown destination, ...)
              65  refused by the current state (running VM, not enough space, conflicting pool)
              66  the VM was not found
              69  an agent could not be reached
              75  busy or timed out: run share again
            """)

    @OptionGroup public var global: GlobalOptions

    @Argument(help: "The libvirt domain name.")
    public var vm: String

    @Option(name: .customLong("from"), help: ArgumentHelp("The compute host that defines the VM (default: ask every compute host).", valueName: "host"))
    public var from: String?

    @Option(name: .customLong("to"), help: ArgumentHelp("A destination compute host (repeatable; default: every other compute host).", valueName: "host"))
    public var to: [String] = []

    @Option(name: .customLong("attach"), help: ArgumentHelp("mount: a libvirt netfs pool (kernel NFS mount); libnfs: NFS network disks opened by QEMU, no mount.", valueName: "mount|libnfs"))
    public var attach: String = "mount"

    @Flag(name: .customLong("dry-run"), help: "Print the plan and change nothing.")
    public var dryRun = false

    @Flag(name: .customLong("json"), help: "Print one JSON document with the result (no progress).")
    public var json = false

    public init() {}

    public func validate() throws {
        guard AttachMode(rawValue: attach) != nil else { throw ValidationError("--attach must be mount or libnfs") }
        try validateDomainName(vm)
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let display = ShareDisplay(mode: json ? .quiet : (isatty(1) == 1 ? .terminal : .plain))
            let options = ShareOptions(vm: vm, from: from, to: to, attach: AttachMode(rawValue: attach)!, dryRun: dryRun)
            let outcome = try await LiveAgentCaller.with(inventory, connectTimeout: global.timeoutDuration) { caller in
                await FlowReport.capture { () throws(ShareFailure) in
                    try await ShareFlow(inventory: inventory, caller: caller, emit: { display.show($0) }).run(options)
                }
            }
            try FlowReport.finish("share", vm: vm, json: json, display: display, outcome,
                                  summary: ShareFormatting.summary, encode: ShareFormatting.json)
        }
    }
}

/// Refuses what cannot be a libvirt domain name before any agent is asked (the agents
/// check again; they never paste a name into XML or argv).
func validateDomainName(_ vm: String) throws {
    guard !vm.isEmpty, vm.utf8.count <= 200, !vm.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "/" }) else {
        throw ValidationError("'\(vm)' is not a libvirt domain name")
    }
}
