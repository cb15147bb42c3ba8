import AgentAPI
import AgentProtocol
#if canImport(Glibc)
import Glibc
#endif
import ExportsFile

/// What the NFS server must serve after a change: every managed export of the new file,
/// and the (path, client) pairs the change took away, which must no longer be served.
public struct ApplyPlan: Sendable, Equatable {
    /// The managed exports of the file as written, paths resolved to real paths.
    public var managed: [ManagedExport]
    /// Paths (real) and clients that must not be live any more. Pairs a foreign entry
    /// still exports are left out: the administrator's entries are not ours to check.
    public var gone: [GoneExport]

    public init(managed: [ManagedExport], gone: [GoneExport] = []) {
        self.managed = managed
        self.gone = gone
    }
}

/// An export (or one client of it) that a change removed.
public struct GoneExport: Sendable, Hashable {
    public var path: String
    public var client: String

    public init(path: String, client: String) {
        self.path = path
        self.client = client
    }
}

/// What applying did, for the reply and the logs.
public struct ApplyReport: Sendable, Equatable {
    /// True when the server was reloaded (false when it already served the plan).
    public var reloaded: Bool
    /// Lines the reload tool printed about entries that are not ours (foreign entries),
    /// passed on as warnings.
    public var warnings: [String]

    public init(reloaded: Bool, warnings: [String] = []) {
        self.reloaded = reloaded
        self.warnings = warnings
    }
}

/// The seam between the exports store and an NFS server.
///
/// An applier reads nothing from the request: it gets the file as written and proves,
/// from the server's own state, that the plan is live.
public protocol ExportsApplier: Sendable {
    var backend: ExportsBackend { get }

    /// What is not live yet, as sentences; empty when the server serves `plan` exactly.
    /// Changes nothing.
    func problems(_ plan: ApplyPlan, file: ExportsFile) async -> [String]

    /// Makes the server load `file` (its managed entries), then verifies `plan`.
    /// Throws `unavailable` (or `timeout`) naming what is not live.
    func apply(_ plan: ApplyPlan, file: ExportsFile) async throws(AgentError) -> ApplyReport
}

/// One entry of an NFS server's export list (MOUNT protocol `EXPORT`, `showmount -e`).
public struct ListedExport: Sendable, Hashable {
    public var path: String
    /// The client groups as the server lists them (`198.18.0.2/32`, a host name, ...).
    public var groups: [String]

    public init(path: String, groups: [String]) {
        self.path = path
        self.groups = groups
    }
}

/// Asks an NFS server for its export list: the last word on what it serves.
public protocol ExportListProbe: Sendable {
    /// The server's export list; throws `unavailable` when the server cannot be asked.
    func exports() async throws(AgentError) -> [ListedExport]
}

/// Compares an export list with a plan. Pure.
public enum ExportListCheck {
    /// The groups of a listed export as normalised client addresses (`/32` and `/128`
    /// host prefixes dropped), without `ignoring` (the probe's own address).
    static func clients(_ groups: [String], ignoring: Set<String>) -> Set<String> {
        var result = Set<String>()
        for group in groups {
            var text = group
            if text.hasSuffix("/32") { text = String(text.dropLast(3)) }
            if text.hasSuffix("/128") { text = String(text.dropLast(4)) }
            let value = (try? ClientAddress(text))?.value ?? text.lowercased()
            if !ignoring.contains(value) { result.insert(value) }
        }
        return result
    }

    /// What in `plan` the list does not show exactly, as sentences; empty when it does.
    /// `aliases` maps a host-name client to its addresses: servers list clients the way
    /// they matched them (NFS-Ganesha lists `198.18.0.2` for `source-example`).
    public static func problems(_ plan: ApplyPlan, listed: [ListedExport], ignoring: Set<String> = [],
                                aliases: [String: Set<String>] = [:]) -> [String] {
        var byPath: [String: Set<String>] = [:]
        for export in listed {
            byPath[ExportPath.lexicallyNormalized(export.path), default: []]
                .formUnion(clients(export.groups, ignoring: ignoring))
        }
        var problems: [String] = []
        for export in plan.managed {
            let path = ExportPath.lexicallyNormalized(export.path)
            let expected = Set(export.clients.map(\.address.value))
            guard let live = byPath[path] else {
                problems.append("the NFS server does not list \(export.path)")
                continue
            }
            let missing = expected.filter { !live.contains($0) && live.isDisjoint(with: aliases[$0] ?? []) }.sorted()
            let known = expected.reduce(into: expected) { $0.formUnion(aliases[$1] ?? []) }
            let extra = live.subtracting(known).sorted()
            if !missing.isEmpty { problems.append("the NFS server lists \(export.path) without \(missing.joined(separator: ", "))") }
            if !extra.isEmpty { problems.append("the NFS server lists \(export.path) also for \(extra.joined(separator: ", "))") }
        }
        for gone in plan.gone {
            if let live = byPath[ExportPath.lexicallyNormalized(gone.path)],
               live.contains(gone.client) || !live.isDisjoint(with: aliases[gone.client] ?? []) {
                problems.append("the NFS server still lists \(gone.path) for \(gone.client)")
            }
        }
        return problems
    }
}

/// Resolves host-name clients to addresses (getaddrinfo: /etc/hosts, then DNS), so an
/// export list that names clients by address can be compared with names. Blocking work
/// runs on `BlockingWork`.
enum HostResolver {
    static func aliases(_ plan: ApplyPlan) async -> [String: Set<String>] {
        var names = Set<String>()
        for export in plan.managed { for c in export.clients where c.address.kind == .hostname { names.insert(c.address.value) } }
        for gone in plan.gone { names.insert(gone.client) }
        let wanted = names
        return (try? await BlockingWork.run { () -> [String: Set<String>] in
            var result: [String: Set<String>] = [:]
            for name in wanted { result[name] = addresses(of: name) }
            return result
        }) ?? [:]
    }

    static func addresses(of name: String) -> Set<String> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var result = Set<String>()
        var p = list
        while let ai = p {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(ai.pointee.ai_addr, ai.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
                result.insert(String(decoding: bytes, as: UTF8.self))
            }
            p = ai.pointee.ai_next
        }
        return result
    }
}
