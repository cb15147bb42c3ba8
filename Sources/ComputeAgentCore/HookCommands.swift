import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation

/// `compute-agent install-hook`: places storagectl's migration hook and makes libvirtd load it.
public struct InstallHookCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "install-hook",
        abstract: "Install storagectl's libvirt migration hook on this host and make libvirtd load it.",
        discussion: """
            Copies the hook binary (storagectl-migration-hook) to HOOKS-DIR/storagectl atomically \
            (mode 0755), sends SIGHUP to the libvirtd of the pid file (after checking /proc/PID/comm), \
            and records both in the state dir, so HEALTH's migration-hook check can tell installed \
            from loaded. Idempotent; run it again after an upgrade of the hook binary. Requires root. \
            docs/migration.md, docs/install.md.
            """)

    @Option(name: .customLong("hooks-dir"), help: ArgumentHelp("libvirt's qemu hook directory.", valueName: "dir"))
    public var hooksDir: String = HookInstallation.defaultHooksDir

    @Option(name: .customLong("hook-binary"), help: ArgumentHelp(
        "The hook binary to install (default: storagectl-migration-hook beside this compute-agent).", valueName: "path"))
    public var hookBinary: String?

    @Option(name: .customLong("libvirtd-pidfile"), help: ArgumentHelp("libvirtd's pid file.", valueName: "path"))
    public var libvirtdPidFile: String = HookInstallation.defaultPidFile

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("The compute agent's state dir (default /var/lib/storagectl).", valueName: "path"))
    public var stateDir: String = ComputeAgentConfiguration().stateDir

    public init() {}

    public func run() throws {
        let binary = hookBinary ?? Self.besideThisExecutable("storagectl-migration-hook")
        try HookCommandSupport.absolute(hooksDir, "--hooks-dir")
        try HookCommandSupport.absolute(libvirtdPidFile, "--libvirtd-pidfile")
        try HookCommandSupport.absolute(stateDir, "--state-dir")
        let installation = HookInstallation(hooksDir: hooksDir, libvirtdPidFile: libvirtdPidFile, stateDir: stateDir)
        try HookCommandSupport.report { () throws(AgentError) in try installation.install(binary: binary) }
    }

    static func besideThisExecutable(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (me as NSString).deletingLastPathComponent + "/" + name
    }
}

/// `compute-agent uninstall-hook`: removes the hook and makes libvirtd forget it.
public struct UninstallHookCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "uninstall-hook",
        abstract: "Remove storagectl's libvirt migration hook from this host and make libvirtd forget it.",
        discussion: "Removes HOOKS-DIR/storagectl (idempotent) and sends SIGHUP to libvirtd. The hooks dir and pid file default to those the last install-hook recorded.")

    @Option(name: .customLong("hooks-dir"), help: ArgumentHelp("libvirt's qemu hook directory.", valueName: "dir"))
    public var hooksDir: String?

    @Option(name: .customLong("libvirtd-pidfile"), help: ArgumentHelp("libvirtd's pid file.", valueName: "path"))
    public var libvirtdPidFile: String?

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("The compute agent's state dir (default /var/lib/storagectl).", valueName: "path"))
    public var stateDir: String = ComputeAgentConfiguration().stateDir

    public init() {}

    public func run() throws {
        var installation = HookInstallation.recorded(stateDir: stateDir)
        if let hooksDir { try HookCommandSupport.absolute(hooksDir, "--hooks-dir"); installation.hooksDir = hooksDir }
        if let libvirtdPidFile { try HookCommandSupport.absolute(libvirtdPidFile, "--libvirtd-pidfile"); installation.libvirtdPidFile = libvirtdPidFile }
        let chosen = installation
        try HookCommandSupport.report { () throws(AgentError) in try chosen.uninstall() }
    }
}

enum HookCommandSupport {
    static func absolute(_ path: String, _ option: String) throws {
        guard path.hasPrefix("/"), !path.split(separator: "/").contains(".."),
              !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ValidationError("\(option) '\(path)' must be an absolute path without '..'")
        }
    }

    /// Prints each line of what was done; an `AgentError` is its message on stderr and
    /// the exit status of its code (ExitStatus).
    static func report(_ body: () throws(AgentError) -> [String]) throws {
        do {
            for line in try body() { print(line) }
        } catch {
            FileHandle.standardError.write(Data("compute-agent: \(error.message)\n".utf8))
            throw ExitCode(ExitStatus.code(for: error.code))
        }
    }
}
