import AgentProtocol

/// `PING`: answered by every agent at once.
public struct Ping: AgentVerb, Equatable {
    public static let verb = "PING"
    public var changesHost: Bool { false }
    public static let keys: [String] = []
    public init() {}
    public init(decoding reader: FieldReader) throws(AgentError) {}
    public func encode(into writer: inout FieldWriter) {}

    public struct Answer: AgentRecord, Equatable {
        public var agent: String
        public var host: String
        public init(agent: String, host: String) { self.agent = agent; self.host = host }
        public init(decoding r: FieldReader) throws(AgentError) {
            agent = try r.string("agent")
            host = try r.string("host")
        }
        public func encode(into w: inout FieldWriter) {
            w.add("agent", agent)
            w.add("host", host)
        }
    }
}

/// One dependency an agent checked for `HEALTH`:
/// `DATA check=NAME state=ok|fail detail=... [facts]`.
public struct HealthCheck: Sendable, Equatable, AgentRecord {
    public var name: String
    public var ok: Bool
    public var detail: String
    /// Extra facts (for example `libvirt-version=9.0.0`).
    public var facts: Fields

    public init(_ name: String, ok: Bool, detail: String, facts: Fields = Fields()) {
        self.name = name
        self.ok = ok
        self.detail = detail
        self.facts = facts
    }

    public init(decoding r: FieldReader) throws(AgentError) {
        name = try r.string("check")
        let state = try r.string("state")
        ok = state == "ok"
        detail = try r.optional("detail") ?? ""
        var facts = Fields()
        for p in r.fields where !["check", "state", "detail"].contains(p.key) { facts.append(p.key, p.value) }
        self.facts = facts
    }

    public func encode(into w: inout FieldWriter) {
        w.add("check", name)
        w.add("state", ok ? "ok" : "fail")
        w.add("detail", detail)
        w.add(contentsOf: facts)
    }
}

/// `HEALTH`: one `DATA` per dependency checked, then who the agent is and whether every
/// check passed.
public struct HealthQuery: AgentVerb, Equatable {
    public static let verb = "HEALTH"
    public var changesHost: Bool { false }
    public static let keys: [String] = []
    public init() {}
    public init(decoding reader: FieldReader) throws(AgentError) {}
    public func encode(into writer: inout FieldWriter) {}

    public struct Answer: Sendable, Equatable {
        public var checks: [HealthCheck]
        public var agent: String
        public var version: String
        public var host: String
        public var uptimeSeconds: Int
        public var healthy: Bool { checks.allSatisfy(\.ok) }
        public var failed: [String] { checks.filter { !$0.ok }.map(\.name) }

        public init(checks: [HealthCheck], agent: String, version: String, host: String, uptimeSeconds: Int) {
            self.checks = checks
            self.agent = agent
            self.version = version
            self.host = host
            self.uptimeSeconds = uptimeSeconds
        }
    }

    public static func decodeAnswer(data: [Fields], ok: Fields) throws(AgentError) -> Answer {
        let r = FieldReader(answer: verb, ok)
        var answer = Answer(checks: try rows(data, verb: verb, as: HealthCheck.self), agent: try r.string("agent"),
                            version: try r.string("version"), host: try r.string("host"), uptimeSeconds: try r.int("uptime"))
        // An agent that says degraded without naming a failed DATA check is still degraded.
        if try r.string("health") != "ok", answer.healthy {
            answer.checks.append(HealthCheck("health", ok: false, detail: "the agent reports health=\(ok["health"] ?? "")"))
        }
        return answer
    }

    public static func encodeAnswer(_ a: Answer) -> (data: [Fields], ok: Fields) {
        var w = FieldWriter()
        w.add("agent", a.agent)
        w.add("version", a.version)
        w.add("host", a.host)
        w.add("uptime", a.uptimeSeconds)
        w.add("health", a.healthy ? "ok" : "degraded")
        if !a.healthy { w.addList("failed", a.failed) }
        return (a.checks.map { $0.encoded() }, w.fields)
    }
}
