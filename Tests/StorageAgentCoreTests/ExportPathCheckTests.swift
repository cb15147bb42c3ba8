import AgentTestSupport
import AgentProtocol
import ExportsFile
import Foundation
import Testing
@testable import StorageAgentCore
#if canImport(Glibc)
import Glibc
#endif

@Suite("managed export paths are re-checked on every apply")
struct ExportPathCheckTests {
    func export(_ sandbox: Sandbox, _ path: String) -> @Sendable (ExportsFile) throws(AgentError) -> ExportsEdit {
        let policy = try! ExportPolicy(exportRoot: sandbox.root, allowedClients: ["198.18.0.2"])
        return { (file: ExportsFile) throws(AgentError) -> ExportsEdit in
            do throws(ExportsError) { return try file.export(path: path, clients: ["198.18.0.2"], policy: policy) } catch { throw AgentError(error) }
        }
    }

    func unexport(_ path: String) -> @Sendable (ExportsFile) throws(AgentError) -> ExportsEdit {
        { (file: ExportsFile) throws(AgentError) -> ExportsEdit in
            do throws(ExportsError) { return try file.unexport(path: path) } catch { throw AgentError(error) }
        }
    }

    @Test("a directory swapped for a link (or a file, or removed) after EXPORT stops every later apply, naming it; UNEXPORT of it passes")
    func swappedDirectory() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let applier = RecordingApplier()
        let store = ExportsStore(exportsFile: sandbox.exports, mode: .shared, lockTimeout: .seconds(1), applier: applier,
                                 exportRoot: sandbox.root)
        let w1 = sandbox.root + "/w1", w2 = sandbox.root + "/w2"
        for dir in [w1, w2, sandbox.dir + "/elsewhere"] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        _ = try await store.change(export(sandbox, w1))
        for swap in ["link", "file", "gone", "link-above"] {
            let target = swap == "link-above" ? sandbox.root + "/sub/w3" : w1
            if swap == "link-above" {
                try FileManager.default.createDirectory(atPath: sandbox.dir + "/elsewhere/w3", withIntermediateDirectories: true)
                #expect(symlink(sandbox.dir + "/elsewhere", sandbox.root + "/sub") == 0)
                // Written by hand (EXPORT itself refuses the link): the file as an older
                // agent, or an administrator, may have left it.
                let text = sandbox.read(sandbox.exports)!.replacingOccurrences(of: w1 + " ", with: target + " ")
                try Data(text.utf8).write(to: URL(fileURLWithPath: sandbox.exports))
            } else {
                try? FileManager.default.removeItem(atPath: w1)
                switch swap {
                case "link": #expect(symlink(sandbox.dir + "/elsewhere", w1) == 0)
                case "file": try Data().write(to: URL(fileURLWithPath: w1))
                default: break
                }
            }
            let before = sandbox.read(sandbox.exports)
            let applied = applier.applied.count
            do {
                _ = try await store.change(export(sandbox, w2))
                Issue.record("\(swap): applied a file exporting \(target)")
            } catch {
                #expect(error.code == .invalidState, "\(swap)")
                #expect(error.message.contains(target) && error.message.contains("UNEXPORT path=\(target)"), "\(swap): \(error.message)")
                #expect(error.details.all("path") == [target], "\(swap)")
            }
            #expect(applier.applied.count == applied, "\(swap): nothing applied")
            #expect(sandbox.read(sandbox.exports) == before, "\(swap): nothing written")
            let health = await (try StorageAgentHandler(configuration: sandbox.configuration(clients: ["198.18.0.2"]), applier: applier)).healthChecks()
            #expect(health.first { $0.name == "managed-paths" }?.ok == false, "\(swap): \(health)")
            // The way out: stop exporting it; then other changes go through again.
            _ = try await store.change(unexport(target))
            _ = try await store.change(export(sandbox, w2))
            if swap != "link-above" {
                try? FileManager.default.removeItem(atPath: w1)
                try FileManager.default.createDirectory(atPath: w1, withIntermediateDirectories: true)
                _ = try await store.change(export(sandbox, w1))
            }
        }
    }

    @Test("the export root's file system: its own mount, a bind mount of a subdirectory, a plain directory")
    func exportRootFileSystem() {
        let info = """
            22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
            40 22 8:17 / /srv/images rw,relatime - xfs /dev/sdb1 rw
            41 22 8:1 /var/data /srv/bound rw,relatime - ext4 /dev/sda1 rw
            42 22 8:33 / /srv/with\\040space rw - xfs /dev/sdc1 rw
            """
        #expect(ExportRootFileSystem.problem(realRoot: "/srv/images", mountinfo: info, devices: (1, 1)) == nil)
        #expect(ExportRootFileSystem.problem(realRoot: "/srv/with space", mountinfo: info, devices: (1, 1)) == nil)
        #expect(ExportRootFileSystem.problem(realRoot: "/srv/bound", mountinfo: info, devices: (1, 1))?.contains("bind mount of /var/data") == true)
        #expect(ExportRootFileSystem.problem(realRoot: "/var/lib/libvirt/shared-images", mountinfo: info, devices: (1, 1))?
            .contains("not a file system of its own") == true)
        #expect(ExportRootFileSystem.problem(realRoot: "/srv/subvolume", mountinfo: info, devices: (7, 1)) == nil, "another device: own")
    }

    @Test("EXPORT warns when the export root is a directory of a larger file system, and HEALTH says so without degrading")
    func exportWarnsAboutSharedFileSystem() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        // The sandbox's root is a plain directory under /tmp.
        let h = try StorageAgentHandler(configuration: sandbox.configuration(), applier: RecordingApplier())
        let reply = Collected()
        _ = try await h.export(request("EXPORT path=\(sandbox.root)/w1 client=198.18.0.2"), reply: reply.stream)
        let warning = try #require(reply.data.first { $0["warning"] == "export-root-shared" }, "\(reply.data)")
        #expect(warning["path"] == sandbox.root)
        #expect(warning["text"]?.contains("no_subtree_check") == true)
        let check = try #require(await h.healthChecks().first { $0.name == "export-root-fs" })
        #expect(check.ok, "advice: health is not degraded")
        #expect(check.facts["warning"] == "export-root-shared" && check.detail.contains(sandbox.root), "\(check)")
    }
}
