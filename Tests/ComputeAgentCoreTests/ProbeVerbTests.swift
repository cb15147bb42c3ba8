import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import Testing
@testable import ComputeAgentCore

@Suite("PORT-LISTEN and PORT-PROBE through the compute agent's handler")
struct ProbeVerbTests {
    @Test("PORT-LISTEN refuses values outside the contract before a socket is opened", arguments: [
        "PORT-LISTEN seconds=0", "PORT-LISTEN seconds=31", "PORT-LISTEN seconds=x", "PORT-LISTEN range=80-90",
        "PORT-LISTEN range=50000-49999", "PORT-LISTEN range=49152", "PORT-LISTEN range=49152-70000", "PORT-LISTEN range=a-b",
        "PORT-LISTEN port=49152", "PORT-LISTEN seconds=1 seconds=2",
    ])
    func listenInvalid(_ line: String) async throws {
        #expect(await (try await SimHost()).ask(line).result.error?.code == .invalidArgument)
    }

    @Test("PORT-PROBE refuses values outside the contract and hosts that are not a name or an IP address", arguments: [
        "PORT-PROBE port=22", "PORT-PROBE host=dest-example port=0", "PORT-PROBE host=dest-example port=65536",
        "PORT-PROBE host=dest-example port=x", "PORT-PROBE host=dest-example bandwidth-port=0",
        "PORT-PROBE host=dest-example bytes=1", "PORT-PROBE host=dest-example bytes=1073741825",
        "PORT-PROBE host=dest-example seconds=0", "PORT-PROBE host=dest-example seconds=31",
        "PORT-PROBE host=dest-example " + (1...17).map { "port=\(40000 + $0)" }.joined(separator: " "),
        "PORT-PROBE host=a%20b port=22", "PORT-PROBE host=-x port=22", "PORT-PROBE host=dest:22 port=22",
        "PORT-PROBE host=%5B::1%5D port=22", "PORT-PROBE host=a..b port=22", "PORT-PROBE host= port=22",
        "PORT-PROBE host=1.2.3.256 port=22",
    ])
    func probeInvalid(_ line: String) async throws {
        #expect(await (try await SimHost()).ask(line).result.error?.code == .invalidArgument)
    }

    @Test("PORT-LISTEN opens a port: not served over plain TCP; PORT-PROBE is a reader's verb")
    func authorization() async throws {
        let host = try await SimHost()
        #expect(await host.ask("PORT-LISTEN", transport: .tcp).result.error?.code == .permissionDenied)
        #expect(await host.ask("PORT-PROBE host=127.0.0.1 port=1", transport: .tcp).result.error?.code == .permissionDenied)
    }

    @Test("PORT-LISTEN answers at once with a port of the range; PORT-PROBE reaches it and measures the bytes")
    func listenThenProbe() async throws {
        let host = try await SimHost()
        let start = ContinuousClock.now
        let listen = await host.ask("PORT-LISTEN range=42000-42999 seconds=3")
        #expect(ContinuousClock.now - start < .milliseconds(500))
        let ok = try #require(listen.result.ok, "\(String(describing: listen.result.error))")
        let port = try #require(ok["port"].flatMap(Int.init))
        #expect((42000...42999).contains(port))
        #expect(ok["seconds"] == "3")
        let probe = await host.ask("PORT-PROBE host=127.0.0.1 port=\(port) port=1 bandwidth-port=\(port) bytes=1048576 seconds=2")
        let answer = try #require(probe.result.ok, "\(String(describing: probe.result.error))")
        #expect(answer["ports"] == "2")
        #expect(answer["bandwidth-bytes"] == "1048576")
        #expect(answer["bandwidth-ms"].flatMap(UInt64.init) != nil)
        #expect(answer["bandwidth-error"] == nil)
        let rows = probe.lines.data
        #expect(rows.map { $0["port"] } == ["\(port)", "1"])
        #expect(rows.map { $0["reachable"] } == ["yes", "no"])
        #expect(rows[1]["error"] == "connection refused")
    }

    @Test("a bandwidth probe to a port without a listener is bandwidth-error=, not a failed request")
    func bandwidthErrorRow() async throws {
        let probe = await (try await SimHost()).ask("PORT-PROBE host=127.0.0.1 bandwidth-port=1 seconds=1")
        let ok = try #require(probe.result.ok, "\(String(describing: probe.result.error))")
        #expect(ok["ports"] == "0")
        #expect(ok["bandwidth-error"]?.contains("connection refused") == true)
        #expect(ok["bandwidth-bytes"] == nil)
    }

    @Test("a host that does not resolve fails the request with not-found")
    func unresolvable() async throws {
        let e = await (try await SimHost()).ask("PORT-PROBE host=no-such-host.invalid port=22 seconds=1").result.error
        #expect([.notFound, .timeout].contains(e?.code))
    }
}
