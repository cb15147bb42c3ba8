import Testing
@testable import AgentProtocol

private struct Underlying: Error, Sendable, CustomStringConvertible {
    var description: String { "errno 28" }
}

@Suite("agent error")
struct AgentErrorTests {
    @Test("the cause is kept for logs and left out of == and of the wire")
    func causeIsNotCompared() {
        let plain = AgentError(.unavailable, "disk full")
        let caused = AgentError(.unavailable, "disk full", cause: Underlying())
        #expect(plain == caused)
        #expect(caused.cause is Underlying)
        #expect(ResponseLine.err(plain).line == ResponseLine.err(caused).line)
        #expect(caused.debugDescription.contains("caused by"))
        #expect(AgentError(.internal, "disk full", cause: Underlying()) != caused)
    }
}
