import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation

/// `storagectl call HOST VERB [key=value ...]`: one raw protocol request, for
/// troubleshooting and scripts.
public struct CallCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Send one protocol request to an agent and print its answer.",
        discussion: """
            HOST is a host of the inventory (or use --endpoint). Values are given unencoded \
            (key=value, one argument each) and percent-encoded on the wire. Every answer line \
            is printed as it arrives (DATA, PROGRESS, then OK or ERR, values decoded); with \
            --json, one JSON document at the end. The exit status is the one of the ERR code \
            (see storagectl --help), 0 for OK.

            Example: storagectl call cargo-bay EXPORTS
            """)

    @OptionGroup public var global: GlobalOptions

    @Option(name: .customLong("endpoint"), help: ArgumentHelp("Talk to this endpoint instead of an inventory host (unix:PATH, tcp:HOST:PORT, tls:HOST:PORT).", valueName: "endpoint"))
    public var endpoint: String?

    @Flag(name: .customLong("json"), help: "Print one JSON document instead of the lines.")
    public var json = false

    @Argument(help: ArgumentHelp("The inventory host (omit with --endpoint), the verb, then key=value arguments.", valueName: "host verb key=value"))
    public var words: [String] = []

    public init() {}

    /// Splits the words into a target and a request; pure, for tests.
    static func request(from words: [String], hasEndpoint: Bool) throws(AgentError) -> (host: String?, request: Request) {
        var rest = words[...]
        var host: String?
        if !hasEndpoint {
            guard let first = rest.popFirst() else { throw .invalidArgument("name a host of the inventory, or pass --endpoint") }
            host = first
        }
        guard let verb = rest.popFirst() else { throw .invalidArgument("name a verb, for example HEALTH") }
        var fields = Fields()
        for word in rest {
            guard let eq = word.firstIndex(of: "="), eq != word.startIndex else {
                throw .invalidArgument("'\(word)' is not key=value")
            }
            fields.append(String(word[..<eq]), String(word[word.index(after: eq)...]))
        }
        // Round-trip through the wire grammar so a bad verb or key is refused here.
        let request = try Request.parse(Request(verb, fields).line)
        return (host, request)
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let (hostName, request) = try Self.request(from: words, hasEndpoint: endpoint != nil)
            var tls = TLSFiles.libvirtClient
            let target: Endpoint
            if let endpoint {
                target = try Endpoint(parsing: endpoint)
                if FileManager.default.fileExists(atPath: global.config) { tls = try Inventory.tlsFiles(path: global.config) }
            } else {
                let inventory = try Inventory.load(path: global.config)
                tls = inventory.tls
                guard let host = inventory.hosts.first(where: { $0.name == hostName }) else {
                    throw AgentError(.notFound, "no host '\(hostName ?? "")' in \(global.config); known: \(inventory.hosts.map(\.name).joined(separator: ", "))")
                }
                target = host.agent
            }
            let json = self.json
            let response = try await AgentClient.withSession(to: target, connectTimeout: global.timeoutDuration, tls: tls) { session in
                try await session.call(request, timeout: .seconds(24 * 3600)) { line in
                    if !json {
                        print(Self.readable(line))
                        fflush(nil)  // lines as they arrive, also into a pipe or file
                    }
                }
            }
            if json { print(try Self.json(response)) }
            if case .failure(let e) = response.result { throw ExitCode(ExitStatus.code(for: e.code)) }
        }
    }

    /// A response line with its values decoded, for people.
    static func readable(_ line: ResponseLine) -> String {
        func render(_ head: String, _ f: Fields) -> String {
            ([head] + f.map { "\($0.key)=\($0.value.contains(" ") ? "\"\($0.value)\"" : $0.value)" }).joined(separator: " ")
        }
        switch line {
        case .data(let f): return render("DATA", f)
        case .progress(let f): return render("PROGRESS", f)
        case .ok(let f): return render("OK", f)
        case .err(let e):
            var f: Fields = ["code": e.code.rawValue, "message": e.message]
            f.append(contentsOf: e.details)
            return render("ERR", f)
        }
    }

    static func json(_ response: Response) throws -> String {
        func object(_ f: Fields) -> [String: Any] {
            var o: [String: Any] = [:]
            for p in f {
                if let existing = o[p.key] {
                    o[p.key] = (existing as? [String] ?? [existing as! String]) + [p.value]
                } else { o[p.key] = p.value }
            }
            return o
        }
        var doc: [String: Any] = ["data": response.data.map(object), "progress_lines": response.progress.count]
        switch response.result {
        case .success(let f): doc["ok"] = object(f)
        case .failure(let e): doc["error"] = ["code": e.code.rawValue, "message": e.message] as [String: Any]
        }
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
