/// One client of a storagectl-managed export, with its options.
public struct ManagedClient: Sendable, Hashable {
    public let address: ClientAddress
    public let options: ExportOptions

    public init(address: ClientAddress, options: ExportOptions) {
        self.address = address
        self.options = options
    }
}

/// A validated storagectl export line: `path client(opts,fsid=N) client(opts,fsid=N) ...`.
///
/// Invariants: `path` passes `ExportPath.validateShape`; `clients` are sorted by
/// `ClientAddress` order and unique; every client carries the same `fsid`; the rendered line
/// has exactly one space between fields and never a space between a client and its options.
public struct ManagedExport: Sendable, Hashable {
    public let path: String
    public let fsid: UInt32
    public let clients: [ManagedClient]

    /// Builds a managed export; clients are de-duplicated (the last options win) and sorted.
    public init(path: String, fsid: UInt32, clients: [ManagedClient]) {
        self.path = path
        self.fsid = fsid
        var byAddress: [ClientAddress: ExportOptions] = [:]
        for client in clients { byAddress[client.address] = client.options }
        self.clients = byAddress.keys.sorted().map { ManagedClient(address: $0, options: byAddress[$0]!) }
    }

    /// Reads back a line from the managed block, refusing anything storagectl would not
    /// have written (default options, unknown options, wildcard or anonymous clients,
    /// missing or inconsistent fsid).
    public init(entry: ExportEntry) throws(ExportsError) {
        let path = entry.path
        do {
            try ExportPath.validateShape(path)
        } catch {
            throw .managedEntryInvalid(path: path, reason: error.description)
        }
        if entry.defaultOptions != nil {
            throw .managedEntryInvalid(path: path, reason: "it has default options")
        }
        if entry.clients.isEmpty {
            throw .managedEntryInvalid(path: path, reason: "it has no clients, which exports to everyone")
        }
        var fsid: UInt32?
        var clients: [ManagedClient] = []
        for client in entry.clients {
            guard let host = client.host else {
                throw .managedEntryInvalid(path: path, reason: "it has an anonymous client")
            }
            guard let options = client.options else {
                throw .managedEntryInvalid(path: path, reason: "client \(host) has no options")
            }
            let address: ClientAddress
            let parsed: (options: ExportOptions, fsid: UInt32?)
            do {
                address = try ClientAddress(host)
                parsed = try ExportOptions.parse(options)
            } catch {
                throw .managedEntryInvalid(path: path, reason: error.description)
            }
            guard let clientFsid = parsed.fsid else {
                throw .managedEntryInvalid(path: path, reason: "client \(host) has no fsid")
            }
            if let fsid, fsid != clientFsid {
                throw .managedEntryInvalid(path: path, reason: "clients have different fsid values")
            }
            fsid = clientFsid
            clients.append(ManagedClient(address: address, options: parsed.options))
        }
        self.init(path: path, fsid: fsid!, clients: clients)
    }

    /// The export line without a line terminator.
    public var renderedLine: String {
        var out = ExportPath.escaped(path)
        for client in clients {
            out += " " + client.address.value + "(" + client.options.rendered(fsid: fsid).joined(separator: ",") + ")"
        }
        return out
    }

    /// The line as a generic `ExportEntry`.
    public var entry: ExportEntry {
        ExportEntry(path: path, clients: clients.map {
            ExportClient(host: $0.address.value, options: $0.options.rendered(fsid: fsid))
        })
    }
}
