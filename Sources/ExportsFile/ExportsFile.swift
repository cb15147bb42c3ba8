/// A parsed exports(5) file that renders back to exactly the bytes it was parsed from.
///
/// Invariants:
/// - `ExportsFile(parsing: b).bytes == b` for every byte sequence `b` (lossless round trip:
///   comments, blank lines, continuations, tabs, trailing whitespace, CRLF, a missing final
///   newline and lines that do not parse are all kept verbatim).
/// - The file is a sequence of logical lines. A logical line ends at a `\n` that is not
///   escaped by a backslash (`\` + `\n` continues the line, as nfs-utils' `xgetc` does),
///   except that a comment runs to the end of its physical line and cannot be continued.
/// - Every line keeps its exact bytes (`ExportsLine.raw`); the parsed view is derived from
///   them. Editing operations (see `ExportsFile+ManagedBlock.swift`) only ever replace,
///   insert or remove whole lines inside storagectl's managed block.
///
/// The value is immutable from the outside: operations return a new file.
public struct ExportsFile: Sendable, Hashable {
    /// How storagectl owns this file.
    public enum Mode: Sendable, Hashable {
        /// A shared file such as `/etc/exports`: only the managed block is ours; it is created
        /// at the end of the file when needed and removed when it becomes empty.
        case shared
        /// A drop-in file such as `/etc/exports.d/storagectl.exports` that storagectl owns:
        /// same operations and markers, but an empty managed block is kept so that the file
        /// still says who owns it. Anything found outside the block is still preserved and
        /// treated as foreign (someone edited our file by hand; we report, never delete).
        case dropIn
    }

    /// The logical lines, in file order. Concatenating their `raw` bytes gives the file.
    public let lines: [ExportsLine]
    /// The ownership mode the file was parsed with.
    public let mode: Mode

    /// Parses `bytes`. Never fails: anything that does not parse becomes an `.opaque` line.
    public init(parsing bytes: [UInt8], mode: Mode = .shared) {
        self.lines = ExportsParser.splitLogicalLines(bytes).map(ExportsLine.init(raw:))
        self.mode = mode
    }

    /// Parses the UTF-8 bytes of `text`.
    public init(parsing text: String, mode: Mode = .shared) {
        self.init(parsing: Array(text.utf8), mode: mode)
    }

    /// Creates a file from already-parsed lines (used by the editing operations).
    init(lines: [ExportsLine], mode: Mode) {
        self.lines = lines
        self.mode = mode
    }

    /// The file's bytes: the concatenation of every line's `raw` bytes.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(lines.reduce(0) { $0 + $1.raw.count })
        for line in lines { out.append(contentsOf: line.raw) }
        return out
    }

    /// The file as text (invalid UTF-8 is replaced with U+FFFD; use `bytes` to write files).
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Every export entry in the file, managed or foreign, in file order.
    public var entries: [ExportEntry] {
        lines.compactMap(\.entry)
    }

    /// 1-based physical line number on which the logical line at `index` starts.
    public func lineNumber(ofLineAt index: Int) -> Int {
        var number = 1
        for line in lines[..<index] {
            number += line.raw.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
        }
        return number
    }
}

/// One logical line of an exports file: its exact bytes and what they mean.
public struct ExportsLine: Sendable, Hashable {
    /// What a line is.
    public enum Kind: Sendable, Hashable {
        /// Only whitespace (possibly continued).
        case blank
        /// Optional whitespace, then a `#` comment.
        case comment(String)
        /// An export entry: a path followed by clients.
        case entry(ExportEntry)
        /// A line that does not parse; kept verbatim. `reason` says why.
        case opaque(reason: String)
    }

    /// The exact bytes of the line, including its terminating `\n` (absent only on the last
    /// line of a file without a final newline) and any continuation sequences.
    public let raw: [UInt8]
    /// The parsed meaning of `raw`.
    public let kind: Kind

    /// Parses one logical line.
    public init(raw: [UInt8]) {
        self.raw = raw
        self.kind = ExportsParser.parseLogicalLine(raw)
    }

    /// The entry on this line, if it is one.
    public var entry: ExportEntry? {
        if case .entry(let entry) = kind { return entry }
        return nil
    }

    /// The line as text without its line terminator (lossy for invalid UTF-8).
    public var content: String {
        var bytes = raw[...]
        if bytes.last == UInt8(ascii: "\n") { bytes = bytes.dropLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One export entry: `path [-defaults] client[(options)] ...`.
///
/// `path` is the decoded path (quotes removed, `\ooo` octal escapes decoded), exactly as
/// exportfs would hand it to the kernel before resolving symlinks.
public struct ExportEntry: Sendable, Hashable {
    /// The decoded export path.
    public var path: String
    /// Default options given as `-opt,opt` right after the path, or nil.
    public var defaultOptions: [String]?
    /// The clients in file order. Empty means exportfs exports the path to everyone.
    public var clients: [ExportClient]
    /// The trailing `#` comment (without the `#`), if any.
    public var comment: String?

    public init(path: String, defaultOptions: [String]? = nil, clients: [ExportClient], comment: String? = nil) {
        self.path = path
        self.defaultOptions = defaultOptions
        self.clients = clients
        self.comment = comment
    }

    /// The options in effect for `client`: defaults first, then the client's own options
    /// (exportfs applies them in that order; the last of a pair such as rw/ro wins).
    public func effectiveOptions(for client: ExportClient) -> [String] {
        (defaultOptions ?? []) + (client.options ?? [])
    }

    /// Renders the entry as one line without a terminator, escaping the path so that it
    /// parses back to the same value (`\ooo` for whitespace, `#`, quotes, backslashes and
    /// control bytes). Clients are written as `host(options)` with no space in between.
    public func rendered() -> String {
        var out = ExportPath.escaped(path)
        if let defaults = defaultOptions {
            out += " -" + defaults.map(ExportPath.escaped).joined(separator: ",")
        }
        for client in clients {
            out += " " + client.rendered()
        }
        if let comment {
            out += " #" + comment
        }
        return out
    }
}

/// One client of an export entry: `host(options)`, `host`, or `(options)`.
public struct ExportClient: Sendable, Hashable {
    /// What kind of client specification `host` is (exports(5) "Machine Name Formats").
    public enum Kind: Sendable, Hashable {
        /// No host at all (`(rw)` alone, or a separate `(rw)` token after `host (rw)`):
        /// exportfs exports to everyone.
        case anonymous
        /// `*`: everyone.
        case everyone
        /// A host name pattern with `*`, `?` or `[`.
        case wildcard
        /// `@group`.
        case netgroup
        /// An address with a prefix: `198.18.0.0/24`, `[2001:db8::]/64`, `10.0.0.0/255.0.0.0`.
        case subnet
        /// A single IPv4 address.
        case ipv4
        /// A single IPv6 address (plain or in brackets).
        case ipv6
        /// A host name.
        case hostname
        /// Something else exportfs may or may not understand.
        case other
    }

    /// The host part; nil for an anonymous `(options)` token.
    public var host: String?
    /// The options inside parentheses, or nil when there were no parentheses.
    public var options: [String]?

    public init(host: String?, options: [String]?) {
        self.host = host
        self.options = options
    }

    /// The kind of `host`.
    public var kind: Kind { ClientAddress.classify(host) }

    /// `host(options)` with no space (a space would make exportfs export `(options)` to
    /// everyone), `host` alone when `options` is nil. Host and options are escaped like
    /// paths: a quoted `"a b"(rw)` read from a file must not come back as two clients.
    public func rendered() -> String {
        let name = ExportPath.escaped(host ?? "")
        guard let options else { return name }
        return name + "(" + options.map(ExportPath.escaped).joined(separator: ",") + ")"
    }
}
