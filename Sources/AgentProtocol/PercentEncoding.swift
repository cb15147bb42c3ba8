/// Percent-encoding of protocol values (RFC 3986 style, uppercase hex).
///
/// Bytes in `[A-Za-z0-9._~/:,@+-]` travel as they are; every other byte of the UTF-8
/// form is written `%XX`. Decoding accepts either hex case, rejects a `%` not followed by
/// two hex digits, and requires the decoded bytes to be valid UTF-8 without NUL or other
/// C0 control bytes: a value never smuggles a newline or NUL into a file or argv.
public enum PercentEncoding {
    @inline(__always)
    static func isUnreserved(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "/"),
             UInt8(ascii: ":"), UInt8(ascii: ","), UInt8(ascii: "@"), UInt8(ascii: "+"),
             UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    private static let hex: [UInt8] = Array("0123456789ABCDEF".utf8)

    public static func encode(_ value: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count)
        for b in value.utf8 {
            if isUnreserved(b) {
                out.append(b)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Decodes one value; throws `invalid-argument` naming `key` on a malformed escape,
    /// invalid UTF-8 or a control byte.
    public static func decode<S: Collection>(_ bytes: S, key: String) throws(AgentError) -> String
    where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i != bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                let h1 = bytes.index(after: i)
                guard h1 != bytes.endIndex, let hi = hexValue(bytes[h1]) else {
                    throw .invalidArgument("malformed percent-escape in value of '\(key)': '%' must be followed by two hex digits")
                }
                let h2 = bytes.index(after: h1)
                guard h2 != bytes.endIndex, let lo = hexValue(bytes[h2]) else {
                    throw .invalidArgument("malformed percent-escape in value of '\(key)': '%' must be followed by two hex digits")
                }
                out.append(hi << 4 | lo)
                i = bytes.index(after: h2)
            } else {
                guard isUnreserved(b) else {
                    throw .invalidArgument("byte 0x\(String(b, radix: 16)) in value of '\(key)' must be percent-encoded")
                }
                out.append(b)
                i = bytes.index(after: i)
            }
        }
        for b in out where b < 0x20 || b == 0x7F {
            throw .invalidArgument("value of '\(key)' holds a control byte 0x\(String(b, radix: 16)); control bytes are never accepted")
        }
        guard let s = String(validating: out, as: UTF8.self) else {
            throw .invalidArgument("value of '\(key)' is not valid UTF-8 after decoding")
        }
        return s
    }
}
