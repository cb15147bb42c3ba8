import Testing
@testable import AgentRuntime

@Suite("agent client")
struct AgentClientTests {
    @Test("addresses are never sent as TLS SNI: IPv4, IPv6 with or without hex letters; host names are",
          arguments: [("198.18.0.2", nil), ("::1", nil), ("fd00::a", nil), ("2001:db8::beef", nil), ("::ffff:198.18.0.2", nil),
                      ("cargo-bay", "cargo-bay"), ("dest-example.lab", "dest-example.lab"), ("beef", "beef")] as [(String, String?)])
    func sni(_ host: String, _ expected: String?) {
        #expect(AgentClient.serverHostname(for: host) == expected)
    }
}
