/// A validated, normalised explicit client: one host name or one IP address.
///
/// Invariants: `value` is lowercase; IPv4 is dotted-quad without leading zeros; IPv6 is in
/// RFC 5952 canonical form (lowercase, longest zero run compressed, no brackets, no zone);
/// host names are RFC 1123 (labels of 1-63 letters, digits and hyphens, not starting or
/// ending with a hyphen, at most 253 bytes, last label not all digits). Wildcards,
/// netgroups, subnets and anonymous clients cannot be represented.
public struct ClientAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The address family or name kind.
    public enum Kind: Int, Sendable, Hashable, Comparable {
        case ipv4 = 0
        case ipv6 = 1
        case hostname = 2
        public static func < (lhs: Kind, rhs: Kind) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// The kind of client.
    public let kind: Kind
    /// The normalised text written into exports files.
    public let value: String
    /// Sort key: address bytes for IPs, the name's bytes for host names.
    private let sortKey: [UInt8]

    /// Parses and normalises `text`; throws a specific error for every kind of client
    /// storagectl refuses to write (wildcard, netgroup, subnet, anonymous, options attached).
    public init(_ text: String) throws(ExportsError) {
        if text.isEmpty { throw .clientEmpty }
        if text.contains("(") || text.contains(")") { throw .clientHasOptions(client: text) }
        if text == "*" { throw .clientWildcard(client: text) }
        for scalar in text.unicodeScalars where scalar.value < 0x21 || scalar.value >= 0x7F {
            throw .clientInvalid(client: text, reason: "it contains whitespace, control or non-ASCII characters")
        }
        if text.hasPrefix("@") { throw .clientNetgroup(client: text) }
        if text.contains("*") || text.contains("?") { throw .clientWildcard(client: text) }
        if text.contains("/") { throw .clientSubnet(client: text) }
        if text.hasPrefix("[") || text.hasSuffix("]") {
            throw .clientInvalid(client: text, reason: "write IPv6 addresses without brackets")
        }
        if let v4 = ClientAddress.parseIPv4(text) {
            self.kind = .ipv4
            self.value = v4.map(String.init).joined(separator: ".")
            self.sortKey = v4
            return
        }
        if text.contains(":") {
            if text.contains("%") {
                throw .clientInvalid(client: text, reason: "IPv6 zone identifiers are not supported")
            }
            guard let v6 = ClientAddress.parseIPv6(text) else {
                throw .clientInvalid(client: text, reason: "it is not a valid IPv6 address")
            }
            self.kind = .ipv6
            self.value = ClientAddress.formatIPv6(v6)
            self.sortKey = v6
            return
        }
        let name = text.lowercased()
        if let reason = ClientAddress.hostnameProblem(name) {
            throw .clientInvalid(client: text, reason: reason)
        }
        self.kind = .hostname
        self.value = name
        self.sortKey = Array(name.utf8)
    }

    public var description: String { value }

    /// IPv4 before IPv6 before host names; numerically within addresses, bytewise for names.
    public static func < (lhs: ClientAddress, rhs: ClientAddress) -> Bool {
        if lhs.kind != rhs.kind { return lhs.kind < rhs.kind }
        return lhs.sortKey.lexicographicallyPrecedes(rhs.sortKey)
    }

    // MARK: - Parsers

    /// Strict dotted quad: four decimal fields 0-255 without leading zeros (inet_aton would
    /// read `010` as octal 8: refuse the ambiguity).
    static func parseIPv4(_ text: String) -> [UInt8]? {
        let fields = text.split(separator: ".", omittingEmptySubsequences: false)
        guard fields.count == 4 else { return nil }
        var out: [UInt8] = []
        for field in fields {
            guard !field.isEmpty, field.count <= 3, field.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            if field.count > 1 && field.first == "0" { return nil }
            guard let value = UInt8(field) else { return nil }
            out.append(value)
        }
        return out
    }

    /// RFC 4291 text form (with optional embedded IPv4 tail) to 16 bytes.
    static func parseIPv6(_ text: String) -> [UInt8]? {
        let doubleColonParts = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard doubleColonParts.count <= 2 else { return nil }
        func groups(_ part: String, allowV4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, field) in fields.enumerated() {
                if allowV4Tail && index == fields.count - 1 && field.contains(".") {
                    guard let v4 = parseIPv4(String(field)) else { return nil }
                    result.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    result.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                    continue
                }
                guard (1...4).contains(field.count),
                      field.allSatisfy({ $0.isHexDigit && $0.isASCII }),
                      let value = UInt16(field, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        var words: [UInt16]
        if doubleColonParts.count == 2 {
            guard let head = groups(doubleColonParts[0], allowV4Tail: false),
                  let tail = groups(doubleColonParts[1], allowV4Tail: true),
                  head.count + tail.count <= 7 else { return nil }
            words = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard let all = groups(text, allowV4Tail: true), all.count == 8 else { return nil }
            words = all
        }
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    /// RFC 5952 canonical text for 16 bytes.
    static func formatIPv6(_ bytes: [UInt8]) -> String {
        let words = stride(from: 0, to: 16, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
        var bestStart = -1, bestLength = 0, index = 0
        while index < 8 {
            if words[index] == 0 {
                var end = index
                while end < 8 && words[end] == 0 { end += 1 }
                if end - index > bestLength && end - index >= 2 {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        func hex(_ range: Range<Int>) -> String {
            words[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    /// Nil when `name` (lowercase) is an RFC 1123 host name, else why not.
    static func hostnameProblem(_ name: String) -> String? {
        if name.utf8.count > 253 { return "a host name is at most 253 characters" }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            if label.isEmpty { return "it has an empty label (\"..\", or a leading or trailing dot)" }
            if label.utf8.count > 63 { return "a label is longer than 63 characters" }
            if !label.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) {
                return "labels may contain only letters, digits and hyphens"
            }
            if label.hasPrefix("-") || label.hasSuffix("-") { return "a label starts or ends with a hyphen" }
        }
        if let last = labels.last, last.allSatisfy({ $0.isNumber }) {
            return "it looks like an IPv4 address but is not a valid one"
        }
        return nil
    }

    /// Classifies an exports(5) client host field, valid or not (used for foreign entries).
    static func classify(_ host: String?) -> ExportClient.Kind {
        guard let host, !host.isEmpty else { return .anonymous }
        if host == "*" { return .everyone }
        if host.hasPrefix("@") { return .netgroup }
        if host.contains("/") { return .subnet }
        if host.contains("*") || host.contains("?") { return .wildcard }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            return parseIPv6(String(host.dropFirst().dropLast())) != nil ? .ipv6 : .other
        }
        if host.contains("[") { return .wildcard }
        if parseIPv4(host) != nil { return .ipv4 }
        if parseIPv6(host) != nil { return .ipv6 }
        if hostnameProblem(host.lowercased()) == nil { return .hostname }
        return .other
    }
}
