#if canImport(Glibc)
import Glibc
#endif

/// A failure of a probe, in the system's words. `kind` is what the compute agent maps to
/// a protocol error code (`ComputeAgentHandler+Probe.swift`); `message` is one sentence.
public struct NetProbeError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Not a host name or an IP literal: refused before the resolver sees it.
        case invalidHost
        /// The resolver found no address (or failed).
        case resolve
        /// A bound (connect, resolution, answer) passed.
        case timeout
        /// Every port of the range is taken.
        case noFreePort
        /// The bounded number of listeners is open already.
        case busy
        /// A system call failed (connect refused, reset, ...).
        case system
        /// The peer broke the probe exchange (an answer larger than what was sent).
        case protocolViolation
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    static func system(_ what: String, _ code: Int32 = errno) -> NetProbeError {
        NetProbeError(.system, "\(what): \(errnoText(code))")
    }
}

/// strerror(3) in lower case ("connection refused"), as probe rows print it.
func errnoText(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    guard let first = text.first else { return "errno \(code)" }
    return first.lowercased() + text.dropFirst()
}

/// One resolved IPv4 or IPv6 address, without a port: a copy of the `sockaddr_in` /
/// `sockaddr_in6` the resolver returned.
public struct ProbeAddress: Sendable, Equatable, CustomStringConvertible {
    let bytes: [UInt8]
    public let family: Int32
    /// The numeric form (getnameinfo(3) with NI_NUMERICHOST).
    public let numeric: String

    /// Copies `length` bytes of an AF_INET or AF_INET6 socket address; nil for other families.
    init?(_ address: UnsafePointer<sockaddr>, length: socklen_t) {
        let family = Int32(address.pointee.sa_family)
        let expected = family == AF_INET ? MemoryLayout<sockaddr_in>.size : family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : 0
        guard expected > 0, Int(length) >= expected else { return nil }
        self.family = family
        bytes = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(address), count: expected))
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        numeric = getnameinfo(address, socklen_t(expected), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0
            ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    public var description: String { numeric }

    /// Calls `body` with this address and `port` as a socket address.
    func withSocketAddress<R>(port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var copy = bytes
        return copy.withUnsafeMutableBytes { raw in
            let netPort = in_port_t(UInt16(truncatingIfNeeded: port)).bigEndian
            if family == AF_INET {
                raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self).pointee.sin_port = netPort
            } else {
                raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_port = netPort
            }
            return body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
    }
}

/// `SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC`: every probe socket is non-blocking (all
/// waits are poll(2) with a timeout) and never leaks into a child process.
let streamFlags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

/// A monotonic deadline, and poll(2)'s timeout towards it.
struct Deadline {
    let instant: ContinuousClock.Instant

    init(after duration: Duration) { instant = .now + duration }
    init(_ instant: ContinuousClock.Instant) { self.instant = instant }

    var passed: Bool { ContinuousClock.now >= instant }

    /// Milliseconds left, rounded up, at least 0 (poll's timeout).
    var pollTimeout: Int32 {
        let left = instant - .now
        guard left > .zero else { return 0 }
        let ms = left.components.seconds * 1000 + (left.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: ms)
    }
}

/// Whole milliseconds of a duration (rounded down, at least 0).
func milliseconds(_ d: Duration) -> UInt64 {
    guard d > .zero else { return 0 }
    return UInt64(d.components.seconds) * 1000 + UInt64(d.components.attoseconds / 1_000_000_000_000_000)
}

/// A duration as messages print it: "2 s", "300 ms".
func spoken(_ d: Duration) -> String {
    let ms = milliseconds(d)
    return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
}

/// poll(2) over `fds`, retried on EINTR (with the time left); returns the count, 0 on
/// timeout, -1 on another error.
func pollRetrying(_ fds: inout [pollfd], until deadline: Deadline) -> Int32 {
    while true {
        let n = poll(&fds, nfds_t(fds.count), deadline.pollTimeout)
        if n >= 0 || errno != EINTR { return n }
    }
}

/// The 8-byte big-endian form of `value` (the probe exchange's length and count).
func bigEndianBytes(_ value: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
}

/// The value of 8 big-endian bytes.
func bigEndianValue(_ bytes: [UInt8]) -> UInt64 {
    bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
}

/// The pending error of a socket whose non-blocking connect finished (SO_ERROR).
func socketError(_ fd: Int32) -> Int32 {
    var code: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length) == 0 else { return errno }
    return code
}

/// Starts a non-blocking connect to `address`:`port`. Returns the fd and whether it is
/// already connected (loopback may connect at once), or the errno of a refusal.
func startConnect(_ address: ProbeAddress, port: Int) -> Result<(fd: Int32, connected: Bool), NetProbeError> {
    let fd = socket(address.family, streamFlags, 0)
    guard fd >= 0 else { return .failure(.system("socket")) }
    let rc = address.withSocketAddress(port: port) { connect(fd, $0, $1) }
    if rc == 0 { return .success((fd, true)) }
    let code = errno
    if code == EINPROGRESS || code == EINTR { return .success((fd, false)) }
    close(fd)
    return .failure(NetProbeError(.system, errnoText(code)))
}
