import AgentProtocol
import CAgentSupport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Where a server takes connections from.
public enum Listener: Sendable, CustomStringConvertible {
    /// A socket passed by systemd.
    case activated(ActivatedSocket)
    /// An address to bind when started by hand (`--listen`).
    case endpoint(Endpoint)

    public var description: String {
        switch self {
        case .activated(let s): return "systemd fd \(s.fd) (\(s.name))"
        case .endpoint(let e): return e.description
        }
    }

    /// unix sockets check peers with SO_PEERCRED; systemd sockets named `tls`
    /// (`FileDescriptorName=tls`) and `tls:` endpoints speak mutual TLS.
    public var transport: Transport {
        switch self {
        case .activated(let s): return s.isUnix ? .unix : (s.name == "tls" ? .tls : .tcp)
        case .endpoint(.unix): return .unix
        case .endpoint(.tcp): return .tcp
        case .endpoint(.tls): return .tls
        }
    }
}

/// Limits a server enforces on every connection.
public struct ServerLimits: Sendable {
    /// Longest request line; longer ones get `ERR invalid-argument` and are discarded.
    public var maxLineBytes = Wire.maxLineBytes
    /// A connection that sends nothing for this long outside a request is closed.
    public var readTimeout: TimeAmount = .seconds(30)
    /// Connections of one listener above this get `ERR busy` and are closed (each
    /// listener has its own budget: TCP clients cannot use up the unix socket's).
    public var maxConnections = 1024
    /// Exit after this long with no connection (socket activation brings us back).
    public var idleExit: Duration?

    public init() {}
}

/// The agent line server: protocol v1 over the given listeners.
///
/// - Peers on unix sockets must be root (SO_PEERCRED); others get `ERR permission-denied`.
/// - Sends `READY=1` once every listener is bound and `STOPPING=1` when shutdown begins.
/// - On graceful shutdown (SIGTERM through ServiceGroup, or the idle exit) it stops
///   accepting, closes idle connections at once, lets in-flight requests finish, and
///   returns.
public final class AgentServer: Service, Sendable {
    let listeners: [Listener]
    let limits: ServerLimits
    let handler: any RequestHandler
    let identity: AgentIdentity
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    let tls: NIOSSLContext?
    let tracker: ConnectionTracker
    /// The clock time of the last read-timeout/idle-exit check (tests wait on it).
    let lastTimerCheck = NIOLockedValueBox<Duration?>(nil)
    let serverChannels = NIOLockedValueBox<[any Channel]>([])
    let shutdownOnce = NIOLockedValueBox(false)
    let policy: AccessPolicy
    let acceptedCount = NIOLockedValueBox(0)

    /// Connections accepted since the server started (served or refused).
    public var connectionsAccepted: Int { acceptedCount.withLockedValue { $0 } }

    public init(
        listeners: [Listener],
        limits: ServerLimits = ServerLimits(),
        identity: AgentIdentity,
        handler: any RequestHandler,
        logger: Logger,
        tls: NIOSSLContext? = nil,
        policy: AccessPolicy = AccessPolicy(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        clock: ServerClock = .continuous
    ) {
        self.tracker = ConnectionTracker(clock: clock)
        self.tls = tls
        self.policy = policy
        self.listeners = listeners
        self.limits = limits
        self.identity = identity
        self.handler = handler
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
    }

    typealias Connection = NIOAsyncChannel<InboundLine, ByteBuffer>
    typealias Accepted = (connection: Connection, entry: ConnectionTracker.Entry)

    public func run() async throws {
        var bound: [(NIOAsyncChannel<Accepted, Never>, Transport)] = []
        for listener in listeners {
            if listener.transport == .tls, tls == nil {
                throw AgentError(.invalidArgument, "listener \(listener) speaks TLS but no certificates were loaded")
            }
            bound.append((try await bind(listener), listener.transport))
        }
        serverChannels.withLockedValue { $0 = bound.map { $0.0.channel } }
        let where_ = listeners.map(\.description).joined(separator: ", ")
        logger.info("serving", metadata: ["listeners": "\(where_)", "agent": "\(identity.agent)"])
        Systemd.notify("READY=1\nSTATUS=serving on \(where_)")

        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { timers in
                // The timers run until every connection is done, then are cancelled.
                timers.addTask { await self.timerLoop() }
                try await withThrowingDiscardingTaskGroup { group in
                    for (index, (server, transport)) in bound.enumerated() {
                        group.addTask { try await self.acceptLoop(server, transport: transport, budget: index) }
                    }
                }
                timers.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginShutdown(reason: "signal")
        }
        logger.info("stopped")
    }

    /// Stops accepting and closes idle connections; in-flight requests finish.
    public func beginShutdown(reason: String) {
        let first = shutdownOnce.withLockedValue { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        logger.info("shutting down", metadata: ["reason": "\(reason)"])
        Systemd.notify("STOPPING=1\nSTATUS=stopping (\(reason))")
        for channel in serverChannels.withLockedValue({ $0 }) { channel.close(promise: nil) }
        tracker.beginShutdown()
    }

    private func bind(_ listener: Listener) async throws -> NIOAsyncChannel<Accepted, Never> {
        let limits = self.limits
        let tracker = self.tracker
        let tls = listener.transport == .tls ? self.tls : nil
        let bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Accepted> = { channel in
            channel.eventLoop.makeCompletedFuture {
                let entry = tracker.makeEntry(channel)
                let ops = channel.pipeline.syncOperations
                if let tls { try ops.addHandler(NIOSSLServerHandler(context: tls)) }
                try ops.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLineBytes: limits.maxLineBytes)))
                try ops.addHandler(PendingLineCounter(entry: entry))
                let connection = try Connection(wrappingChannelSynchronously: channel)
                return (connection, entry)
            }
        }
        switch listener {
        case .activated(let socket):
            return try await bootstrap.bind(socket.fd, childChannelInitializer: initializer)
        case .endpoint(.tcp(let host, let port)), .endpoint(.tls(let host, let port)):
            return try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
        case .endpoint(.unix(let path)):
            let old = umask(0o077)
            defer { umask(old) }
            return try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true,
                                            childChannelInitializer: initializer)
        }
    }

    /// Accepts on one listener; `budget` names its own connection budget
    /// (`limits.maxConnections` for each listener).
    private func acceptLoop(_ server: NIOAsyncChannel<Accepted, Never>, transport: Transport, budget: Int) async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await accepted in inbound {
                    acceptedCount.withLockedValue { $0 += 1 }
                    guard let id = tracker.register(accepted.entry, limit: limits.maxConnections, budget: budget) else {
                        group.addTask { await self.reject(accepted.connection) }
                        continue
                    }
                    group.addTask(executorPreference: EventLoopTaskExecutor(accepted.connection.channel.eventLoop)) {
                        defer { self.tracker.unregister(id) }
                        await self.serve(accepted.connection, entry: accepted.entry, transport: transport)
                    }
                }
            }
        }
    }

    private func reject(_ connection: Connection) async {
        let error = tracker.isShuttingDown
            ? AgentError(.unavailable, "agent is shutting down; try again")
            : AgentError(.busy, "too many connections (limit \(limits.maxConnections)); try again later")
        try? await connection.executeThenClose { _, outbound in
            try await outbound.write(Self.buffer(.err(error)))
        }
    }

    /// Enforces the read timeout and the idle exit on the server's clock: checks every
    /// `tick` (200 ms, or half the shortest limit) until cancelled. A check closes the
    /// connections idle past the read timeout and begins the shutdown when the server
    /// has had no connection for `idleExit`.
    private func timerLoop() async {
        let clock = tracker.clock
        let readTimeout = Duration.nanoseconds(limits.readTimeout.nanoseconds)
        let idleExit = limits.idleExit
        let tick = min(.milliseconds(200), readTimeout / 2, (idleExit ?? .seconds(1)) / 2)
        while !Task.isCancelled {
            let now = clock.now()
            let (expired, exit) = tracker.check(at: now, readTimeout: readTimeout, idleExit: idleExit)
            // Closed before the check counts as done, so a test that waits for the check
            // sees the connection closed.
            for channel in expired { try? await channel.close() }
            if exit, let idleExit { beginShutdown(reason: "idle for \(idleExit)") }
            lastTimerCheck.withLockedValue { $0 = now }
            do { try await clock.sleep(now + tick) } catch { return }
        }
    }

    /// Guards one request's answer: zero or more information lines, then exactly one
    /// terminal line. A `DATA` or `PROGRESS` line over the line limit cannot be sent (a
    /// client would lose the framing, or take a stand-in `ERR` for the answer and read the
    /// real `OK` as the answer to its next request): the request is stopped there, every
    /// later write of the handler fails, and the terminal line is one `ERR` naming why.
    ///
    /// It also keeps the lines a handler holds (`ReplyStream.answer`) until the next line is
    /// sent, so that a typed answer's `DATA` lines and its terminal line leave in one write
    /// and one TLS record flush instead of one each (HEALTH: six; docs/benchmarks.md).
    final class AnswerStream: Sendable {
        private let state = NIOLockedValueBox<AgentError?>(nil)
        private let held = NIOLockedValueBox<[ResponseLine]>([])

        var stopped: AgentError? { state.withLockedValue { $0 } }

        /// Admits every line of `lines`, then keeps them for the next send.
        func hold(_ lines: [ResponseLine]) throws(AgentError) {
            for line in lines { try admit(line) }
            held.withLockedValue { $0.append(contentsOf: lines) }
        }

        /// The held lines followed by `line`, to send now; nothing is held afterwards.
        func release(with line: ResponseLine) -> [ResponseLine] {
            held.withLockedValue { lines in
                defer { lines = [] }
                return lines + [line]
            }
        }

        func admit(_ line: ResponseLine) throws(AgentError) {
            if let stopped { throw stopped }
            let size = line.line.utf8.count
            guard size > Wire.maxLineBytes else { return }
            let kind: String
            switch line {
            case .progress: kind = "PROGRESS"
            default: kind = "DATA"
            }
            let error = AgentError(.internal, "a \(kind) line of this answer would be \(size) bytes, over the protocol's \(Wire.maxLineBytes)-byte limit; the request was stopped there (please report it: the agent should have split it)")
            state.withLockedValue { $0 = error }
            throw error
        }
    }

    /// `lines`, each as `buffer(_:)` makes it, in one buffer.
    static func buffer(_ lines: [ResponseLine]) -> ByteBuffer {
        guard lines.count > 1 else { return buffer(lines[0]) }
        var all = ByteBuffer()
        for line in lines {
            var one = buffer(line)
            all.writeBuffer(&one)
        }
        return all
    }

    static func buffer(_ line: ResponseLine) -> ByteBuffer {
        var text = line.line
        if text.utf8.count > Wire.maxLineBytes, case .err(var e) = line {
            e.message = String(e.message.prefix(1024)) + "…"
            e.details = Fields()
            text = ResponseLine.err(e).line
        }
        if text.utf8.count > Wire.maxLineBytes {
            text = ResponseLine.err(AgentError(.internal, "response line exceeded \(Wire.maxLineBytes) bytes")).line
        }
        return ByteBuffer(string: text + "\n")
    }

    private func peerDescription(_ channel: any Channel, transport: Transport) async throws -> (String, uid: UInt32?) {
        if transport == .unix {
            guard let provider = channel as? any SocketOptionProvider else {
                throw AgentError(.internal, "cannot read peer credentials")
            }
            let cred: cagent_ucred = try await provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED)).get()
            return ("unix uid=\(cred.uid) pid=\(cred.pid)", cred.uid)
        }
        return ("\(transport.rawValue) \(channel.remoteAddress.map { "\($0)" } ?? "?")", nil)
    }

    private func serve(_ connection: Connection, entry: ConnectionTracker.Entry, transport: Transport) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                let (peer, uid) = try await peerDescription(connection.channel, transport: transport)
                if transport == .unix, uid != 0 {
                    logger.warning("refused non-root peer", metadata: ["peer": "\(peer)"])
                    try await outbound.write(Self.buffer(.err(AgentError(.permissionDenied,
                        "only root may talk to this agent on its unix socket (you are uid \(uid ?? 0))"))))
                    return
                }
                var version: Int?
                var client: PeerIdentity?
                for try await event in inbound {
                    // A line arrived, so a TLS handshake is complete: the certificate is known.
                    if client == nil { client = await peerIdentity(connection.channel, transport: transport, uid: uid) }
                    // One request's lines: an information line too long for the protocol
                    // stops the request; nothing more of it is sent but one terminal ERR.
                    let stream = AnswerStream()
                    let tracker = self.tracker
                    var terminal = await answer(event, peer: peer, client: client!, transport: transport, version: &version,
                                                write: { line in
                                                    try stream.admit(line)
                                                    let lines = stream.release(with: line)
                                                    try await tracker.writing(entry) { try await outbound.write(Self.buffer(lines)) }
                                                },
                                                hold: { lines throws(AgentError) in try stream.hold(lines) })
                    if let stopped = stream.stopped { terminal = .err(stopped) }
                    if let terminal {
                        let lines = stream.release(with: terminal)
                        try await tracker.writing(entry) { try await outbound.write(Self.buffer(lines)) }
                    }
                    tracker.answered(entry)
                    if tracker.isShuttingDown { break }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Who the peer is: its uid on a unix socket, its certificate's subject and names over
    /// TLS (verified against the CA by the handshake), nobody over plain TCP.
    private func peerIdentity(_ channel: any Channel, transport: Transport, uid: UInt32?) async -> PeerIdentity {
        guard transport == .tls else { return PeerIdentity(transport: transport, uid: uid) }
        do {
            guard let certificate = try await channel.nioSSL_peerCertificate().get() else {
                return PeerIdentity(transport: .tls)
            }
            return try PeerIdentity.certificate(der: try certificate.toDERBytes())
        } catch {
            logger.warning("cannot read the client certificate", metadata: ["error": "\(error)"])
            return PeerIdentity(transport: .tls)
        }
    }

    /// Answers one framed line; nil for lines that need no answer (empty lines).
    private func answer(_ event: InboundLine, peer: String, client: PeerIdentity, transport: Transport, version: inout Int?,
                        write: @escaping @Sendable (ResponseLine) async throws -> Void,
                        hold: @escaping @Sendable ([ResponseLine]) throws -> Void) async -> ResponseLine? {
        let bytes: [UInt8]
        switch event {
        case .tooLong(let limit):
            return .err(.invalidArgument("line longer than \(limit) bytes; it was discarded"))
        case .line(let b):
            bytes = b
        }
        if bytes.isEmpty || bytes == [UInt8(ascii: "\r")] { return nil }
        let request: Request
        do {
            request = try Request.parse(bytes)
        } catch {
            return .err(error)
        }
        if request.verb == "HELLO" {
            do {
                let v = try Hello.negotiate(request)
                version = v
                return .ok(["version": String(v), "agent": identity.agent, "host": identity.host,
                            "agent-version": identity.version])
            } catch {
                return .err(error)
            }
        }
        guard let version else {
            return .err(AgentError(.invalidState, "send HELLO version=1 first"))
        }
        if request.verb == "PING" {
            return .ok(["agent": identity.agent, "host": identity.host])
        }
        let context = RequestContext(identity: identity, peer: peer, protocolVersion: version, transport: transport,
                                     client: client, policy: policy)
        let started = ContinuousClock.now
        do {
            let fields = try await handler.handle(request, context: context, reply: ReplyStream(write: write, hold: hold))
            logger.info("request", metadata: ["verb": "\(request.verb)", "peer": "\(peer)", "client": "\(client)", "result": "ok",
                                              "elapsed": "\(ContinuousClock.now - started)"])
            return .ok(fields)
        } catch let error as AgentError {
            var metadata: Logger.Metadata = ["verb": "\(request.verb)", "peer": "\(peer)", "client": "\(client)",
                                             "code": "\(error.code.rawValue)", "message": "\(error.message)"]
            // the underlying libvirt/errno error, for the operator's log only
            if let cause = error.cause { metadata["cause"] = "\(String(reflecting: cause))" }
            logger.notice("request failed", metadata: metadata)
            return .err(error)
        } catch {
            logger.error("request failed", metadata: ["verb": "\(request.verb)", "peer": "\(peer)", "error": "\(error)"])
            return .err(AgentError(.internal, "\(error)"))
        }
    }
}

/// Runs a connection's task on its channel's event loop thread (SE-0417's task executor
/// preference), so that reading a request, answering it and writing the answer need no
/// hand-off to Swift's cooperative pool and back: two thread switches per request, and
/// the tail of the agents' latency at 50 connections (docs/benchmarks.md). Blocking work
/// stays on the agents' blocking executors and actors keep their own executors; what runs
/// here is the line loop and the handlers' short async code.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
