import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// CHECKSUM against the built storage-agent, `storagectl digest` and the python3
/// reference of docs/protocol.md: three implementations, one value.
@Suite("CHECKSUM and storagectl digest (built binaries)")
struct ChecksumLiveTests {
    static let python = """
        import xxhash,sys; f=open(sys.argv[1],"rb"); d=b"".join(xxhash.xxh3_128(b).digest() for b in iter(lambda: f.read(4<<20), b"")); print("xxh3-128:"+xxhash.xxh3_128(d).hexdigest())
        """

    /// 21 MiB + 333 bytes: data, three whole blocks of hole, data up to the short tail.
    static func makeSparse(_ path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TestFailure("cannot create \(path)") }
        defer { close(fd) }
        let size = (21 << 20) + 333
        guard ftruncate(fd, off_t(size)) == 0 else { throw TestFailure("ftruncate \(path)") }
        let data = [UInt8]((0..<1_500_000).map { UInt8(truncatingIfNeeded: ($0 * 7919) >> 3) })
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 4096) }
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(size - $0.count)) }
    }

    static func field(_ line: String, _ key: String) -> String? {
        line.split(separator: " ").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    @Test("CHECKSUM answers digest= for a sparse image, equal to storagectl digest and to python3's; a symlink is refused")
    func agrees() async throws {
        let agent = try await LiveStorageAgent()
        let image = agent.dir + "/root/w1/w1.img"
        try FileManager.default.createDirectory(atPath: agent.dir + "/root/w1", withIntermediateDirectories: true)
        try Self.makeSparse(image)
        // Debian's python3, for which python3-xxhash is built (not whichever python3 is on PATH)
        let reference = try await runProgram("/usr/bin/python3", ["-c", Self.python, image])
        #expect(reference.status == 0, "python3: \(reference.stderr)")
        let expected = reference.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(expected.hasPrefix("xxh3-128:") && expected.count == 9 + 32, "\(expected)")

        let c = try await agent.client(timeout: 30)
        await c.send("CHECKSUM path=\(image)\n")
        let answer = await c.readResponse()
        let ok = try #require(answer.last, "no answer")
        #expect(ok.hasPrefix("OK path=\(image) size=\((21 << 20) + 333) digest=\(expected) seconds="), "\(answer)")
        #expect(Self.field(ok, "sha256") == nil)

        let cli = try await runProgram(try TestSupport.binary("storagectl"), ["digest", image])
        #expect(cli.status == 0 && cli.stdout == "\(expected)  \(image)\n", "\(cli)")

        #expect(symlink(image, agent.dir + "/root/w1/link.img") == 0)
        await c.send("CHECKSUM path=\(agent.dir)/root/w1/link.img\n")
        #expect(await c.readLine()?.hasPrefix("ERR code=invalid-argument ") == true)
        try await agent.stop()
    }
}
