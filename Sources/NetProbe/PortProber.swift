#if canImport(Glibc)
import Glibc
#endif

/// The source side of the probes: connect-only reachability of ports, and the probe
/// exchange with a ``ProbeListener`` that measures bandwidth. Every call blocks its
/// thread (run it off Swift's cooperative pool) and is bounded by the durations it takes.
public enum PortProber {
    /// One port tried: reachable or not, how long the connect took (or how long it was
    /// waited for), and the system's word when not.
    public struct Reach: Sendable, Equatable {
        public var port: Int
        public var reachable: Bool
        public var milliseconds: UInt64
        public var error: String?
    }

    /// Connects to every port of `address` at once (non-blocking connects, one poll(2)),
    /// closes each connection as soon as it is established, and gives up on a port after
    /// `timeout`. The rows come back in the order of `ports`.
    public static func reach(_ address: ProbeAddress, ports: [Int], timeout: Duration) -> [Reach] {
        let start = ContinuousClock.now
        let deadline = Deadline(start + timeout)
        var rows = ports.map { Reach(port: $0, reachable: false, milliseconds: 0, error: nil) }
        var pending: [(index: Int, fd: Int32)] = []
        for (index, port) in ports.enumerated() {
            switch startConnect(address, port: port) {
            case .success(let c) where c.connected:
                close(c.fd)
                rows[index].reachable = true
                rows[index].milliseconds = milliseconds(.now - start)
            case .success(let c):
                pending.append((index, c.fd))
            case .failure(let e):
                rows[index].error = e.message
            }
        }
        while !pending.isEmpty {
            var fds = pending.map { pollfd(fd: $0.fd, events: Int16(POLLOUT), revents: 0) }
            let n = pollRetrying(&fds, until: deadline)
            if n <= 0 { break }
            var still: [(index: Int, fd: Int32)] = []
            for (slot, entry) in pending.enumerated() {
                guard fds[slot].revents != 0 else { still.append(entry); continue }
                let code = socketError(entry.fd)
                close(entry.fd)
                rows[entry.index].milliseconds = milliseconds(.now - start)
                if code == 0 { rows[entry.index].reachable = true } else { rows[entry.index].error = errnoText(code) }
            }
            pending = still
        }
        for entry in pending {
            close(entry.fd)
            rows[entry.index].milliseconds = milliseconds(timeout)
            rows[entry.index].error = "no answer within \(spoken(timeout))"
        }
        return rows
    }

    /// What the probe exchange measured: `confirmed` bytes (the listener's count) over
    /// `milliseconds`, from the first byte sent to the count received; `sent` is what
    /// this side wrote (more than `confirmed` only if the listener lost some).
    public struct Bandwidth: Sendable, Equatable {
        public var confirmed: UInt64
        public var sent: UInt64
        public var milliseconds: UInt64
        /// Whether sending stopped at the deadline before `bytes` were sent.
        public var stoppedEarly: Bool

        public var bytesPerSecond: UInt64 { milliseconds == 0 ? confirmed * 1000 : confirmed * 1000 / milliseconds }
    }

    /// The probe exchange (docs/protocol.md) with the listener at `address`:`port`:
    /// connects within `connectTimeout`, announces `bytes` (8 bytes, big-endian), sends
    /// them until done or until `sendFor` has passed since the connect (then half-closes
    /// so the listener answers what it got), and waits at most `answerWait` for the
    /// listener's 8-byte count.
    public static func bandwidth(_ address: ProbeAddress, port: Int, bytes: UInt64, sendFor: Duration,
                                 connectTimeout: Duration = .seconds(2), answerWait: Duration = .seconds(2)) throws(NetProbeError) -> Bandwidth {
        let fd = try connected(address, port: port, timeout: connectTimeout)
        defer { close(fd) }
        let stopSending = Deadline(after: sendFor)
        let header = bigEndianBytes(bytes)
        let chunk = [UInt8](repeating: 0, count: 256 << 10)
        var headerSent = 0
        var sent: UInt64 = 0
        var first: ContinuousClock.Instant?
        while sent < bytes {
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            let n = pollRetrying(&fds, until: stopSending)
            if n < 0 { throw .system("poll") }
            if n == 0 { break }
            let wrote: Int
            if headerSent < header.count {
                wrote = header[headerSent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            } else {
                let count = Int(min(UInt64(chunk.count), bytes - sent))
                wrote = chunk.withUnsafeBytes { send(fd, $0.baseAddress, count, Int32(MSG_NOSIGNAL)) }
            }
            if wrote < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw .system("sending to \(address):\(port)")
            }
            if first == nil { first = .now }
            if headerSent < header.count { headerSent += wrote } else { sent += UInt64(wrote) }
        }
        guard let first, headerSent == header.count else {
            throw NetProbeError(.timeout, "could not send to \(address):\(port) within \(spoken(sendFor))")
        }
        let stoppedEarly = sent < bytes
        if stoppedEarly { _ = shutdown(fd, Int32(SHUT_WR)) }
        let answer = try readCount(fd, from: "\(address):\(port)", within: answerWait)
        let elapsed = ContinuousClock.now - first
        guard answer <= sent else {
            throw NetProbeError(.protocolViolation, "\(address):\(port) confirmed \(answer) bytes, more than the \(sent) sent")
        }
        return Bandwidth(confirmed: answer, sent: sent, milliseconds: milliseconds(elapsed), stoppedEarly: stoppedEarly)
    }

    /// A connected non-blocking socket, or the reason there is none.
    static func connected(_ address: ProbeAddress, port: Int, timeout: Duration) throws(NetProbeError) -> Int32 {
        let deadline = Deadline(after: timeout)
        let c = try startConnect(address, port: port).get()
        if c.connected { return c.fd }
        var fds = [pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0)]
        let n = pollRetrying(&fds, until: deadline)
        let code = n > 0 ? socketError(c.fd) : n == 0 ? ETIMEDOUT : errno
        guard code == 0 else {
            close(c.fd)
            throw n == 0 ? NetProbeError(.timeout, "\(address):\(port) did not answer within \(spoken(timeout))")
                         : NetProbeError(.system, "connecting to \(address):\(port): \(errnoText(code))")
        }
        return c.fd
    }

    /// Reads the listener's 8-byte count within `wait`.
    static func readCount(_ fd: Int32, from peer: String, within wait: Duration) throws(NetProbeError) -> UInt64 {
        let deadline = Deadline(after: wait)
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 8)
        while answer.count < 8 {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            let n = pollRetrying(&fds, until: deadline)
            if n < 0 { throw .system("poll") }
            if n == 0 { throw NetProbeError(.timeout, "\(peer) sent no count within \(spoken(wait)) of the last byte") }
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 8 - answer.count, 0) }
            if got < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw .system("reading the count from \(peer)")
            }
            if got == 0 { throw NetProbeError(.system, "\(peer) closed the connection without a count (is it a PORT-LISTEN port?)") }
            answer += buffer.prefix(got)
        }
        return bigEndianValue(answer)
    }
}
