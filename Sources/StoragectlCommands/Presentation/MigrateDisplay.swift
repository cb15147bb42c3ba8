import AgentAPI
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Shows `migrate`'s events: on a terminal the check lines and a progress bar redrawn
/// in place; elsewhere a progress line every 5 s; with `--json` one JSON record per line
/// (`check`, `progress`, `aborting`, then `result` or `failure`).
final class MigrateDisplay: @unchecked Sendable {
    enum Mode { case terminal, plain, json }
    let mode: Mode
    private let lock = NSLock()
    private var barShown = false
    private var lastPlain = ContinuousClock.now - .seconds(10)

    init(mode: Mode) { self.mode = mode }

    func show(_ event: MigrateEvent) {
        lock.withLock {
            switch (event, mode) {
            case (.checked(let r), .json): print(CheckFormatting.record("check", r))
            case (.checked(let r), _): if r.ok { print(CheckFormatting.text(r), terminator: "") }
            case (.started(let uri), .json): print(CheckFormatting.record("started", uri))
            case (.started(let uri), _): print("migrating to \(uri) (Ctrl-C aborts; the VM keeps running here)")
            case (.progress(let p), .json): print(CheckFormatting.record("progress", p))
            case (.progress(let p), .terminal):
                print("\r\u{1B}[2K" + MigrateFormatting.progressLine(p, width: 30), terminator: "")
                barShown = true
            case (.progress(let p), .plain):
                // (the job's first statistics, before QEMU has sized the transfer, say
                // nothing: total 0)
                if p.total > 0, ContinuousClock.now - lastPlain >= .seconds(5) {
                    lastPlain = .now
                    print(MigrateFormatting.progressLine(p, width: 0))
                }
            case (.aborting(let why), .json): print(CheckFormatting.record("aborting", why.rawValue))
            case (.aborting(let why), _):
                clearBar()
                print("aborting (\(why == .interrupted ? "Ctrl-C" : "--timeout")): asking the source to cancel the migration job… (Ctrl-C again quits at once)")
            }
            fflush(nil)
        }
    }

    private func clearBar() {
        if barShown { print("\r\u{1B}[2K", terminator: ""); barShown = false }
    }

    func finish() { lock.withLock { clearBar(); fflush(nil) } }
}
