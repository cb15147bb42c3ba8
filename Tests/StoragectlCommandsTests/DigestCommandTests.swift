import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation
import Testing
import TestSupport
@testable import StoragectlCommands
#if canImport(Glibc)
import Glibc
#endif

@Suite("storagectl digest")
struct DigestCommandTests {
    /// A temporary directory, removed by `remove()`.
    struct Dir {
        let path: String
        init() throws {
            var template = Array("/tmp/sctl-dig-XXXXXX".utf8CString)
            guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                throw AgentError(.internal, "mkdtemp failed")
            }
            path = String(cString: p)
        }
        func remove() { try? FileManager.default.removeItem(atPath: path) }
    }

    /// The python3 reference from the help text and docs/protocol.md, run as written by
    /// Debian's python3 (python3-xxhash is built for it, not for another python3 on PATH).
    static func reference(_ file: String) async throws -> String {
        // posix_spawn, polled (TestSupport): no cooperative-pool thread waits on a child
        let result = try await runProgram("/usr/bin/python3", ["-c", #"""
            import xxhash,sys;X=xxhash.xxh3_128;f=open(sys.argv[1],"rb");\
            d=b"".join(X(b).digest()for b in iter(lambda:f.read(4<<20),b""));\
            print("xxh3-128:"+X(d).hexdigest())
            """#, file])
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// 13 MiB + 5 bytes: data, a hole of two whole blocks, data that ends mid-block.
    static func sparse(_ path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AgentError(.internal, "cannot create \(path)") }
        defer { close(fd) }
        let size = (13 << 20) + 5
        _ = ftruncate(fd, off_t(size))
        let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 100) }
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(size - $0.count)) }
    }

    @Test("the digest of a sparse file, a small one and an empty one is the python3 reference's, whatever the threads")
    func matchesReference() async throws {
        let dir = try Dir()
        defer { dir.remove() }
        let sparse = dir.path + "/sparse.img", small = dir.path + "/small.img", empty = dir.path + "/empty.img"
        try Self.sparse(sparse)
        _ = FileManager.default.createFile(atPath: small, contents: Data("abc".utf8))
        _ = FileManager.default.createFile(atPath: empty, contents: nil)
        for path in [sparse, small, empty] {
            let expected = try await Self.reference(path)
            #expect(expected.hasPrefix("xxh3-128:") && expected.count == 9 + 32, "python3 reference: \(expected)")
            for threads in [1, 3] {
                let d = try DigestCommand.digest(of: path, threads: threads)
                #expect(d.digest == expected && d.path == path, "\(path), \(threads) thread(s)")
            }
        }
        // xxhash.xxh3_128(b"").hexdigest() and xxh3_128(xxh3_128(b"abc").digest()).hexdigest()
        #expect(try DigestCommand.digest(of: empty).digest == "xxh3-128:99aa06d3014798d86001c324468d497f")
        #expect(try DigestCommand.digest(of: small).digest == "xxh3-128:f758394eebabb2bb51ee911f78f31836")
        #expect(try DigestCommand.digest(of: sparse).size == UInt64((13 << 20) + 5))
    }

    @Test("a symbolic link is followed; a directory, a device and a missing file are refused with their codes")
    func refusals() throws {
        let dir = try Dir()
        defer { dir.remove() }
        let file = dir.path + "/a.img"
        _ = FileManager.default.createFile(atPath: file, contents: Data("abc".utf8))
        #expect(symlink(file, dir.path + "/link.img") == 0)
        #expect(try DigestCommand.digest(of: dir.path + "/link.img").digest == DigestCommand.digest(of: file).digest)
        #expect(throws: AgentError.self) { try DigestCommand.digest(of: dir.path) }
        for (path, code) in [(dir.path, AgentError.Code.invalidArgument), ("/dev/null", .invalidArgument),
                             (dir.path + "/missing.img", .notFound), (file + "/x", .notFound)] {
            do throws(AgentError) {
                _ = try DigestCommand.digest(of: path)
                Issue.record("\(path) was digested")
            } catch {
                #expect(error.code == code, "\(path): \(error)")
            }
        }
    }

    @Test("lines like sha256sum, JSON with digest per file, the first failure's exit status")
    func formatting() throws {
        let good = DigestedFile(path: "/srv/a b.img", size: 3, digest: "xxh3-128:" + String(repeating: "4f", count: 16))
        let missing = AgentError(.notFound, "/srv/x.img: No such file or directory")
        let outcomes = [DigestOutcome(path: good.path, result: .success(good)),
                        DigestOutcome(path: "/srv/x.img", result: .failure(missing)),
                        DigestOutcome(path: "/srv", result: .failure(AgentError(.invalidArgument, "/srv is a directory")))]
        #expect(DigestFormatting.line(good) == "xxh3-128:" + String(repeating: "4f", count: 16) + "  /srv/a b.img")
        #expect(DigestFormatting.short(good.digest) == "xxh3-128:" + String(repeating: "4f", count: 8) + "…")
        #expect(DigestFormatting.short(good.digest, hexDigits: 3) == "xxh3-128:4f4…")
        #expect(DigestFormatting.errorLine(missing) == "storagectl: error: /srv/x.img: No such file or directory [not-found]")
        #expect(DigestFormatting.exitStatus(outcomes) == 66)
        #expect(DigestFormatting.exitStatus([outcomes[0]]) == 0)
        #expect(DigestFormatting.exitStatus([outcomes[2], outcomes[1]]) == 64)
        let doc = try JSONSerialization.jsonObject(with: Data(try DigestFormatting.json(outcomes).utf8)) as! [String: Any]
        let files = doc["files"] as! [[String: Any]]
        #expect(files.count == 3)
        #expect(files[0]["path"] as? String == "/srv/a b.img" && files[0]["size"] as? Int == 3
            && files[0]["digest"] as? String == good.digest && files[0]["code"] == nil)
        #expect(files[1]["code"] as? String == "not-found" && files[1]["digest"] == nil && files[1]["path"] as? String == "/srv/x.img")
    }

    @Test("storagectl digest parses FILE... and --json, needs a file, and its help defines the digest with the python3 equivalent")
    func parsing() throws {
        let root = try StoragectlCommand.parseAsRoot(["digest", "--json", "a.img", "b.img"])
        let command = try #require(root as? DigestCommand)
        #expect(command.files == ["a.img", "b.img"] && command.json)
        #expect(throws: (any Error).self) { try StoragectlCommand.parseAsRoot(["digest"]) }
        let help = DigestCommand.helpMessage(columns: 80)
        #expect(help.contains("the XXH3-128 (32 lowercase hex"))
        #expect(help.contains("concatenated XXH3-128 digests"))
        #expect(help.contains("4 MiB blocks"))
        // the python3 lines survive an 80-column terminal intact
        #expect(help.contains("""
              python3 -c 'import xxhash,sys;X=xxhash.xxh3_128;f=open(sys.argv[1],"rb");\\
              d=b"".join(X(b).digest()for b in iter(lambda:f.read(4<<20),b""));\\
              print("xxh3-128:"+X(d).hexdigest())' FILE
            """))
    }
}
