import BlockingIO
import Foundation
import ProcessSpawn
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("spawned processes")
struct SpawnedProcessTests {
    let executor = BlockingExecutor(name: "spawn-tests", threadCount: 2)

    @Test("the exit status is reported and the child is reaped once")
    func exitStatus() async throws {
        let child = try SpawnedProcess("/bin/sh", ["-c", "exit 3"], environment: [], stdout: .file(path: "/dev/null", append: true), stderr: .sameAsStdout)
        let (status, killed) = try await child.exitStatus(on: executor)
        #expect(status == 3)
        #expect(!killed)
        #expect(child.poll() == 3)
        #expect(child.waitForExit().status == 3, "waiting again returns the recorded status")
    }

    @Test("a child still running at its deadline is killed, and only it")
    func deadline() async throws {
        let child = try SpawnedProcess("/bin/sleep", ["120"], environment: [], stdout: .file(path: "/dev/null", append: true), stderr: .sameAsStdout)
        let start = ContinuousClock.now
        let (status, killed) = try await child.exitStatus(on: executor, deadline: .now + .milliseconds(100))
        #expect(killed)
        #expect(status == 128 + SIGKILL)
        // Killed at its deadline, long before its natural end. The bound is loose: in a full
        // parallel `swift test` on 2 cores this took 20 s once (alone: 0.1 s); where the
        // time went (the kill, or this task's resumption) is not known yet.
        #expect(ContinuousClock.now - start < .seconds(60))
    }

    @Test("the child inherits only descriptors 0-2 and the environment it is given")
    func inheritance() async throws {
        let dir = NSTemporaryDirectory() + "spawn-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leaked = open(dir + "/held", O_WRONLY | O_CREAT, 0o644)  // not O_CLOEXEC
        defer { close(leaked) }
        let child = try SpawnedProcess("/bin/sh", ["-c", "ls /proc/self/fd; echo \"X=$X\""], environment: ["X=1"],
                                       stdout: .file(path: dir + "/out", append: false), stderr: .sameAsStdout)
        #expect(try await child.exitStatus(on: executor).status == 0)
        let lines = try String(contentsOfFile: dir + "/out", encoding: .utf8).split(separator: "\n")
        // 0-2, and the one ls opens to read /proc/self/fd: not the leaked one
        #expect(lines.filter { Int($0) != nil }.count <= 4)
        #expect(lines.contains("X=1"))
    }

    @Test("a program that does not exist is a spawn error naming it")
    func missing() {
        #expect(throws: SpawnError.self) {
            _ = try SpawnedProcess("/nonexistent/tool", [], environment: [], stdout: .file(path: "/dev/null", append: true), stderr: .sameAsStdout)
        }
    }
}
