import AgentProtocol

/// One dependency an agent checked for `HEALTH`.
public struct HealthCheck: Sendable, Equatable {
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

    /// `DATA check=NAME state=ok|fail detail=... [facts]`
    public var fields: Fields {
        var f: Fields = ["check": name, "state": ok ? "ok" : "fail", "detail": detail]
        f.append(contentsOf: facts)
        return f
    }

    public init?(fields: Fields) {
        guard let name = fields["check"], let state = fields["state"] else { return nil }
        var facts = Fields()
        for p in fields where !["check", "state", "detail"].contains(p.key) { facts.append(p.key, p.value) }
        self.init(name, ok: state == "ok", detail: fields["detail"] ?? "", facts: facts)
    }
}

public enum Health {
    /// Streams each check as `DATA` and returns the `OK` fields of a `HEALTH` answer:
    /// agent, version, host, uptime and `health=ok` only if every check passed.
    public static func answer(_ checks: [HealthCheck], context: RequestContext, reply: ReplyStream) async throws -> Fields {
        for check in checks { try await reply.data(check.fields) }
        let failed = checks.filter { !$0.ok }.map(\.name)
        var ok: Fields = [
            "agent": context.identity.agent,
            "version": context.identity.version,
            "host": context.identity.host,
            "uptime": String(context.identity.uptimeSeconds),
            "health": failed.isEmpty ? "ok" : "degraded",
        ]
        if !failed.isEmpty { ok.append("failed", failed.joined(separator: ",")) }
        return ok
    }
}
