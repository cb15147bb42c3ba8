import Testing
@testable import ExportsFile

@Suite("exports(5) parser")
struct ParserTests {
    private func entry(_ text: String) throws -> ExportEntry {
        let file = ExportsFile(parsing: text)
        return try #require(file.lines.first?.entry, "expected an entry in \(text.debugDescription)")
    }

    @Test("comments, blank lines and entries are told apart")
    func lineKinds() {
        let file = ExportsFile(parsing: "# a comment\n\n   \t\n  # indented\n/srv a(rw)\n")
        #expect(file.lines.map(\.kind) == [
            .comment(" a comment"), .blank, .blank, .comment(" indented"),
            .entry(ExportEntry(path: "/srv", clients: [ExportClient(host: "a", options: ["rw"])])),
        ])
    }

    @Test("several clients each keep their own options")
    func clients() throws {
        let e = try entry("/srv/x h1(rw,sync) h2(ro) h3 h4()\n")
        #expect(e.clients == [
            ExportClient(host: "h1", options: ["rw", "sync"]),
            ExportClient(host: "h2", options: ["ro"]),
            ExportClient(host: "h3", options: nil),
            ExportClient(host: "h4", options: []),
        ])
    }

    @Test("a quoted path keeps its space and loses its quotes")
    func quotedPath() throws {
        #expect(try entry("\"/srv/my share\" h(rw)\n").path == "/srv/my share")
        #expect(try entry("\"/srv/half\"quoted h(rw)\n").path == "/srv/halfquoted")
    }

    @Test("octal escapes decode; values of 256 and above stay literal")
    func octal() throws {
        #expect(try entry("/srv/my\\040share h(rw)").path == "/srv/my share")
        #expect(try entry("/srv/a\\043b h(rw)").path == "/srv/a#b")
        #expect(try entry("/srv/a\\777b h(rw)").path == "/srv/a\\777b")
        #expect(ExportPath.unescaped("/a\\040b\\011c") == "/a b\tc")
    }

    @Test("a path with special bytes renders escaped and parses back")
    func escapeRoundTrip() throws {
        let original = ExportEntry(path: "/srv/we ird#\"\\\tname", clients: [ExportClient(host: "h", options: ["rw"])])
        let parsed = try entry(original.rendered() + "\n")
        #expect(parsed == original)
    }

    @Test("a dash token right after the path holds default options")
    func defaults() throws {
        let e = try entry("/srv/d -ro,sync h1 h2(rw)\n")
        #expect(e.defaultOptions == ["ro", "sync"])
        #expect(e.clients.map(\.host) == ["h1", "h2"])
        #expect(e.effectiveOptions(for: e.clients[1]) == ["ro", "sync", "rw"])
    }

    @Test("client kinds are classified")
    func kinds() throws {
        let e = try entry("/s host.example.com *.example.com * @ng 198.18.0.0/24 198.18.0.2 fe80::1 [2001:db8::1] [2001:db8::]/64 (rw) a?b 300.1.1.1\n")
        #expect(e.clients.map(\.kind) == [
            .hostname, .wildcard, .everyone, .netgroup, .subnet, .ipv4, .ipv6, .ipv6, .subnet, .anonymous, .wildcard, .other,
        ])
    }

    @Test("host (rw) with a space is a bare host plus an anonymous client exported to everyone")
    func spaceTrap() throws {
        let e = try entry("/srv/t 198.18.0.4 (rw)\n")
        #expect(e.clients == [ExportClient(host: "198.18.0.4", options: nil), ExportClient(host: nil, options: ["rw"])])
        #expect(e.clients[1].kind == .anonymous)
    }

    @Test("a backslash-newline continues the entry; the bytes stay as written")
    func continuation() throws {
        let text = "/srv/big \\\n    h1(rw) \\\n\th2(ro)\n/srv/next h3(rw)\n"
        let file = ExportsFile(parsing: text)
        #expect(file.lines.count == 2)
        #expect(file.lines[0].entry?.clients.map(\.host) == ["h1", "h2"])
        #expect(file.text == text)
        #expect(file.lineNumber(ofLineAt: 1) == 4)
    }

    @Test("a backslash at the end of a comment does not continue it")
    func commentNoContinuation() {
        let file = ExportsFile(parsing: "# comment \\\n/srv/x h(rw)\n")
        #expect(file.lines.count == 2)
        #expect(file.lines[1].entry?.path == "/srv/x")
    }

    @Test("a hash starts a comment only where a token would start")
    func hashes() throws {
        let e = try entry("/srv/a#b h(rw)   # note\n")
        #expect(e.path == "/srv/a#b")
        #expect(e.clients.count == 1)
        #expect(e.comment == " note")
    }

    @Test("a path alone exports to everyone and parses with no clients")
    func noClients() throws {
        #expect(try entry("/srv/world\n").clients.isEmpty)
    }

    @Test("lines that do not parse are opaque and kept byte for byte", arguments: [
        "/srv/bad h(rw\n", "/srv/bad h(rw)x\n", "relative h(rw)\n", "\"/srv/open h(rw)\n", "/srv/e \"\" h(rw)\n",
    ])
    func opaque(text: String) {
        let file = ExportsFile(parsing: text)
        guard case .opaque = file.lines.first?.kind else {
            Issue.record("expected an opaque line for \(text.debugDescription)")
            return
        }
        #expect(file.text == text)
    }

    @Test("arbitrary bytes survive a round trip")
    func arbitraryBytes() {
        let bytes: [UInt8] = [0, 255, 10, 92, 10, 34, 35, 92, 13, 10, 9, 47, 92]
        #expect(ExportsFile(parsing: bytes).bytes == bytes)
        #expect(ExportsFile(parsing: []).bytes == [])
    }

    @Test("tabs and trailing whitespace are preserved")
    func whitespace() {
        let text = "\t/srv/i\th(rw)\t\n/srv/s   h(ro)      \n"
        let file = ExportsFile(parsing: text)
        #expect(file.text == text)
        #expect(file.entries.map(\.path) == ["/srv/i", "/srv/s"])
    }
}
