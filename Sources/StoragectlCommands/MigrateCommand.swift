import AgentAPI
import AgentProtocol
import AgentRuntime
import ArgumentParser
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `storagectl migrate VM --to HOST`: check, then a peer-to-peer libvirt migration.
public struct MigrateCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Migrate VM to HOST through libvirt, after storagectl check passes.",
        discussion: """
            Runs storagectl check VM --to HOST first (the same code) and refuses if any check \
            fails, printing the failed lines; nothing skips the checks. Then the source's \
            compute agent migrates VM peer-to-peer through libvirt's API to HOST's \
            migration-uri (storagectl.conf; default qemu+tls://HOST/system), never with \
            VIR_MIGRATE_UNSAFE, and streams progress from libvirt's job statistics: a \
            progress bar on a terminal (processed/total, remaining, rate, memory pass, dirty \
            rate), a line every 5 s otherwise, one JSON record per line with --json.

            Ctrl-C or --timeout aborts the libvirt job from a second connection to the \
            source agent: the VM keeps running on the source and nothing of it is left on \
            HOST; storagectl then says where VM is. At the end it says where VM runs now, \
            how long it was paused (downtime) and how long the migration took.

            --live (default for a running VM) migrates it while it runs; --offline (default \
            for a shut-off VM) moves a shut-off VM's definition and needs --persistent; with \
            --undefine-source it is gone from the source. --bandwidth caps the transfer (and \
            is what check's dirty-rate compares with, when lower than the link); \
            --auto-converge throttles a guest that dirties memory faster than it is sent; \
            --postcopy switches to post-copy after the first pass (the guest then runs on \
            HOST while the rest of its memory follows: losing either host or the network then loses the guest).

            JSON (--json): one record per line
              {"type":"check","check":{...}}        as check --json
              {"type":"started","started":URI}
              {"type":"progress","progress":{...}}  done, total, remaining, rate,
                                                    iteration, dirty_rate, phase
              {"type":"aborting","aborting":WHY}    interrupted or timeout
              {"type":"result","result":{...}}      vm, runs_on, state_on_source,
                                                    state_on_destination,
                                                    downtime_ms, elapsed_ms,
                                                    aborted, error, ...
              {"type":"refused","refused":[...]}    the failed checks
              {"type":"failure","failure":{...}}    failed_step, host, code,
                                                    message, remedy

            The agents' own timeout is --agent-timeout here (--timeout is the migration's).

            EXIT STATUS
              0    VM migrated (the result says where it runs)
              64   bad arguments (--offline without --persistent, unknown destination, ...)
              65   refused: a check failed, or the migration failed on the current state
              66   the VM was not found
              69   an agent could not be reached
              75   an agent timed out or was busy
              77   an agent refused this client
              124  --timeout passed: the migration was aborted, VM still runs on the source
              130  Ctrl-C: the migration was aborted, VM still runs on the source
            """)

    @Option(name: .customLong("config"), help: ArgumentHelp("Inventory file (default /etc/storagectl/storagectl.conf).", valueName: "file"))
    public var config: String = Inventory.defaultPath

    @Option(name: .customLong("agent-timeout"), help: ArgumentHelp("Seconds to wait for each agent to connect (default 5).", valueName: "seconds"))
    public var agentTimeout: Double = 5

    @Argument(help: "The libvirt domain name.")
    public var vm: String

    @Option(name: .customLong("to"), help: ArgumentHelp("The destination compute host.", valueName: "host"))
    public var to: String

    @Flag(name: .customLong("live"), help: "Migrate a running VM while it runs (default for a running VM).")
    public var live = false

    @Flag(name: .customLong("offline"), help: "Move a shut-off VM's definition (default for a shut-off VM; needs --persistent).")
    public var offline = false

    @Flag(name: .customLong("persistent"), help: "Define the VM persistently on HOST (replacing a stale definition of it).")
    public var persistent = false

    @Flag(name: .customLong("undefine-source"), help: "Undefine the VM on the source once it has moved.")
    public var undefineSource = false

    @Option(name: .customLong("bandwidth"), help: ArgumentHelp("Cap the transfer at this rate.", valueName: "MiB/s"))
    public var bandwidth: UInt64?

    @Option(name: .customLong("timeout"), help: ArgumentHelp("Abort the migration after this long (the VM stays on the source).", valueName: "seconds"))
    public var timeout: Int?

    @Flag(name: .customLong("auto-converge"), help: "Throttle the guest's CPUs while it dirties memory faster than it is sent.")
    public var autoConverge = false

    @Flag(name: .customLong("postcopy"), help: "Switch to post-copy after the first pass.")
    public var postcopy = false

    @Option(name: .customLong("dirty-rate-seconds"), help: ArgumentHelp("check's dirty-rate window (1 to 60, default 1).", valueName: "seconds"))
    public var dirtyRateSeconds: Int = 1

    @Flag(name: .customLong("json"), help: "Print JSON Lines (check, progress, result).")
    public var json = false

    public init() {}

    public func validate() throws {
        try validateDomainName(vm)
        try validateMigrationFlags(live: live, offline: offline, bandwidth: bandwidth, dirtyRateSeconds: dirtyRateSeconds)
        guard agentTimeout > 0, agentTimeout <= 3600 else { throw ValidationError("--agent-timeout must be between 0 and 3600 seconds") }
        if let t = timeout, t < 1 || t > 7 * 86400 { throw ValidationError("--timeout must be 1 s to 7 days") }
        if offline {
            guard persistent else { throw ValidationError("--offline moves the definition: it needs --persistent") }
            guard !autoConverge, !postcopy, bandwidth == nil else {
                throw ValidationError("--offline copies no memory: --auto-converge, --postcopy and --bandwidth do not apply")
            }
        }
        if undefineSource, !persistent {
            throw ValidationError("--undefine-source without --persistent would leave VM defined nowhere once it stops")
        }
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: config)
            let display = MigrateDisplay(mode: json ? .json : (isatty(1) == 1 ? .terminal : .plain))
            let options = MigrateOptions(vm: vm, to: to, mode: live ? .live : offline ? .offline : nil, persistent: persistent,
                                         undefineSource: undefineSource, bandwidthMiB: bandwidth, timeoutSeconds: timeout,
                                         autoConverge: autoConverge, postcopy: postcopy, dirtyRateSeconds: dirtyRateSeconds)
            let (interrupted, interruptedAlready) = Interrupts.install()
            let outcome = try await LiveAgentCaller.with(inventory, connectTimeout: .milliseconds(Int64(agentTimeout * 1000))) { caller in
                await FlowReport.capture { () throws(ShareFailure) in
                    try await MigrateFlow(inventory: inventory, caller: caller, onEvent: { display.show($0) }).run(options, interrupted: interrupted,
                                                                                                                interruptedAlready: interruptedAlready)
                }
            }
            display.finish()
            switch outcome {
            case .failure(let error):
                if json { print(CheckFormatting.record("failure", FailureDocument(error))) } else { printError("storagectl: migrate \(vm): \(error)") }
                throw ExitCode(ExitStatus.code(for: error.error.code))
            case .success(.refused(let report)):
                if json { print(CheckFormatting.record("refused", report.failed)) } else {
                    FileHandle.standardError.write(Data(CheckFormatting.refusal(report).utf8))
                }
                throw ExitCode(report.exitStatus)
            case .success(.migrated(_, let result)):
                print(json ? CheckFormatting.record("result", result) : MigrateFormatting.summary(result), terminator: json ? "\n" : "")
            case .success(.aborted(_, let result)):
                print(json ? CheckFormatting.record("result", result) : MigrateFormatting.summary(result), terminator: json ? "\n" : "")
                throw ExitCode(result.aborted?.exitStatus ?? 1)
            }
        }
    }
}

/// share's failure document, as a JSON Lines record.
struct FailureDocument: Encodable {
    var failedStep: String
    var host: String
    var code: String
    var message: String
    var remedy: String
    init(_ f: ShareFailure) {
        failedStep = f.step.rawValue
        host = f.host
        code = f.error.code.rawValue
        message = f.error.message
        remedy = f.remedy
    }
}
