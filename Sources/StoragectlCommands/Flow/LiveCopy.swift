import AgentAPI
import AgentProtocol

/// What a live copy step says when the user stops it: before the pivot (the block jobs
/// were cancelled) and after it (the job had finished or was pivoting).
struct LiveInterruption: Sendable {
    /// The state when LIVE-ABORT cancelled the mirrors.
    var cancelled: String
    /// The state when the job had pivoted anyway.
    var pivoted: String
    /// What to do in either case.
    var remedy: String
}

/// What ends first in ``FlowContext/sendLive(_:_:_:vm:remedy:interruption:)``.
private enum LiveRace: Sendable {
    case finished(Result<LiveCopyAnswer, AgentError>)
    case stop
    case abortAnswered(Result<LiveAbortRequest.Answer, AgentError>)
}

extension FlowContext {
    /// Sends a live copy (LIVE-COPY or LIVE-LOCALIZE) to `host`, streaming its progress
    /// to the display, and races it with Ctrl-C: on an interrupt LIVE-ABORT travels on a
    /// second connection (the first is busy with the copy), then the copy's own answer is
    /// awaited, so storagectl never leaves while the agent is between states. An
    /// interrupted run ends with a `ShareFailure` marked `interrupted` (exit status 130)
    /// saying which state the VM is in.
    func sendLive<V: AgentVerb>(_ step: ShareStep, _ host: Inventory.Host, _ verb: V, vm: String, remedy: String,
                                interruption: LiveInterruption) async throws(ShareFailure) -> LiveCopyAnswer where V.Answer == LiveCopyAnswer {
        let caller = self.caller, progress = self.showProgress, interrupted = self.interrupted, emit = self.emit
        let (answer, stopped, abort) = await withTaskGroup(of: LiveRace?.self) { group in
            group.addTask {
                .finished(await Self.capture { try await caller.send(host, verb, timeout: .seconds(24 * 3600), progress: progress) })
            }
            group.addTask {
                await interrupted()
                return Task.isCancelled ? nil : .stop
            }
            var answer: Result<LiveCopyAnswer, AgentError>?
            var stopped = false
            var abort: Result<LiveAbortRequest.Answer, AgentError>?
            while let next = await group.next() {
                switch next {
                case .finished(let r)?:
                    answer = r
                    group.cancelAll()
                case .stop?:
                    guard answer == nil, !stopped else { continue }
                    stopped = true
                    emit(.note("interrupted: asking \(host.name) to cancel the block copies of \(vm) (LIVE-ABORT)"))
                    group.addTask {
                        .abortAnswered(await Self.capture {
                            try await caller.send(host, LiveAbortRequest(domain: vm), timeout: .seconds(60), connection: MigrateFlow.abortConnection)
                        })
                    }
                case .abortAnswered(let r)?:
                    abort = r
                case nil:
                    continue
                }
            }
            return (answer!, stopped, abort)
        }
        switch (answer, stopped) {
        case (.success(let a), false):
            return a
        case (.failure(let e), false):
            let advice = e.code == .unsupported ? Self.remedy(e) : (Self.remedy(e).isEmpty ? remedy : Self.remedy(e))
            throw ShareFailure(step: step, host: host.name, error: e, remedy: advice)
        case (.success, true):
            throw ShareFailure(step: step, host: host.name, error: AgentError(.invalidState, "interrupted after the pivot: \(interruption.pivoted)"),
                               remedy: interruption.remedy, interrupted: true)
        case (.failure(let e), true):
            var message = "interrupted: \(interruption.cancelled)"
            switch abort {
            case .success(let a)? where a.aborted: break
            case .success?: message = "interrupted: \(e.message)"
            case .failure(let a)?: message = "interrupted: \(e.message); LIVE-ABORT: \(a.message)"
            case nil: message = "interrupted: \(e.message)"
            }
            throw ShareFailure(step: step, host: host.name, error: AgentError(e.code == .invalidState ? .invalidState : e.code, message),
                               remedy: interruption.remedy, interrupted: true)
        }
    }
}
