import Foundation
import Testing
import TestSupport

/// Mutual TLS between storagectl and an agent, with certificates from a throwaway CA.
@Suite("mutual TLS", .serialized)
struct TLSTests {
    final class TLSAgent {
        let dir: String
        let port: Int
        let child: ChildProcess
        let pki: TestPKI

        init(clientSignedByOtherCA: Bool = false, allowAdmin: [String] = ["CN=client"]) async throws {
            dir = try TestSupport.temporaryDirectory("tls")
            pki = try await TestPKI.make(in: dir, clientSignedByOtherCA: clientSignedByOtherCA)
            try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: dir + "/exports", contents: Data())
            port = Int.random(in: 20000...40000)
            child = try ChildProcess(try TestSupport.binary("storage-agent"), [
                "--listen", "tls:127.0.0.1:\(port)", "--listen", "tcp:127.0.0.1:\(port + 1)",
                "--tls-ca", pki.ca, "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey,
                "--exports-file", dir + "/exports", "--export-root", dir + "/root",
                "--allow-client", "198.18.0.2", "--log-level", "warning", "--plain-tcp",
            ] + allowAdmin.flatMap { ["--allow-admin", $0] }, logDir: dir)
            let port = self.port
            guard try await TestSupport.waitUntil(timeout: .seconds(10), {
                (try? await runProgram("/usr/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port)"]))?.status == 0
            }) else { throw TestFailure("agent did not listen: \(child.log)") }
        }

        func inventory(endpoint: String) throws -> String {
            let path = dir + "/storagectl.conf"
            try """
            [tls]
            ca = \(pki.ca)
            cert = \(pki.clientCert)
            key = \(pki.clientKey)

            [storage local]
            agent = \(endpoint)
            """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        func stop() async throws {
            child.signal(SIGTERM)
            #expect(try await child.wait(timeout: .seconds(5)) == 0, "\(child.log)")
            TestSupport.removeTree(dir)
        }
    }

    @Test("storagectl reaches a tls: agent with a client certificate of the same CA")
    func healthy() async throws {
        let agent = try await TLSAgent()
        let conf = try agent.inventory(endpoint: "tls:127.0.0.1:\(agent.port)")
        let r = try await runProgram(try TestSupport.binary("storagectl"), ["hosts", "--config", conf])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)\n\(agent.child.log)")
        #expect(r.stdout.contains("healthy"))
        try await agent.stop()
    }

    @Test("a changing verb passes the transport gate over TLS and is refused over plain TCP")
    func authorization() async throws {
        let agent = try await TLSAgent()
        let storagectl = try TestSupport.binary("storagectl")
        let tlsConf = try agent.inventory(endpoint: "tls:127.0.0.1:\(agent.port)")
        // Over TLS the gate lets EXPORT through to validation: a client outside --allow-client.
        let overTLS = try await runProgram(storagectl, ["call", "--config", tlsConf, "local", "EXPORT",
                                                        "path=\(agent.dir)/root/w1", "client=198.18.0.9"])
        #expect(overTLS.stdout.contains("code=invalid-argument"), "\(overTLS.stdout)\(overTLS.stderr)")
        #expect(overTLS.status == 64)
        let tcpConf = try agent.inventory(endpoint: "tcp:127.0.0.1:\(agent.port + 1)")
        let overTCP = try await runProgram(storagectl, ["call", "--config", tcpConf, "local", "EXPORT",
                                                        "path=\(agent.dir)/root/w1", "client=198.18.0.2"])
        #expect(overTCP.stdout.contains("code=permission-denied"), "\(overTCP.stdout)\(overTCP.stderr)")
        #expect(overTCP.status == 77)
        // Plain TCP reads nothing either: the exports file names paths and hosts.
        let readOnly = try await runProgram(storagectl, ["call", "--config", tcpConf, "local", "EXPORTS"])
        #expect(readOnly.status == 77 && readOnly.stdout.contains("code=permission-denied"), "\(readOnly.stdout)\(readOnly.stderr)")
        let health = try await runProgram(storagectl, ["call", "--config", tcpConf, "local", "HEALTH"])
        #expect(health.status == 0 && !health.stdout.contains("DATA"), "a summary: \(health.stdout)\(health.stderr)")
        try await agent.stop()
    }

    @Test("a certificate from the CA that is not on allow-admin is refused every changing verb, naming itself and the key")
    func notAllowListed() async throws {
        let agent = try await TLSAgent(allowAdmin: ["CN=storagectl-admin"])
        let storagectl = try TestSupport.binary("storagectl")
        let conf = try agent.inventory(endpoint: "tls:127.0.0.1:\(agent.port)")
        for request in [["EXPORT", "path=\(agent.dir)/root/w1", "client=198.18.0.2"], ["UNEXPORT", "path=\(agent.dir)/root/w1"]] {
            let r = try await runProgram(storagectl, ["call", "--config", conf, "local"] + request)
            #expect(r.status == 77 && r.stdout.contains("code=permission-denied"), "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("CN=client") && r.stdout.contains("allow-admin"), "\(r.stdout)")
        }
        let read = try await runProgram(storagectl, ["call", "--config", conf, "local", "EXPORTS"])
        #expect(read.status == 77, "not on allow-reader either: \(read.stdout)")
        let hosts = try await runProgram(storagectl, ["hosts", "--config", conf])
        #expect(hosts.status == 0, "HELLO, PING and the health summary still answer: \(hosts.stdout)\(hosts.stderr)")
        #expect(!FileManager.default.fileExists(atPath: agent.dir + "/root/w1"), "nothing was created")
        try await agent.stop()
    }

    @Test("without --plain-tcp a tcp: listener is refused at start")
    func plainTCPOff() async throws {
        let dir = try TestSupport.temporaryDirectory("tcp")
        defer { TestSupport.removeTree(dir) }
        _ = FileManager.default.createFile(atPath: dir + "/exports", contents: Data())
        let r = try await runProgram(try TestSupport.binary("storage-agent"), [
            "--listen", "tcp:127.0.0.1:\(Int.random(in: 20000...40000))", "--exports-file", dir + "/exports", "--export-root", dir,
            "--allow-client", "198.18.0.2"])
        #expect(r.status != 0 && r.stderr.contains("plain TCP, which is off"), "\(r.stdout)\(r.stderr)")
    }

    @Test("a client certificate from another CA is refused, and so is plain TCP to the TLS port")
    func refused() async throws {
        let agent = try await TLSAgent(clientSignedByOtherCA: true)
        let storagectl = try TestSupport.binary("storagectl")
        let conf = try agent.inventory(endpoint: "tls:127.0.0.1:\(agent.port)")
        let rogue = try await runProgram(storagectl, ["hosts", "--config", conf])
        #expect(rogue.status == 69, "\(rogue.stdout)\(rogue.stderr)")
        let plain = try agent.inventory(endpoint: "tcp:127.0.0.1:\(agent.port)")
        let r = try await runProgram(storagectl, ["hosts", "--config", plain, "--timeout", "2"])
        #expect(r.status != 0, "plain TCP to the TLS listener must not work: \(r.stdout)")
        #expect(try await agent.child.wait(timeout: .milliseconds(10)) == nil, "agent still runs")
        try await agent.stop()
    }
}
