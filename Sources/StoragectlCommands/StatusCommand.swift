import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation

/// What `storagectl status VM` found, asked fresh from the agents.
public struct VMStatus: Sendable, Codable, Equatable {
    public struct HostView: Sendable, Codable, Equatable {
        public var host: String
        public var definesVM: Bool
        public var exported: Bool
        public var seesDisks: Bool
        public var canRun: Bool
        public var problem: String?
    }
    public var vm: String
    public var owner: String?
    public var state: String?
    public var storage: String
    public var export: String
    public var sharedDisks: [String]
    public var localDisks: [String]
    public var hosts: [HostView]
    /// Every disk is on the share and at least one other host can run the VM.
    public var ready: Bool
    /// Why the VM's status could not be worked out (it is then not ready).
    public var problem: String? = nil
}

/// Computes a VM's status from the agents' answers.
public struct StatusFlow: Sendable {
    public let inventory: Inventory
    public let caller: any AgentCaller

    public init(inventory: Inventory, caller: any AgentCaller) {
        self.inventory = inventory
        self.caller = caller
    }

    public func status(_ vm: String) async throws(AgentError) -> VMStatus {
        let root = inventory.exportRoot
        let caller = self.caller
        let flow = ShareFlow(inventory: inventory, caller: caller, emit: { _ in })
        let located: (Inventory.Host, [DiskFact], String)
        do { located = try await flow.locate(ShareOptions(vm: vm)) } catch { throw error.error }
        let (owner, disks, state) = located
        let fileDisks = disks.filter { $0.device == "disk" }
        let shared = fileDisks.filter { $0.type == "network" || $0.source.hasPrefix(root + "/") }
        let local = fileDisks.filter { !shared.contains($0) }
        let clients: Set<String>
        do {
            let exports = try await caller.ok(inventory.storage, Request("EXPORTS"))
            clients = Set(exports.data.filter { $0["owner"] == "storagectl" && $0["path"] == root }
                .flatMap { ($0["clients"] ?? "").split(separator: ",").map(String.init) })
        }
        let poolName = inventory.poolName
        let views = await ShareFlow.concurrently(inventory.compute) { h -> VMStatus.HostView in
                    var view = VMStatus.HostView(host: h.name, definesVM: h == owner, exported: clients.contains(h.name),
                                                 seesDisks: false, canRun: false, problem: nil)
                    guard !shared.isEmpty else { view.problem = "no disk on the share"; return view }
                    let seen = await ShareFlow.capture { () async throws -> Void in
                        for d in shared {
                            var keys: Fields
                            if d.type == "network" {
                                let name = d.source.split(separator: "/", maxSplits: 3).dropFirst(2).first.map { "/" + $0 } ?? d.source
                                let relative = name.hasPrefix(root + "/") ? String(name.dropFirst(root.count + 1)) : name
                                keys = ["pool": poolName, "path": relative]
                            } else {
                                keys = ["path": d.source]
                            }
                            let answer = try await caller.ok(h, Request("VERIFY", keys)).get()
                            if answer["format"] == nil { throw AgentError(.invalidState, "cannot read \(d.source)") }
                        }
                    }
                    switch seen {
                    case .success: view.seesDisks = true
                    case .failure(let e): view.problem = e.message
                    }
                    view.canRun = view.seesDisks && (view.exported || view.definesVM) && local.isEmpty
                    if view.seesDisks, !view.exported { view.problem = "not an export client of \(root)" }
                    return view
        }
        let hosts = views.map { (try? $0.get())! }
        let ready = local.isEmpty && !shared.isEmpty && hosts.contains { !$0.definesVM && $0.canRun }
            && hosts.contains { $0.definesVM && $0.seesDisks }
        return VMStatus(vm: vm, owner: owner.name, state: state, storage: inventory.storage.name, export: root,
                        sharedDisks: shared.map(\.target), localDisks: local.map(\.target), hosts: hosts, ready: ready)
    }

    /// Every shared VM of the inventory: the domains the compute agents report with a
    /// disk on the share (`DOMAINS`, `shared=yes`), persistent definitions first, each
    /// name once.
    public func sharedVMs() async throws(AgentError) -> [String] {
        let caller = self.caller
        let answers = await ShareFlow.concurrently(inventory.compute) { h in
            try await caller.ok(h, Request("DOMAINS")).data
        }
        var names: [String] = []
        for (h, answer) in zip(inventory.compute, answers) {
            switch answer {
            case .failure(let e): throw AgentError(e.code, "\(h.name): \(e.message)")
            case .success(let rows):
                for row in rows where row["shared"] == "yes" {
                    if let name = row["name"], !names.contains(name) { names.append(name) }
                }
            }
        }
        return names.sorted()
    }

    /// `status` of every shared VM.
    public func statusOfAll() async throws(AgentError) -> [VMStatus] {
        var all: [VMStatus] = []
        for vm in try await sharedVMs() {
            do {
                all.append(try await status(vm))
            } catch {
                all.append(VMStatus(vm: vm, owner: nil, state: nil, storage: inventory.storage.name, export: inventory.exportRoot,
                                    sharedDisks: [], localDisks: [], hosts: [], ready: false,
                                    problem: "\(error.message) [\(error.code.rawValue)]"))
            }
        }
        return all
    }

    public static func table(_ s: VMStatus) -> String {
        if let problem = s.problem { return "\(s.vm): NOT READY: \(problem)\n" }
        var out = "\(s.vm): \(s.ready ? "READY" : "NOT READY") (defined on \(s.owner ?? "?"), \(s.state ?? "?")); storage \(s.storage):\(s.export)\n"
        if !s.localDisks.isEmpty { out += "  local disks (not shared): \(s.localDisks.joined(separator: ", "))\n" }
        out += "  shared disks: \(s.sharedDisks.isEmpty ? "none" : s.sharedDisks.joined(separator: ", "))\n"
        let rows = [["HOST", "DEFINES", "EXPORTED", "SEES-DISKS", "CAN-RUN", "PROBLEM"]] + s.hosts.map {
            [$0.host, $0.definesVM ? "yes" : "no", $0.exported ? "yes" : "no", $0.seesDisks ? "yes" : "no", $0.canRun ? "yes" : "no", $0.problem ?? ""]
        }
        var widths = [Int](repeating: 0, count: 6)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        for r in rows {
            out += "  " + r.enumerated().map { i, c in i == 5 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces) + "\n"
        }
        return out
    }
}

/// `storagectl status VM`.
public struct StatusCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show whether a shared VM is ready to run on its migration peers, asked fresh from the agents.",
        discussion: """
            Without VM: every VM that has a disk on the share (as the compute agents report \
            it). For each VM: the host that defines it, its disks (shared or local), and per compute host \
            whether it is an export client, whether it sees every shared disk (VERIFY through \
            its own pool or libnfs), and so whether it can run the VM.

            EXIT STATUS
              0   ready (every VM listed)
              1   not ready (at least one)
              66  no compute host defines VM
              69  an agent could not be reached
            """)

    @OptionGroup public var global: GlobalOptions

    @Argument(help: "The libvirt domain name (default: every VM with a disk on the share).")
    public var vm: String?

    @Flag(name: .customLong("json"), help: "Print one JSON document.")
    public var json = false

    public init() {}

    public func run() async throws {
        try await ExitStatus.reporting("storagectl") {
            let inventory = try Inventory.load(path: global.config)
            let flow = StatusFlow(inventory: inventory,
                                  caller: LiveAgentCaller(tls: inventory.tls, connectTimeout: global.timeoutDuration))
            let statuses: [VMStatus]
            if let vm { statuses = [try await flow.status(vm)] } else { statuses = try await flow.statusOfAll() }
            if json {
                let e = ShareFormatting.encoder()
                if vm != nil {
                    print(String(decoding: try e.encode(statuses[0]), as: UTF8.self))
                } else {
                    struct Doc: Encodable { var vms: [VMStatus] }
                    print(String(decoding: try e.encode(Doc(vms: statuses)), as: UTF8.self))
                }
            } else if statuses.isEmpty {
                print("no VM has a disk on the share (storagectl share VM puts one there)")
            } else {
                print(statuses.map(StatusFlow.table).joined(separator: "\n"), terminator: "")
            }
            if statuses.contains(where: { !$0.ready }) { throw ExitCode(ExitStatus.failure) }
        }
    }
}
