import Testing
@testable import ExportsFile

@Suite("exports corpus")
struct CorpusTests {
    @Test("the corpus holds at least eight files")
    func corpusSize() {
        #expect(Corpus.names.count >= 8)
    }

    @Test("parsing and rendering a corpus file gives back the same bytes", arguments: Corpus.names)
    func roundTrip(name: String) throws {
        let bytes = try Corpus.bytes(name)
        let file = ExportsFile(parsing: bytes)
        #expect(file.bytes == bytes)
        #expect(ExportsFile(parsing: file.bytes) == file)
    }

    @Test("every corpus line kind is recognised as expected")
    func kinds() throws {
        func kinds(_ name: String) throws -> (entries: Int, comments: Int, blanks: Int, opaque: Int) {
            let file = ExportsFile(parsing: try Corpus.bytes(name))
            var counts = (0, 0, 0, 0)
            for line in file.lines {
                switch line.kind {
                case .entry: counts.0 += 1
                case .comment: counts.1 += 1
                case .blank: counts.2 += 1
                case .opaque: counts.3 += 1
                }
            }
            return counts
        }
        let debian = try kinds("01-debian-default.exports")
        #expect(debian.entries == 0 && debian.comments == 10 && debian.opaque == 0)
        let mixed = try kinds("02-mixed-clients.exports")
        #expect(mixed.entries == 4 && mixed.blanks == 1)
        let continued = try kinds("05-continuations.exports")
        #expect(continued.entries == 3 && continued.comments == 1)
        let opaque = try kinds("08-opaque-lines.exports")
        #expect(opaque.entries == 2 && opaque.opaque == 6 && opaque.blanks == 1)
    }

    @Test("a file with CRLF line ends and no final newline keeps both")
    func crlf() throws {
        let bytes = try Corpus.bytes("07-crlf-no-final-newline.exports")
        let file = ExportsFile(parsing: bytes)
        #expect(file.lines.last?.raw.last == UInt8(ascii: ")"))
        #expect(file.entries.map(\.path) == ["/srv/crlf", "/srv/crlf2", "/srv/last"])
        #expect(file.entries[1].clients.map { $0.rendered() } == ["host2(ro)"])
    }
}
