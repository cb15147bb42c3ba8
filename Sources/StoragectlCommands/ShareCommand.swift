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
            clients only), makes the libvirt pool ready on each of them, and moves the VM's \
            local disks into the share in one of two ways:

            live (the default for a running VM): libvirt's block copy (QEMU's drive mirror) \
            copies each disk into the share while the VM runs (qcow2 stays qcow2, sparse stays \
            sparse); once every mirror is synchronised all disks are pivoted onto the copies \
            and the persistent definition names them (the original definition and images are \
            kept). The VM never stops. There is no content digest to compare while the guest \
            writes: what is checked is that each mirror was synchronised at its pivot and that \
            every destination sees each copy with its format and virtual size. Ctrl-C before \
            the pivot cancels the block copies (the VM stays on its original disks; exit \
            status 130); after it, the VM is on the share and a re-run finishes.

            offline (a shut-off VM, or --offline): the copy engine copies each disk over NFS \
            (sparse, verified by its content digest, written under a temporary name), the \
            storage host computes each copy's content digest on its own disk and compares it \
            (see storagectl digest --help), and the VM is redefined onto the shared copies.

            Either way every destination must see the copies and a nonce written by the source \
            before the VM counts as ready. Every step is idempotent and derived from what the \
            agents report: run share again after any failure and it continues where it \
            stopped; a finished copy is never redone, a running one (or mirror) is joined. \
            Destinations default to every other compute host of the inventory. --dry-run \
            prints the plan, including which mode it would use.

            With several storage hosts in the inventory, a VM goes to --storage NAME, or to \
            the storage host its shared disks are on already, or else to the one with the \
            most free space (SPACE) whose NFS server the source and every destination reach \
            (port 2049). A VM's disks are always on one storage host.

            With a CephFS gateway cluster ([storage NAME] with gateway lines), every gateway \
            exports the share and compute hosts attach through the cluster's floating address \
            (nfs-server), so all of them use the gateway that holds it. When that gateway \
            dies, its standby takes the address over (keepalived) and QEMU reconnects by \
            itself, but the inodes the dead gateway touched stay blocked in CephFS until its \
            session goes: --repair evicts the dead gateway's CephFS sessions through a healthy \
            gateway, brings every healthy gateway's export in line and checks that each compute \
            host reaches the floating address. It does not touch the VM or its disks; \
            storagectl status and check say when it is needed (docs/storage.md).

            EXIT STATUS
              0   the VM is ready (or, with --dry-run, the plan was printed)
              64  bad arguments (unknown destination, ...)
              65  refused by the current state (--offline on a running VM, not
                  enough space, a conflicting pool, a file in a live copy's way)
              66  the VM was not found
              69  an agent could not be reached
              75  busy or timed out: run share again
              130 interrupted (Ctrl-C): before the pivot nothing changed;
                  run share again
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

    @Option(name: .customLong("storage"), help: ArgumentHelp("The storage host to put the VM on (default: the one its shared disks are on, else the one with the most free space that the source and every destination reach).", valueName: "name"))
    public var storage: String?

    @Flag(name: .customLong("repair"), help: "For a VM on a CephFS gateway cluster after a gateway died: evict the dead gateway's CephFS sessions, re-export on every healthy gateway, check that the compute hosts reach the floating address. The VM's disks are not touched.")
    public var repair = false

    @Flag(name: .customLong("dry-run"), help: "Print the plan and change nothing.")
    public var dryRun = false

    @OptionGroup public var copyMode: CopyModeOptions

    @Flag(name: .customLong("json"), help: "Print one JSON document with the result (no progress).")
    public var json = false

    @Flag(name: .customLong("json-lines"), help: "Print JSON Lines as it runs: step, note and progress records, then result or failure.")
    public var jsonLines = false

    public init() {}

    public func validate() throws {
        guard !(json && jsonLines) else { throw ValidationError("--json and --json-lines exclude each other") }
        guard !repair || (to.isEmpty && storage == nil && !dryRun) else {
            throw ValidationError("--repair takes only the VM (and --from): it changes no destination, storage host or copy")
        }
        guard AttachMode(rawValue: attach) != nil else { throw ValidationError("--attach must be mount or libnfs") }
        try validateDomainName(vm)
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let display = ShareDisplay(mode: jsonLines ? .jsonLines : json ? .quiet : (isatty(1) == 1 ? .terminal : .plain))
            let options = ShareOptions(vm: vm, from: from, to: to, attach: AttachMode(rawValue: attach)!, dryRun: dryRun,
                                       mode: copyMode.mode, bandwidthMiB: copyMode.bandwidth, storage: storage)
            if repair {
                let vm = self.vm, from = self.from
                let outcome = try await LiveAgentCaller.with(inventory, connectTimeout: global.timeoutDuration) { caller in
                    await FlowReport.capture { () throws(ShareFailure) in
                        try await RepairFlow(inventory: inventory, caller: caller, emit: { display.show($0) }).run(vm: vm, from: from)
                    }
                }
                try FlowReport.finish("share --repair", vm: vm, json: json, display: display, outcome,
                                      summary: ShareFormatting.summary, encode: { try ShareFormatting.json($0, compact: $1) })
                return
            }
            let (interrupted, _) = Interrupts.install(onlyWhileWaited: true)
            let outcome = try await LiveAgentCaller.with(inventory, connectTimeout: global.timeoutDuration) { caller in
                await FlowReport.capture { () throws(ShareFailure) in
                    try await ShareFlow(inventory: inventory, caller: caller, emit: { display.show($0) }, interrupted: interrupted).run(options)
                }
            }
            try FlowReport.finish("share", vm: vm, json: json, display: display, outcome,
                                  summary: ShareFormatting.summary, encode: { try ShareFormatting.json($0, compact: $1) })
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
