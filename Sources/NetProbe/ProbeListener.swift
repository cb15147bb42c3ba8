import BlockingIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The destination side of the probes: a TCP listener on the first free port of a range,
/// on every address, that serves the probe exchange (docs/protocol.md) to every
/// connection for a bounded time, then closes.
///
/// Bounds: the listener lives `lifetime`; it reads a connection's 8-byte length, then at
/// most that many bytes (discarded), refuses (closes) an announced length above
/// `maxAnnounce`, drops a connection that sends nothing for `idle`, and serves at most
/// `maxConnections` at once (more are accepted and closed). A connection that closes
/// before its length (a connect-only probe) is closed; one that half-closes after it
/// (a prober that stopped at its deadline) gets the count received so far.
public final class ProbeListener: @unchecked Sendable {
    // `fd` is owned by this object: closed by `serve` (or by deinit if never served).
    public let port: Int
    private let fd: Int32
    private let lock = NSLock()
    private var closed = false

    /// What a listener did, for logs and tests.
    public struct Summary: Sendable, Equatable {
        /// Connections accepted.
        public var accepted = 0
        /// Exchanges answered with a count.
        public var answered = 0
        /// Bytes received and discarded (payload, not headers).
        public var bytes: UInt64 = 0
        /// Connections closed for an oversize length, idleness or the connection cap.
        public var dropped = 0
    }

    /// Binds the first free port of `range` on every address (`::` dual-stack, or
    /// `0.0.0.0` where the host has no IPv6; `127.0.0.1` if `loopbackOnly`) and listens. Throws `noFreePort` when every
    /// port is taken.
    public static func bind(range: ClosedRange<Int>, loopbackOnly: Bool = false) throws(NetProbeError) -> ProbeListener {
        var lastError: Int32 = EADDRINUSE
        for port in range {
            let fd: Int32
            switch open(port: port, loopbackOnly: loopbackOnly) {
            case .success(let s): fd = s
            case .failure(let failure):
                let code = failure.code
                if code == EADDRINUSE || code == EACCES { lastError = code; continue }
                throw .system("listening on port \(port)", code)
            }
            return ProbeListener(fd: fd, port: port)
        }
        throw NetProbeError(.noFreePort, "no free port in \(range.lowerBound)-\(range.upperBound) (last: \(errnoText(lastError)))")
    }

    /// A listening socket on `port`, or the errno of the failure.
    private struct Failure: Error { let code: Int32 }

    private static func open(port: Int, loopbackOnly: Bool) -> Result<Int32, Failure> {
        var one: Int32 = 1
        var zero: Int32 = 0
        // Loopback-only (tests) is 127.0.0.1: `::1` would not take IPv4 connections.
        var fd = loopbackOnly ? -1 : socket(AF_INET6, streamFlags, 0)
        var rc: Int32 = -1
        if fd >= 0 {
            _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = in_port_t(UInt16(port)).bigEndian
            a.sin6_addr = in6addr_any
            rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            // IPv6 disabled in this namespace (or no ::1): fall back to IPv4 below.
            if rc != 0 && (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT) { close(fd); fd = -1 }
        }
        if fd < 0 {
            fd = socket(AF_INET, streamFlags, 0)
            guard fd >= 0 else { return .failure(Failure(code: errno)) }
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(UInt16(port)).bigEndian
            a.sin_addr.s_addr = (loopbackOnly ? INADDR_LOOPBACK : INADDR_ANY).bigEndian
            rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        if rc != 0 || listen(fd, 16) != 0 {
            let code = errno
            close(fd)
            return .failure(Failure(code: code))
        }
        return .success(fd)
    }

    private init(fd: Int32, port: Int) {
        self.fd = fd
        self.port = port
    }

    deinit { closeListener() }

    private func closeListener() {
        let mine: Bool = lock.withLock {
            defer { closed = true }
            return !closed
        }
        if mine { close(fd) }
    }

    /// One connection in the probe exchange.
    private struct Exchange {
        let fd: Int32
        var header: [UInt8] = []
        var announced: UInt64?
        var received: UInt64 = 0
        var lastRead: ContinuousClock.Instant
    }

    /// Serves the probe exchange for `lifetime`, then closes every connection and the
    /// listening socket. Blocks its thread the whole time; call once.
    public func serve(for lifetime: Duration, idle: Duration = .seconds(1), maxAnnounce: UInt64 = 1 << 30,
                      maxConnections: Int = 16) -> Summary {
        defer { closeListener() }
        let end = Deadline(after: lifetime)
        var summary = Summary()
        var exchanges: [Exchange] = []
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        defer { for e in exchanges { close(e.fd) } }
        while !end.passed {
            // Wake at the earliest idle expiry, or at the end of the lifetime.
            let wake = exchanges.map { $0.lastRead + idle }.min().map { min($0, end.instant) } ?? end.instant
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            fds += exchanges.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            if pollRetrying(&fds, until: Deadline(wake)) < 0 { break }
            var kept: [Exchange] = []
            for (slot, var e) in exchanges.enumerated() {
                let events = fds[slot + 1].revents
                if events == 0 {
                    if ContinuousClock.now >= e.lastRead + idle { close(e.fd); summary.dropped += 1 } else { kept.append(e) }
                    continue
                }
                switch step(&e, buffer: &buffer, maxAnnounce: maxAnnounce, summary: &summary) {
                case .keep: kept.append(e)
                case .done: close(e.fd)
                }
            }
            exchanges = kept
            if fds[0].revents & Int16(POLLIN) != 0 {
                while true {
                    // accept4(2) is not in Swift's Glibc module; the agent spawns children
                    // with only fds 0-2 inherited (ProcessSpawn), so the flags set after
                    // accept leave no window that matters.
                    let client = accept(fd, nil, nil)
                    if client < 0 { break }
                    _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                    _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
                    summary.accepted += 1
                    if exchanges.count >= maxConnections { close(client); summary.dropped += 1; continue }
                    exchanges.append(Exchange(fd: client, lastRead: .now))
                }
            }
        }
        return summary
    }

    private enum Next { case keep, done }

    /// Reads what one readable connection has (never beyond its announced length) and
    /// answers when the length is reached or the peer half-closed after the header.
    private func step(_ e: inout Exchange, buffer: inout [UInt8], maxAnnounce: UInt64, summary: inout Summary) -> Next {
        let want: Int
        if let announced = e.announced {
            want = Int(min(UInt64(buffer.count), announced - e.received))
        } else {
            want = 8 - e.header.count
        }
        let got = buffer.withUnsafeMutableBytes { recv(e.fd, $0.baseAddress, want, 0) }
        if got < 0 {
            if errno == EAGAIN || errno == EINTR { return .keep }
            return .done  // reset: nothing to answer
        }
        if got == 0 {
            // End of stream: a connect-only probe (no header) is just closed; a prober that
            // stopped early gets the count it managed.
            guard e.announced != nil else { return .done }
            answer(e, summary: &summary)
            return .done
        }
        e.lastRead = .now
        if e.announced == nil {
            e.header += buffer.prefix(got)
            guard e.header.count == 8 else { return .keep }
            let announced = bigEndianValue(e.header)
            guard announced <= maxAnnounce else { summary.dropped += 1; return .done }
            e.announced = announced
        } else {
            e.received += UInt64(got)
            summary.bytes += UInt64(got)
        }
        if e.received == e.announced {
            answer(e, summary: &summary)
            return .done
        }
        return .keep
    }

    /// Writes the 8-byte count; a socket that cannot take 8 bytes now is given up on.
    private func answer(_ e: Exchange, summary: inout Summary) {
        let count = bigEndianBytes(e.received)
        let wrote = count.withUnsafeBytes { send(e.fd, $0.baseAddress, 8, Int32(MSG_NOSIGNAL)) }
        if wrote == 8 { summary.answered += 1 } else { summary.dropped += 1 }
    }
}

/// The listeners a process keeps open at once, each served on a thread of its own for its
/// lifetime: at most `limit`, more are refused with `busy` (each holds a port and a
/// thread for up to its lifetime, and PORT-LISTEN is answered before it ends).
public final class ProbeListeners: @unchecked Sendable {
    // Invariant: `open` is only touched with `lock` held.
    public let limit: Int
    private let lock = NSLock()
    private var open = 0
    private let threads: BlockingExecutor

    public init(limit: Int = 4, name: String = "probe-listen") {
        self.limit = limit
        threads = BlockingExecutor(name: name, threadCount: limit)
    }

    /// Listeners open now.
    public var active: Int { lock.withLock { open } }

    /// Binds a listener in `range` and serves it for `lifetime` on one of the pool's
    /// threads; returns its port at once. `done` gets its summary when it has closed.
    public func start(range: ClosedRange<Int>, lifetime: Duration, loopbackOnly: Bool = false,
                      done: @escaping @Sendable (ProbeListener.Summary) -> Void = { _ in }) throws(NetProbeError) -> Int {
        let taken: Bool = lock.withLock {
            guard open < limit else { return false }
            open += 1
            return true
        }
        guard taken else {
            throw NetProbeError(.busy, "\(limit) probe listeners are open already; retry in a few seconds")
        }
        let listener: ProbeListener
        do {
            listener = try ProbeListener.bind(range: range, loopbackOnly: loopbackOnly)
        } catch {
            lock.withLock { open -= 1 }
            throw error
        }
        let accepted = threads.submit { [self] in
            let summary = listener.serve(for: lifetime)
            lock.withLock { open -= 1 }
            done(summary)
        }
        if !accepted {
            lock.withLock { open -= 1 }
            throw NetProbeError(.busy, "the probe listeners are shut down")
        }
        return listener.port
    }
}
