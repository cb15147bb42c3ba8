/// Limits and tokens of protocol v1 (`docs/protocol.md`).
public enum Wire {
    /// Longest request or response line, excluding the terminating `\n`.
    public static let maxLineBytes = 8192
    /// Protocol versions this build speaks, oldest first.
    public static let supportedVersions = [1]

    static func isVerbByte(_ b: UInt8, first: Bool) -> Bool {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return true
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): return !first
        default: return false
        }
    }

    static func isKeyByte(_ b: UInt8, first: Bool) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return true
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): return !first
        default: return false
        }
    }

    /// Checks what every line must be before it is tokenised: bounded, NUL-free UTF-8.
    static func checkLine(_ bytes: [UInt8]) throws(AgentError) {
        guard bytes.count <= maxLineBytes else {
            throw .invalidArgument("line is \(bytes.count) bytes; the limit is \(maxLineBytes)")
        }
        if bytes.contains(0) {
            throw .invalidArgument("line holds a NUL byte")
        }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw .invalidArgument("line is not valid UTF-8")
        }
    }

    /// Splits on spaces, dropping empty tokens, and strips one trailing `\r`.
    static func tokens(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var body = bytes[...]
        if body.last == UInt8(ascii: "\r") { body = body.dropLast() }
        return body.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
    }

    static func parseFields(_ tokens: ArraySlice<ArraySlice<UInt8>>) throws(AgentError) -> Fields {
        var fields = Fields()
        for token in tokens {
            guard let eq = token.firstIndex(of: UInt8(ascii: "=")) else {
                throw .invalidArgument("expected key=value, got '\(String(decoding: token.prefix(64), as: UTF8.self))'")
            }
            let keyBytes = token[token.startIndex..<eq]
            guard !keyBytes.isEmpty, keyBytes.count <= 32,
                  keyBytes.enumerated().allSatisfy({ isKeyByte($0.element, first: $0.offset == 0) })
            else {
                throw .invalidArgument("bad key '\(String(decoding: keyBytes.prefix(64), as: UTF8.self))': keys are lowercase letters, digits and '-', starting with a letter")
            }
            let key = String(decoding: keyBytes, as: UTF8.self)
            let value = try PercentEncoding.decode(token[token.index(after: eq)...], key: key)
            fields.append(key, value)
        }
        return fields
    }

    static func render(_ head: String, _ fields: Fields) -> String {
        var s = head
        for p in fields {
            s += " " + p.key + "=" + PercentEncoding.encode(p.value)
        }
        return s
    }
}
