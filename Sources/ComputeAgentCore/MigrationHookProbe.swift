/// Whether this host's libvirt migration hook (docs/migration.md) is installed, and
/// whether libvirtd has loaded it (libvirtd reads its hooks at start and on SIGHUP only).
public struct HookStatus: Sendable, Equatable {
    public var installed: Bool
    public var loaded: Bool
    /// One sentence: where it is, or what is wrong and what to do.
    public var detail: String

    public init(installed: Bool, loaded: Bool, detail: String) {
        self.installed = installed
        self.loaded = loaded
        self.detail = detail
    }
}

/// The seam between the compute agent's verbs (HEALTH, MIGRATION-TARGET) and the hook's
/// installation on the host.
public protocol MigrationHookProbe: Sendable {
    func status() async -> HookStatus
}
