import Testing
@testable import ConfigFile

@Suite("config files")
struct ConfigFileTests {
    @Test("parses sections, names, comments and quoted values")
    func parse() throws {
        let text = """
        # inventory
        ; also a comment
        [storage cargo-bay]
        agent = tcp:198.18.0.1:7700
        export-root = "/var/lib/libvirt/shared-images"

        [compute "source-example"]
          agent=tcp:198.18.0.2:7700
        """
        let f = try ConfigFile.parse(text, path: "inv.conf")
        #expect(f.sections.count == 2)
        #expect(f.sections[0].kind == "storage")
        #expect(f.sections[0].name == "cargo-bay")
        #expect(f.sections[0].value("export-root") == "/var/lib/libvirt/shared-images")
        #expect(f.sections[1].name == "source-example")
        #expect(f.sections[1].entry("agent")?.line == 8)
    }

    @Test("errors carry file and line", arguments: [
        ("[storage x\n", 1, "must end with"),
        ("[a b c]\n", 1, "[type] or [type name]"),
        ("agent = x\n", 1, "before any [section]"),
        ("[s]\njunk line\n", 2, "expected 'key = value'"),
        ("[s]\nBad Key = 1\n", 2, "bad key"),
        ("[s x/y]\n", 1, "bad section name"),
    ])
    func errors(_ text: String, _ line: Int, _ fragment: String) {
        do {
            _ = try ConfigFile.parse(text, path: "f.conf")
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.line == line)
            #expect(error.message.contains(fragment), "\(error)")
            #expect(error.description.hasPrefix("f.conf:\(line): "))
        }
    }

    @Test("unknown keys are named with the known ones")
    func unknownKeys() throws {
        let f = try ConfigFile.parse("[agent]\nlisten = unix:/x\nlisne = 1\n", path: "a.conf")
        do {
            try f.requireKnownKeys(f.sections[0], ["listen"])
            Issue.record("accepted a typo")
        } catch {
            #expect(error.line == 3)
            #expect(error.message.contains("unknown key 'lisne'"))
        }
    }

    @Test("a missing file says how to fix it")
    func missing() {
        #expect(throws: ConfigError.self) { try ConfigFile.load(path: "/nonexistent/storagectl.conf") }
        do { _ = try ConfigFile.load(path: "/nonexistent/storagectl.conf") } catch {
            #expect("\(error)".contains("--config"))
        }
    }
}
