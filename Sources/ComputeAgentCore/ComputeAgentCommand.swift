import AgentProtocol
import AgentRuntime
import ImageCopy
import ArgumentParser
import ConfigFile

/// `compute-agent`: the agent on every KVM host.
public struct ComputeAgentCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "compute-agent",
        abstract: "Serve a KVM host's libvirt pools, domains and image copies to storagectl.",
        discussion: """
            Runs on every compute host as root, started by compute-agent.socket (systemd socket \
            activation) or by hand with --listen. Every option can also be set in the config file \
            (default /etc/storagectl/compute-agent.conf): common options in [agent], the others in \
            [compute-agent], with the option's long name as key.

            Verbs: HELLO, PING, HEALTH, DOMAIN, DOMAINS, POOL-ENSURE, COPY, ADOPT, RESTORE, VERIFY, LOCALIZE, \
            LIVE-COPY, LIVE-LOCALIZE, LIVE-ABORT, MIGRATION-FACTS, LIBVIRT-REACH, DIRTY-RATE, MIGRATION-TARGET, MIGRATE, MIGRATE-ABORT. \
            Protocol: docs/protocol.md; operations: docs/compute-agent.md.
            A clean stop (SIGTERM, or the idle exit) exits 0.

            Subcommands install-hook and uninstall-hook place and remove libvirt's migration hook \
            (docs/migration.md, docs/install.md).

            """ + ExitStatus.helpText,
        subcommands: [InstallHookCommand.self, UninstallHookCommand.self])

    @OptionGroup public var agent: AgentOptions

    @Option(name: .customLong("config"), help: ArgumentHelp("Config file.", valueName: "file"))
    public var config: String?

    @Option(name: .customLong("libvirt-uri"), help: ArgumentHelp("libvirt connection URI (default qemu:///system).", valueName: "uri"))
    public var libvirtURI: String?

    @Option(name: .customLong("state-dir"), help: ArgumentHelp(
        "Directory for copy jobs, saved domain definitions and libnfs share records (default /var/lib/storagectl).",
        valueName: "path"))
    public var stateDir: String?

    @Option(name: .customLong("copy-verify"), help: ArgumentHelp(
        "How COPY confirms a copy before it gets its final name: commit (default: the server committed every byte under one write verifier, right size; storagectl share then has the storage host check the digest), read-back (also reads every written byte back over NFS and compares it; about 1.5x the time) or full (also a second pass over the whole file). docs/image-copy.md.",
        valueName: "mode"))
    public var copyVerify: String?

    @Option(name: .customLong("share-root"), help: ArgumentHelp(
        "A directory under which shares may be attached: POOL-ENSURE target=, ADOPT pool-target= and VERIFY path= must be at or below one (repeatable; default /var/lib/libvirt/shared-images).",
        valueName: "path"))
    public var shareRoot: [String] = []

    @Option(name: .customLong("images-root"), help: ArgumentHelp(
        "The directory LOCALIZE copies disks back into (dir= must be at or below it; default /var/lib/libvirt/images).",
        valueName: "path"))
    public var imagesRoot: String?

    @Option(name: .customLong("nfs-server"), help: ArgumentHelp(
        "An NFS server requests may name with server= (COPY, ADOPT, VERIFY, LOCALIZE, LIVE-COPY, LIVE-LOCALIZE in libnfs mode) besides the servers of this host's pools and libnfs shares (repeatable).",
        valueName: "host"))
    public var nfsServer: [String] = []

    public init() {}

    static let sectionKeys: Set<String> = ["libvirt-uri", "state-dir", "copy-verify", "share-root", "images-root", "nfs-server"]

    /// An absolute, normalised directory other than / (a root the agent confines paths to).
    static func root(_ v: String, option: String) throws -> String {
        var path = v
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        guard (try? Validation.absolutePath(path, key: option)) != nil else {
            throw ValidationError("\(option) '\(v)' must be an absolute, normalised directory path other than / (only A-Z a-z 0-9 . _ + ~ @ - and '/')")
        }
        return path
    }

    public func resolved(_ file: ConfigFile?) throws -> ComputeAgentConfiguration {
        var c = ComputeAgentConfiguration()
        let section = file?.sections("compute-agent").last
        if let file, let section { try file.requireKnownKeys(section, Self.sectionKeys) }
        if let file { for s in file.sections("agent") { try file.requireKnownKeys(s, AgentOptions.configKeys) } }
        if let v = libvirtURI ?? section?.value("libvirt-uri") {
            guard !v.isEmpty, v.contains(":"), !v.unicodeScalars.contains(where: { $0.value <= 0x20 }) else {
                throw ValidationError("libvirt-uri '\(v)' is not a libvirt URI (for example qemu:///system)")
            }
            c.libvirtURI = v
        }
        if let v = stateDir ?? section?.value("state-dir") {
            guard v.hasPrefix("/"), v != "/", !v.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                throw ValidationError("state-dir '\(v)' must be an absolute directory path other than /")
            }
            var path = v
            while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
            c.stateDir = path
        }
        let shareRoots = shareRoot.isEmpty ? (section?.values("share-root") ?? []) : shareRoot
        if !shareRoots.isEmpty { c.shareRoots = try shareRoots.map { try Self.root($0, option: "share-root") } }
        if let v = imagesRoot ?? section?.value("images-root") { c.imagesRoot = try Self.root(v, option: "images-root") }
        let servers = nfsServer.isEmpty ? (section?.values("nfs-server") ?? []) : nfsServer
        c.nfsServers = try servers.map { v in
            guard let s = try? Validation.server(v) else {
                throw ValidationError("nfs-server '\(v)' is not a host name or IPv4 address")
            }
            return s
        }
        if let v = copyVerify ?? section?.value("copy-verify") {
            switch v {
            case "commit": c.copyVerification = .commit
            case "read-back": c.copyVerification = .readBack
            case "full": c.copyVerification = .fullChecksum
            default: throw ValidationError("copy-verify '\(v)' must be commit, read-back or full")
            }
        }
        return c
    }

    public func run() async throws {
        try await ExitStatus.reporting("compute-agent") { try await serve() }
    }

    func serve() async throws {
        ImageCopier.tuneMallocForCopies()     // the agent runs image copies (docs/image-copy.md)
        try await AgentMain.serve(agent: "compute-agent", options: agent, configPath: config,
                                  defaultConfig: "/etc/storagectl/compute-agent.conf") { file in
            let configuration = try resolved(file)
            return ComputeAgentHandler(configuration: configuration,
                                       hypervisor: LibvirtProbe(uri: configuration.libvirtURI),
                                       hook: configuration.libvirtURI.hasPrefix("test:")
                                           ? TestDriverHasNoHooks(uri: configuration.libvirtURI) as any MigrationHookProbe
                                           : InstalledMigrationHook(stateDir: configuration.stateDir))
        }
    }
}
