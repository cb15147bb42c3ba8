import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C for the commands that start agent jobs (`migrate`, and `share` / `unshare` of
/// a running VM): SIGINT becomes an async wait, so a Ctrl-C turns into an abort request
/// (MIGRATE-ABORT, LIVE-ABORT) instead of a dead client with a job left running.
enum Interrupts {
    /// Replaces SIGINT's default action (exit) for the whole command. `wait` returns at
    /// the first Ctrl-C (and must be cancelled otherwise); `already` says whether one came
    /// before anyone waited. A second Ctrl-C ends storagectl at once. With
    /// `onlyWhileWaited`, a Ctrl-C while nobody waits ends storagectl as SIGINT always did
    /// (share's offline steps: the agent's job goes on and a re-run joins it).
    static func install(onlyWhileWaited: Bool = false) -> (wait: @Sendable () async -> Void, already: @Sendable () -> Bool) {
        signal(SIGINT, SIG_IGN)
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        let box = SignalSourceBox(source)
        source.setEventHandler {
            if onlyWhileWaited, !box.waited {
                signal(SIGINT, SIG_DFL)
                kill(getpid(), SIGINT)
                return
            }
            box.fire()
            continuation.yield()
            // A second Ctrl-C ends storagectl at once (an agent whose client went away
            // aborts a MIGRATE; a live copy goes on and is joined by the next run).
            signal(SIGINT, SIG_DFL)
        }
        source.resume()
        return ({
            box.waiting(+1)
            defer { box.waiting(-1) }
            for await _ in stream { return }
        }, { box.fired })
    }
}

/// Keeps the signal source alive as long as the closures that wait on it, and remembers
/// a Ctrl-C that came before anyone waited.
private final class SignalSourceBox: @unchecked Sendable {
    let source: any DispatchSourceSignal
    private let lock = NSLock()
    private var seen = false
    private var waiters = 0
    init(_ source: any DispatchSourceSignal) { self.source = source }
    func fire() { lock.withLock { seen = true } }
    var fired: Bool { lock.withLock { seen } }
    func waiting(_ delta: Int) { lock.withLock { waiters += delta } }
    var waited: Bool { lock.withLock { waiters > 0 } }
}
