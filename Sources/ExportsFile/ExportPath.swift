import SafeFiles

/// Export path helpers: exports(5) escaping and lexical normalisation. Pure functions.
public enum ExportPath {
    /// The longest export path storagectl writes, in bytes.
    public static let maximumLength = 1024

    /// `path` escaped for an exports file: bytes that would end or change a token (controls,
    /// space, DEL, `#`, `"`, `\`) are written as `\ooo`; every other byte is kept. Parsing the
    /// result gives back `path`.
    public static func escaped(_ path: String) -> String {
        var bytes: [UInt8] = []
        for byte in path.utf8 {
            if byte <= 0x20 || byte == 0x7F || byte == UInt8(ascii: "#")
                || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                let digits = String(byte, radix: 8)
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(contentsOf: Array((String(repeating: "0", count: 3 - digits.count) + digits).utf8))
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Decodes `\ooo` escapes (value < 256) the way exportfs and etab do.
    public static func unescaped(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            if let byte = ExportsParser.octalEscape(in: bytes, at: index, end: bytes.count) {
                out.append(byte)
                index += 4
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `path` with empty and `.` components removed and `..` applied lexically (never above
    /// `/`); always starts with `/`, never ends with `/` unless it is `/`. Used to compare
    /// paths from different sources (it does not resolve symlinks).
    public static func lexicallyNormalized(_ path: String) -> String {
        "/" + normalizedComponents(path).joined(separator: "/")
    }

    /// The components of `lexicallyNormalized(path)`, from one split of `path`: two paths
    /// are equal, or one a strict ancestor of the other, exactly when these arrays are
    /// equal or one is a strict prefix of the other (`ExportsFile.conflicts(for:)` compares
    /// thousands of foreign entries this way, one split each).
    public static func normalizedComponents(_ path: String) -> [Substring] {
        var parts: [Substring] = []
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { continue }
            if component == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(component)
        }
        return parts
    }

    /// True when `ancestor` is a strict ancestor of `path` (both normalised first).
    public static func isStrictAncestor(_ ancestor: String, of path: String) -> Bool {
        // `..` resolved lexically first: etab and exports paths are compared as text.
        RootedPath.isBelow(lexicallyNormalized(path), root: lexicallyNormalized(ancestor))
    }

    /// Validates a path storagectl is asked to export.
    ///
    /// Accepted paths are absolute, normalised (no empty, `.` or `..` components, no
    /// trailing `/`), at most `maximumLength` bytes, free of whitespace, control bytes,
    /// quotes, backslashes and `#`, and equal to or below `root`. Equal to the root is
    /// allowed because storagectl exports its configured export directory itself (the
    /// RHEL procedure exports `/var/lib/libvirt/shared-images` as a whole).
    public static func validate(_ path: String, under root: String) throws(ExportsError) {
        try validateShape(path)
        if path == "/" { throw .pathOutsideExportRoot(path: path, root: root) }
        if !RootedPath.isWithin(path, root: root) {
            throw .pathOutsideExportRoot(path: path, root: root)
        }
    }

    /// The shape checks of `validate(_:under:)` without the export-root check.
    static func validateShape(_ path: String) throws(ExportsError) {
        if path.isEmpty { throw .pathEmpty }
        if path.utf8.count > maximumLength {
            throw .pathTooLong(path: String(path.prefix(64)) + "...", length: path.utf8.count, limit: maximumLength)
        }
        for scalar in path.unicodeScalars {
            let value = scalar.value
            if value < 0x20 || value == 0x7F || (0x80...0x9F).contains(value) {
                throw .pathHasControlCharacter(path: path)
            }
            if scalar.properties.isWhitespace {
                throw .pathHasWhitespace(path: path)
            }
            if scalar == "\"" || scalar == "'" || scalar == "\\" || scalar == "#" {
                throw .pathHasForbiddenCharacter(path: path, character: String(scalar))
            }
        }
        guard path.hasPrefix("/") else { throw .pathNotAbsolute(path: path) }
        if path == "/" { return }
        let components = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        if components.contains("..") { throw .pathHasDotDot(path: path) }
        if components.contains(where: { $0.isEmpty || $0 == "." }) {
            throw .pathNotNormalized(path: path, normalized: lexicallyNormalized(path))
        }
    }
}
