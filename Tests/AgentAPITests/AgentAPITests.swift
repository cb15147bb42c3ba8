import AgentAPI
import AgentProtocol
import Testing

/// The typed contract writes exactly protocol v1 (docs/protocol.md) and reads it back.
@Suite("typed contract")
struct AgentAPITests {
    func line<V: AgentVerb>(_ verb: V) -> String { verb.request.line }

    func okLine<V: AgentVerb>(_ type: V.Type, _ answer: V.Answer) -> (data: [String], ok: String) {
        let (data, ok) = V.encodeAnswer(answer)
        return (data.map { ResponseLine.data($0).line }, ResponseLine.ok(ok).line)
    }

    @Test("requests are written as docs/protocol.md shows them")
    func requestLines() {
        #expect(line(ExportRequest(path: "/var/lib/libvirt/shared-images", clients: ["198.18.0.2", "198.18.0.3"]))
                == "EXPORT path=/var/lib/libvirt/shared-images client=198.18.0.2 client=198.18.0.3")
        #expect(line(PoolEnsureRequest(name: "shared-images", server: "198.18.0.1", export: "/var/lib/libvirt/shared-images",
                                       target: "/var/lib/libvirt/shared-images"))
                == "POOL-ENSURE name=shared-images server=198.18.0.1 export=/var/lib/libvirt/shared-images target=/var/lib/libvirt/shared-images")
        #expect(line(CopyRequest(domain: "wanderer1", share: .pool("shared-images"))) == "COPY domain=wanderer1 pool=shared-images")
        #expect(line(AdoptRequest(domain: "w1", share: .nfs(server: "198.18.0.1", export: "/e"), attach: .libnfs))
                == "ADOPT domain=w1 attach=libnfs server=198.18.0.1 export=/e")
        #expect(line(VerifyRequest(path: "/s/w1/w1.qcow2", nonce: .write(name: "share-test")))
                == "VERIFY path=/s/w1/w1.qcow2 nonce-write=share-test")
        #expect(line(VerifyRequest(path: "w1/w1.qcow2", share: .pool("p"), nonce: .read(name: "n", value: "v1")))
                == "VERIFY path=w1/w1.qcow2 pool=p nonce-read=n value=v1")
        #expect(line(LocalizeRequest(domain: "w1", share: .pool("shared-images"))) == "LOCALIZE domain=w1 pool=shared-images")
        #expect(line(SpaceQuery()) == "SPACE")
    }

    @Test("answers are written as docs/protocol.md shows them")
    func answerLines() {
        let pool = okLine(PoolEnsureRequest.self, .init(
            name: "shared-images", attach: .mount, server: "198.18.0.1", export: "/var/lib/libvirt/shared-images",
            target: "/var/lib/libvirt/shared-images", nfsVersion: "3", mountOptions: ["nolock"], active: true, autostart: true,
            changed: true, actions: ["defined", "built", "started", "autostarted"]))
        #expect(pool.ok == "OK name=shared-images attach=mount server=198.18.0.1 export=/var/lib/libvirt/shared-images target=/var/lib/libvirt/shared-images nfs-version=3 type=netfs mount-options=nolock state=active autostart=yes changed=yes actions=defined,built,started,autostarted")
        let domain = okLine(DomainQuery.self, .init(
            name: "wanderer1", uuid: "8f0b5a2e-5b1e-4c55-9b0f-3a8f6f0d2c11", state: .shutOff, persistent: true,
            disks: [DiskRecord(target: "vda", type: "file", source: "/var/lib/libvirt/images/wanderer1.qcow2", format: "qcow2",
                               virtualSize: 1073741824, allocated: 4653056)]))
        #expect(domain.data == ["DATA disk=vda type=file device=disk source=/var/lib/libvirt/images/wanderer1.qcow2 format=qcow2 virtual-size=1073741824 allocated=4653056 cache=default backing="])
        #expect(domain.ok == "OK name=wanderer1 uuid=8f0b5a2e-5b1e-4c55-9b0f-3a8f6f0d2c11 state=shut-off persistent=yes disks=1")
        let domains = okLine(DomainsQuery.self, [.init(name: "wanderer1", state: .shutOff, persistent: true, shared: false),
                                                 .init(name: "web2", state: .running, persistent: true, shared: true)])
        #expect(domains.data == ["DATA name=wanderer1 state=shut-off persistent=yes shared=no", "DATA name=web2 state=running persistent=yes shared=yes"])
        #expect(domains.ok == "OK domains=2 shared=1")
        let exports = okLine(ExportsQuery.self, .init(records: [], block: .absent, backend: .kernel))
        #expect(exports.ok == "OK exports=0 managed=0 foreign=0 conflicts=0 block=absent backend=kernel")
        let unexport = okLine(UnexportRequest.self, .init(path: "/srv/never-exported", clients: [], changed: false, backend: .kernel))
        #expect(unexport.ok == "OK path=/srv/never-exported clients= changed=no backend=kernel")
        let restore = okLine(RestoreRequest.self, .init(domain: "wanderer1", changed: true, from: "/var/lib/storagectl/domains/x.previous.xml"))
        #expect(restore.ok == "OK domain=wanderer1 changed=yes from=/var/lib/storagectl/domains/x.previous.xml")
    }

    @Test("every verb's request survives the wire", arguments: [
        ExportRequest(path: "/p", clients: ["a", "b"]).request, UnexportRequest(path: "/p").request, ExportsQuery().request,
        SpaceQuery(path: "/p").request, ChecksumRequest(path: "/p/f").request, DomainQuery(name: "w 1").request, DomainsQuery().request,
        PoolEnsureRequest(name: "n", server: "s", export: "/e", target: nil, attach: .libnfs).request,
        CopyRequest(domain: "d", share: .nfs(server: "s", export: "/e")).request,
        AdoptRequest(domain: "d", share: .poolTarget("/t")).request, RestoreRequest(domain: "d").request,
        VerifyRequest(path: "/a/b").request, LocalizeRequest(domain: "d", share: .pool("p"), dir: "/x").request,
    ])
    func roundTrip(_ request: Request) throws {
        let parsed = try Request.parse(request.line)
        func again<V: AgentVerb>(_ type: V.Type) throws -> Request { try V(parsed).request }
        let decoded: Request
        switch parsed.verb {
        case ExportRequest.verb: decoded = try again(ExportRequest.self)
        case UnexportRequest.verb: decoded = try again(UnexportRequest.self)
        case ExportsQuery.verb: decoded = try again(ExportsQuery.self)
        case SpaceQuery.verb: decoded = try again(SpaceQuery.self)
        case ChecksumRequest.verb: decoded = try again(ChecksumRequest.self)
        case DomainQuery.verb: decoded = try again(DomainQuery.self)
        case DomainsQuery.verb: decoded = try again(DomainsQuery.self)
        case PoolEnsureRequest.verb: decoded = try again(PoolEnsureRequest.self)
        case CopyRequest.verb: decoded = try again(CopyRequest.self)
        case AdoptRequest.verb: decoded = try again(AdoptRequest.self)
        case RestoreRequest.verb: decoded = try again(RestoreRequest.self)
        case VerifyRequest.verb: decoded = try again(VerifyRequest.self)
        case LocalizeRequest.verb: decoded = try again(LocalizeRequest.self)
        default: Issue.record("untested verb \(parsed.verb)"); return
        }
        #expect(decoded == request)
    }

    @Test("answers survive the wire")
    func answerRoundTrip() throws {
        let copy = CopyRequest.Answer(
            rows: [.skipped(disk: "hdc", source: "/iso", reason: "cdrom"),
                   .copied(CopiedImage(disk: "vda", source: "/i/w1.qcow2", path: "w1/w1.qcow2", size: 10, dataBytes: 8, digest: "xxh3-128:" + String(repeating: "0f", count: 16), alreadyPresent: true))],
            domain: "w1", share: ShareFacts(pool: "p", server: "s", export: "/e", attach: .mount, target: "/t"),
            bytes: 10, attached: true, restarted: false, seconds: 0.5)
        let (data, ok) = CopyRequest.encodeAnswer(copy)
        #expect(try CopyRequest.decodeAnswer(data: data, ok: ok) == copy)
        let verify = VerifyRequest.Answer(path: "/t/w1", via: .mount, pool: "p", size: 3, allocated: 4, format: "qcow2", virtualSize: 5,
                                          nonce: "n", nonceValue: "v")
        #expect(try VerifyRequest.Answer(answer: "VERIFY", verify.encoded()) == verify)
        let health = HealthQuery.Answer(checks: [HealthCheck("libvirt", ok: false, detail: "down", facts: ["uri": "qemu:///system"])],
                                        agent: "compute-agent", version: "0.1.0", host: "h", uptimeSeconds: 3)
        let (hd, hok) = HealthQuery.encodeAnswer(health)
        #expect(hok["health"] == "degraded" && hok["failed"] == "libvirt")
        #expect(try HealthQuery.decodeAnswer(data: hd, ok: hok) == health)
    }

    @Test("agents refuse unknown keys, repeated keys and bad values, naming the key")
    func strict() {
        func refusal(_ line: String, _ decode: (Request) throws(AgentError) -> Void) -> AgentError? {
            do { try decode(try Request.parse(line)); return nil } catch { return error }
        }
        let unknown = refusal("EXPORT path=/p client=a options=rw") { r throws(AgentError) in _ = try ExportRequest(r) }
        #expect(unknown?.message == "EXPORT does not take 'options' (it takes client, path)")
        let twice = refusal("COPY domain=a domain=b pool=p") { r throws(AgentError) in _ = try CopyRequest(r) }
        #expect(twice?.code == .invalidArgument && twice?.message.contains("domain=") == true)
        let attach = refusal("POOL-ENSURE name=n server=s export=/e attach=iscsi") { r throws(AgentError) in _ = try PoolEnsureRequest(r) }
        #expect(attach?.message.contains("attach=") == true && attach?.message.contains("mount, libnfs") == true)
        let both = refusal("VERIFY path=x pool=p server=s export=/e") { r throws(AgentError) in _ = try VerifyRequest(r) }
        #expect(both?.code == .invalidArgument)
        let noClient = refusal("EXPORT path=/srv/w1") { r throws(AgentError) in _ = try ExportRequest(r) }
        #expect(noClient?.message == "EXPORT needs at least one client=HOST (a compute host from the inventory)")
    }

    @Test("an answer without a key it needs, or with a malformed value, is unsupported (another version)")
    func answerFromAnotherVersion() {
        #expect(throws: AgentError.self) { try ChecksumRequest.Answer(answer: "CHECKSUM", ["path": "/p", "size": "3", "sha256": "ab"]) }
        do { _ = try SpaceQuery.Answer(answer: "SPACE", ["path": "/p", "total": "x", "free": "1", "available": "1"]) } catch {
            #expect(error.code == .unsupported && error.message.contains("total=x"))
        }
        #expect(WireValue.bool("yes") == true && WireValue.bool("no") == false && WireValue.bool("true") == nil)
    }

    @Test("a digest= that is not xxh3-128:<32 hex> is unsupported in CHECKSUM, COPY and LOCALIZE answers: the SHA-256 form of earlier agents is never taken for a digest")
    func contentDigestSpelling() throws {
        let current = "xxh3-128:" + String(repeating: "9a", count: 16)
        let sha256 = String(repeating: "9c", count: 32)
        #expect(ContentDigestSpelling.isCurrent(current))
        for bad in [sha256, "xxh3-128:" + String(repeating: "9A", count: 16), "xxh3-128:" + String(repeating: "9a", count: 15),
                    "xxh3-128:" + String(repeating: "9a", count: 17), "sha256:" + sha256, "XXH3-128:" + String(repeating: "9a", count: 16), ""] {
            #expect(!ContentDigestSpelling.isCurrent(bad), "\(bad)")
        }
        func checksum(_ digest: String) -> Fields { ["path": "/p", "size": "3", "digest": digest, "seconds": "0.1"] }
        #expect(try ChecksumRequest.Answer(answer: "CHECKSUM", checksum(current)).digest == current)
        func refusal(_ decode: () throws(AgentError) -> Void) -> AgentError? {
            do { try decode(); return nil } catch { return error }
        }
        let old = refusal { () throws(AgentError) in _ = try ChecksumRequest.Answer(answer: "CHECKSUM", checksum(sha256)) }
        #expect(old?.code == .unsupported)
        #expect(old?.message.contains("CHECKSUM with digest=\(sha256), a SHA-256 content digest") == true, "\(String(describing: old))")
        #expect(old?.message.contains("Upgrade the agents and storagectl together") == true)
        let other = refusal { () throws(AgentError) in _ = try ChecksumRequest.Answer(answer: "CHECKSUM", checksum("blake3:00")) }
        #expect(other?.code == .unsupported && other?.message.contains("another algorithm (blake3)") == true, "\(String(describing: other))")
        let copied = refusal { () throws(AgentError) in
            _ = try CopiedImage(answer: "COPY", ["disk": "vda", "path": "w1/w1.qcow2", "size": "3", "digest": sha256])
        }
        #expect(copied?.code == .unsupported && copied?.message.contains("COPY with digest=") == true)
        let localized = refusal { () throws(AgentError) in
            _ = try LocalizedImage(answer: "LOCALIZE", ["disk": "vda", "from": "/s/w1.qcow2", "to": "/i/w1.qcow2", "size": "3", "digest": sha256])
        }
        #expect(localized?.code == .unsupported && localized?.message.contains("LOCALIZE with digest=") == true)
        #expect(try LocalizedImage(answer: "LOCALIZE", ["disk": "vda", "from": "/s", "to": "/i", "size": "3", "digest": current]).digest == current)
    }
}

/// Inputs fuzz-line found (Tests/Fuzz/corpus/fuzz-line/regress-*): every verb's answer
/// decoded from them must encode to lines that decode to the same answer.
@Suite("typed contract: fuzz regressions")
struct AgentAPIFuzzRegressionTests {
    static func roundTrips<V: AgentVerb>(_ type: V.Type, _ response: Response) -> Bool where V.Answer: Equatable {
        guard let typed = try? V.answer(response) else { return true }
        let (data, ok) = V.encodeAnswer(typed)
        return (try? V.decodeAnswer(data: data, ok: ok)) == typed
    }

    @Test("COPY's seconds= and POOL-ENSURE's libnfs mount-options= read back as written; clients-omitted= never traps")
    func answers() throws {
        // seconds=0.37 used to be written back as 0.4 (lossy)
        let copy = Response(data: [], result: .success(["domain": "w1", "server": "s", "export": "/e", "attach": "mount",
                                                         "bytes": "1", "seconds": "0.37"]))
        #expect(Self.roundTrips(CopyRequest.self, copy))
        // a libnfs answer with mount-options= used to lose them on the way back
        let pool = Response(data: [], result: .success(["name": "p", "attach": "libnfs", "server": "s", "export": "/e",
                                                         "mount-options": "nolock", "ready": "yes", "changed": "no"]))
        #expect(Self.roundTrips(PoolEnsureRequest.self, pool))
        // a count beyond Int traps in Int(_:)
        #expect(throws: AgentError.self) {
            try ExportRecord(answer: "EXPORTS", ["owner": "foreign", "path": "/p", "line": "1", "clients": "",
                                                 "clients-omitted": "18446744073709551615"])
        }
    }
}
