import AgentProtocol
import AgentRuntime
import ConfigFile
import Testing
@testable import StoragectlCommands

@Suite("inventory")
struct InventoryTests {
    static let lab = """
    [storage cargo-bay]
    agent = tcp:198.18.0.1:7700
    export-root = /var/lib/libvirt/shared-images

    [compute source-example]
    agent = tcp:198.18.0.2:7700

    [compute dest-example]
    agent = unix:/run/storagectl/compute-agent.sock
    """

    @Test("reads the lab inventory")
    func lab() throws {
        let inv = try Inventory(ConfigFile.parse(Self.lab, path: "storagectl.conf"))
        #expect(inv.storage.name == "cargo-bay")
        #expect(inv.storage.agent == .tcp(host: "198.18.0.1", port: 7700))
        #expect(inv.compute.map(\.name) == ["source-example", "dest-example"])
        #expect(inv.compute[1].agent == .unix(path: "/run/storagectl/compute-agent.sock"))
        #expect(inv.exportRoot == "/var/lib/libvirt/shared-images")
    }

    @Test("refuses broken inventories with file and line", arguments: [
        ("[compute a]\nagent = tcp:h:1\n", nil as Int?, "no [storage NAME]"),
        ("[storage a]\nagent = tcp:h:1\n[storage b]\nagent = tcp:h:1\nexport-root = /srv/b\n", 3, "give each storage host its own 'pool = NAME'"),
        ("[storage a]\nagent = tcp:h:1\n[storage b]\nagent = tcp:h:1\npool = b\n", 3, "overlaps [storage a]"),
        ("[storage a]\nagent = tcp:h:1\nexport-root = /srv\n[storage b]\nagent = tcp:h:1\npool = b\nexport-root = /srv/b/\n", 4, "overlaps"),
        ("[storage a]\nagent = tcp:h:1\n[compute a]\nagent = tcp:h:2\n", 3, "already defined"),
        ("[storage a]\nagent = tcp:h\n", 2, "needs a port"),
        ("[storage a]\nagent = http://h\n", 2, "not an endpoint"),
        ("[storage]\nagent = tcp:h:1\n", 1, "needs a host name"),
        ("[storage a]\n", 1, "needs 'agent ="),
        ("[storage a]\nagent = tcp:h:1\nexport-root = rel/path\n", 3, "absolute"),
        ("[storage a]\nagent = tcp:h:1\ncolour = blue\n", 3, "unknown key"),
        ("[vm a]\n", 1, "unknown section"),
        ("[storage s]\nagent = tcp:h:1\n[compute a]\nagent = tcp:h:2\nmigration-uri = qemu+tcp://a/session\n", 5, "migration-uri must be"),
        ("[storage s]\nagent = tcp:h:1\n[compute a]\nagent = tcp:h:2\nmigration-ports = 100-200\n", 5, "migration-ports must be"),
        ("[storage s]\nagent = tcp:h:1\nmigration-uri = qemu+tcp://s/system\n", 3, "unknown key"),
    ])
    func broken(_ text: String, _ line: Int?, _ fragment: String) {
        do {
            _ = try Inventory(ConfigFile.parse(text, path: "inv"))
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.line == line)
            #expect(error.message.contains(fragment), "\(error)")
        }
    }

    @Test("migration-uri and migration-ports per compute host, with libvirt's defaults")
    func migrationKeys() throws {
        let inv = try Inventory(ConfigFile.parse("""
            [storage s]
            agent = tcp:h:1
            [compute a]
            agent = tcp:h:2
            [compute b]
            agent = tcp:h:3
            migration-uri = qemu+tcp://dest-example/system
            migration-ports = 50000-50010
            """, path: "inv"))
        #expect(inv.compute[0].migrationTarget.text == "qemu+tls://a/system" && inv.compute[0].migrationPorts == 49152...49215)
        #expect(inv.compute[1].migrationTarget.text == "qemu+tcp://dest-example/system" && inv.compute[1].migrationTarget.host == "dest-example")
        #expect(inv.compute[1].migrationPorts == 50000...50010)
    }

    @Test("endpoints parse IPv6 and refuse junk")
    func endpoints() throws {
        #expect(try Endpoint(parsing: "tcp:[::1]:7700") == .tcp(host: "::1", port: 7700))
        #expect(try Endpoint(parsing: "tcp:[::1]:7700").description == "tcp:[::1]:7700")
        for bad in ["tcp:h:0", "tcp:h:70000", "unix:relative", "tcp:a b:1", "tcp::1", "udp:h:1"] {
            #expect(throws: AgentError.self, "\(bad)") { try Endpoint(parsing: bad) }
        }
    }
}

@Suite("hosts output")
struct HostsFormattingTests {
    static let reports = [
        HostReport(name: "cargo-bay", role: .storage, agent: "tcp:198.18.0.1:7700", state: .healthy,
                   agentVersion: "0.1.0", reportedHost: "cargo-bay", uptimeSeconds: 5, roundTripMilliseconds: 0.42,
                   checks: [.init(name: "exports-file", ok: true, detail: "ok", facts: [:])], error: nil, errorCode: nil),
        HostReport(name: "source-example", role: .compute, agent: "tcp:198.18.0.2:7700", state: .degraded,
                   agentVersion: "0.1.0", reportedHost: "source-example", uptimeSeconds: 5, roundTripMilliseconds: 1.25,
                   checks: [.init(name: "libvirt", ok: false, detail: "cannot connect", facts: [:])], error: nil, errorCode: nil),
        HostReport(name: "dest-example", role: .compute, agent: "tcp:198.18.0.3:7700", state: .unreachable,
                   agentVersion: nil, reportedHost: nil, uptimeSeconds: nil, roundTripMilliseconds: nil,
                   checks: [], error: "cannot reach agent", errorCode: "unavailable",
                   remedy: HostsFormatting.remedy(host: "dest-example", role: .compute, code: "unavailable")),
    ]

    @Test("the table aligns columns and lists failures below")
    func table() {
        let text = HostsFormatting.table(Self.reports)
        #expect(text == """
        HOST            ROLE     AGENT                STATE        VERSION  RTT
        cargo-bay       storage  tcp:198.18.0.1:7700  healthy      0.1.0    0.4 ms
        source-example  compute  tcp:198.18.0.2:7700  degraded     0.1.0    1.2 ms
        dest-example    compute  tcp:198.18.0.3:7700  unreachable  -        -

        source-example: libvirt: cannot connect
        dest-example: cannot reach agent
          what to do: start the agent on dest-example (systemctl start compute-agent.socket) and check that its address in the inventory is reachable from here

        """)
    }

    @Test("JSON has stable snake_case keys")
    func json() throws {
        let text = try HostsFormatting.json(Array(Self.reports.prefix(1)))
        #expect(text.contains("\"rtt_ms\" : 0.42"))
        #expect(text.contains("\"state\" : \"healthy\""))
        #expect(text.contains("\"agent_version\" : \"0.1.0\""))
    }

    @Test("exit status: unreachable beats degraded beats healthy")
    func exit() {
        #expect(HostsFormatting.exitStatus(Self.reports) == 69)
        #expect(HostsFormatting.exitStatus(Array(Self.reports.prefix(2))) == 1)
        #expect(HostsFormatting.exitStatus(Array(Self.reports.prefix(1))) == 0)
    }

    @Test("error codes map to documented exit statuses")
    func exitStatuses() {
        #expect(ExitStatus.code(for: .invalidArgument) == 64)
        #expect(ExitStatus.code(for: .unavailable) == 69)
        #expect(ExitStatus.code(for: .busy) == 75)
        #expect(ExitStatus.code(for: .internal) == 1)
        for code in AgentError.Code.allCases {
            #expect(ExitStatus.helpText.contains(code.rawValue), "help misses \(code.rawValue)")
        }
    }
}
