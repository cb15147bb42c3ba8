import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Shows share's events: one line per finished step, and on a terminal a progress bar
/// per disk (bytes, rate, ETA) redrawn in place; elsewhere a progress line every 5 s;
/// with `--json-lines` one JSON record per event (`ShareFormatting.record`).
final class ShareDisplay: @unchecked Sendable {
    enum Mode { case terminal, plain, quiet, jsonLines }
    let mode: Mode
    private let lock = NSLock()
    private var barShown = false
    private var lastPlain = ContinuousClock.now - .seconds(10)
    /// `--json-lines`: each disk's last progress (done, total), to complete it when the
    /// copy step ends
    private var diskProgress: [(disk: String, done: UInt64, total: UInt64)] = []

    init(mode: Mode) { self.mode = mode }

    func show(_ event: ShareEvent) {
        guard mode != .quiet else { return }
        lock.withLock {
            if mode == .jsonLines {
                for line in ShareFormatting.records(event, lastRecord: &lastPlain, disks: &diskProgress) { print(line) }
                fflush(nil)
                return
            }
            switch event {
            case .step(let step, let host, let detail):
                clearBar()
                print("\(mode == .terminal ? "✓" : "ok") \(step.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(host.padding(toLength: 15, withPad: " ", startingAt: 0)) \(detail)")
            case .note(let text):
                clearBar()
                print("  \(text)")
            case .progress(let disk, let done, let total, let rate):
                guard total > 0 else { break }
                let line = ShareFormatting.progressLine(disk: disk, done: done, total: total, bytesPerSecond: rate,
                                                        width: mode == .terminal ? 30 : 0)
                if mode == .terminal {
                    print("\r\u{1B}[2K" + line, terminator: "")
                    fflush(nil)
                    barShown = true
                } else if ContinuousClock.now - lastPlain >= .seconds(5) || done == total {
                    lastPlain = .now
                    print(line)
                }
            }
            // Each line as it happens, also into a pipe or a log file.
            fflush(nil)
        }
    }

    private func clearBar() {
        if barShown { print("\r\u{1B}[2K", terminator: ""); barShown = false }
    }

    func finish() { lock.withLock { clearBar(); fflush(nil) } }
}
