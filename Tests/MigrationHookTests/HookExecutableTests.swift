import Foundation
import Testing
import TestSupport
import MigrationHook
#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `storagectl-migration-hook` as libvirtd does (`HOOK DOMAIN OPERATION
/// SUBOP -`, the domain XML on stdin), against a record and mount table of a temporary
/// directory (the debug build's test seam, `HookPaths.testRootVariable`).
@Suite("migration hook: the executable as libvirt runs it")
struct HookExecutableTests {
    /// dir/share (listed, "mounted"), dir/share-x (a lookalike), dir/local, a link in the
    /// share pointing out, dir/unmounted (listed, not mounted), dir/unlisted (mounted, not listed).
    final class Host {
        let dir: String
        init() throws {
            let made = try TestSupport.temporaryDirectory("hook")
            dir = RealPaths().canonical(made) ?? made
            for d in ["share/w1", "share-x/w1", "local", "unmounted/w1", "unlisted/w1"] {
                try FileManager.default.createDirectory(atPath: "\(dir)/\(d)", withIntermediateDirectories: true)
            }
            for f in ["share/w1/w1.qcow2", "share-x/w1/w1.qcow2", "local/w1.qcow2", "unmounted/w1/w1.qcow2", "unlisted/w1/w1.qcow2"] {
                _ = FileManager.default.createFile(atPath: "\(dir)/\(f)", contents: Data("QFI".utf8))
            }
            try FileManager.default.createSymbolicLink(atPath: "\(dir)/share/w1/escape.qcow2", withDestinationPath: "\(dir)/local/w1.qcow2")
            try write("ready-shares", "# storagectl's record of ready shares\n\(dir)/share\n\(dir)/unmounted\n")
            try write("mountinfo", "21 1 8:1 / / rw - ext4 /dev/sda1 rw\n80 21 0:50 / \(dir)/share rw - nfs 198.18.0.1:/srv rw\n81 21 0:51 / \(dir)/unlisted rw - nfs 198.18.0.1:/u rw\n")
        }
        deinit { TestSupport.removeTree(dir) }

        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8)
        }

        /// Runs the hook with `stdin` (written to a file first, so it reaches EOF).
        func run(_ args: [String], stdin: String) async throws -> (status: Int32, stdout: String, stderr: String) {
            try write("stdin", stdin)
            let fd = open("\(dir)/stdin", O_RDONLY | O_CLOEXEC)
            defer { close(fd) }
            return try await runProgram(try TestSupport.binary("storagectl-migration-hook"), args,
                                        environment: [HookPaths.testRootVariable: dir], stdin: fd)
        }

        func migrate(_ disks: String, name: String = "w1") async throws -> (status: Int32, stdout: String, stderr: String) {
            try await run([name, "migrate", "begin", "-"], stdin: String(decoding: domainXML(name, disks: disks), as: UTF8.self))
        }
    }

    func expectRefused(_ r: (status: Int32, stdout: String, stderr: String), _ why: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, "exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stdout.isEmpty, "stdout: \(r.stdout)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains("storagectl") && r.stderr.contains(why), "\(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.filter { $0 == "\n" }.count == 1, "one line: \(r.stderr)", sourceLocation: sourceLocation)
    }

    func expectAllowed(_ r: (status: Int32, stdout: String, stderr: String), sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 0 && r.stdout.isEmpty && r.stderr.isEmpty, "exit \(r.status) stdout '\(r.stdout)' stderr '\(r.stderr)'", sourceLocation: sourceLocation)
    }

    @Test("malformed XML, empty stdin and a DOCTYPE are refused")
    func malformed() async throws {
        let h = try Host()
        expectRefused(try await h.run(["w1", "migrate", "begin", "-"], stdin: "<domain><name>w1</name><devices>"), "not well-formed")
        expectRefused(try await h.run(["w1", "migrate", "begin", "-"], stdin: ""), "is empty")
        expectRefused(try await h.run(["w1", "migrate", "begin", "-"], stdin: "<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/shadow'>]><domain><name>w1</name></domain>"), "document type")
        expectRefused(try await h.run(["w2", "migrate", "begin", "-"], stdin: String(decoding: domainXML(disks: ""), as: UTF8.self)), "names w1, not w2")
    }

    @Test("a disk on a ready, mounted share passes")
    func ready() async throws {
        let h = try Host()
        expectAllowed(try await h.migrate(fileDisk("\(h.dir)/share/w1/w1.qcow2")))
    }

    @Test("a share that is not ready: not in the record, in the record but not mounted")
    func notReady() async throws {
        let h = try Host()
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/unlisted/w1/w1.qcow2")), "`storagectl share w1`")
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/unmounted/w1/w1.qcow2")), "is not mounted on this host")
        try h.write("ready-shares", "")
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/share/w1/w1.qcow2")), "this host has no share ready")
        try FileManager.default.removeItem(atPath: "\(h.dir)/ready-shares")
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/share/w1/w1.qcow2")), "this host has no share ready")
    }

    @Test("paths that only look like the share: a lookalike prefix, `..` segments, a symlink pointing out")
    func lookalikes() async throws {
        let h = try Host()
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/share-x/w1/w1.qcow2")), "is not inside a share")
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/share/../local/w1.qcow2")), "resolves to \(h.dir)/local/w1.qcow2")
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/share/w1/escape.qcow2")), "resolves to \(h.dir)/local/w1.qcow2")
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/local/w1.qcow2")), "its disk vda")
    }

    @Test("an unreadable record or a bad configuration fails closed")
    func unreadable() async throws {
        let h = try Host()
        try FileManager.default.removeItem(atPath: "\(h.dir)/ready-shares")
        try FileManager.default.createDirectory(atPath: "\(h.dir)/ready-shares", withIntermediateDirectories: false)
        expectRefused(try await h.migrate(""), "cannot read storagectl's record of ready shares")
        try FileManager.default.removeItem(atPath: "\(h.dir)/ready-shares")
        try h.write("migration-hook.conf", "exempt w1\n")
        expectRefused(try await h.migrate(""), "migration-hook.conf line 1")
    }

    @Test("a stdin that never reaches EOF is refused by the watchdog within about 2 s")
    func timeout() async throws {
        let h = try Host()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        let partial = Array("<domain><name>w1</name>".utf8)
        _ = partial.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        let start = ContinuousClock.now
        let r = try await runProgram(try TestSupport.binary("storagectl-migration-hook"), ["w1", "migrate", "begin", "-"],
                                     environment: [HookPaths.testRootVariable: h.dir], stdin: fds[0])
        close(fds[0])
        let took = ContinuousClock.now - start
        expectRefused(r, "did not decide within 2 s")
        // at least the watchdog's 2 s; the upper bound is loose: in the full parallel run
        // the test's own continuation can resume seconds late (22 s once in CI with builds
        // and two labs beside it); the watchdog's message above is the proof that the hook
        // bounded itself
        #expect(took >= .milliseconds(1900) && took < .seconds(60), "took \(took)")
    }

    @Test("network disks, no disks and an empty cdrom pass")
    func allowed() async throws {
        let h = try Host()
        expectAllowed(try await h.migrate("<disk type='network' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source protocol='nfs' name='/shared-images/w1.qcow2'><host name='198.18.0.1'/><identity user='root' group='root'/></source><target dev='vda' bus='virtio'/></disk>"))
        expectAllowed(try await h.migrate(""))
        expectAllowed(try await h.migrate("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/></disk>"))
    }

    @Test("a domain exempted by name passes (logged), others with the same disk do not")
    func exempt() async throws {
        let h = try Host()
        try h.write("migration-hook.conf", "# test\nexempt = w1\n")
        expectAllowed(try await h.migrate(fileDisk("\(h.dir)/local/w1.qcow2")))
        expectRefused(try await h.migrate(fileDisk("\(h.dir)/local/w1.qcow2"), name: "w2"), "its disk vda")
    }

    @Test("every other operation exits 0 at once, reads no stdin and writes nothing",
          arguments: [["w1", "prepare", "begin", "-"], ["w1", "start", "begin", "-"], ["w1", "started", "begin", "-"],
                      ["w1", "stopped", "end", "-"], ["w1", "release", "end", "-"], ["w1", "migrate", "end", "-"],
                      ["w1", "restore", "begin", "-"], ["w1", "reconnect", "begin", "-"], ["w1"], []])
    func otherOperations(_ args: [String]) async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        // stdin never reaches EOF: the hook must not wait for it
        let r = try await runProgram(try TestSupport.binary("storagectl-migration-hook"), args, stdin: fds[0])
        close(fds[0])
        // Exit 0 with a stdin that never reaches EOF proves it did not read it (a read
        // would block until the 2 s watchdog refuses, exit 1). No wall-clock bound here:
        // in the full parallel run this test's continuation resumes late (seen: 1.8-8 s);
        // lab suite 35 measures the hook's own time (< 100 ms) on a real host.
        #expect(r.status == 0 && r.stdout.isEmpty && r.stderr.isEmpty, "\(args): \(r)")
    }
}
