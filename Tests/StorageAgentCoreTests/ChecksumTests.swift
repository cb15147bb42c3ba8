import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import ContentDigest
import Foundation
import Testing
@testable import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

@Suite("CHECKSUM: content digest on the storage host's disk")
struct ChecksumTests {
    static let block = ContentDigest.blockSize

    func handler(_ sandbox: Sandbox) throws -> StorageAgentHandler {
        try StorageAgentHandler(configuration: sandbox.configuration(), applier: RecordingApplier())
    }

    /// A sparse file: data at the start, data across the first block boundary, a whole
    /// block that is a hole, a block of written zeros, and a short tail with data.
    static func makeSparse(_ path: String) throws -> UInt64 {
        let size = UInt64(4 * block + 12345)
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AgentError(.internal, "cannot create \(path)") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw AgentError(.internal, "ftruncate") }
        func write(_ bytes: [UInt8], at offset: Int) {
            _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        }
        write(Array("QFI\u{fb} header".utf8), at: 0)
        write([UInt8](repeating: 0xA5, count: 4096), at: block - 2048)
        write([UInt8](repeating: 0, count: block), at: 3 * block)  // zeros written, not a hole
        write(Array("tail".utf8), at: Int(size) - 4)
        return size
    }

    /// The digest of the file as ContentDigest's streaming API sees it: every byte read
    /// in odd-sized pieces, holes included.
    static func streamed(_ path: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        var digest = ContentDigest()
        var at = 0
        while at < data.count {
            let n = min(1_000_003, data.count - at)
            data[at..<(at + n)].withUnsafeBytes { digest.update($0) }
            at += n
        }
        return digest.finalize()
    }

    @Test("a sparse file with holes has the digest of its content, whatever the number of threads")
    func sparse() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        let path = sandbox.root + "/w1/w1.img"
        let size = try Self.makeSparse(path)
        let expected = try Self.streamed(path)
        for threads in [1, 2, 4] {
            let (n, digest) = try StorageAgentHandler.contentDigest(of: path, root: sandbox.root, progress: ProgressRelay(), threads: threads)
            #expect(n == size && digest == expected, "\(threads) thread(s)")
        }
        let reply = Collected()
        let ok = try await handler(sandbox).checksum(request("CHECKSUM path=\(path)"), reply: reply.stream)
        #expect(ok["path"] == path && ok["size"] == String(size) && ok["digest"] == expected)
        #expect(ok["sha256"] == nil)
        #expect(Array(ok.map(\.key)) == ["path", "size", "digest", "seconds"])
    }

    @Test("a file that is one hole, an empty file, and a file shorter than a block")
    func edges() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        let hole = sandbox.root + "/hole.img"
        #expect(truncate(hole, off_t(2 * Self.block + 7)) == -1)  // does not exist yet
        _ = FileManager.default.createFile(atPath: hole, contents: nil)
        #expect(truncate(hole, off_t(2 * Self.block + 7)) == 0)
        var zeros = ContentDigest()
        zeros.updateZeros(UInt64(2 * Self.block + 7))
        #expect(try await h.checksum(request("CHECKSUM path=\(hole)"), reply: Collected().stream)["digest"] == zeros.finalize())

        let empty = sandbox.root + "/empty.img"
        _ = FileManager.default.createFile(atPath: empty, contents: nil)
        let ok = try await h.checksum(request("CHECKSUM path=\(empty)"), reply: Collected().stream)
        // no block: the XXH3-128 of nothing (python3: xxhash.xxh3_128(b"").hexdigest())
        #expect(ok["size"] == "0" && ok["digest"] == "xxh3-128:99aa06d3014798d86001c324468d497f")

        // one short block: XXH3-128 of the XXH3-128 of "abc"
        let small = sandbox.root + "/small.img"
        _ = FileManager.default.createFile(atPath: small, contents: Data("abc".utf8))
        let answered = try await h.checksum(request("CHECKSUM path=\(small)"), reply: Collected().stream)["digest"]
        #expect(answered == "xxh3-128:f758394eebabb2bb51ee911f78f31836")
        // what the agent answers is what storagectl's contract reads as a current digest
        #expect(answered.map(ContentDigestSpelling.isCurrent) == true)
    }

    @Test("SPACE answers for the root and real directories below it, and refuses a path through a symbolic link")
    func spaceRefusesLinks() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        #expect(symlink("/etc", sandbox.root + "/etclink") == 0)
        #expect(try await h.space(request("SPACE"))["total"] != nil)
        #expect(try await h.space(request("SPACE path=\(sandbox.root)/w1"))["path"] == sandbox.root + "/w1")
        for (path, code) in [(sandbox.root + "/etclink", AgentError.Code.invalidArgument), (sandbox.root + "/missing", .notFound)] {
            do {
                let ok = try await h.space(request("SPACE path=\(path)"))
                Issue.record("\(path) was answered: \(ok)")
            } catch let e as AgentError {
                #expect(e.code == code, "\(path): \(e)")
            }
        }
    }

    @Test("a FIFO under the root is refused without being opened (opening it would block)")
    func fifoRefused() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        #expect(mkfifo(sandbox.root + "/pipe.img", 0o600) == 0)
        do {
            let ok = try await h.checksum(request("CHECKSUM path=\(sandbox.root)/pipe.img"), reply: Collected().stream)
            Issue.record("a FIFO was digested: \(ok)")
        } catch let e as AgentError {
            #expect(e.code == .invalidArgument, "\(e)")
        }
    }

    @Test("a symbolic link, a path through one, a directory, a missing file and a path outside the root are refused")
    func refusals() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        let real = sandbox.root + "/w1/w1.img"
        _ = FileManager.default.createFile(atPath: real, contents: Data("data".utf8))
        #expect(symlink(real, sandbox.root + "/w1/link.img") == 0)
        #expect(symlink(sandbox.root + "/w1", sandbox.root + "/dirlink") == 0)
        #expect(symlink("/etc/passwd", sandbox.root + "/w1/passwd") == 0)
        let cases: [(String, AgentError.Code)] = [
            (sandbox.root + "/w1/link.img", .invalidArgument),
            (sandbox.root + "/dirlink/w1.img", .invalidArgument),
            (sandbox.root + "/w1/passwd", .invalidArgument),
            (sandbox.root + "/w1", .invalidArgument),
            (sandbox.root + "/w1/missing.img", .notFound),
            ("/etc/passwd", .invalidArgument),
            (sandbox.root + "/w1/../w1/w1.img", .invalidArgument),
        ]
        for (path, code) in cases {
            do {
                let ok = try await h.checksum(request("CHECKSUM path=\(path)"), reply: Collected().stream)
                Issue.record("\(path) was digested: \(ok)")
            } catch let e as AgentError {
                #expect(e.code == code, "\(path): \(e)")
            }
        }
        #expect(try await h.checksum(request("CHECKSUM path=\(real)"), reply: Collected().stream)["digest"] != nil)
    }

    @Test("a read that the client abandons stops, and says so")
    func cancelled() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let path = sandbox.root + "/big.img"
        _ = try Self.makeSparse(path)
        let relay = ProgressRelay()
        relay.cancel()
        #expect(throws: AgentError(.unavailable, "CHECKSUM of \(path) stopped: the client went away")) {
            try StorageAgentHandler.contentDigest(of: path, root: sandbox.root, progress: relay, threads: 2)
        }
        #expect(relay.finished)
    }
}
