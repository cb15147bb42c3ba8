import AgentAPI
import AgentProtocol

public enum Health {
    /// Streams each check as `DATA` and returns the `OK` fields of a `HEALTH` answer:
    /// agent, version, host, uptime and `health=ok` only if every check passed.
    public static func answer(_ checks: [HealthCheck], context: RequestContext, reply: ReplyStream) async throws -> Fields {
        let identity = context.identity
        return try await reply.answer(HealthQuery.self, HealthQuery.Answer(
            checks: checks, agent: identity.agent, version: identity.version, host: identity.host,
            uptimeSeconds: Int(identity.uptimeSeconds)))
    }
}
