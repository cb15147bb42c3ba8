/// The exports(5) tokenizer, written to agree with nfs-utils 2.6 (`support/nfs/xio.c`,
/// `support/nfs/exports.c`):
/// - `\` + newline is a continuation and reads as one space;
/// - whitespace separates tokens; `"` toggles quoting and is dropped; inside quotes
///   whitespace belongs to the token;
/// - `\ooo` (three octal digits, value < 256) decodes to that byte;
/// - `#` where a token would start begins a comment that runs to the end of the physical
///   line (a backslash at the end of a comment does not continue it); `#` inside a token
///   is an ordinary byte (exportfs writes it to etab as `\043`);
/// - the first token is the path; a second token starting with `-` holds default options;
///   every other token is `host(options)`, `host` or `(options)`.
///
/// Pure functions over bytes; no I/O.
enum ExportsParser {
    private static let newline = UInt8(ascii: "\n")
    private static let backslash = UInt8(ascii: "\\")
    private static let quote = UInt8(ascii: "\"")
    private static let hash = UInt8(ascii: "#")

    /// Whitespace as C `isspace` sees it in the "C" locale (newline handled separately).
    static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0B || byte == 0x0C
    }

    /// Splits a file into logical lines, each keeping its exact bytes (terminator included).
    /// Concatenating the result gives back `bytes`.
    static func splitLogicalLines(_ bytes: [UInt8]) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        var inComment = false
        var inQuote = false
        var atTokenStart = true
        var index = 0
        func endLine() {
            lines.append(current)
            current = []
            inComment = false
            inQuote = false
            atTokenStart = true
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == newline {
                current.append(byte)
                endLine()
                index += 1
                continue
            }
            if inComment {
                current.append(byte)
                index += 1
                continue
            }
            if byte == backslash, index + 1 < bytes.count, bytes[index + 1] == newline {
                current.append(byte)
                current.append(newline)
                if !inQuote { atTokenStart = true }
                index += 2
                continue
            }
            if byte == quote {
                inQuote.toggle()
                atTokenStart = false
            } else if !inQuote && isSpace(byte) {
                atTokenStart = true
            } else if !inQuote && atTokenStart && byte == hash {
                inComment = true
            } else {
                atTokenStart = false
            }
            current.append(byte)
            index += 1
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    private struct Tokens {
        var tokens: [[UInt8]] = []
        var comment: [UInt8]?
    }

    private enum TokenizeError: Error {
        case unbalancedQuote
        case emptyToken
    }

    private static func isOctal(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "7")
    }

    /// Decodes `\ooo` at `index` if present and < 256.
    static func octalEscape(in bytes: [UInt8], at index: Int, end: Int) -> UInt8? {
        guard index + 3 < end, bytes[index] == backslash,
              isOctal(bytes[index + 1]), isOctal(bytes[index + 2]), isOctal(bytes[index + 3])
        else { return nil }
        let value = Int(bytes[index + 1] - 48) * 64 + Int(bytes[index + 2] - 48) * 8 + Int(bytes[index + 3] - 48)
        return value < 256 ? UInt8(value) : nil
    }

    private static func tokenize(_ raw: [UInt8]) throws(TokenizeError) -> Tokens {
        var result = Tokens()
        var current: [UInt8]?
        var inQuote = false
        var end = raw.count
        if end > 0, raw[end - 1] == newline { end -= 1 }
        var index = 0
        func finishToken() throws(TokenizeError) {
            if let token = current {
                if token.isEmpty { throw .emptyToken }
                result.tokens.append(token)
            }
            current = nil
        }
        while index < end {
            let byte = raw[index]
            // `raw.count`, not `end`: a backslash just before the line's final newline
            // (the last line of a file) is a continuation too, as in xgetc, not a token.
            if byte == backslash, index + 1 < raw.count, raw[index + 1] == newline {
                // A continuation reads as one space (xgetc).
                if inQuote {
                    current?.append(0x20)
                } else {
                    try finishToken()
                }
                index += 2
                continue
            }
            if byte == quote {
                inQuote.toggle()
                if current == nil { current = [] }
                index += 1
                continue
            }
            if !inQuote && isSpace(byte) {
                try finishToken()
                index += 1
                continue
            }
            if !inQuote && current == nil && byte == hash {
                var comment = Array(raw[(index + 1)..<end])
                if comment.last == 0x0D { comment.removeLast() }
                result.comment = comment
                break
            }
            if let decoded = octalEscape(in: raw, at: index, end: end) {
                if current == nil { current = [] }
                current!.append(decoded)
                index += 4
                continue
            }
            if current == nil { current = [] }
            current!.append(byte)
            index += 1
        }
        if inQuote { throw .unbalancedQuote }
        try finishToken()
        return result
    }

    /// Parses one logical line (as produced by `splitLogicalLines`).
    static func parseLogicalLine(_ raw: [UInt8]) -> ExportsLine.Kind {
        let tokens: Tokens
        do {
            tokens = try tokenize(raw)
        } catch .unbalancedQuote {
            return .opaque(reason: "unbalanced double quote")
        } catch {
            return .opaque(reason: "empty quoted token")
        }
        let comment = tokens.comment.map { String(decoding: $0, as: UTF8.self) }
        guard let pathToken = tokens.tokens.first else {
            if let comment { return .comment(comment) }
            return .blank
        }
        guard pathToken.first == UInt8(ascii: "/") else {
            return .opaque(reason: "the first field is not an absolute path")
        }
        var rest = tokens.tokens.dropFirst()
        var defaults: [String]?
        if let first = rest.first, first.first == UInt8(ascii: "-") {
            defaults = splitOptions(first.dropFirst())
            rest = rest.dropFirst()
        }
        var clients: [ExportClient] = []
        for token in rest {
            guard let client = parseClient(token) else {
                return .opaque(reason: "bad option list in \"\(String(decoding: token, as: UTF8.self))\"")
            }
            clients.append(client)
        }
        return .entry(ExportEntry(
            path: String(decoding: pathToken, as: UTF8.self),
            defaultOptions: defaults,
            clients: clients,
            comment: comment
        ))
    }

    private static func splitOptions(_ bytes: ArraySlice<UInt8>) -> [String] {
        if bytes.isEmpty { return [] }
        return bytes.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
    }

    /// `host(opts)`, `host` or `(opts)`; nil when the parentheses are malformed (exportfs:
    /// "bad option list": the first `)` must be the last byte).
    static func parseClient(_ token: [UInt8]) -> ExportClient? {
        guard let open = token.firstIndex(of: UInt8(ascii: "(")) else {
            return ExportClient(host: String(decoding: token, as: UTF8.self), options: nil)
        }
        let hostBytes = token[..<open]
        let afterOpen = token[(open + 1)...]
        guard let close = afterOpen.firstIndex(of: UInt8(ascii: ")")), close == token.count - 1 else {
            return nil
        }
        let inner = token[(open + 1)..<close]
        return ExportClient(
            host: hostBytes.isEmpty ? nil : String(decoding: hostBytes, as: UTF8.self),
            options: splitOptions(inner)
        )
    }
}
