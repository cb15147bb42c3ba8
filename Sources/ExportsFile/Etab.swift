/// One line of `/var/lib/nfs/etab` as written by exportfs:
/// `path<TAB>client(option,option,...)`, path and client octal-escaped (`\040`, `\043`).
public struct EtabEntry: Sendable, Hashable {
    /// The decoded path (exportfs wrote the realpath: symlinks already resolved).
    public let path: String
    /// The client as exportfs stored it (`*` for an anonymous or world export).
    public let client: String
    /// Every option in order; exportfs repeats some after `sec=` (the last one wins).
    public let options: [String]

    public init(path: String, client: String, options: [String]) {
        self.path = path
        self.client = client
        self.options = options
    }

    /// The last of `choices` present in `options` (e.g. `["rw", "ro"]`), or nil.
    public func lastOption(among choices: Set<String>) -> String? {
        options.last { choices.contains($0) }
    }

    /// The value of the last `key=value` option, or nil.
    public func lastValue(of key: String) -> String? {
        options.last { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }
}

/// Parsing `etab` and comparing it with what storagectl manages. Pure functions.
public enum Etab {
    /// Parses etab text. Returns the entries and the lines that did not parse (1-based
    /// line number and text), so that a checker can report them instead of ignoring them.
    public static func parse(_ text: String) -> (entries: [EtabEntry], unparsed: [(line: Int, text: String)]) {
        var entries: [EtabEntry] = []
        var unparsed: [(Int, String)] = []
        for (offset, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if line.last == "\r" { line = line.dropLast() }
            if line.isEmpty { continue }
            guard let tab = line.firstIndex(of: "\t") else {
                unparsed.append((offset + 1, String(line)))
                continue
            }
            let path = line[..<tab]
            let rest = line[line.index(after: tab)...]
            guard let open = rest.firstIndex(of: "("), rest.last == ")", !path.isEmpty else {
                unparsed.append((offset + 1, String(line)))
                continue
            }
            let client = rest[..<open]
            let inner = rest[rest.index(after: open)..<rest.index(before: rest.endIndex)]
            entries.append(EtabEntry(
                path: ExportPath.unescaped(String(path)),
                client: ExportPath.unescaped(String(client)),
                options: inner.isEmpty ? [] : inner.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            ))
        }
        return (entries, unparsed)
    }

    /// A difference between a managed export and the live export table.
    public struct Discrepancy: Sendable, Hashable, CustomStringConvertible {
        public enum Kind: Sendable, Hashable {
            /// The managed client is not in etab for the path.
            case missing
            /// etab has the client with a different value: `expected` (ours) vs `actual`
            /// (nil when etab has neither value of the pair).
            case optionMismatch(expected: String, actual: String?)
            /// etab exports a managed path to a client storagectl did not ask for (a foreign
            /// entry, or `*` from a `host (rw)` typo): access we did not intend.
            case unexpectedClient
        }

        public let path: String
        public let client: String
        public let kind: Kind

        public var description: String {
            switch kind {
            case .missing:
                return "\(path) is not live for \(client): run exportfs -ra and check its output"
            case .optionMismatch(let expected, let actual):
                return "\(path) is live for \(client) with \(actual ?? "no value") instead of \(expected)"
            case .unexpectedClient:
                return "\(path) is also live for \(client), which storagectl did not export"
            }
        }
    }

    /// What in `managed` is missing from, or different in, `etab`.
    ///
    /// Paths are compared after lexical normalisation (etab holds realpaths: resolve
    /// symlinks in `managed` first if the export root may contain any). Clients are compared
    /// after normalisation (case, IPv6 form). For each managed client every storagectl option
    /// is checked: rw/ro, sync/async, root_squash/no_root_squash,
    /// subtree_check/no_subtree_check (last occurrence in etab wins) and fsid.
    public static func discrepancies(managed: [ManagedExport], etab: [EtabEntry]) -> [Discrepancy] {
        var byPath: [String: [EtabEntry]] = [:]
        for entry in etab {
            byPath[ExportPath.lexicallyNormalized(entry.path), default: []].append(entry)
        }
        var result: [Discrepancy] = []
        for export in managed.sorted(by: { $0.path < $1.path }) {
            let path = ExportPath.lexicallyNormalized(export.path)
            let live = byPath[path] ?? []
            var matched = Set<Int>()
            for client in export.clients {
                guard let index = live.indices.first(where: { normalizedClient(live[$0].client) == client.address.value }) else {
                    result.append(Discrepancy(path: export.path, client: client.address.value, kind: .missing))
                    continue
                }
                matched.insert(index)
                let entry = live[index]
                let checks: [(Set<String>, String)] = [
                    (["rw", "ro"], client.options.access == .readWrite ? "rw" : "ro"),
                    (["sync", "async"], "sync"),
                    (["root_squash", "no_root_squash"], client.options.rootSquash ? "root_squash" : "no_root_squash"),
                    (["subtree_check", "no_subtree_check"], "no_subtree_check"),
                ]
                for (choices, expected) in checks {
                    let actual = entry.lastOption(among: choices)
                    if actual != expected {
                        result.append(Discrepancy(path: export.path, client: client.address.value,
                                                  kind: .optionMismatch(expected: expected, actual: actual)))
                    }
                }
                let actualFsid = entry.lastValue(of: "fsid")
                if actualFsid != String(export.fsid) {
                    result.append(Discrepancy(path: export.path, client: client.address.value,
                                              kind: .optionMismatch(expected: "fsid=\(export.fsid)", actual: actualFsid.map { "fsid=\($0)" })))
                }
            }
            for index in live.indices where !matched.contains(index) {
                result.append(Discrepancy(path: export.path, client: live[index].client, kind: .unexpectedClient))
            }
        }
        return result
    }

    private static func normalizedClient(_ client: String) -> String {
        var text = client
        if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        return (try? ClientAddress(text))?.value ?? client.lowercased()
    }
}
