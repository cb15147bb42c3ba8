import AgentProtocol
import AgentRuntime
import Foundation

/// How the compute hosts reach the share.
public enum AttachMode: String, Sendable, CaseIterable, Codable {
    /// A libvirt netfs pool (kernel NFS mount); disks are files under the pool's target.
    case mount
    /// No kernel mount; disks become NFS network disks that QEMU opens with libnfs.
    case libnfs
}

public struct ShareOptions: Sendable {
    public var vm: String
    public var from: String?
    public var to: [String]
    public var attach: AttachMode
    public var dryRun: Bool

    public init(vm: String, from: String? = nil, to: [String] = [], attach: AttachMode = .mount, dryRun: Bool = false) {
        self.vm = vm
        self.from = from
        self.to = to
        self.attach = attach
        self.dryRun = dryRun
    }
}

/// What the flow tells its display as it goes.
public enum ShareEvent: Sendable, Equatable {
    case step(ShareStep, host: String, detail: String)
    case progress(disk: String, done: UInt64, total: UInt64, bytesPerSecond: Double)
    case note(String)
}

/// The steps of `share`, in order (`unshare` uses locate, preflight, localize, verify
/// and unexport).
public enum ShareStep: String, Sendable, Codable, CaseIterable {
    case locate, preflight, export, pool, copy, checksum, verify, adopt
    case localize, unexport
}

/// A failed step: which host, the agent's own words, and what to do.
public struct ShareFailure: Error, Sendable, CustomStringConvertible {
    public var step: ShareStep
    public var host: String
    public var error: AgentError
    public var remedy: String

    public var description: String {
        "\(step.rawValue) on \(host) failed: \(error.message) [\(error.code.rawValue)]" + (remedy.isEmpty ? "" : "\n  what to do: \(remedy)")
    }
}

/// One disk of the VM as the source agent reported it.
public struct DiskFact: Sendable, Equatable, Codable {
    public var target: String
    public var type: String
    public var device: String
    public var source: String
    public var allocated: UInt64
    public var virtualSize: UInt64
}

public struct CopiedDisk: Sendable, Equatable, Codable {
    public var disk: String
    public var path: String
    public var size: UInt64
    /// The content digest the copy engine computed (docs/protocol.md, "Content digest").
    public var digest: String
    public var alreadyPresent: Bool
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
    public var disks: [CopiedDisk]
    /// Steps that changed something; empty when the run changed nothing.
    public var changed: [String]
    public var ready: Bool
    public var dryRun: Bool
    public var plan: [String]
    /// How long the agent's COPY took (as it reported), and the whole run.
    public var copySeconds: Double = 0
    public var totalSeconds: Double = 0
}

/// `storagectl share`: export, pools, copy, verify, adopt; every step idempotent and
/// derived from what the agents report, so a second run continues where one stopped.
public struct ShareFlow: Sendable {
    public let inventory: Inventory
    public let caller: any AgentCaller
    public let emit: @Sendable (ShareEvent) -> Void

    public init(inventory: Inventory, caller: any AgentCaller, emit: @escaping @Sendable (ShareEvent) -> Void) {
        self.inventory = inventory
        self.caller = caller
        self.emit = emit
    }

    /// Runs one step on one host, turning an agent error into a `ShareFailure`.
    func step<T>(_ step: ShareStep, _ host: Inventory.Host, remedy: String = "",
                 _ body: () async throws(AgentError) -> T) async throws(ShareFailure) -> T {
        do {
            return try await body()
        } catch {
            throw ShareFailure(step: step, host: host.name, error: error, remedy: remedy.isEmpty ? Self.remedy(error) : remedy)
        }
    }

    static func remedy(_ e: AgentError) -> String {
        switch e.code {
        case .unavailable: return "check that the agent runs on that host (storagectl hosts), then run share again"
        case .timeout, .busy: return "run share again; it continues where it stopped"
        case .permissionDenied: return "reach the agent over tls: with a client certificate (docs/install.md)"
        default: return ""
        }
    }

    public func run(_ options: ShareOptions) async throws(ShareFailure) -> ShareResult {
        let storage = inventory.storage
        let caller = self.caller
        let emit = self.emit
        let started = ContinuousClock.now
        // 1. locate the VM and pick destinations
        let (source, disks, state) = try await locate(options)
        let destinations = try destinationsFor(options, source: source)
        emit(.step(.locate, host: source.name, detail: "\(options.vm) is defined here (\(state)); destinations: \(destinations.map(\.name).joined(separator: ", "))"))

        let root = inventory.exportRoot
        let local = disks.filter { $0.device == "disk" && $0.type == "file" && !$0.source.hasPrefix(root + "/") }
        let shared = disks.filter { $0.device == "disk" && ($0.type == "network" || $0.source.hasPrefix(root + "/")) }

        // 2. preflight: running VM, free space
        if !local.isEmpty && state != "shut-off" {
            throw ShareFailure(step: .preflight, host: source.name,
                               error: AgentError(.invalidState, "\(options.vm) is \(state); its disks can only be copied while it is shut off"),
                               remedy: "shut it down (virsh shutdown \(options.vm)), then run share again")
        }
        let needed = local.reduce(UInt64(0)) { $0 + $1.allocated }
        let space = try await step(.preflight, storage) { () throws(AgentError) in
            try await caller.ok(storage, Request("SPACE", ["path": root])).get()
        }
        let available = UInt64(space["available"] ?? "0") ?? 0
        if needed > 0, needed + needed / 20 > available {
            throw ShareFailure(step: .preflight, host: storage.name,
                               error: AgentError(.invalidState, "the images need \(Bytes.human(needed)) (+5%), \(root) has \(Bytes.human(available)) free"),
                               remedy: "free space on \(storage.name) or grow the file system, then run share again")
        }
        emit(.step(.preflight, host: storage.name, detail: "\(local.count) local disk(s), \(Bytes.human(needed)) allocated; \(Bytes.human(available)) free on \(storage.name)"))

        let hosts = [source] + destinations
        let pool = inventory.poolName
        let plan = [
            "export \(root) on \(storage.name) to \(hosts.map(\.name).joined(separator: ", ")) (rw, no_root_squash)",
            options.attach == .mount
                ? "netfs pool '\(pool)' (\(inventory.nfsServer):\(root) at \(root), nolock, NFSv3) on \(hosts.map(\.name).joined(separator: ", "))"
                : "libnfs share '\(pool)' recorded on \(hosts.map(\.name).joined(separator: ", "))",
            "copy \(local.count) disk(s) of \(options.vm) (\(Bytes.human(needed))) from \(source.name) into the share",
            "compare each copy's content digest on \(storage.name)'s disk with the copy's",
            "verify the copies from \(destinations.map(\.name).joined(separator: ", ")) and a nonce across hosts",
            "redefine \(options.vm) on \(source.name) onto the shared copies (\(options.attach.rawValue))",
        ]
        var result = ShareResult(vm: options.vm, source: source.name, destinations: destinations.map(\.name),
                                 attach: options.attach, storage: storage.name, export: root, pool: pool,
                                 disks: [], changed: [], ready: false, dryRun: options.dryRun, plan: plan)
        if options.dryRun { return result }

        // 3. export to the source and every destination
        var export = Request("EXPORT", ["path": root])
        for h in hosts { export.fields.append("client", h.name) }
        let exported = try await step(.export, storage) { () throws(AgentError) in try await caller.ok(storage, export).get() }
        if exported["changed"] == "yes" { result.changed.append("export") }
        emit(.step(.export, host: storage.name, detail: "\(root) to \(exported["clients"] ?? "") (\(exported["changed"] == "yes" ? "changed" : "unchanged"))"))

        // 4. pools on every host involved, concurrently
        let poolRequest: Request = options.attach == .mount
            ? Request("POOL-ENSURE", ["name": pool, "server": inventory.nfsServer, "export": root, "target": root])
            : Request("POOL-ENSURE", ["name": pool, "server": inventory.nfsServer, "export": root, "attach": "libnfs"])
        let pools = await Self.concurrently(hosts) { h in try await caller.ok(h, poolRequest).get() }
        for (h, r) in zip(hosts, pools) {
            switch r {
            case .failure(let e):
                throw ShareFailure(step: .pool, host: h.name, error: e, remedy: Self.remedy(e))
            case .success(let f):
                if f["changed"] == "yes" { result.changed.append("pool on \(h.name)") }
                emit(.step(.pool, host: h.name, detail: "\(pool) \(f["state"] ?? "ready") (\(f["changed"] == "yes" ? f["actions"] ?? "changed" : "unchanged"))"))
            }
        }

        // 5. copy the local disks (the agent skips disks already on the share)
        let target: Fields = options.attach == .mount ? ["pool": pool] : ["server": inventory.nfsServer, "export": root]
        var copy = Request("COPY", ["domain": options.vm])
        copy.fields.append(contentsOf: target)
        let copied = try await step(.copy, source, remedy: "run share again: a finished copy is not redone, a running one is joined") { () throws(AgentError) in
            try await caller.ok(source, copy, timeout: .seconds(24 * 3600)) { line in
                if case .progress(let f) = line {
                    emit(.progress(disk: f["disk"] ?? "?", done: UInt64(f["done"] ?? "") ?? 0,
                                   total: UInt64(f["total"] ?? "") ?? 0, bytesPerSecond: Double(f["rate"] ?? "") ?? 0))
                }
            }
        }
        for row in copied.data where row["path"] != nil {
            guard let digest = row["digest"] else {
                throw ShareFailure(step: .copy, host: source.name,
                                   error: AgentError(.unsupported, "the compute agent on \(source.name) reported disk \(row["disk"] ?? "?") without a content digest (an older agent: \(row["sha256"] != nil ? "sha256=" : "no digest="))"),
                                   remedy: "upgrade storage-agent and compute-agent on every host to this storagectl's version, then run share again")
            }
            result.disks.append(CopiedDisk(disk: row["disk"] ?? "", path: row["path"] ?? "",
                                           size: UInt64(row["size"] ?? "") ?? 0, digest: digest,
                                           alreadyPresent: row["already-present"] == "yes"))
        }
        if result.disks.contains(where: { !$0.alreadyPresent }) { result.changed.append("copy") }
        let copyOK = (try? copied.get()) ?? [:]
        result.copySeconds = Double(copyOK["seconds"] ?? "") ?? 0
        emit(.step(.copy, host: source.name, detail: "\(result.disks.count) disk(s), \(Bytes.human(UInt64(copyOK["bytes"] ?? "") ?? 0)) (\(result.disks.allSatisfy(\.alreadyPresent) ? "already there" : "copied in \(copyOK["seconds"] ?? "?") s"))"))
        if result.disks.isEmpty && shared.isEmpty {
            throw ShareFailure(step: .copy, host: source.name, error: AgentError(.invalidState, "\(options.vm) has no file disk to share"),
                               remedy: "check its disks: storagectl call \(source.name) DOMAIN name=\(options.vm)")
        }

        // 6. the storage host digests every copy on its own disk: the same content digest
        //    as the copy engine's, or the copy is not what was read
        for disk in result.disks {
            let path = root + "/" + disk.path
            let sum = try await step(.checksum, storage) { () throws(AgentError) in
                try await caller.ok(storage, Request("CHECKSUM", ["path": path]), timeout: .seconds(3600)).get()
            }
            guard let digest = sum["digest"] else {
                throw ShareFailure(step: .checksum, host: storage.name,
                                   error: AgentError(.unsupported, "the storage agent on \(storage.name) answered CHECKSUM without a content digest (an older agent: \(sum["sha256"] != nil ? "sha256=" : "no digest="))"),
                                   remedy: "upgrade storage-agent on \(storage.name) to this storagectl's version, then run share again")
            }
            guard digest == disk.digest, sum["size"] == String(disk.size) else {
                throw ShareFailure(step: .checksum, host: storage.name,
                                   error: AgentError(.invalidState, "\(path) on \(storage.name) has digest \(digest) and size \(sum["size"] ?? "?"); the copy reported digest \(disk.digest) and size \(disk.size)"),
                                   remedy: "remove the damaged copy on \(storage.name) and run share again")
            }
            emit(.step(.checksum, host: storage.name, detail: "\(disk.path) digest \(disk.digest.prefix(12))… matches"))
        }

        // 7. every destination sees the copies, and a nonce written by the source
        let verifyKeys: (String) -> Fields = { relative in
            options.attach == .mount ? ["path": root + "/" + relative] : ["pool": pool, "path": relative]
        }
        if let first = result.disks.first {
            let nonceName = "share-\(options.vm.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains(Character($0))) }.map(String.init).joined().prefix(32))-\(UInt32.random(in: 0...UInt32.max))"
            var write = Request("VERIFY", verifyKeys(first.path))
            write.fields.append("nonce-write", nonceName)
            let written = try await step(.verify, source) { () throws(AgentError) in try await caller.ok(source, write).get() }
            for dest in destinations {
                for disk in result.disks {
                    let seen = try await step(.verify, dest) { () throws(AgentError) in
                        try await caller.ok(dest, Request("VERIFY", verifyKeys(disk.path))).get()
                    }
                    guard seen["size"] == String(disk.size) else {
                        throw ShareFailure(step: .verify, host: dest.name,
                                           error: AgentError(.invalidState, "\(dest.name) sees \(disk.path) with size \(seen["size"] ?? "?"), not \(disk.size)"),
                                           remedy: "check the pool on \(dest.name) (virsh pool-info \(pool)) and run share again")
                    }
                }
                var read = Request("VERIFY", verifyKeys(first.path))
                read.fields.append("nonce-read", nonceName)
                read.fields.append("value", written["nonce-value"] ?? "")
                // The last destination removes the nonce file; earlier ones must leave it.
                _ = try await step(.verify, dest, remedy: "\(dest.name) and \(source.name) do not see the same storage: check both pools") { () throws(AgentError) in
                    try await caller.ok(dest, read).get()
                }
                emit(.step(.verify, host: dest.name, detail: "sees \(result.disks.count) copy(ies) and \(source.name)'s nonce"))
                if dest != destinations.last {
                    _ = try await step(.verify, source) { () throws(AgentError) in
                        var again = Request("VERIFY", verifyKeys(first.path))
                        again.fields.append("nonce-write", nonceName)
                        let w = try await caller.ok(source, again).get()
                        read.fields = Fields(read.fields.filter { $0.key != "value" })
                        read.fields.append("value", w["nonce-value"] ?? "")
                        return w
                    }
                }
            }
        }

        // 8. adopt: the domain on the source points at the shared copies
        var adopt = Request("ADOPT", ["domain": options.vm])
        if options.attach == .mount { adopt.fields.append("pool", pool) } else {
            adopt.fields.append("attach", "libnfs"); adopt.fields.append("server", inventory.nfsServer); adopt.fields.append("export", root)
        }
        let adopted = try await step(.adopt, source) { () throws(AgentError) in try await caller.ok(source, adopt).get() }
        if adopted["changed"] == "yes" { result.changed.append("adopt") }
        emit(.step(.adopt, host: source.name, detail: "\(options.vm) \(adopted["changed"] == "yes" ? "now runs from" : "already on") the shared copies (\(options.attach.rawValue))"))
        result.ready = true
        let total = ContinuousClock.now - started
        result.totalSeconds = Double(total.components.seconds) + Double(total.components.attoseconds) / 1e18
        return result
    }

    /// Asks every compute agent (or only `--from`) for the VM; exactly one may define it.
    func locate(_ options: ShareOptions) async throws(ShareFailure) -> (Inventory.Host, [DiskFact], String) {
        var candidates = inventory.compute
        if let from = options.from {
            guard let h = inventory.compute.first(where: { $0.name == from }) else {
                throw ShareFailure(step: .locate, host: from, error: AgentError(.invalidArgument, "--from \(from) is not a compute host of the inventory"),
                                   remedy: "use one of: \(inventory.compute.map(\.name).joined(separator: ", "))")
            }
            candidates = [h]
        }
        let caller = self.caller
        let request = Request("DOMAIN", ["name": options.vm])
        let answers = await Self.concurrently(candidates) { h in
            try await caller.call(h, request, timeout: .seconds(30), onLine: nil)
        }
        var found: [(Inventory.Host, Response, Fields)] = []
        var unreachable: [(Inventory.Host, AgentError)] = []
        for (h, r) in zip(candidates, answers) {
            switch r {
            case .failure(let e): unreachable.append((h, e))
            case .success(let response):
                switch response.result {
                case .success(let f): found.append((h, response, f))
                case .failure(let e) where e.code == .notFound: continue
                case .failure(let e): unreachable.append((h, e))
                }
            }
        }
        // A transient (running-only) definition on a migration peer is not the owner.
        let persistent = found.filter { $0.2["persistent"] == "yes" }
        let owners = persistent.isEmpty ? found : persistent
        guard owners.count <= 1 else {
            throw ShareFailure(step: .locate, host: owners.map(\.0.name).joined(separator: ","),
                               error: AgentError(.conflict, "\(options.vm) is defined on \(owners.map(\.0.name).joined(separator: " and "))"),
                               remedy: "name the host that owns it with --from HOST")
        }
        guard let (host, response, ok) = owners.first else {
            if let (h, e) = unreachable.first {
                throw ShareFailure(step: .locate, host: h.name, error: e,
                                   remedy: "\(options.vm) was not found on the hosts that answered; check \(h.name) (storagectl hosts) or pass --from HOST")
            }
            throw ShareFailure(step: .locate, host: candidates.map(\.name).joined(separator: ","),
                               error: AgentError(.notFound, "no compute host of the inventory defines \(options.vm)"),
                               remedy: "check the name (virsh list --all on the hosts) or add the host to the inventory")
        }
        let disks = response.data.compactMap { f -> DiskFact? in
            guard let target = f["disk"] else { return nil }
            return DiskFact(target: target, type: f["type"] ?? "", device: f["device"] ?? "disk", source: f["source"] ?? "",
                            allocated: UInt64(f["allocated"] ?? "") ?? 0, virtualSize: UInt64(f["virtual-size"] ?? "") ?? 0)
        }
        return (host, disks, ok["state"] ?? "unknown")
    }

    func destinationsFor(_ options: ShareOptions, source: Inventory.Host) throws(ShareFailure) -> [Inventory.Host] {
        if options.to.isEmpty {
            let others = inventory.compute.filter { $0 != source }
            guard !others.isEmpty else {
                throw ShareFailure(step: .locate, host: source.name, error: AgentError(.invalidArgument, "the inventory has no other compute host to share \(options.vm) with"),
                                   remedy: "add the migration peers to the inventory as [compute NAME] sections")
            }
            return others
        }
        var result: [Inventory.Host] = []
        for name in options.to {
            guard let h = inventory.compute.first(where: { $0.name == name }) else {
                throw ShareFailure(step: .locate, host: name, error: AgentError(.invalidArgument, "destination \(name) is not a compute host of the inventory"),
                                   remedy: "use one of: \(inventory.compute.map(\.name).joined(separator: ", "))")
            }
            guard h != source else {
                throw ShareFailure(step: .locate, host: name, error: AgentError(.invalidArgument, "\(name) is the source; a destination must be another host"), remedy: "")
            }
            if !result.contains(h) { result.append(h) }
        }
        return result
    }
}

extension ShareFlow {
    /// Runs `body` for every host at once; results in the order of `hosts`.
    ///
    /// Child tasks return only an index and a `Result` built outside typed-throws
    /// `do`/`catch` (a release build of Swift 6.3 crashed copying a
    /// `(Inventory.Host, Result<_, AgentError>)` out of a task group built that way).
    static func concurrently<T: Sendable>(_ hosts: [Inventory.Host],
                                          _ body: @escaping @Sendable (Inventory.Host) async throws -> T) async -> [Result<T, AgentError>] {
        await withTaskGroup(of: (Int, Result<T, AgentError>).self) { group in
            for (i, h) in hosts.enumerated() {
                group.addTask { (i, await capture { try await body(h) }) }
            }
            var results = [Result<T, AgentError>?](repeating: nil, count: hosts.count)
            for await (i, r) in group { results[i] = r }
            return results.map { $0! }
        }
    }

    static func capture<T>(_ body: () async throws -> T) async -> Result<T, AgentError> {
        do {
            return .success(try await body())
        } catch let e as AgentError {
            return .failure(e)
        } catch {
            return .failure(AgentError(.internal, "\(error)"))
        }
    }
}

public enum Bytes {
    public static func human(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), i = 0
        while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }
}
