#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The facts of a qcow2 header an agent needs: version, virtual size, backing file.
/// Spec: QEMU `docs/interop/qcow2.txt` (all fields big-endian).
public struct QCOW2Header: Sendable, Equatable {
    /// 2 or 3.
    public var version: UInt32
    /// Guest-visible size in bytes.
    public var virtualSize: UInt64
    /// The backing file name exactly as stored in the image (relative names are relative
    /// to the image's directory), or nil.
    public var backingFile: String?
    /// The backing file format from the header extension (e.g. "qcow2", "raw"), or nil.
    public var backingFormat: String?
    /// log2 of the cluster size.
    public var clusterBits: UInt32

    public init(version: UInt32, virtualSize: UInt64, backingFile: String?, backingFormat: String? = nil, clusterBits: UInt32 = 16) {
        self.version = version
        self.virtualSize = virtualSize
        self.backingFile = backingFile
        self.backingFormat = backingFormat
        self.clusterBits = clusterBits
    }

    /// Reads the header of the file at `path`. Returns nil when the file is not qcow2
    /// (no `QFI\xfb` magic, e.g. a raw image).
    /// - Throws: ``QCOW2HeaderError`` if the file cannot be read or the header is malformed.
    public static func read(path: String) throws -> QCOW2Header? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw QCOW2HeaderError.unreadable(path: path, errno: errno) }
        defer { close(fd) }
        // The header, its extensions and the backing file name all live in the first
        // cluster in practice; 64 KiB covers the smallest cluster size (512) many times
        // over and every name QEMU writes (at most 1023 bytes).
        var bytes = [UInt8](repeating: 0, count: 65536)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + count, $0.count - count, off_t(count)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw QCOW2HeaderError.unreadable(path: path, errno: errno)
            }
            if n == 0 { break }
            count += n
        }
        return try parse(Array(bytes[0..<count]), path: path)
    }

    /// Parses a header from the first bytes of an image (see ``read(path:)``); nil when
    /// the magic is not qcow2.
    public static func parse(_ bytes: [UInt8], path: String = "<bytes>") throws -> QCOW2Header? {
        func u32(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
        }
        func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) << 32 | UInt64(u32(at + 4)) }
        func malformed(_ reason: String) -> QCOW2HeaderError { .malformed(path: path, reason: reason) }

        guard bytes.count >= 4, bytes[0] == 0x51, bytes[1] == 0x46, bytes[2] == 0x49, bytes[3] == 0xfb else { return nil }
        guard bytes.count >= 72 else { throw malformed("header shorter than 72 bytes") }
        let version = u32(4)
        guard version == 2 || version == 3 else { throw malformed("unsupported qcow2 version \(version)") }
        let backingOffset = u64(8)
        let backingSize = u32(16)
        let clusterBits = u32(20)
        guard (9...21).contains(clusterBits) else { throw malformed("cluster_bits \(clusterBits) out of range") }
        let virtualSize = u64(24)
        var headerLength: UInt64 = 72
        if version == 3 {
            guard bytes.count >= 104 else { throw malformed("version 3 header shorter than 104 bytes") }
            headerLength = UInt64(u32(100))
            guard headerLength >= 104, headerLength < UInt64(bytes.count) else { throw malformed("header_length \(headerLength) out of range") }
        }

        // Every offset and length below comes from the image, which a guest may have
        // written (a raw disk can hold any bytes): compared against the bytes read before
        // any arithmetic that could overflow, and converted to Int only once in range.
        var backingFile: String?
        if backingOffset != 0 && backingSize != 0 {
            guard backingSize <= 1023 else { throw malformed("backing file name of \(backingSize) bytes (QEMU allows 1023)") }
            guard backingOffset <= UInt64(bytes.count), UInt64(backingSize) <= UInt64(bytes.count) - backingOffset else {
                throw malformed("backing file name beyond the first 64 KiB")
            }
            let start = Int(backingOffset)
            guard let name = String(validating: bytes[start..<start + Int(backingSize)], as: UTF8.self) else {
                throw malformed("backing file name is not UTF-8")
            }
            backingFile = name
        }

        // Header extensions: (type u32, length u32, data padded to 8), ending with type 0.
        var backingFormat: String?
        var offset = Int(headerLength)
        let extensionsEnd = backingOffset != 0 ? Int(min(backingOffset, UInt64(bytes.count))) : bytes.count
        while offset + 8 <= extensionsEnd {
            let type = u32(offset)
            let length = Int(u32(offset + 4))
            if type == 0 { break }
            let dataStart = offset + 8
            guard dataStart + length <= bytes.count else { throw malformed("header extension 0x\(String(type, radix: 16)) runs past the header") }
            if type == 0xe279_2aca {                   // backing file format name
                backingFormat = String(decoding: bytes[dataStart..<dataStart + length], as: UTF8.self)
            }
            offset = dataStart + (length + 7) / 8 * 8
        }
        return QCOW2Header(version: version, virtualSize: virtualSize, backingFile: backingFile,
                           backingFormat: backingFormat, clusterBits: clusterBits)
    }
}

/// Why a qcow2 header could not be read.
public enum QCOW2HeaderError: Error, Sendable, Equatable, CustomStringConvertible {
    case unreadable(path: String, errno: Int32)
    case malformed(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let code): return "cannot read \(path): \(String(cString: strerror(code)))"
        case .malformed(let path, let reason): return "\(path) is not a valid qcow2 image: \(reason)"
        }
    }
}
