import AgentProtocol
import Foundation
import Logging
import NIOCore
import Testing
import TestSupport
@testable import AgentRuntime

/// A handler with verbs whose timing the tests control.
struct ScriptedHandler: RequestHandler {
    var verbs: [String] { ["SLOW", "ECHO", "STREAM"] }

    func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case "SLOW":
            let ms = Int(request.fields["ms"] ?? "500") ?? 500
            try await Task.sleep(for: .milliseconds(ms))
            return ["slept": String(ms)]
        case "ECHO":
            return request.fields
        case "STREAM":
            for i in 0..<3 { try await reply.progress(["done": String(i), "total": "3"]) }
            try await reply.data(["row": "last"])
            return ["rows": "1"]
        default:
            throw unknownVerb(request.verb)
        }
    }
}

/// An in-process server on a unix socket in a temporary directory.
final class RunningServer: @unchecked Sendable {
    let dir: String
    let path: String
    let server: AgentServer
    let task: Task<Void, any Error>

    init(limits: ServerLimits = ServerLimits()) async throws {
        dir = try TestSupport.temporaryDirectory("srv")
        path = dir + "/agent.sock"
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        server = AgentServer(listeners: [.endpoint(.unix(path: path))], limits: limits,
                             identity: AgentIdentity(agent: "test-agent", host: "testhost"),
                             handler: ScriptedHandler(), logger: logger)
        let server = self.server
        task = Task { try await server.run() }
        let path = self.path
        _ = try await TestSupport.waitUntil { FileManager.default.fileExists(atPath: path) }
    }

    func client() async throws -> RawSocket {
        let s = try RawSocket(unixPath: path)
        await s.send("HELLO version=1\n")
        _ = await s.readLine()
        return s
    }

    func stop() async {
        server.beginShutdown(reason: "test")
        _ = try? await task.value
        TestSupport.removeTree(dir)
    }
}

@Suite("agent runtime", .serialized)
struct AgentRuntimeSuites {}

extension AgentRuntimeSuites {
@Suite("agent server", .serialized)
struct AgentServerTests {
    @Test("streams PROGRESS and DATA before exactly one terminal line")
    func streaming() async throws {
        let s = try await RunningServer()
        let c = try await s.client()
        await c.send("STREAM\n")
        #expect(await c.readResponse() == [
            "PROGRESS done=0 total=3", "PROGRESS done=1 total=3", "PROGRESS done=2 total=3",
            "DATA row=last", "OK rows=1",
        ])
        await s.stop()
    }

    @Test("the async client collects a whole response")
    func client() async throws {
        let s = try await RunningServer()
        let response = try await AgentClient.withSession(to: .unix(path: s.path)) { session in
            #expect(session.hello["agent"] == "test-agent")
            #expect(session.hello["host"] == "testhost")
            return try await session.call(Request("STREAM"))
        }
        #expect(response.progress.count == 3)
        #expect(response.data == [["row": "last"]])
        #expect(try response.get() == ["rows": "1"])
        await s.stop()
    }

    @Test("a client call that outlives its timeout fails with timeout")
    func clientTimeout() async throws {
        let s = try await RunningServer()
        await #expect(throws: AgentError.self) {
            try await AgentClient.withSession(to: .unix(path: s.path)) { session in
                _ = try await session.call(Request("SLOW", ["ms": "2000"]), timeout: .milliseconds(200))
            }
        }
        do {
            try await AgentClient.withSession(to: .unix(path: s.path)) { session in
                _ = try await session.call(Request("SLOW", ["ms": "2000"]), timeout: .milliseconds(200))
            }
        } catch let e as AgentError {
            #expect(e.code == .timeout)
        }
        await s.stop()
    }

    @Test("an unreachable endpoint is unavailable, naming the endpoint")
    func unreachable() async throws {
        do {
            try await AgentClient.withSession(to: .unix(path: "/tmp/sctl-none/none.sock")) { _ in }
            Issue.record("connected to nothing")
        } catch let e as AgentError {
            #expect(e.code == .unavailable)
            #expect(e.message.contains("unix:/tmp/sctl-none/none.sock"))
        }
    }

    @Test("graceful shutdown lets an in-flight request finish, then closes")
    func gracefulInFlight() async throws {
        let s = try await RunningServer()
        let busy = try await s.client()
        let idle = try await s.client()
        await busy.send("SLOW ms=600\n")
        try await Task.sleep(for: .milliseconds(100))
        let started = ContinuousClock.now
        s.server.beginShutdown(reason: "test")
        #expect(await idle.isClosedByPeer(), "an idle connection closes at once")
        #expect(await busy.readLine() == "OK slept=600")
        #expect(await busy.isClosedByPeer())
        _ = try await s.task.value
        #expect(ContinuousClock.now - started < .seconds(2))
        TestSupport.removeTree(s.dir)
    }

    @Test("connections above the limit get ERR busy and the others keep working")
    func connectionLimit() async throws {
        var limits = ServerLimits()
        limits.maxConnections = 2
        let s = try await RunningServer(limits: limits)
        let a = try await s.client()
        let b = try await s.client()
        let c = try RawSocket(unixPath: s.path)
        let line = await c.readLine() ?? ""
        #expect(line.hasPrefix("ERR code=busy"))
        await a.send("PING\n")
        #expect(await a.readLine()?.hasPrefix("OK") == true)
        _ = b
        await s.stop()
    }

    @Test("a stalled half line is closed after the read timeout; a long request is not")
    func readTimeout() async throws {
        var limits = ServerLimits()
        limits.readTimeout = .milliseconds(300)
        let s = try await RunningServer(limits: limits)
        let stalled = try await s.client()
        stalled.setTimeout(15)
        await stalled.send("PING key=val")
        let t0 = ContinuousClock.now
        #expect(await stalled.isClosedByPeer())
        // 0.3 s nominal; the bound leaves room for a loaded 2-core CI machine
        #expect(ContinuousClock.now - t0 < .seconds(5))
        let slow = try await s.client()
        await slow.send("SLOW ms=900\n")
        #expect(await slow.readLine() == "OK slept=900", "a request longer than the read timeout completes")
        await s.stop()
    }

    @Test("the idle exit stops a server with no connections")
    func idleExit() async throws {
        var limits = ServerLimits()
        limits.idleExit = .milliseconds(300)
        let s = try await RunningServer(limits: limits)
        let c = try await s.client()
        try await Task.sleep(for: .milliseconds(600))
        await c.send("PING\n")
        #expect(await c.readLine()?.hasPrefix("OK") == true, "an open connection keeps the agent alive")
        _ = consume c
        let t0 = ContinuousClock.now
        _ = try await s.task.value
        #expect(ContinuousClock.now - t0 < .seconds(2))
        TestSupport.removeTree(s.dir)
    }
}

/// READY=1 / STOPPING=1 through a real NOTIFY_SOCKET is tested on the agent binaries
/// (IntegrationTests/SocketActivationTests): setting NOTIFY_SOCKET in this process would
/// race with the in-process servers of other suites.
@Suite("systemd")
struct SystemdTests {
    @Test("without NOTIFY_SOCKET a notification is a no-op and without LISTEN_FDS there are no sockets")
    func absent() throws {
        let env = ProcessInfo.processInfo.environment
        try #require(env["NOTIFY_SOCKET"] == nil && env["LISTEN_FDS"] == nil, "run the tests outside a systemd service")
        #expect(!Systemd.notify("READY=1"))
        #expect(try Systemd.takeListenSockets().isEmpty)
    }
}
}
