import AgentAPI
import AgentProtocol

extension ShareSteps {
    /// Every destination sees every copy, and a nonce the source wrote beside the first
    /// one: the shared-storage test (``FlowContext/crossVerify(vm:source:destinations:files:rerun:)``).
    @Sendable static func verify(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        guard !run.result.disks.isEmpty else { return }
        let inventory = context.inventory
        let ref = shareRef(inventory, run.options.attach)
        let root = inventory.exportRoot, attach = run.options.attach
        let live = run.live
        let files = run.result.disks.map { disk in
            // A live image changes size while the guest writes: its format and virtual size
            // are compared instead.
            SharedFile(label: disk.path, size: live ? nil : disk.size,
                       image: live ? disk.format.flatMap { f in disk.virtualSize.map { (f, $0) } } : nil) { nonce in
                attach == .mount ? VerifyRequest(path: root + "/" + disk.path, nonce: nonce)
                                 : VerifyRequest(path: disk.path, share: ref, nonce: nonce)
            }
        }
        try await context.crossVerify(vm: run.options.vm, source: run.source, destinations: run.destinations, files: files,
                                      rerun: "run share again")
        for dest in run.destinations {
            context.emit(.step(.verify, host: dest.name, detail: "sees \(files.count) copy(ies) and \(run.source.name)'s nonce"))
        }
    }

    /// The VM's name reduced to letters and digits (at most 32) for a nonce file name.
    static func nonceTag(_ vm: String) -> String {
        let kept = vm.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains(Character($0))) }
        return "share-" + String(String.UnicodeScalarView(kept).prefix(32))
    }

    /// The domain on the source redefined onto the shared copies.
    @Sendable static func adopt(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        let inventory = context.inventory, vm = run.options.vm
        // A live copy's pivot moved the running VM and its definition already.
        if run.live {
            run.result.ready = true
            return
        }
        let request = run.options.attach == .mount
            ? AdoptRequest(domain: vm, share: .pool(inventory.poolName))
            : AdoptRequest(domain: vm, share: .nfs(server: inventory.nfsServer, export: inventory.exportRoot), attach: .libnfs)
        let adopted = try await context.send(.adopt, run.source, request)
        if adopted.changed { run.result.changed.append("adopt") }
        context.emit(.step(.adopt, host: run.source.name,
                           detail: "\(vm) \(adopted.changed ? "now runs from" : "already on") the shared copies (\(run.options.attach.rawValue))"))
        run.result.ready = true
    }
}

/// A file on the share as a host's `VERIFY` names it (a path under the mount, or a path
/// in the share through libnfs), and its size when the caller knows it.
struct SharedFile: Sendable {
    var label: String
    var size: UInt64?
    /// A live image: every host must see this format and virtual size (its size is not
    /// compared: the guest writes while it is verified).
    var image: (format: String, virtualSize: UInt64)?
    var request: @Sendable (NonceStep) -> VerifyRequest

    init(label: String, size: UInt64?, image: (format: String, virtualSize: UInt64)? = nil,
         request: @escaping @Sendable (NonceStep) -> VerifyRequest) {
        self.label = label
        self.size = size
        self.image = image
        self.request = request
    }
}

extension FlowContext {
    /// The shared-storage test `share` ends with and `check` runs fresh: every
    /// destination sees every file with the size the source sees, and reads a nonce the
    /// source wrote beside the first one through its own view of the share. Each
    /// destination has a nonce of its own (the agent removes a nonce once it is read), so
    /// destinations verify concurrently, one round each: the nonce is read with the first
    /// file's VERIFY. Sizes not given are asked from the source first.
    func crossVerify(vm: String, source: Inventory.Host, destinations: [Inventory.Host], files: [SharedFile],
                     rerun: String) async throws(ShareFailure) {
        guard let first = files.first else { return }
        var sizes = files.map(\.size)
        let tag = ShareSteps.nonceTag(vm)
        var reads: [String: VerifyRequest] = [:]
        for dest in destinations {
            let name = "\(tag)-\(UInt32.random(in: 0...UInt32.max))"
            let written = try await send(.verify, source, first.request(.write(name: name)))
            guard let value = written.nonceValue else {
                throw ShareFailure(step: .verify, host: source.name,
                                   error: AgentError(.unsupported, "the agent answered VERIFY nonce-write without nonce-value="), remedy: "")
            }
            if sizes[0] == nil { sizes[0] = written.size }
            reads[dest.name] = first.request(.read(name: name, value: value))
        }
        for i in files.indices where sizes[i] == nil && files[i].image == nil {
            sizes[i] = try await send(.verify, source, files[i].request(.none)).size
        }
        if files[0].image != nil { sizes[0] = nil }
        let caller = self.caller
        let nonceReads = reads
        let expected = sizes
        let seen = await Self.concurrently(destinations) { dest in
            for (i, file) in files.enumerated() {
                let answer = try await caller.send(dest, i == 0 ? nonceReads[dest.name]! : file.request(.none))
                if let size = expected[i], answer.size != size {
                    throw AgentError(.invalidState, "\(dest.name) sees \(file.label) with size \(answer.size), not \(size)")
                }
                if let image = file.image, answer.format != image.format || answer.virtualSize != image.virtualSize {
                    throw AgentError(.invalidState, "\(dest.name) sees \(file.label) as \(answer.format) of virtual size \(answer.virtualSize.map(String.init) ?? "?"), not \(image.format) of \(image.virtualSize)")
                }
            }
        }
        for (dest, r) in zip(destinations, seen) {
            if case .failure(let e) = r {
                let remedy = e.code == .invalidState || e.code == .notFound
                    ? "\(dest.name) and \(source.name) do not see the same storage: check both pools (virsh pool-info \(inventory.poolName)), then \(rerun)"
                    : Self.remedy(e)
                throw ShareFailure(step: .verify, host: dest.name, error: e, remedy: remedy)
            }
        }
    }
}
