import BlockingIO
import Foundation
import Testing
@testable import NetProbe
#if canImport(Glibc)
import Glibc
#endif

/// Real sockets on 127.0.0.1. Listeners bind loopback-only in 41000-41999, so tests that
/// run at once take different ports.
@Suite("network probes (real sockets on loopback)")
struct NetProbeTests {
    static let range = 41000...41999

    static func loopbackNow() throws -> ProbeAddress {
        try #require(HostResolver.lookup("127.0.0.1", numeric: true).get().first)
    }

    /// Threads for the tests' bodies: they block in socket calls for up to seconds, and
    /// on Swift's cooperative pool (as many threads as cores: 2 here) that stalled every
    /// other test of the run (seen: ~10 s in which no test of any suite progressed, and
    /// the hook's timing tests failed).
    static let threads = BlockingExecutor(name: "netprobe-tests", threadCount: 16)
    static func blocking(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await threads.run(body)
    }

    /// A listener served on a thread of its own; `summary` waits for its end.
    final class Served: @unchecked Sendable {
        let port: Int
        private let done = DispatchSemaphore(value: 0)
        private let lock = NSLock()
        private var result: ProbeListener.Summary?

        init(lifetime: Duration, idle: Duration = .seconds(1)) throws {
            let listener = try ProbeListener.bind(range: NetProbeTests.range, loopbackOnly: true)
            port = listener.port
            Thread.detachNewThread { [self] in
                let s = listener.serve(for: lifetime, idle: idle)
                lock.withLock { result = s }
                done.signal()
            }
        }

        func summary(within seconds: Double = 10) -> ProbeListener.Summary? {
            guard done.wait(timeout: .now() + seconds) == .success else { return nil }
            return lock.withLock { result }
        }
    }

    /// A blocking client socket connected to 127.0.0.1:`port`, reads bounded by 3 s.
    static func rawClient(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port)).bigEndian
        a.sin_addr.s_addr = INADDR_LOOPBACK.bigEndian
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { close(fd); throw NetProbeError.system("connect") }
        return fd
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until end of stream, error or 3 s; returns the bytes.
    static func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 64, 0) }
            if n <= 0 { return out }
            out += buffer.prefix(n)
        }
    }

    /// A port with nothing listening: an ephemeral port bound, then closed.
    static func closedPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = INADDR_LOOPBACK.bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            _ = bind(fd, p, length)
            return getsockname(fd, p, &length)
        } }
        close(fd)
        return Int(UInt16(bigEndian: a.sin_port))
    }

    @Test("the listener confirms exactly the bytes the prober sent, and the prober reports them with a time")
    func exactCount() async throws {
        try await Self.blocking {
            let served = try Served(lifetime: .seconds(3))
            let bytes: UInt64 = (5 << 20) + 3
            let b = try PortProber.bandwidth(try Self.loopbackNow(), port: served.port, bytes: bytes, sendFor: .seconds(3))
            #expect(b.confirmed == bytes)
            #expect(b.sent == bytes)
            #expect(!b.stoppedEarly)
            #expect(b.bytesPerSecond > 0)
            let summary = try #require(served.summary())
            #expect(summary.answered == 1)
            #expect(summary.bytes == bytes)
        }
    }

    @Test("several exchanges and connect-only probes in one listener's lifetime")
    func severalConnections() async throws {
        try await Self.blocking {
            let served = try Served(lifetime: .milliseconds(1500))
            let address = try Self.loopbackNow()
            let reach = PortProber.reach(address, ports: [served.port, served.port], timeout: .seconds(1))
            #expect(reach.map(\.reachable) == [true, true])
            for n in [UInt64(1 << 16), 1 << 17] {
                #expect(try PortProber.bandwidth(address, port: served.port, bytes: n, sendFor: .seconds(1)).confirmed == n)
            }
            let summary = try #require(served.summary())
            #expect(summary.accepted == 4)
            #expect(summary.answered == 2)
            #expect(summary.bytes == 3 << 16)
        }
    }

    @Test("a prober that stops early half-closes and gets the count the listener received")
    func halfClose() async throws {
        try await Self.blocking {
            let served = try Served(lifetime: .seconds(3))
            let fd = try Self.rawClient(served.port)
            defer { close(fd) }
            Self.sendAll(fd, bigEndianBytes(1000) + [UInt8](repeating: 7, count: 10))
            _ = shutdown(fd, Int32(SHUT_WR))
            #expect(Self.readAll(fd) == bigEndianBytes(10))
        }
    }

    @Test("the prober stops sending at its deadline and bounds its wait for the count")
    func earlyStopAgainstSink() async throws {
        try await Self.blocking {
            // A listener that accepts (kernel backlog) but never reads: the send buffers fill.
            let sink = try ProbeListener.bind(range: Self.range, loopbackOnly: true)
            let start = ContinuousClock.now
            #expect(throws: NetProbeError.self) {
                _ = try PortProber.bandwidth(try #require(HostResolver.lookup("127.0.0.1", numeric: true).get().first), port: sink.port,
                                             bytes: 1 << 30, sendFor: .milliseconds(300), answerWait: .milliseconds(300))
            }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed >= .milliseconds(550))
            #expect(elapsed < .seconds(2))
            withExtendedLifetime(sink) {}
        }
    }

    @Test("a large announce stops at the deadline and the listener confirms what arrived")
    func earlyStopMeasured() async throws {
        try await Self.blocking {
            let served = try Served(lifetime: .seconds(3))
            let address = try Self.loopbackNow()
            let start = ContinuousClock.now
            let b = try PortProber.bandwidth(address, port: served.port, bytes: 1 << 30, sendFor: .milliseconds(200))
            #expect(ContinuousClock.now - start < .seconds(2))
            #expect(b.confirmed == b.sent)
            #expect(b.stoppedEarly == (b.sent < 1 << 30))
            #expect(b.confirmed > 0)
        }
    }

    @Test("an unreachable port is a row with the system's error, and a bandwidth probe to it fails")
    func unreachable() async throws {
        try await Self.blocking {
            let address = try Self.loopbackNow()
            let port = Self.closedPort()
            let rows = PortProber.reach(address, ports: [port], timeout: .seconds(1))
            #expect(rows.count == 1)
            #expect(rows[0].reachable == false)
            #expect(rows[0].error == "connection refused")
            #expect {
                _ = try PortProber.bandwidth(address, port: port, bytes: 1 << 16, sendFor: .seconds(1))
            } throws: { ($0 as? NetProbeError)?.kind == .system }
        }
    }

    @Test("a connect that gets no answer is reported after its timeout")
    func connectTimeout() async throws {
        try await Self.blocking {
            // A listener with a full backlog never completes further handshakes... on Linux
            // it drops SYNs, so the connect waits: fill a backlog of 0 (one slot) first.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_addr.s_addr = INADDR_LOOPBACK.bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                _ = bind(fd, p, length)
                _ = listen(fd, 0)
                return getsockname(fd, p, &length)
            } }
            let port = Int(UInt16(bigEndian: a.sin_port))
            let address = try Self.loopbackNow()
            var filled: [Int32] = []
            defer { filled.forEach { close($0) } }
            for _ in 0..<4 {
                if case .success(let c) = startConnect(address, port: port) { filled.append(c.fd) }
            }
            Thread.sleep(forTimeInterval: 0.1)
            let start = ContinuousClock.now
            let rows = PortProber.reach(address, ports: [port], timeout: .milliseconds(400))
            #expect(ContinuousClock.now - start < .seconds(2))
            #expect(rows[0].reachable == false)
            #expect(rows[0].error?.hasPrefix("no answer within") == true)
        }
    }

    @Test("the listener refuses an announced length above 1 GiB and accepts 1 GiB")
    func oversizeAnnounce() async throws {
        try await Self.blocking {
            let served = try Served(lifetime: .seconds(3))
            let big = try Self.rawClient(served.port)
            defer { close(big) }
            Self.sendAll(big, bigEndianBytes((1 << 30) + 1))
            // Half-closed: a listener that took the length would answer a count of 0.
            _ = shutdown(big, Int32(SHUT_WR))
            #expect(Self.readAll(big).isEmpty)
            let ok = try Self.rawClient(served.port)
            defer { close(ok) }
            Self.sendAll(ok, bigEndianBytes(1 << 30))
            _ = shutdown(ok, Int32(SHUT_WR))
            #expect(Self.readAll(ok) == bigEndianBytes(0))
        }
    }

    @Test("the listener drops a connection that sends nothing for a second")
    func idleDropped() async throws {
        try await Self.blocking {
            let served = try Served(lifetime: .seconds(5), idle: .milliseconds(500))
            let fd = try Self.rawClient(served.port)
            defer { close(fd) }
            let start = ContinuousClock.now
            #expect(Self.readAll(fd).isEmpty)
            let waited = ContinuousClock.now - start
            #expect(waited >= .milliseconds(400))
            #expect(waited < .milliseconds(2500))
        }
    }

    @Test("the listener closes after its lifetime, and the pool frees its slot")
    func closesAfterLifetime() async throws {
        try await Self.blocking {
            let pool = ProbeListeners(limit: 2, name: "test-listen")
            let address = try Self.loopbackNow()
            // A port of its own: other tests running meanwhile take the first free port of Self.range.
            let port = try pool.start(range: 41985...41985, lifetime: .milliseconds(800), loopbackOnly: true)
            #expect(PortProber.reach(address, ports: [port], timeout: .seconds(1))[0].reachable)
            #expect(pool.active == 1)
            Thread.sleep(forTimeInterval: 1.5)
            #expect(pool.active == 0)
            let after = PortProber.reach(address, ports: [port], timeout: .seconds(1))[0]
            #expect(!after.reachable)
            #expect(after.error == "connection refused")
        }
    }

    @Test("at most `limit` listeners at once: one more is busy")
    func listenerCap() async throws {
        try await Self.blocking {
            let pool = ProbeListeners(limit: 2, name: "test-cap")
            let a = try pool.start(range: Self.range, lifetime: .seconds(1), loopbackOnly: true)
            let b = try pool.start(range: Self.range, lifetime: .seconds(1), loopbackOnly: true)
            #expect(a != b)
            #expect {
                _ = try pool.start(range: Self.range, lifetime: .seconds(1), loopbackOnly: true)
            } throws: { ($0 as? NetProbeError)?.kind == .busy }
            Thread.sleep(forTimeInterval: 1.6)
            _ = try pool.start(range: Self.range, lifetime: .milliseconds(100), loopbackOnly: true)
        }
    }

    @Test("a listener takes the first free port of its range; a full range is noFreePort")
    func firstFreePort() throws {
        let first = try ProbeListener.bind(range: 41990...41991, loopbackOnly: true)
        let second = try ProbeListener.bind(range: 41990...41991, loopbackOnly: true)
        #expect(Set([first.port, second.port]) == [41990, 41991])
        #expect {
            _ = try ProbeListener.bind(range: 41990...41991, loopbackOnly: true)
        } throws: { ($0 as? NetProbeError)?.kind == .noFreePort }
    }

    @Test("hosts: names and IP literals pass, anything else is refused before the resolver", arguments: [
        ("dest-example", true), ("198.18.0.3", true), ("::1", true), ("fe80::1", true), ("a.b-c.example", true),
        ("", false), ("-x", false), ("x-", false), ("a..b", false), ("host:22", false), ("[::1]", false),
        ("1.2.3.999", false), ("1.2.3", false), ("a b", false), ("a%2Fb", false), ("tcp://x", false),
        (String(repeating: "a", count: 64), false), ("x\u{0}y", false), ("dest-example.", false),
    ])
    func hostValidation(_ host: String, _ valid: Bool) {
        #expect(((try? HostResolver.validate(host)) != nil) == valid)
    }

    @Test("resolution: a literal without a lookup, localhost through the resolver, an unknown name is an error")
    func resolution() async throws {
        #expect(try await HostResolver.resolve("127.0.0.1").map(\.numeric) == ["127.0.0.1"])
        #expect(try await HostResolver.resolve("localhost").isEmpty == false)
        await #expect {
            _ = try await HostResolver.resolve("no-such-host.invalid", timeout: .seconds(3))
        } throws: { [.resolve, .timeout].contains(($0 as? NetProbeError)?.kind) }
        await #expect {
            _ = try await HostResolver.resolve("a;b")
        } throws: { ($0 as? NetProbeError)?.kind == .invalidHost }
    }
}
