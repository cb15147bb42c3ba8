import NIOConcurrencyHelpers
import NIOCore

/// The live connections of a server: counts them against the limit, knows which are
/// in the middle of a request, and closes the idle ones at shutdown.
final class ConnectionTracker: Sendable {
    final class Entry: Sendable {
        let channel: any Channel
        /// Lines framed but not yet answered. Counted up on the event loop as soon as a
        /// line is framed (so a request is never "idle" while it waits for a task), down
        /// after its terminal line is written.
        let pending = NIOLockedValueBox(0)
        /// When the last answer was handed to the channel (or the connection opened).
        let idleSince = NIOLockedValueBox(NIODeadline.now())
        init(channel: any Channel) { self.channel = channel }
        var isBusy: Bool { pending.withLockedValue { $0 > 0 } }

        /// A request was answered: one line less pending, and idle time counts from now.
        func answered() {
            pending.withLockedValue { $0 -= 1 }
            idleSince.withLockedValue { $0 = .now() }
        }

        /// Idle for at least `timeout` outside any request.
        func idle(for timeout: TimeAmount) -> Bool {
            !isBusy && NIODeadline.now() - idleSince.withLockedValue({ $0 }) >= timeout
        }
    }

    private struct State {
        var next = 0
        var entries: [Int: Entry] = [:]
        var shuttingDown = false
        var lastActivity = ContinuousClock.now
    }

    private let state = NIOLockedValueBox(State())

    var count: Int { state.withLockedValue { $0.entries.count } }
    var isShuttingDown: Bool { state.withLockedValue { $0.shuttingDown } }

    /// Registers a connection; nil if the server is shutting down or at `limit`.
    func register(_ entry: Entry, limit: Int) -> Int? {
        state.withLockedValue { s in
            guard !s.shuttingDown, s.entries.count < limit else { return nil }
            s.next += 1
            s.entries[s.next] = entry
            s.lastActivity = .now
            return s.next
        }
    }

    func unregister(_ id: Int) {
        state.withLockedValue { s in
            s.entries[id] = nil
            s.lastActivity = .now
        }
    }

    func touch() { state.withLockedValue { $0.lastActivity = .now } }

    /// How long nothing has been connected, or nil while something is.
    func idleFor() -> Duration? {
        state.withLockedValue { s in s.entries.isEmpty ? ContinuousClock.now - s.lastActivity : nil }
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

/// Closes a connection that sent nothing for the read timeout while not inside a
/// request: a stalled half line or an idle client does not hold a slot forever.
///
/// Idle time counts from the last answer, not the last read: IdleStateHandler fires every
/// `timeout` after the last read, and one firing just as a long request is answered must
/// not cut off the answer still on its way out.
final class ReadTimeoutCloser: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let entry: ConnectionTracker.Entry
    let timeout: TimeAmount

    init(entry: ConnectionTracker.Entry, timeout: TimeAmount) {
        self.entry = entry
        self.timeout = timeout
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case IdleStateHandler.IdleStateEvent.read = event, entry.idle(for: timeout) {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
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
        entry.pending.withLockedValue { $0 += 1 }
        context.fireChannelRead(data)
    }
}
