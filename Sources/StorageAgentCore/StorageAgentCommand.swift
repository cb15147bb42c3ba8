import AgentAPI
import AgentProtocol
import AgentRuntime
import ArgumentParser
import ConfigFile
import ExportsFile

/// `storage-agent`: the storage host's agent.
public struct StorageAgentCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "storage-agent",
        abstract: "Serve the storage host's NFS exports to storagectl.",
        discussion: """
            Runs on the storage host as root, started by storage-agent.socket (systemd socket \
            activation) or by hand with --listen. It owns a marked block of the exports file and \
            applies it with the chosen backend. Every option can also be set in the config file \
            (default /etc/storagectl/storage-agent.conf): common options in [agent], the others in \
            [storage-agent], with the option's long name as key.

            Verbs: HELLO, PING, HEALTH, EXPORT, UNEXPORT, EXPORTS, SPACE, CHECKSUM; with the ganesha-ceph \
            backend also CEPH-SESSIONS and CEPH-EVICT. Protocol: docs/protocol.md; \
            operations: docs/storage-agent.md.
            A clean stop (SIGTERM, or the idle exit) exits 0.

            """ + ExitStatus.helpText)

    @OptionGroup public var agent: AgentOptions

    @Option(name: .customLong("config"), help: ArgumentHelp("Config file.", valueName: "file"))
    public var config: String?

    @Option(name: .customLong("exports-file"), help: ArgumentHelp("exports(5) file to manage (default /etc/exports).", valueName: "path"))
    public var exportsFile: String?

    @Option(name: .customLong("export-root"), help: ArgumentHelp("Directory under which shares are created (default /var/lib/libvirt/shared-images).", valueName: "path"))
    public var exportRoot: String?

    @Option(name: .customLong("backend"), help: ArgumentHelp("How exports are applied: kernel (exportfs -ra), ganesha (EXPORT blocks, FSAL VFS) or ganesha-ceph (a gateway of a CephFS cluster: FSAL CEPH, the export root a CephFS mount of the same path) (default kernel).", valueName: "kernel|ganesha|ganesha-ceph"))
    public var backend: String?

    @Option(name: .customLong("allow-client"), help: ArgumentHelp("A compute host that may be an export client (repeatable).", valueName: "host"))
    public var allowClient: [String] = []

    @Option(name: .customLong("ganesha-exports-file"), help: ArgumentHelp("Include file for NFS-Ganesha EXPORT blocks (default /etc/ganesha/storagectl-exports.conf).", valueName: "path"))
    public var ganeshaExportsFile: String?

    @Option(name: .customLong("ganesha-pidfile"), help: ArgumentHelp("NFS-Ganesha's pid file, for SIGHUP (default /run/ganesha/ganesha.pid).", valueName: "path"))
    public var ganeshaPidFile: String?

    @Option(name: .customLong("etab"), help: ArgumentHelp("exportfs' export table, read back to verify the kernel backend (default /var/lib/nfs/etab).", valueName: "path"))
    public var etab: String?

    @Option(name: .customLong("nfs-server"), help: ArgumentHelp("Address of the NFS server whose export list proves exports live, through libnfs (default 127.0.0.1).", valueName: "address"))
    public var nfsServer: String?

    @Option(name: .customLong("verify-export-list"), help: ArgumentHelp("Ask the NFS server for its export list after applying (default yes for ganesha, no for kernel).", valueName: "yes|no"))
    public var verifyExportList: String?

    @Option(name: .customLong("lock-timeout"), help: ArgumentHelp("Seconds to wait for another process editing the exports file before answering busy (default 10).", valueName: "seconds"))
    public var lockTimeout: Double?

    @Option(name: .customLong("ceph-filesystem"), help: ArgumentHelp("ganesha-ceph: the CephFS name, FSAL CEPH's Filesystem (default cephfs).", valueName: "name"))
    public var cephFilesystem: String?

    @Option(name: .customLong("ceph-user"), help: ArgumentHelp("ganesha-ceph: the Ceph user nfs-ganesha connects as, FSAL CEPH's User_Id; its sessions are the ones CEPH-EVICT evicts (default ganesha).", valueName: "id"))
    public var cephUser: String?

    @Option(name: .customLong("ceph-admin-id"), help: ArgumentHelp("ganesha-ceph: the Ceph user the agent's ceph commands run as (ceph --id); it needs mds 'allow *' to list and evict sessions (default admin).", valueName: "id"))
    public var cephAdminID: String?

    @Option(name: .customLong("ceph-conf"), help: ArgumentHelp("ganesha-ceph: the Ceph configuration file (default /etc/ceph/ceph.conf).", valueName: "path"))
    public var cephConf: String?

    @Option(name: .customLong("floating-address"), help: ArgumentHelp("ganesha-ceph: the gateways' floating address (keepalived); HEALTH says whether this gateway holds it (default none).", valueName: "address"))
    public var floatingAddress: String?

    @Flag(name: .customLong("print-unit-drop-in"), help: "Print the systemd drop-in that makes writable exactly what this configuration writes (the exports file's directory, the export root, /var/lib/nfs or the ganesha include file's directory), then exit. make install writes it to /etc/systemd/system/storage-agent.service.d/50-paths.conf.")
    public var printUnitDropIn = false

    public init() {}

    /// The drop-in for `c`: `ReadWritePaths=` reset, then the directories the agent (and
    /// exportfs, its child) write. Directories, not files: a file named alone becomes a
    /// bind mount that rename(2) cannot replace. The export root with `-` (it may be
    /// created later; the agent cannot create it under ProtectSystem=strict, HEALTH says so).
    public static func unitDropIn(_ c: StorageAgentConfiguration) -> String {
        func directory(_ path: String) -> String {
            let dir = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            return dir.isEmpty ? "/" : dir
        }
        var paths = [directory(c.exportsFile), "-" + c.exportRoot]
        switch c.backend {
        case .kernel: paths.append("-" + directory(c.etabPath))
        case .ganesha, .ganeshaCeph: paths.append(directory(c.ganeshaExportsFile))
        }
        var unique: [String] = []
        for p in paths where !unique.contains(p) && !unique.contains("-" + p) { unique.append(p) }
        return """
            # Written by `storage-agent --print-unit-drop-in` from the agent's configuration:
            # what it writes, and nothing else, is writable under ProtectSystem=strict.
            # Run it again (and systemctl daemon-reload) after changing exports-file,
            # export-root, backend, etab or ganesha-exports-file.
            [Service]
            ReadWritePaths=
            ReadWritePaths=\(unique.joined(separator: " "))

            """
    }

    static let sectionKeys: Set<String> = ["exports-file", "export-root", "backend", "allow-client",
                                           "ganesha-exports-file", "ganesha-pidfile", "etab", "nfs-server",
                                           "verify-export-list", "lock-timeout", "ceph-filesystem", "ceph-user",
                                           "ceph-admin-id", "ceph-conf", "floating-address"]

    /// Flags first, then the config file, then defaults.
    public func resolved(_ file: ConfigFile?) throws -> StorageAgentConfiguration {
        var c = StorageAgentConfiguration()
        let section = file?.sections("storage-agent").last
        if let file, let section { try file.requireKnownKeys(section, Self.sectionKeys) }
        if let file { for s in file.sections("agent") { try file.requireKnownKeys(s, AgentOptions.configKeys) } }
        func pick(_ flag: String?, _ key: String) -> String? { flag ?? section?.value(key) }
        if let v = pick(exportsFile, "exports-file") { c.exportsFile = v }
        if let v = pick(exportRoot, "export-root") { c.exportRoot = v }
        if let v = pick(backend, "backend") {
            guard let b = ExportsBackend(rawValue: v) else {
                throw ValidationError("backend must be kernel, ganesha or ganesha-ceph, not '\(v)'")
            }
            c.backend = b
        }
        c.allowedClients = allowClient.isEmpty ? (section?.values("allow-client") ?? []) : allowClient
        if let v = pick(ganeshaExportsFile, "ganesha-exports-file") { c.ganeshaExportsFile = v }
        if let v = pick(ganeshaPidFile, "ganesha-pidfile") { c.ganeshaPidFile = v }
        if let v = pick(etab, "etab") { c.etabPath = v }
        if let v = pick(nfsServer, "nfs-server") {
            guard (try? ClientAddress(v)) != nil else {
                throw ValidationError("nfs-server must be a host name or IP address, not '\(v)'")
            }
            c.nfsServer = v
        }
        if let v = pick(verifyExportList, "verify-export-list") {
            switch v {
            case "yes": c.verifyExportList = true
            case "no": c.verifyExportList = false
            default: throw ValidationError("verify-export-list must be yes or no, not '\(v)'")
            }
        }
        if let text = lockTimeout.map({ String($0) }) ?? section?.value("lock-timeout") {
            guard let v = Double(text), v > 0, v <= 3600 else {
                throw ValidationError("lock-timeout must be a number of seconds in (0, 3600], not '\(text)'")
            }
            c.lockTimeout = .milliseconds(Int64(v * 1000))
        }
        for (name, flag, key) in [("ceph-filesystem", cephFilesystem, "ceph-filesystem"), ("ceph-user", cephUser, "ceph-user"),
                                  ("ceph-admin-id", cephAdminID, "ceph-admin-id")] {
            guard let v = pick(flag, key) else { continue }
            guard GaneshaExports.FSAL.isCephName(v) else {
                throw ValidationError("\(name) must be 1-64 letters, digits, '.', '_' or '-', not '\(v)'")
            }
            switch name {
            case "ceph-filesystem": c.cephFilesystem = v
            case "ceph-user": c.cephUser = v
            default: c.cephAdminID = v
            }
        }
        if let v = pick(cephConf, "ceph-conf") { c.cephConf = v }
        if let v = pick(floatingAddress, "floating-address") {
            guard let address = try? ClientAddress(v), address.value.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) else {
                throw ValidationError("floating-address must be an IPv4 or IPv6 address, not '\(v)'")
            }
            c.floatingAddress = address.value
        }
        for (name, path) in [("exports-file", c.exportsFile), ("ceph-conf", c.cephConf), ("export-root", c.exportRoot),
                             ("ganesha-exports-file", c.ganeshaExportsFile), ("ganesha-pidfile", c.ganeshaPidFile),
                             ("etab", c.etabPath)]
        where !path.hasPrefix("/") {
            throw ValidationError("\(name) must be an absolute path, not '\(path)'")
        }
        // The export root and the clients are checked once, at start: a bad value stops
        // the agent instead of failing every EXPORT.
        do {
            _ = try ExportPolicy(exportRoot: c.exportRoot, allowedClients: c.allowedClients)
        } catch {
            throw ValidationError("\(error.description)")
        }
        return c
    }

    public func run() async throws {
        if printUnitDropIn {
            try await ExitStatus.reporting("storage-agent") {
                let file = try AgentMain.loadConfig(path: config, defaultPath: "/etc/storagectl/storage-agent.conf")
                print(Self.unitDropIn(try resolved(file)), terminator: "")
            }
            return
        }
        try await ExitStatus.reporting("storage-agent") { try await serve() }
    }

    func serve() async throws {
        try await AgentMain.serve(agent: "storage-agent", options: agent, configPath: config,
                                  defaultConfig: "/etc/storagectl/storage-agent.conf") { file in
            try StorageAgentHandler(configuration: try resolved(file))
        }
    }
}
