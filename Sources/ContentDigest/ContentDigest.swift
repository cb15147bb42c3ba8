import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The content digest storagectl reports for a disk image: SHA-256 over the
/// concatenated SHA-256 digests of the file's consecutive 4 MiB blocks (the last block
/// may be shorter; an empty file is SHA-256 of nothing). It is the "content hash"
/// scheme Dropbox documents, with 4 MiB blocks.
///
/// Why not a plain SHA-256 of the file: a block of zeros always has the same digest,
/// so holes and zero blocks cost nothing to hash, and blocks can be hashed in
/// parallel. A sparse image then costs time in proportion to its data, not to its
/// virtual size, on the compute host (while copying) and on the storage host (when
/// it checks the copy). A shell equivalent is in `docs/image-copy.md`.
///
/// Feed the logical content in order with ``update(_:)`` and ``updateZeros(_:)``.
public struct ContentDigest {
    /// Bytes per block.
    public static let blockSize = 4 << 20

    /// SHA-256 of one whole block of zeros.
    public static let zeroBlockDigest: [UInt8] = {
        var hasher = SHA256()
        ZeroBytes.hash(UInt64(blockSize), into: &hasher)
        return Array(hasher.finalize())
    }()

    private var outer = SHA256()
    /// The block being fed (zero runs at its start are only counted there).
    private var block = BlockDigester()
    /// Logical bytes consumed so far.
    public private(set) var count: UInt64 = 0

    public init() {}

    /// Appends `bytes`. A block that stays all zeros takes the precomputed digest.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var base = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = min(left, Self.blockSize - block.count)
            block.update(UnsafeRawBufferPointer(start: base, count: n))
            count += UInt64(n)
            base += n
            left -= n
            if block.count == Self.blockSize { closeBlock() }
        }
    }

    /// Appends `length` zero bytes (a hole). Whole blocks of zeros cost O(1).
    public mutating func updateZeros(_ length: UInt64) {
        var left = length
        while left > 0 {
            let n = Int(min(left, UInt64(Self.blockSize - block.count)))
            block.updateZeros(n)
            count += UInt64(n)
            left -= UInt64(n)
            if block.count == Self.blockSize { closeBlock() }
        }
    }

    /// The digest, lowercase hex. Consumes the value.
    public consuming func finalize() -> String {
        if block.count > 0 { closeBlock() }
        return Self.hex(outer.finalize())
    }

    private mutating func closeBlock() {
        let full = block
        block = BlockDigester()
        outer.update(data: full.finalize())
    }

    /// Combines per-block digests (in file order) into the content digest.
    public static func combine(_ blockDigests: [[UInt8]]) -> String {
        var outer = SHA256()
        for digest in blockDigests { outer.update(data: digest) }
        return hex(outer.finalize())
    }

    public static func hex<D: Sequence<UInt8>>(_ digest: D) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A shared page of zeros for hashing holes, and a fast all-zero test.
public enum ZeroBytes {
    static let count = 1 << 16
    nonisolated(unsafe) static let page: UnsafeMutableRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 4096)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        return p
    }()

    /// Hashes `length` zero bytes into `hasher`.
    public static func hash(_ length: UInt64, into hasher: inout SHA256) {
        var left = length
        while left > 0 {
            let n = Int(min(left, UInt64(count)))
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: page, count: n))
            left -= UInt64(n)
        }
    }

    /// Whether `count` bytes at `pointer` are all zero (stops at the first non-zero byte).
    public static func isZero(_ pointer: UnsafeRawPointer, count: Int) -> Bool {
        var offset = 0
        while offset < count {
            let n = Swift.min(Self.count, count - offset)
            if memcmp(pointer + offset, page, n) != 0 { return false }
            offset += n
        }
        return true
    }
}

/// The SHA-256 of ONE block of the content digest (at most ``ContentDigest/blockSize``
/// bytes), fed in order; a whole block of zeros takes the precomputed digest. Blocks
/// are independent: different blocks can be hashed on different threads and combined
/// with ``ContentDigest/combine(_:)``.
public struct BlockDigester {
    private var hasher = SHA256()
    private var fed = 0
    private var pendingZeros = 0

    public init() {}

    /// Bytes of the block seen so far.
    public var count: Int { fed + pendingZeros }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if fed == 0 && ZeroBytes.isZero(base, count: bytes.count) {
            pendingZeros += bytes.count
            return
        }
        flushPendingZeros()
        hasher.update(bufferPointer: bytes)
        fed += bytes.count
    }

    public mutating func updateZeros(_ length: Int) {
        if fed == 0 { pendingZeros += length } else {
            ZeroBytes.hash(UInt64(length), into: &hasher)
            fed += length
        }
    }

    /// The block's SHA-256. Consumes the value.
    public consuming func finalize() -> [UInt8] {
        if fed == 0 && pendingZeros == ContentDigest.blockSize { return ContentDigest.zeroBlockDigest }
        flushPendingZeros()
        return Array(hasher.finalize())
    }

    private mutating func flushPendingZeros() {
        guard pendingZeros > 0 else { return }
        ZeroBytes.hash(UInt64(pendingZeros), into: &hasher)
        fed += pendingZeros
        pendingZeros = 0
    }
}
