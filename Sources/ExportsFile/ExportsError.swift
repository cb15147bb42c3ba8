/// Everything the ExportsFile module refuses, each with a message that says what to do.
///
/// `code` maps the error onto the agent protocol's error codes (`invalid-argument`,
/// `conflict`, `invalid-state`) so that callers map it in one place.
public enum ExportsError: Error, Sendable, Hashable, CustomStringConvertible {
    // Paths
    case pathEmpty
    case pathNotAbsolute(path: String)
    case pathNotNormalized(path: String, normalized: String)
    case pathHasDotDot(path: String)
    case pathHasWhitespace(path: String)
    case pathHasControlCharacter(path: String)
    case pathHasForbiddenCharacter(path: String, character: String)
    case pathTooLong(path: String, length: Int, limit: Int)
    case pathOutsideExportRoot(path: String, root: String)
    case invalidExportRoot(root: String, reason: String)
    case invalidPseudoPath(path: String, pseudo: String)
    case exportIdsExhausted
    case invalidCephName(filesystem: String, user: String)
    // Clients
    case noClients
    case clientEmpty
    case clientWildcard(client: String)
    case clientNetgroup(client: String)
    case clientSubnet(client: String)
    case clientAnonymous
    case clientHasOptions(client: String)
    case clientInvalid(client: String, reason: String)
    case clientNotInInventory(client: String, allowed: [String])
    // Options
    case optionNotAllowed(option: String)
    case optionInvalidValue(option: String, reason: String)
    case optionsContradictory(String, String)
    // File state
    case conflict(path: String, foreign: [ExportConflict])
    case malformedManagedBlock(reason: String)
    case managedEntryInvalid(path: String, reason: String)

    /// The agent protocol error code for this error.
    public var code: String {
        switch self {
        case .conflict: return "conflict"
        case .malformedManagedBlock, .managedEntryInvalid: return "invalid-state"
        default: return "invalid-argument"
        }
    }

    public var description: String {
        switch self {
        case .pathEmpty:
            return "The export path is empty: give an absolute directory path below the export root."
        case .pathNotAbsolute(let path):
            return "The export path \"\(path)\" is not absolute: give a path starting with \"/\"."
        case .pathNotNormalized(let path, let normalized):
            return "The export path \"\(path)\" is not normalised (empty or \".\" components, or a trailing \"/\"): use \"\(normalized)\"."
        case .pathHasDotDot(let path):
            return "The export path \"\(path)\" contains \"..\": give the real directory path without \"..\" components."
        case .pathHasWhitespace(let path):
            return "The export path \"\(path)\" contains whitespace: rename the directory to a name without spaces or tabs."
        case .pathHasControlCharacter(let path):
            return "The export path \(path.debugDescription) contains a control character (newline, NUL, ...): rename the directory."
        case .pathHasForbiddenCharacter(let path, let character):
            return "The export path \"\(path)\" contains \(character.debugDescription), which storagectl never writes into exports files: rename the directory."
        case .pathTooLong(let path, let length, let limit):
            return "The export path \"\(path)\" is \(length) bytes long; the limit is \(limit): use a shorter directory path."
        case .pathOutsideExportRoot(let path, let root):
            return "The export path \"\(path)\" is not the export root \"\(root)\" or below it: export a directory under \"\(root)\", or change the configured export root."
        case .invalidExportRoot(let root, let reason):
            return "The configured export root \"\(root)\" is invalid (\(reason)): fix export_root in the storagectl configuration."
        case .invalidPseudoPath(let path, let pseudo):
            return "The NFSv4 pseudo path \"\(pseudo)\" for \"\(path)\" is not a valid absolute path: fix the pseudo path mapping."
        case .exportIdsExhausted:
            return "All 65535 NFS-Ganesha Export_Id values are in use: remove unused exports."
        case .invalidCephName(let filesystem, let user):
            return "The CephFS name \(filesystem.debugDescription) or Ceph user \(user.debugDescription) is not a name the FSAL block can hold (1-64 letters, digits, '.', '_', '-'): fix ceph-filesystem or ceph-user in the storage agent's configuration."
        case .noClients:
            return "No clients were given: name at least one compute host from the inventory."
        case .clientEmpty:
            return "A client name is empty: give a host name or IP address from the inventory."
        case .clientWildcard(let client):
            return "The client \"\(client)\" is a wildcard; storagectl exports with no_root_squash and only to explicit hosts: name each compute host."
        case .clientNetgroup(let client):
            return "The client \"\(client)\" is a netgroup; storagectl exports only to explicit hosts: name each compute host."
        case .clientSubnet(let client):
            return "The client \"\(client)\" is a network/prefix; storagectl exports only to explicit hosts: name each compute host's address."
        case .clientAnonymous:
            return "An anonymous client (options without a host) exports to everyone: name each compute host."
        case .clientHasOptions(let client):
            return "The client \"\(client)\" carries options; give the bare host name or address (storagectl chooses the options)."
        case .clientInvalid(let client, let reason):
            return "The client \(client.debugDescription) is not a valid host name or IP address (\(reason)): use the name or address from the inventory."
        case .clientNotInInventory(let client, let allowed):
            let list = allowed.isEmpty ? "(none configured)" : allowed.joined(separator: ", ")
            return "The client \"\(client)\" is not a compute host in the inventory (allowed: \(list)): add it to the storagectl configuration first, or use one of those."
        case .optionNotAllowed(let option):
            return "The export option \"\(option)\" is not allowed (allowed: rw, ro, sync, no_subtree_check, no_root_squash, root_squash, fsid=N): remove it."
        case .optionInvalidValue(let option, let reason):
            return "The export option \"\(option)\" has an invalid value (\(reason)): use fsid=N with N in 1...2147483647."
        case .optionsContradictory(let first, let second):
            return "The export options \"\(first)\" and \"\(second)\" contradict each other: keep one."
        case .conflict(let path, let foreign):
            let lines = foreign.map { "line \($0.lineNumber): \($0.line)" }.joined(separator: "; ")
            return "\"\(path)\" is already exported outside storagectl's managed block (\(lines)): remove or change that entry by hand, then retry; storagectl never edits foreign entries."
        case .malformedManagedBlock(let reason):
            return "The storagectl managed block in the exports file is damaged (\(reason)): repair the \"# BEGIN storagectl managed block\" / \"# END storagectl managed block\" marker lines by hand, then retry."
        case .managedEntryInvalid(let path, let reason):
            return "The managed entry for \"\(path)\" was edited by hand and is no longer valid (\(reason)): run storagectl unshare for it, or restore the line."
        }
    }
}
