import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Linux values of _GNU_SOURCE constants that Glibc's Swift module does not export
// (<linux/fs.h>, <asm-generic/fcntl.h>).
let seekData: Int32 = 3        // SEEK_DATA
let seekHole: Int32 = 4        // SEEK_HOLE
let openNoAtime: Int32 = 0o1000000  // O_NOATIME

/// One extent of a local file: data (allocated, must be read) or a hole (reads as zeros).
struct FileExtent: Sendable, Equatable {
    var offset: UInt64
    var length: UInt64
    var isData: Bool
    var end: UInt64 { offset + length }
}

/// Walks a local file's data and holes with `lseek(SEEK_DATA/SEEK_HOLE)` (lseek(2)).
///
/// The extents cover `[0, size)` exactly, in order, alternating data/hole. On a file
/// system without SEEK_DATA support the whole file is one data extent (EINVAL), which is
/// correct, just not sparse. The walk is lazy: call ``next()`` until nil.
struct SparseWalker {
    let fd: Int32
    let size: UInt64
    private(set) var position: UInt64 = 0

    init(fd: Int32, size: UInt64) {
        self.fd = fd
        self.size = size
    }

    mutating func next() throws(SourceError) -> FileExtent? {
        guard position < size else { return nil }
        let start = position
        let dataStart: UInt64
        let found = lseek(fd, off_t(start), seekData)
        if found < 0 {
            switch errno {
            case ENXIO: dataStart = size            // no data after `start`: hole to the end
            case EINVAL: dataStart = start          // no SEEK_DATA support: all data
            default: throw SourceError(errno: errno, operation: "lseek(SEEK_DATA)")
            }
        } else {
            dataStart = min(UInt64(found), size)
        }
        if dataStart > start {
            position = dataStart
            return FileExtent(offset: start, length: dataStart - start, isData: false)
        }
        let holeStart: UInt64
        let hole = lseek(fd, off_t(start), seekHole)
        if hole < 0 {
            if errno == EINVAL || errno == ENXIO { holeStart = size } else {
                throw SourceError(errno: errno, operation: "lseek(SEEK_HOLE)")
            }
        } else {
            holeStart = min(UInt64(hole), size)
        }
        // A file growing between the calls could give holeStart <= start: take the rest.
        let end = holeStart > start ? holeStart : size
        position = end
        return FileExtent(offset: start, length: end - start, isData: true)
    }

    /// Every extent of the file (for tests and small files).
    static func extents(fd: Int32, size: UInt64) throws(SourceError) -> [FileExtent] {
        var walker = SparseWalker(fd: fd, size: size)
        var result: [FileExtent] = []
        while let extent = try walker.next() { result.append(extent) }
        return result
    }
}

/// A failed system call on the local source.
struct SourceError: Error, Sendable {
    var errno: Int32
    var operation: String
    var message: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// A read-only local source file: never written, opened with O_NOATIME when allowed so
/// that even its atime stays as it was. Immutable after `init`; `pread` on a shared fd is
/// thread-safe, so the reader thread may use it.
final class LocalSource: @unchecked Sendable {
    let path: String
    let fd: Int32
    let size: UInt64
    let mode: UInt32
    let modificationTime: timespec
    let changeTime: timespec

    init(path: String) throws(ImageCopyError) {
        self.path = path
        var fd = open(path, O_RDONLY | O_CLOEXEC | openNoAtime)
        if fd < 0 && errno == EPERM {
            fd = open(path, O_RDONLY | O_CLOEXEC)   // O_NOATIME needs ownership or CAP_FOWNER
        }
        guard fd >= 0 else {
            let code = errno
            throw .sourceUnreadable(path: path, errno: code, message: String(cString: strerror(code)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            close(fd)
            throw .sourceUnreadable(path: path, errno: code, message: "fstat: \(String(cString: strerror(code)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw .sourceNotRegularFile(path)
        }
        self.fd = fd
        self.size = UInt64(st.st_size)
        self.mode = UInt32(st.st_mode & 0o7777)
        self.modificationTime = st.st_mtim
        self.changeTime = st.st_ctim
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    deinit { close(fd) }

    /// True when size, mtime and ctime are still those seen at open.
    func unchanged() -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return false }
        return UInt64(st.st_size) == size
            && st.st_mtim.tv_sec == modificationTime.tv_sec && st.st_mtim.tv_nsec == modificationTime.tv_nsec
            && st.st_ctim.tv_sec == changeTime.tv_sec && st.st_ctim.tv_nsec == changeTime.tv_nsec
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`.
    func readFully(_ buffer: UnsafeMutableRawPointer, count: Int, offset: UInt64) throws(ImageCopyError) {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                throw .sourceUnreadable(path: path, errno: code, message: "pread: \(String(cString: strerror(code)))")
            }
            if n == 0 { throw .sourceChanged(path) }   // shrank under us
            done += n
        }
    }

    func error(_ error: SourceError) -> ImageCopyError {
        .sourceUnreadable(path: path, errno: error.errno, message: error.message)
    }
}

/// Zeros for hashing holes without allocating per hole.
enum Zeros {
    static let count = 1 << 20
    nonisolated(unsafe) static let buffer: UnsafeRawBufferPointer = {
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        return UnsafeRawBufferPointer(raw)
    }()

    /// Feeds `length` zero bytes to `hasher`.
    static func hash(_ length: UInt64, into hasher: inout SHA256) {
        var left = length
        while left > 0 {
            let n = Int(min(left, UInt64(count)))
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            left -= UInt64(n)
        }
    }

    /// True when all `count` bytes at `pointer` are zero.
    static func isZero(_ pointer: UnsafeRawPointer, count: Int) -> Bool {
        var offset = 0
        while offset < count {
            let n = min(Zeros.count, count - offset)
            if memcmp(pointer + offset, buffer.baseAddress!, n) != 0 { return false }
            offset += n
        }
        return true
    }
}

extension SHA256.Digest {
    var hex: String {
        var text = ""
        text.reserveCapacity(64)
        for byte in self {
            let digits = Array("0123456789abcdef")
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xf)])
        }
        return text
    }
}

/// SHA-256 of the logical content of a local file (holes hashed as zeros) and the
/// number of data bytes read. Reads sequentially with `chunkBytes` reads.
func sha256OfLocalFile(_ source: LocalSource, chunkBytes: Int = 1 << 20) throws(ImageCopyError) -> (sha256: String, dataBytes: UInt64) {
    var hasher = SHA256()
    var walker = SparseWalker(fd: source.fd, size: source.size)
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 4096)
    defer { buffer.deallocate() }
    var dataBytes: UInt64 = 0
    while true {
        let next: FileExtent?
        do { next = try walker.next() } catch { throw source.error(error) }
        guard let extent = next else { break }
        if !extent.isData {
            Zeros.hash(extent.length, into: &hasher)
            continue
        }
        var offset = extent.offset
        while offset < extent.end {
            let n = Int(min(UInt64(chunkBytes), extent.end - offset))
            try source.readFully(buffer, count: n, offset: offset)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: n))
            offset += UInt64(n)
            dataBytes += UInt64(n)
        }
    }
    return (hasher.finalize().hex, dataBytes)
}
