import AgentProtocol
import AgentRuntime
import ConfigFile

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
/// Exactly one storage host; any number of compute hosts; names unique. An optional
/// `[tls]` section names the client certificate for `agent = tls:HOST:PORT`.
public struct Inventory: Sendable, Equatable {
    public enum Role: String, Sendable, Codable { case storage, compute }

    public struct Host: Sendable, Equatable {
        public var name: String
        public var role: Role
        public var agent: Endpoint
    }

    public var storage: Host
    public var exportRoot: String
    public var compute: [Host]
    /// Client certificate for `tls:` agents (section `[tls]`: ca, cert, key); libvirt's
    /// client layout by default.
    public var tls: TLSFiles = .libvirtClient
    /// The name or address compute hosts use for the NFS server (default: the storage
    /// host's name), `nfs-server =` in `[storage NAME]`.
    public var nfsServer: String = ""
    /// The libvirt pool name used on every compute host, `pool =` in `[storage NAME]`.
    public var poolName: String = "shared-images"

    public var hosts: [Host] { [storage] + compute }

    public static let defaultPath = "/etc/storagectl/storagectl.conf"

    public static func load(path: String) throws -> Inventory {
        try Inventory(ConfigFile.load(path: path))
    }

    public init(_ file: ConfigFile) throws(ConfigError) {
        var storage: Host?
        var exportRoot = "/var/lib/libvirt/shared-images"
        var compute: [Host] = []
        var seen: [String: Int] = [:]
        var tls = TLSFiles.libvirtClient
        var nfsServer = ""
        var poolName = "shared-images"
        for section in file.sections {
            if section.kind == "tls", section.name == nil {
                try file.requireKnownKeys(section, ["ca", "cert", "key"])
                for e in section.entries where !e.value.hasPrefix("/") {
                    throw ConfigError(file: file.path, line: e.line, message: "\(e.key) must be an absolute path")
                }
                if let v = section.value("ca") { tls.ca = v }
                if let v = section.value("cert") { tls.certificate = v }
                if let v = section.value("key") { tls.privateKey = v }
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
            try file.requireKnownKeys(section, role == .storage ? ["agent", "export-root", "nfs-server", "pool"] : ["agent"])
            guard let entry = section.entry("agent") else {
                throw ConfigError(file: file.path, line: section.line,
                                  message: "[\(section.kind) \(name)] needs 'agent = tcp:HOST:PORT' or 'agent = unix:PATH'")
            }
            let endpoint: Endpoint
            do { endpoint = try Endpoint(parsing: entry.value) } catch {
                throw ConfigError(file: file.path, line: entry.line, message: error.message)
            }
            let host = Host(name: name, role: role, agent: endpoint)
            switch role {
            case .storage:
                if storage != nil {
                    throw ConfigError(file: file.path, line: section.line,
                                      message: "a second [storage] section; storagectl manages one storage host")
                }
                storage = host
                nfsServer = section.value("nfs-server") ?? name
                if let e = section.entry("nfs-server"), (try? Endpoint(parsing: "tcp:\(e.value):1")) == nil {
                    throw ConfigError(file: file.path, line: e.line, message: "nfs-server must be a host name or an address")
                }
                if let e = section.entry("pool") {
                    guard e.value.range(of: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", options: .regularExpression) != nil else {
                        throw ConfigError(file: file.path, line: e.line, message: "pool must be a libvirt pool name: letters, digits, '.', '_', '-'")
                    }
                    poolName = e.value
                }
                if let root = section.entry("export-root") {
                    guard root.value.hasPrefix("/"), !root.value.contains("/../"), !root.value.hasSuffix("/..") else {
                        throw ConfigError(file: file.path, line: root.line, message: "export-root must be an absolute path without '..'")
                    }
                    exportRoot = root.value
                }
            case .compute:
                compute.append(host)
            }
        }
        guard let storage else {
            throw ConfigError(file: file.path, line: nil, message: "no [storage NAME] section: name the storage host and its agent")
        }
        self.storage = storage
        self.exportRoot = exportRoot
        self.compute = compute
        self.tls = tls
        self.nfsServer = nfsServer
        self.poolName = poolName
    }
}
