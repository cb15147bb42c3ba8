import CXXHash
import ContentDigest
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// XXH3-128 of `bytes` by libxxhash's plain one-shot function (not the dispatched
/// streaming path ContentDigest uses), as 16 canonical big-endian bytes.
private func xxh3(_ bytes: some Collection<UInt8>) -> [UInt8] {
    let hash = Array(bytes).withUnsafeBytes { XXH3_128bits($0.baseAddress, $0.count) }
    var canonical = XXH128_canonical_t()
    XXH128_canonicalFromHash(&canonical, hash)
    return withUnsafeBytes(of: canonical.digest) { Array($0) }
}

/// The reference definition, written the slow, obvious way: XXH3-128 of each 4 MiB
/// block of `bytes`, concatenated, hashed again, spelled `xxh3-128:<hex>`.
private func reference(_ bytes: [UInt8]) -> String {
    var joined: [UInt8] = []
    var start = 0
    while start < bytes.count {
        let end = min(bytes.count, start + ContentDigest.blockSize)
        joined += xxh3(bytes[start..<end])
        start = end
    }
    return "xxh3-128:" + xxh3(joined).map { String(format: "%02x", $0) }.joined()
}

private func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

/// Runs blocking work on a thread of its own, off Swift's cooperative pool (which other
/// suites' timing-sensitive tests share).
private func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

private func digest(_ bytes: [UInt8], pieces: [Int]) -> String {
    var d = ContentDigest()
    var at = 0
    var i = 0
    while at < bytes.count {
        let n = min(pieces[i % pieces.count], bytes.count - at)
        bytes.withUnsafeBytes { d.update(UnsafeRawBufferPointer(rebasing: $0[at..<at + n])) }
        at += n
        i += 1
    }
    return d.finalize()
}

@Suite struct ContentDigestTests {
    let block = ContentDigest.blockSize

    // Known answers from Python's xxhash (python3-xxhash), the reference of docs/protocol.md.

    @Test func emptyIsXXH3OfNothing() {
        // xxhash.xxh3_128(b"").hexdigest()
        #expect(ContentDigest().finalize() == "xxh3-128:99aa06d3014798d86001c324468d497f")
        #expect(ContentDigest.combine([]) == "xxh3-128:99aa06d3014798d86001c324468d497f")
    }

    @Test func smallFileIsXXH3OfItsOneDigest() {
        // xxh3_128(xxh3_128(b"hello\n").digest()).hexdigest()
        #expect(digest(Array("hello\n".utf8), pieces: [1]) == "xxh3-128:87a89edf65a24385e36443dcd1ad427a")
        #expect(reference(Array("hello\n".utf8)) == "xxh3-128:87a89edf65a24385e36443dcd1ad427a")
    }

    @Test func zeroBlockDigestIsXXH3OfFourMiBOfZeros() {
        // xxhash.xxh3_128(bytes(4 << 20)).hexdigest()
        #expect(ContentDigest.hex(ContentDigest.zeroBlockDigest) == "34001ae2f947e773165f453a5f35c459")
        #expect(ContentDigest.zeroBlockDigest == xxh3([UInt8](repeating: 0, count: ContentDigest.blockSize)))
    }

    @Test func threeBlocksAgreeWithPython() async throws {
        // python3: data = bytes((i*31) % 251 for i in range(9*(1<<20)+5)), digested as in docs/protocol.md
        let value = try await offPool { () -> String in
            let bytes = (0..<(9 << 20) + 5).map { UInt8(($0 * 31) % 251) }
            return digest(bytes, pieces: [1 << 20, 777_777])
        }
        #expect(value == "xxh3-128:79b9af0723a78d52f92cf910ae044070")
    }

    @Test func theValueNamesItsAlgorithm() {
        #expect(ContentDigest.prefix == "xxh3-128:" && ContentDigest.algorithm == "xxh3-128")
        let value = digest([1, 2, 3], pieces: [3])
        #expect(value.hasPrefix("xxh3-128:") && value.count == 9 + 32)
        #expect(value.dropFirst(9).allSatisfy { $0.isHexDigit && !$0.isUppercase })
    }

    @Test func aCopiedHasherFedApartKeepsItsOwnState() {
        var a = XXH3Hasher()
        [UInt8](repeating: 7, count: 100).withUnsafeBytes { a.update($0) }
        var b = a                                      // shares the state until one is fed
        [UInt8](repeating: 8, count: 100).withUnsafeBytes { b.update($0) }
        #expect(a.finalize() == xxh3([UInt8](repeating: 7, count: 100)))
        #expect(b.finalize() == xxh3([UInt8](repeating: 7, count: 100) + [UInt8](repeating: 8, count: 100)))
    }

    @Test(arguments: [[1 << 20], [4096, 12345, 1 << 22], [7], [(4 << 20) + 1]])
    func anySplitGivesTheReferenceDigest(pieces: [Int]) async throws {
        let block = self.block
        let (got, want) = try await offPool { () -> (String, String) in
            var bytes = randomBytes(2 * block + 777, seed: 42)
            // an all-zero block and a block that starts with zeros and then has data
            for i in block..<(2 * block) { bytes[i] = 0 }
            for i in 0..<(block / 2) { bytes[i] = 0 }
            return (digest(bytes, pieces: pieces), reference(bytes))
        }
        #expect(got == want)
    }

    @Test func holesGiveTheSameDigestAsWrittenZeros() {
        let data = randomBytes(1000, seed: 7)
        let zeros = 3 * block + 5000
        var bytes = data
        bytes += [UInt8](repeating: 0, count: zeros)
        bytes += data
        var d = ContentDigest()
        data.withUnsafeBytes { d.update($0) }
        d.updateZeros(UInt64(zeros))
        data.withUnsafeBytes { d.update($0) }
        #expect(d.count == UInt64(bytes.count))
        #expect(d.finalize() == reference(bytes))
    }

    @Test func onlyZerosOfAnyLength() {
        for length in [1, block - 1, block, block + 1, 3 * block] {
            var d = ContentDigest()
            d.updateZeros(UInt64(length))
            #expect(d.finalize() == reference([UInt8](repeating: 0, count: length)), "length \(length)")
        }
    }

    @Test func holesCostNothing() async throws {
        // 64 GiB of holes: a plain hash of them would take ~10 s here, the block digest is immediate.
        let seconds = try await offPool { () -> Double in
            let start = Date()
            var d = ContentDigest()
            d.updateZeros(64 << 30)
            _ = d.finalize()
            return Date().timeIntervalSince(start)
        }
        #expect(seconds < 2)
    }

    @Test(arguments: [1, 2, 3])
    func sparseFileOnDiskMatchesTheStreamingDigest(threads: Int) async throws {
        try await offPool { try Self.sparseFileCase(threads: threads) }
    }

    private static func sparseFileCase(threads: Int) throws {
        let block = ContentDigest.blockSize
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("content-digest-\(UUID()).img").path
        defer { unlink(path) }
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        // data, a hole of several blocks, data inside a block, a hole up to a partial last block
        let a = randomBytes(block + 3, seed: 1), b = randomBytes(999, seed: 2)
        let size = 9 * block + 12345
        #expect(ftruncate(fd, off_t(size)) == 0)
        #expect(a.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == a.count)
        let bAt = 6 * block + 100
        #expect(b.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(bAt)) } == b.count)
        var logical = [UInt8](repeating: 0, count: size)
        logical.replaceSubrange(0..<a.count, with: a)
        logical.replaceSubrange(bAt..<bAt + b.count, with: b)

        let seen = SeenBytes()
        let value = try ContentDigest.ofFile(fd: fd, size: UInt64(size), threads: threads, progress: { seen.set($0) })
        #expect(value == reference(logical))
        #expect(seen.value == UInt64(size))
    }

    @Test func ofFileFailsOnAFileShorterThanAnnounced() async throws {
        try await offPool { try Self.shortFileCase() }
    }

    private static func shortFileCase() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("content-digest-\(UUID()).img").path
        defer { unlink(path) }
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd) }
        let bytes = randomBytes(5000, seed: 3)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        #expect(throws: FileDigestError.self) { try ContentDigest.ofFile(fd: fd, size: 10_000, threads: 1) }
    }
}

private final class SeenBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var maximum: UInt64 = 0
    func set(_ v: UInt64) { lock.withLock { maximum = max(maximum, v) } }
    var value: UInt64 { lock.withLock { maximum } }
}

@Suite struct BlockDigesterTests {
    @Test func blocksHashedApartCombineToTheStreamingDigest() async throws {
        let block = ContentDigest.blockSize
        var bytes = randomBytes(3 * block + 700_000, seed: 9)
        for i in block..<(2 * block) { bytes[i] = 0 }          // one zero block
        var digests: [[UInt8]] = []
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + block)
            var d = BlockDigester()
            // fed in uneven pieces, with a "hole" in the middle of the last block
            bytes.withUnsafeBytes { raw in
                var at = start
                while at < end {
                    let n = min(300_000, end - at)
                    if start == 3 * block && at == start + 300_000 {
                        // 300 000 bytes of this block are zero in `bytes` too: feed them as a hole
                        d.updateZeros(n)
                    } else {
                        d.update(UnsafeRawBufferPointer(rebasing: raw[at..<at + n]))
                    }
                    at += n
                }
            }
            #expect(d.count == end - start)
            digests.append(d.finalize())
            start = end
        }
        for i in (3 * block + 300_000)..<(3 * block + 600_000) { bytes[i] = 0 }
        #expect(digests[1] == ContentDigest.zeroBlockDigest)
        #expect(ContentDigest.combine(digests) == reference(bytes))
    }
}
