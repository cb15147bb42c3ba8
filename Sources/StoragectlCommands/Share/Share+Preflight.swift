import AgentAPI
import AgentProtocol

extension ShareSteps {
    /// Refuses a running VM with local disks and a share without room for them; writes
    /// the plan (and ends a dry run there).
    @Sendable static func preflight(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        let inventory = context.inventory
        let storage = inventory.storage, root = inventory.exportRoot, vm = run.options.vm
        if !run.local.isEmpty && run.location.state != .shutOff {
            throw ShareFailure(step: .preflight, host: run.source.name,
                               error: AgentError(.invalidState, "\(vm) is \(run.location.state); its disks can only be copied while it is shut off"),
                               remedy: "shut it down (virsh shutdown \(vm)), then run share again")
        }
        let needed = run.local.reduce(UInt64(0)) { $0 + ($1.allocated ?? 0) }
        let space = try await context.send(.preflight, storage, SpaceQuery(path: root))
        if needed > 0, needed + needed / 20 > space.available {
            throw ShareFailure(step: .preflight, host: storage.name,
                               error: AgentError(.invalidState, "the images need \(Bytes.human(needed)) (+5%), \(root) has \(Bytes.human(space.available)) free"),
                               remedy: "free space on \(storage.name) or grow the file system, then run share again")
        }
        context.emit(.step(.preflight, host: storage.name,
                           detail: "\(run.local.count) local disk(s), \(Bytes.human(needed)) allocated; \(Bytes.human(space.available)) free on \(storage.name)"))
        let hosts = run.hosts.map(\.name).joined(separator: ", ")
        let pool = inventory.poolName
        run.result.plan = [
            "export \(root) on \(storage.name) to \(hosts) (rw, no_root_squash)",
            run.options.attach == .mount
                ? "netfs pool '\(pool)' (\(inventory.nfsServer):\(root) at \(root), nolock, NFSv3) on \(hosts)"
                : "libnfs share '\(pool)' recorded on \(hosts)",
            "copy \(run.local.count) disk(s) of \(vm) (\(Bytes.human(needed))) from \(run.source.name) into the share",
            "compare each copy's content digest on \(storage.name)'s disk with the copy's",
            "verify the copies from \(run.destinations.map(\.name).joined(separator: ", ")) and a nonce across hosts",
            "redefine \(vm) on \(run.source.name) onto the shared copies (\(run.options.attach.rawValue))",
        ]
        if run.options.dryRun { run.finished = true }
    }
}
