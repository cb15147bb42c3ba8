import AgentProtocol
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// A client connection to one agent, valid inside `AgentClient.withSession`.
///
/// Requests on one session run one at a time; the session is not Sendable and must stay
/// in the task that opened it.
public final class AgentSession {
    typealias Connection = NIOAsyncChannel<InboundLine, ByteBuffer>
    let endpoint: Endpoint
    let channel: any Channel
    var iterator: NIOAsyncChannelInboundStream<InboundLine>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    /// The `OK` fields of the `HELLO` exchange (`version`, `agent`, `host`, `agent-version`).
    public internal(set) var hello = Fields()

    init(endpoint: Endpoint, channel: any Channel, inbound: NIOAsyncChannelInboundStream<InboundLine>,
         outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.endpoint = endpoint
        self.channel = channel
        self.iterator = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// Sends one request and collects its response. `onLine` sees every `DATA` and
    /// `PROGRESS` line as it arrives. An `ERR` answer is returned in `Response.result`;
    /// transport failures throw `AgentError` (`unavailable`, `timeout`).
    public func call(_ request: Request, timeout: Duration = .seconds(30),
                     onLine: ((ResponseLine) -> Void)? = nil) async throws(AgentError) -> Response {
        let timedOut = NIOLockedValueBox(false)
        let channel = self.channel
        let nanos = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(nanos)) {
            timedOut.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        var response = Response(result: .failure(AgentError(.internal, "no answer")))
        do {
            // An agent that refuses a peer (permission-denied, busy) writes its ERR and
            // closes at once: the write may then fail, but that answer is still to be read.
            var writeError: (any Error)?
            do { try await outbound.write(ByteBuffer(string: request.line + "\n")) } catch { writeError = error }
            while true {
                let next: InboundLine?
                do { next = try await iterator.next() } catch { throw writeError ?? error }
                guard let event = next else {
                    if let writeError { throw writeError }
                    throw AgentError(.unavailable, "\(endpoint) closed the connection before answering \(request.verb)")
                }
                guard case .line(let bytes) = event else {
                    throw AgentError(.internal, "\(endpoint) sent a line longer than \(Wire.maxLineBytes) bytes")
                }
                let line = try ResponseLine.parse(bytes)
                onLine?(line)
                switch line {
                case .data(let f): response.data.append(f)
                case .progress(let f): response.progress.append(f)
                case .ok(let f): response.result = .success(f); return response
                case .err(let e): response.result = .failure(e); return response
                }
            }
        } catch {
            if timedOut.withLockedValue({ $0 }) {
                throw AgentError(.timeout, "\(endpoint) did not answer \(request.verb) within \(timeout)")
            }
            throw AgentClient.classify(error, endpoint: endpoint)
        }
    }

    /// Sends a request and returns its `OK` fields, or throws the agent's `ERR`.
    public func ok(_ request: Request, timeout: Duration = .seconds(30)) async throws(AgentError) -> Fields {
        try await call(request, timeout: timeout).get()
    }
}

/// Opens sessions to agents.
public enum AgentClient {
    /// Connects, exchanges `HELLO`, runs `body`, and closes the connection.
    public static func withSession<T>(
        to endpoint: Endpoint,
        connectTimeout: Duration = .seconds(5),
        tls: TLSFiles = .libvirtClient,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (AgentSession) async throws -> T
    ) async throws -> T {
        let connection: AgentSession.Connection
        let ms = max(1, connectTimeout.components.seconds * 1000 + connectTimeout.components.attoseconds / 1_000_000_000_000_000)
        let bootstrap = ClientBootstrap(group: eventLoopGroup).connectTimeout(.milliseconds(ms))
        var tlsContext: NIOSSLContext?
        var sniHost: String?
        if case .tls(let host, _) = endpoint {
            tlsContext = try tls.clientContext()
            sniHost = serverHostname(for: host)
        }
        let context = tlsContext, serverHostname = sniHost
        let initializer: @Sendable (any Channel) -> EventLoopFuture<AgentSession.Connection> = { channel in
            channel.eventLoop.makeCompletedFuture {
                if let context {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                }
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(LineFrameDecoder(maxLineBytes: Wire.maxLineBytes)))
                return try AgentSession.Connection(wrappingChannelSynchronously: channel)
            }
        }
        do {
            switch endpoint {
            case .tcp(let host, let port), .tls(let host, let port):
                connection = try await bootstrap.connect(host: host, port: port, channelInitializer: initializer)
            case .unix(let path):
                connection = try await bootstrap.connect(unixDomainSocketPath: path, channelInitializer: initializer)
            }
        } catch {
            throw classify(error, endpoint: endpoint)
        }
        return try await connection.executeThenClose { inbound, outbound in
            let session = AgentSession(endpoint: endpoint, channel: connection.channel, inbound: inbound, outbound: outbound)
            session.hello = try await session.ok(Hello.request(), timeout: connectTimeout)
            return try await body(session)
        }
    }

    /// The name to send as SNI and to check the agent's certificate against: the host
    /// name dialled, or nil for an IPv4 or IPv6 address (NIOSSL refuses an address as
    /// SNI, and checks the certificate's IP SANs against the address connected to).
    static func serverHostname(for host: String) -> String? {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1 { return nil }
        return host
    }

    /// Turns transport errors into the error vocabulary, with the endpoint named.
    static func classify(_ error: any Error, endpoint: Endpoint) -> AgentError {
        if let e = error as? AgentError { return e }
        if let e = error as? NIOSSLError {
            return AgentError(.unavailable, "TLS with \(endpoint) failed: \(e); check that both sides use certificates from the same CA (docs/install.md)")
        }
        if let e = error as? BoringSSLError {
            return AgentError(.unavailable, "TLS with \(endpoint) failed: \(e); check the certificates (docs/install.md)")
        }
        if let io = error as? IOError {
            let reason = String(cString: strerror(io.errnoCode))
            return AgentError(.unavailable, "cannot reach agent at \(endpoint): \(reason); is the agent's socket unit active on that host?")
        }
        if let c = error as? ChannelError {
            switch c {
            case .connectTimeout: return AgentError(.timeout, "connecting to \(endpoint) timed out")
            default: return AgentError(.unavailable, "connection to \(endpoint) failed: \(c)")
            }
        }
        if let n = error as? NIOConnectionError {
            let reasons = Set(n.connectionErrors.map { e -> String in
                if let io = e.error as? IOError { return String(cString: strerror(io.errnoCode)) }
                return "\(e.error)"
            }).sorted().joined(separator: "; ")
            if n.dnsAError != nil || n.dnsAAAAError != nil, n.connectionErrors.isEmpty {
                return AgentError(.unavailable, "cannot resolve host of \(endpoint)")
            }
            if n.connectionErrors.contains(where: { if case ChannelError.connectTimeout = $0.error { return true } else { return false } }) {
                return AgentError(.timeout, "connecting to \(endpoint) timed out")
            }
            return AgentError(.unavailable, "cannot reach agent at \(endpoint): \(reasons); is the agent's socket unit active on that host?")
        }
        return AgentError(.unavailable, "connection to \(endpoint) failed: \(error)")
    }
}
