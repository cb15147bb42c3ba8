import AgentAPI
import AgentProtocol

extension ShareSteps {
    /// Decides live or offline (a running VM is copied live unless `--offline`), refuses
    /// what that mode cannot do and a share without room for the images; writes the plan
    /// (and ends a dry run there).
    @Sendable static func preflight(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        let inventory = context.inventory
        let storage = inventory.storage, root = inventory.exportRoot, vm = run.options.vm
        let state = run.location.state
        try requireMode(live: run.live, state: state, vm: vm, host: run.source, command: "share", hasDisks: !run.local.isEmpty)
        let needed = run.local.reduce(UInt64(0)) { $0 + ($1.allocated ?? 0) }
        let space = try await context.send(.preflight, storage, SpaceQuery(path: root))
        if needed > 0, needed + needed / 20 > space.available {
            throw ShareFailure(step: .preflight, host: storage.name,
                               error: AgentError(.invalidState, "the images need \(Bytes.human(needed)) (+5%), \(root) has \(Bytes.human(space.available)) free"),
                               remedy: "free space on \(storage.name) or grow the file system, then run share again")
        }
        context.emit(.step(.preflight, host: storage.name,
                           detail: "\(run.local.count) local disk(s), \(Bytes.human(needed)) allocated; \(Bytes.human(space.available)) free on \(storage.name); \(run.live ? "live copy (\(vm) is \(state))" : "offline copy")"))
        let hosts = run.hosts.map(\.name).joined(separator: ", ")
        let pool = inventory.poolName
        let limit = run.options.bandwidthMiB.map { ", at most \($0) MiB/s per disk" } ?? ""
        run.result.plan = [
            "export \(root) on \(storage.name) to \(hosts) (rw, no_root_squash)",
            run.options.attach == .mount
                ? "netfs pool '\(pool)' (\(inventory.nfsServer):\(root) at \(root), nolock, NFSv3) on \(hosts)"
                : "libnfs share '\(pool)' recorded on \(hosts)",
        ] + (run.live ? [
            "copy \(run.local.count) disk(s) of \(vm) (\(Bytes.human(needed))) live from \(run.source.name) into the share: libvirt block copy (QEMU drive mirror) while \(vm) runs\(limit)",
            "pivot every disk onto its copy once all mirrors are synchronised; the persistent definition names the copies (the original is kept for unshare, the local images stay)",
            "verify the copies from \(run.destinations.map(\.name).joined(separator: ", ")): format and virtual size, and a nonce across hosts (no content digest: the guest writes while it is copied)",
        ] : [
            "copy \(run.local.count) disk(s) of \(vm) (\(Bytes.human(needed))) from \(run.source.name) into the share (offline: \(vm) is shut off)",
            "compare each copy's content digest on \(storage.name)'s disk with the copy's",
            "verify the copies from \(run.destinations.map(\.name).joined(separator: ", ")) and a nonce across hosts",
            "redefine \(vm) on \(run.source.name) onto the shared copies (\(run.options.attach.rawValue))",
        ])
        if run.options.dryRun { run.finished = true }
    }

    /// Refuses, before anything changes, what the run's mode cannot do: a live copy of a
    /// VM that is not running (or paused), an offline copy of a VM that is not shut off
    /// (when it has disks to copy); each failure names the other way.
    static func requireMode(live: Bool, state: DomainRunState, vm: String, host: Inventory.Host, command: String,
                            hasDisks: Bool) throws(ShareFailure) {
        let back = command == "unshare" ? " back" : ""
        if live {
            guard canMirror(state) else {
                throw ShareFailure(step: .preflight, host: host.name,
                                   error: AgentError(.invalidState, "\(vm) is \(state); a live copy needs it running (or paused)"),
                                   remedy: state == .shutOff ? "start it (virsh start \(vm)), or drop --live to copy it\(back) offline"
                                                             : "wait until it is running or shut off, then run \(command) again")
            }
        } else if hasDisks && state != .shutOff {
            throw ShareFailure(step: .preflight, host: host.name,
                               error: AgentError(.invalidState, "\(vm) is \(state); --offline copies its disks\(back) only while it is shut off"),
                               remedy: "drop --offline to copy it\(back) live (block copy, then pivot: it keeps running), or shut it down (virsh shutdown \(vm)) and run \(command) again")
        }
    }

    /// States in which libvirt's block copy works.
    static func canMirror(_ state: DomainRunState) -> Bool {
        state == .running || state == .paused || state.rawValue == "idle"
    }
}
