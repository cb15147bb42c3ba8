import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import Testing
import TestSupport
@testable import ComputeAgentCore

/// LIVE-COPY, LIVE-LOCALIZE and LIVE-ABORT through the handler with libvirt's test
/// driver: its refusals (the block copy itself is proven in the lab: the test driver
/// has none).
@Suite("LIVE-COPY, LIVE-LOCALIZE, LIVE-ABORT (libvirt test driver)")
struct LiveCopyVerbTests {
    /// A running domain `bc1` with a local qcow2 (and a shut-off `other` with `otherDisks`).
    static func host(otherDisks: (String) -> String = { _ in "" }, bc1Disks: ((String) -> String)? = nil) async throws -> SimHost {
        let host = try await SimHost(placed: { dir in
            SimHost.domain("bc1", "a0c51adf-decd-4b94-9fd7-e3deffae895c", shutoff: false, disks: bc1Disks?(dir) ?? """
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='\(dir)/images/bc1.qcow2'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                """) + SimHost.domain("other", "0b5b3c1e-2d4f-4a6b-8c9d-0e1f2a3b4c5d", shutoff: true, disks: otherDisks(dir))
        })
        try await SimHost.qemuImg(["create", "-q", "-f", "qcow2", host.images + "/bc1.qcow2", "16M"])
        _ = try #require(await host.ask(ComputeAgentVerbTests.ensureHere(host)).result.ok)
        return host
    }

    @Test("a shut-off domain is refused naming COPY and ADOPT; a transient or absent one too")
    func notRunning() async throws {
        let host = try await Self.host()
        let e = await host.ask("LIVE-COPY domain=wanderer1 pool=shared").result.error
        #expect(e?.code == .invalidState && e?.message.contains("COPY and ADOPT") == true, "\(String(describing: e))")
        #expect(await host.ask("LIVE-COPY domain=ghost pool=shared").result.error?.code == .notFound)
    }

    @Test("a block device is refused before anything is written")
    func blockDevice() async throws {
        let host = try await Self.host(bc1Disks: { _ in """
            <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/sdz'/><target dev='vda'/></disk>
            """ })
        let e = await host.ask("LIVE-COPY domain=bc1 pool=shared").result.error
        #expect(e?.code == .invalidState && e?.message.contains("block device") == true)
        #expect(!FileManager.default.fileExists(atPath: host.share + "/bc1"))
        #expect(!FileManager.default.fileExists(atPath: host.state + "/domains/a0c51adf-decd-4b94-9fd7-e3deffae895c.previous.xml"))
    }

    @Test("an existing destination that another domain uses, or that is no regular file, is a conflict and stays")
    func destinationConflict() async throws {
        let host = try await Self.host(otherDisks: { dir in """
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
              <source file='\(dir)/share/bc1/bc1.qcow2'/><target dev='vda'/></disk>
            """ })
        try FileManager.default.createDirectory(atPath: host.share + "/bc1", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: host.share + "/bc1/bc1.qcow2", contents: Data("theirs".utf8))
        let e = await host.ask("LIVE-COPY domain=bc1 pool=shared").result.error
        #expect(e?.code == .conflict && e?.message.contains("a disk of other") == true, "\(String(describing: e))")
        #expect(FileManager.default.contents(atPath: host.share + "/bc1/bc1.qcow2") == Data("theirs".utf8))

        let second = try await Self.host()
        try FileManager.default.createDirectory(atPath: second.share + "/bc1/bc1.qcow2", withIntermediateDirectories: true)
        let d = await second.ask("LIVE-COPY domain=bc1 pool=shared").result.error
        #expect(d?.code == .conflict && d?.message.contains("not a regular file") == true, "\(String(describing: d))")
    }

    @Test("a symbolic link for the domain's share directory is refused; nothing behind it is removed")
    func linkedDirectory() async throws {
        let host = try await Self.host()
        let elsewhere = host.dir + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: elsewhere + "/bc1.qcow2", contents: Data("precious".utf8))
        try FileManager.default.createSymbolicLink(atPath: host.share + "/bc1", withDestinationPath: elsewhere)
        let e = await host.ask("LIVE-COPY domain=bc1 pool=shared").result.error
        #expect(e?.code == .invalidState && e?.message.contains("not a directory") == true, "\(String(describing: e))")
        #expect(FileManager.default.contents(atPath: elsewhere + "/bc1.qcow2") == Data("precious".utf8))
    }

    @Test("a leftover copy of the domain's own that no domain uses is removed before the copy starts")
    func leftoverRemoved() async throws {
        let host = try await Self.host()
        try FileManager.default.createDirectory(atPath: host.share + "/bc1", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: host.share + "/bc1/bc1.qcow2", contents: Data("partial".utf8))
        // The test driver has no block copy: the request fails after the preparation.
        let result = await host.ask("LIVE-COPY domain=bc1 pool=shared").result
        #expect(!FileManager.default.fileExists(atPath: host.share + "/bc1/bc1.qcow2"))
        #expect(result.error != nil)
        // the definition kept before the copy is forgotten again: nothing was pivoted
        #expect(!FileManager.default.fileExists(atPath: host.state + "/domains/a0c51adf-decd-4b94-9fd7-e3deffae895c.previous.xml"))
        // the job's record says how it ended
        let record = try #require(StateStore(root: host.state).readJSON(LiveJobRecord.self, "jobs", "a0c51adf-decd-4b94-9fd7-e3deffae895c.live.json"))
        #expect(record.phase == .failed && record.kind == .copy && record.disks.map(\.target) == ["vda"] && record.pivoted.isEmpty)
    }

    @Test("LIVE-LOCALIZE never overwrites an existing local file: it takes the next free name")
    func localizeExisting() async throws {
        let host = try await Self.host(bc1Disks: { dir in """
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
              <source file='\(dir)/share/bc1/bc1.qcow2'/><target dev='vda' bus='virtio'/></disk>
            """ })
        try FileManager.default.createDirectory(atPath: host.images + "/bc1", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: host.images + "/bc1/bc1.qcow2", contents: Data("mine".utf8))
        // The test driver reports a 1 TiB disk: the request ends at the space check, after
        // the names were chosen and before anything is written.
        let e = await host.ask("LIVE-LOCALIZE domain=bc1 pool=shared dir=\(host.images)").result.error
        #expect(e?.code == .invalidState && e?.message.contains("free") == true, "\(String(describing: e))")
        #expect(FileManager.default.contents(atPath: host.images + "/bc1/bc1.qcow2") == Data("mine".utf8))
        // The name it takes instead: the next free one, not a disk of another domain.
        let own = open(host.images + "/bc1", O_RDONLY | O_DIRECTORY)
        defer { close(own) }
        let twin = DomainDisk(target: "vdb", type: "file", device: "disk", source: host.images + "/bc1/bc1-2.qcow2", format: "qcow2",
                              cache: nil, readOnly: false, backingStore: [], networkProtocol: nil, networkName: nil, networkHosts: [])
        #expect(LiveCopyPreparation.freeLocalName(host.images + "/bc1/bc1.qcow2", in: own, taken: [], definitions: []) == host.images + "/bc1/bc1-2.qcow2")
        #expect(LiveCopyPreparation.freeLocalName(host.images + "/bc1/bc1.qcow2", in: own, taken: [], definitions: [("twin1", [twin])])
                == host.images + "/bc1/bc1-3.qcow2")
        // a shut-off domain with nothing on the share: nothing to do
        let nothing = await host.ask("LIVE-LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)")
        #expect(nothing.result.ok?["disks"] == "0" && nothing.result.ok?["changed"] == "no")
    }

    @Test("LIVE-ABORT without a live copy answers aborted=no")
    func abortNothing() async throws {
        let host = try await SimHost()
        let ok = await host.ask("LIVE-ABORT domain=wanderer1").result.ok
        #expect(ok?["aborted"] == "no" && ok?["pivoted"] == "no")
    }

    @Test("the live verbs validate their input and are refused over plain TCP", arguments: [
        "LIVE-COPY domain=bc1", "LIVE-COPY domain=bc1 pool=shared bandwidth=0", "LIVE-COPY domain=a/b pool=shared",
        "LIVE-LOCALIZE domain=bc1 pool=shared dir=relative", "LIVE-LOCALIZE domain=bc1 pool=shared dir=/outside",
        "LIVE-ABORT domain=",
    ])
    func invalid(_ line: String) async throws {
        let host = try await SimHost()
        let e = await host.ask(line).result.error
        #expect(e?.code == .invalidArgument, "\(line): \(String(describing: e))")
        let verb = String(line.split(separator: " ")[0])
        let plain = verb == "LIVE-ABORT" ? "LIVE-ABORT domain=bc1" : "\(verb) domain=bc1 pool=shared"
        #expect(await host.ask(plain, transport: .tcp).result.error?.code == .permissionDenied)
    }
}
