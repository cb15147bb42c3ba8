import AgentAPI
import AgentProtocol
import AgentRuntime
import Foundation
import Testing
import TestSupport
@testable import ComputeAgentCore

/// LOCALIZE as a job of the agent (like COPY): attach, records, restart.
@Suite("LOCALIZE jobs")
struct LocalizeJobTests {
    static let uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f"

    /// A one-shot gate a job's last step waits on.
    final class Gate: @unchecked Sendable {
        let stream: AsyncStream<Void>
        private let continuation: AsyncStream<Void>.Continuation
        init() { (stream, continuation) = AsyncStream<Void>.makeStream() }
        func open() { continuation.yield(); continuation.finish() }
        func wait() async { for await _ in stream { return } }
    }

    @Test("a second LOCALIZE of the domain attaches to the running job and answers its result (attached=yes)")
    func attaches() async throws {
        let (host, copy) = try await LocalizeVerbTests.adopted()
        let localization = Localization(session: host.handler.session, state: host.handler.state, imagesRoot: host.images)
        let share = try await host.handler.share(.pool("shared"))
        let plan = try #require(try await ComputeWork.run { () throws -> LocalizePlan? in
            try localization.prepare(domain: "wanderer1", share: share, dir: host.images)
        })
        // The first job copies, then waits at its last step until the second request is attached.
        let gate = Gate()
        let dir = host.images
        let (first, attached) = try await host.handler.jobs.startLocalize(plan) { moved in
            await gate.wait()
            return try await ComputeWork.run { () throws -> String? in try localization.redefine(domain: "wanderer1", moved: moved, dir: dir) }
        }
        #expect(!attached)
        #expect(await host.handler.jobs.isRunning("wanderer1"))
        #expect(await host.ask("COPY domain=wanderer1 pool=shared").result.error?.code == .busy, "one job per domain")

        let collected = Collected()
        let context = RequestContext(identity: AgentIdentity(agent: "compute-agent", host: "sim"), peer: "unix uid=0 pid=1",
                                     protocolVersion: 1, transport: .unix)
        let second = Task {
            try await host.handler.handle(try Request.parse("LOCALIZE domain=wanderer1 pool=shared dir=\(dir)"), context: context,
                                          reply: collected.stream)
        }
        // An attached request streams the job's progress at once; then let the job end.
        while !collected.lines.contains(where: { if case .progress = $0 { return true } else { return false } }) {
            try await Task.sleep(for: .milliseconds(10))
        }
        gate.open()
        let ok = try await second.value
        #expect(ok["attached"] == "yes" && ok["restarted"] == "no" && ok["changed"] == "yes" && ok["disks"] == "1")
        #expect(collected.lines.data.first?["digest"] == (try await LocalizeVerbTests.contentDigest(copy)))
        let record = try await first.task.value
        #expect(record.phase == .done && record.moved.count == 1)
        #expect(!(await host.handler.jobs.isRunning("wanderer1")))
        let stored = try #require(host.handler.state.readJSON(LocalizeJobRecord.self, "jobs", Self.uuid + ".localize.json"))
        #expect(stored.phase == .done && stored.attempts == 1)
    }

    @Test("an agent restarted in the middle of a LOCALIZE starts the job again on the next request (restarted=yes)")
    func restarts() async throws {
        let (host, copy) = try await LocalizeVerbTests.adopted()
        // What an agent killed mid-job leaves: a running record and a partial file.
        let share = Share(pool: "shared", server: "198.18.0.1", export: "/var/lib/libvirt/shared-images", attach: .mount, target: host.share)
        let interrupted = LocalizeJobRecord(domain: "wanderer1", uuid: Self.uuid, share: share, dir: host.images, disks: [],
                                            phase: .running, moved: [], restoredFrom: nil, errorCode: nil, errorMessage: nil,
                                            started: Date(), finished: nil, attempts: 1)
        let state = StateStore(root: host.state)
        let resolved = try await host.handler.share(.pool("shared"))
        try #require(resolved == share, "the record names the share LOCALIZE resolves: \(resolved)")
        try state.writeJSON(interrupted, "jobs", Self.uuid + ".localize.json")
        try FileManager.default.createDirectory(atPath: host.images + "/wanderer1", withIntermediateDirectories: true)
        let partial = host.images + "/wanderer1/.wanderer1.qcow2.storagectl-partial"
        try Data("half a copy".utf8).write(to: URL(fileURLWithPath: partial))

        let answer = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)")
        let ok = try #require(answer.result.ok, "\(String(describing: answer.result.error))")
        #expect(ok["restarted"] == "yes" && ok["attached"] == "no" && ok["changed"] == "yes")
        #expect(!FileManager.default.fileExists(atPath: partial), "the leftover partial file was replaced")
        #expect(try await LocalizeVerbTests.contentDigest(host.images + "/wanderer1/wanderer1.qcow2") == (try await LocalizeVerbTests.contentDigest(copy)))
        let stored = try #require(state.readJSON(LocalizeJobRecord.self, "jobs", Self.uuid + ".localize.json"))
        #expect(stored.phase == .done && stored.attempts == 2)

        // Done: the next LOCALIZE has nothing on the share to copy.
        let again = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)")
        #expect(again.result.ok?["disks"] == "0" && again.result.ok?["changed"] == "no")
    }

    @Test("a LOCALIZE that fails leaves the local original, and its record says why")
    func failure() async throws {
        let (host, copy) = try await LocalizeVerbTests.adopted()
        let local = host.images + "/wanderer1.qcow2"
        let before = try Data(contentsOf: URL(fileURLWithPath: local))
        // The image on the share becomes a link: the engine refuses to follow it.
        try FileManager.default.moveItem(atPath: copy, toPath: host.share + "/elsewhere.qcow2")
        try FileManager.default.createSymbolicLink(atPath: copy, withDestinationPath: host.share + "/elsewhere.qcow2")
        let e = await host.ask("LOCALIZE domain=wanderer1 pool=shared dir=\(host.images)").result.error
        #expect(e != nil)
        #expect(try Data(contentsOf: URL(fileURLWithPath: local)) == before, "the original is untouched")
        #expect(!FileManager.default.fileExists(atPath: host.images + "/wanderer1/.wanderer1.qcow2.storagectl-partial"))
        let stored = try #require(host.handler.state.readJSON(LocalizeJobRecord.self, "jobs", Self.uuid + ".localize.json"))
        #expect(stored.phase == .failed && stored.errorMessage?.contains("symbolic link") == true)
    }
}
