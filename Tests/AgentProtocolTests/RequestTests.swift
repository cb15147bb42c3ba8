import Testing
@testable import AgentProtocol

@Suite("request lines")
struct RequestTests {
    @Test("parses a verb with repeated keys in order")
    func repeatedKeys() throws {
        let r = try Request.parse("EXPORT path=/srv/a client=source-example client=dest-example")
        #expect(r.verb == "EXPORT")
        #expect(r.fields["path"] == "/srv/a")
        #expect(r.fields.all("client") == ["source-example", "dest-example"])
        #expect(r.fields.keys == ["path", "client", "client"])
    }

    @Test("round-trips values that need percent-encoding")
    func roundTrip() throws {
        let values = ["a b", "100%", "é", "x=y", "tab\u{09}".dropLast().description, "/var/lib/libvirt/images/w 1.qcow2", ""]
        for v in values {
            let r = Request("X", ["v": v])
            let back = try Request.parse(r.line)
            #expect(back == r, "value \(v) wire \(r.line)")
        }
    }

    @Test("encodes exactly the bytes outside the unreserved set")
    func encoding() {
        #expect(PercentEncoding.encode("AZaz09._~/:,@+-") == "AZaz09._~/:,@+-")
        #expect(PercentEncoding.encode("a b=c%\n") == "a%20b%3Dc%25%0A")
        #expect(PercentEncoding.encode("é") == "%C3%A9")
    }

    @Test("accepts lowercase hex and a trailing carriage return")
    func lenient() throws {
        let r = try Request.parse("PING v=%c3%a9\r")
        #expect(r.fields["v"] == "é")
    }

    @Test("rejects hostile lines with invalid-argument", arguments: [
        "", "ping", "PING Key=1", "PING key", "PING key=%zz", "PING key=%4", "PING key=%",
        "PING key=a=b", "PING key=%0A", "PING key=%00", "PING key=%FF", "PING key=\u{7F}",
        String(repeating: "A", count: 40),
    ])
    func hostile(_ line: String) {
        #expect(throws: AgentError.self) { try Request.parse(line) }
        do { _ = try Request.parse(line) } catch { #expect(error.code == .invalidArgument) }
    }

    @Test("rejects NUL bytes, invalid UTF-8 and over-long lines")
    func bytes() {
        #expect(throws: AgentError.self) { try Request.parse([0x50, 0x00, 0x4E]) }
        #expect(throws: AgentError.self) { try Request.parse([0x50, 0x49, 0x4E, 0x47, 0x20, 0x6B, 0x3D, 0xC3, 0x28]) }
        #expect(throws: AgentError.self) { try Request.parse(Array("PING k=".utf8) + [UInt8](repeating: 0x61, count: Wire.maxLineBytes)) }
    }
}

@Suite("response lines")
struct ResponseTests {
    @Test("renders and parses every line type")
    func roundTrip() throws {
        let lines: [ResponseLine] = [
            .data(["check": "libvirt", "state": "ok"]),
            .progress(["done": "10", "total": "100", "rate": "5"]),
            .ok(["version": "1"]),
            .err(AgentError(.conflict, "foreign entry for /srv/x at line 3", details: ["line": "3"])),
        ]
        for l in lines { #expect(try ResponseLine.parse(l.line) == l) }
        #expect(lines.map(\.isTerminal) == [false, false, true, true])
    }

    @Test("keeps an unknown error code's words as internal")
    func unknownCode() throws {
        let l = try ResponseLine.parse("ERR code=melted message=too%20hot")
        guard case .err(let e) = l else { Issue.record("not an error"); return }
        #expect(e.code == .internal)
        #expect(e.message == "melted: too hot")
    }

    @Test("every error code has the spelling of the design")
    func codes() {
        #expect(AgentError.Code.allCases.map(\.rawValue) == [
            "invalid-argument", "not-found", "exists", "conflict", "busy", "invalid-state",
            "unsupported", "unavailable", "timeout", "permission-denied", "internal",
        ])
    }
}

@Suite("HELLO negotiation")
struct HelloTests {
    @Test("picks the highest common version")
    func common() throws {
        #expect(try Hello.negotiate(Request("HELLO", ["version": "1"])) == 1)
        #expect(try Hello.negotiate(Request("HELLO", Fields([.init("version", "2"), .init("version", "1")]))) == 1)
        #expect(try Hello.negotiate(Request("HELLO", ["version": "3"]), supported: [1, 2, 3]) == 3)
    }

    @Test("an unknown version is unsupported and names the versions spoken")
    func unknown() {
        do {
            _ = try Hello.negotiate(Request("HELLO", ["version": "7"]))
            Issue.record("accepted version 7")
        } catch {
            #expect(error.code == .unsupported)
            #expect(error.details["versions"] == "1")
            #expect(error.message.contains("speaks 1"))
        }
    }

    @Test("a missing or malformed version is invalid-argument", arguments: [Fields(), ["version": "x"], ["version": "01"], ["version": "-1"]])
    func malformed(_ fields: Fields) {
        #expect(throws: AgentError.self) { try Hello.negotiate(Request("HELLO", fields)) }
    }
}
