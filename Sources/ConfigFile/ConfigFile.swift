import Foundation

/// An error in a configuration file, always with the file and line it is about.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line { return "\(file):\(line): \(message)" }
        return "\(file): \(message)"
    }
}

/// An INI-style configuration file, in the dialect of the system tools around it
/// (nfs.conf(5), libvirtd.conf-like `key = value`):
///
/// ```
/// # comment            ; comment
/// [storage cargo-bay]  # a section: a type and an optional name
/// agent = tcp:198.18.0.1:7700
/// ```
///
/// Comments stand on lines of their own. Keys are lowercase with `-`; values run to the
/// end of the line, trimmed; a value may be quoted with `"` to keep outer spaces.
/// Parsing is pure; reading the file is `ConfigFile.load(path:)`.
public struct ConfigFile: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: String
        public var line: Int
    }

    public struct Section: Sendable, Equatable {
        /// The section type: `[storage cargo-bay]` has kind `storage`.
        public var kind: String
        /// The section name, if any: `[storage cargo-bay]` has name `cargo-bay`.
        public var name: String?
        public var line: Int
        public var entries: [Entry]

        /// The last value given for `key`.
        public func value(_ key: String) -> String? { entries.last { $0.key == key }?.value }
        public func values(_ key: String) -> [String] { entries.filter { $0.key == key }.map(\.value) }
        public func entry(_ key: String) -> Entry? { entries.last { $0.key == key } }
    }

    public var path: String
    public var sections: [Section]

    public func sections(_ kind: String) -> [Section] { sections.filter { $0.kind == kind } }

    public static func load(path: String) throws -> ConfigFile {
        // Plain read(2): works for pipes and /dev/fd/N too (bash process substitution).
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ConfigError(file: path, line: nil, message: "cannot read: \(String(cString: strerror(errno))); create it or pass --config FILE")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw ConfigError(file: path, line: nil, message: "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
            guard bytes.count <= 1 << 20 else {
                throw ConfigError(file: path, line: nil, message: "larger than 1 MiB; this is not a config file")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigError(file: path, line: nil, message: "not valid UTF-8")
        }
        return try parse(text, path: path)
    }

    private static func isName(_ s: Substring, allowDot: Bool) -> Bool {
        guard let f = s.first, f.isASCII, f.isLetter || f.isNumber else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || (allowDot && $0 == ".")) }
    }

    public static func parse(_ text: String, path: String) throws(ConfigError) -> ConfigFile {
        var sections: [Section] = []
        var lineNo = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else {
                    throw ConfigError(file: path, line: lineNo, message: "section header must end with ']'")
                }
                let inner = line.dropFirst().dropLast().split(separator: " ", omittingEmptySubsequences: true)
                guard (1...2).contains(inner.count) else {
                    throw ConfigError(file: path, line: lineNo, message: "section header must be [type] or [type name]")
                }
                guard isName(inner[0], allowDot: false) else {
                    throw ConfigError(file: path, line: lineNo, message: "bad section type '\(inner[0])'")
                }
                var name: String?
                if inner.count == 2 {
                    var n = inner[1]
                    if n.count >= 2, n.first == "\"", n.last == "\"" { n = n.dropFirst().dropLast() }
                    guard isName(n, allowDot: true) else {
                        throw ConfigError(file: path, line: lineNo, message: "bad section name '\(n)': use letters, digits, '.', '-' and '_'")
                    }
                    name = String(n)
                }
                sections.append(Section(kind: String(inner[0]).lowercased(), name: name, line: lineNo, entries: []))
                continue
            }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError(file: path, line: lineNo, message: "expected 'key = value' or '[section]'")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, isName(Substring(key), allowDot: false) else {
                throw ConfigError(file: path, line: lineNo, message: "bad key '\(key)'")
            }
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                throw ConfigError(file: path, line: lineNo, message: "value of '\(key)' holds a control character")
            }
            guard !sections.isEmpty else {
                throw ConfigError(file: path, line: lineNo, message: "'\(key)' appears before any [section]")
            }
            sections[sections.count - 1].entries.append(Entry(key: key.lowercased(), value: value, line: lineNo))
        }
        return ConfigFile(path: path, sections: sections)
    }

    /// Fails with file and line for the first key of `section` not in `allowed`.
    public func requireKnownKeys(_ section: Section, _ allowed: Set<String>) throws(ConfigError) {
        for e in section.entries where !allowed.contains(e.key) {
            throw ConfigError(file: path, line: e.line,
                              message: "unknown key '\(e.key)' in [\(section.kind)\(section.name.map { " " + $0 } ?? "")]; known keys: \(allowed.sorted().joined(separator: ", "))")
        }
    }
}
