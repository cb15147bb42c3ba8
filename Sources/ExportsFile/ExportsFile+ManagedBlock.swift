/// The marker lines around storagectl's own entries.
///
/// A line is a marker when, after leading blanks, it starts with `beginPrefix`/`endPrefix`
/// (so a reworded tail after the prefix is still recognised). storagectl writes the full
/// `beginMarker`/`endMarker` texts.
public enum ManagedBlockMarkers {
    public static let beginMarker = "# BEGIN storagectl managed block: do not edit, use storagectl (unshare to remove)"
    public static let endMarker = "# END storagectl managed block"
    public static let beginPrefix = "# BEGIN storagectl managed block"
    public static let endPrefix = "# END storagectl managed block"
}

/// Where the managed block is.
public enum ManagedBlockState: Sendable, Hashable {
    /// No marker lines.
    case absent
    /// Line indices (into `ExportsFile.lines`) of the BEGIN and END markers.
    case present(begin: Int, end: Int)
    /// Markers exist but do not form exactly one BEGIN ... END pair; nothing is treated as
    /// managed and editing operations refuse to run.
    case malformed(reason: String)
}

/// A foreign entry that touches a path storagectl manages or wants to manage.
public struct ExportConflict: Sendable, Hashable {
    /// How the foreign path relates to ours.
    public enum Relation: Sendable, Hashable {
        /// The same directory (after octal-unescaping and lexical normalisation): a conflict.
        case samePath
        /// The foreign entry exports a parent of our path: a warning (its options may apply
        /// to our directory too, depending on crossmnt/nohide and the file system layout).
        case parent
        /// The foreign entry exports a directory below our path: a warning.
        case child
    }

    public let relation: Relation
    /// The foreign entry's path as written (decoded).
    public let foreignPath: String
    /// 1-based line number of the foreign entry.
    public let lineNumber: Int
    /// The foreign line's text (without terminator).
    public let line: String

    /// True for `.samePath`: storagectl refuses to export; other relations are warnings.
    public var isConflict: Bool { relation == .samePath }
}

/// A file produced by an editing operation and what changed.
public struct ExportsEdit: Sendable, Hashable {
    /// The new file (a fresh parse of the new bytes).
    public let file: ExportsFile
    /// What changed; `change.isEmpty` when `file` has the same bytes as before.
    public let change: ExportsChange
}

/// What an `export`/`unexport` did, for logs and the agent's reply.
public struct ExportsChange: Sendable, Hashable, CustomStringConvertible {
    public let path: String
    public internal(set) var blockCreated = false
    public internal(set) var blockRemoved = false
    public internal(set) var lineCreated = false
    public internal(set) var lineRemoved = false
    public internal(set) var addedClients: [String] = []
    public internal(set) var updatedClients: [String] = []
    public internal(set) var removedClients: [String] = []
    /// The fsid of the path's line after the operation (nil once removed).
    public internal(set) var fsid: UInt32?
    /// Foreign entries exporting a parent or child of `path`.
    public internal(set) var warnings: [ExportConflict] = []

    init(path: String) { self.path = path }

    /// True when the file is unchanged.
    public var isEmpty: Bool {
        !blockCreated && !blockRemoved && !lineCreated && !lineRemoved
            && addedClients.isEmpty && updatedClients.isEmpty && removedClients.isEmpty
    }

    public var description: String {
        var parts: [String] = []
        if blockCreated { parts.append("created the managed block") }
        if lineCreated { parts.append("added an export line for \(path)") }
        if !addedClients.isEmpty { parts.append("exported \(path) to \(addedClients.joined(separator: ", "))") }
        if !updatedClients.isEmpty { parts.append("changed options of \(path) for \(updatedClients.joined(separator: ", "))") }
        if !removedClients.isEmpty { parts.append("stopped exporting \(path) to \(removedClients.joined(separator: ", "))") }
        if lineRemoved { parts.append("removed the export line for \(path)") }
        if blockRemoved { parts.append("removed the empty managed block") }
        if parts.isEmpty { parts.append("\(path): nothing to change") }
        for warning in warnings {
            let relation = warning.relation == .parent ? "a parent" : "a subdirectory"
            parts.append("warning: line \(warning.lineNumber) exports \(relation) of \(path) (\(warning.foreignPath)) outside the managed block")
        }
        return parts.joined(separator: "; ")
    }
}

extension ExportsFile {
    private static func isMarker(_ line: ExportsLine, prefix: String) -> Bool {
        guard case .comment = line.kind else { return false }
        let content = line.content.drop(while: { $0 == " " || $0 == "\t" })
        return content.hasPrefix(prefix)
    }

    /// Locates the managed block.
    public var managedBlockState: ManagedBlockState {
        var begins: [Int] = []
        var ends: [Int] = []
        for (index, line) in lines.enumerated() {
            if Self.isMarker(line, prefix: ManagedBlockMarkers.beginPrefix) { begins.append(index) }
            if Self.isMarker(line, prefix: ManagedBlockMarkers.endPrefix) { ends.append(index) }
        }
        switch (begins.count, ends.count) {
        case (0, 0):
            return .absent
        case (1, 1) where begins[0] < ends[0]:
            return .present(begin: begins[0], end: ends[0])
        case (1, 1):
            return .malformed(reason: "the END marker comes before the BEGIN marker")
        case (0, _):
            return .malformed(reason: "an END marker without a BEGIN marker")
        case (_, 0):
            return .malformed(reason: "a BEGIN marker without an END marker")
        default:
            return .malformed(reason: "\(begins.count) BEGIN and \(ends.count) END markers; expected one of each")
        }
    }

    /// Indices of lines inside the block (markers excluded); empty unless `.present`.
    private var managedRange: Range<Int> {
        if case .present(let begin, let end) = managedBlockState { return (begin + 1)..<end }
        return 0..<0
    }

    /// Entries between the markers, in file order (empty when the block is absent or malformed).
    public var managedEntries: [ExportEntry] {
        lines[managedRange].compactMap(\.entry)
    }

    /// Entries outside the block, in file order (all entries when the block is malformed).
    public var foreignEntries: [ExportEntry] {
        foreignEntryLines.map(\.entry)
    }

    private var foreignEntryLines: [(index: Int, entry: ExportEntry)] {
        let range = managedRange
        var result: [(Int, ExportEntry)] = []
        for (index, line) in lines.enumerated() where !range.contains(index) {
            if let entry = line.entry { result.append((index, entry)) }
        }
        return result
    }

    /// The managed entries, validated.
    public func managedExports() throws(ExportsError) -> [ManagedExport] {
        if case .malformed(let reason) = managedBlockState { throw .malformedManagedBlock(reason: reason) }
        var result: [ManagedExport] = []
        for entry in managedEntries { result.append(try ManagedExport(entry: entry)) }
        return result
    }

    /// Foreign entries that export `path` (a conflict) or a parent or child of it (warnings).
    /// Paths are compared after octal-unescaping (done by the parser) and lexical
    /// normalisation; symlinks are not resolved.
    public func conflicts(for path: String) -> [ExportConflict] {
        // One split a path (`ExportPath.normalizedComponents`), the same relations as
        // `lexicallyNormalized` and `isStrictAncestor`, which split each path several times:
        // with 2,000 foreign entries those splits were most of EXPORT's time.
        let ours = ExportPath.normalizedComponents(path)
        var result: [ExportConflict] = []
        for (index, entry) in foreignEntryLines {
            let theirs = ExportPath.normalizedComponents(entry.path)
            let relation: ExportConflict.Relation
            if theirs == ours {
                relation = .samePath
            } else if theirs.count < ours.count && ours.starts(with: theirs) {
                relation = .parent
            } else if ours.count < theirs.count && theirs.starts(with: ours) {
                relation = .child
            } else {
                continue
            }
            result.append(ExportConflict(
                relation: relation, foreignPath: entry.path,
                lineNumber: lineNumber(ofLineAt: index), line: lines[index].content))
        }
        return result
    }

    // MARK: - Editing

    /// Ensures `path` is exported to each of `clients` with `options`, inside the managed
    /// block. Pure: returns the new file and what changed; `self` is untouched.
    ///
    /// - Creates the path's line (in path order inside the block) and the block (at the end
    ///   of the file) when absent. Existing clients keep their options; requested clients get
    ///   `options`. The fsid already on the line is kept; a new line gets
    ///   `StableID.fsid(for:avoiding:)` with every fsid used in the file avoided.
    /// - Idempotent: exporting what is already exported returns the same bytes.
    /// - Never changes a byte outside the block, except that a missing final newline is added
    ///   when the block is appended after the last line.
    /// - Throws for invalid paths or clients (`policy`), a foreign entry for the same path
    ///   (`.conflict`), a damaged block, or a hand-edited managed line for this path.
    public func export(
        path: String,
        clients: [String],
        options: ExportOptions = .storagectlDefault,
        policy: ExportPolicy
    ) throws(ExportsError) -> ExportsEdit {
        let path = try policy.validatedPath(path)
        if clients.isEmpty { throw .noClients }
        var requested: [ClientAddress] = []
        for client in clients { requested.append(try policy.validatedClient(client)) }

        let state = managedBlockState
        if case .malformed(let reason) = state { throw .malformedManagedBlock(reason: reason) }
        let found = conflicts(for: path)
        let sameConflicts = found.filter(\.isConflict)
        if !sameConflicts.isEmpty { throw .conflict(path: path, foreign: sameConflicts) }
        var change = ExportsChange(path: path)
        change.warnings = found.filter { !$0.isConflict }

        let existingIndex = try managedLineIndex(for: path)
        var newLines = lines.map(\.raw)
        let newExport: ManagedExport
        if let existingIndex {
            let existing = try ManagedExport(entry: lines[existingIndex].entry!)
            var merged: [ManagedClient] = existing.clients
            for address in requested {
                if let position = merged.firstIndex(where: { $0.address == address }) {
                    if merged[position].options != options {
                        merged[position] = ManagedClient(address: address, options: options)
                        change.updatedClients.append(address.value)
                    }
                } else {
                    merged.append(ManagedClient(address: address, options: options))
                    change.addedClients.append(address.value)
                }
            }
            change.fsid = existing.fsid
            if change.addedClients.isEmpty && change.updatedClients.isEmpty {
                return ExportsEdit(file: self, change: change)
            }
            newExport = ManagedExport(path: path, fsid: existing.fsid, clients: merged)
            newLines[existingIndex] = Array((newExport.renderedLine + "\n").utf8)
        } else {
            let fsid = StableID.fsid(for: path, avoiding: usedFsids())
            newExport = ManagedExport(path: path, fsid: fsid, clients: requested.map {
                ManagedClient(address: $0, options: options)
            })
            change.fsid = fsid
            change.lineCreated = true
            change.addedClients = newExport.clients.map(\.address.value)
            let line = Array((newExport.renderedLine + "\n").utf8)
            switch state {
            case .present(let begin, let end):
                var insertAt = end
                for index in (begin + 1)..<end {
                    if let entry = lines[index].entry, ExportPath.lexicallyNormalized(entry.path) > path {
                        insertAt = index
                        break
                    }
                }
                newLines.insert(line, at: insertAt)
            case .absent, .malformed:
                change.blockCreated = true
                Self.terminateLastLine(&newLines)
                newLines.append(Array((ManagedBlockMarkers.beginMarker + "\n").utf8))
                newLines.append(line)
                newLines.append(Array((ManagedBlockMarkers.endMarker + "\n").utf8))
            }
        }
        return ExportsEdit(file: ExportsFile(parsing: newLines.flatMap { $0 }, mode: mode), change: change)
    }

    /// Stops exporting `path` to `client`, or entirely when `client` is nil. Pure.
    ///
    /// - Removes the client from the path's managed line, the line when no client is left,
    ///   and (in `.shared` mode) the block when no entry is left; in `.dropIn` mode the
    ///   empty block stays.
    /// - Idempotent: removing what is not there returns the same bytes.
    /// - `path` and `client` are checked for shape only (not against the export root or the
    ///   inventory), so that exports made under an older configuration can still be removed.
    ///   Only lines inside the managed block are ever touched.
    public func unexport(path: String, client: String? = nil) throws(ExportsError) -> ExportsEdit {
        try ExportPath.validateShape(path)
        let address = try client.map { (text: String) throws(ExportsError) -> ClientAddress in try ClientAddress(text) }
        var change = ExportsChange(path: path)
        let state = managedBlockState
        if case .malformed(let reason) = state { throw .malformedManagedBlock(reason: reason) }
        guard case .present(let begin, let end) = state,
              let index = try managedLineIndex(for: path) else {
            return ExportsEdit(file: self, change: change)
        }
        let entry = lines[index].entry!
        var newLines = lines.map(\.raw)
        var lineGone = false
        if let address {
            let keep = entry.clients.filter { !Self.client($0, matches: address) }
            if keep.count == entry.clients.count { return ExportsEdit(file: self, change: change) }
            change.removedClients = [address.value]
            if keep.isEmpty {
                lineGone = true
            } else {
                var updated = entry
                updated.clients = keep
                newLines[index] = Array((updated.rendered() + "\n").utf8)
                change.fsid = (try? ManagedExport(entry: updated))?.fsid
            }
        } else {
            change.removedClients = entry.clients.compactMap(\.host)
            lineGone = true
        }
        if lineGone {
            change.lineRemoved = true
            let othersLeft = ((begin + 1)..<end).contains { $0 != index && lines[$0].entry != nil }
            if !othersLeft && mode == .shared {
                newLines.removeSubrange(begin...end)
                change.blockRemoved = true
            } else {
                newLines.remove(at: index)
            }
        }
        return ExportsEdit(file: ExportsFile(parsing: newLines.flatMap { $0 }, mode: mode), change: change)
    }

    // MARK: - Helpers

    private static func client(_ client: ExportClient, matches address: ClientAddress) -> Bool {
        guard let host = client.host else { return false }
        if let parsed = try? ClientAddress(host) { return parsed == address }
        return host == address.value
    }

    /// The index of the managed line for `path`; throws when the block has several.
    private func managedLineIndex(for path: String) throws(ExportsError) -> Int? {
        let normalized = ExportPath.lexicallyNormalized(path)
        let indices = managedRange.filter {
            guard let entry = lines[$0].entry else { return false }
            return ExportPath.lexicallyNormalized(entry.path) == normalized
        }
        if indices.count > 1 {
            throw .managedEntryInvalid(path: path, reason: "the managed block has \(indices.count) lines for it")
        }
        return indices.first
    }

    /// Every `fsid=N` number used anywhere in the file (managed or foreign).
    func usedFsids() -> Set<UInt32> {
        var used = Set<UInt32>()
        for entry in entries {
            let all = (entry.defaultOptions ?? []) + entry.clients.flatMap { $0.options ?? [] }
            for option in all where option.hasPrefix("fsid=") {
                if let value = UInt32(option.dropFirst(5)) { used.insert(value) }
            }
        }
        return used
    }

    /// Makes sure the last line ends its logical line, so that appended lines start fresh.
    /// Appends `\n`, or `\n\n` when a trailing backslash would turn one `\n` into a
    /// continuation.
    private static func terminateLastLine(_ lines: inout [[UInt8]]) {
        guard var candidate = lines.last else { return }
        // Also when it already ends in `\n`: a last line ending in a backslash-newline
        // continues into whatever is appended, and the BEGIN marker would become part of
        // it (found by Tests/Fuzz fuzz-exports). At most a newline and a blank line.
        for _ in 0..<2 where ExportsParser.splitLogicalLines(candidate + [UInt8(ascii: "x")]).count != 2 {
            candidate.append(UInt8(ascii: "\n"))
        }
        lines[lines.count - 1] = candidate
    }
}
