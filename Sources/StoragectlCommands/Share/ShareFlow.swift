import AgentAPI
import AgentProtocol
import AgentRuntime

/// How share and unshare move a VM's disks.
public enum CopyMode: String, Sendable, Codable, CaseIterable {
    /// Live for a running (or paused) VM, offline for a shut-off one.
    case auto
    /// Block copy while the VM runs, then pivot (LIVE-COPY / LIVE-LOCALIZE).
    case live
    /// The copy engine on a shut-off VM, verified by content digest (COPY / LOCALIZE).
    case offline
}

public struct ShareOptions: Sendable {
    public var vm: String
    public var from: String?
    public var to: [String]
    public var attach: AttachMode
    public var dryRun: Bool
    public var mode: CopyMode
    /// A live copy's limit per disk, MiB/s.
    public var bandwidthMiB: UInt64?
    /// The storage host to put the VM on (`--storage`); nil: the one its shared disks are
    /// on, else the one with the most free space that every host involved reaches.
    public var storage: String?

    public init(vm: String, from: String? = nil, to: [String] = [], attach: AttachMode = .mount, dryRun: Bool = false,
                mode: CopyMode = .auto, bandwidthMiB: UInt64? = nil, storage: String? = nil) {
        self.storage = storage
        self.vm = vm
        self.from = from
        self.to = to
        self.attach = attach
        self.dryRun = dryRun
        self.mode = mode
        self.bandwidthMiB = bandwidthMiB
    }
}

public struct CopiedDisk: Sendable, Equatable, Codable {
    public var disk: String
    public var path: String
    public var size: UInt64
    /// The content digest the copy engine computed (docs/protocol.md, "Content digest");
    /// empty for a live copy (the guest writes while it is copied: nothing to compare).
    public var digest: String
    public var alreadyPresent: Bool
    /// A live copy's image format and virtual size (every destination saw the same).
    public var format: String? = nil
    public var virtualSize: UInt64? = nil
}

/// The result of a `share` run.
public struct ShareResult: Sendable, Codable, Equatable {
    public var vm: String
    public var source: String
    public var destinations: [String]
    public var attach: AttachMode
    public var storage: String
    public var export: String
    public var pool: String
    /// `live` (block copy and pivot while the VM runs) or `offline` (copy engine, VM shut off).
    public var mode: CopyMode
    public var disks: [CopiedDisk]
    /// Steps that changed something; empty when the run changed nothing.
    public var changed: [String]
    public var ready: Bool
    public var dryRun: Bool
    public var plan: [String]
    /// How long the agent's COPY took (as it reported), and the whole run.
    public var copySeconds: Double = 0
    public var totalSeconds: Double = 0
    /// Wall seconds of each step that ran, by step name (`locate`, `preflight`, ...,
    /// `adopt`): where a run's time went.
    public var stepSeconds: [String: Double] = [:]
}

/// What share's steps read and fill in.
public struct ShareRun: Sendable {
    public let options: ShareOptions
    public let location: VMLocation
    public let destinations: [Inventory.Host]
    /// Local file disks (to copy) and disks already on the share.
    public let local: [DiskRecord]
    public let shared: [DiskRecord]
    /// The storage host the VM's disks go to (or are on).
    public let site: Inventory.StorageSite
    public var result: ShareResult
    /// Set by the last step that must run (a dry run ends after the plan).
    public var finished = false
    /// The disks move live (the VM runs): LIVE-COPY instead of COPY, CHECKSUM and ADOPT.
    public var live: Bool { result.mode == .live }

    public var source: Inventory.Host { location.host }
    /// The source and every destination.
    public var hosts: [Inventory.Host] { [source] + destinations }
}

/// `storagectl share`: export, pools, copy, checksum, verify, adopt; every step
/// idempotent and derived from what the agents report, so a second run continues where
/// one stopped. Each step is a function of its own (`Share+*.swift`).
public struct ShareFlow: Sendable {
    public let context: FlowContext

    /// `interrupted` returns at the user's Ctrl-C: a live copy is then cancelled (LIVE-ABORT).
    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void,
                interrupted: @escaping @Sendable () async -> Void = { await MigrateFlow.never() }) {
        context = FlowContext(inventory: inventory, caller: caller, emit: emit, interrupted: interrupted)
    }

    /// The steps after locate, in order.
    static let steps: [FlowStep<ShareRun>] = [
        FlowStep(.preflight, ShareSteps.preflight),
        FlowStep(.export, ShareSteps.export),
        FlowStep(.pool, ShareSteps.pools),
        FlowStep(.copy, ShareSteps.copy),
        FlowStep(.checksum, ShareSteps.checksum),
        FlowStep(.verify, ShareSteps.verify),
        FlowStep(.adopt, ShareSteps.adopt),
    ]

    public func run(_ options: ShareOptions) async throws(ShareFailure) -> ShareResult {
        let started = ContinuousClock.now
        var run = try await Self.start(context, options)
        run.result.stepSeconds[ShareStep.locate.rawValue] = (ContinuousClock.now - started).seconds
        let site = await Self.serving(context.on(run.site))
        try await FlowStep.run(Self.steps, site, &run, until: \.finished) { step, seconds, run in
            run.result.stepSeconds[step.rawValue] = seconds
        }
        run.result.totalSeconds = (ContinuousClock.now - started).seconds
        return run.result
    }

    /// Locate: the host that defines the VM, its disks, and the destinations.
    static func start(_ context: FlowContext, _ options: ShareOptions) async throws(ShareFailure) -> ShareRun {
        let location = try await context.locate(options.vm, from: options.from)
        let destinations = try context.destinations(options.to, vm: options.vm, source: location.host)
        context.emit(.step(.locate, host: location.host.name,
                           detail: "\(options.vm) is defined here (\(location.state)); destinations: \(destinations.map(\.name).joined(separator: ", "))"))
        let site = try await place(context, options, location: location, destinations: destinations)
        let result = ShareResult(vm: options.vm, source: location.host.name, destinations: destinations.map(\.name),
                                 attach: options.attach, storage: site.name, export: site.exportRoot,
                                 pool: site.poolName, mode: Self.mode(options.mode, state: location.state), disks: [], changed: [],
                                 ready: false, dryRun: options.dryRun, plan: [])
        return ShareRun(options: options, location: location, destinations: destinations,
                        local: location.disks.filter(context.isLocal), shared: location.disks.filter(context.isShared), site: site, result: result)
    }

    /// The storage host for the VM (``StoragePlacement/choose``): free space and
    /// reachability are asked only when there is a choice to make.
    static func place(_ context: FlowContext, _ options: ShareOptions, location: VMLocation,
                      destinations: [Inventory.Host]) async throws(ShareFailure) -> Inventory.StorageSite {
        let sites = context.inventory.storageSites
        let current = StoragePlacement.sites(of: location.disks, in: sites)
        let ask = sites.count > 1 && current.isEmpty && options.storage == nil
        let candidates = ask ? await context.candidates([location.host] + destinations) : []
        switch StoragePlacement.choose(vm: options.vm, sites: sites, current: current, asked: options.storage, candidates: candidates) {
        case .refused(let error, let remedy):
            throw ShareFailure(step: .locate, host: options.storage ?? current.map(\.name).joined(separator: ","), error: error, remedy: remedy)
        case .site(let name, let reason):
            let site = context.inventory.site(named: name)!
            if sites.count > 1 {
                context.emit(.step(.locate, host: name, detail: "storage host for \(options.vm): \(name) (\(reason))"))
            }
            return site
        }
    }
}

extension ShareFlow {
    /// For a gateway cluster: the context on the gateway that serves, each gateway's state
    /// shown first. Unchanged for one NFS server.
    static func serving(_ context: FlowContext) async -> FlowContext {
        let (serving, states) = await context.servingGateway()
        for s in states { context.emit(.note("gateway \(s.name) of \(context.inventory.site.name): \(s.state.rawValue) (\(s.detail))")) }
        return serving
    }

    /// The mode a run uses: `auto` is live for a VM that is not shut off.
    static func mode(_ asked: CopyMode, state: DomainRunState) -> CopyMode {
        asked != .auto ? asked : (state == .shutOff ? .offline : .live)
    }
}

/// The steps of `share`, one file each.
enum ShareSteps {}
