import AgentProtocol
import Testing
@testable import ComputeAgentCore

@Suite("compute agent validation")
struct ValidationTests {
    @Test("hostile domain names are refused", arguments: [
        "", "a/b", "..", ".", " lead", "trail ", "tab\there", "nl\nx", "del\u{7f}x", String(repeating: "x", count: 201),
    ])
    func hostileDomainNames(_ name: String) {
        #expect(throws: AgentError.self) { _ = try Validation.domainName(name) }
    }

    @Test("ordinary domain names pass, including spaces and unicode inside")
    func goodDomainNames() throws {
        for name in ["wanderer1", "web server 2", "vm-ü", "a.b_c+d"] {
            #expect(try Validation.domainName(name) == name)
        }
    }

    @Test("paths must be absolute, normalised and plain", arguments: [
        "relative", "/", "/a//b", "/a/./b", "/a/../b", "/a/b/", "/a b", "/a'b", "/a\"b", "/a%20b", "/a,b", "/a=b", "/a;b", "/a\\b",
        "/a\u{1}b",
    ])
    func hostilePaths(_ path: String) {
        #expect(throws: AgentError.self) { _ = try Validation.absolutePath(path, key: "export") }
    }

    @Test("servers are host names or IPv4 addresses", arguments: [
        ("198.18.0.1", true), ("cargo-bay", true), ("cargo-bay.example", true), ("", false), ("a:2049", false),
        ("-bad", false), ("bad-", false), ("999.1.1.1", false), ("1.2.3", false), ("::1", false), ("a b", false),
        ("x'y", false), ("nfs://x", false),
    ])
    func servers(_ text: String, _ ok: Bool) {
        #expect(((try? Validation.server(text)) != nil) == ok, "\(text)")
    }

    @Test("relative share paths refuse dot files, absolute paths and traversal", arguments: [
        "/abs", "../x", "a/../b", ".hidden", "w1/.w1.qcow2.storagectl-partial", "a//b", "",
    ])
    func relativePaths(_ path: String) {
        #expect(throws: AgentError.self) { _ = try Validation.relativePath(path) }
    }

    @Test("the share directory is the domain name when it is a safe file name, else the UUID")
    func shareDirectory() {
        #expect(Validation.shareDirectory(domain: "wanderer1", uuid: "u") == "wanderer1")
        #expect(Validation.shareDirectory(domain: "web server", uuid: "u") == "u")
        #expect(Validation.shareDirectory(domain: ".x", uuid: "u") == "u")
    }
}
