import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `storagectl share VM`: the provisioning flow.
public struct ShareCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "share",
        abstract: "Put a VM's disks on shared NFS storage so its migration peers can run it.",
        discussion: """
            Finds the compute host that defines VM (or --from), then: exports the share on the \
            storage host to the source and every destination (rw, no_root_squash, explicit \
            clients only), makes the libvirt pool ready on each of them, copies every local \
            disk of the (shut off) VM into the share over NFS (sparse, verified by its content \
            digest, written under a temporary name), has the storage host compute each copy's \
            content digest on its own disk and compares it with the copy's (see storagectl \
            digest --help), proves every destination sees the copies and a nonce written by \
            the source, and redefines the VM onto the shared copies (the original images are \
            kept).

            Every step is idempotent and derived from what the agents report: run share again \
            after any failure and it continues where it stopped; a finished copy is never \
            redone, a running one is joined. Destinations default to every other compute host \
            of the inventory.

            EXIT STATUS
              0   the VM is ready (or, with --dry-run, the plan was printed)
              64  bad arguments (unknown destination, ...)
              65  refused by the current state (running VM, not enough space, conflicting pool)
              66  the VM was not found
              69  an agent could not be reached
              75  busy or timed out: run share again
            """)

    @OptionGroup public var global: GlobalOptions

    @Argument(help: "The libvirt domain name.")
    public var vm: String

    @Option(name: .customLong("from"), help: ArgumentHelp("The compute host that defines the VM (default: ask every compute host).", valueName: "host"))
    public var from: String?

    @Option(name: .customLong("to"), help: ArgumentHelp("A destination compute host (repeatable; default: every other compute host).", valueName: "host"))
    public var to: [String] = []

    @Option(name: .customLong("attach"), help: ArgumentHelp("mount: a libvirt netfs pool (kernel NFS mount); libnfs: NFS network disks opened by QEMU, no mount.", valueName: "mount|libnfs"))
    public var attach: String = "mount"

    @Flag(name: .customLong("dry-run"), help: "Print the plan and change nothing.")
    public var dryRun = false

    @Flag(name: .customLong("json"), help: "Print one JSON document with the result (no progress).")
    public var json = false

    public init() {}

    public func validate() throws {
        guard AttachMode(rawValue: attach) != nil else { throw ValidationError("--attach must be mount or libnfs") }
        try validateDomainName(vm)
    }

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let display = ShareDisplay(mode: json ? .quiet : (isatty(1) == 1 ? .terminal : .plain))
            let flow = ShareFlow(inventory: inventory,
                                 caller: LiveAgentCaller(tls: inventory.tls, connectTimeout: global.timeoutDuration),
                                 emit: { display.show($0) })
            let options = ShareOptions(vm: vm, from: from, to: to, attach: AttachMode(rawValue: attach)!, dryRun: dryRun)
            try await FlowReport.run("share", vm: vm, json: json, display: display,
                                     summary: ShareFormatting.summary, encode: ShareFormatting.json) { () throws(ShareFailure) in
                try await flow.run(options)
            }
        }
    }
}

/// Refuses what cannot be a libvirt domain name before any agent is asked (the agents
/// check again; they never paste a name into XML or argv).
func validateDomainName(_ vm: String) throws {
    guard !vm.isEmpty, vm.utf8.count <= 200, !vm.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "/" }) else {
        throw ValidationError("'\(vm)' is not a libvirt domain name")
    }
}

/// How `share` and `unshare` end: the result (summary or JSON) on stdout, or the failure
/// (`ShareFailure`: step, host, the agent's words, the remedy) on stderr or as JSON, with
/// the exit status of its error code.
enum FlowReport {
    static func run<R>(_ command: String, vm: String, json: Bool, display: ShareDisplay,
                       summary: (R) -> String, encode: (R) throws -> String,
                       _ body: () async throws(ShareFailure) -> R) async throws {
        do throws(ShareFailure) {
            let result = try await body()
            display.finish()
            if json {
                print((try? encode(result)) ?? "{}")
            } else {
                print(summary(result), terminator: "")
            }
        } catch {
            display.finish()
            if json {
                print((try? ShareFormatting.json(failure: error)) ?? "{}")
            } else {
                printError("storagectl: \(command) \(vm): \(error)")
            }
            throw ExitCode(ExitStatus.code(for: error.error.code))
        }
    }
}

/// Shows share's events: one line per finished step, and on a terminal a progress bar
/// per disk (bytes, rate, ETA) redrawn in place; elsewhere a progress line every 5 s.
final class ShareDisplay: @unchecked Sendable {
    enum Mode { case terminal, plain, quiet }
    let mode: Mode
    private let lock = NSLock()
    private var barShown = false
    private var lastPlain = ContinuousClock.now - .seconds(10)

    init(mode: Mode) { self.mode = mode }

    func show(_ event: ShareEvent) {
        guard mode != .quiet else { return }
        lock.withLock {
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

/// Pure renderings of share's output.
public enum ShareFormatting {
    public static func progressLine(disk: String, done: UInt64, total: UInt64, bytesPerSecond: Double, width: Int) -> String {
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        var line = "  copy \(disk) "
        if width > 0 {
            let filled = Int((fraction * Double(width)).rounded(.down))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
        }
        line += String(format: "%3.0f%% ", fraction * 100) + "\(Bytes.human(done))/\(Bytes.human(total))"
        if bytesPerSecond > 0 {
            line += " \(Bytes.human(UInt64(bytesPerSecond)))/s"
            let left = Double(total - min(done, total)) / bytesPerSecond
            line += String(format: " ETA %d:%02d", Int(left) / 60, Int(left) % 60)
        }
        return line
    }

    public static func summary(_ r: ShareResult) -> String {
        if r.dryRun {
            return "dry run: share \(r.vm) from \(r.source) to \(r.destinations.joined(separator: ", ")) would:\n"
                + r.plan.enumerated().map { "  \($0.offset + 1). \($0.element)\n" }.joined()
                + "nothing was changed.\n"
        }
        var s = r.changed.isEmpty
            ? "\(r.vm) was already shared; nothing changed.\n"
            : "\(r.vm) is ready: its disks are on \(r.storage):\(r.export) (\(r.attach.rawValue)), seen by \(([r.source] + r.destinations).joined(separator: ", ")).\n"
        for d in r.disks { s += "  \(d.disk): \(r.export)/\(d.path) (\(Bytes.human(d.size)), digest \(d.digest.prefix(16))…)\n" }
        if let dest = r.destinations.first {
            s += "migrate it with: virsh migrate --live --persistent \(r.vm) qemu+ssh://\(dest)/system\n"
        }
        return s
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        return e
    }

    public static func json(_ r: ShareResult) throws -> String {
        String(decoding: try encoder().encode(r), as: UTF8.self)
    }

    public static func json(failure: ShareFailure) throws -> String {
        struct Doc: Encodable { var ready = false; var failedStep: String; var host: String; var code: String; var message: String; var remedy: String }
        return String(decoding: try encoder().encode(Doc(failedStep: failure.step.rawValue, host: failure.host, code: failure.error.code.rawValue,
                                                        message: failure.error.message, remedy: failure.remedy)), as: UTF8.self)
    }
}
