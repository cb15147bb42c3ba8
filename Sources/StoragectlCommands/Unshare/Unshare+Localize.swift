import AgentAPI
import AgentProtocol

extension UnshareSteps {
    /// Refuses a running VM before anything changes.
    @Sendable static func preflight(_ context: FlowContext, _ run: inout UnshareRun) async throws(ShareFailure) {
        let vm = run.options.vm
        if !run.shared.isEmpty && run.location.state != .shutOff {
            throw ShareFailure(step: .preflight, host: run.owner.name,
                               error: AgentError(.invalidState, "\(vm) is \(run.location.state); its disks can only be copied back while it is shut off"),
                               remedy: "shut it down (virsh shutdown \(vm)), then run unshare again")
        }
    }

    /// LOCALIZE on the owner: mount mode through the pool, libnfs mode by server/export.
    @Sendable static func localize(_ context: FlowContext, _ run: inout UnshareRun) async throws(ShareFailure) {
        guard !run.shared.isEmpty else { return }
        let inventory = context.inventory, storage = inventory.storage, root = inventory.exportRoot
        let share: ShareRef = run.shared.contains(where: \.isNetwork) ? .nfs(server: inventory.nfsServer, export: root)
                                                                       : .pool(inventory.poolName)
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
