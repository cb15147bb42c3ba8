import Foundation
import Testing
import TestSupport

/// Hostile input against a live storage-agent process: each is answered with ERR (or a
/// clean close where framing is lost) while the agent keeps serving other clients.
@Suite("hostile input on a live agent", .serialized)
struct HostileInputTests {
    @Test("a 1 MiB line is refused and the connection stays usable")
    func hugeLine() async throws {
        let agent = try await LiveStorageAgent()
        let c = try await agent.client()
        var line = Array("PING key=".utf8)
        line += [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20)
        line.append(UInt8(ascii: "\n"))
        #expect(await c.send(line))
        let answer = await c.readLine() ?? ""
        #expect(answer.hasPrefix("ERR code=invalid-argument"), "\(answer)")
        #expect(answer.contains("8192"))
        await c.send("PING\n")
        #expect(await c.readLine()?.hasPrefix("OK") == true, "same connection still usable")
        #expect(try await agent.stillServes())
        try await agent.stop()
    }

    @Test("invalid UTF-8, NUL bytes, unknown verbs and malformed escapes get ERR on a usable connection")
    func badLines() async throws {
        let agent = try await LiveStorageAgent()
        let c = try await agent.client()
        let cases: [([UInt8], String)] = [
            (Array("PING k=".utf8) + [0xC3, 0x28] + [0x0A], "code=invalid-argument"),
            (Array("PING k=a".utf8) + [0x00] + Array("b\n".utf8), "code=invalid-argument"),
            ([0xFF, 0xFE, 0x0A], "code=invalid-argument"),
            (Array("DESTROY-EVERYTHING path=/\n".utf8), "code=unsupported"),
            (Array("PING path=%2\n".utf8), "code=invalid-argument"),
            (Array("PING path=%G0\n".utf8), "code=invalid-argument"),
            (Array("PING path=%0A\n".utf8), "code=invalid-argument"),
            (Array("PING path=a%00b\n".utf8), "code=invalid-argument"),
        ]
        for (bytes, expected) in cases {
            await c.send(bytes)
            let answer = await c.readLine() ?? "<closed>"
            #expect(answer.hasPrefix("ERR ") && answer.contains(expected), "\(bytes): \(answer)")
        }
        await c.send("PING\n")
        #expect(await c.readLine()?.hasPrefix("OK") == true)
        #expect(try await agent.stillServes())
        try await agent.stop()
    }

    @Test("500 idle connections do not stop the agent serving another client")
    func manyIdle() async throws {
        let agent = try await LiveStorageAgent()
        var idle: [RawSocket] = []
        for _ in 0..<500 { idle.append(try RawSocket(unixPath: agent.socket)) }
        let t0 = ContinuousClock.now
        #expect(try await agent.stillServes())
        #expect(ContinuousClock.now - t0 < .seconds(2))
        // The idle ones are still connected and can still talk.
        await idle[499].send("HELLO version=1\n")
        #expect(await idle[499].readLine()?.hasPrefix("OK") == true)
        idle.removeAll()
        try await agent.stop()
    }

    @Test("a client that sends half a line and stalls is cut off after the read timeout")
    func stall() async throws {
        let agent = try await LiveStorageAgent(extra: ["--read-timeout", "1"])
        let c = try await agent.client(timeout: 5)
        await c.send("HEALTH key=va")
        let t0 = ContinuousClock.now
        #expect(try await agent.stillServes(), "others are served meanwhile")
        #expect(await c.isClosedByPeer(), "the stalled connection is closed")
        let waited = ContinuousClock.now - t0
        #expect(waited >= .milliseconds(900) && waited < .seconds(4), "closed after \(waited)")
        try await agent.stop()
    }

    @Test("a non-root peer on the unix socket gets permission-denied")
    func nonRoot() async throws {
        let agent = try await LiveStorageAgent()
        chmod(agent.dir, 0o755)
        chmod(agent.socket, 0o777)
        let conf = agent.dir + "/inv.conf"
        try "[storage local]\nagent = unix:\(agent.socket)\n".write(toFile: conf, atomically: true, encoding: .utf8)
        chmod(conf, 0o644)
        let r = try await runProgram("/usr/bin/setpriv", [
            "--reuid=65534", "--regid=65534", "--clear-groups",
            try TestSupport.binary("storagectl"), "hosts", "--config", conf,
        ])
        #expect(r.status == 69, "stdout: \(r.stdout) stderr: \(r.stderr)")
        #expect(r.stdout.contains("only root may talk to this agent"), "\(r.stdout)")
        #expect(try await agent.stillServes())
        try await agent.stop()
    }
}
