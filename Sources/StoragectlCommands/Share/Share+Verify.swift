import AgentAPI
import AgentProtocol

extension ShareSteps {
    /// Every destination sees every copy, and a nonce the source wrote beside the first
    /// one: the shared-storage test. Each destination has a nonce of its own (the agent
    /// removes a nonce once it is read), so destinations verify concurrently, one round
    /// each: the nonce is read with the first copy's VERIFY.
    @Sendable static func verify(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        guard let first = run.result.disks.first else { return }
        let inventory = context.inventory, source = run.source
        let ref = shareRef(inventory, run.options.attach)
        let root = inventory.exportRoot, attach = run.options.attach
        @Sendable func request(_ relative: String, _ nonce: NonceStep = .none) -> VerifyRequest {
            attach == .mount ? VerifyRequest(path: root + "/" + relative, nonce: nonce)
                             : VerifyRequest(path: relative, share: ref, nonce: nonce)
        }
        let tag = nonceTag(run.options.vm)
        var reads: [String: VerifyRequest] = [:]
        for dest in run.destinations {
            let name = "\(tag)-\(UInt32.random(in: 0...UInt32.max))"
            let written = try await context.send(.verify, source, request(first.path, .write(name: name)))
            guard let value = written.nonceValue else {
                throw ShareFailure(step: .verify, host: source.name,
                                   error: AgentError(.unsupported, "the agent answered VERIFY nonce-write without nonce-value="), remedy: "")
            }
            reads[dest.name] = request(first.path, .read(name: name, value: value))
        }
        let disks = run.result.disks
        let caller = context.caller
        let nonceReads = reads
        let seen = await FlowContext.concurrently(run.destinations) { dest in
            for (i, disk) in disks.enumerated() {
                let answer = try await caller.send(dest, i == 0 ? nonceReads[dest.name]! : request(disk.path))
                guard answer.size == disk.size else {
                    throw AgentError(.invalidState, "\(dest.name) sees \(disk.path) with size \(answer.size), not \(disk.size)")
                }
            }
        }
        for (dest, r) in zip(run.destinations, seen) {
            if case .failure(let e) = r {
                let remedy = e.code == .invalidState || e.code == .notFound
                    ? "\(dest.name) and \(source.name) do not see the same storage: check both pools (virsh pool-info \(inventory.poolName)), then run share again"
                    : FlowContext.remedy(e)
                throw ShareFailure(step: .verify, host: dest.name, error: e, remedy: remedy)
            }
            context.emit(.step(.verify, host: dest.name, detail: "sees \(disks.count) copy(ies) and \(source.name)'s nonce"))
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
