import Testing
@testable import ExportsFile

/// Random foreign files + random export/unexport sequences: bytes outside the managed block
/// never change (except one missing final newline, added when the block is appended).
@Suite("managed block properties")
struct PropertyTests {
    static let iterations = 300
    static let ourPaths = ["", "/w1", "/w2", "/w1/sub", "/zz"].map { ourRoot + $0 }
    static let clients = ["198.18.0.2", "198.18.0.3", "source-example", "dest-example", "2001:db8::7"]

    /// One random foreign line (without terminator choice), exercising every construct.
    static func foreignLine(_ rng: inout SeededGenerator) -> String {
        let hosts = ["h1", "node2.example.com", "*.example.com", "*", "@ng", "198.18.0.0/24", "fe80::1",
                     "[2001:db8::]/64", "", "198.18.0.4", "10.1.2.3"]
        let opts = ["rw", "ro", "sync", "async", "no_subtree_check", "no_root_squash", "fsid=\(Int.random(in: 1...9, using: &rng))", "crossmnt"]
        func client() -> String {
            let host = hosts.randomElement(using: &rng)!
            if Bool.random(using: &rng) || host.isEmpty {
                let count = Int.random(in: 0...3, using: &rng)
                return host + "(" + (0..<count).map { _ in opts.randomElement(using: &rng)! }.joined(separator: ",") + ")"
            }
            return host
        }
        let paths = ["/srv/a", "/srv/my\\040share", "\"/srv/q q\"", "/export/x", "/var/lib/libvirt",
                     "/data/d\\043e", "/var/lib/libvirt/shared-images/w1/sub/deeper",
                     "/var/lib/libvirt/shared-images/w2"]
        let separators = [" ", "\t", "  ", " \\\n  ", "\t\\\n\t"]
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return "# comment \(Int.random(in: 0...999, using: &rng))" + (Bool.random(using: &rng) ? " \\" : "")
        case 1: return ""
        case 2: return String(repeating: " ", count: Int.random(in: 1...3, using: &rng)) + "\t"
        case 3: return ["garbage(", "/bad h(rw", "\"/open", "rel h(rw)", "/x \"\" y", "\u{7}\u{1}junk"].randomElement(using: &rng)!
        default:
            var line = paths.randomElement(using: &rng)!
            if Int.random(in: 0..<4, using: &rng) == 0 { line += " -ro,sync" }
            for _ in 0..<Int.random(in: 0...4, using: &rng) {
                line += separators.randomElement(using: &rng)! + client()
            }
            if Int.random(in: 0..<5, using: &rng) == 0 { line += "   # trailing" }
            if Int.random(in: 0..<5, using: &rng) == 0 { line += " \t" }
            return line
        }
    }

    static func foreignFile(_ rng: inout SeededGenerator) -> [UInt8] {
        var text = ""
        let count = Int.random(in: 0...12, using: &rng)
        for index in 0..<count {
            text += foreignLine(&rng)
            let last = index == count - 1
            if last && Int.random(in: 0..<3, using: &rng) == 0 { break }  // no final newline
            text += Int.random(in: 0..<6, using: &rng) == 0 ? "\r\n" : "\n"
        }
        return Array(text.utf8)
    }

    @Test("bytes outside the managed block never change", arguments: [ExportsFile.Mode.shared, .dropIn])
    func outsideBytesPreserved(mode: ExportsFile.Mode) throws {
        var rng = SeededGenerator(seed: mode == .shared ? 0x5EED_0001 : 0x5EED_0002)
        var operations = 0
        var refusals = 0
        for _ in 0..<Self.iterations {
            let original = Self.foreignFile(&rng)
            var file = ExportsFile(parsing: original, mode: mode)
            #expect(file.bytes == original)
            // A model of what must be managed: path -> clients.
            var model: [String: Set<String>] = [:]
            for _ in 0..<Int.random(in: 1...12, using: &rng) {
                let path = Self.ourPaths.randomElement(using: &rng)!
                let before = file
                do {
                    if Int.random(in: 0..<3, using: &rng) > 0 {
                        let chosen = Array(Set((0..<Int.random(in: 1...3, using: &rng)).map { _ in Self.clients.randomElement(using: &rng)! }))
                        let edit = try file.export(path: path, clients: chosen, policy: testPolicy)
                        file = edit.file
                        let normalized = try chosen.map { try ClientAddress($0).value }
                        model[path, default: []].formUnion(normalized)
                    } else if Bool.random(using: &rng) {
                        let client = Self.clients.randomElement(using: &rng)!
                        file = try file.unexport(path: path, client: client).file
                        model[path]?.remove(try ClientAddress(client).value)
                        if model[path]?.isEmpty == true { model[path] = nil }
                    } else {
                        file = try file.unexport(path: path).file
                        model[path] = nil
                    }
                    operations += 1
                } catch {
                    // Only a foreign entry for one of our paths may refuse an operation.
                    guard case ExportsError.conflict = error else {
                        Issue.record("unexpected error \(error) for \(String(decoding: original, as: UTF8.self).debugDescription)")
                        return
                    }
                    refusals += 1
                    #expect(file == before)
                }
                // Invariants after every step.
                #expect(ExportsFile(parsing: file.bytes, mode: mode) == file)
                let outside = file.bytesOutsideBlock
                let allowed = outside == original
                    || (original.last != UInt8(ascii: "\n") && !original.isEmpty
                        && (outside == original + [10] || outside == original + [10, 10]))
                #expect(allowed, "outside bytes changed for \(String(decoding: original, as: UTF8.self).debugDescription)")
                let managed = try file.managedExports()
                var actual: [String: Set<String>] = [:]
                for export in managed { actual[export.path] = Set(export.clients.map(\.address.value)) }
                #expect(actual == model)
                #expect(managed.map(\.path) == managed.map(\.path).sorted())
                if mode == .shared && model.isEmpty {
                    #expect(file.managedBlockState == .absent)
                }
            }
        }
        #expect(operations > Self.iterations)
        #expect(refusals > 0)
    }

    @Test("exporting and unexporting everything restores the original file")
    func restores() throws {
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<Self.iterations {
            var original = Self.foreignFile(&rng)
            if original.last != 10 { original.append(10) }
            let file = ExportsFile(parsing: original)
            guard file.conflicts(for: Self.ourPaths[1]).allSatisfy({ !$0.isConflict }) else { continue }
            let exported = try file.export(path: Self.ourPaths[1], clients: ["198.18.0.2"], policy: testPolicy)
            let again = try exported.file.export(path: Self.ourPaths[1], clients: ["198.18.0.2"], policy: testPolicy)
            #expect(again.file.bytes == exported.file.bytes)
            #expect(try exported.file.unexport(path: Self.ourPaths[1]).file.bytes == original)
        }
    }
}
