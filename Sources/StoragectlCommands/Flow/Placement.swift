import AgentAPI
import AgentProtocol

/// Which storage host a VM's disks are on, and where `share` puts a VM that is on none
/// yet. Pure functions over the inventory and the agents' answers (unit-tested); the
/// questions are asked in ``FlowContext/place(_:hosts:storage:)``.
public enum StoragePlacement {
    /// The storage site holding a disk: a file under its export root, or an NFS network
    /// disk (`nfs://SERVER/PATH`) of its server under its export root. nil for a disk on
    /// no share of the inventory.
    public static func site(of d: DiskRecord, in sites: [Inventory.StorageSite]) -> Inventory.StorageSite? {
        guard d.isDisk else { return nil }
        if d.isNetwork {
            guard d.source.hasPrefix("nfs://") else { return nil }
            let rest = d.source.dropFirst("nfs://".count)
            let server = rest.firstIndex(of: "/").map { String(rest[..<$0]) } ?? String(rest)
            let path = SharePath.onServer(d.source)
            let under = sites.filter { SharePath.isUnder(path, $0.exportRoot) }
            // The server names the storage host when several share a path layout.
            return under.first { $0.nfsServer == server || $0.host.name == server } ?? (under.count == 1 ? under[0] : nil)
        }
        return sites.first { SharePath.isUnder(d.source, $0.exportRoot) }
    }

    /// The storage sites a VM's disks are on, each once, in the inventory's order.
    public static func sites(of disks: [DiskRecord], in sites: [Inventory.StorageSite]) -> [Inventory.StorageSite] {
        let used = disks.compactMap { site(of: $0, in: sites) }
        return sites.filter { s in used.contains { $0.name == s.name } }
    }

    /// What was asked of one storage site before placing a VM: its free space (SPACE on
    /// its agent) and, per compute host involved, whether that host reaches its NFS
    /// server (PORT-PROBE of port 2049), or why not.
    public struct Candidate: Sendable, Equatable {
        public var site: String
        public var available: Result<UInt64, AgentError>
        /// Compute host name -> nil when it reaches the server, else why not.
        public var unreachable: [String: String]

        public init(site: String, available: Result<UInt64, AgentError>, unreachable: [String: String] = [:]) {
            self.site = site
            self.available = available
            self.unreachable = unreachable
        }

        /// Why this site cannot take the VM, or nil.
        public var refusal: String? {
            switch available {
            case .failure(let e): return "\(site): no free space answer (\(e.message))"
            case .success:
                guard unreachable.isEmpty else {
                    return "\(site): not reachable from " + unreachable.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
                }
                return nil
            }
        }
    }

    public enum Choice: Sendable, Equatable {
        /// The site, and why it was chosen (for the display).
        case site(String, reason: String)
        case refused(AgentError, remedy: String)
    }

    /// The site for a VM: the one its disks are on already (a re-run continues there;
    /// `--storage` naming another is refused: nothing spans two storage hosts); else
    /// `--storage NAME`; else the site with the most free space among those every
    /// involved compute host reaches (the first of the inventory on a tie).
    public static func choose(vm: String, sites: [Inventory.StorageSite], current: [Inventory.StorageSite], asked: String?,
                              candidates: [Candidate]) -> Choice {
        if current.count > 1 {
            return .refused(AgentError(.conflict, "\(vm) has disks on \(current.map(\.name).joined(separator: " and ")); a VM's storage is one storage host's"),
                            remedy: "unshare \(vm) (storagectl unshare \(vm)), then share it again")
        }
        if let here = current.first {
            if let asked, asked != here.name {
                return .refused(AgentError(.conflict, "\(vm)'s shared disks are on \(here.name), not \(asked)"),
                                remedy: "drop --storage to continue on \(here.name), or unshare \(vm) first to move it to \(asked)")
            }
            return .site(here.name, reason: "its shared disks are there")
        }
        if let asked {
            guard sites.contains(where: { $0.name == asked }) else {
                return .refused(AgentError(.invalidArgument, "--storage \(asked) is not a storage host of the inventory"),
                                remedy: "use one of: \(sites.map(\.name).joined(separator: ", "))")
            }
            return .site(asked, reason: "--storage")
        }
        if sites.count == 1 { return .site(sites[0].name, reason: "the only storage host") }
        var best: (String, UInt64)?
        for c in candidates where c.refusal == nil {
            guard case .success(let free) = c.available else { continue }
            if best == nil || free > best!.1 { best = (c.site, free) }
        }
        guard let best else {
            let why = candidates.compactMap(\.refusal).joined(separator: "; ")
            return .refused(AgentError(.unavailable, "no storage host can take \(vm): \(why)"),
                            remedy: "check the storage agents and NFS servers (storagectl hosts), or name one with --storage NAME")
        }
        let (name, free) = best
        let others = candidates.filter { $0.site != name }.map { c -> String in
            if let r = c.refusal { return r }
            if case .success(let f) = c.available { return "\(c.site) \(Bytes.human(f)) free" }
            return c.site
        }
        return .site(name, reason: "most free space (\(Bytes.human(free)))" + (others.isEmpty ? "" : "; " + others.joined(separator: "; ")))
    }
}

extension FlowContext {
    /// This context narrowed to `site` (every step then works with its host and share).
    func on(_ site: Inventory.StorageSite) -> FlowContext {
        FlowContext(inventory: inventory.selecting(site), caller: caller, emit: emit, interrupted: interrupted)
    }

    /// This context narrowed to the storage site the disks are on (the first of the
    /// inventory when they are on none: one storage host, or a VM not shared yet).
    func onSite(of disks: [DiskRecord]) -> FlowContext {
        guard inventory.storageSites.count > 1, let site = StoragePlacement.sites(of: disks, in: inventory.storageSites).first else {
            return self
        }
        return on(site)
    }

    /// Asks every storage site's agent for its free space and every compute host of
    /// `hosts` whether it reaches that site's NFS server (port 2049), all at once.
    func candidates(_ hosts: [Inventory.Host]) async -> [StoragePlacement.Candidate] {
        let caller = self.caller, sites = inventory.storageSites
        async let space = Self.concurrently(sites) { site in
            try await caller.send(site.host, SpaceQuery(path: site.exportRoot), timeout: .seconds(15)).available
        }
        // every (site, host) pair, site by site
        let pairs = sites.flatMap { site in hosts.map { (site, $0) } }
        async let probes = Self.concurrently(pairs) { site, h in
            try await caller.send(h, PortProbeRequest(host: site.nfsServer, ports: [2049], seconds: 2), timeout: .seconds(15))
        }
        let (free, reached) = await (space, probes)
        return sites.enumerated().map { i, site in
            var unreachable: [String: String] = [:]
            for (j, h) in hosts.enumerated() {
                switch reached[i * hosts.count + j] {
                case .failure(let e): unreachable[h.name] = e.message
                case .success(let answer):
                    if let p = answer.ports.first, !p.reachable { unreachable[h.name] = "\(site.nfsServer):2049 \(p.error ?? "does not answer")" }
                }
            }
            return StoragePlacement.Candidate(site: site.name, available: free[i], unreachable: unreachable)
        }
    }
}
