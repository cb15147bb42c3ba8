import ContentDigest
import Foundation
import Testing
@testable import ImageCopy
#if canImport(Glibc)
import Glibc
#endif

/// `ImageCopier.copyToLocal` from a mounted share (the engine's way back, LOCALIZE).
@Suite("copy from the share to a local file")
struct LocalCopyTests {
    /// share/w1/w1.img: data, a hole of 6 MiB, data ending mid-chunk, a trailing hole.
    static func sparseShare(_ dir: TempDir) throws -> (root: String, source: String) {
        let root = dir.file("share")
        try FileManager.default.createDirectory(atPath: root + "/w1", withIntermediateDirectories: true)
        let source = root + "/w1/w1.img"
        try writeRandom(source, offset: 0, length: 700_000, seed: 1)
        try writeRandom(source, offset: 7 << 20, length: 1_234_567, seed: 2)
        try setSize(source, (16 << 20) + 4321)
        return (root, source)
    }

    static func allocated(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_blocks) * 512 : -1
    }

    @Test("the copy has the source's bytes and digest, keeps holes, and drops setuid/setgid", arguments: [1, 2])
    func copies(hashThreads: Int) async throws {
        let dir = try TempDir()
        let (root, source) = try Self.sparseShare(dir)
        chmod(source, 0o6755)
        let local = dir.file("local")
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        let destination = local + "/w1.img"
        try Data("leftover".utf8).write(to: URL(fileURLWithPath: local + "/.w1.img.storagectl-partial"))

        let reports = ProgressLog()
        let copier = ImageCopier(chunkBytes: 256 << 10, hashThreads: hashThreads)
        let result = try await copier.copyToLocal(from: .mounted(path: source, root: root), to: destination) { reports.add($0) }

        #expect(try Data(contentsOf: URL(fileURLWithPath: destination)) == Data(contentsOf: URL(fileURLWithPath: source)))
        #expect(result.digest == (try await referenceDigest(source)))
        #expect(result.size == (16 << 20) + 4321 && !result.alreadyPresent)
        #expect(result.dataBytes < 3 << 20, "only data chunks are written: \(result.dataBytes)")
        #expect(Self.allocated(destination) <= 3 << 20, "holes stay holes: \(Self.allocated(destination)) bytes allocated")
        var st = stat()
        #expect(stat(destination, &st) == 0 && st.st_mode & 0o7777 == 0o755, "mode \(String(st.st_mode & 0o7777, radix: 8))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: local) == ["w1.img"], "no temporary file is left")
        #expect(reports.last?.done == result.size)
    }

    @Test("a file at the destination is never overwritten: identical content is success, other content is localTargetExists")
    func destinationExists() async throws {
        let dir = try TempDir()
        let (root, source) = try Self.sparseShare(dir)
        let local = dir.file("local")
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        let destination = local + "/w1.img"
        try Data("another VM's disk".utf8).write(to: URL(fileURLWithPath: destination))
        let error = await #expect(throws: ImageCopyError.self) {
            _ = try await ImageCopier().copyToLocal(from: .mounted(path: source, root: root), to: destination) { _ in }
        }
        guard case .localTargetExists(let path, _, _)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path.hasSuffix("/local/w1.img"))
        #expect(try String(contentsOfFile: destination, encoding: .utf8) == "another VM's disk")
        #expect(try FileManager.default.contentsOfDirectory(atPath: local) == ["w1.img"], "no temporary file is left")

        try FileManager.default.removeItem(atPath: destination)
        let first = try await ImageCopier().copyToLocal(from: .mounted(path: source, root: root), to: destination) { _ in }
        let again = try await ImageCopier().copyToLocal(from: .mounted(path: source, root: root), to: destination) { _ in }
        #expect(!first.alreadyPresent && again.alreadyPresent && again.digest == first.digest)
        #expect(try FileManager.default.contentsOfDirectory(atPath: local) == ["w1.img"])
    }

    @Test("a symbolic link on the share is never followed: not in the middle, not at the end")
    func symlinkOnShare() async throws {
        let dir = try TempDir()
        let (root, _) = try Self.sparseShare(dir)
        try Data("secret".utf8).write(to: URL(fileURLWithPath: dir.file("secret")))
        symlink(dir.file("secret"), root + "/w1/evil.img")
        symlink(root + "/w1", root + "/w2")
        let local = dir.file("local")
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        for path in [root + "/w1/evil.img", root + "/w2/w1.img"] {
            await #expect(throws: ImageCopyError.self) {
                _ = try await ImageCopier().copyToLocal(from: .mounted(path: path, root: root), to: local + "/out.img") { _ in }
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: local).isEmpty)
    }

    @Test("a symbolic link or directory at the destination is refused and left alone")
    func destinationNotRegular() async throws {
        let dir = try TempDir()
        let (root, source) = try Self.sparseShare(dir)
        let local = dir.file("local")
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: dir.file("elsewhere")))
        symlink(dir.file("elsewhere"), local + "/w1.img")
        let error = await #expect(throws: ImageCopyError.self) {
            _ = try await ImageCopier().copyToLocal(from: .mounted(path: source, root: root), to: local + "/w1.img") { _ in }
        }
        guard case .targetNotRegularFile(let path)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path.hasSuffix("/local/w1.img"))
        #expect(try String(contentsOfFile: dir.file("elsewhere"), encoding: .utf8) == "keep")
        #expect(try FileManager.default.contentsOfDirectory(atPath: local) == ["w1.img"])
    }

    @Test("a cancelled copy leaves the destination as it was and no temporary file")
    func cancelled() async throws {
        let dir = try TempDir()
        let root = dir.file("share")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try writeRandom(root + "/big.img", offset: 0, length: 64 << 20, seed: 3)
        let local = dir.file("local")
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        try Data("stale".utf8).write(to: URL(fileURLWithPath: local + "/big.img"))
        let task = Task {
            try await ImageCopier(chunkBytes: 64 << 10, hashThreads: 1).copyToLocal(from: .mounted(path: root + "/big.img", root: root),
                                                                                  to: local + "/big.img") { _ in }
        }
        task.cancel()
        let outcome = await task.result
        if case .success = outcome {
            // The copy won the race; then it must be complete.
            #expect(try Data(contentsOf: URL(fileURLWithPath: local + "/big.img")).count == 64 << 20)
        } else {
            #expect(try String(contentsOfFile: local + "/big.img", encoding: .utf8) == "stale")
        }
        #expect(!FileManager.default.fileExists(atPath: local + "/.big.img.storagectl-partial"))
    }
}

/// Progress reports collected from the engine's thread.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [CopyProgress] = []
    func add(_ p: CopyProgress) { lock.withLock { reports.append(p) } }
    var last: CopyProgress? { lock.withLock { reports.last } }
}
