import AgentRuntime
import ArgumentParser

/// `storagectl`: the administrator's command.
public struct StoragectlCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "storagectl",
        abstract: "Provision NFS shared storage for KVM live migration.",
        discussion: """
            storagectl asks the agents of its inventory (default /etc/storagectl/storagectl.conf) \
            and keeps no state of its own: every fact it prints comes fresh from an agent.

            """ + ExitStatus.helpText,
        version: StoragectlVersion.current,
        subcommands: [HostsCommand.self, ShareCommand.self, UnshareCommand.self, StatusCommand.self, CheckCommand.self, MigrateCommand.self, CallCommand.self, DigestCommand.self])

    public init() {}
}

/// Options every subcommand takes.
public struct GlobalOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("config"), help: ArgumentHelp("Inventory file (default /etc/storagectl/storagectl.conf).", valueName: "file"))
    public var config: String = Inventory.defaultPath

    @Option(name: .customLong("timeout"), help: ArgumentHelp("Seconds to wait for each agent (default 5).", valueName: "seconds"))
    public var timeout: Double = 5

    public init() {}

    public func validate() throws {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be between 0 and 3600 seconds") }
    }

    var timeoutDuration: Duration { .milliseconds(Int64(timeout * 1000)) }
}
