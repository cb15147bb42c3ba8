import Testing
@testable import ExportsFile

/// Found by `Tests/Fuzz/run fuzz-exports` (docs/fuzzing.md).
@Suite("exports: fuzz regressions")
struct ExportsFuzzRegressionTests {
    @Test("a quoted client with spaces renders to one client, not two (unexport rewrote it as 'a' and 'b(rw)')")
    func quotedClientRendersAsOne() throws {
        let file = ExportsFile(parsing: "/srv/x \"share 198.18.0.2\"(rw,\"a b\") -\"x y\"\n")
        let entry = try #require(file.entries.first)
        #expect(entry.clients.count == 2)
        #expect(entry.clients[0].host == "share 198.18.0.2")
        #expect(entry.clients[0].options == ["rw", "a b"])
        let line = entry.rendered()
        let again = try #require(ExportsFile(parsing: line + "\n").entries.first)
        #expect(again == entry, "rendered as \(line)")
    }

    @Test("the line fuzz-exports found (crash-d3d43b4e...): its rendering parses back to the same clients")
    func fuzzerInput() throws {
        let line: [UInt8] = Array("\"/srv/half\"quote/sr".utf8) + [UInt8](repeating: 0, count: 7)
            + Array("vt1(my share\"     198.18.0.2(rw,\"sync)\n".utf8)
        let entry = try #require(ExportsFile(parsing: line).entries.first)
        let rendered = entry.rendered()
        let again = try #require(ExportsFile(parsing: rendered + "\n").entries.first)
        #expect(again.rendered() == rendered)
        #expect(again.clients.map(\.host) == entry.clients.map(\.host))
    }

    @Test("removing one client from a hand-edited managed line keeps a quoted client whole")
    func unexportKeepsQuotedClient() throws {
        let text = """
            # BEGIN storagectl managed block: do not edit, use storagectl (unshare to remove)
            /srv/images/w1 "client.example other"(rw,sync,no_subtree_check,no_root_squash,fsid=7) 198.51.100.7(rw,sync,no_subtree_check,no_root_squash,fsid=7)
            # END storagectl managed block

            """
        let edit = try ExportsFile(parsing: text).unexport(path: "/srv/images/w1", client: "198.51.100.7")
        let entry = try #require(edit.file.managedEntries.first)
        #expect(entry.clients.map(\.host) == ["client.example other"])
    }

    @Test("exporting into a file whose last line ends in a backslash continuation keeps the block whole")
    func continuedLastLine() throws {
        let text = "/srv/images/old host1(rw) \\\n"
        let policy = try ExportPolicy(exportRoot: "/srv/images", allowedClients: ["198.51.100.7"])
        let before = ExportsFile(parsing: text)
        let edit = try before.export(path: "/srv/images/w1", clients: ["198.51.100.7"], policy: policy)
        guard case .present = edit.file.managedBlockState else {
            Issue.record("block is \(edit.file.managedBlockState) in \(edit.file.text.debugDescription)")
            return
        }
        #expect(edit.file.foreignEntries == before.foreignEntries)
        #expect(edit.file.managedEntries.map(\.path) == ["/srv/images/w1"])
        #expect(edit.file.text.hasPrefix(text), "the foreign line's bytes are kept")
        let again = try edit.file.export(path: "/srv/images/w1", clients: ["198.51.100.7"], policy: policy)
        #expect(again.file.bytes == edit.file.bytes)
    }
}
