import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import ExportsFile
import Foundation
import Testing
@testable import StorageAgentCore

@Suite("storage agent verbs")
struct StorageAgentHandlerTests {
    func handler(_ sandbox: Sandbox, applier: RecordingApplier = RecordingApplier()) throws -> StorageAgentHandler {
        try StorageAgentHandler(configuration: sandbox.configuration(), applier: applier)
    }

    @Test("EXPORT creates the directory, writes our line and answers with the clients and fsid")
    func export() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        let reply = Collected()
        let ok = try await h.export(request("EXPORT path=\(sandbox.root)/w1 client=198.18.0.3 client=198.18.0.2"), reply: reply.stream)
        #expect(ok["path"] == sandbox.root + "/w1")
        #expect(ok["clients"] == "198.18.0.2,198.18.0.3")
        #expect(ok["changed"] == "yes")
        #expect(ok["backend"] == "kernel")
        let fsid = try #require(ok["fsid"].flatMap(UInt32.init))
        #expect(fsid == StableID.fsidCandidate(for: sandbox.root + "/w1"))
        #expect(FileManager.default.fileExists(atPath: sandbox.root + "/w1"))
        let again = try await h.export(request("EXPORT path=\(sandbox.root)/w1 client=198.18.0.2"), reply: reply.stream)
        #expect(again["changed"] == "no")
        #expect(again["clients"] == "198.18.0.2,198.18.0.3")
        #expect(again["fsid"] == ok["fsid"])
    }

    @Test("hostile or invalid EXPORT requests change nothing", arguments: [
        "EXPORT path=/etc client=198.18.0.2",
        "EXPORT path=ROOT/../etc client=198.18.0.2",
        "EXPORT path=ROOT/a%20b client=198.18.0.2",
        "EXPORT path=ROOT/a%23b client=198.18.0.2",
        "EXPORT path=ROOT/w1/ client=198.18.0.2",
        "EXPORT path=ROOT/w1 client=*",
        "EXPORT path=ROOT/w1 client=198.18.0.0/24",
        "EXPORT path=ROOT/w1 client=@compute",
        "EXPORT path=ROOT/w1 client=198.18.0.2(rw)",
        "EXPORT path=ROOT/w1 client=10.1.1.1",
        "EXPORT path=ROOT/w1",
        "EXPORT client=198.18.0.2",
        "EXPORT path=ROOT/w1 path=ROOT/w2 client=198.18.0.2",
        "EXPORT path=ROOT/w1 client=198.18.0.2 options=rw,insecure",
    ])
    func refused(_ template: String) async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let before = sandbox.read(sandbox.exports)
        let applier = RecordingApplier()
        let h = try handler(sandbox, applier: applier)
        let error = await #expect(throws: AgentError.self) {
            _ = try await h.export(request(template.replacingOccurrences(of: "ROOT", with: sandbox.root)), reply: Collected().stream)
        }
        #expect(error?.code == .invalidArgument, "\(error?.message ?? "")")
        #expect(sandbox.read(sandbox.exports) == before)
        #expect(!FileManager.default.fileExists(atPath: sandbox.exports + ".storagectl.lock"), "refused before the lock")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.root).isEmpty, "no directory created")
        #expect(applier.applied.isEmpty)
    }

    @Test("a foreign entry for the same path is a conflict naming file and line; nothing is written")
    func conflict() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let foreign = "# admin\n\n\(sandbox.root)/w1 198.18.0.9(rw,sync,no_subtree_check)\n"
        try Data(foreign.utf8).write(to: URL(fileURLWithPath: sandbox.exports))
        let h = try handler(sandbox)
        let error = await #expect(throws: AgentError.self) {
            _ = try await h.export(request("EXPORT path=\(sandbox.root)/w1 client=198.18.0.2"), reply: Collected().stream)
        }
        #expect(error?.code == .conflict)
        #expect(error?.message.contains("\(sandbox.exports):3") == true, "\(error?.message ?? "")")
        #expect(error?.details["foreign"] == "\(sandbox.exports):3")
        #expect(sandbox.read(sandbox.exports) == foreign)
    }

    @Test("UNEXPORT removes one client, then the line; repeating it changes nothing")
    func unexport() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let before = sandbox.read(sandbox.exports)
        let h = try handler(sandbox)
        let path = sandbox.root + "/w1"
        _ = try await h.export(request("EXPORT path=\(path) client=198.18.0.2 client=198.18.0.3"), reply: Collected().stream)
        let one = try await h.unexport(request("UNEXPORT path=\(path) client=198.18.0.2"), reply: Collected().stream)
        #expect(one["clients"] == "198.18.0.3")
        #expect(one["changed"] == "yes")
        let all = try await h.unexport(request("UNEXPORT path=\(path)"), reply: Collected().stream)
        #expect(all["clients"] == "")
        #expect(all["changed"] == "yes")
        #expect(sandbox.read(sandbox.exports) == before, "block removed: the file is the administrator's again")
        let again = try await h.unexport(request("UNEXPORT path=\(path)"), reply: Collected().stream)
        #expect(again["changed"] == "no")
        #expect(FileManager.default.fileExists(atPath: path), "the directory and its data stay")
    }

    @Test("UNEXPORT with several clients removes each")
    func unexportSeveral() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        let path = sandbox.root + "/w1"
        _ = try await h.export(request("EXPORT path=\(path) client=198.18.0.2 client=198.18.0.3"), reply: Collected().stream)
        let ok = try await h.unexport(request("UNEXPORT path=\(path) client=198.18.0.2 client=198.18.0.3"), reply: Collected().stream)
        #expect(ok["clients"] == "")
        #expect(ok["changed"] == "yes")
        #expect(try await h.store.current().managedEntries.isEmpty)
    }

    @Test("UNEXPORT of a path a foreign line exports names that line")
    func unexportForeign() async throws {
        let sandbox = try Sandbox(exports: "/srv/data 198.18.0.9(ro)\n")
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        let ok = try await h.unexport(request("UNEXPORT path=/srv/data"), reply: Collected().stream)
        #expect(ok["changed"] == "no")
        #expect(ok["foreign"] == "\(sandbox.exports):1")
    }

    @Test("UNEXPORT refuses malformed values", arguments: ["UNEXPORT path=relative", "UNEXPORT path=/a/../b",
                                                            "UNEXPORT path=/a client=*", "UNEXPORT", "UNEXPORT path=/a force=yes"])
    func unexportRefused(_ line: String) async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        let error = await #expect(throws: AgentError.self) { _ = try await h.unexport(request(line), reply: Collected().stream) }
        #expect(error?.code == .invalidArgument)
    }

    @Test("EXPORTS lists ours and foreign entries with line numbers and flags conflicts")
    func exports() async throws {
        let root = "/var/lib/libvirt/shared-images"
        let text = """
            # admin
            /srv/data 198.18.0.9(ro) \\
                198.18.0.8(rw)
            \(root)/w1 198.18.0.7(rw)
            \(ManagedBlockMarkers.beginMarker)
            \(root)/w1 198.18.0.2(rw,sync,no_subtree_check,no_root_squash,fsid=5)
            \(root)/w2 198.18.0.2(rw,sync,no_subtree_check,no_root_squash,fsid=6)
            \(root)/w3 198.18.0.2(rw,insecure)
            \(ManagedBlockMarkers.endMarker)

            """
        // The DATA lines as they go on the wire.
        let records = StorageAgentHandler.records(ExportsFile(parsing: text)).map { $0.encoded() }
        #expect(records.count == 5)
        #expect(records[0]["owner"] == "foreign")
        #expect(records[0]["line"] == "2")
        #expect(records[0]["clients"] == "198.18.0.9,198.18.0.8")
        #expect(records[1]["line"] == "4")
        #expect(records[1]["conflict"] == "yes")
        #expect(records[2]["owner"] == "storagectl")
        #expect(records[2]["line"] == "6")
        #expect(records[2]["fsid"] == "5")
        #expect(records[2]["conflict"] == "yes")
        #expect(records[3]["conflict"] == nil)
        #expect(records[4]["invalid"] != nil, "a hand-edited managed line is reported as invalid")
    }

    @Test("a foreign entry with hundreds of clients is listed in one line within the limit, clients counted")
    func hugeForeignEntry() throws {
        let clients = (1...600).map { "198.18.\($0 / 250).\($0 % 250 + 1)(ro,sync,no_subtree_check)" }.joined(separator: " ")
        let records = StorageAgentHandler.records(ExportsFile(parsing: "/srv/big \(clients)\n"))
        #expect(records.count == 1)
        let line = ResponseLine.data(records[0].encoded()).line
        #expect(line.utf8.count <= Wire.maxLineBytes, "\(line.utf8.count) bytes")
        #expect(records[0].clients.count + (records[0].clientsOmitted ?? 0) == 600 && records[0].textTruncated)
        let decoded = try ExportRecord(answer: "EXPORTS", records[0].encoded())
        #expect(decoded == records[0], "the cut record reads back as written")
    }

    @Test("EXPORTS takes no arguments and answers counts")
    func exportsVerb() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        let h = try handler(sandbox)
        let reply = Collected()
        let ok = try await h.exports(request("EXPORTS"), reply: reply.stream)
        #expect(ok["exports"] == "1")
        #expect(ok["foreign"] == "1")
        #expect(ok["block"] == "absent")
        #expect(reply.data.count == 1)
        await #expect(throws: AgentError.self) { _ = try await h.exports(request("EXPORTS path=/x"), reply: reply.stream) }
    }

    @Test("an invalid export root or client list is refused when the handler is made")
    func badConfiguration() throws {
        let sandbox = try Sandbox()
        defer { sandbox.remove() }
        var c = sandbox.configuration()
        c.exportRoot = "/"
        #expect(throws: AgentError.self) { _ = try StorageAgentHandler(configuration: c, applier: RecordingApplier()) }
        c = sandbox.configuration(clients: ["*"])
        #expect(throws: AgentError.self) { _ = try StorageAgentHandler(configuration: c, applier: RecordingApplier()) }
    }
}

@Suite("export list check")
struct ExportListCheckTests {
    let plan = ApplyPlan(
        managed: [ManagedExport(path: "/srv/w1", fsid: 5, clients: [
            ManagedClient(address: try! ClientAddress("198.18.0.2"), options: .storagectlDefault),
            ManagedClient(address: try! ClientAddress("198.18.0.3"), options: .storagectlDefault),
        ])],
        gone: [GoneExport(path: "/srv/w2", client: "198.18.0.2")])

    @Test("ganesha's /32 groups match, the probe's own address is ignored")
    func matches() {
        let listed = [ListedExport(path: "/srv/w1", groups: ["198.18.0.2/32", "198.18.0.3/32", "127.0.0.1/32"])]
        #expect(ExportListCheck.problems(plan, listed: listed, ignoring: ["127.0.0.1"]).isEmpty)
        #expect(ExportListCheck.problems(plan, listed: listed).count == 1, "without ignoring, 127.0.0.1 is an extra client")
    }

    @Test("a host-name client matches the address the server lists for it")
    func aliases() throws {
        let named = ApplyPlan(managed: [ManagedExport(path: "/srv/w1", fsid: 7, clients: [
            ManagedClient(address: try ClientAddress("source-example"), options: .storagectlDefault),
        ])])
        let listed = [ListedExport(path: "/srv/w1", groups: ["198.18.0.2"])]
        #expect(ExportListCheck.problems(named, listed: listed, aliases: ["source-example": ["198.18.0.2"]]).isEmpty)
        #expect(ExportListCheck.problems(named, listed: listed) == [
            "the NFS server lists /srv/w1 without source-example", "the NFS server lists /srv/w1 also for 198.18.0.2",
        ])
        #expect(HostResolver.addresses(of: "localhost").contains("127.0.0.1"))
    }

    @Test("missing exports, missing clients and clients still listed after removal are problems")
    func problems() {
        #expect(ExportListCheck.problems(plan, listed: []) == ["the NFS server does not list /srv/w1"])
        let partial = [ListedExport(path: "/srv/w1", groups: ["198.18.0.2"]), ListedExport(path: "/srv/w2", groups: ["198.18.0.2/32"])]
        let found = ExportListCheck.problems(plan, listed: partial)
        #expect(found.contains("the NFS server lists /srv/w1 without 198.18.0.3"))
        #expect(found.contains("the NFS server still lists /srv/w2 for 198.18.0.2"))
    }

    @Test("exportfs messages are grouped, continuation lines joined")
    func messages() {
        let output = "exportfs: /etc/exports [1]: Neither 'subtree_check' or 'no_subtree_check' specified\n  Assuming default behaviour\nexportfs: Failed to stat /srv/x: No such file or directory\n"
        #expect(KernelExportsApplier.messages(output) == [
            "exportfs: /etc/exports [1]: Neither 'subtree_check' or 'no_subtree_check' specified Assuming default behaviour",
            "exportfs: Failed to stat /srv/x: No such file or directory",
        ])
    }
}
