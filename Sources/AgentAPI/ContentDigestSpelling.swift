import AgentProtocol

/// How a content digest is spelled on the wire (`digest=` of `CHECKSUM`, `COPY` and
/// `LOCALIZE`; docs/protocol.md, "Content digest"): the algorithm's name, `:`, and its
/// value in lowercase hex: `xxh3-128:` and 32 hex digits. `Sources/ContentDigest`
/// computes it; this is the contract's side, without the hashing library.
///
/// Agents from before XXH3-128 answered the SHA-256 content digest as 64 bare hex
/// digits. Such a value is not current: it is refused where it is read (an agent of
/// another version, `unsupported`), never compared with an xxh3-128 one.
public enum ContentDigestSpelling {
    /// The algorithm of this version's content digests.
    public static let algorithm = "xxh3-128"
    /// What every current digest starts with.
    public static let prefix = algorithm + ":"
    /// Hex digits after the prefix (16 bytes).
    public static let hexDigits = 32

    /// Whether `value` is `xxh3-128:` and 32 lowercase hex digits.
    public static func isCurrent(_ value: String) -> Bool {
        guard value.hasPrefix(prefix) else { return false }
        let digits = value.utf8.dropFirst(prefix.utf8.count)
        return digits.count == hexDigits && digits.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// What `value` is, for a refusal: a SHA-256 content digest of an earlier version,
    /// a digest of another algorithm, or not a digest at all.
    static func describe(_ value: String) -> String {
        let hex = value.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
        if hex && value.utf8.count == 64 { return "a SHA-256 content digest (the form of agents from before XXH3-128 digests)" }
        if let colon = value.firstIndex(of: ":"), colon != value.startIndex {
            return "a digest of another algorithm (\(value[..<colon].prefix(32)))"
        }
        return "not a content digest"
    }
}

extension FieldReader {
    /// A content digest (`xxh3-128:` and 32 lowercase hex digits). In an answer, any
    /// other value is `unsupported` (an agent of another version: the SHA-256 form of
    /// earlier agents is never compared with an xxh3-128 digest); in a request,
    /// `invalid-argument`.
    public func contentDigest(_ key: String) throws(AgentError) -> String {
        let text = try string(key)
        guard ContentDigestSpelling.isCurrent(text) else {
            let what = ContentDigestSpelling.describe(text)
            if strict {
                throw AgentError(.invalidArgument, "\(key)= must be a content digest (\(ContentDigestSpelling.prefix) and \(ContentDigestSpelling.hexDigits) lowercase hex digits), not '\(text.prefix(80))' (\(what))")
            }
            throw AgentError(.unsupported, "the agent answered \(verb) with \(key)=\(text.prefix(80)), \(what); this storagectl compares only \(ContentDigestSpelling.prefix) digests. Upgrade the agents and storagectl together")
        }
        return text
    }
}
