import AgentProtocol
import AgentTestSupport
import ExportsFile
import Foundation
import Testing
@testable import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

@Suite("exports store")
struct ExportsStoreTests {
    func export(_ sandbox: Sandbox, _ path: String, _ clients: [String]) -> @Sendable (ExportsFile) throws(AgentError) -> ExportsEdit {
        let policy = try! ExportPolicy(exportRoot: sandbox.root, allowedClients: ["198.18.0.2", "198.18.0.3"])
        return { (file: ExportsFile) throws(AgentError) -> ExportsEdit in
            do throws(ExportsError) { return try file.export(path: path, clients: clients, policy: policy) } catch { throw AgentError(error) }
        }
    }

    @Test("a change writes the new file, keeps the previous one and applies the plan")
    func writesAndKeepsPrevious() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let before = sandbox.read(sandbox.exports)!
        let applier = RecordingApplier()
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(1), applier: applier)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        let result = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        #expect(result.written)
        #expect(result.report.reloaded)
        let after = try #require(sandbox.read(sandbox.exports))
        #expect(after.hasPrefix(before), "foreign bytes first, unchanged")
        #expect(after.contains(ManagedBlockMarkers.beginMarker))
        #expect(sandbox.read(store.previousPath) == before)
        #expect(applier.applied.count == 1)
        #expect(applier.applied[0].managed.map(\.path) == [PosixFiles.realPath(sandbox.root + "/w1")!])
        #expect(!FileManager.default.fileExists(atPath: sandbox.exports + ".storagectl.tmp"))
    }

    @Test("an unchanged file is not rewritten, and is applied only when not live")
    func idempotent() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let applier = RecordingApplier()
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(1), applier: applier)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        var info = stat()
        stat(sandbox.exports, &info)
        let inode = info.st_ino
        let again = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        #expect(!again.written)
        #expect(!again.report.reloaded, "live already: no reload")
        #expect(applier.applied.count == 1)
        stat(sandbox.exports, &info)
        #expect(info.st_ino == inode, "file not replaced")
        applier.setLive(false)
        let repaired = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        #expect(!repaired.written)
        #expect(repaired.report.reloaded, "not live: applied again without writing")
        #expect(applier.applied.count == 2)
    }

    @Test("when applying fails the previous file is restored, applied again, and both are reported")
    func restoresOnFailure() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let before = sandbox.read(sandbox.exports)!
        let applier = RecordingApplier()
        applier.failNext([AgentError(.unavailable, "exportfs said no"), nil])
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(1), applier: applier)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        let error = await #expect(throws: AgentError.self) {
            _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("exportfs said no") == true)
        #expect(error?.message.contains("restored and applied again") == true)
        #expect(sandbox.read(sandbox.exports) == before)
        #expect(applier.applied.count == 2)
        #expect(applier.applied[1].managed.isEmpty, "the restore applies the old file")
        #expect(applier.applied[1].gone.map(\.client) == ["198.18.0.2"], "and checks the new client is gone")
    }

    @Test("a failed restore is reported too")
    func restoreFails() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let applier = RecordingApplier()
        applier.failNext([AgentError(.unavailable, "first"), AgentError(.unavailable, "second")])
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(1), applier: applier)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        let error = await #expect(throws: AgentError.self) {
            _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        }
        #expect(error?.message.contains("first") == true)
        #expect(error?.message.contains("Restoring the previous exports file failed too: second") == true)
    }

    @Test("a missing exports file is created, and removed again when the first apply fails")
    func missingFile() async throws {
        let sandbox = try Sandbox(exports: nil)
        defer { sandbox.remove() }
        let applier = RecordingApplier()
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(1), applier: applier)
        try FileManager.default.createDirectory(atPath: sandbox.root + "/w1", withIntermediateDirectories: true)
        applier.failNext([AgentError(.unavailable, "no")])
        await #expect(throws: AgentError.self) {
            _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        }
        #expect(!FileManager.default.fileExists(atPath: sandbox.exports))
        _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        #expect(sandbox.read(sandbox.exports)?.hasPrefix(ManagedBlockMarkers.beginMarker) == true)
    }

    @Test("another process holding the lock makes a change answer busy after the bound")
    func busy() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let before = sandbox.read(sandbox.exports)
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .milliseconds(200),
                                 applier: RecordingApplier())
        // O_CLOEXEC: children spawned by tests running in parallel must not inherit the lock.
        let fd = open(store.lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        #expect(flock(fd, LOCK_EX) == 0)
        let start = ContinuousClock.now
        let error = await #expect(throws: AgentError.self) {
            _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
        }
        #expect(error?.code == .busy)
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(sandbox.read(sandbox.exports) == before)
        close(fd)
        _ = try await store.change(export(sandbox, sandbox.root + "/w1", ["198.18.0.2"]))
    }

    @Test("concurrent changes in one process are serialised and none is lost")
    func serialised() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(5), applier: RecordingApplier())
        let paths = (0..<12).map { sandbox.root + "/w\($0)" }
        for path in paths { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for path in paths {
                let edit = export(sandbox, path, ["198.18.0.3"])
                group.addTask { _ = try await store.change(edit) }
            }
            try await group.waitForAll()
        }
        let file = ExportsFile(parsing: Array(sandbox.read(sandbox.exports)!.utf8))
        #expect(try Set(file.managedExports().map(\.path)) == Set(paths))
    }

    @Test("a symbolic link as the exports file is refused, not followed")
    func symlinkRefused() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let link = sandbox.dir + "/link-exports"
        symlink(sandbox.exports, link)
        let store = ExportsStore(exportsFile: link, mode: .shared, lockTimeout: .seconds(1), applier: RecordingApplier())
        let error = await #expect(throws: AgentError.self) { _ = try await store.current() }
        #expect(error?.code == .invalidState)
    }
}

@Suite("export directories")
struct ExportDirectoryTests {
    @Test("missing directories are created 0755 under the root, idempotently")
    func creates() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let old = umask(0o077)
        defer { umask(old) }
        let real = try ExportDirectory.ensure(sandbox.root + "/a/b", root: sandbox.root)
        #expect(real == PosixFiles.realPath(sandbox.root)! + "/a/b")
        var info = stat()
        #expect(stat(sandbox.root + "/a/b", &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o755)
        #expect(try ExportDirectory.ensure(sandbox.root + "/a/b", root: sandbox.root) == real)
        #expect(try ExportDirectory.ensure(sandbox.root, root: sandbox.root) == PosixFiles.realPath(sandbox.root))
    }

    @Test("a symbolic link inside the root is refused, so an export never escapes it")
    func refusesLinks() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        symlink("/etc", sandbox.root + "/evil")
        let error = #expect(throws: AgentError.self) { _ = try ExportDirectory.ensure(sandbox.root + "/evil", root: sandbox.root) }
        #expect(error?.code == .invalidState)
        let nested = #expect(throws: AgentError.self) { _ = try ExportDirectory.ensure(sandbox.root + "/evil/x", root: sandbox.root) }
        #expect(nested?.code == .invalidState)
        #expect(!FileManager.default.fileExists(atPath: "/etc/x"))
    }

    @Test("a missing export root is created")
    func createsRoot() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let root = sandbox.dir + "/new/root"
        _ = try ExportDirectory.ensure(root + "/w1", root: root)
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: root + "/w1", isDirectory: &isDir) && isDir.boolValue)
    }
}

@Suite("atomic writes")
struct AtomicWriteTests {
    @Test("an existing file keeps its mode; no temporary file is left behind")
    func keepsMode() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        chmod(sandbox.exports, 0o640)
        try PosixFiles.writeAtomically(sandbox.exports, Array("new\n".utf8))
        var info = stat()
        stat(sandbox.exports, &info)
        #expect(info.st_mode & 0o7777 == 0o640)
        #expect(sandbox.read(sandbox.exports) == "new\n")
        #expect(!FileManager.default.fileExists(atPath: sandbox.exports + ".storagectl.tmp"))
    }

    @Test("a directory in place of the file is refused")
    func refusesDirectory() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        #expect(throws: AgentError.self) { try PosixFiles.writeAtomically(sandbox.root, Array("x".utf8)) }
    }
}
