import AgentAPI
import AgentProtocol

public struct MigrateOptions: Sendable {
    public var vm: String
    public var to: String
    /// `.live` or `.offline`; nil: by the VM's state (as `check`).
    public var mode: MigrationMode?
    public var persistent: Bool
    public var undefineSource: Bool
    public var bandwidthMiB: UInt64?
    public var timeoutSeconds: Int?
    public var autoConverge: Bool
    public var postcopy: Bool
    public var dirtyRateSeconds: Int

    public init(vm: String, to: String, mode: MigrationMode? = nil, persistent: Bool = false, undefineSource: Bool = false,
                bandwidthMiB: UInt64? = nil, timeoutSeconds: Int? = nil, autoConverge: Bool = false, postcopy: Bool = false,
                dirtyRateSeconds: Int = 1) {
        self.vm = vm
        self.to = to
        self.mode = mode
        self.persistent = persistent
        self.undefineSource = undefineSource
        self.bandwidthMiB = bandwidthMiB
        self.timeoutSeconds = timeoutSeconds
        self.autoConverge = autoConverge
        self.postcopy = postcopy
        self.dirtyRateSeconds = dirtyRateSeconds
    }

    var check: CheckOptions {
        CheckOptions(vm: vm, to: to, mode: mode, bandwidthMiB: bandwidthMiB, dirtyRateSeconds: dirtyRateSeconds, persistent: persistent)
    }
}

/// Why a migration was stopped by storagectl.
public enum AbortReason: String, Sendable, Codable {
    /// Ctrl-C (SIGINT).
    case interrupted
    /// `--timeout` passed.
    case timeout

    /// The exit status of an aborted `migrate`: 130 for SIGINT (as shells report it),
    /// 124 for `--timeout` (as timeout(1) does).
    public var exitStatus: Int32 { self == .interrupted ? 130 : 124 }
}

/// What `migrate` tells its display as it goes.
public enum MigrateEvent: Sendable, Equatable {
    case checked(CheckReport)
    case started(uri: String)
    case progress(MigrationProgress)
    case aborting(AbortReason)
}

/// The result of a migration that ran (finished or aborted).
public struct MigrateResult: Sendable, Equatable, Encodable {
    public var vm: String
    public var source: String
    public var destination: String
    public var uri: String
    public var mode: String
    /// Where the VM runs now (nil: nowhere, e.g. an offline migration).
    public var runsOn: String?
    /// Its state on each host after the migration (`absent` when not defined there).
    public var stateOnSource: String
    public var stateOnDestination: String
    public var downtimeMs: UInt64?
    public var elapsedMs: UInt64
    public var dataBytes: UInt64?
    public var iterations: UInt64?
    public var persistent: Bool
    public var undefinedSource: Bool
    public var postcopy: Bool
    /// Set when storagectl stopped it; the agent's `ERR` is in `error`.
    public var aborted: AbortReason?
    public var error: String?
    /// The abort was asked for but the migration had finished first.
    public var abortTooLate: Bool = false
}

/// How a `migrate` ended.
public enum MigrateOutcome: Sendable {
    /// `check` failed: nothing was started.
    case refused(CheckReport)
    case migrated(CheckReport, MigrateResult)
    case aborted(CheckReport, MigrateResult)
}

/// `storagectl migrate VM --to HOST`: `check` (the same code), then MIGRATE on the
/// source with the destination's URI, streaming its PROGRESS; Ctrl-C or `--timeout`
/// sends MIGRATE-ABORT on a second connection to the source agent (the first is busy
/// with MIGRATE) and waits for MIGRATE's `ERR`; then asks both hosts where the VM is.
public struct MigrateFlow: Sendable {
    public let context: FlowContext
    let onEvent: @Sendable (MigrateEvent) -> Void

    /// The source connection MIGRATE-ABORT travels on.
    static let abortConnection = "abort"

    public init(inventory: Inventory, caller: any AgentCaller, onEvent: @escaping @Sendable (MigrateEvent) -> Void = { _ in }) {
        context = FlowContext(inventory: inventory, caller: caller)
        self.onEvent = onEvent
    }

    /// Runs the migration. `interrupted` returns when the user asks to stop (Ctrl-C); it
    /// must return promptly when its task is cancelled. `interruptedAlready` says whether
    /// that happened during `check` (then no MIGRATE is sent).
    public func run(_ options: MigrateOptions, interrupted: @escaping @Sendable () async -> Void = { await Self.never() },
                    interruptedAlready: @Sendable () -> Bool = { false }) async throws(ShareFailure) -> MigrateOutcome {
        let started = ContinuousClock.now
        let check = CheckFlow(context: context)
        let (location, dest, mode) = try await check.locate(options.check)
        if mode == .offline, !options.persistent {
            throw ShareFailure(step: .migrate, host: location.host.name,
                               error: AgentError(.invalidArgument, "an offline migration moves the definition: it needs --persistent"),
                               remedy: "add --persistent (and --undefine-source to remove it from \(location.host.name))")
        }
        let report = await check.run(options.check, location: location, destination: dest, mode: mode, started: started)
        onEvent(.checked(report))
        guard report.ok else { return .refused(report) }

        let source = location.host, caller = context.caller, vm = options.vm, onEvent = self.onEvent
        let uri = dest.migrationTarget.text
        if interruptedAlready() {
            async let onSource = Self.state(caller, source, vm)
            async let onDest = Self.state(caller, dest, vm)
            let (s, d) = await (onSource, onDest)
            return .aborted(report, MigrateResult(vm: vm, source: source.name, destination: dest.name, uri: uri, mode: mode.rawValue,
                                                  runsOn: s == DomainRunState.running.rawValue ? source.name : nil, stateOnSource: s,
                                                  stateOnDestination: d, elapsedMs: 0, persistent: options.persistent, undefinedSource: false,
                                                  postcopy: false, aborted: .interrupted, error: "interrupted during check: no migration was started"))
        }
        let request = MigrateRequest(name: vm, uri: uri, mode: mode, persistent: options.persistent, undefineSource: options.undefineSource,
                                     bandwidthMiB: mode == .offline ? nil : options.bandwidthMiB,
                                     autoConverge: mode != .offline && options.autoConverge, postcopy: mode != .offline && options.postcopy,
                                     timeoutSeconds: options.timeoutSeconds)
        onEvent(.started(uri: uri))
        let migrateStarted = ContinuousClock.now

        enum Race: Sendable {
            case finished(Result<MigrateRequest.Answer, AgentError>)
            case stop(AbortReason)
            case abortAnswered(Result<MigrateAbortRequest.Answer, AgentError>)
        }
        let timeout = options.timeoutSeconds
        let (answer, reason, abortAnswer) = await withTaskGroup(of: Race?.self) { group in
            group.addTask {
                .finished(await FlowContext.capture {
                    try await caller.send(source, request, timeout: .seconds(8 * 86400), connection: nil) { line in
                        if let p = MigrationProgress.from(line) { onEvent(.progress(p)) }
                    }
                })
            }
            group.addTask {
                await interrupted()
                return Task.isCancelled ? nil : .stop(.interrupted)
            }
            if let timeout {
                group.addTask {
                    do { try await Task.sleep(for: .seconds(timeout)) } catch { return nil }
                    return .stop(.timeout)
                }
            }
            var answer: Result<MigrateRequest.Answer, AgentError>?
            var reason: AbortReason?
            var abortAnswer: Result<MigrateAbortRequest.Answer, AgentError>?
            while let next = await group.next() {
                switch next {
                case .finished(let r)?:
                    answer = r
                    group.cancelAll()
                case .stop(let why)?:
                    guard answer == nil, reason == nil else { continue }
                    reason = why
                    onEvent(.aborting(why))
                    group.addTask {
                        .abortAnswered(await FlowContext.capture {
                            try await caller.send(source, MigrateAbortRequest(name: vm), timeout: .seconds(60), connection: Self.abortConnection)
                        })
                    }
                case .abortAnswered(let r)?:
                    abortAnswer = r
                case nil:
                    continue
                }
            }
            return (answer!, reason, abortAnswer)
        }
        let elapsed = CheckFlow.milliseconds(ContinuousClock.now - migrateStarted)

        // Where the VM is now, from both hosts.
        async let onSource = Self.state(caller, source, vm)
        async let onDest = Self.state(caller, dest, vm)
        let (sourceState, destState) = await (onSource, onDest)
        var result = MigrateResult(vm: vm, source: source.name, destination: dest.name, uri: uri, mode: mode.rawValue,
                                   runsOn: destState == DomainRunState.running.rawValue ? dest.name
                                       : sourceState == DomainRunState.running.rawValue ? source.name : nil,
                                   stateOnSource: sourceState, stateOnDestination: destState, downtimeMs: nil, elapsedMs: elapsed,
                                   dataBytes: nil, iterations: nil, persistent: options.persistent, undefinedSource: false,
                                   postcopy: false, aborted: nil, error: nil)
        switch answer {
        case .success(let a):
            result.downtimeMs = a.downtimeMilliseconds
            result.elapsedMs = a.elapsedMilliseconds
            result.dataBytes = a.dataBytes
            result.iterations = a.iterations
            result.undefinedSource = a.undefinedSource
            result.postcopy = a.postcopyUsed
            result.abortTooLate = reason != nil
            return .migrated(report, result)
        case .failure(let e):
            if let reason {
                result.aborted = reason
                result.error = e.message
                if case .failure(let a)? = abortAnswer { result.error = "\(e.message); MIGRATE-ABORT: \(a.message)" }
                return .aborted(report, result)
            }
            throw ShareFailure(step: .migrate, host: source.name, error: e,
                               remedy: "\(vm) is \(sourceState) on \(source.name) and \(destState) on \(dest.name); "
                                   + (FlowContext.remedy(e).isEmpty ? "see compute-agent's log on \(source.name) (journalctl -u compute-agent)" : FlowContext.remedy(e)))
        }
    }

    /// The VM's state on `host` (`absent` when not defined there, `unknown: ...` when
    /// the agent did not answer).
    static func state(_ caller: any AgentCaller, _ host: Inventory.Host, _ vm: String) async -> String {
        do {
            return try await caller.send(host, DomainQuery(name: vm), timeout: .seconds(30)).state.rawValue
        } catch {
            return error.code == .notFound ? "absent" : "unknown (\(error.message))"
        }
    }

    /// Waits until cancelled.
    public static func never() async {
        let stream = AsyncStream<Void> { _ in }
        for await _ in stream {}
    }
}
