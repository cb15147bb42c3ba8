import AgentAPI
import AgentProtocol

extension ShareSteps {
    /// The share as COPY, LOCALIZE and VERIFY name it in this run's attach mode.
    static func shareRef(_ inventory: Inventory, _ attach: AttachMode) -> ShareRef {
        attach == .mount ? .pool(inventory.poolName) : .nfs(server: inventory.nfsServer, export: inventory.exportRoot)
    }

    /// The source's local disks copied into the share (the agent skips disks already
    /// there, and joins a copy that is running).
    @Sendable static func copy(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        if run.live { return try await liveCopy(context, &run) }
        let source = run.source, vm = run.options.vm
        let copied = try await context.send(.copy, source, CopyRequest(domain: vm, share: shareRef(context.inventory, run.options.attach)),
                                            timeout: .seconds(24 * 3600),
                                            remedy: "run share again: a finished copy is not redone, a running one is joined",
                                            progress: context.showProgress)
        run.result.disks = copied.copies.map {
            CopiedDisk(disk: $0.disk, path: $0.path, size: $0.size, digest: $0.digest, alreadyPresent: $0.alreadyPresent)
        }
        if run.result.disks.contains(where: { !$0.alreadyPresent }) { run.result.changed.append("copy") }
        run.result.copySeconds = copied.seconds ?? 0
        let when = run.result.disks.allSatisfy(\.alreadyPresent) ? "already there"
            : "copied in \(copied.seconds.map { String($0) } ?? "?") s"
        context.emit(.step(.copy, host: source.name, detail: "\(run.result.disks.count) disk(s), \(Bytes.human(copied.bytes)) (\(when))"))
        if run.result.disks.isEmpty && run.shared.isEmpty {
            throw ShareFailure(step: .copy, host: source.name, error: AgentError(.invalidState, "\(vm) has no file disk to share"),
                               remedy: "check its disks: storagectl call \(source.name) DOMAIN name=\(vm)")
        }
    }

    /// The storage host digests every copy on its own disk: the same content digest as
    /// the copy engine's, or the copy is not what was read.
    @Sendable static func checksum(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        // A live copy has no digest to compare (the guest writes while it is copied): each
        // mirror was synchronised when it was pivoted, and verify compares format and
        // virtual size on every host.
        guard !run.live else { return }
        let storage = context.inventory.storage, root = context.inventory.exportRoot
        for disk in run.result.disks {
            let path = root + "/" + disk.path
            let sum = try await context.send(.checksum, storage, ChecksumRequest(path: path), timeout: .seconds(3600))
            guard sum.digest == disk.digest, sum.size == disk.size else {
                throw ShareFailure(step: .checksum, host: storage.name,
                                   error: AgentError(.invalidState, "\(path) on \(storage.name) has digest \(sum.digest) and size \(sum.size); the copy reported digest \(disk.digest) and size \(disk.size)"),
                                   remedy: "remove the damaged copy on \(storage.name) and run share again")
            }
            context.emit(.step(.checksum, host: storage.name, detail: "\(disk.path) digest \(DigestFormatting.short(disk.digest, hexDigits: 12)) matches"))
        }
    }
}

extension ShareSteps {
    /// A running VM's local disks block-copied into the share and pivoted onto the copies
    /// (LIVE-COPY: the agent also points the persistent definition at them and keeps the
    /// original); Ctrl-C cancels the mirrors before the pivot.
    static func liveCopy(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        let source = run.source, vm = run.options.vm
        let request = LiveCopyRequest(domain: vm, share: shareRef(context.inventory, run.options.attach), bandwidthMiB: run.options.bandwidthMiB)
        let answer = try await context.sendLive(
            .copy, source, request, vm: vm,
            remedy: "run share again: a mirror that runs is joined, a disk already pivoted is not copied again; \(vm) runs on whichever image it was on",
            interruption: LiveInterruption(
                cancelled: "the block copies were cancelled (LIVE-ABORT); \(vm) runs on its original disks, unchanged",
                pivoted: "\(vm) runs from the shared copies and its definition names them",
                remedy: "run share again (it continues where it stopped)"))
        run.result.disks = answer.moved.map {
            CopiedDisk(disk: $0.disk, path: $0.path, size: $0.copied, digest: "", alreadyPresent: $0.already,
                       format: $0.format, virtualSize: $0.virtualSize)
        }
        if answer.changed { run.result.changed.append("copy") }
        run.result.copySeconds = answer.seconds ?? 0
        if run.result.disks.isEmpty && run.shared.isEmpty {
            throw ShareFailure(step: .copy, host: source.name, error: AgentError(.invalidState, "\(vm) has no file disk to share"),
                               remedy: "check its disks: storagectl call \(source.name) DOMAIN name=\(vm)")
        }
        let detail = answer.changed
            ? "\(run.result.disks.count) disk(s) mirrored live in \(answer.seconds.map { String($0) } ?? "?") s (QEMU's mirror walked \(Bytes.human(answer.bytes)) of virtual size; holes are not written), then pivoted; \(vm) kept running"
            : "\(run.result.disks.count) disk(s) on the share already; \(vm) runs from them"
        context.emit(.step(.copy, host: source.name, detail: detail))
        if answer.changed {
            let moved = answer.moved.filter { !$0.already }.map { "\($0.disk) -> \($0.to)" }.joined(separator: ", ")
            context.emit(.step(.adopt, host: source.name, detail: "\(vm) now runs from the shared copies (\(moved)); its persistent definition names them"))
        }
    }
}
