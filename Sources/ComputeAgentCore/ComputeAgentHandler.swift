import AgentProtocol
import AgentRuntime

/// Answers whether the hypervisor is usable; the seam between the handler and libvirt.
public protocol HypervisorProbe: Sendable {
    func check() async -> HealthCheck
}

/// The compute agent's verbs.
public struct ComputeAgentHandler: RequestHandler {
    public let configuration: ComputeAgentConfiguration
    let hypervisor: any HypervisorProbe

    public init(configuration: ComputeAgentConfiguration, hypervisor: any HypervisorProbe) {
        self.configuration = configuration
        self.hypervisor = hypervisor
    }

    public var verbs: [String] { ["HEALTH"] }

    public func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case "HEALTH":
            return try await Health.answer([await hypervisor.check()], context: context, reply: reply)
        default:
            throw unknownVerb(request.verb)
        }
    }
}
