import AgentAPI
import AgentProtocol

public enum Health {
    /// Streams each check as `DATA` and returns the `OK` fields of a `HEALTH` answer:
    /// agent, version, host, uptime and `health=ok` only if every check passed. A peer
    /// below the reader role gets the `OK` line only.
    public static func answer(_ checks: [HealthCheck], context: RequestContext, reply: ReplyStream) async throws -> Fields {
        let identity = context.identity
        let answer = HealthQuery.Answer(checks: checks, agent: identity.agent, version: identity.version, host: identity.host,
                                        uptimeSeconds: Int(identity.uptimeSeconds))
        guard context.role >= .reader else {
            // The summary: whether the agent is healthy and which checks failed, by name;
            // no details (paths, versions) for a peer that may not read.
            return HealthQuery.encodeAnswer(answer).ok
        }
        return try await reply.answer(HealthQuery.self, answer)
    }
}
