import AgentProtocol
import Foundation
import Testing
@testable import StoragectlCommands

/// The JSON that the Cockpit page reads (docs/web.md) is what docs/storagectl.md says:
/// every key storagectl prints is documented, and every documented key of a record is
/// printed.
@Suite("JSON documents match docs/storagectl.md")
struct JSONDocumentTests {
    static let doc: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/storagectl.md")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    /// The quoted names in the paragraph of the doc that starts with `marker` (up to the
    /// next blank line).
    static func documentedKeys(after marker: String) -> Set<String> {
        guard let start = doc.range(of: marker) else { return [] }
        let rest = doc[start.lowerBound...]
        let end = rest.range(of: "\n\n")?.lowerBound ?? rest.endIndex
        return quoted(String(rest[..<end]))
    }

    static func quoted(_ text: String) -> Set<String> {
        var keys = Set<String>()
        var i = text.startIndex
        while let open = text[i...].firstIndex(of: "\"") {
            let after = text.index(after: open)
            guard let close = text[after...].firstIndex(of: "\"") else { break }
            keys.insert(String(text[after..<close]))
            i = text.index(after: close)
        }
        return keys
    }

    /// Every key of a JSON value, nested (the keys of `facts` maps are data, not keys).
    static func keys(_ value: Any, skipping: Set<String> = ["facts"]) -> Set<String> {
        var out = Set<String>()
        if let o = value as? [String: Any] {
            for (k, v) in o {
                out.insert(k)
                if !skipping.contains(k) { out.formUnion(keys(v, skipping: skipping)) }
            }
        } else if let a = value as? [Any] {
            for v in a { out.formUnion(keys(v, skipping: skipping)) }
        }
        return out
    }

    static func object(_ line: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    /// The table row of a `--json-lines` record: `{"type":"T","T":{"a","b"}}` -> [a, b]
    static func recordRow(_ type: String) -> Set<String>? {
        let prefix = "{\"type\":\"\(type)\",\"\(type)\":"
        guard let line = doc.split(separator: "\n").first(where: { $0.hasPrefix("| `" + prefix) }),
              let start = line.range(of: prefix), let end = line.range(of: "}}`") else { return nil }
        return quoted(String(line[start.upperBound..<end.lowerBound]))
    }

    @Test("share's --json-lines records: step, note, progress, result, failure as the table says")
    func jsonLines() throws {
        var last = ContinuousClock.now - .seconds(10)
        let step = try #require(ShareFormatting.record(.step(.export, host: "cargo-bay", detail: "exported (changed)"), lastRecord: &last))
        let s = try Self.object(step)
        #expect(s["type"] as? String == "step")
        let stepBody = try #require(s["step"] as? [String: Any])
        #expect(Set(stepBody.keys) == Self.recordRow("step"))
        #expect(stepBody["step"] as? String == "export" && stepBody["host"] as? String == "cargo-bay")

        let note = try Self.object(try #require(ShareFormatting.record(.note("a note"), lastRecord: &last)))
        #expect(note["type"] as? String == "note" && note["note"] as? String == "a note")
        #expect(Self.doc.contains("| `{\"type\":\"note\",\"note\":TEXT}` |"))

        let first = try #require(ShareFormatting.record(.progress(disk: "vda", done: 10, total: 100, bytesPerSecond: 5), lastRecord: &last))
        let p = try Self.object(first)
        let body = try #require(p["progress"] as? [String: Any])
        #expect(Set(body.keys) == Self.recordRow("progress"))
        #expect(body["done"] as? Int == 10 && body["total"] as? Int == 100 && body["disk"] as? String == "vda")
        // at most every 0.25 s, but a disk's completion always
        #expect(ShareFormatting.record(.progress(disk: "vda", done: 20, total: 100, bytesPerSecond: 5), lastRecord: &last) == nil)
        #expect(ShareFormatting.record(.progress(disk: "vda", done: 100, total: 100, bytesPerSecond: .infinity), lastRecord: &last) != nil)
        // every record is one line
        #expect(!step.contains("\n") && !first.contains("\n"))
    }

    @Test("a copy faster than the agent's progress interval still ends at its total, before the copy step's line")
    func completion() throws {
        var last = ContinuousClock.now - .seconds(10)
        var disks: [(disk: String, done: UInt64, total: UInt64)] = []
        let first = ShareFormatting.records(.progress(disk: "vda", done: 0, total: 400, bytesPerSecond: 0), lastRecord: &last, disks: &disks)
        #expect(first.count == 1)
        let end = ShareFormatting.records(.step(.copy, host: "source-example", detail: "1 disk(s) copied"), lastRecord: &last, disks: &disks)
        #expect(end.count == 2)
        let p = try #require(try Self.object(end[0])["progress"] as? [String: Any])
        #expect(p["done"] as? Int == 400 && p["total"] as? Int == 400 && p["disk"] as? String == "vda")
        #expect(try Self.object(end[1])["type"] as? String == "step")
        // a disk that reported its total itself gets nothing more; other steps neither
        _ = ShareFormatting.records(.progress(disk: "vdb", done: 9, total: 9, bytesPerSecond: 0), lastRecord: &last, disks: &disks)
        #expect(ShareFormatting.records(.step(.localize, host: "h", detail: ""), lastRecord: &last, disks: &disks).count == 1)
        #expect(ShareFormatting.records(.step(.verify, host: "h", detail: ""), lastRecord: &last, disks: &disks).count == 1)
    }

    @Test("the last record carries the --json document or the failure document")
    func finalRecords() throws {
        let result = ShareResult(vm: "w1", source: "source-example", destinations: ["dest-example"], attach: .mount,
                                 storage: "cargo-bay", export: "/srv/share", pool: "shared-images", mode: .offline,
                                 disks: [CopiedDisk(disk: "vda", path: "w1/w1.qcow2", size: 4, digest: "xxh3-128:00", alreadyPresent: false)],
                                 changed: ["export"], ready: true, dryRun: false, plan: [])
        let line = ShareFormatting.finalRecord("result", document: try ShareFormatting.json(result, compact: true))
        #expect(!line.contains("\n"))
        let r = try Self.object(line)
        #expect(r["type"] as? String == "result")
        let doc = try #require(r["result"] as? [String: Any])
        #expect(doc["vm"] as? String == "w1" && doc["ready"] as? Bool == true)
        // the keys the share paragraph names are all there
        let shareKeys = Self.documentedKeys(after: "`--json` prints `{\"vm\", \"source\", \"destinations\"")
        for k in ["vm", "source", "destinations", "mode", "changed", "disks", "ready", "copy_seconds", "total_seconds",
                  "step_seconds", "disk", "path", "size", "digest", "already_present"] {
            #expect(shareKeys.contains(k), "\(k) is not in the doc")
            #expect(Self.keys(doc).contains(k), "\(k) is not printed")
        }

        let failure = ShareFailure(step: .pool, host: "dest-example", error: AgentError(.timeout, "no answer"), remedy: "run it again")
        let f = try Self.object(ShareFormatting.finalRecord("failure", document: try ShareFormatting.json(failure: failure, compact: true)))
        let fdoc = try #require(f["failure"] as? [String: Any])
        #expect(Set(fdoc.keys) == ["ready", "failed_step", "host", "code", "message", "remedy", "interrupted"])
        #expect(Self.documentedKeys(after: "or, on failure, `{\"ready\": false").isSuperset(of: Set(fdoc.keys)))
        #expect(fdoc["failed_step"] as? String == "pool" && fdoc["code"] as? String == "timeout")
    }

    @Test("hosts --json: every key printed is documented, the remedy of an unreachable host too")
    func hosts() throws {
        let full = HostReport(name: "cargo-bay", role: .storage, agent: "tls:cargo-bay:7701", state: .healthy,
                              agentVersion: "0.1.0", reportedHost: "cargo-bay", uptimeSeconds: 5, roundTripMilliseconds: 0.4,
                              checks: [.init(name: "exports-file", ok: true, detail: "ok", facts: ["path": "/etc/exports"])],
                              error: "x", errorCode: "timeout", remedy: "y")
        let printed = Self.keys(try JSONSerialization.jsonObject(with: Data(try HostsFormatting.json([full]).utf8)))
        let documented = Self.documentedKeys(after: "`--json` prints `{\"hosts\": [")
        #expect(!documented.isEmpty)
        #expect(printed.subtracting(documented).isEmpty, "undocumented: \(printed.subtracting(documented))")
        #expect(documented.subtracting(printed).isEmpty, "documented, never printed: \(documented.subtracting(printed))")
        // a stopped agent (timeout): the remedy says to check that it is not stopped
        let remedy = try #require(HostsFormatting.remedy(host: "dest-example", role: .compute, code: "timeout"))
        #expect(remedy.contains("is not stopped") && remedy.contains("compute-agent"))
        #expect(HostsFormatting.remedy(host: "h", role: .compute, code: "not-found") == nil)
    }

    @Test("status VM --json: every key printed is documented")
    func status() throws {
        let s = VMStatus(vm: "w1", owner: "source-example", state: "shut-off", storage: "cargo-bay", export: "/srv/share",
                         sharedDisks: ["/srv/share/w1/w1.qcow2"], localDisks: [],
                         hosts: [.init(host: "dest-example", definesVM: false, exported: true, seesDisks: true, canRun: true, problem: "p")],
                         ready: true, problem: "q", gateways: [GatewayState(name: "gateway-a", state: .down, detail: "d")],
                         gatewayProblem: "g", remedy: "r")
        let printed = Self.keys(try JSONSerialization.jsonObject(with: ShareFormatting.encoder().encode(s)))
        let documented = Self.documentedKeys(after: "`--json` of one VM prints")
        #expect(printed.subtracting(documented).isEmpty, "undocumented: \(printed.subtracting(documented))")
        #expect(documented.subtracting(printed).isEmpty, "documented, never printed: \(documented.subtracting(printed))")
    }

    @Test("share --repair --json: every key printed is documented")
    func repair() throws {
        let r = RepairResult(vm: "w1", storage: "ceph-nfs", serving: "gateway-b",
                             gateways: [GatewayState(name: "gateway-a", state: .down, detail: "d")], evicted: ["gateway-a": 1],
                             reexported: ["gateway-b"], reachable: ["source-example"], ready: true)
        // the keys of the evicted map are gateway names: data
        let printed = Self.keys(try JSONSerialization.jsonObject(with: Data(try ShareFormatting.json(r).utf8)), skipping: ["evicted"])
        let documented = Self.documentedKeys(after: "`--json` prints `{\"vm\", \"storage\", \"serving\"")
        #expect(!documented.isEmpty)
        #expect(printed.subtracting(documented).isEmpty, "undocumented: \(printed.subtracting(documented))")
        #expect(documented.subtracting(printed).isEmpty, "documented, never printed: \(documented.subtracting(printed))")
    }
}
