import CNFS
import ContentDigest
import Foundation
import LibNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Set from a task's cancellation handler, polled by the copy's threads.
final class CancelFlag: @unchecked Sendable {
    // Invariant: `value` is only touched with `lock` held.
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// Calls the user's progress closure at most every `interval` seconds (and once at the end).
struct ProgressTicker {
    let total: UInt64
    let start: Double
    let report: @Sendable (CopyProgress) -> Void
    var last: Double = 0
    let interval = 0.25

    init(total: UInt64, start: Double, report: @escaping @Sendable (CopyProgress) -> Void) {
        self.total = total
        self.start = start
        self.report = report
    }

    mutating func tick(_ done: UInt64, force: Bool = false) {
        let now = monotonicSeconds()
        guard force || now - last >= interval else { return }
        last = now
        let elapsed = max(now - start, 1e-6)
        report(CopyProgress(done: min(done, total), total: total, bytesPerSecond: Double(done) / elapsed))
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Page-aligned buffers shared by the reader thread and the loop thread. A slot belongs
/// to exactly one side at a time (handed over through ``ChunkPipe``).
final class SlotBuffers: @unchecked Sendable {
    let count: Int
    let slotBytes: Int
    let data: UnsafeMutableRawPointer
    /// Read-back buffers (libnfs 6 reads into the caller's buffer; libnfs 4 hands the
    /// bytes to the callback and these stay unused).
    let verify: UnsafeMutableRawPointer

    init(count: Int, slotBytes: Int) {
        self.count = count
        self.slotBytes = slotBytes
        data = .allocate(byteCount: count * slotBytes, alignment: 4096)
        verify = .allocate(byteCount: count * slotBytes, alignment: 4096)
    }

    deinit {
        data.deallocate()
        verify.deallocate()
    }

    func slot(_ index: Int) -> UnsafeMutableRawPointer { data + index * slotBytes }
    func verifySlot(_ index: Int) -> UnsafeMutableRawPointer { verify + index * slotBytes }
}

/// The hand-over between the reader thread (reads + hashes the source) and the loop
/// thread (writes + verifies over NFS). Wakes the loop through an eventfd it polls.
final class ChunkPipe: @unchecked Sendable {
    struct Chunk { var slot: Int; var offset: UInt64; var length: Int }

    // Invariant: every var is only touched with `condition` locked.
    private let condition = NSCondition()
    private var free: [Int]
    /// Holders of each slot that is not free (the loop's write, a hash lane).
    private var holders: [Int]
    private var ready: [Chunk] = []
    private var passed: UInt64 = 0               // hole / zero bytes the reader skipped
    private var readerWaiting = false
    private var result: Result<(digest: String, dataBytes: UInt64), ImageCopyError>?
    private var aborted = false
    /// The read end of a non-blocking pipe the loop polls; the reader writes a byte to wake it.
    let wakeFD: Int32
    private let wakeWriteFD: Int32

    init(slots: Int) throws(ImageCopyError) {
        free = Array((0..<slots).reversed())
        holders = Array(repeating: 0, count: slots)
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw .nfs(operation: "pipe", errno: errno, message: String(cString: strerror(errno))) }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeFD = fds[0]
        wakeWriteFD = fds[1]
    }

    deinit {
        close(wakeFD)
        close(wakeWriteFD)
    }

    /// A full pipe (EAGAIN) already means "wake up": the result is ignored.
    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWriteFD, &byte, 1)
    }

    /// Reader: a free slot, waiting for one; nil once aborted.
    func takeFree() -> Int? {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && !aborted {
            readerWaiting = true
            condition.wait()
            readerWaiting = false
        }
        guard !aborted else { return nil }
        let slot = free.removeLast()
        holders[slot] = 1
        return slot
    }

    /// Reader: `count` more holders of `slot` (each calls ``release(_:)`` once).
    func retain(_ slot: Int, _ count: Int = 1) {
        condition.lock()
        holders[slot] += count
        condition.unlock()
    }

    var isAborted: Bool { condition.lock(); defer { condition.unlock() }; return aborted }

    /// Loop, reader or hash lane: done with the slot; it is free once every holder is.
    func release(_ slot: Int) {
        condition.lock()
        holders[slot] -= 1
        if holders[slot] == 0 {
            free.append(slot)
            // Cross-thread wake-ups are costly here (a VM's IPIs): only when awaited.
            if readerWaiting { condition.signal() }
        }
        condition.unlock()
    }

    func push(_ chunk: Chunk) {
        condition.lock()
        // The loop takes every ready chunk at once: a non-empty list already has its wake-up.
        let wasEmpty = ready.isEmpty
        ready.append(chunk)
        condition.unlock()
        if wasEmpty { wake() }
    }

    func pass(_ bytes: UInt64) {
        condition.lock()
        passed += bytes
        condition.unlock()
    }

    func finish(_ outcome: Result<(digest: String, dataBytes: UInt64), ImageCopyError>) {
        condition.lock()
        result = outcome
        condition.broadcast()
        condition.unlock()
        wake()
    }

    /// Loop: takes the ready chunks; also returns the bytes passed and the reader's result.
    func drain(into chunks: inout [Chunk]) -> (passed: UInt64, result: Result<(digest: String, dataBytes: UInt64), ImageCopyError>?) {
        condition.lock()
        defer { condition.unlock() }
        chunks.append(contentsOf: ready)
        ready.removeAll(keepingCapacity: true)
        return (passed, result)
    }

    func abort() {
        condition.lock()
        aborted = true
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until the reader has finished (after ``abort()`` it finishes promptly).
    func waitForReader() {
        condition.lock()
        while result == nil { condition.wait() }
        condition.unlock()
    }
}

/// Reads the source sequentially (SEEK_DATA/SEEK_HOLE) and hands data chunks to the
/// loop. The content digest's blocks are hashed by `lanes` lanes (block b by lane
/// b % lanes): lane 0 is this thread, the others are threads of ``HashLanes``. Holes
/// are passed to the lanes as zeros (whole zero blocks cost nothing). Runs on its own
/// thread.
func runReader(source: LocalSource, pipe: ChunkPipe, buffers: SlotBuffers, chunkBytes: Int, lanes: Int = 1) {
    let blockSize = UInt64(ContentDigest.blockSize)
    let blockCount = Int((source.size + blockSize - 1) / blockSize)
    let hashing = HashLanes(helpers: max(0, lanes - 1), blockCount: blockCount, pipe: pipe, buffers: buffers)
    var inline = BlockDigester()          // lane 0: the block this thread is hashing
    var walker = SparseWalker(fd: source.fd, size: source.size)
    var dataBytes: UInt64 = 0

    /// Feeds `length` logical bytes at `offset` (from `slot`, or zeros when nil) to the
    /// lanes, block by block; closes each block at its end.
    func hash(offset: UInt64, length: Int, slot: Int?, inSlot: Int) {
        var at = offset
        var done = 0
        while done < length {
            let block = Int(at / blockSize)
            let blockEnd = UInt64(block + 1) * blockSize
            let n = Int(min(UInt64(length - done), blockEnd - at))
            let lane = block % hashing.laneCount
            if lane == 0 {
                if let slot {
                    inline.update(UnsafeRawBufferPointer(start: buffers.slot(slot) + inSlot + done, count: n))
                } else {
                    inline.updateZeros(n)
                }
            } else {
                if let slot { pipe.retain(slot) }
                hashing.send(.bytes(slot: slot, at: inSlot + done, count: n), lane: lane)
            }
            at += UInt64(n)
            done += n
            if at == blockEnd || at == source.size {
                if lane == 0 {
                    hashing.store(inline.finalize(), block: block)
                    inline = BlockDigester()
                } else {
                    hashing.send(.close(block: block), lane: lane)
                }
            }
        }
    }

    do {
        defer { hashing.stop() }
        while true {
            let next: FileExtent?
            do { next = try walker.next() } catch { throw source.error(error) }
            guard let extent = next else { break }
            if pipe.isAborted { throw ImageCopyError.cancelled }
            if !extent.isData {
                // Whole blocks inside the hole take the precomputed digest; the lanes
                // only see the partial blocks at its edges.
                var at = extent.offset
                while at < extent.end {
                    let block = at / blockSize
                    let blockStart = block * blockSize
                    let blockEnd = min((block + 1) * blockSize, source.size)
                    if at == blockStart && extent.end >= blockEnd && blockEnd - blockStart == blockSize {
                        hashing.store(ContentDigest.zeroBlockDigest, block: Int(block))
                        at = blockEnd
                    } else {
                        let n = Int(min(extent.end, blockEnd) - at)
                        hash(offset: at, length: n, slot: nil, inSlot: 0)
                        at += UInt64(n)
                    }
                }
                pipe.pass(extent.length)
                continue
            }
            var offset = extent.offset
            while offset < extent.end {
                // Chunks end on chunk-size boundaries so that writes stay aligned.
                let boundary = (offset / UInt64(chunkBytes) + 1) * UInt64(chunkBytes)
                let length = Int(min(boundary, extent.end) - offset)
                guard let slot = pipe.takeFree() else { throw ImageCopyError.cancelled }
                let buffer = buffers.slot(slot)
                do {
                    try source.readFully(buffer, count: length, offset: offset)
                } catch {
                    pipe.release(slot)
                    throw error
                }
                hash(offset: offset, length: length, slot: slot, inSlot: 0)
                if ZeroBytes.isZero(buffer, count: length) {
                    // allocated zeros: not sent, stay a hole in the fresh target file
                    pipe.release(slot)
                    pipe.pass(UInt64(length))
                } else {
                    pipe.push(.init(slot: slot, offset: offset, length: length))
                    dataBytes += UInt64(length)
                }
                offset += UInt64(length)
            }
        }
        hashing.stop()
        pipe.finish(.success((hashing.digest(), dataBytes)))
    } catch let error as ImageCopyError {
        pipe.finish(.failure(error))
    } catch {
        pipe.finish(.failure(.sourceUnreadable(path: source.path, errno: EIO, message: "\(error)")))
    }
}

/// The helper threads of the reader's hash lanes and the block digests of all lanes.
final class HashLanes: @unchecked Sendable {
    enum Item {
        /// `count` bytes at `at` in `slot` (nil: zeros); the lane releases the slot after.
        case bytes(slot: Int?, at: Int, count: Int)
        /// The lane's current block is complete.
        case close(block: Int)
    }

    /// Lanes including the reader's own (lane 0).
    let laneCount: Int
    private let pipe: ChunkPipe
    private let buffers: SlotBuffers
    // Invariant: `queues`, `stopped` and `digests` are only touched with `condition` locked.
    private let condition = NSCondition()
    private var queues: [[Item]]
    private var stopped = false
    private var digests: [[UInt8]?]
    private var running = 0

    init(helpers: Int, blockCount: Int, pipe: ChunkPipe, buffers: SlotBuffers) {
        laneCount = helpers + 1
        self.pipe = pipe
        self.buffers = buffers
        queues = Array(repeating: [], count: laneCount)
        digests = Array(repeating: nil, count: blockCount)
        running = helpers
        for lane in 1..<laneCount {
            let thread = Thread { [self] in self.run(lane: lane) }
            thread.name = "image-copy-hash-\(lane)"
            thread.start()
        }
    }

    func send(_ item: Item, lane: Int) {
        condition.lock()
        // A lane waits only with an empty queue and takes the whole queue at once.
        let wasEmpty = queues[lane].isEmpty
        queues[lane].append(item)
        if wasEmpty { condition.broadcast() }
        condition.unlock()
    }

    func store(_ digest: [UInt8], block: Int) {
        condition.lock()
        digests[block] = digest
        condition.unlock()
    }

    /// Lets the helpers finish their queues and waits for them (idempotent).
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while running > 0 { condition.wait() }
        condition.unlock()
    }

    /// The content digest, after ``stop()``, once every block was stored.
    func digest() -> String {
        condition.lock()
        defer { condition.unlock() }
        return ContentDigest.combine(digests.map { $0 ?? [] })
    }

    private func run(lane: Int) {
        var digester = BlockDigester()
        while true {
            condition.lock()
            while queues[lane].isEmpty && !stopped { condition.wait() }
            if queues[lane].isEmpty {                 // stopped and drained
                running -= 1
                condition.broadcast()
                condition.unlock()
                return
            }
            let items = queues[lane]
            queues[lane].removeAll(keepingCapacity: true)
            condition.unlock()
            for item in items {
                switch item {
                case .bytes(let slot?, let at, let count):
                    digester.update(UnsafeRawBufferPointer(start: buffers.slot(slot) + at, count: count))
                    pipe.release(slot)
                case .bytes(nil, _, let count):
                    digester.updateZeros(count)
                case .close(let block):
                    store(digester.finalize(), block: block)
                    digester = BlockDigester()
                }
            }
        }
    }
}

/// One outstanding async NFS request. Passed to libnfs retained as `private_data`;
/// the callback takes the reference back.
final class PendingRequest {
    // Strong: a request (and so the pipeline and its buffers) stays alive for as long as
    // libnfs holds it, even across a failure.
    let pipeline: NFSPipeline
    let slot: Int
    let offset: UInt64
    let length: Int
    /// Bytes already completed by earlier (short) replies.
    var done: Int = 0
    var isRead = false

    init(pipeline: NFSPipeline, slot: Int, offset: UInt64, length: Int) {
        self.pipeline = pipeline
        self.slot = slot
        self.offset = offset
        self.length = length
    }
}

/// The libnfs event loop for one open file: issues async WRITEs/READs (many in flight on
/// the one context), drives `nfs_service` from `poll()` and handles the callbacks. All of
/// it runs on the calling thread (the copy's dedicated loop thread).
final class NFSPipeline {
    let nfs: OpaquePointer
    let fh: OpaquePointer
    let path: String
    let buffers: SlotBuffers
    let inFlight: Int
    let cancel: CancelFlag
    var outstanding = 0
    var failure: ImageCopyError?
    /// A negative nfs_service: the context is unusable (no more calls on it).
    var contextDead = false

    // copy mode: raw NFSv3 WRITE/COMMIT on the file's handle
    let rpc: OpaquePointer
    var fh3: nfs_fh3
    /// The server's write verifier, from the first WRITE or COMMIT reply.
    var verifier: UInt64?
    var commitInFlight = false
    var writtenSinceCommit: UInt64 = 0
    /// A COMMIT is sent after this many bytes were written since the last one, so the
    /// server writes back while the copy goes on (0: only at the end).
    var commitInterval: UInt64 = 0
    var pipe: ChunkPipe?
    var verifiedBytes: UInt64 = 0
    var verifyReads = true

    // checksum mode
    var completed: [UInt64: (slot: Int, count: Int)] = [:]
    var freeSlots: [Int] = []

    init(nfs: OpaquePointer, fh: OpaquePointer, path: String, buffers: SlotBuffers, inFlight: Int, cancel: CancelFlag) {
        self.nfs = nfs
        self.fh = fh
        self.rpc = nfs_get_rpc_context(nfs)
        self.fh3 = cnfs_fh3(fh)
        self.path = path
        self.buffers = buffers
        self.inFlight = inFlight
        self.cancel = cancel
    }

    private func fail(_ error: ImageCopyError) {
        if failure == nil { failure = error }
    }

    private func lastError(_ fallback: String) -> String {
        let message = nfs_get_error(nfs).map { String(cString: $0) } ?? ""
        return message.isEmpty ? fallback : message
    }

    // MARK: the loop

    /// One turn: poll the context's socket (events re-read every turn) and the wake fd,
    /// at most 100 ms, then nfs_service (also with no events: libnfs runs its timeouts there).
    func turn(wakeFD: Int32) {
        var fds = [
            pollfd(fd: nfs_get_fd(nfs), events: Int16(truncatingIfNeeded: nfs_which_events(nfs)), revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        let count: nfds_t = wakeFD >= 0 ? 2 : 1
        let ready = poll(&fds, count, 100)
        if ready < 0 && errno != EINTR {
            fail(.nfs(operation: "poll", errno: errno, message: String(cString: strerror(errno))))
            contextDead = true
            return
        }
        if wakeFD >= 0 && fds[1].revents & Int16(POLLIN) != 0 {
            var sink = [UInt8](repeating: 0, count: 256)
            _ = read(wakeFD, &sink, sink.count)
        }
        if nfs_service(nfs, Int32(fds[0].revents)) < 0 {
            fail(.nfs(operation: "nfs_service", errno: EIO, message: lastError("the NFS connection failed")))
            contextDead = true
        }
    }

    /// After a failure or cancellation: keeps servicing until every request has come
    /// back (so no buffer is in libnfs's hands), at most `seconds`.
    func drainOutstanding(seconds: Double = 15) {
        let deadline = monotonicSeconds() + seconds
        while outstanding > 0 && !contextDead && monotonicSeconds() < deadline {
            turn(wakeFD: -1)
        }
    }

    // MARK: copy: writes + read-back

    private func issueWrite(_ request: PendingRequest) -> Bool {
        let opaque = Unmanaged.passRetained(request).toOpaque()
        let remaining = request.length - request.done
        let result = cnfs_write3_async(rpc, &fh3, buffers.slot(request.slot) + request.done, UInt32(remaining),
                                       request.offset + UInt64(request.done), rawWriteCallback, opaque)
        guard result >= 0 else {
            Unmanaged<PendingRequest>.fromOpaque(opaque).release()
            fail(.nfs(operation: "write \(path)", errno: EIO, message: lastError("the WRITE could not be queued")))
            return false
        }
        outstanding += 1
        return true
    }

    /// COMMIT of the whole file (asynchronous; the reply is checked in ``commitCompleted``).
    private func issueCommit() -> Bool {
        let request = PendingRequest(pipeline: self, slot: -1, offset: 0, length: 0)
        let opaque = Unmanaged.passRetained(request).toOpaque()
        guard cnfs_commit3_async(rpc, &fh3, rawCommitCallback, opaque) >= 0 else {
            Unmanaged<PendingRequest>.fromOpaque(opaque).release()
            fail(.nfs(operation: "commit \(path)", errno: EIO, message: lastError("the COMMIT could not be queued")))
            return false
        }
        outstanding += 1
        commitInFlight = true
        writtenSinceCommit = 0
        return true
    }

    /// Every WRITE and COMMIT reply must carry the same verifier: a new one means the
    /// server restarted and may have lost data it had acknowledged as unstable.
    private func checkVerifier(_ value: UInt64) {
        if let verifier, verifier != value {
            fail(.serverRestarted(path: path))
        } else if verifier == nil {
            verifier = value
        }
    }

    /// Sends a last COMMIT once every request is back, waits for it and checks its verifier.
    func commitAll() throws(ImageCopyError) {
        while outstanding > 0 && failure == nil && !contextDead { turn(wakeFD: -1) }
        if failure == nil, issueCommit() {
            while commitInFlight && failure == nil && !contextDead { turn(wakeFD: -1) }
        }
        if let failure {
            drainOutstanding()
            throw failure
        }
    }

    fileprivate func commitCompleted(status: Int32, data: UnsafeMutableRawPointer?) {
        outstanding -= 1
        commitInFlight = false
        guard status == cnfs_rpc_status_success(), let data else {
            fail(.nfs(operation: "commit \(path)", errno: EIO, message: rpcMessage(data, "COMMIT failed")))
            return
        }
        var verf = [UInt8](repeating: 0, count: 8)
        let nfsStatus = cnfs_commit_result(data, &verf)
        guard nfsStatus == 0 else {
            fail(.nfs(operation: "commit \(path)", errno: errnoFor(nfsStatus: nfsStatus), message: "the server refused the COMMIT (NFS3 status \(nfsStatus))"))
            return
        }
        checkVerifier(verf.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    private func rpcMessage(_ data: UnsafeMutableRawPointer?, _ fallback: String) -> String {
        // on RPC_STATUS_ERROR libnfs passes its message as `data`
        data.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? fallback
    }

    private func issueRead(_ request: PendingRequest) -> Bool {
        let opaque = Unmanaged.passRetained(request).toOpaque()
        let remaining = request.length - request.done
        let target = (request.isRead && pipe == nil ? buffers.slot(request.slot) : buffers.verifySlot(request.slot)) + request.done
        let result = cnfs_pread_async(nfs, fh, target, remaining, request.offset + UInt64(request.done), nfsReadCallback, opaque)
        guard result >= 0 else {
            Unmanaged<PendingRequest>.fromOpaque(opaque).release()
            fail(.nfs(operation: "read \(path)", errno: -result, message: lastError("nfs_pread_async failed")))
            return false
        }
        outstanding += 1
        return true
    }

    fileprivate func writeCompleted(_ request: PendingRequest, status: Int32, data: UnsafeMutableRawPointer?) {
        outstanding -= 1
        guard status == cnfs_rpc_status_success(), let data else {
            fail(.nfs(operation: "write \(path) at \(request.offset)", errno: EIO, message: rpcMessage(status == cnfs_rpc_status_success() ? nil : data, "WRITE failed")))
            pipe?.release(request.slot)
            return
        }
        var count: UInt32 = 0
        var verf = [UInt8](repeating: 0, count: 8)
        let nfsStatus = cnfs_write_result(data, &count, &verf)
        guard nfsStatus == 0 else {
            let code = errnoFor(nfsStatus: nfsStatus)
            fail(.nfs(operation: "write \(path) at \(request.offset)", errno: code, message: String(cString: strerror(code))))
            pipe?.release(request.slot)
            return
        }
        checkVerifier(verf.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        guard failure == nil else { pipe?.release(request.slot); return }
        if count == 0 {
            fail(.nfs(operation: "write \(path) at \(request.offset)", errno: EIO, message: "the server wrote 0 bytes"))
            pipe?.release(request.slot)
            return
        }
        request.done += Int(count)
        writtenSinceCommit += UInt64(count)
        if request.done < request.length {              // short write: send the rest
            if !issueWrite(request) { pipe?.release(request.slot) }
            return
        }
        if verifyReads {
            // Read back what the server now holds and compare with the bytes we hashed.
            request.done = 0
            request.isRead = true
            if !issueRead(request) { pipe?.release(request.slot) }
        } else {
            verifiedBytes += UInt64(request.length)
            pipe?.release(request.slot)
        }
    }

    fileprivate func readCompleted(_ request: PendingRequest, status: Int32, data: UnsafeMutableRawPointer?) {
        outstanding -= 1
        let isCopy = pipe != nil
        guard status >= 0 else {
            let message = data.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "read failed"
            fail(.nfs(operation: "read \(path) at \(request.offset)", errno: -status, message: message))
            releaseSlot(request.slot, copy: isCopy)
            return
        }
        guard failure == nil else { releaseSlot(request.slot, copy: isCopy); return }
        let count = Int(status)
        if count == 0 {
            fail(isCopy
                 ? .verificationFailed(path: path, expectedSize: request.offset + UInt64(request.length), actualSize: request.offset + UInt64(request.done), expectedDigest: "", actualDigest: "")
                 : .nfs(operation: "read \(path) at \(request.offset)", errno: EIO, message: "unexpected end of file (the file shrank while it was read)"))
            releaseSlot(request.slot, copy: isCopy)
            return
        }
        // `data` is valid only inside this callback: copy or compare it here. With
        // libnfs 6 the bytes are already in the buffer given to cnfs_pread_async.
        let destination = (isCopy ? buffers.verifySlot(request.slot) : buffers.slot(request.slot)) + request.done
        let received: UnsafeRawPointer
        if cnfs_async_read_copies_from_callback_data() != 0 {
            guard let data else {
                fail(.nfs(operation: "read \(path) at \(request.offset)", errno: EIO, message: "libnfs returned no data"))
                releaseSlot(request.slot, copy: isCopy)
                return
            }
            if isCopy {
                received = UnsafeRawPointer(data)        // compared in place, no copy
            } else {
                memcpy(destination, data, count)
                received = UnsafeRawPointer(destination)
            }
        } else {
            received = UnsafeRawPointer(destination)
        }
        if isCopy {
            let expected = buffers.slot(request.slot) + request.done
            if memcmp(expected, received, count) != 0 {
                fail(.verificationFailed(path: path, expectedSize: 0, actualSize: 0,
                                         expectedDigest: "", actualDigest: "bytes at offset \(request.offset + UInt64(request.done)) differ"))
                releaseSlot(request.slot, copy: true)
                return
            }
        }
        request.done += count
        if request.done < request.length {
            if !issueRead(request) { releaseSlot(request.slot, copy: isCopy) }
            return
        }
        if isCopy {
            verifiedBytes += UInt64(request.length)
            pipe?.release(request.slot)
        } else {
            completed[request.offset] = (request.slot, request.length)
        }
    }

    private func releaseSlot(_ slot: Int, copy: Bool) {
        if copy { pipe?.release(slot) } else { freeSlots.append(slot) }
    }

    /// Writes every chunk the reader produces, reads each back and compares it, until the
    /// reader is done and nothing is outstanding. Returns the reader's content digest and data bytes.
    func runCopy(pipe: ChunkPipe, total: UInt64, ticker: inout ProgressTicker) throws(ImageCopyError) -> (digest: String, dataBytes: UInt64) {
        self.pipe = pipe
        var pending: [ChunkPipe.Chunk] = []
        var head = 0
        var readerResult: Result<(digest: String, dataBytes: UInt64), ImageCopyError>?
        var passed: UInt64 = 0
        while true {
            if cancel.isSet { fail(.cancelled) }
            if failure != nil { break }
            if head > 0 && head == pending.count { pending.removeAll(keepingCapacity: true); head = 0 }
            let state = pipe.drain(into: &pending)
            passed = state.passed
            readerResult = state.result
            if case .failure(let error)? = readerResult { fail(error); break }
            while outstanding < inFlight && head < pending.count {
                let chunk = pending[head]
                head += 1
                let request = PendingRequest(pipeline: self, slot: chunk.slot, offset: chunk.offset, length: chunk.length)
                if !issueWrite(request) { pipe.release(chunk.slot); break }
            }
            if failure != nil { break }
            if commitInterval > 0 && !commitInFlight && writtenSinceCommit >= commitInterval { _ = issueCommit() }
            if readerResult != nil && head == pending.count && outstanding == 0 { break }
            ticker.tick(passed + verifiedBytes)
            turn(wakeFD: pipe.wakeFD)
        }
        if let failure {
            pipe.abort()
            for chunk in pending[head...] { pipe.release(chunk.slot) }
            drainOutstanding()
            pipe.waitForReader()
            throw failure
        }
        guard case .success(let value)? = readerResult else { throw .cancelled }
        ticker.tick(passed + verifiedBytes, force: true)
        return value
    }

    // MARK: checksum: pipelined reads, hashed in order

    /// The content digest of the first `size` bytes of the file, read with `inFlight`
    /// READs in flight.
    func runChecksum(size: UInt64, chunkBytes: Int, ticker: inout ProgressTicker) throws(ImageCopyError) -> String {
        var hasher = ContentDigest()
        try runRead(size: size, chunkBytes: chunkBytes, ticker: &ticker) { bytes, _ throws(ImageCopyError) in
            hasher.update(bytes)
        }
        return hasher.finalize()
    }

    /// Reads the first `size` bytes of the file with `inFlight` READs in flight and hands
    /// them to `sink` in file order (offset, bytes), one chunk of at most `chunkBytes`
    /// at a time. The bytes are valid only during the call. A throwing sink stops the
    /// reads (outstanding ones are drained) and its error is thrown.
    func runRead(size: UInt64, chunkBytes: Int, ticker: inout ProgressTicker,
                 sink: (UnsafeRawBufferPointer, UInt64) throws(ImageCopyError) -> Void) throws(ImageCopyError) {
        freeSlots = Array((0..<buffers.count).reversed())
        var nextIssue: UInt64 = 0
        var nextHash: UInt64 = 0
        while nextHash < size {
            if cancel.isSet { fail(.cancelled) }
            if failure != nil { break }
            while outstanding < inFlight && nextIssue < size, let slot = freeSlots.popLast() {
                let length = Int(min(UInt64(chunkBytes), size - nextIssue))
                let request = PendingRequest(pipeline: self, slot: slot, offset: nextIssue, length: length)
                request.isRead = true
                if !issueRead(request) { freeSlots.append(slot); break }
                nextIssue += UInt64(length)
            }
            if failure != nil { break }
            turn(wakeFD: -1)
            while failure == nil, let chunk = completed.removeValue(forKey: nextHash) {
                do {
                    try sink(UnsafeRawBufferPointer(start: buffers.slot(chunk.slot), count: chunk.count), nextHash)
                } catch {
                    fail(error)
                }
                nextHash += UInt64(chunk.count)
                freeSlots.append(chunk.slot)
            }
            ticker.tick(nextHash)
        }
        if let failure {
            drainOutstanding()
            throw failure
        }
        ticker.tick(nextHash, force: true)
    }
}

// libnfs callbacks: run inside nfs_service on the loop thread.
private let rawWriteCallback: rpc_cb = { _, status, data, privateData in
    guard let privateData else { return }
    let request = Unmanaged<PendingRequest>.fromOpaque(privateData).takeRetainedValue()
    request.pipeline.writeCompleted(request, status: status, data: data)
}

private let rawCommitCallback: rpc_cb = { _, status, data, privateData in
    guard let privateData else { return }
    let request = Unmanaged<PendingRequest>.fromOpaque(privateData).takeRetainedValue()
    request.pipeline.commitCompleted(status: status, data: data)
}

/// errno for an NFSv3 status (most nfsstat3 values are errno values).
func errnoFor(nfsStatus: Int32) -> Int32 {
    switch nfsStatus {
    case 69: return EDQUOT
    case 70: return ESTALE
    case 1...99: return nfsStatus
    default: return EIO
    }
}

private let nfsReadCallback: nfs_cb = { status, _, data, privateData in
    guard let privateData else { return }
    let request = Unmanaged<PendingRequest>.fromOpaque(privateData).takeRetainedValue()
    request.pipeline.readCompleted(request, status: status, data: data)
}
