import AgentAPI
import AgentProtocol

extension UnshareSteps {
    /// Refuses what the run's mode cannot do before anything changes: `--offline` of a
    /// running VM, `--live` of one that is not running.
    @Sendable static func preflight(_ context: FlowContext, _ run: inout UnshareRun) async throws(ShareFailure) {
        let vm = run.options.vm, state = run.location.state
        guard !run.shared.isEmpty else { return }
        try ShareSteps.requireMode(live: run.live, state: state, vm: vm, host: run.owner, command: "unshare", hasDisks: true)
        context.emit(.step(.preflight, host: run.owner.name,
                           detail: "\(run.shared.count) disk(s) on the share; \(run.live ? "live copy back (\(vm) is \(state))" : "offline copy back")"))
    }

    /// LOCALIZE on the owner: mount mode through the pool, libnfs mode by server/export.
    @Sendable static func localize(_ context: FlowContext, _ run: inout UnshareRun) async throws(ShareFailure) {
        guard !run.shared.isEmpty else { return }
        let inventory = context.inventory, storage = inventory.storage, root = inventory.exportRoot
        let share: ShareRef = run.shared.contains(where: \.isNetwork) ? .nfs(server: inventory.nfsServer, export: root)
                                                                       : .pool(inventory.poolName)
        if run.live { return try await liveLocalize(context, &run, share: share) }
        let answer = try await context.send(.localize, run.owner, LocalizeRequest(domain: run.options.vm, share: share),
                                            timeout: .seconds(24 * 3600),
                                            remedy: "run unshare again: the shared copies are untouched until a local copy is verified",
                                            progress: context.showProgress)
        run.result.disks = answer.moved.map { LocalizedDisk(disk: $0.disk, from: $0.from, to: $0.to, size: $0.size, digest: $0.digest) }
        if answer.changed { run.result.changed.append("localize") }
        run.result.leftOnShare = run.result.disks.map { storage.name + ":" + SharePath.onServer($0.from) }
        context.emit(.step(.localize, host: run.owner.name,
                           detail: "\(run.result.disks.count) disk(s) copied to local storage and verified; \(run.options.vm) redefined onto them"))
    }

    /// Every disk of the VM is local now (asked again).
    @Sendable static func verifyLocal(_ context: FlowContext, _ run: inout UnshareRun) async throws(ShareFailure) {
        let vm = run.options.vm, owner = run.owner
        let after = try await context.locate(vm, from: owner.name)
        if let left = after.disks.first(where: context.isShared) {
            throw ShareFailure(step: .verify, host: owner.name,
                               error: AgentError(.invalidState, "disk \(left.target) of \(vm) is still on the share (\(left.source))"),
                               remedy: "run unshare again; if it persists: storagectl call \(owner.name) DOMAIN name=\(vm)")
        }
        context.emit(.step(.verify, host: owner.name,
                           detail: "every disk of \(vm) is local (\(after.disks.filter(\.isDisk).map(\.source).joined(separator: ", ")))"))
    }
}

extension UnshareSteps {
    /// A running VM's disks block-copied from the share to new local files and pivoted
    /// onto them (LIVE-LOCALIZE: never over an existing file or another VM's disk; the
    /// definition names the local files); Ctrl-C cancels the mirrors before the pivot.
    static func liveLocalize(_ context: FlowContext, _ run: inout UnshareRun, share: ShareRef) async throws(ShareFailure) {
        let vm = run.options.vm, storage = context.inventory.storage
        let answer = try await context.sendLive(
            .localize, run.owner, LiveLocalizeRequest(domain: vm, share: share, bandwidthMiB: run.options.bandwidthMiB), vm: vm,
            remedy: "run unshare again: a mirror that runs is joined, a disk already local is not copied again; the shared copies are untouched",
            interruption: LiveInterruption(
                cancelled: "the block copies were cancelled (LIVE-ABORT); \(vm) runs from the shared copies, unchanged",
                pivoted: "\(vm) runs from its new local copies and its definition names them",
                remedy: "run unshare again (it continues where it stopped)"))
        run.result.disks = answer.moved.map { LocalizedDisk(disk: $0.disk, from: $0.from, to: $0.to, size: $0.copied, digest: "") }
        if answer.changed { run.result.changed.append("localize") }
        run.result.leftOnShare = answer.moved.map { storage.name + ":" + SharePath.onServer($0.from) }
        let moved = answer.moved.map { "\($0.disk) -> \($0.to)" }.joined(separator: ", ")
        context.emit(.step(.localize, host: run.owner.name,
                           detail: answer.changed ? "\(answer.moved.count) disk(s) mirrored live to new local files and pivoted (\(moved)); \(vm) kept running"
                                                  : "every disk of \(vm) was local already"))
    }
}
