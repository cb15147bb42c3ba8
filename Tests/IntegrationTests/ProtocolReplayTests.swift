import Foundation
import Testing
import TestSupport

/// Replays every ```session block of docs/protocol.md against a live storage-agent.
@Suite("docs/protocol.md examples")
struct ProtocolReplayTests {
    struct Session: CustomStringConvertible {
        var line: Int
        var steps: [(send: String, expect: [String])]
        var description: String { "session at docs/protocol.md:\(line)" }
    }

    static func sessions() throws -> [Session] {
        let text = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("docs/protocol.md"), encoding: .utf8)
        var sessions: [Session] = []
        var current: Session?
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line == "```session" { current = Session(line: i + 1, steps: []); continue }
            guard current != nil else { continue }
            if line == "```" { sessions.append(current!); current = nil; continue }
            if line.hasPrefix("> ") { current!.steps.append((String(line.dropFirst(2)), [])) }
            else if line.hasPrefix("< ") { current!.steps[current!.steps.count - 1].expect.append(String(line.dropFirst(2))) }
        }
        return sessions
    }

    /// `*` as a whole value matches any value; everything else must be equal.
    static func matches(_ actual: String, _ pattern: String) -> Bool {
        let a = actual.split(separator: " "), p = pattern.split(separator: " ")
        guard a.count == p.count else { return false }
        return zip(a, p).allSatisfy { a, p in
            if p.hasSuffix("=*"), let eq = a.firstIndex(of: "=") { return a[..<eq] == p.dropLast(2) }
            return a == p
        }
    }

    @Test("the protocol page has examples")
    func present() throws {
        #expect(try Self.sessions().count >= 4)
    }

    @Test("every example session replays exactly")
    func replay() async throws {
        let agent = try await LiveStorageAgent()
        for session in try Self.sessions() {
            let c = try RawSocket(unixPath: agent.socket)
            for step in session.steps {
                await c.send(step.send + "\n")
                for expected in step.expect {
                    let actual = await c.readLine() ?? "<closed>"
                    #expect(Self.matches(actual, expected), "\(session): sent \(step.send)\n  got      \(actual)\n  expected \(expected)")
                }
            }
        }
        try await agent.stop()
    }
}
