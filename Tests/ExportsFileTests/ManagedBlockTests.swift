import Testing
@testable import ExportsFile

@Suite("managed block")
struct ManagedBlockTests {
    let path = ourRoot + "/w1"

    private func fsid(_ path: String) -> UInt32 { StableID.fsidCandidate(for: path) }

    @Test("exporting into an empty file creates the block with our line")
    func createBlock() throws {
        let edit = try ExportsFile(parsing: "").export(path: path, clients: ["198.18.0.3", "198.18.0.2"], policy: testPolicy)
        let n = fsid(path)
        #expect(edit.file.text == """
            # BEGIN storagectl managed block: do not edit, use storagectl (unshare to remove)
            \(path) 198.18.0.2(rw,sync,no_subtree_check,no_root_squash,fsid=\(n)) 198.18.0.3(rw,sync,no_subtree_check,no_root_squash,fsid=\(n))
            # END storagectl managed block

            """)
        #expect(edit.change.blockCreated && edit.change.lineCreated)
        #expect(edit.change.addedClients == ["198.18.0.2", "198.18.0.3"])
        #expect(edit.change.fsid == n)
        #expect(edit.file.managedEntries.count == 1)
        #expect(edit.file.foreignEntries.isEmpty)
    }

    @Test("the block is appended after foreign content, adding only a missing final newline")
    func appendAfterForeign() throws {
        let foreign = "# admin\n/srv/backups b1(ro)"
        let edit = try ExportsFile(parsing: foreign).export(path: path, clients: ["source-example"], policy: testPolicy)
        #expect(edit.file.text.hasPrefix(foreign + "\n# BEGIN storagectl managed block"))
        #expect(edit.file.foreignEntries.map(\.path) == ["/srv/backups"])
        let back = try edit.file.unexport(path: path)
        #expect(back.file.text == foreign + "\n")
        #expect(back.change.blockRemoved)
    }

    @Test("exporting twice is a no-op with identical bytes")
    func idempotentExport() throws {
        let once = try ExportsFile(parsing: "/srv/a h(rw)\n").export(path: path, clients: ["198.18.0.2", "dest-example"], policy: testPolicy)
        let twice = try once.file.export(path: path, clients: ["dest-example", "198.18.0.2"], policy: testPolicy)
        #expect(twice.file.bytes == once.file.bytes)
        #expect(twice.change.isEmpty)
        #expect(twice.change.description.contains("nothing to change"))
    }

    @Test("adding a client keeps the fsid and sorts clients: IPv4, IPv6, then names")
    func addClient() throws {
        let first = try ExportsFile(parsing: "").export(path: path, clients: ["source-example"], policy: testPolicy)
        let second = try first.file.export(path: path, clients: ["2001:DB8:0::7", "198.18.0.3"], policy: testPolicy)
        let managed = try second.file.managedExports()
        #expect(managed.count == 1)
        #expect(managed[0].fsid == first.change.fsid)
        #expect(managed[0].clients.map(\.address.value) == ["198.18.0.3", "2001:db8::7", "source-example"])
        #expect(second.change.addedClients == ["2001:db8::7", "198.18.0.3"])
        #expect(!second.change.lineCreated)
    }

    @Test("requesting other options for an existing client updates it")
    func updateOptions() throws {
        let first = try ExportsFile(parsing: "").export(path: path, clients: ["198.18.0.2"], policy: testPolicy)
        let second = try first.file.export(path: path, clients: ["198.18.0.2"], options: ExportOptions(access: .readOnly), policy: testPolicy)
        #expect(second.change.updatedClients == ["198.18.0.2"])
        #expect(second.file.managedEntries[0].clients[0].options?.first == "ro")
    }

    @Test("our lines never put a space between a client and its options")
    func lineFormat() throws {
        let edit = try ExportsFile(parsing: "").export(path: path, clients: ["198.18.0.2", "2001:db8::7", "dest-example"], policy: testPolicy)
        let line = edit.file.lines[1].content
        #expect(!line.contains(" ("))
        #expect(!line.contains("\t"))
        for client in edit.file.managedEntries[0].clients {
            #expect(client.host != nil && client.options != nil)
            #expect([.ipv4, .ipv6, .hostname].contains(client.kind))
        }
    }

    @Test("new lines go into the block in path order")
    func ordering() throws {
        var file = ExportsFile(parsing: "")
        for name in ["c", "a", "b"] {
            file = try file.export(path: ourRoot + "/" + name, clients: ["198.18.0.2"], policy: testPolicy).file
        }
        #expect(file.managedEntries.map(\.path) == ["a", "b", "c"].map { ourRoot + "/" + $0 })
    }

    @Test("unexporting a client, then the last one, removes the line and the block")
    func unexport() throws {
        let original = "/srv/a h(rw)\n"
        let exported = try ExportsFile(parsing: original).export(path: path, clients: ["198.18.0.2", "198.18.0.3"], policy: testPolicy)
        let one = try exported.file.unexport(path: path, client: "198.18.0.2")
        #expect(one.change.removedClients == ["198.18.0.2"])
        #expect(try one.file.managedExports()[0].clients.map(\.address.value) == ["198.18.0.3"])
        let again = try one.file.unexport(path: path, client: "198.18.0.2")
        #expect(again.change.isEmpty && again.file == one.file)
        let none = try one.file.unexport(path: path, client: "198.18.0.3")
        #expect(none.change.lineRemoved && none.change.blockRemoved)
        #expect(none.file.text == original)
        let idle = try none.file.unexport(path: path)
        #expect(idle.change.isEmpty && idle.file.text == original)
    }

    @Test("unexport of the whole line keeps other managed lines")
    func unexportWholeLine() throws {
        var file = try ExportsFile(parsing: "").export(path: path, clients: ["198.18.0.2"], policy: testPolicy).file
        file = try file.export(path: ourRoot + "/w2", clients: ["198.18.0.2"], policy: testPolicy).file
        let edit = try file.unexport(path: path)
        #expect(edit.change.lineRemoved && !edit.change.blockRemoved)
        #expect(edit.file.managedEntries.map(\.path) == [ourRoot + "/w2"])
    }

    @Test("in drop-in mode an emptied block keeps its markers")
    func dropIn() throws {
        let file = ExportsFile(parsing: "", mode: .dropIn)
        let exported = try file.export(path: path, clients: ["198.18.0.2"], policy: testPolicy)
        #expect(exported.file.mode == .dropIn)
        let removed = try exported.file.unexport(path: path)
        #expect(removed.file.text == ManagedBlockMarkers.beginMarker + "\n" + ManagedBlockMarkers.endMarker + "\n")
        #expect(!removed.change.blockRemoved)
        let again = try removed.file.export(path: path, clients: ["198.18.0.2"], policy: testPolicy)
        #expect(again.file.bytes == exported.file.bytes)
    }

    @Test("managed and foreign entries are separated by the markers")
    func separation() throws {
        let file = ExportsFile(parsing: try Corpus.bytes("10-managed-block.exports"))
        #expect(file.foreignEntries.map(\.path) == ["/srv/backups"])
        #expect(file.managedEntries.map(\.path) == [ourRoot])
        let managed = try file.managedExports()
        #expect(managed[0].fsid == 123456)
        #expect(managed[0].renderedLine == file.lines[3].content)
    }

    @Test("a foreign entry for the same path is a conflict and is never edited", arguments: [
        "/var/lib/libvirt/shared-images/w1 *(rw)\n",
        "/var/lib/libvirt/shared-images/w1/ h(ro)\n",
        "\"/var/lib/libvirt/shared-images/w1\" h(ro)\n",
        "/var/lib/libvirt/shared-images//w1 h(ro)\n",
        "/var/lib/libvirt/shared\\055images/w1 h(ro)\n",
    ])
    func conflict(foreign: String) throws {
        let file = ExportsFile(parsing: foreign)
        #expect(file.conflicts(for: path).map(\.relation) == [.samePath])
        do {
            _ = try file.export(path: path, clients: ["198.18.0.2"], policy: testPolicy)
            Issue.record("export should have thrown")
        } catch {
            guard case .conflict(let conflictPath, let found) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(conflictPath == path)
            #expect(found.first?.lineNumber == 1)
            #expect(error.code == "conflict")
            #expect(error.description.contains("never edits foreign entries"))
        }
    }

    @Test("foreign parent and child exports are warnings")
    func warnings() throws {
        let text = "/var/lib/libvirt h(rw)\n/var/lib/libvirt/shared-images/w1/sub h(ro)\n/var/lib/libvirt/shared-images/w10 h(ro)\n"
        let edit = try ExportsFile(parsing: text).export(path: path, clients: ["198.18.0.2"], policy: testPolicy)
        #expect(edit.change.warnings.map(\.relation) == [.parent, .child])
        #expect(edit.change.warnings.map(\.lineNumber) == [1, 2])
        #expect(edit.change.description.contains("warning: line 1 exports a parent"))
    }

    @Test("damaged markers make editing refuse", arguments: [
        "# BEGIN storagectl managed block\n/x h(rw)\n",
        "# END storagectl managed block\n",
        "# END storagectl managed block\n# BEGIN storagectl managed block\n",
        "# BEGIN storagectl managed block\n# END storagectl managed block\n# BEGIN storagectl managed block\n# END storagectl managed block\n",
    ])
    func malformed(text: String) {
        let file = ExportsFile(parsing: text)
        #expect(file.managedEntries.isEmpty)
        #expect(throws: ExportsError.self) { try file.export(path: path, clients: ["198.18.0.2"], policy: testPolicy) }
        #expect(throws: ExportsError.self) { try file.unexport(path: path) }
        if case .malformed = file.managedBlockState {} else { Issue.record("expected malformed state") }
    }

    @Test("a hand-edited managed line is refused rather than propagated")
    func tampered() throws {
        let text = "\(ManagedBlockMarkers.beginMarker)\n\(path) *(rw,no_root_squash,fsid=5)\n\(ManagedBlockMarkers.endMarker)\n"
        let file = ExportsFile(parsing: text)
        #expect(throws: ExportsError.self) { try file.export(path: path, clients: ["198.18.0.2"], policy: testPolicy) }
        #expect(throws: ExportsError.self) { try file.managedExports() }
        // Removing it is still possible.
        let removed = try file.unexport(path: path)
        #expect(removed.file.text.isEmpty)
    }

    @Test("fsid is derived from the path, in range, and avoids fsids already used")
    func fsidScheme() throws {
        #expect(StableID.fsidCandidate(for: path) == StableID.fsidCandidate(for: path))
        #expect(StableID.fsidCandidate(for: path) != StableID.fsidCandidate(for: path + "x"))
        for index in 0..<2000 {
            let value = StableID.fsidCandidate(for: "/p/\(index)")
            #expect(value >= 1 && value <= StableID.maximumFsid)
        }
        let taken = StableID.fsidCandidate(for: path)
        let foreign = "/srv/other h(rw,fsid=\(taken))\n"
        let edit = try ExportsFile(parsing: foreign).export(path: path, clients: ["198.18.0.2"], policy: testPolicy)
        #expect(edit.change.fsid == StableID.fsidCandidate(for: path, attempt: 1))
        #expect(edit.change.fsid != taken)
    }

    @Test("the fsid on an existing managed line is kept even if the scheme would pick another")
    func fsidKept() throws {
        let text = "\(ManagedBlockMarkers.beginMarker)\n\(path) 198.18.0.2(rw,sync,no_subtree_check,no_root_squash,fsid=77)\n\(ManagedBlockMarkers.endMarker)\n"
        let edit = try ExportsFile(parsing: text).export(path: path, clients: ["198.18.0.3"], policy: testPolicy)
        #expect(try edit.file.managedExports()[0].fsid == 77)
    }
}
