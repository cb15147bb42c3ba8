import AgentProtocol
import NIOConcurrencyHelpers

/// One connection per agent for the whole of a command: the first request to an agent
/// opens a session (`HELLO` once), later requests to the same agent reuse it, one at a
/// time and in order; requests to different agents run concurrently.
///
/// The pool lives inside ``withPool(tls:connectTimeout:_:)``: every connection is closed
/// when its body returns (structured: each agent's session is a child task of that
/// scope). A connection that breaks (the agent exited after its idle time, a network
/// hiccup) is reopened once and the request sent again: every verb is idempotent. A
/// request whose connection failed before any answer (cannot connect, TLS refused) is
/// not retried: the error is the answer.
public final class AgentSessionPool: Sendable {
    /// One request waiting for its agent's session.
    struct Job: Sendable {
        let request: Request
        let timeout: Duration
        let onLine: (@Sendable (ResponseLine) -> Void)?
        let continuation: CheckedContinuation<Response, any Error>
        var retried = false
    }

    /// An agent's session: a mailbox of jobs served on one connection.
    struct Worker: Sendable {
        let endpoint: Endpoint
        let jobs: AsyncStream<Job>
    }

    private struct State {
        var mailboxes: [String: AsyncStream<Job>.Continuation] = [:]
        var closed = false
        var opened = 0
    }

    private let tls: TLSFiles
    private let connectTimeout: Duration
    private let state = NIOLockedValueBox(State())
    private let workers: AsyncStream<Worker>.Continuation

    private init(tls: TLSFiles, connectTimeout: Duration, workers: AsyncStream<Worker>.Continuation) {
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.workers = workers
    }

    /// How many connections the pool has opened so far (one per agent, plus reopenings).
    public var connectionsOpened: Int { state.withLockedValue { $0.opened } }

    /// Runs `body` with a pool; closes every connection when it returns or throws.
    public static func withPool<T: Sendable>(tls: TLSFiles, connectTimeout: Duration,
                                             _ body: @escaping @Sendable (AgentSessionPool) async throws -> T) async throws -> T {
        let (stream, continuation) = AsyncStream.makeStream(of: Worker.self)
        let pool = AgentSessionPool(tls: tls, connectTimeout: connectTimeout, workers: continuation)
        let result = NIOLockedValueBox<T?>(nil)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                defer { pool.close() }
                let value = try await body(pool)
                result.withLockedValue { $0 = value }
            }
            for await worker in stream {
                group.addTask { await pool.serve(worker) }
            }
        }
        return result.withLockedValue { $0 }!
    }

    /// Sends `request` to the agent at `endpoint` on its session. An `ERR` answer is in
    /// the response; transport failures throw (`unavailable`, `timeout`).
    ///
    /// `connection` names another session to the same agent, opened on first use and kept
    /// like the first: for a request that must not wait behind a long one on the first
    /// session (`MIGRATE-ABORT` while `MIGRATE` streams, a `DIRTY-RATE` window beside
    /// the other questions). nil is the agent's first session.
    public func call(_ endpoint: Endpoint, _ request: Request, timeout: Duration, connection: String? = nil,
                     onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        do {
            return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Response, any Error>) in
                let job = Job(request: request, timeout: timeout, onLine: onLine, continuation: c)
                let mailbox = state.withLockedValue { s -> AsyncStream<Job>.Continuation? in
                    guard !s.closed else { return nil }
                    let key = endpoint.description + (connection.map { " #" + $0 } ?? "")
                    if let m = s.mailboxes[key] { return m }
                    let (jobs, m) = AsyncStream.makeStream(of: Job.self)
                    s.mailboxes[key] = m
                    workers.yield(Worker(endpoint: endpoint, jobs: jobs))
                    return m
                }
                guard let mailbox, case .enqueued = mailbox.yield(job) else {
                    c.resume(throwing: AgentError(.internal, "no more requests to \(endpoint): the command is finishing"))
                    return
                }
            }
        } catch let e as AgentError {
            throw e
        } catch {
            throw AgentClient.classify(error, endpoint: endpoint)
        }
    }

    /// No more requests: every session finishes its queue and closes.
    private func close() {
        let mailboxes = state.withLockedValue { s -> [AsyncStream<Job>.Continuation] in
            s.closed = true
            return Array(s.mailboxes.values)
        }
        for m in mailboxes { m.finish() }
        workers.finish()
    }

    /// Thrown inside a session to leave it and connect again.
    private struct Reconnect: Error {}

    /// Serves one agent's jobs, in order, on one connection at a time.
    private func serve(_ worker: Worker) async {
        var jobs = worker.jobs.makeAsyncIterator()
        var pending: Job?
        while true {
            if pending == nil { pending = await jobs.next() }
            guard let first = pending else { return }
            do {
                try await AgentClient.withSession(to: worker.endpoint, connectTimeout: connectTimeout, tls: tls) { session in
                    state.withLockedValue { $0.opened += 1 }
                    var job = first
                    var served = 0
                    while true {
                        do {
                            let response = try await session.call(job.request, timeout: job.timeout, onLine: job.onLine)
                            pending = nil
                            served += 1
                            job.continuation.resume(returning: response)
                        } catch {
                            // The connection is not usable any more. One that served
                            // earlier requests may have been closed by the agent (idle
                            // exit): send the request again on a new one, once.
                            if served > 0, !job.retried, (error as? AgentError)?.code == .unavailable {
                                job.retried = true
                                pending = job
                            } else {
                                pending = nil
                                job.continuation.resume(throwing: error)
                            }
                            throw Reconnect()
                        }
                        guard let next = await jobs.next() else { return }
                        pending = next
                        job = next
                    }
                }
            } catch is Reconnect {
                continue
            } catch {
                // Connecting or HELLO failed: that is the answer to the waiting request.
                pending?.continuation.resume(throwing: error)
                pending = nil
            }
        }
    }
}
