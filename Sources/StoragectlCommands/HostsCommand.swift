import AgentRuntime
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// `storagectl hosts`: is every agent of the inventory reachable and healthy?
public struct HostsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "hosts",
        abstract: "Check every agent of the inventory: reachable, version, health, round-trip time.",
        discussion: """
            Every host is asked concurrently (HELLO, PING, HEALTH), each bounded by --timeout. \
            Failing health checks are listed below the table with the agent's own words.

            EXIT STATUS
              0   every host healthy
              1   at least one host reachable but degraded
              64  bad options or inventory file
              69  at least one host unreachable
            """)

    @OptionGroup public var global: GlobalOptions

    @Flag(name: .customLong("json"), help: "Print a JSON document instead of a table.")
    public var json = false

    public init() {}

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let reports = await HostProbe.probeAll(inventory.hosts, tls: inventory.tls, timeout: global.timeoutDuration)
            print(json ? try HostsFormatting.json(reports) : HostsFormatting.table(reports), terminator: "")
            let status = HostsFormatting.exitStatus(reports)
            if status != 0 { throw ExitCode(status) }
        }
    }
}
