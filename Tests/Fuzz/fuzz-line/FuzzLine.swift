// fuzz-line: the agent line protocol as both ends read it (docs/fuzzing.md).
//
// The input is split at `\n` into lines, as `LineFrameDecoder` frames them. Each line is
// read as a request (agent side: `Request.parse`, `HELLO`, then every verb's typed
// decoder), as a response line (client side: `ResponseLine.parse`; the lines up to each
// `OK` form a response that every verb's typed answer decoder reads) and as one
// percent-encoded value. Besides "never traps", it checks the round trips the protocol
// relies on: what was parsed renders to a line that parses to the same value, and what a
// typed decoder accepted encodes to fields it accepts again, unchanged.
import AgentAPI
import AgentProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLine(_ start: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    var data: [Fields] = []
    var progress: [Fields] = []
    for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init) {
        request(line)
        if let terminal = responseLine(line, data: &data, progress: &progress) {
            answers(Response(data: data, progress: progress, result: terminal))
            data = []
            progress = []
        }
        value(line)
    }
    return 0
}

private func request(_ line: [UInt8]) {
    guard let request = try? Request.parse(line) else { return }
    check((try? Request.parse(request.line)) == request, "request round trip", line)
    _ = try? Hello.negotiate(request)
    for verb in verbs { verb.request(request) }
}

private func responseLine(_ line: [UInt8], data: inout [Fields], progress: inout [Fields]) -> Result<Fields, AgentError>? {
    guard let parsed = try? ResponseLine.parse(line) else { return nil }
    check((try? ResponseLine.parse(parsed.line)) == parsed, "response line round trip", line)
    switch parsed {
    case .data(let f): data.append(f)
    case .progress(let f):
        progress.append(f)
        for verb in verbs { _ = TransferProgress.from(parsed, verb: verb.name) }
    case .ok(let f): return .success(f)
    case .err(let e): return .failure(e)
    }
    return nil
}

private func answers(_ response: Response) {
    for verb in verbs { verb.answer(response) }
}

private func value(_ line: [UInt8]) {
    guard let decoded = try? PercentEncoding.decode(line, key: "fuzz") else { return }
    let encoded = PercentEncoding.encode(decoded)
    check((try? PercentEncoding.decode(Array(encoded.utf8), key: "fuzz")) == decoded, "percent-encoding round trip", line)
}

/// One verb's typed request and answer, erased so every verb runs on every input.
private struct VerbProbe: Sendable {
    let name: String
    let request: @Sendable (Request) -> Void
    let answer: @Sendable (Response) -> Void

    init<V: AgentVerb & Equatable>(_ type: V.Type) where V.Answer: Equatable {
        name = V.verb
        request = { request in
            // The agent decodes whatever verb the line names with the handler it routes to;
            // decode with every verb's type so each decoder sees every field mix.
            guard let typed = try? V(request) else { return }
            check((try? V(typed.request)) == typed, "\(V.verb) request round trip", Array(request.line.utf8))
        }
        answer = { response in
            guard let typed = try? V.answer(response) else { return }
            let (data, ok) = V.encodeAnswer(typed)
            check((try? V.decodeAnswer(data: data, ok: ok)) == typed, "\(V.verb) answer round trip",
                  Array(((data.map { ResponseLine.data($0).line }) + [ResponseLine.ok(ok).line]).joined(separator: "\n").utf8))
        }
    }
}

private let verbs: [VerbProbe] = [
    VerbProbe(Ping.self), VerbProbe(HealthQuery.self),
    VerbProbe(ExportRequest.self), VerbProbe(UnexportRequest.self), VerbProbe(ExportsQuery.self),
    VerbProbe(SpaceQuery.self), VerbProbe(ChecksumRequest.self),
    VerbProbe(DomainQuery.self), VerbProbe(DomainsQuery.self), VerbProbe(PoolEnsureRequest.self),
    VerbProbe(CopyRequest.self), VerbProbe(AdoptRequest.self), VerbProbe(RestoreRequest.self),
    VerbProbe(VerifyRequest.self), VerbProbe(LocalizeRequest.self),
]

/// A broken invariant is a finding: trap, so libFuzzer keeps the input.
private func check(_ condition: Bool, _ what: String, _ input: [UInt8]) {
    if !condition {
        fatalError("\(what) failed for \(String(decoding: input.prefix(512), as: UTF8.self).debugDescription)")
    }
}
