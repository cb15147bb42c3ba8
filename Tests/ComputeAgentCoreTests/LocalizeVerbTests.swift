import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import Testing
import TestSupport
@testable import ComputeAgentCore
#if canImport(Glibc)
import Glibc
#endif

@Suite("LOCALIZE and DOMAINS (libvirt test driver)")
struct LocalizeVerbTests {
    /// The content digest of `path` by an independent reference: python3's xxhash
    /// (XXH3-128 over the XXH3-128 digests of the 4 MiB blocks; docs/protocol.md).
    static func contentDigest(_ path: String) async throws -> String {
        // posix_spawn, polled (TestSupport): no cooperative-pool thread waits on a child
        let result = try await runProgram("/usr/bin/python3", ["-c", """
            import xxhash,sys; f=open(sys.argv[1],"rb"); d=b"".join(xxhash.xxh3_128(b).digest() for b in iter(lambda: f.read(4<<20), b"")); print("xxh3-128:"+xxhash.xxh3_128(d).hexdigest())
            """, path])
        let digest = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status == 0, digest.hasPrefix("xxh3-128:"), digest.count == 9 + 32 else {
            throw AgentError(.internal, "python3 reference failed on \(path): \(digest) \(result.stderr)")
        }
        return digest
    }

    /// wanderer1 adopted onto the share (mount mode), its shared copy changed since
    /// (as a VM that ran from the share changes it).
    static func adopted() async throws -> (SimHost, String) {
        let host = try await SimHost()
        _ = try #require(await host.ask(ComputeAgentVerbTests.ensureHere(host)).result.ok)
        try FileManager.default.createDirectory(atPath: host.share + "/wanderer1", withIntermediateDirectories: true)
        let copy = host.share + "/wanderer1/wanderer1.qcow2"
        try FileManager.default.copyItem(atPath: host.images + "/wanderer1.qcow2", toPath: copy)
        _ = try #require(await host.ask("ADOPT domain=wanderer1 pool=shared").result.ok)
        let h = try #require(FileHandle(forUpdatingAtPath: copy))
        let size = try h.seekToEnd()
        try h.seek(toOffset: size - 8)
        h.write(Data("ranthere".utf8))
        try h.close()
        return (host, copy)
    }

    @Test("LOCALIZE copies the shared image to DIR/<file>, verified, and restores the saved definition onto it")
    func localizeRestores() async throws {
        let (host, copy) = try await Self.adopted()
        let original = host.images + "/wanderer1.qcow2"
        let before = try Data(contentsOf: URL(fileURLWithPath: original))
        #expect(before != (try Data(contentsOf: URL(fileURLWithPath: copy))), "the original is stale")
        // the domain's own directory under the images root
        let local = host.images + "/wanderer1/wanderer1.qcow2"
        let answer = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)")
        let ok = try #require(answer.result.ok, "\(String(describing: answer.result.error))")
        #expect(ok["changed"] == "yes" && ok["disks"] == "1" && ok["dir"] == host.images)
        #expect(ok["restored"] == host.state + "/domains/6695eb01-f6a4-8304-79aa-97f2502e193f.previous.xml")
        let digest = try await Self.contentDigest(copy)
        #expect(answer.lines.data == [["disk": "vda", "from": copy, "to": local,
                                       "size": String(try FileManager.default.attributesOfItem(atPath: copy)[.size] as! UInt64),
                                       "digest": digest]])
        let localDigest = try await Self.contentDigest(local)
        #expect(localDigest == digest, "the local file has the shared copy's digest")
        #expect(try Data(contentsOf: URL(fileURLWithPath: local)) == Data(contentsOf: URL(fileURLWithPath: copy)), "the local file is the shared copy")
        #expect(answer.lines.contains { if case .progress(let f) = $0 { return f["done"] == f["total"] && f["disk"] == "vda" } else { return false } })
        #expect(FileManager.default.fileExists(atPath: copy), "the copy on the share is kept")
        #expect(!FileManager.default.fileExists(atPath: host.images + "/wanderer1/.wanderer1.qcow2.storagectl-partial"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: original)) == before, "the stale original is not overwritten")
        var st = stat()
        #expect(stat(host.images + "/wanderer1", &st) == 0 && st.st_mode & 0o7777 == 0o755)
        #expect(!FileManager.default.fileExists(atPath: ok["restored"] ?? "/"), "the saved definition is used up")
        let disks = await host.ask("DOMAIN name=wanderer1").lines.data
        #expect(disks.first { $0["disk"] == "vda" }?["source"] == local)
        #expect(disks.first { $0["disk"] == "vda" }?["cache"] == "none")
        #expect(disks.first { $0["disk"] == "vdb" }?["source"] == "nfs://198.18.0.1/srv/data.img", "another server's disk is left alone")

        let again = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)")
        #expect(again.result.ok?["changed"] == "no" && again.result.ok?["disks"] == "0")
        #expect(again.lines.data.isEmpty)
    }

    @Test("without a saved definition LOCALIZE rewrites the current one, keeping the rest of each disk")
    func localizeRewrites() async throws {
        let (host, copy) = try await Self.adopted()
        let saved = host.state + "/domains/6695eb01-f6a4-8304-79aa-97f2502e193f.previous.xml"
        try FileManager.default.removeItem(atPath: saved)
        let local = host.images + "/elsewhere"
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        let answer = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(local)")
        let ok = try #require(answer.result.ok, "\(String(describing: answer.result.error))")
        #expect(ok["changed"] == "yes" && ok["restored"] == nil)
        let copyDigest = try await Self.contentDigest(copy)
        #expect(try await Self.contentDigest(local + "/wanderer1/wanderer1.qcow2") == copyDigest)
        #expect(answer.lines.data.first?["digest"] == copyDigest)
        let disks = await host.ask("DOMAIN name=wanderer1").lines.data
        #expect(disks.first { $0["disk"] == "vda" }?["source"] == local + "/wanderer1/wanderer1.qcow2")
        #expect(disks.first { $0["disk"] == "vda" }?["cache"] == "none", "the rest of the disk is kept")
    }

    @Test("LOCALIZE keeps holes as holes, and its digest covers them (the python3 reference agrees)")
    func localizeSparse() async throws {
        let (host, copy) = try await Self.adopted()
        // A hole of five 4 MiB blocks, then data that ends mid-block (LOCALIZE copies
        // bytes; it does not read the image format).
        let h = try #require(FileHandle(forUpdatingAtPath: copy))
        let end = try h.seekToEnd()
        try h.truncate(atOffset: end + 5 * (4 << 20) + 1000)
        try h.seek(toOffset: end + 5 * (4 << 20) + 990)
        h.write(Data("after-hole".utf8))
        try h.close()
        let answer = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)")
        _ = try #require(answer.result.ok, "\(String(describing: answer.result.error))")
        let local = host.images + "/wanderer1/wanderer1.qcow2"
        let copyDigest = try await Self.contentDigest(copy)
        #expect(answer.lines.data.first?["digest"] == copyDigest)
        #expect(try Data(contentsOf: URL(fileURLWithPath: local)) == Data(contentsOf: URL(fileURLWithPath: copy)))
        // Zero ranges are skipped a 4 MiB chunk at a time: the first chunk (the image) and
        // the last (the tail) are written, the hole between them is not.
        var st = stat()
        #expect(stat(local, &st) == 0)
        #expect(st.st_size > 20 << 20 && st.st_blocks * 512 <= 9 << 20, "allocated \(st.st_blocks * 512) of \(st.st_size) bytes")
    }

    @Test("LOCALIZE refuses a running domain on the share, naming its state and the remedy")
    func localizeRunning() async throws {
        let host = try await SimHost(placed: { dir in SimHost.domain("live", "0b5b3c1e-2d4f-4a6b-8c9d-0e1f2a3b4c5d", shutoff: false, disks: """
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='\(dir)/share/live/live.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            """) })
        // the pool's target is this host's share; the running domain's disk is under it
        _ = try #require(await host.ask(ComputeAgentVerbTests.ensureHere(host)).result.ok)
        let e = await host.ask("LOCALIZE domain=live pool=shared dir=\(host.images)").result.error
        #expect(e?.code == .invalidState && e?.details["state"] == "running")
        #expect(e?.message.contains("virsh shutdown live") == true)
    }

    @Test("LOCALIZE validates its input and is refused over plain TCP; DOMAINS is read-only", arguments: [
        "LOCALIZE domain=wanderer1", "LOCALIZE domain=wanderer1 pool=shared dir=relative",
        "LOCALIZE domain=wanderer1 pool=shared dir=/a/../b", "LOCALIZE domain=wanderer1 pool=shared path=/x",
        "LOCALIZE domain=wanderer1 pool=shared server=198.18.0.1 export=/e", "LOCALIZE domain=a/b pool=shared",
        "DOMAINS name=x",
    ])
    func localizeInvalid(_ line: String) async throws {
        let host = try await SimHost()
        let e = await host.ask(line).result.error
        #expect(e?.code == .invalidArgument, "\(line): \(String(describing: e))")
    }

    @Test("over plain TCP LOCALIZE and DOMAINS are permission-denied; a reader certificate gets DOMAINS, not LOCALIZE")
    func transport() async throws {
        let host = try await SimHost()
        #expect(await host.ask("LOCALIZE domain=wanderer1 pool=shared", transport: .tcp).result.error?.code == .permissionDenied)
        #expect(await host.ask("DOMAINS", transport: .tcp).result.error?.code == .permissionDenied, "plain TCP reads nothing")
        let reader = PeerIdentity(transport: .tls, subject: "CN=dest-example")
        let policy = AccessPolicy(readers: ["CN=dest-example"])
        #expect(await host.ask("DOMAINS", transport: .tls, client: reader, policy: policy).result.ok != nil)
        #expect(await host.ask("LOCALIZE domain=wanderer1 pool=shared", transport: .tls, client: reader, policy: policy)
            .result.error?.code == .permissionDenied)
    }

    @Test("DOMAINS lists domains and whether a disk is on shared storage")
    func domains() async throws {
        let (host, _) = try await Self.adopted()
        let answer = await host.ask("DOMAINS")
        let ok = try #require(answer.result.ok, "\(String(describing: answer.result.error))")
        let rows = Dictionary(uniqueKeysWithValues: answer.lines.data.map { ($0["name"] ?? "", $0) })
        #expect(rows["wanderer1"]?["shared"] == "yes")
        #expect(rows["wanderer1"]?["state"] == "shut-off")
        #expect(rows["layered"]?["shared"] == "no")
        #expect(rows["runner"]?["state"] == "running")
        #expect(ok["domains"] == String(rows.count))
        _ = try #require(await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)").result.ok)
        // vdb stays an NFS network disk (another server), so wanderer1 still counts as shared
        let after = Dictionary(uniqueKeysWithValues: await host.ask("DOMAINS").lines.data.map { ($0["name"] ?? "", $0) })
        #expect(after["wanderer1"]?["shared"] == "yes")
    }
}
