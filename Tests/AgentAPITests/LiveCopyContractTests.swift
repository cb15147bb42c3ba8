import AgentAPI
import AgentProtocol
import Testing

/// LIVE-COPY, LIVE-LOCALIZE and LIVE-ABORT on the wire (docs/protocol.md, "Live copy").
@Suite("live copy contract")
struct LiveCopyContractTests {
    @Test("requests are written as docs/protocol.md shows them and survive the wire")
    func requests() throws {
        let copy = LiveCopyRequest(domain: "bc1", share: .pool("shared-images"), bandwidthMiB: 8)
        #expect(copy.request.line == "LIVE-COPY domain=bc1 pool=shared-images bandwidth=8")
        #expect(try LiveCopyRequest(Request.parse(copy.request.line)) == copy)
        let nfs = LiveCopyRequest(domain: "bc1", share: .nfs(server: "198.18.0.1", export: "/var/lib/libvirt/shared-images"))
        #expect(nfs.request.line == "LIVE-COPY domain=bc1 server=198.18.0.1 export=/var/lib/libvirt/shared-images")
        #expect(try LiveCopyRequest(Request.parse(nfs.request.line)) == nfs)
        let back = LiveLocalizeRequest(domain: "bc1", share: .pool("p"), dir: "/var/lib/libvirt/images", bandwidthMiB: 1)
        #expect(back.request.line == "LIVE-LOCALIZE domain=bc1 pool=p dir=/var/lib/libvirt/images bandwidth=1")
        #expect(try LiveLocalizeRequest(Request.parse(back.request.line)) == back)
        let abort = LiveAbortRequest(domain: "bc1")
        #expect(abort.request.line == "LIVE-ABORT domain=bc1")
        #expect(try LiveAbortRequest(Request.parse(abort.request.line)) == abort)
    }

    @Test("bandwidth=0, a pool-target= share and unknown keys are refused, naming the key", arguments: [
        "LIVE-COPY domain=d pool=p bandwidth=0", "LIVE-LOCALIZE domain=d pool=p bandwidth=0",
        "LIVE-COPY domain=d pool-target=/t", "LIVE-COPY domain=d pool=p bandwidth=x", "LIVE-ABORT domain=d pool=p",
        "LIVE-COPY pool=p",
    ])
    func refused(_ line: String) throws {
        let request = try Request.parse(line)
        let e: AgentError? = {
            do {
                switch request.verb {
                case LiveCopyRequest.verb: _ = try LiveCopyRequest(request)
                case LiveLocalizeRequest.verb: _ = try LiveLocalizeRequest(request)
                default: _ = try LiveAbortRequest(request)
                }
                return nil
            } catch { return error as? AgentError }
        }()
        #expect(e?.code == .invalidArgument, "\(line): \(String(describing: e))")
    }

    @Test("answers survive the wire: one DATA per disk, attached=/saved=/dir= only when set")
    func answers() throws {
        let moved = LiveMovedDisk(disk: "vda", from: "/var/lib/libvirt/images/bc1.qcow2",
                                  to: "nfs://198.18.0.1/var/lib/libvirt/shared-images/bc1/bc1.qcow2", path: "bc1/bc1.qcow2",
                                  format: "qcow2", virtualSize: 1 << 30, copied: 458_752, already: false)
        let already = LiveMovedDisk(disk: "vdb", from: "/t/bc1/d.raw", to: "/t/bc1/d.raw", path: "bc1/d.raw", format: "raw",
                                    virtualSize: 10, copied: 0, already: true)
        let answer = LiveCopyAnswer(moved: [moved, already], domain: "bc1",
                                    share: ShareFacts(pool: nil, server: "198.18.0.1", export: "/var/lib/libvirt/shared-images", attach: .libnfs, target: nil),
                                    bytes: 458_752, changed: true, attached: true, saved: "/var/lib/storagectl/domains/u.previous.xml", seconds: 0.4)
        let (data, ok) = LiveCopyRequest.encodeAnswer(answer)
        #expect(data.count == 2 && data[0]["copied"] == "458752" && data[1]["already"] == "yes")
        #expect(ok["disks"] == "2" && ok["attached"] == "yes" && ok["changed"] == "yes" && ok["dir"] == nil)
        #expect(try LiveCopyRequest.decodeAnswer(data: data, ok: ok) == answer)
        let local = LiveCopyAnswer(moved: [], domain: "bc1", share: ShareFacts(pool: "p", server: "s", export: "/e", attach: .mount, target: "/t"),
                                   bytes: 0, changed: false, attached: false, dir: "/var/lib/libvirt/images")
        let (ld, lok) = LiveLocalizeRequest.encodeAnswer(local)
        #expect(lok["attached"] == nil && lok["saved"] == nil && lok["dir"] == "/var/lib/libvirt/images")
        #expect(try LiveLocalizeRequest.decodeAnswer(data: ld, ok: lok) == local)
        for a in [LiveAbortRequest.Answer(aborted: true, pivoted: false), LiveAbortRequest.Answer(aborted: false, pivoted: true)] {
            #expect(try LiveAbortRequest.Answer(answer: "LIVE-ABORT", a.encoded()) == a)
        }
        #expect(try LiveAbortRequest.Answer(answer: "LIVE-ABORT", ["aborted": "no"]) == .init(aborted: false, pivoted: false))
    }
}
