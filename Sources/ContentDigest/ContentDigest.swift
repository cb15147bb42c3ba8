import CXXHash

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The content digest storagectl reports for a disk image (docs/protocol.md, "Content
/// digest"): `xxh3-128:` and 32 lowercase hex digits, the XXH3-128 of the concatenated
/// XXH3-128 digests of the file's consecutive 4 MiB blocks (each block digest as its 16
/// canonical big-endian bytes; the last block may be shorter; an empty file is the
/// XXH3-128 of nothing). It is Dropbox's "content hash" scheme with 4 MiB blocks and
/// rsync's whole-file checksum (XXH3-128) in place of SHA-256.
///
/// Why XXH3-128 and not a cryptographic hash: the digest guards against corruption in
/// transit or on disk, not against an adversary (whoever could forge a collision
/// already has `no_root_squash` write access to the share), and it runs at several
/// GB/s per core where SHA-256 cost the copy engine ~0.55 CPU-seconds per GiB.
///
/// Why blocks and not the file's plain hash: a block of zeros always has the same
/// digest, so holes and zero blocks cost nothing to hash, and blocks can be hashed in
/// parallel. A sparse image then costs time in proportion to its data, not to its
/// virtual size, on the compute host (while copying) and on the storage host (when it
/// checks the copy).
///
/// Feed the logical content in order with ``update(_:)`` and ``updateZeros(_:)``.
public struct ContentDigest {
    /// Bytes per block.
    public static let blockSize = 4 << 20

    /// The name of the algorithm, the value's prefix before `:`. (AgentAPI's
    /// `ContentDigestSpelling` reads the same spelling on the wire, without libxxhash.)
    public static let algorithm = "xxh3-128"

    /// What every content digest starts with: ``algorithm`` and `:`.
    public static let prefix = algorithm + ":"

    /// Bytes of one block digest (and of the top-level digest).
    public static let digestBytes = 16

    /// XXH3-128 of one whole block of zeros.
    public static let zeroBlockDigest: [UInt8] = {
        var hasher = XXH3Hasher()
        ZeroBytes.hash(UInt64(blockSize), into: &hasher)
        return hasher.finalize()
    }()

    private var outer = XXH3Hasher()
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

    /// The digest, `xxh3-128:` and 32 lowercase hex digits. Consumes the value.
    public consuming func finalize() -> String {
        if block.count > 0 { closeBlock() }
        return Self.spelled(outer.finalize())
    }

    private mutating func closeBlock() {
        let full = block
        block = BlockDigester()
        let digest = full.finalize()
        digest.withUnsafeBytes { outer.update($0) }
    }

    /// Combines per-block digests (16 bytes each, in file order) into the content digest.
    public static func combine(_ blockDigests: [[UInt8]]) -> String {
        var joined = [UInt8]()
        joined.reserveCapacity(blockDigests.count * digestBytes)
        for digest in blockDigests { joined += digest }
        return spelled(joined.withUnsafeBytes { XXH3Hasher.oneShot($0) })
    }

    /// `xxh3-128:` and the lowercase hex of `digest`.
    static func spelled(_ digest: [UInt8]) -> String { prefix + hex(digest) }

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

/// A streaming XXH3-128 (libxxhash's state, allocated by the library). A value: a copy
/// that is then fed gets a state of its own (copy on write).
public struct XXH3Hasher {
    /// Owns one `XXH3_state_t`.
    private final class State {
        let pointer: OpaquePointer
        init() {
            guard let p = XXH3_createState() else { fatalError("XXH3_createState: out of memory") }
            pointer = p
            XXH3_128bits_reset(pointer)
        }
        init(copying other: State) {
            guard let p = XXH3_createState() else { fatalError("XXH3_createState: out of memory") }
            pointer = p
            XXH3_copyState(pointer, other.pointer)
        }
        deinit { XXH3_freeState(pointer) }
    }

    private var state = State()

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if !isKnownUniquelyReferenced(&state) { state = State(copying: state) }
        _ = cxxh3_128_update(state.pointer, base, bytes.count)
    }

    /// The 16 canonical (big-endian) bytes of the digest of what was fed so far.
    public func finalize() -> [UInt8] { Self.canonical(XXH3_128bits_digest(state.pointer)) }

    /// The 16 canonical bytes of the XXH3-128 of `bytes`.
    public static func oneShot(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        // XXH3 of zero bytes reads no memory; a nil base address is fine for length 0.
        canonical(cxxh3_128(bytes.baseAddress, bytes.count))
    }

    static func canonical(_ hash: XXH128_hash_t) -> [UInt8] {
        var canonical = XXH128_canonical_t()
        XXH128_canonicalFromHash(&canonical, hash)
        return withUnsafeBytes(of: &canonical.digest) { Array($0) }
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
    public static func hash(_ length: UInt64, into hasher: inout XXH3Hasher) {
        var left = length
        while left > 0 {
            let n = Int(min(left, UInt64(count)))
            hasher.update(UnsafeRawBufferPointer(start: page, count: n))
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

/// The XXH3-128 of ONE block of the content digest (at most ``ContentDigest/blockSize``
/// bytes), fed in order; a whole block of zeros takes the precomputed digest. Blocks
/// are independent: different blocks can be hashed on different threads and combined
/// with ``ContentDigest/combine(_:)``.
public struct BlockDigester {
    private var hasher = XXH3Hasher()
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
        hasher.update(bytes)
        fed += bytes.count
    }

    public mutating func updateZeros(_ length: Int) {
        if fed == 0 { pendingZeros += length } else {
            ZeroBytes.hash(UInt64(length), into: &hasher)
            fed += length
        }
    }

    /// The block's XXH3-128, 16 canonical bytes. Consumes the value.
    public consuming func finalize() -> [UInt8] {
        if fed == 0 && pendingZeros == ContentDigest.blockSize { return ContentDigest.zeroBlockDigest }
        flushPendingZeros()
        return hasher.finalize()
    }

    private mutating func flushPendingZeros() {
        guard pendingZeros > 0 else { return }
        ZeroBytes.hash(UInt64(pendingZeros), into: &hasher)
        fed += pendingZeros
        pendingZeros = 0
    }
}
