import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `storagectl unshare VM`: the way back from shared storage.
public struct UnshareCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "unshare",
        abstract: "Bring a shared VM back to local disks on the host that defines it.",
        discussion: """
            Finds the compute host that defines VM (or --from), then brings every disk of the VM \
            on the share back to that host's local storage, in a directory of the VM's own \
            (/var/lib/libvirt/images/<VM>/<file name>; never over an existing file or another \
            VM's disk), in one of two ways:

            live (the default for a running VM): libvirt's block copy mirrors each shared disk \
            into a new local file while the VM runs, all disks are pivoted once synchronised, \
            and the persistent definition names the local files. The VM never stops. Ctrl-C \
            before the pivot cancels the block copies (the VM stays on the share; exit status \
            130).

            offline (a shut-off VM, or --offline): the copy engine copies each disk, verified by \
            its content digest, written under a temporary name and renamed only once verified, \
            and the VM is redefined onto the local copies (the definition saved when it was \
            shared, else the current one with its disks moved).

            Then unshare checks that no disk of the VM is left on the share, and removes the \
            export clients that no shared VM needs any more (compute hosts that define no \
            domain with a disk on the share).

            Nothing is deleted: the copies on the share stay, and their paths are printed so \
            they can be removed by hand. Every step is idempotent: run unshare again after any \
            failure and it continues; on a VM already on local disks it changes nothing.

            EXIT STATUS
              0   the VM is on local disks
              65  refused by the current state (--offline on a running VM,
                  a file in the way, ...)
              66  the VM was not found
              69  an agent could not be reached
              75  busy or timed out: run unshare again
              130 interrupted (Ctrl-C): before the pivot nothing changed;
                  run unshare again
            """)

    @OptionGroup public var global: GlobalOptions

    @Argument(help: "The libvirt domain name.")
    public var vm: String

    @Option(name: .customLong("from"), help: ArgumentHelp("The compute host that defines the VM (default: ask every compute host).", valueName: "host"))
    public var from: String?

    @OptionGroup public var copyMode: CopyModeOptions

    @Flag(name: .customLong("json"), help: "Print one JSON document with the result (no progress).")
    public var json = false

    @Flag(name: .customLong("json-lines"), help: "Print JSON Lines as it runs: step, note and progress records, then result or failure.")
    public var jsonLines = false

    public init() {}

    public func validate() throws {
        guard !(json && jsonLines) else { throw ValidationError("--json and --json-lines exclude each other") }
        try validateDomainName(vm)
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let display = ShareDisplay(mode: jsonLines ? .jsonLines : json ? .quiet : (isatty(1) == 1 ? .terminal : .plain))
            let options = UnshareOptions(vm: vm, from: from, mode: copyMode.mode, bandwidthMiB: copyMode.bandwidth)
            let (interrupted, _) = Interrupts.install(onlyWhileWaited: true)
            let outcome = try await LiveAgentCaller.with(inventory, connectTimeout: global.timeoutDuration) { caller in
                await FlowReport.capture { () throws(ShareFailure) in
                    try await UnshareFlow(inventory: inventory, caller: caller, emit: { display.show($0) }, interrupted: interrupted).run(options)
                }
            }
            try FlowReport.finish("unshare", vm: vm, json: json, display: display, outcome,
                                  summary: UnshareFormatting.summary, encode: { try UnshareFormatting.json($0, compact: $1) })
        }
    }
}
