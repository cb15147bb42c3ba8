import Foundation
import SystemPackage
import Testing
import TestSupport
@testable import ImageCopy

/// A fresh directory under the system temp dir, removed by `deinit`.
final class TempDir {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "/imagecopy-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

/// Writes `length` pseudo-random bytes at `offset` of `path` (created if needed).
func writeRandom(_ path: String, offset: UInt64, length: Int, seed: UInt64) throws {
    var state = seed &+ 0x9e37_79b9_7f4a_7c15
    var bytes = [UInt8](repeating: 0, count: length)
    for index in bytes.indices {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        bytes[index] = UInt8(truncatingIfNeeded: state >> 56) | 1   // never zero
    }
    let fd = open(path, O_WRONLY | O_CREAT, 0o644)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, length, off_t(offset)) }
    guard written == length else { throw POSIXError(.EIO) }
}

func setSize(_ path: String, _ size: UInt64) throws {
    guard truncate(path, off_t(size)) == 0 else { throw POSIXError(.EIO) }
}

/// Runs a program (argument vector, no shell, posix_spawn polled so no pool thread is
/// blocked); returns stdout; throws on non-zero exit.
@discardableResult
func runTool(_ arguments: [String]) async throws -> String {
    let result = try await runProgram("/usr/bin/env", arguments)
    guard result.status == 0 else {
        throw POSIXError(.EINVAL)
    }
    return result.stdout
}

func extents(of path: String) throws -> [FileExtent] {
    let source = try LocalSource(path: path)
    return try SparseWalker.extents(fd: source.fd, size: source.size)
}

@Suite("sparse extent walking (SEEK_DATA / SEEK_HOLE)")
struct SparseWalkerTests {
    @Test("data, hole, data, trailing hole: extents cover the file exactly, in order")
    func mixed() throws {
        let dir = try TempDir()
        let path = dir.file("mixed.img")
        try writeRandom(path, offset: 0, length: 64 << 10, seed: 1)
        try writeRandom(path, offset: 4 << 20, length: 128 << 10, seed: 2)
        try setSize(path, 16 << 20)
        let found = try extents(of: path)
        #expect(found == [
            FileExtent(offset: 0, length: 64 << 10, isData: true),
            FileExtent(offset: 64 << 10, length: (4 << 20) - (64 << 10), isData: false),
            FileExtent(offset: 4 << 20, length: 128 << 10, isData: true),
            FileExtent(offset: (4 << 20) + (128 << 10), length: (16 << 20) - (4 << 20) - (128 << 10), isData: false),
        ])
    }

    @Test("a file that is all hole is one hole extent; an empty file has none")
    func allHoleAndEmpty() throws {
        let dir = try TempDir()
        let hole = dir.file("hole.img")
        _ = FileManager.default.createFile(atPath: hole, contents: nil)
        try setSize(hole, 8 << 20)
        #expect(try extents(of: hole) == [FileExtent(offset: 0, length: 8 << 20, isData: false)])
        let empty = dir.file("empty.img")
        _ = FileManager.default.createFile(atPath: empty, contents: nil)
        #expect(try extents(of: empty) == [])
    }

    @Test("a leading hole and data up to the end of file")
    func leadingHole() throws {
        let dir = try TempDir()
        let path = dir.file("tail.img")
        try writeRandom(path, offset: 1 << 20, length: 4096, seed: 3)
        let found = try extents(of: path)
        #expect(found == [
            FileExtent(offset: 0, length: 1 << 20, isData: false),
            FileExtent(offset: 1 << 20, length: 4096, isData: true),
        ])
    }

    @Test("a file that is not regular is refused; a missing one maps to not-found")
    func notRegular() throws {
        #expect(throws: ImageCopyError.sourceNotRegularFile("/tmp")) { try LocalSource(path: "/tmp") }
        do {
            _ = try LocalSource(path: "/nonexistent/storagectl-image")
            Issue.record("opened a missing file")
        } catch {
            #expect(error.systemErrno == .noSuchFileOrDirectory)
        }
    }
}

/// The independent reference implementation of the content digest (Python's xxhash,
/// Debian's python3-xxhash: run by /usr/bin/python3, not whichever python3 is first on PATH).
func referenceDigest(_ path: String) async throws -> String? {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Lab/content-digest").path
    return try await runTool(["/usr/bin/python3", script, path]).split(separator: " ").first.map(String.init)
}

@Suite("content digest of sparse files")
struct SparseHashTests {
    @Test("the digest of the logical content (holes as zeros) equals the reference tool's", arguments: [0, 1, 2])
    func matchesReference(layout: Int) async throws {
        let dir = try TempDir()
        let path = dir.file("img-\(layout)")
        switch layout {
        case 0:   // data, holes, data, trailing hole not on a chunk boundary
            try writeRandom(path, offset: 0, length: 300_000, seed: 10)
            try writeRandom(path, offset: 5 << 20, length: 1_500_000, seed: 11)
            try setSize(path, (12 << 20) + 12345)
        case 1:   // all hole
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            try setSize(path, 3 << 20)
        default:  // dense, odd size
            try writeRandom(path, offset: 0, length: 2_345_679, seed: 12)
        }
        let expected = try await referenceDigest(path)
        let source = try LocalSource(path: path)
        #expect(try digestOfLocalFile(source) == expected)
    }

    @Test("the reader hashes what the reference tool hashes (1-3 hash lanes) and skips zero chunks", arguments: [1, 2, 3])
    func readerPipeline(lanes: Int) async throws {
        let dir = try TempDir()
        let path = dir.file("reader.img")
        try writeRandom(path, offset: 0, length: 3 << 20, seed: 30)
        try writeRandom(path, offset: (13 << 20) + 777, length: 5 << 20, seed: 31)   // across blocks 3 and 4
        // allocated zeros: a data extent whose content is zero is not sent
        let fd = open(path, O_WRONLY)
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        _ = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(8 << 20)) }
        close(fd)
        try setSize(path, (20 << 20) + 4321)
        let expected = try await referenceDigest(path)
        let source = try LocalSource(path: path)
        let chunk = 1 << 20
        let buffers = SlotBuffers(count: 4, slotBytes: chunk)
        let pipe = try ChunkPipe(slots: 4)
        let thread = Thread { runReader(source: source, pipe: pipe, buffers: buffers, chunkBytes: chunk, lanes: lanes) }
        thread.start()
        var chunks: [ChunkPipe.Chunk] = []
        var sent: UInt64 = 0
        var outcome: Result<(digest: String, dataBytes: UInt64), ImageCopyError>?
        var passed: UInt64 = 0
        while outcome == nil || !chunks.isEmpty {
            let state = pipe.drain(into: &chunks)
            outcome = state.result
            passed = state.passed
            for chunk in chunks {
                sent += UInt64(chunk.length)
                pipe.release(chunk.slot)
            }
            chunks.removeAll()
            try await Task.sleep(for: .milliseconds(1))
            if outcome != nil { _ = pipe.drain(into: &chunks) }
        }
        let value = try #require(try outcome?.get())
        #expect(value.digest == expected)
        #expect(value.dataBytes == (8 << 20) + 4096)   // extents are whole 4 KiB filesystem blocks
        #expect(sent == (8 << 20) + 4096)
        #expect(passed + sent == (20 << 20) + 4321)
    }
}

@Suite("qcow2 header")
struct QCOW2HeaderTests {
    @Test("a qcow2 image: version 3, virtual size, no backing file")
    func plain() async throws {
        let dir = try TempDir()
        let path = dir.file("base.qcow2")
        try await runTool(["qemu-img", "create", "-q", "-f", "qcow2", path, "3G"])
        let header = try #require(try QCOW2Header.read(path: path))
        #expect(header.version == 3)
        #expect(header.virtualSize == 3 << 30)
        #expect(header.backingFile == nil)
        #expect(header.backingFormat == nil)
        #expect(header.clusterBits == 16)
    }

    @Test("an overlay names its backing file and format as stored")
    func overlay() async throws {
        let dir = try TempDir()
        let base = dir.file("base.qcow2")
        try await runTool(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"])
        let overlay = dir.file("overlay.qcow2")
        try await runTool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay])
        let header = try #require(try QCOW2Header.read(path: overlay))
        #expect(header.backingFile == "base.qcow2")
        #expect(header.backingFormat == "qcow2")
        #expect(header.virtualSize == 64 << 20)
        let absolute = dir.file("abs.qcow2")
        try await runTool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", absolute, "128M"])
        let second = try #require(try QCOW2Header.read(path: absolute))
        #expect(second.backingFile == base)
        #expect(second.virtualSize == 128 << 20)
    }

    @Test("compat=0.10 gives version 2")
    func version2() async throws {
        let dir = try TempDir()
        let path = dir.file("v2.qcow2")
        try await runTool(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path, "10M"])
        let header = try #require(try QCOW2Header.read(path: path))
        #expect(header.version == 2)
        #expect(header.virtualSize == 10 << 20)
    }

    @Test("a raw image is not qcow2 (nil); a truncated or corrupt header throws")
    func notQcow2() async throws {
        let dir = try TempDir()
        let raw = dir.file("disk.raw")
        try await runTool(["qemu-img", "create", "-q", "-f", "raw", raw, "1M"])
        #expect(try QCOW2Header.read(path: raw) == nil)
        #expect(throws: QCOW2HeaderError.self) { try QCOW2Header.parse([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]) }
        var bad = [UInt8](repeating: 0, count: 512)
        bad[0...3] = [0x51, 0x46, 0x49, 0xfb]
        bad[7] = 9     // version 9
        #expect(throws: QCOW2HeaderError.self) { try QCOW2Header.parse(bad) }
        #expect(throws: QCOW2HeaderError.self) { try QCOW2Header.read(path: dir.file("missing")) }
    }
}

@Suite("target paths and errors")
struct PathAndErrorTests {
    @Test("the temporary name is a hidden sibling of the final name")
    func temporaryNames() {
        #expect(ImageCopier.temporaryPath(for: "wanderer1.qcow2") == ".wanderer1.qcow2.storagectl-partial")
        #expect(ImageCopier.temporaryPath(for: "vms/a/w.qcow2") == "vms/a/.w.qcow2.storagectl-partial")
    }

    @Test("invalid relative paths are refused before any I/O", arguments: [
        "", "/abs.qcow2", "a/../b", "./a", "a//b", "a/", "x\ny", ".w.qcow2.storagectl-partial",
        String(repeating: "n", count: 300),
    ])
    func invalidPaths(path: String) async {
        do {
            _ = try await ImageCopier().copy(source: "/nonexistent", to: NFSTarget(server: "127.0.0.1", exportPath: "/x"),
                                             relativePath: path) { _ in }
            Issue.record("accepted \(path.debugDescription)")
        } catch let error as ImageCopyError {
            guard case .invalidPath = error else { Issue.record("unexpected \(error)"); return }
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a missing source is not-found, before any NFS traffic")
    func missingSource() async {
        do {
            // 127.0.0.1 only: the source is opened before the export is mounted.
            _ = try await ImageCopier().copy(source: "/nonexistent/w.qcow2", to: NFSTarget(server: "127.0.0.1", exportPath: "/x"),
                                             relativePath: "w.qcow2") { _ in }
            Issue.record("copied a missing file")
        } catch let error as ImageCopyError {
            guard case .sourceUnreadable = error else { Issue.record("unexpected \(error)"); return }
            #expect(error.systemErrno == .noSuchFileOrDirectory)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("system errors are typed; the engine's own failures have none")
    func typedErrno() {
        #expect(ImageCopyError.nfs(operation: "write", errno: ENOSPC, message: "full").systemErrno == .noSpace)
        #expect(ImageCopyError.mountFailed(url: "nfs://x/y", errno: ETIMEDOUT, message: "t").systemErrno == .timedOut)
        #expect(ImageCopyError.targetNotFound("w").systemErrno == nil)
    }

    @Test("NFSv3 statuses map to errno values (DQUOT and STALE differ)")
    func nfsStatuses() {
        #expect(errnoFor(nfsStatus: 28) == ENOSPC)
        #expect(errnoFor(nfsStatus: 13) == EACCES)
        #expect(errnoFor(nfsStatus: 69) == EDQUOT)
        #expect(errnoFor(nfsStatus: 70) == ESTALE)
        #expect(errnoFor(nfsStatus: 10008) == EIO)      // NFS3ERR_JUKEBOX and other server-only codes
    }

    @Test("the defaults: verification commit, COMMITs every 128 MiB, 6 WRITEs of 512 KiB in flight")
    func defaults() {
        let copier = ImageCopier()
        #expect(copier.verification == .commit)
        #expect(copier.commitInterval == 128 << 20)
        #expect(copier.inFlight == 6)
        #expect(copier.chunkBytes == 512 << 10)
    }
}
