import BlockingIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Turns a probe's `host=` into addresses: only a host name (RFC 1123 labels) or an IPv4
/// or IPv6 literal is accepted, and getaddrinfo(3) runs on threads of its own with a
/// bound, since a resolver that never answers cannot be interrupted.
public enum HostResolver {
    /// Two threads: a hung lookup (a DNS server that never answers) holds one until glibc
    /// gives up (`resolv.conf`'s timeout x attempts); the request has long been answered.
    static let executor = BlockingExecutor(name: "probe-resolve", threadCount: 2)
    static let deadlines = DispatchQueue(label: "probe-resolve-deadlines")

    /// `host` if it is an IPv4 literal, an IPv6 literal (no brackets, no zone) or a host
    /// name: dot-separated labels of letters, digits and inner hyphens, each 1 to 63
    /// bytes, 253 in all, the last one not all digits. Pure.
    public static func validate(_ host: String) throws(NetProbeError) -> String {
        if isIPLiteral(host) { return host }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        let ok = !host.isEmpty && host.utf8.count <= 253 && labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63
                && label.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x2d }
                && label.utf8.first != 0x2d && label.utf8.last != 0x2d
        } && !(labels.last.map { $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } } ?? true)
        guard ok else {
            throw NetProbeError(.invalidHost, "host= '\(host)' is not a host name or an IP address (no port, no brackets, no scheme)")
        }
        return host
    }

    /// Whether inet_pton(3) reads `text` as an IPv4 (dotted quad) or IPv6 address.
    public static func isIPLiteral(_ text: String) -> Bool {
        guard text.utf8.count <= 45, !text.utf8.contains(0) else { return false }
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, text, &buffer) == 1 || inet_pton(AF_INET6, text, &buffer) == 1
    }

    /// The TCP addresses of `host` (validated first), in the resolver's order. Throws
    /// `invalidHost`, `resolve` (no address; the resolver's words) or `timeout`.
    public static func resolve(_ host: String, timeout: Duration = .seconds(3)) async throws(NetProbeError) -> [ProbeAddress] {
        let host = try validate(host)
        // A literal needs no lookup (AI_NUMERICHOST does not block): answered here, never
        // queued behind a hung name lookup.
        if isIPLiteral(host) { return try lookup(host, numeric: true).get() }
        let race = Race<[ProbeAddress]>()
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Result<[ProbeAddress], NetProbeError>, Never>) in
            race.install(continuation)
            let accepted = executor.submit {
                guard !race.isDone else { return }
                race.finish(lookup(host, numeric: false))
            }
            if !accepted { race.finish(.failure(NetProbeError(.resolve, "the resolver has been shut down"))) }
            deadlines.asyncAfter(deadline: .now() + seconds) {
                race.finish(.failure(NetProbeError(.timeout, "resolving \(host) took longer than \(spoken(timeout)); check the host's DNS or /etc/hosts")))
            }
        }
        return try outcome.get()
    }

    /// getaddrinfo(3) for TCP, numeric only for literals (no lookup at all). Blocking.
    static func lookup(_ host: String, numeric: Bool) -> Result<[ProbeAddress], NetProbeError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = numeric ? AI_NUMERICHOST : 0
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0 else {
            let why = rc == EAI_SYSTEM ? errnoText(errno) : String(cString: gai_strerror(rc))
            return .failure(NetProbeError(.resolve, "\(host) does not resolve: \(why)"))
        }
        defer { freeaddrinfo(list) }
        var addresses: [ProbeAddress] = []
        var next = list
        while let info = next {
            if let sa = info.pointee.ai_addr, let address = ProbeAddress(sa, length: info.pointee.ai_addrlen), !addresses.contains(address) {
                addresses.append(address)
            }
            next = info.pointee.ai_next
        }
        guard !addresses.isEmpty else { return .failure(NetProbeError(.resolve, "\(host) has no IPv4 or IPv6 address")) }
        return .success(addresses)
    }

    /// The first of the lookup and the deadline resumes the caller; the other is ignored.
    private final class Race<T: Sendable>: @unchecked Sendable {
        // Invariant: `continuation` and `done` are only touched with `lock` held.
        private let lock = NSLock()
        private var continuation: CheckedContinuation<Result<T, NetProbeError>, Never>?
        private var done = false

        var isDone: Bool { lock.withLock { done } }

        func install(_ c: CheckedContinuation<Result<T, NetProbeError>, Never>) { lock.withLock { continuation = c } }

        func finish(_ result: Result<T, NetProbeError>) {
            let c: CheckedContinuation<Result<T, NetProbeError>, Never>? = lock.withLock {
                guard !done else { return nil }
                done = true
                defer { continuation = nil }
                return continuation
            }
            c?.resume(returning: result)
        }
    }
}
