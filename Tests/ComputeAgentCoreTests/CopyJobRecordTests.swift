import AgentAPI
import AgentProtocol
import AgentRuntime
import AgentTestSupport
import Foundation
import Libvirt
import Testing
@testable import ComputeAgentCore

@Suite("COPY job records")
struct CopyJobRecordTests {
    static let uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f"
    static let share = Share(pool: "shared", server: "198.18.0.1", export: "/srv/shared", attach: .mount, target: "/srv/shared")
    // An invalid relative path: a job started from this plan fails at once, before any I/O.
    static let disk = PlannedDisk(target: "vda", source: "/nonexistent/w1.qcow2", relativePath: "../w1.qcow2", size: 1048576, mtime: 1700000000)

    /// A finished job as an agent from before content digests wrote it (`sha256`).
    static let oldFormat = """
        {
          "attempts" : 1,
          "disks" : [
            {
              "mtime" : 1700000000,
              "relativePath" : "../w1.qcow2",
              "size" : 1048576,
              "source" : "/nonexistent/w1.qcow2",
              "target" : "vda"
            }
          ],
          "domain" : "wanderer1",
          "finished" : 752000000,
          "phase" : "done",
          "results" : {
            "vda" : {
              "alreadyPresent" : false,
              "dataBytes" : 1048576,
              "seconds" : 0.5,
              "sha256" : "9c1e2f0d3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d",
              "size" : 1048576
            }
          },
          "share" : {
            "attach" : "mount",
            "export" : "/srv/shared",
            "pool" : "shared",
            "server" : "198.18.0.1",
            "target" : "/srv/shared"
          },
          "started" : 751999999.5,
          "uuid" : "6695eb01-f6a4-8304-79aa-97f2502e193f"
        }
        """

    @Test("a finished record answers digest= per disk and reads back as written")
    func roundTrip() async throws {
        let host = try await SimHost()
        let digest = "xxh3-128:" + String(repeating: "5a", count: 16)
        let record = CopyJobRecord(domain: "wanderer1", uuid: Self.uuid, share: Self.share, disks: [Self.disk], phase: .done,
                                   results: ["vda": .init(size: 1048576, dataBytes: 65536, digest: digest, alreadyPresent: false, seconds: 0.5)],
                                   errorCode: nil, errorMessage: nil, started: Date(), finished: Date(), attempts: 1)
        let state = StateStore(root: host.state)
        try state.writeJSON(record, "jobs", Self.uuid + ".json")
        #expect(state.readJSON(CopyJobRecord.self, "jobs", Self.uuid + ".json") == record)
        #expect(record.rows.map { $0.encoded() } == [["disk": "vda", "source": "/nonexistent/w1.qcow2", "path": "../w1.qcow2", "size": "1048576",
                                      "data-bytes": "65536", "digest": digest, "already-present": "no"]])
    }

    @Test("a record in the old format (sha256=) counts as no record: the copy is started again, nothing crashes")
    func oldFormat() async throws {
        let host = try await SimHost()
        let state = StateStore(root: host.state)
        try state.write("jobs", Self.uuid + ".json", Data(Self.oldFormat.utf8))
        #expect(state.readJSON(CopyJobRecord.self, "jobs", Self.uuid + ".json") == nil)

        let plan = CopyPlan(domain: "wanderer1", uuid: Self.uuid, state: .shutoff, persistent: true, disks: [Self.disk], skipped: [])
        let start = try await host.handler.jobs.start(plan, share: Self.share)
        guard case .job(let job, let attached) = start else {
            Issue.record("the old record was taken as a finished job: \(start)")
            return
        }
        #expect(!attached && !job.restarted)
        let record = try await job.task.value
        #expect(record.phase == .failed, "the test plan cannot be copied")
        #expect(record.attempts == 1)
        let rewritten = try #require(state.readJSON(CopyJobRecord.self, "jobs", Self.uuid + ".json"), "the new record replaces the old one")
        #expect(rewritten.phase == .failed)
    }

    @Test("a finished record whose digests are SHA-256 ones (before XXH3-128) counts as no record; one with xxh3-128 digests is answered")
    func sha256Digests() async throws {
        let host = try await SimHost()
        let state = StateStore(root: host.state)
        let plan = CopyPlan(domain: "wanderer1", uuid: Self.uuid, state: .shutoff, persistent: true, disks: [Self.disk], skipped: [])
        func finished(_ digest: String) -> CopyJobRecord {
            CopyJobRecord(domain: "wanderer1", uuid: Self.uuid, share: Self.share, disks: [Self.disk], phase: .done,
                          results: ["vda": .init(size: 1048576, dataBytes: 1048576, digest: digest, alreadyPresent: false, seconds: 0.5)],
                          errorCode: nil, errorMessage: nil, started: Date(), finished: Date(), attempts: 1)
        }
        let current = finished("xxh3-128:" + String(repeating: "5a", count: 16))
        try state.writeJSON(current, "jobs", Self.uuid + ".json")
        guard case .finished(let answered) = try await host.handler.jobs.start(plan, share: Self.share) else {
            Issue.record("a finished record with xxh3-128 digests was not answered")
            return
        }
        #expect(answered == current)

        try state.writeJSON(finished(String(repeating: "9c", count: 32)), "jobs", Self.uuid + ".json")
        let start = try await host.handler.jobs.start(plan, share: Self.share)
        guard case .job(let job, let attached) = start else {
            Issue.record("a record with a SHA-256 digest was taken as a finished job: \(start)")
            return
        }
        #expect(!attached && !job.restarted)
        let record = try await job.task.value
        #expect(record.phase == .failed, "the test plan cannot be copied")
        #expect(state.readJSON(CopyJobRecord.self, "jobs", Self.uuid + ".json")?.phase == .failed, "the new record replaces the old one")
    }
}
