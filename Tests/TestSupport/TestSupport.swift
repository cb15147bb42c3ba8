import BlockingIO
import Foundation
import ProcessSpawn
#if canImport(Glibc)
import Glibc
#endif

/// Helpers shared by the test targets: temporary directories, raw sockets, processes.
public enum TestSupport {
    /// The package root, found from this file's path.
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Where the built executables are: `$STORAGECTL_BIN_DIR`, else `.build/debug`.
    /// Fails (never skips) when they are missing, saying how to build them.
    public static func binary(_ name: String) throws -> String {
        let dir = ProcessInfo.processInfo.environment["STORAGECTL_BIN_DIR"]
            ?? packageRoot.appendingPathComponent(".build/debug").path
        let path = dir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("\(path) is missing: run `swift build` first (make check does), or set STORAGECTL_BIN_DIR")
        }
        return path
    }

    /// A fresh directory under /tmp, short enough for unix socket paths.
    public static func temporaryDirectory(_ tag: String = "t") throws -> String {
        var template = Array("/tmp/sctl-\(tag)-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestFailure("mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        return String(cString: p)
    }

    public static func removeTree(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Polls `condition` every 20 ms until it holds or `timeout` passes.
    public static func waitUntil(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A stream-socket client with timeouts, for talking raw bytes to an agent. Its blocking
/// calls run on dedicated threads (BlockingIO), never on the cooperative pool, so an
/// in-process server under test keeps its threads however many sockets tests hold.
public final class RawSocket: @unchecked Sendable {
    static let io = BlockingExecutor(name: "test-sockets", threadCount: 8)
    public let fd: Int32

    public init(unixPath: String, timeout: TimeInterval = 5) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(unixPath.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            // Not closed here: `self` is fully initialised, so throwing runs deinit, which
            // closes `fd`. Closing it here too closed it twice: the second close hit
            // whatever descriptor another test had opened with that number meanwhile
            // (seen as EBADF in a RealFlowTests open and in NIO's getsockname).
            throw TestFailure("connect \(unixPath): \(String(cString: strerror(errno)))")
        }
        setTimeout(timeout)
    }

    public func setTimeout(_ seconds: TimeInterval) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Sends every byte; returns false if the peer closed.
    @discardableResult
    public func send(_ bytes: [UInt8]) async -> Bool {
        let fd = self.fd
        return (try? await Self.io.run { Self.sendAll(fd, bytes) }) ?? false
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    @discardableResult
    public func send(_ text: String) async -> Bool { await send(Array(text.utf8)) }

    /// Reads one `\n`-terminated line (without it), or nil on EOF/timeout.
    public func readLine() async -> String? {
        let fd = self.fd
        return (try? await Self.io.run { Self.readLine(fd) }) ?? nil
    }

    static func readLine(_ fd: Int32) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n <= 0 { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    /// Reads lines up to and including the terminal `OK`/`ERR` line.
    public func readResponse() async -> [String] {
        var lines: [String] = []
        while let l = await readLine() {
            lines.append(l)
            if l.hasPrefix("OK") || l.hasPrefix("ERR") { break }
        }
        return lines
    }

    /// True if the peer closed the connection (EOF) within the socket timeout.
    public func isClosedByPeer() async -> Bool {
        let fd = self.fd
        return (try? await Self.io.run { Self.closedByPeer(fd) }) ?? false
    }

    /// True unless the peer has closed the connection, without waiting: data or
    /// nothing to read means open, EOF or a reset means closed.
    public var isOpenNow: Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n > 0 { return true }
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
    }

    static func closedByPeer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }
}

/// A unix datagram socket standing in for systemd's notify socket.
public final class NotifySocket {
    public let path: String
    let fd: Int32

    public init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw TestFailure("bind \(path): \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd); unlink(path) }

    /// Every datagram received so far (non-blocking beyond a 100 ms wait).
    public func drain() -> [String] {
        var out: [String] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out.append(String(decoding: buf[0..<n], as: UTF8.self))
        }
        return out
    }
}

/// A child process started by a test, stopped by pid. Spawning and reaping are
/// `ProcessSpawn`'s, the agents' own: stdout and stderr appended to a log file, stdin
/// from /dev/null, only descriptors 0-2 inherited (a long-lived child holding a copy of
/// an in-process server's connection kept it open after the server closed it).
public final class ChildProcess {
    public let stderrPath: String
    let process: SpawnedProcess
    public var pid: pid_t { process.pid }

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], logDir: String) throws {
        stderrPath = logDir + "/" + URL(fileURLWithPath: executable).lastPathComponent + "-\(UInt32.random(in: 0...UInt32.max)).log"
        process = try SpawnedProcess(executable, arguments, environment: SpawnedProcess.inheritedEnvironment(environment),
                                     stdout: .file(path: stderrPath, append: true), stderr: .sameAsStdout)
    }

    public var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    public func signal(_ sig: Int32) { process.signal(sig) }

    /// Reaps the child if it has exited; its exit status (128+N for signal N).
    public func poll() -> Int32? { process.poll() }

    public var isRunning: Bool { poll() == nil }

    /// Waits up to `timeout` for exit; returns the status, or nil if still running.
    public func wait(timeout: Duration) async throws -> Int32? {
        _ = try await TestSupport.waitUntil(timeout: timeout) { poll() != nil }
        return poll()
    }

    /// SIGKILL if still running, and reap; for cleanup.
    public func stop() { process.stop() }

    deinit { stop() }
}

/// Runs a program to completion and returns (status, stdout, stderr). Output goes through
/// temporary files, so a grandchild holding a pipe open cannot hang the test. The wait
/// for the exit blocks a thread of its own, not the cooperative pool.
public func runProgram(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                       stdin: Int32? = nil) async throws -> (status: Int32, stdout: String, stderr: String) {
    let dir = try TestSupport.temporaryDirectory("run")
    defer { TestSupport.removeTree(dir) }
    let process: SpawnedProcess
    do {
        process = try SpawnedProcess(executable, arguments, environment: SpawnedProcess.inheritedEnvironment(environment),
                                     stdin: stdin, stdout: .file(path: dir + "/out", append: false), stderr: .file(path: dir + "/err", append: false))
    } catch {
        throw TestFailure(error.description)
    }
    let (code, _) = try await process.exitStatus(on: TestSupport.processWaits)
    let out = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
    return (code, out, err)
}

extension TestSupport {
    /// Threads that wait for test programs to exit (one blocked per running program).
    static let processWaits = BlockingExecutor(name: "test-process-waits", threadCount: 16)
}
