import Foundation
import Testing
import TestSupport
@testable import ExportsFile

/// The file our renderer writes, fed to the real nfs-utils exportfs inside a private mount
/// namespace (a temporary file bind-mounted over /etc/exports, a temporary directory over
/// /var/lib/nfs). Needs root (unshare -m) and the nfs-kernel-server package; no kernel nfsd.
@Suite("real exportfs")
struct RealExportfsTests {
    static let exportfs = "/usr/sbin/exportfs"
    static let unshare = "/usr/bin/unshare"

    /// Fixed script: every value arrives as an argument, nothing is interpolated.
    static let script = """
        set -eu
        mount --bind "$1" /etc/exports
        mount --bind "$2" /var/lib/nfs
        if [ -d /etc/exports.d ]; then mount --bind "$3" /etc/exports.d; fi
        exec /usr/sbin/exportfs -ra
        """

    struct Run {
        let status: Int32
        let stderr: String
        let etab: String
    }

    static func run(exports: [UInt8], in dir: URL) async throws -> Run {
        let fm = FileManager.default
        let exportsFile = dir.appendingPathComponent("exports")
        let libDir = dir.appendingPathComponent("lib", isDirectory: true)
        let emptyDir = dir.appendingPathComponent("exports.d", isDirectory: true)
        let scriptFile = dir.appendingPathComponent("run.sh")
        try fm.createDirectory(at: libDir, withIntermediateDirectories: true)
        try fm.createDirectory(at: emptyDir, withIntermediateDirectories: true)
        try Data(exports).write(to: exportsFile)
        try Data(script.utf8).write(to: scriptFile)

        // posix_spawn, polled (TestSupport): no cooperative-pool thread waits on a child
        let result = try await runProgram(unshare, ["-m", "--propagation", "private", "/bin/sh", scriptFile.path,
                                                    exportsFile.path, libDir.path, emptyDir.path])
        let etab = (try? String(contentsOf: libDir.appendingPathComponent("etab"), encoding: .utf8)) ?? ""
        return Run(status: result.status, stderr: result.stderr, etab: etab)
    }

    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("exportsfile-test-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("exportfs accepts the file we write and etab shows our entries with our options")
    func accepted() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.exportfs),
                     "\(Self.exportfs) is missing: install the nfs-kernel-server package (apt-get install nfs-kernel-server)")
        try #require(FileManager.default.isExecutableFile(atPath: Self.unshare),
                     "\(Self.unshare) is missing: install util-linux")
        try #require(getuid() == 0, "this test needs root for unshare -m and bind mounts")
        try #require(FileManager.default.fileExists(atPath: "/etc/exports"),
                     "/etc/exports must exist so that a temporary file can be bind-mounted over it")

        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("shared-images").path
        for sub in ["", "/w1", "/w2", "/foreign"] {
            try FileManager.default.createDirectory(atPath: root + sub, withIntermediateDirectories: true)
        }
        let policy = try ExportPolicy(exportRoot: root, allowedClients: ["198.18.0.2", "198.18.0.3"])
        // A foreign admin file with comments, a continuation and the "host (rw)" trap.
        let foreign = "# admin entries\n\(root)/foreign 198.18.0.9(ro,no_subtree_check) \\\n    198.18.0.8 (rw)\n"
        var file = ExportsFile(parsing: foreign)
        file = try file.export(path: root + "/w1", clients: ["198.18.0.3", "198.18.0.2"], policy: policy).file
        file = try file.export(path: root + "/w2", clients: ["198.18.0.2"],
                               options: ExportOptions(access: .readOnly, rootSquash: true), policy: policy).file
        let managed = try file.managedExports()
        #expect(managed.count == 2)

        let run = try await Self.run(exports: file.bytes, in: dir)
        #expect(run.status == 0, "exportfs failed: \(run.stderr)")
        let (entries, unparsed) = Etab.parse(run.etab)
        #expect(unparsed.isEmpty)
        #expect(Etab.discrepancies(managed: managed, etab: entries).isEmpty,
                "etab:\n\(run.etab)\nstderr:\n\(run.stderr)")
        // Our lines produce no exportfs warnings; the foreign trap does.
        for export in managed {
            #expect(!run.stderr.contains(export.path + " "), "exportfs warned about our entry: \(run.stderr)")
        }
        // The foreign "198.18.0.8 (rw)" exported the directory to everyone, read-write:
        let world = entries.first { $0.path == root + "/foreign" && $0.client == "*" }
        #expect(world?.lastOption(among: ["rw", "ro"]) == "rw")
        // ...and our parser sees why, while nothing we render ever looks like it.
        let trap = try #require(file.foreignEntries.first)
        #expect(trap.clients.contains { $0.kind == .anonymous })
        for line in file.managedEntries {
            #expect(line.clients.allSatisfy { $0.host != nil && $0.options != nil && $0.kind != .anonymous })
            #expect(!line.rendered().contains(" ("))
        }
    }

    @Test("a drop-in file we write is accepted by exportfs as well")
    func dropIn() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.exportfs),
                     "\(Self.exportfs) is missing: install the nfs-kernel-server package (apt-get install nfs-kernel-server)")
        try #require(getuid() == 0, "this test needs root for unshare -m and bind mounts")
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("images").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let policy = try ExportPolicy(exportRoot: root, allowedClients: ["198.18.0.2", "198.18.0.3"])
        let edit = try ExportsFile(parsing: "", mode: .dropIn)
            .export(path: root, clients: ["198.18.0.2", "198.18.0.3"], policy: policy)
        let run = try await Self.run(exports: edit.file.bytes, in: dir)
        #expect(run.status == 0, "exportfs failed: \(run.stderr)")
        let etab = Etab.parse(run.etab).entries
        #expect(etab.count == 2)
        #expect(Etab.discrepancies(managed: try edit.file.managedExports(), etab: etab).isEmpty, "etab:\n\(run.etab)")
    }
}
