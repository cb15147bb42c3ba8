// storagectl-agent-bench: request latency of an agent under concurrent connections, through
// the project's own AgentClient (the client storagectl uses). Not installed; not a user tool.
// Driven by Tests/Lab/bench-agents (`make bench`). Usage:
//   storagectl-agent-bench --endpoint tls:HOST:PORT [--verb PING|HEALTH|EXPORT]
//       [--requests N] [--connections N] [--path-prefix P --client HOST]
// Every connection is opened (TCP, TLS, HELLO) before the clock starts; the requests are then
// spread evenly over the connections, each connection sending its next request as soon as
// the previous one is answered. EXPORT sends path=P-<i> client=HOST, one new path a request.
// Prints one JSON object: counts, wall seconds, throughput, latency percentiles in ms.
import AgentProtocol
import AgentRuntime
#if canImport(Glibc)
import Glibc
#endif

func complain(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
func usage() -> Never {
    complain("usage: storagectl-agent-bench --endpoint E [--verb PING|HEALTH|EXPORT] [--requests N] [--connections N] [--path-prefix P --client HOST]")
    exit(2)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var endpointText = "", verb = "PING", requests = 1000, connections = 50
var pathPrefix = "", exportClient = ""
while let argument = arguments.first {
    arguments.removeFirst()
    func value() -> String { guard let v = arguments.first else { usage() }; arguments.removeFirst(); return v }
    switch argument {
    case "--endpoint": endpointText = value()
    case "--verb": verb = value()
    case "--requests": requests = Int(value()) ?? { usage() }()
    case "--connections": connections = Int(value()) ?? { usage() }()
    case "--path-prefix": pathPrefix = value()
    case "--client": exportClient = value()
    default: usage()
    }
}
guard !endpointText.isEmpty, requests > 0, connections > 0, ["PING", "HEALTH", "EXPORT"].contains(verb) else { usage() }
if verb == "EXPORT" && (pathPrefix.isEmpty || exportClient.isEmpty) { usage() }
let endpoint: Endpoint
do { endpoint = try Endpoint(parsing: endpointText) } catch { complain("storagectl-agent-bench: \(error.message)"); exit(2) }

/// What to send: the verb, and for EXPORT the path prefix and the client.
struct RequestPlan: Sendable {
    let verb: String, pathPrefix: String, client: String
    func request(_ index: Int) -> Request {
        guard verb == "EXPORT" else { return Request(verb) }
        var fields = Fields()
        fields.append("path", "\(pathPrefix)-\(index)")
        fields.append("client", client)
        return Request(verb, fields)
    }
}
let plan = RequestPlan(verb: verb, pathPrefix: pathPrefix, client: exportClient)

/// Latencies in nanoseconds of one connection's requests, and the failures it saw.
struct Outcome: Sendable {
    var latencies: [Int64] = []
    var errors: [String] = []
}

/// Holds every connection at the start line until all are open.
actor Barrier {
    let count: Int
    var arrived = 0
    var waiting: [CheckedContinuation<Void, Never>] = []
    var started: ContinuousClock.Instant?
    init(count: Int) { self.count = count }
    func arrive() async {
        arrived += 1
        if arrived == count {
            started = .now
            for w in waiting { w.resume() }
            waiting = []
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }
}

func nanoseconds(_ d: Duration) -> Int64 { d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000 }

let barrier = Barrier(count: connections)
let share = (0..<connections).map { c in Array(stride(from: c, to: requests, by: connections)) }
let outcomes: [Outcome] = await withTaskGroup(of: Outcome.self) { group in
    for indices in share {
        group.addTask {
            var outcome = Outcome()
            do {
                try await AgentClient.withSession(to: endpoint) { session in
                    await barrier.arrive()
                    for index in indices {
                        let t0 = ContinuousClock.now
                        let response = try await session.call(plan.request(index))
                        outcome.latencies.append(nanoseconds(ContinuousClock.now - t0))
                        if case .failure(let e) = response.result { outcome.errors.append("\(e.code.rawValue): \(e.message)") }
                    }
                }
            } catch {
                outcome.errors.append("\(error)")
                await barrier.arrive()   // never hold the others back
            }
            return outcome
        }
    }
    var all: [Outcome] = []
    for await o in group { all.append(o) }
    return all
}
let finished = ContinuousClock.now
let wall = await barrier.started.map { Double(nanoseconds(finished - $0)) / 1e9 } ?? 0
let latencies = outcomes.flatMap(\.latencies).sorted()
let errors = outcomes.flatMap(\.errors)
func percentile(_ p: Double) -> Double {
    guard !latencies.isEmpty else { return 0 }
    let rank = Int((p / 100 * Double(latencies.count)).rounded(.up)) - 1
    return Double(latencies[min(max(rank, 0), latencies.count - 1)]) / 1e6
}
func fixed(_ x: Double, _ digits: Int = 3) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int64((x * scale).rounded())
    let frac = String(abs(n) % Int64(scale))
    return "\(n / Int64(scale))." + String(repeating: "0", count: digits - frac.count) + frac
}
func quoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where u.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}
let mean = latencies.isEmpty ? 0 : Double(latencies.reduce(0, +)) / Double(latencies.count) / 1e6
print("{\"endpoint\": \(quoted(endpoint.description)), \"verb\": \(quoted(verb)), \"requests\": \(requests), "
      + "\"connections\": \(connections), \"answered\": \(latencies.count), \"errors\": \(errors.count), "
      + "\"wall_s\": \(fixed(wall, 4)), \"per_s\": \(fixed(wall > 0 ? Double(latencies.count) / wall : 0, 1)), "
      + "\"mean_ms\": \(fixed(mean)), \"p50_ms\": \(fixed(percentile(50))), \"p90_ms\": \(fixed(percentile(90))), "
      + "\"p99_ms\": \(fixed(percentile(99))), \"max_ms\": \(fixed(percentile(100))), "
      + "\"first_error\": \(errors.first.map(quoted) ?? "null")}")
exit(errors.isEmpty ? 0 : 1)
