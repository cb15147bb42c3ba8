import Testing
@testable import AgentRuntime

@Suite("connection timing rules")
struct ConnectionTimingTests {
    @Test("a connection expires the read timeout after its last answer, never inside a request")
    func readTimeout() {
        var t = ReadTimeoutState(openedAt: .seconds(10))
        #expect(!t.isExpired(at: .seconds(39), timeout: .seconds(30)))
        #expect(t.isExpired(at: .seconds(40), timeout: .seconds(30)))
        t.lineFramed()
        #expect(!t.isExpired(at: .seconds(100), timeout: .seconds(30)), "inside a request")
        t.answered(at: .seconds(100))
        #expect(!t.isBusy)
        #expect(!t.isExpired(at: .seconds(129), timeout: .seconds(30)))
        #expect(t.isExpired(at: .seconds(130), timeout: .seconds(30)))
    }

    @Test("the server exits after the limit with no connection, counted from the last close")
    func idleExit() {
        var t = IdleExitState(startedAt: .zero)
        #expect(!t.shouldExit(at: .seconds(59), limit: .seconds(60)))
        t.opened(at: .seconds(1))
        #expect(!t.shouldExit(at: .seconds(500), limit: .seconds(60)), "a connection is open")
        t.closed(at: .seconds(500))
        #expect(!t.shouldExit(at: .seconds(559), limit: .seconds(60)))
        #expect(t.shouldExit(at: .seconds(560), limit: .seconds(60)))
    }
}
