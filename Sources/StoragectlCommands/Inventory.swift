import AgentAPI
import AgentProtocol
import AgentRuntime
import ConfigFile
import Foundation
import SafeFiles

/// The hosts storagectl manages, from `/etc/storagectl/storagectl.conf`:
///
/// ```
/// [storage cargo-bay]
/// agent = tcp:198.18.0.1:7700
/// export-root = /var/lib/libvirt/shared-images
///
/// [compute source-example]
/// agent = tcp:198.18.0.2:7700
/// ```
///
/// One or more storage hosts (each with its own export root and pool name); any number
/// of compute hosts; names unique. An optional `[tls]` section names the client
/// certificate for `agent = tls:HOST:PORT`.
///
/// `storage`, `exportRoot`, `nfsServer` and `poolName` are those of one storage host: the
/// first of the file, until a flow narrows the inventory to the storage host a VM's disks
/// are on (``selecting(_:)``, ``StorageSite``).
///
/// A `[storage NAME]` with `gateway = HOST AGENT` lines (and no `agent`) is a cluster of
/// NFS gateways in front of one CephFS directory, reached through one floating address
/// (`nfs-server`): docs/storage.md.
public struct Inventory: Sendable, Equatable {
    public enum Role: String, Sendable, Codable { case storage, compute }

    public struct Host: Sendable, Equatable {
        public var name: String
        public var role: Role
        public var agent: Endpoint
        /// The libvirt URI a migration *to* this host uses (`migration-uri =` in
        /// `[compute NAME]`; default `qemu+tls://NAME/system`).
        public var migrationURI: MigrationURI? = nil
        /// The TCP ports QEMU's incoming migration listens on (`migration-ports = LOW-HIGH`,
        /// default libvirt's 49152-49215).
        public var migrationPorts: ClosedRange<Int> = MigrationURI.defaultPorts

        /// The URI to migrate to this host with.
        public var migrationTarget: MigrationURI { migrationURI ?? MigrationURI.default(for: name) }
    }

    /// One storage host with its share, or one cluster of CephFS gateways (``gateways``)
    /// that export the same CephFS directory: what a VM's disks are on (``storageSites``).
    public struct StorageSite: Sendable, Equatable {
        /// The section's name: the storage host's, or the cluster's.
        public var name: String
        /// The agent the flows ask: the storage host's; for a cluster, one gateway's (the
        /// first until ``FlowContext/servingGateway()`` picks the one that serves).
        public var host: Host
        public var exportRoot: String
        /// The name or address compute hosts mount from (`nfs-server =`, default the host's
        /// name; a cluster's floating address).
        public var nfsServer: String
        /// The libvirt pool compute hosts attach it as (`pool =`, default `shared-images`).
        public var poolName: String
        /// A cluster's gateways (`gateway = NAME AGENT` lines), in the order of the file;
        /// empty for one NFS server.
        public var gateways: [Host] = []

        public init(name: String, host: Host, exportRoot: String, nfsServer: String, poolName: String, gateways: [Host] = []) {
            self.name = name
            self.host = host
            self.exportRoot = exportRoot
            self.nfsServer = nfsServer
            self.poolName = poolName
            self.gateways = gateways
        }

        public var isCluster: Bool { !gateways.isEmpty }
        /// The hosts whose storage agents hold this site's exports.
        public var agents: [Host] { gateways.isEmpty ? [host] : gateways }
    }

    /// Every storage host, in the order of the file.
    public var storageSites: [StorageSite]
    /// The storage host (or cluster) the flows work with: the first of the file, until a
    /// flow narrows the inventory to the one a VM's disks are on (``selecting(_:)``).
    public var site: StorageSite
    public var storage: Host { get { site.host } set { site.host = newValue } }
    public var exportRoot: String { get { site.exportRoot } set { site.exportRoot = newValue } }
    public var compute: [Host]
    /// Client certificate for `tls:` agents (section `[tls]`: ca, cert, key); libvirt's
    /// client layout by default.
    public var tls: TLSFiles = .libvirtClient
    /// The name or address compute hosts use for the NFS server (default: the storage
    /// host's name), `nfs-server =` in `[storage NAME]`.
    public var nfsServer: String { get { site.nfsServer } set { site.nfsServer = newValue } }
    /// The libvirt pool name used on every compute host, `pool =` in `[storage NAME]`.
    public var poolName: String { get { site.poolName } set { site.poolName = newValue } }

    /// Every host with an agent: storage hosts, gateways, compute hosts.
    public var hosts: [Host] { storageSites.flatMap(\.agents) + compute }

    /// This inventory with `site` as the storage host the flows work with.
    public func selecting(_ site: StorageSite) -> Inventory {
        var copy = self
        copy.site = site
        return copy
    }

    /// The storage site named `name`.
    public func site(named name: String) -> StorageSite? { storageSites.first { $0.name == name } }

    public static let defaultPath = "/etc/storagectl/storagectl.conf"

    public static func load(path: String) throws -> Inventory {
        try Inventory(ConfigFile.load(path: path))
    }

    /// The client certificate files of the inventory at `path` (its `[tls]` section),
    /// without requiring any host: `call --endpoint` needs none, and the packaged
    /// inventory has every host commented out until the administrator names them.
    public static func tlsFiles(path: String) throws -> TLSFiles {
        try tlsFiles(ConfigFile.load(path: path))
    }

    public static func tlsFiles(_ file: ConfigFile) throws(ConfigError) -> TLSFiles {
        var tls = TLSFiles.libvirtClient
        for section in file.sections where section.kind == "tls" && section.name == nil {
            try apply(tlsSection: section, of: file, to: &tls)
        }
        return tls
    }

    private static func apply(tlsSection section: ConfigFile.Section, of file: ConfigFile, to tls: inout TLSFiles) throws(ConfigError) {
        try file.requireKnownKeys(section, ["ca", "cert", "key"])
        for e in section.entries where !e.value.hasPrefix("/") {
            throw ConfigError(file: file.path, line: e.line, message: "\(e.key) must be an absolute path")
        }
        if let v = section.value("ca") { tls.ca = v }
        if let v = section.value("cert") { tls.certificate = v }
        if let v = section.value("key") { tls.privateKey = v }
    }

    public init(_ file: ConfigFile) throws(ConfigError) {
        var sites: [(site: StorageSite, line: Int)] = []
        var compute: [Host] = []
        var seen: [String: Int] = [:]
        var tls = TLSFiles.libvirtClient
        for section in file.sections {
            if section.kind == "tls", section.name == nil {
                try Self.apply(tlsSection: section, of: file, to: &tls)
                continue
            }
            guard let role = Role(rawValue: section.kind) else {
                throw ConfigError(file: file.path, line: section.line,
                                  message: "unknown section [\(section.kind)]; use [storage NAME], [compute NAME] or [tls]")
            }
            guard let name = section.name else {
                throw ConfigError(file: file.path, line: section.line,
                                  message: "[\(section.kind)] needs a host name: [\(section.kind) NAME]")
            }
            if let first = seen[name] {
                throw ConfigError(file: file.path, line: section.line,
                                  message: "host '\(name)' is already defined at line \(first)")
            }
            seen[name] = section.line
            try file.requireKnownKeys(section, role == .storage ? ["agent", "export-root", "nfs-server", "pool", "gateway"]
                                                                 : ["agent", "migration-uri", "migration-ports"])
            var gateways: [Host] = []
            if role == .storage, !section.values("gateway").isEmpty {
                gateways = try Self.gateways(section, of: file, seen: &seen)
            }
            let endpoint: Endpoint
            if let gateway = gateways.first {
                endpoint = gateway.agent
            } else {
                guard let entry = section.entry("agent") else {
                    throw ConfigError(file: file.path, line: section.line,
                                      message: "[\(section.kind) \(name)] needs 'agent = tcp:HOST:PORT' or 'agent = unix:PATH'")
                }
                do { endpoint = try Endpoint(parsing: entry.value) } catch {
                    throw ConfigError(file: file.path, line: entry.line, message: error.message)
                }
            }
            var host = Host(name: name, role: role, agent: endpoint)
            if let e = section.entry("migration-uri") {
                guard let uri = MigrationURI(e.value) else {
                    throw ConfigError(file: file.path, line: e.line,
                                      message: "migration-uri must be qemu[+tcp|+tls|+ssh]://[USER@]HOST[:PORT]/system (qemu+tls://\(name)/system)")
                }
                host.migrationURI = uri
            }
            if let e = section.entry("migration-ports") {
                guard let range = MigrationURI.ports(e.value) else {
                    throw ConfigError(file: file.path, line: e.line, message: "migration-ports must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535 (49152-49215)")
                }
                host.migrationPorts = range
            }
            switch role {
            case .storage:
                if !gateways.isEmpty {
                    if let e = section.entry("agent") {
                        throw ConfigError(file: file.path, line: e.line,
                                          message: "[storage \(name)] names gateways: each gateway line has its agent ('gateway = NAME tls:HOST:PORT'), so 'agent =' does not belong here")
                    }
                    guard section.entry("nfs-server") != nil else {
                        throw ConfigError(file: file.path, line: section.line,
                                          message: "[storage \(name)] names gateways: set 'nfs-server =' to the gateways' floating address, the one address every compute host attaches through")
                    }
                    host = gateways[0]
                }
                let nfsServer = section.value("nfs-server") ?? name
                if let e = section.entry("nfs-server"), (try? Endpoint(parsing: "tcp:\(e.value):1")) == nil {
                    throw ConfigError(file: file.path, line: e.line, message: "nfs-server must be a host name or an address")
                }
                var poolName = "shared-images"
                if let e = section.entry("pool") {
                    guard e.value.range(of: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", options: .regularExpression) != nil else {
                        throw ConfigError(file: file.path, line: e.line, message: "pool must be a libvirt pool name: letters, digits, '.', '_', '-'")
                    }
                    poolName = e.value
                }
                var exportRoot = "/var/lib/libvirt/shared-images"
                if let root = section.entry("export-root") {
                    guard root.value.hasPrefix("/"), !root.value.contains("/../"), !root.value.hasSuffix("/..") else {
                        throw ConfigError(file: file.path, line: root.line, message: "export-root must be an absolute path without '..'")
                    }
                    exportRoot = root.value
                    while exportRoot.count > 1 && exportRoot.hasSuffix("/") { exportRoot.removeLast() }
                }
                // Compute hosts mount every share at its export root and name it by its
                // pool: two storage hosts with one of either would be one share to them.
                for (other, line) in sites {
                    if other.poolName == poolName {
                        throw ConfigError(file: file.path, line: section.line,
                                          message: "[storage \(name)] uses pool '\(poolName)' like [storage \(other.name)] (line \(line)): give each storage host its own 'pool = NAME'")
                    }
                    if RootedPath.isWithin(exportRoot, root: other.exportRoot) || RootedPath.isWithin(other.exportRoot, root: exportRoot) {
                        throw ConfigError(file: file.path, line: section.line,
                                          message: "[storage \(name)] export-root \(exportRoot) overlaps [storage \(other.name)]'s \(other.exportRoot) (line \(line)): compute hosts mount each at its export root, so give each storage host a path of its own")
                    }
                }
                sites.append((site: StorageSite(name: name, host: host, exportRoot: exportRoot, nfsServer: nfsServer, poolName: poolName,
                                                gateways: gateways), line: section.line))
            case .compute:
                compute.append(host)
            }
        }
        guard let first = sites.first?.site else {
            throw ConfigError(file: file.path, line: nil, message: "no [storage NAME] section: name the storage host and its agent")
        }
        self.storageSites = sites.map(\.site)
        self.site = first
        self.compute = compute
        self.tls = tls
    }

    /// The `gateway = NAME AGENT` lines of a cluster's section, each a storage host of
    /// its own (its name unique among all hosts: it is the gateway's host name, which
    /// the CephFS sessions of its NFS server carry).
    private static func gateways(_ section: ConfigFile.Section, of file: ConfigFile, seen: inout [String: Int]) throws(ConfigError) -> [Host] {
        var result: [Host] = []
        for e in section.entries where e.key == "gateway" {
            let parts = e.value.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard parts.count == 2, CephEvictRequest.isHostName(parts[0]) else {
                throw ConfigError(file: file.path, line: e.line, message: "gateway must be 'NAME AGENT' (gateway = gateway-a tls:198.18.0.7:7701), NAME the gateway's host name")
            }
            if let first = seen[parts[0]] {
                throw ConfigError(file: file.path, line: e.line, message: "host '\(parts[0])' is already defined at line \(first)")
            }
            seen[parts[0]] = e.line
            let endpoint: Endpoint
            do { endpoint = try Endpoint(parsing: parts[1]) } catch {
                throw ConfigError(file: file.path, line: e.line, message: error.message)
            }
            result.append(Host(name: parts[0], role: .storage, agent: endpoint))
        }
        return result
    }
}

/// A libvirt URI a peer-to-peer migration goes to: `qemu+tls://HOST/system` and the
/// like. Validated before it reaches an agent (the agent checks it again); the host is
/// also where `PORT-PROBE` connects to.
public struct MigrationURI: Sendable, Equatable, CustomStringConvertible {
    public static let defaultPorts = 49152...49215

    /// `qemu`, `qemu+tcp`, `qemu+tls`, `qemu+ssh`, `qemu+libssh`, `qemu+libssh2`.
    public let scheme: String
    public let user: String?
    /// A host name, an IPv4 address, or an IPv6 address without brackets.
    public let host: String
    public let port: Int?
    public let text: String

    public var description: String { text }

    /// libvirt's port for this transport (the URI's own port when it names one):
    /// libvirtd's TCP 16509, TLS 16514 (plain `qemu://` is TLS), ssh 22.
    public var libvirtPort: Int {
        if let port { return port }
        switch scheme {
        case "qemu+tcp": return 16509
        case "qemu+ssh", "qemu+libssh", "qemu+libssh2": return 22
        default: return 16514
        }
    }

    public static func `default`(for host: String) -> MigrationURI {
        MigrationURI("qemu+tls://\(host)/system") ?? MigrationURI(scheme: "qemu+tls", user: nil, host: host, port: nil, text: "qemu+tls://\(host)/system")
    }

    private init(scheme: String, user: String?, host: String, port: Int?, text: String) {
        self.scheme = scheme
        self.user = user
        self.host = host
        self.port = port
        self.text = text
    }

    /// nil unless `text` is `SCHEME://[USER@]HOST[:PORT]/system` with a scheme above.
    public init?(_ text: String) {
        let schemes = ["qemu", "qemu+tcp", "qemu+tls", "qemu+ssh", "qemu+libssh", "qemu+libssh2"]
        guard text.utf8.count <= 255, let sep = text.range(of: "://"), schemes.contains(String(text[..<sep.lowerBound])),
              text.hasSuffix("/system") else { return nil }
        let scheme = String(text[..<sep.lowerBound])
        var authority = Substring(text[sep.upperBound...].dropLast("/system".count))
        var user: String?
        if let at = authority.firstIndex(of: "@") {
            let u = String(authority[..<at])
            guard !u.isEmpty, u.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else { return nil }
            user = u
            authority = authority[authority.index(after: at)...]
        }
        var host: Substring
        var port: Int?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let rest = authority[authority.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { return nil }
                port = p
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        } else {
            host = authority
            if let colon = authority.firstIndex(of: ":") {
                host = authority[..<colon]
                guard let p = Int(authority[authority.index(after: colon)...]) else { return nil }
                port = p
            }
            guard !host.isEmpty, host.count <= 253, !host.hasPrefix("-"),
                  host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) else { return nil }
        }
        if let port, !(1...65535).contains(port) { return nil }
        self.init(scheme: scheme, user: user, host: String(host), port: port, text: text)
    }

    /// `LOW-HIGH` with 1024 <= LOW <= HIGH <= 65535.
    public static func ports(_ text: String) -> ClosedRange<Int>? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let lo = Int(parts[0].trimmingCharacters(in: .whitespaces)),
              let hi = Int(parts[1].trimmingCharacters(in: .whitespaces)), 1024 <= lo, lo <= hi, hi <= 65535 else { return nil }
        return lo...hi
    }
}
