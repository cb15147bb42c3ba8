import AgentAPI
import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation

/// `storagectl check VM --to HOST`: is this migration going to work, asked now.
public struct CheckCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check, fresh from the agents, whether VM can migrate to HOST now.",
        discussion: """
            Finds the compute host that defines VM, then asks its agent and HOST's agent \
            everything at once (nothing is cached) and prints one line per check: pass, \
            warn, fail or skip, the check's name, what it measured, and for a warn or a fail \
            one sentence saying what to do (after ->). migrate runs the same checks first \
            and refuses on any fail.

            CHECKS
              storage-ready      every disk is on the share; HOST sees each one and
                                 reads a nonce the source writes now (share's VERIFY)
              disks              no local disk; live: every file disk on a file
                                 system libvirt takes as shared (nfs, ceph, gfs2, ...)
                                 with cache=none or directsync
              destination-pool   the disks' pool exists on HOST and is active (fail),
                                 autostarted (warn)
              libvirt-reachable  the source's libvirtd opens HOST's migration-uri
              migration-ports    the source connects to a listener HOST opens in
                                 migration-ports, and to the URI's libvirt port
                                 (16509 tcp, 16514 tls, 22 ssh)
              cpu                HOST's libvirt can run the VM's CPU (unknown: warn)
              memory             HOST's free memory < the VM's: fail; < the VM's +
                                 max(10 %, 256 MiB): warn
              name-uuid          no domain of the VM's name or UUID runs on HOST,
                                 none else has them, the libvirt host UUIDs differ
              dirty-rate         live and running: the dirty rate over a window
                                 (default 1 s) against the bandwidth measured now
                                 between the hosts, or --bandwidth if lower: warn
                                 above 50 %, fail at 100 %
              gate-armed         HOST's migration hook is installed and loaded

            --live is the default for a running VM, --offline for a shut-off one; checks \
            that do not apply to the mode are printed as skip with the reason. A check whose \
            agent call failed fails with the agent's words. docs/migration.md has every \
            threshold and remedy.

            --json prints {"vm", "source", "destination", "uri", "mode", "state", "ok", \
            "checks": [{"name", "result", "measured": {...}, "sentence", "remedy", \
            "code"}], "milliseconds"}.

            EXIT STATUS
              0   no check failed (warnings allowed)
              64  bad arguments (unknown destination, ...)
              65  a check failed, or the mode does not fit the VM's state
              66  the VM was not found
              69  an agent could not be reached
              75  an agent timed out or was busy
              77  an agent refused this client
            """)

    @OptionGroup public var global: GlobalOptions

    @Argument(help: "The libvirt domain name.")
    public var vm: String

    @Option(name: .customLong("to"), help: ArgumentHelp("The destination compute host.", valueName: "host"))
    public var to: String

    @Flag(name: .customLong("live"), help: "Check a live migration (default for a running VM).")
    public var live = false

    @Flag(name: .customLong("offline"), help: "Check an offline migration of a shut-off VM's definition (default for a shut-off VM).")
    public var offline = false

    @Option(name: .customLong("bandwidth"), help: ArgumentHelp("The migration's bandwidth cap the dirty rate is compared with (when lower than the link's).", valueName: "MiB/s"))
    public var bandwidth: UInt64?

    @Option(name: .customLong("dirty-rate-seconds"), help: ArgumentHelp("The dirty-rate window (1 to 60, default 1).", valueName: "seconds"))
    public var dirtyRateSeconds: Int = 1

    @Flag(name: .customLong("json"), help: "Print one JSON document.")
    public var json = false

    public init() {}

    public func validate() throws {
        try validateDomainName(vm)
        try validateMigrationFlags(live: live, offline: offline, bandwidth: bandwidth, dirtyRateSeconds: dirtyRateSeconds)
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let options = CheckOptions(vm: vm, to: to, mode: live ? .live : offline ? .offline : nil, bandwidthMiB: bandwidth,
                                       dirtyRateSeconds: dirtyRateSeconds)
            let outcome = try await LiveAgentCaller.with(inventory, connectTimeout: global.timeoutDuration) { caller in
                await FlowReport.capture { () throws(ShareFailure) in
                    try await CheckFlow(inventory: inventory, caller: caller).run(options)
                }
            }
            switch outcome {
            case .failure(let error):
                if json { print((try? ShareFormatting.json(failure: error)) ?? "{}") } else { printError("storagectl: check \(vm): \(error)") }
                throw ExitCode(ExitStatus.code(for: error.error.code))
            case .success(let report):
                print(json ? try CheckFormatting.json(report) : CheckFormatting.text(report), terminator: json ? "\n" : "")
                if report.exitStatus != 0 { throw ExitCode(report.exitStatus) }
            }
        }
    }
}

/// The flags `check` and `migrate` share.
func validateMigrationFlags(live: Bool, offline: Bool, bandwidth: UInt64?, dirtyRateSeconds: Int) throws {
    if live && offline { throw ValidationError("--live and --offline exclude each other") }
    if let b = bandwidth, b == 0 || b > 1 << 20 { throw ValidationError("--bandwidth must be 1 to 1048576 MiB/s") }
    guard (1...60).contains(dirtyRateSeconds) else { throw ValidationError("--dirty-rate-seconds must be 1 to 60") }
}
