import Foundation
import Testing
@testable import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

@Suite("AtomicFile: concurrent writers of one path")
struct AtomicFileConcurrencyTests {
    static func scratch() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/safefiles-cc.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw FileError.system(operation: "mkdtemp", path: "", errno: errno) }
        return String(cString: made)
    }

    @Test("many threads replacing one file at once all succeed; the file is one of the writes; no temporary file is left")
    func concurrentWriters() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/UUID.previous.xml"
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 8) { writer in
            for round in 0..<150 {
                do {
                    // the state store's call: a caller-chosen temporary name, the same for every writer
                    try AtomicFile.write(Array("writer \(writer) round \(round)\n".utf8), to: path, mode: 0o600, temporaryName: ".UUID.previous.xml.tmp")
                } catch {
                    failures.add("\(error)")
                }
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all.count) failed writes, e.g. \(failures.all.first ?? "")")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("writer ") && text.hasSuffix(" round 149\n"), "\(text)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["UUID.previous.xml"])
    }

    @Test("a leftover of a writer that died is removed; a temporary file a live writer holds is not")
    func leftovers() throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/f"
        try Data("dead".utf8).write(to: URL(fileURLWithPath: dir + "/.f.storagectl-tmp.1-dead"))
        try Data("old fixed name".utf8).write(to: URL(fileURLWithPath: dir + "/.f.storagectl-tmp"))
        try Data("live".utf8).write(to: URL(fileURLWithPath: dir + "/.f.storagectl-tmp.2-live"))
        let live = open(dir + "/.f.storagectl-tmp.2-live", O_RDONLY)
        defer { close(live) }
        #expect(flock(live, LOCK_EX) == 0)
        try AtomicFile.write(Array("new".utf8), to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == [".f.storagectl-tmp.2-live", "f"])
    }
}

private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.withLock { list.append(s) } }
    var all: [String] { lock.withLock { list } }
}
