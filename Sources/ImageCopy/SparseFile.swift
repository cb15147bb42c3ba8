import ContentDigest

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

    convenience init(path: String) throws(ImageCopyError) {
        var fd = open(path, O_RDONLY | O_CLOEXEC | openNoAtime)
        if fd < 0 && errno == EPERM {
            fd = open(path, O_RDONLY | O_CLOEXEC)   // O_NOATIME needs ownership or CAP_FOWNER
        }
        guard fd >= 0 else {
            let code = errno
            throw .sourceUnreadable(path: path, errno: code, message: String(cString: strerror(code)))
        }
        try self.init(adopting: fd, path: path)
    }

    /// Takes ownership of `fd`, open for reading on `path` (closed on failure too).
    init(adopting fd: Int32, path: String) throws(ImageCopyError) {
        self.path = path
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

/// The content digest of a local file (holes are not read), hashed in parallel.
func digestOfLocalFile(_ source: LocalSource) throws(ImageCopyError) -> String {
    do {
        return try ContentDigest.ofFile(fd: source.fd, size: source.size)
    } catch {
        throw .sourceUnreadable(path: source.path, errno: error.errno, message: error.message)
    }
}
