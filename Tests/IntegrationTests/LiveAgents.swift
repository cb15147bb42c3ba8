import Foundation
import Testing
import TestSupport

/// A storage agent started from the built binary, listening on a unix socket in a
/// temporary directory, with its exports file and export root there too.
final class LiveStorageAgent {
    let dir: String
    let socket: String
    let child: ChildProcess

    init(extra: [String] = []) async throws {
        dir = try TestSupport.temporaryDirectory("sa")
        socket = dir + "/storage.sock"
        _ = FileManager.default.createFile(atPath: dir + "/exports", contents: Data("# foreign\n".utf8))
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        child = try ChildProcess(try TestSupport.binary("storage-agent"), [
            "--listen", "unix:\(socket)", "--exports-file", dir + "/exports", "--export-root", dir + "/root",
            "--log-level", "warning",
        ] + extra, logDir: dir)
        let path = socket
        guard try await TestSupport.waitUntil(timeout: .seconds(10), { FileManager.default.fileExists(atPath: path) }) else {
            throw TestFailure("storage-agent did not create \(socket): \(child.log)")
        }
    }

    /// A connection that has said HELLO.
    func client(timeout: TimeInterval = 5) async throws -> RawSocket {
        let c = try RawSocket(unixPath: socket, timeout: timeout)
        await c.send("HELLO version=1\n")
        guard let hello = await c.readLine(), hello.hasPrefix("OK version=1") else {
            throw TestFailure("HELLO failed")
        }
        return c
    }

    /// Proves the agent still serves a fresh client.
    func stillServes() async throws -> Bool {
        let c = try await client()
        await c.send("PING\n")
        return await c.readLine()?.hasPrefix("OK agent=storage-agent") == true
    }

    func stop() async throws {
        child.signal(SIGTERM)
        let status = try await child.wait(timeout: .seconds(5))
        #expect(status == 0, "storage-agent exit status after SIGTERM; log: \(child.log)")
        TestSupport.removeTree(dir)
    }
}
