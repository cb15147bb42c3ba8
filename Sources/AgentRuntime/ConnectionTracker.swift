import NIOConcurrencyHelpers
import NIOCore

/// The read-timeout rule of one connection, as a value: a connection outside any
/// request that got no answer (or was opened) `timeout` ago is expired. Idle time
/// counts from the last answer, not from the last byte read: a half line trickled in
/// byte by byte does not hold a slot forever, and a long request is never cut off.
struct ReadTimeoutState: Sendable, Equatable {
    /// Lines framed but not yet answered.
    private(set) var pending = 0
    /// When the last answer was handed to the channel, or the connection opened.
    private(set) var idleSince: Duration

    init(openedAt now: Duration) { idleSince = now }

    var isBusy: Bool { pending > 0 }

    /// A line was framed: it counts as pending at once, even before a task takes it.
    mutating func lineFramed() { pending += 1 }

    /// A request was answered: one line less pending, and idle time counts from `now`.
    mutating func answered(at now: Duration) {
        pending -= 1
        idleSince = now
    }

    /// When a write of an answer line started waiting for the client to read (nil when
    /// no write waits).
    private(set) var writeWaitingSince: Duration?

    mutating func writeStarted(at now: Duration) { writeWaitingSince = now }
    mutating func writeFinished() { writeWaitingSince = nil }

    /// Expired: idle past `timeout` outside a request, or a client that has not read
    /// an answer line for `timeout` (it pipelines and never reads: its slot is freed).
    func isExpired(at now: Duration, timeout: Duration) -> Bool {
        if let since = writeWaitingSince, now - since >= timeout { return true }
        return !isBusy && now - idleSince >= timeout
    }
}

/// The idle-exit rule of a server, as a value: with no connection for `limit`, exit.
struct IdleExitState: Sendable, Equatable {
    private(set) var connections = 0
    /// When a connection last opened, closed or was answered.
    private(set) var lastActivity: Duration

    init(startedAt now: Duration) { lastActivity = now }

    mutating func opened(at now: Duration) { connections += 1; lastActivity = now }
    mutating func closed(at now: Duration) { connections -= 1; lastActivity = now }
    mutating func activity(at now: Duration) { lastActivity = now }

    func shouldExit(at now: Duration, limit: Duration) -> Bool {
        connections == 0 && now - lastActivity >= limit
    }
}

/// The live connections of a server: counts them against the limit, knows which are
/// in the middle of a request, finds the ones idle past the read timeout, and closes the
/// idle ones at shutdown. Time comes from the server's ``ServerClock``.
final class ConnectionTracker: Sendable {
    final class Entry: Sendable {
        let channel: any Channel
        let timing: NIOLockedValueBox<ReadTimeoutState>

        init(channel: any Channel, openedAt now: Duration) {
            self.channel = channel
            timing = NIOLockedValueBox(ReadTimeoutState(openedAt: now))
        }

        var isBusy: Bool { timing.withLockedValue { $0.isBusy } }
    }

    private struct State {
        var next = 0
        var entries: [Int: Entry] = [:]
        /// Which budget each entry counts against (its listener's).
        var budgets: [Int: Int] = [:]
        var shuttingDown = false
        var idle: IdleExitState
    }

    let clock: ServerClock
    private let state: NIOLockedValueBox<State>

    init(clock: ServerClock) {
        self.clock = clock
        state = NIOLockedValueBox(State(idle: IdleExitState(startedAt: clock.now())))
    }

    var count: Int { state.withLockedValue { $0.entries.count } }
    var isShuttingDown: Bool { state.withLockedValue { $0.shuttingDown } }
    /// Connections inside a request.
    var busyCount: Int { state.withLockedValue { $0.entries.values.filter(\.isBusy).count } }

    /// A new entry for `channel`, idle from now.
    func makeEntry(_ channel: any Channel) -> Entry { Entry(channel: channel, openedAt: clock.now()) }

    /// Registers a connection of listener `budget`; nil if the server is shutting down or
    /// that listener already has `limit` connections. Each listener has a budget of its
    /// own, so clients of one (slow TCP clients, say) cannot use up another's (root's
    /// unix socket).
    func register(_ entry: Entry, limit: Int, budget: Int = 0) -> Int? {
        let now = clock.now()
        return state.withLockedValue { s in
            guard !s.shuttingDown, s.budgets.values.filter({ $0 == budget }).count < limit else { return nil }
            s.next += 1
            s.entries[s.next] = entry
            s.budgets[s.next] = budget
            s.idle.opened(at: now)
            return s.next
        }
    }

    func unregister(_ id: Int) {
        let now = clock.now()
        state.withLockedValue { s in
            s.budgets[id] = nil
            if s.entries.removeValue(forKey: id) != nil { s.idle.closed(at: now) }
        }
    }

    /// Runs `write` (one line to `entry`'s client), counting how long it waits for the
    /// client to read.
    func writing(_ entry: Entry, _ write: () async throws -> Void) async throws {
        let now = clock.now()
        entry.timing.withLockedValue { $0.writeStarted(at: now) }
        defer { entry.timing.withLockedValue { $0.writeFinished() } }
        try await write()
    }

    /// A request of `entry` was answered.
    func answered(_ entry: Entry) {
        let now = clock.now()
        entry.timing.withLockedValue { $0.answered(at: now) }
        state.withLockedValue { $0.idle.activity(at: now) }
    }

    /// The connections idle past `readTimeout` at `now`, and whether the server has had
    /// no connection for `idleExit`.
    func check(at now: Duration, readTimeout: Duration, idleExit: Duration?) -> (expired: [any Channel], exit: Bool) {
        let (entries, exit) = state.withLockedValue { s in
            (Array(s.entries.values), idleExit.map { s.idle.shouldExit(at: now, limit: $0) } ?? false)
        }
        let expired = entries.filter { $0.timing.withLockedValue { $0.isExpired(at: now, timeout: readTimeout) } }
        return (expired.map(\.channel), exit)
    }

    /// Marks shutdown and closes every connection not inside a request; busy ones close
    /// themselves after their response.
    func beginShutdown() {
        let idle = state.withLockedValue { s -> [Entry] in
            s.shuttingDown = true
            return s.entries.values.filter { !$0.isBusy }
        }
        for entry in idle { entry.channel.close(promise: nil) }
    }
}

/// Sits after the line framer and counts every framed line as pending work for its
/// connection, synchronously on the event loop.
final class PendingLineCounter: ChannelInboundHandler, Sendable {
    typealias InboundIn = InboundLine
    typealias InboundOut = InboundLine
    let entry: ConnectionTracker.Entry

    init(entry: ConnectionTracker.Entry) { self.entry = entry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        entry.timing.withLockedValue { $0.lineFramed() }
        context.fireChannelRead(data)
    }
}
