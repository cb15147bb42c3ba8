import AgentAPI
import AgentProtocol
import AgentRuntime

public struct UnshareOptions: Sendable {
    public var vm: String
    public var from: String?
    public var mode: CopyMode
    /// A live copy's limit per disk, MiB/s.
    public var bandwidthMiB: UInt64?

    public init(vm: String, from: String? = nil, mode: CopyMode = .auto, bandwidthMiB: UInt64? = nil) {
        self.vm = vm
        self.from = from
        self.mode = mode
        self.bandwidthMiB = bandwidthMiB
    }
}

/// One disk brought back to local storage.
public struct LocalizedDisk: Sendable, Equatable, Codable {
    public var disk: String
    public var from: String
    public var to: String
    public var size: UInt64
    /// The content digest of the local copy (docs/protocol.md, "Content digest"); empty
    /// for a live copy.
    public var digest: String
}

/// The result of an `unshare` run.
public struct UnshareResult: Sendable, Codable, Equatable {
    public var vm: String
    public var host: String
    public var storage: String
    public var export: String
    /// `live` (block copy and pivot while the VM runs) or `offline`.
    public var mode: CopyMode
    public var disks: [LocalizedDisk]
    /// Steps that changed something; empty when the run changed nothing.
    public var changed: [String]
    /// Export clients removed, and the ones left (other shared VMs need them, or they are
    /// not compute hosts of the inventory).
    public var removedClients: [String]
    public var remainingClients: [String]
    /// The copies left on the share (`STORAGE-HOST:PATH`): nothing is deleted.
    public var leftOnShare: [String]
    /// Other compute hosts that still define the VM on the share (a definition left by a
    /// migration): stale now, to be removed there.
    public var staleDefinitions: [String] = []
    public var done: Bool
}

/// What unshare's steps read and fill in.
public struct UnshareRun: Sendable {
    public let options: UnshareOptions
    public let location: VMLocation
    /// The VM's disks on the share.
    public let shared: [DiskRecord]
    /// The storage host the shared disks are on (the first of the inventory when none is).
    public let site: Inventory.StorageSite
    public var result: UnshareResult

    public var owner: Inventory.Host { location.host }
    /// The disks move live (the VM runs): LIVE-LOCALIZE instead of LOCALIZE.
    public var live: Bool { result.mode == .live }
}

/// `storagectl unshare`: the way back. The VM's disks are copied from the share to the
/// local storage of the host that defines it (LOCALIZE, verified), its definition is
/// put back onto them, the result is checked (DOMAIN), and export clients that no
/// shared VM needs any more are removed (DOMAINS on each client, UNEXPORT). Every step
/// is idempotent; the copies on the share are kept. Each step is a function of its own
/// (`Unshare+*.swift`).
public struct UnshareFlow: Sendable {
    public let context: FlowContext

    /// `interrupted` returns at the user's Ctrl-C: a live copy is then cancelled (LIVE-ABORT).
    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void,
                interrupted: @escaping @Sendable () async -> Void = { await MigrateFlow.never() }) {
        context = FlowContext(inventory: inventory, caller: caller, emit: emit, interrupted: interrupted)
    }

    /// The steps after locate, in order.
    static let steps: [FlowStep<UnshareRun>] = [
        FlowStep(.preflight, UnshareSteps.preflight),
        FlowStep(.localize, UnshareSteps.localize),
        FlowStep(.verify, UnshareSteps.verifyLocal),
        FlowStep(.unexport, UnshareSteps.unexport),
    ]

    public func run(_ options: UnshareOptions) async throws(ShareFailure) -> UnshareResult {
        var run = try await Self.start(context, options)
        try await FlowStep.run(Self.steps, await ShareFlow.serving(context.on(run.site)), &run)
        run.result.done = true
        return run.result
    }

    /// Locate: the host that defines the VM and its disks on the share.
    static func start(_ context: FlowContext, _ options: UnshareOptions) async throws(ShareFailure) -> UnshareRun {
        let location = try await context.locate(options.vm, from: options.from)
        let shared = location.disks.filter(context.isShared)
        context.emit(.step(.locate, host: location.host.name, detail: "\(options.vm) is defined here (\(location.state)); \(shared.count) disk(s) on the share"))
        let sites = StoragePlacement.sites(of: shared, in: context.inventory.storageSites)
        if sites.count > 1 {
            throw ShareFailure(step: .locate, host: sites.map(\.name).joined(separator: ","),
                               error: AgentError(.conflict, "\(options.vm) has disks on \(sites.map(\.name).joined(separator: " and ")); storagectl brings back a VM on one storage host"),
                               remedy: "move its disks by hand (virsh blockcopy) onto one storage host or local storage, then run unshare again")
        }
        let site = sites.first ?? context.inventory.site
        return UnshareRun(options: options, location: location, shared: shared, site: site,
                          result: UnshareResult(vm: options.vm, host: location.host.name, storage: site.name,
                                                export: site.exportRoot, mode: ShareFlow.mode(options.mode, state: location.state), disks: [], changed: [], removedClients: [],
                                                remainingClients: [], leftOnShare: [], done: false))
    }
}

/// The steps of `unshare`, one file each.
enum UnshareSteps {}
