import AgentAPI
import AgentProtocol

extension ShareSteps {
    /// The export root exported to the source and every destination: on the storage host,
    /// or on every gateway of a cluster (any of them may take over the floating address).
    @Sendable static func export(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        let root = context.inventory.exportRoot
        let answers = try await context.sendToEveryAgent(.export, ExportRequest(path: root, clients: run.hosts.map(\.name)),
                                                         remedy: context.gatewayRemedy)
        for (host, exported) in answers {
            if exported.changed { run.result.changed.append(answers.count > 1 ? "export on \(host.name)" : "export") }
            context.emit(.step(.export, host: host.name,
                               detail: "\(root) to \(exported.clients.joined(separator: ",")) (\(exported.changed ? "changed" : "unchanged"))"))
        }
    }

    /// The pool (mount) or libnfs share record on every host involved, concurrently.
    @Sendable static func pools(_ context: FlowContext, _ run: inout ShareRun) async throws(ShareFailure) {
        let inventory = context.inventory, root = inventory.exportRoot, pool = inventory.poolName
        let request = PoolEnsureRequest(name: pool, server: inventory.nfsServer, export: root,
                                        target: run.options.attach == .mount ? root : nil, attach: run.options.attach)
        let caller = context.caller
        let answers = await FlowContext.concurrently(run.hosts) { h in try await caller.send(h, request) }
        for (h, r) in zip(run.hosts, answers) {
            switch r {
            case .failure(let e):
                throw ShareFailure(step: .pool, host: h.name, error: e, remedy: FlowContext.remedy(e))
            case .success(let answer):
                if answer.changed { run.result.changed.append("pool on \(h.name)") }
                context.emit(.step(.pool, host: h.name,
                                   detail: "\(pool) \(answer.stateWord) (\(answer.changed ? answer.actions.joined(separator: ",") : "unchanged"))"))
            }
        }
    }
}
