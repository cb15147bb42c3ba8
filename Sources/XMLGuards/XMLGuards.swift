/// Byte-level checks that run before any XML parser sees untrusted text (no
/// dependencies, so the migration hook can use them without the compute agent's
/// libraries). FoundationXML's `XMLParser` dies (SIGSEGV: strlen(NULL) in its processing
/// instruction callback) on a processing instruction without data, `<?x?>` (found by
/// Tests/Fuzz fuzz-xml), and a document type declaration can declare entities (an
/// external one makes libxml2 read a file or URL into the document). libvirt writes
/// neither: both are refused outright.
public enum XMLGuards {
    /// True when `text` holds `<?` anywhere but in a leading `<?xml ...?>` declaration
    /// (comments and CDATA included: libvirt's XML has no `<?` in them either).
    public static func hasProcessingInstruction<Bytes: Collection>(_ bytes: Bytes) -> Bool where Bytes.Element == UInt8 {
        let bytes = Array(bytes)
        var from = 0
        let declaration = Array("<?xml".utf8)
        if bytes.starts(with: declaration), bytes.count > declaration.count,
           [UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n")].contains(bytes[declaration.count]) {
            var i = declaration.count
            while i + 1 < bytes.count, !(bytes[i] == UInt8(ascii: "?") && bytes[i + 1] == UInt8(ascii: ">")) {
                // `<?xml vn><?x?>`: a `<` before the declaration's end is not the declaration.
                if bytes[i] == UInt8(ascii: "<") { return true }
                i += 1
            }
            from = i + 2
        }
        var i = from
        while i + 1 < bytes.count {
            if bytes[i] == UInt8(ascii: "<") && bytes[i + 1] == UInt8(ascii: "?") { return true }
            i += 1
        }
        return false
    }

    /// True when `bytes` holds a markup declaration: `<!DOCTYPE` or `<!ENTITY`
    /// (compared without regard to case, so no spelling slips through).
    public static func hasDocumentType<Bytes: Collection>(_ bytes: Bytes) -> Bool where Bytes.Element == UInt8 {
        let bytes = Array(bytes)
        for keyword in ["<!doctype", "<!entity"] {
            let k = Array(keyword.utf8)
            guard bytes.count >= k.count else { continue }
            for start in 0...(bytes.count - k.count) where bytes[start] == UInt8(ascii: "<") {
                var match = true
                for j in 1..<k.count {
                    var b = bytes[start + j]
                    if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b += 32 }
                    if b != k[j] { match = false; break }
                }
                if match { return true }
            }
        }
        return false
    }
}
