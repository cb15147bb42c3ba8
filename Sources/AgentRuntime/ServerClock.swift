/// The time source of a server's timers (the read timeout and the idle exit): the
/// continuous clock in the agents, a manual clock in tests, so timing tests do not
/// depend on wall time. Any `Clock` with `Duration` works; times are measured as
/// durations since the clock was wrapped.
public struct ServerClock: Sendable {
    /// Time since this clock was made.
    public let now: @Sendable () -> Duration
    /// Suspends until `now() >= deadline`; throws `CancellationError` when cancelled.
    public let sleep: @Sendable (_ deadline: Duration) async throws -> Void

    public init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        now = { origin.duration(to: clock.now) }
        sleep = { deadline in try await clock.sleep(until: origin.advanced(by: deadline), tolerance: nil) }
    }

    /// The real clock (`ContinuousClock`, which keeps counting while the host sleeps).
    public static var continuous: ServerClock { ServerClock(ContinuousClock()) }
}
