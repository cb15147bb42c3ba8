import AgentAPI
import AgentProtocol
import Foundation
import Logging
import NIOCore
import Testing
import TestSupport
@testable import AgentRuntime

/// A handler with verbs whose timing the tests control.
struct ScriptedHandler: RequestHandler {
    var verbs: [String] { ["SLOW", "ECHO", "STREAM", "LONG", "FLOOD", "HELD", "HELDLONG", "TYPED"] }
    /// SLOW sleeps on this clock when set, else in real time.
    var clock: TestClock?

    func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case "SLOW":
            let ms = Int(request.fields["ms"] ?? "500") ?? 500
            if let clock {
                try await clock.sleep(for: .milliseconds(ms))
            } else {
                try await Task.sleep(for: .milliseconds(ms))
            }
            return ["slept": String(ms)]
        case "ECHO":
            return request.fields
        case "FLOOD":
            // More than any socket buffer holds: a client that does not read blocks it.
            for _ in 0..<4000 { try await reply.data(["blob": String(repeating: "y", count: 4000)]) }
            return ["rows": "4000"]
        case "LONG":
            // A DATA line over the limit, then (if the handler ignores the failure) more.
            try? await reply.data(["blob": String(repeating: "x", count: 9000)])
            try? await reply.data(["row": "after"])
            return ["rows": "2"]
        case "HELD":
            // held lines leave with the next line sent, in their order
            try reply.hold?([.data(["row": "a"]), .data(["row": "b"])])
            try await reply.progress(["done": "1", "total": "1"])
            try reply.hold?([.data(["row": "c"])])
            return ["rows": "3"]
        case "HELDLONG":
            try reply.hold?([.data(["row": "fine"]), .data(["blob": String(repeating: "x", count: 9000)])])
            return ["rows": "2"]
        case "TYPED":
            let checks = [HealthCheck("one", ok: true, detail: "first"), HealthCheck("two", ok: false, detail: "second")]
            return try await reply.answer(HealthQuery.self, HealthQuery.Answer(checks: checks, agent: "test-agent", version: "0",
                                                                               host: "testhost", uptimeSeconds: 1))
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
    /// The server's clock when the test drives time (``advance(_:)``).
    let clock: TestClock?

    init(limits: ServerLimits = ServerLimits(), clock: TestClock? = nil) async throws {
        self.clock = clock
        dir = try TestSupport.temporaryDirectory("srv")
        path = dir + "/agent.sock"
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        server = AgentServer(listeners: [.endpoint(.unix(path: path))], limits: limits,
                             identity: AgentIdentity(agent: "test-agent", host: "testhost"),
                             handler: ScriptedHandler(clock: clock), logger: logger,
                             clock: clock.map { ServerClock($0) } ?? .continuous)
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

    /// Moves the test clock on and waits until the server has checked its read timeout
    /// and idle exit at the new time (a real-time bound only for a broken server).
    /// Answers are counted (idle time starts) just after they are written: this waits
    /// for every answer the client may have read to be counted first.
    func advance(_ duration: Duration) async throws {
        guard let clock else { throw TestFailure("the server runs on real time") }
        let server = self.server
        if !(try await TestSupport.waitUntil { server.tracker.busyCount == 0 }) { throw TestFailure("a request is still running") }
        clock.advance(by: duration)
        let target = clock.now.offset
        let checked = try await TestSupport.waitUntil { (server.lastTimerCheck.withLockedValue { $0 } ?? .zero) >= target }
        if !checked { throw TestFailure("the server did not check its timers at \(target)") }
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

    @Test("held lines (a typed answer's DATA) leave in order, before a later PROGRESS and before the terminal line")
    func heldLines() async throws {
        let s = try await RunningServer()
        let c = try await s.client()
        await c.send("HELD\n")
        #expect(await c.readResponse() == ["DATA row=a", "DATA row=b", "PROGRESS done=1 total=1", "DATA row=c", "OK rows=3"])
        await c.send("TYPED\n")
        let typed = await c.readResponse()
        let expected = HealthQuery.encodeAnswer(HealthQuery.Answer(
            checks: [HealthCheck("one", ok: true, detail: "first"), HealthCheck("two", ok: false, detail: "second")],
            agent: "test-agent", version: "0", host: "testhost", uptimeSeconds: 1))
        #expect(typed == expected.data.map { ResponseLine.data($0).line } + [ResponseLine.ok(expected.ok).line])
        // an oversized line in a held batch: one ERR, nothing of the batch, and the next answer is the next request's
        await c.send("HELDLONG\nECHO a=2\n")
        let first = await c.readLine() ?? ""
        #expect(first.hasPrefix("ERR code=internal"), "one terminal ERR, nothing before it: \(first)")
        #expect(await c.readLine() == "OK a=2")
        await s.stop()
    }

    @Test("an information line over 8 KiB stops the request with exactly one ERR; the next request gets its own answer")
    func longLineKeepsTheStream() async throws {
        let server = try await RunningServer()
        let c = try await server.client()
        await c.send("LONG\nECHO a=1\n")
        let first = await c.readLine() ?? ""
        #expect(first.hasPrefix("ERR code=internal") && first.contains("9"), "one terminal ERR, nothing before it: \(first)")
        #expect(await c.readLine() == "OK a=1", "the next answer belongs to the next request")
        await server.stop()
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

    @Test("each listener has its own connection budget: clients of one cannot lock root out of another")
    func perListenerBudget() async throws {
        let dir = try TestSupport.temporaryDirectory("budget")
        defer { TestSupport.removeTree(dir) }
        var limits = ServerLimits()
        limits.maxConnections = 2
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // Two listeners, as an agent has its unix socket and a network one.
        let root = dir + "/root.sock", network = dir + "/network.sock"
        let server = AgentServer(listeners: [.endpoint(.unix(path: root)), .endpoint(.unix(path: network))], limits: limits,
                                 identity: AgentIdentity(agent: "test-agent", host: "testhost"),
                                 handler: ScriptedHandler(clock: nil), logger: logger)
        let task = Task { try await server.run() }
        _ = try await TestSupport.waitUntil { FileManager.default.fileExists(atPath: root) && FileManager.default.fileExists(atPath: network) }
        func hello(_ path: String) async throws -> (RawSocket, String) {
            let s = try RawSocket(unixPath: path)
            await s.send("HELLO version=1\n")
            return (s, await s.readLine() ?? "")
        }
        let (a, _) = try await hello(network)
        let (b, _) = try await hello(network)
        let (_, third) = try await hello(network)
        #expect(third.hasPrefix("ERR code=busy"), "the network listener is full: \(third)")
        let (r, answer) = try await hello(root)
        #expect(answer.hasPrefix("OK version=1"), "root's listener has its own budget: \(answer)")
        await r.send("PING\n")
        #expect(await r.readLine()?.hasPrefix("OK") == true)
        _ = (a, b)
        server.beginShutdown(reason: "test")
        _ = try? await task.value
    }

    @Test("a client that sends a byte every 2 s without ending its line is closed at the read timeout")
    func drip() async throws {
        var limits = ServerLimits()
        limits.readTimeout = .seconds(30)
        let s = try await RunningServer(limits: limits, clock: TestClock())
        let c = try await s.client()  // HELLO answered at 0 s
        for _ in 0..<14 {
            await c.send("P")
            try await s.advance(.seconds(2))
        }
        #expect(c.isOpenNow, "28 s after the last answer")
        await c.send("I")
        try await s.advance(.seconds(2))
        #expect(await c.isClosedByPeer(), "30 s after the last answer, bytes or not")
        await s.stop()
    }

    @Test("a client that asks and never reads loses its connection once an answer line waited the read timeout")
    func neverReads() async throws {
        var limits = ServerLimits()
        limits.readTimeout = .seconds(30)
        let clock = TestClock()
        let s = try await RunningServer(limits: limits, clock: clock)
        let c = try await s.client()
        await c.send("FLOOD\n")
        let server = s.server
        // The answer fills the socket buffers and its next write waits for the client.
        #expect(try await TestSupport.waitUntil { server.tracker.count == 1 && server.tracker.busyCount == 1 })
        try await Task.sleep(for: .milliseconds(300))
        clock.advance(by: .seconds(29))
        #expect(try await TestSupport.waitUntil { (server.lastTimerCheck.withLockedValue { $0 } ?? .zero) >= .seconds(29) })
        #expect(server.tracker.count == 1, "29 s: still connected")
        clock.advance(by: .seconds(2))
        #expect(try await TestSupport.waitUntil { server.tracker.count == 0 }, "31 s: the slot is free")
        _ = c
        await s.stop()
    }

    // The timing tests run on a test clock: deterministic, no waiting on wall time.

    @Test("a stalled half line is closed when the read timeout has passed since the last answer, not before")
    func readTimeout() async throws {
        var limits = ServerLimits()
        limits.readTimeout = .seconds(30)
        let s = try await RunningServer(limits: limits, clock: TestClock())
        let c = try await s.client()  // HELLO answered at 0 s
        c.setTimeout(15)
        await c.send("PING key=val")
        try await s.advance(.seconds(29))
        await c.send("\n")
        #expect(await c.readLine()?.hasPrefix("OK") == true, "29 s idle is below the timeout")
        // Answered at 29 s: idle time counts from there; a half line does not reset it.
        await c.send("PING")
        try await s.advance(.seconds(29))
        #expect(c.isOpenNow, "58 s: 29 s since the last answer")
        try await s.advance(.seconds(1))
        #expect(await c.isClosedByPeer(), "59 s: 30 s since the last answer")
        await s.stop()
    }

    @Test("a request longer than the read timeout is not cut off")
    func longRequest() async throws {
        var limits = ServerLimits()
        limits.readTimeout = .seconds(30)
        let clock = TestClock()
        let s = try await RunningServer(limits: limits, clock: clock)
        let c = try await s.client()
        c.setTimeout(15)
        await c.send("SLOW ms=60000\n")
        // the server's timer loop and the handler both sleep on the clock
        #expect(try await TestSupport.waitUntil { clock.sleeperCount == 2 })
        clock.advance(by: .seconds(31))  // the request is running: s.advance would wait for it
        let server = s.server
        #expect(try await TestSupport.waitUntil { (server.lastTimerCheck.withLockedValue { $0 } ?? .zero) >= .seconds(31) })
        clock.advance(by: .seconds(29))  // the handler wakes at 60 s
        #expect(await c.readLine() == "OK slept=60000")
        await s.stop()
    }

    @Test("the idle exit stops a server that had no connection for the limit, and not before")
    func idleExit() async throws {
        var limits = ServerLimits()
        limits.idleExit = .seconds(60)
        limits.readTimeout = .seconds(3600)
        let s = try await RunningServer(limits: limits, clock: TestClock())
        var c: RawSocket? = try await s.client()
        try await s.advance(.seconds(120))
        await c?.send("PING\n")
        #expect(await c?.readLine()?.hasPrefix("OK") == true, "an open connection keeps the agent alive")
        c = nil  // closes it
        let server = s.server
        #expect(try await TestSupport.waitUntil { server.tracker.count == 0 })
        try await s.advance(.seconds(59))
        #expect(!server.tracker.isShuttingDown, "59 s without a connection")
        try await s.advance(.seconds(1))
        #expect(server.tracker.isShuttingDown, "60 s without a connection")
        _ = try await s.task.value
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
