import Foundation
import Testing
import TestSupport

/// Both agents started the way systemd starts them: `systemd-socket-activate` holds the
/// listening sockets, passes them on the first connection (LISTEN_FDS, LISTEN_FDNAMES),
/// and a unix datagram socket stands in for systemd's notify socket.
@Suite("socket activation", .serialized)
struct SocketActivationTests {
    final class Activated {
        let child: ChildProcess
        let notify: NotifySocket
        let socket: String

        init(dir: String, name: String, binary: String, arguments: [String]) async throws {
            socket = "\(dir)/\(name).sock"
            notify = try NotifySocket(path: "\(dir)/\(name).notify")
            child = try ChildProcess("/usr/bin/systemd-socket-activate", [
                "-l", socket, "--fdname=agent", "-E", "NOTIFY_SOCKET=\(notify.path)",
                try TestSupport.binary(binary),
            ] + arguments, logDir: dir)
            let path = socket
            guard try await TestSupport.waitUntil(timeout: .seconds(10), { FileManager.default.fileExists(atPath: path) }) else {
                throw TestFailure("systemd-socket-activate did not listen on \(socket): \(child.log)")
            }
        }
    }

    @Test("storagectl hosts finds both socket-activated agents healthy; READY=1, then STOPPING=1 and exit 0 on SIGTERM")
    func bothAgents() async throws {
        let dir = try TestSupport.temporaryDirectory("act")
        defer { TestSupport.removeTree(dir) }
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/exports", contents: Data())
        let storage = try await Activated(dir: dir, name: "storage", binary: "storage-agent", arguments: [
            "--exports-file", dir + "/exports", "--export-root", dir + "/root",
        ])
        let compute = try await Activated(dir: dir, name: "compute", binary: "compute-agent", arguments: [
            "--libvirt-uri", "test:///default",
        ])
        #expect(storage.notify.drain().isEmpty, "nothing runs before the first connection")

        let conf = dir + "/storagectl.conf"
        try """
        [storage local-storage]
        agent = unix:\(storage.socket)

        [compute local-compute]
        agent = unix:\(compute.socket)
        """.write(toFile: conf, atomically: true, encoding: .utf8)
        let r = try await runProgram(try TestSupport.binary("storagectl"), ["hosts", "--config", conf, "--json"])
        #expect(r.status == 0, "storagectl hosts: \(r.stdout) \(r.stderr)\nstorage log: \(storage.child.log)\ncompute log: \(compute.child.log)")
        let doc = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let hosts = doc?["hosts"] as? [[String: Any]] ?? []
        #expect(hosts.count == 2)
        for h in hosts {
            #expect(h["state"] as? String == "healthy", "\(h)")
            #expect(h["agent_version"] as? String != nil)
            #expect(h["rtt_ms"] as? Double != nil)
        }
        let libvirt = (hosts.last?["checks"] as? [[String: Any]])?.first
        #expect(libvirt?["name"] as? String == "libvirt")
        let libvirtVersion = (libvirt?["facts"] as? [String: String])?["libvirt-version"] ?? ""
        #expect(libvirtVersion.hasPrefix("9."), "\(String(describing: libvirt))")

        for agent in [storage, compute] {
            let ready = agent.notify.drain()
            #expect(ready.contains { $0.hasPrefix("READY=1") }, "READY=1 received: \(ready)")
            let t0 = ContinuousClock.now
            agent.child.signal(SIGTERM)
            let status = try await agent.child.wait(timeout: .seconds(2))
            #expect(status == 0, "exit status after SIGTERM (nil = still running after 2 s): \(agent.child.log)")
            #expect(ContinuousClock.now - t0 < .seconds(2))
            let stopping = agent.notify.drain()
            #expect(stopping.contains { $0.hasPrefix("STOPPING=1") }, "STOPPING=1 received: \(stopping)")
        }
    }

    @Test("with --idle-exit a socket-activated agent exits 0 by itself when nobody is connected")
    func idleExit() async throws {
        let dir = try TestSupport.temporaryDirectory("idle")
        defer { TestSupport.removeTree(dir) }
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        let agent = try await Activated(dir: dir, name: "storage", binary: "storage-agent", arguments: [
            "--exports-file", dir + "/exports", "--export-root", dir + "/root", "--idle-exit", "1",
        ])
        let c = try RawSocket(unixPath: agent.socket)
        await c.send("HELLO version=1\n")
        let hello = await c.readLine() ?? ""
        #expect(hello.hasPrefix("OK version=1"))
        _ = consume c
        let status = try await agent.child.wait(timeout: .seconds(5))
        #expect(status == 0, "\(agent.child.log)")
        #expect(agent.notify.drain().contains { $0.hasPrefix("STOPPING=1") })
    }
}
