import AgentAPI
import AgentProtocol
import AgentRuntime
import BlockingIO
import NetProbe

// PORT-LISTEN (destination) and PORT-PROBE (source): the migration gate's "migration
// ports" and the bandwidth half of "dirty rate" (docs/protocol.md, the probe exchange).
extension ComputeAgentHandler {
    /// The agent's probe listeners: at most 4 open at once (each holds a port of the
    /// migration range and a thread for up to 30 s); a fifth PORT-LISTEN is `busy`.
    static let probeListeners = ProbeListeners(limit: 4, name: "compute-listen")
    /// PORT-PROBE's connects and transfers: blocking poll(2) loops, bounded by the
    /// request's seconds, on threads of their own (not ComputeWork's libvirt threads).
    static let probeWork = BlockingExecutor(name: "compute-probe", threadCount: 2)

    /// Decodes and authorizes PORT-LISTEN (admin: it opens a port), then answers it.
    func portListen(_ request: Request, context: RequestContext) throws -> Fields {
        let listen = try PortListenRequest(request)
        try context.authorize(listen)
        return try portListen(listen).encoded()
    }

    /// Decodes and authorizes PORT-PROBE (reader), then answers it.
    func portProbe(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        let probe = try PortProbeRequest(request)
        try context.authorize(probe)
        return try await reply.answer(PortProbeRequest.self, try await portProbe(probe))
    }

    /// `PORT-LISTEN`: opens a listener in the range and answers its port at once; the
    /// listener outlives the request and closes itself after `seconds`. Changes the host
    /// (opens a port): admin only, authorized by the caller.
    func portListen(_ request: PortListenRequest) throws(AgentError) -> PortListenRequest.Answer {
        do {
            let port = try Self.probeListeners.start(range: request.low...request.high, lifetime: .seconds(request.seconds))
            return PortListenRequest.Answer(port: port, seconds: request.seconds)
        } catch {
            throw Self.agentError(error)
        }
    }

    /// `PORT-PROBE`: resolves `host` (bounded), connects to every `port` at once (each at
    /// most `seconds`), then, with `bandwidth-port=`, runs the probe exchange for at most
    /// `seconds` more. A port that does not answer is a row with `reachable=no`, a failed
    /// bandwidth probe is `bandwidth-error=`; only an invalid or unresolvable host fails
    /// the request.
    func portProbe(_ request: PortProbeRequest) async throws(AgentError) -> PortProbeRequest.Answer {
        let addresses: [ProbeAddress]
        do {
            addresses = try await HostResolver.resolve(request.host, timeout: .seconds(3))
        } catch {
            throw Self.agentError(error)
        }
        // The first address, as libvirt's own connection would try first.
        let address = addresses[0]
        let seconds = Duration.seconds(request.seconds)
        do {
            return try await Self.probeWork.run { () -> PortProbeRequest.Answer in
                let reach = PortProber.reach(address, ports: request.ports, timeout: seconds)
                var answer = PortProbeRequest.Answer(ports: reach.map {
                    PortReach(port: $0.port, reachable: $0.reachable, milliseconds: $0.milliseconds, error: $0.error)
                })
                if let port = request.bandwidthPort {
                    do {
                        let b = try PortProber.bandwidth(address, port: port, bytes: request.bytes, sendFor: seconds,
                                                         connectTimeout: min(seconds, .seconds(2)))
                        answer.bandwidthBytes = b.confirmed
                        answer.bandwidthMilliseconds = b.milliseconds
                    } catch {
                        answer.bandwidthError = (error as? NetProbeError)?.message ?? "\(error)"
                    }
                }
                return answer
            }
        } catch {
            throw ErrorMapping.agentError(error)
        }
    }

    /// The probes' failures as protocol errors (the one mapping of `NetProbeError`).
    static func agentError(_ e: NetProbeError) -> AgentError {
        let code: AgentError.Code
        switch e.kind {
        case .invalidHost: code = .invalidArgument
        case .resolve: code = .notFound
        case .timeout: code = .timeout
        case .noFreePort: code = .unavailable
        case .busy: code = .busy
        case .system, .protocolViolation: code = .unavailable
        }
        return AgentError(code, e.message, cause: e)
    }
}
