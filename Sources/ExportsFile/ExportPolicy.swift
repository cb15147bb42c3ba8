/// What storagectl may write: the export root and the inventory's compute hosts.
///
/// Invariants: `exportRoot` is a validated absolute, normalised path other than `/`;
/// `allowedClients` are validated, normalised, sorted and unique.
public struct ExportPolicy: Sendable, Hashable {
    /// Every export path must be this directory or below it.
    public let exportRoot: String
    /// The only clients storagectl exports to (the inventory's compute hosts).
    public let allowedClients: [ClientAddress]

    /// Validates the configuration values; throws `.invalidExportRoot` or a client error.
    public init(exportRoot: String, allowedClients: [String]) throws(ExportsError) {
        do {
            try ExportPath.validateShape(exportRoot)
        } catch {
            throw .invalidExportRoot(root: exportRoot, reason: error.description)
        }
        if exportRoot == "/" {
            throw .invalidExportRoot(root: exportRoot, reason: "exporting / with no_root_squash gives clients the whole server")
        }
        self.exportRoot = exportRoot
        var clients = Set<ClientAddress>()
        for client in allowedClients {
            clients.insert(try ClientAddress(client))
        }
        self.allowedClients = clients.sorted()
    }

    /// `path` if it may be exported (see `ExportPath.validate(_:under:)`).
    public func validatedPath(_ path: String) throws(ExportsError) -> String {
        try ExportPath.validate(path, under: exportRoot)
        return path
    }

    /// The normalised client if it is a valid explicit host in the inventory.
    public func validatedClient(_ client: String) throws(ExportsError) -> ClientAddress {
        let address = try ClientAddress(client)
        guard allowedClients.contains(address) else {
            throw .clientNotInInventory(client: client, allowed: allowedClients.map(\.value))
        }
        return address
    }
}

/// The options storagectl writes for one client.
///
/// Always rendered as `rw|ro,sync,no_subtree_check,no_root_squash|root_squash,fsid=N`;
/// only options from `ExportOptions.allowList` are ever accepted.
public struct ExportOptions: Sendable, Hashable {
    /// Read-write or read-only.
    public enum Access: Sendable, Hashable { case readWrite, readOnly }

    public var access: Access
    /// `root_squash` when true; storagectl's default is `no_root_squash` (libvirt runs
    /// QEMU as root on the compute hosts and must own the disk images).
    public var rootSquash: Bool

    public init(access: Access = .readWrite, rootSquash: Bool = false) {
        self.access = access
        self.rootSquash = rootSquash
    }

    /// `rw,sync,no_subtree_check,no_root_squash` (no fsid yet).
    public static let storagectlDefault = ExportOptions()

    /// The option keywords storagectl accepts; `fsid=N` (1...2147483647) is also accepted.
    public static let allowList: [String] = ["rw", "ro", "sync", "no_subtree_check", "no_root_squash", "root_squash"]

    /// The option list for a client, in storagectl's fixed order.
    public func rendered(fsid: UInt32) -> [String] {
        [
            access == .readWrite ? "rw" : "ro",
            "sync",
            "no_subtree_check",
            rootSquash ? "root_squash" : "no_root_squash",
            "fsid=\(fsid)",
        ]
    }

    /// Validates `options` against the allow-list and reads them back.
    /// Missing rw/ro means ro and missing squash means root_squash (exportfs defaults).
    public static func parse(_ options: [String]) throws(ExportsError) -> (options: ExportOptions, fsid: UInt32?) {
        var access: (Access, String)?
        var squash: (Bool, String)?
        var fsid: UInt32?
        for option in options {
            switch option {
            case "rw", "ro":
                let value: Access = option == "rw" ? .readWrite : .readOnly
                if let (previous, text) = access, previous != value { throw .optionsContradictory(text, option) }
                access = (value, option)
            case "root_squash", "no_root_squash":
                let value = option == "root_squash"
                if let (previous, text) = squash, previous != value { throw .optionsContradictory(text, option) }
                squash = (value, option)
            case "sync", "no_subtree_check":
                continue
            default:
                guard option.hasPrefix("fsid=") else { throw .optionNotAllowed(option: option) }
                let digits = option.dropFirst(5)
                guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                      let value = UInt32(digits), value >= 1, value <= StableID.maximumFsid else {
                    throw .optionInvalidValue(option: option, reason: "fsid must be a number in 1...2147483647; 0, root and UUIDs are not used")
                }
                if let fsid, fsid != value { throw .optionsContradictory("fsid=\(fsid)", option) }
                fsid = value
            }
        }
        return (ExportOptions(access: access?.0 ?? .readOnly, rootSquash: squash?.0 ?? true), fsid)
    }
}
