import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A read error while digesting a local file.
public struct FileDigestError: Error, Sendable, Equatable {
    public var errno: Int32
    public var offset: UInt64
    public var message: String
}

extension ContentDigest {
    /// The content digest of the first `size` bytes of the open regular file `fd`,
    /// hashed by `threads` threads block by block (each thread reads its own blocks
    /// with pread). Blocks that are wholly a hole (SEEK_DATA) are not read. Blocking:
    /// call it off the cooperative pool. `progress` receives the bytes handled so far
    /// (from any of the threads, at most every 4 MiB); `isCancelled` is polled per block.
    public static func ofFile(fd: Int32, size: UInt64, threads: Int = ContentDigest.defaultThreads,
                              isCancelled: @escaping @Sendable () -> Bool = { false },
                              progress: @escaping @Sendable (UInt64) -> Void = { _ in }) throws(FileDigestError) -> String {
        let blockCount = Int((size + UInt64(blockSize) - 1) / UInt64(blockSize))
        let state = FileDigestState(blockCount: blockCount)
        let workers = max(1, min(threads, blockCount))
        let work: @Sendable () -> Void = {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 4096)
            defer { buffer.deallocate() }
            while let index = state.nextBlock() {
                if isCancelled() { state.fail(FileDigestError(errno: ECANCELED, offset: 0, message: "cancelled")); return }
                let start = UInt64(index) * UInt64(blockSize)
                let length = Int(min(UInt64(blockSize), size - start))
                do throws(FileDigestError) {
                    let digest = try blockDigest(fd: fd, start: start, length: length, buffer: buffer)
                    state.store(digest, at: index, bytes: UInt64(length), progress: progress)
                } catch {
                    state.fail(error)
                    return
                }
            }
        }
        if workers == 1 {
            work()
        } else {
            let group = DispatchGroup()
            for n in 0..<workers {
                group.enter()
                let thread = Thread { work(); group.leave() }
                thread.name = "content-digest-\(n)"
                thread.start()
            }
            group.wait()
        }
        return try state.result()
    }

    /// Threads for ``ofFile(fd:size:threads:isCancelled:progress:)``: the machine's
    /// cores, at most 4.
    public static var defaultThreads: Int { max(1, min(4, ProcessInfo.processInfo.activeProcessorCount)) }

    private static func blockDigest(fd: Int32, start: UInt64, length: Int,
                                    buffer: UnsafeMutableRawPointer) throws(FileDigestError) -> [UInt8] {
        // A block with no data in it (SEEK_DATA lands beyond it, or there is no more data).
        let data = lseek(fd, off_t(start), 3 /* SEEK_DATA, not exported by Glibc's module */)
        var digester = BlockDigester()
        if (data < 0 && errno == ENXIO) || (data >= 0 && UInt64(data) >= start + UInt64(length)) {
            digester.updateZeros(length)
            return digester.finalize()
        }
        var done = 0
        while done < length {
            let n = pread(fd, buffer + done, length - done, off_t(start) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FileDigestError(errno: errno, offset: start + UInt64(done), message: String(cString: strerror(errno)))
            }
            if n == 0 {
                throw FileDigestError(errno: EIO, offset: start + UInt64(done), message: "unexpected end of file (the file shrank while it was read)")
            }
            done += n
        }
        digester.update(UnsafeRawBufferPointer(start: buffer, count: length))
        return digester.finalize()
    }
}

/// The blocks handed out, the digests collected and the first failure.
private final class FileDigestState: @unchecked Sendable {
    // Invariant: every var is only touched with `lock` held.
    private let lock = NSLock()
    private var next = 0
    private var digests: [[UInt8]?]
    private var failure: FileDigestError?
    private var done: UInt64 = 0

    init(blockCount: Int) { digests = Array(repeating: nil, count: blockCount) }

    func nextBlock() -> Int? {
        lock.withLock {
            guard failure == nil, next < digests.count else { return nil }
            defer { next += 1 }
            return next
        }
    }

    func store(_ digest: [UInt8], at index: Int, bytes: UInt64, progress: (UInt64) -> Void) {
        let total: UInt64 = lock.withLock {
            digests[index] = digest
            done += bytes
            return done
        }
        progress(total)
    }

    func fail(_ error: FileDigestError) { lock.withLock { if failure == nil { failure = error } } }

    func result() throws(FileDigestError) -> String {
        let (failure, digests) = lock.withLock { (self.failure, self.digests) }
        if let failure { throw failure }
        return ContentDigest.combine(digests.map { $0! })
    }
}
