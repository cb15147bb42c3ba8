/// What the hook answers libvirt for `migrate begin`.
public enum HookDecision: Sendable, Equatable {
    /// Exit 0. `exempted` is set when the administrator's `exempt =` let it through
    /// (logged to the journal).
    case allow(exempted: Bool)
    /// Exit 1 with this one sentence on stderr (libvirt shows it to whoever migrates).
    case refuse(String)
}

/// The gate's decision for an incoming domain: pure, given the domain, the configuration,
/// the ready shares and a path resolver.
public enum MigrationGate {
    /// Lets through a domain the configuration exempts by name, a domain whose every
    /// storage layer is a network disk, an empty removable drive, or a local path whose
    /// canonical form is strictly inside a ready share root; refuses everything else,
    /// naming the first disk that fails and `storagectl share`.
    ///
    /// Every `file`, `block` and `dir` layer is checked, whatever the device: a cdrom or
    /// floppy with a source too (its image must be on a share like any disk; an empty
    /// drive has no source and passes). `volume`, `nvme`, `vhostuser` and other types
    /// name storage the hook cannot place without asking libvirt: refused.
    public static func decide(_ domain: DomainStorage, config: HookConfig, ready: ReadyShares,
                              paths: some PathResolver) -> HookDecision {
        if config.exempt.contains(domain.name) { return .allow(exempted: true) }
        for disk in domain.disks {
            for layer in disk.layers {
                switch layer.type {
                case "network":
                    continue
                case "file", "block", "dir":
                    guard let path = layer.path else { continue }        // an empty drive
                    if let why = notReady(path, ready: ready, paths: paths) {
                        return .refuse(sentence(domain.name, disk, path, why))
                    }
                default:
                    let what = layer.volume.map { "libvirt storage volume \($0)" } ?? "a '\(layer.type)' disk"
                    return .refuse(sentence(domain.name, disk, nil,
                                            "it is \(what), which storagectl's hook cannot place on a share without asking libvirt"))
                }
            }
        }
        return .allow(exempted: false)
    }

    /// Why `path` is not on a ready share, or nil when it is.
    static func notReady(_ path: String, ready: ReadyShares, paths: some PathResolver) -> String? {
        guard path.hasPrefix("/") else { return "its path is not absolute" }
        guard let real = paths.canonical(path) else { return "it does not exist on this host" }
        var lookalike: String?
        for root in ready.listed {
            // A root that is itself a link, or not normalised, is not ready: the record
            // names real directories only (the agent checks them before it mounts).
            guard paths.canonical(root) == root else {
                if real.hasPrefix(root + "/") || path.hasPrefix(root + "/") { lookalike = "the share \(root) is not a real directory on this host" }
                continue
            }
            guard real.hasPrefix(root + "/") else { continue }
            guard ready.mountPoints.contains(root) else { return "the share \(root) is not mounted on this host" }
            return nil
        }
        if let lookalike { return lookalike }
        if real != path {
            return "it resolves to \(real), which is not inside a share this host has ready"
        }
        return ready.listed.isEmpty ? "this host has no share ready" : "it is not inside a share this host has ready"
    }

    static func sentence(_ name: String, _ disk: DomainStorage.Disk, _ path: String?, _ why: String) -> String {
        let what = disk.device == "disk" ? "disk" : disk.device
        let location = path.map { " (\($0))" } ?? ""
        return "storagectl refuses to migrate \(name) to this host: its \(what) \(disk.target)\(location) is not on a share this host has ready (\(why)); run `storagectl share \(name)` first."
    }
}
