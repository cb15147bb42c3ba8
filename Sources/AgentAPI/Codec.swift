import AgentProtocol

/// The one place where protocol v1's value spellings are written and read: booleans
/// (`yes`/`no`), sizes and counts (decimal), enumerations (their raw values), repeated
/// keys, and comma lists. Every verb's typed request and answer is encoded and decoded
/// through these two types, so a misspelt key is a compile error in the verb types'
/// callers and a refused value names its key.
public enum WireValue {
    /// `yes` or `no`.
    public static func yesNo(_ b: Bool) -> String { b ? "yes" : "no" }

    /// `yes` → true, `no` → false, anything else nil.
    public static func bool(_ text: String) -> Bool? {
        switch text {
        case "yes": return true
        case "no": return false
        default: return nil
        }
    }

    /// A comma-separated list; the empty string is the empty list.
    public static func list(_ text: String) -> [String] {
        text.isEmpty ? [] : text.split(separator: ",", omittingEmptySubsequences: true).map(String.init)
    }
}

/// Reads the fields of a request (agent side, `strict`) or of an answer line (client
/// side). Strict readers refuse unknown keys, repeated single keys and malformed values
/// with `invalid-argument` naming the key; answer readers ignore keys they do not know
/// (a newer agent may add some) and report a missing or malformed key as `unsupported`
/// naming the verb, so an agent of another version is told apart from a bug.
public struct FieldReader: Sendable {
    public let verb: String
    public let fields: Fields
    let strict: Bool

    /// A request's fields; every key must be in `allowed`.
    public init(request verb: String, _ fields: Fields, allowed: [String]) throws(AgentError) {
        self.verb = verb
        self.fields = fields
        self.strict = true
        for key in fields.keys where !allowed.contains(key) {
            let expected = allowed.isEmpty ? "no keys" : allowed.sorted().joined(separator: ", ")
            throw AgentError(.invalidArgument, "\(verb) does not take '\(key)' (it takes \(expected))")
        }
    }

    /// The fields of one line of an answer to `verb`.
    public init(answer verb: String, _ fields: Fields) {
        self.verb = verb
        self.fields = fields
        self.strict = false
    }

    func missing(_ key: String, _ count: Int) -> AgentError {
        strict ? AgentError(.invalidArgument, "\(verb) needs exactly one \(key)= (got \(count))")
               : AgentError(.unsupported, "the agent answered \(verb) without \(key)=: is it of another storagectl version? Upgrade the agents and storagectl together")
    }

    func malformed(_ key: String, _ value: String, _ expected: String) -> AgentError {
        strict ? AgentError(.invalidArgument, "\(key)= must be \(expected), not '\(value.prefix(64))'")
               : AgentError(.unsupported, "the agent answered \(verb) with \(key)=\(value.prefix(64)), which is not \(expected)")
    }

    /// The one value of `key`.
    public func string(_ key: String) throws(AgentError) -> String {
        let values = fields.all(key)
        guard values.count == 1 else { throw missing(key, values.count) }
        return values[0]
    }

    /// The value of `key` when present; given twice is refused in a request.
    public func optional(_ key: String) throws(AgentError) -> String? {
        let values = fields.all(key)
        if strict, values.count > 1 { throw AgentError(.invalidArgument, "\(verb) takes \(key)= at most once") }
        return values.first
    }

    /// Every value of a repeated key, in order.
    public func all(_ key: String) -> [String] { fields.all(key) }

    public func has(_ key: String) -> Bool { fields[key] != nil }

    public func bool(_ key: String) throws(AgentError) -> Bool {
        let text = try string(key)
        guard let b = WireValue.bool(text) else { throw malformed(key, text, "yes or no") }
        return b
    }

    /// `yes`/`no` when present; absent is `default`.
    public func bool(_ key: String, default value: Bool) throws(AgentError) -> Bool {
        guard let text = try optional(key) else { return value }
        guard let b = WireValue.bool(text) else { throw malformed(key, text, "yes or no") }
        return b
    }

    public func uint64(_ key: String) throws(AgentError) -> UInt64 {
        let text = try string(key)
        guard let n = UInt64(text) else { throw malformed(key, text, "a whole number") }
        return n
    }

    public func optionalUInt64(_ key: String) throws(AgentError) -> UInt64? {
        guard let text = try optional(key), !text.isEmpty else { return nil }
        guard let n = UInt64(text) else { throw malformed(key, text, "a whole number") }
        return n
    }

    public func int(_ key: String) throws(AgentError) -> Int {
        let text = try string(key)
        guard let n = Int(text) else { throw malformed(key, text, "a whole number") }
        return n
    }

    public func optionalDouble(_ key: String) throws(AgentError) -> Double? {
        guard let text = try optional(key), !text.isEmpty else { return nil }
        guard let n = Double(text), n.isFinite else { throw malformed(key, text, "a number") }
        return n
    }

    public func value<T: RawRepresentable>(_ key: String, as type: T.Type) throws(AgentError) -> T where T.RawValue == String {
        let text = try string(key)
        guard let v = T(rawValue: text) else { throw malformed(key, text, Self.choices(T.self)) }
        return v
    }

    public func optionalValue<T: RawRepresentable>(_ key: String, as type: T.Type) throws(AgentError) -> T? where T.RawValue == String {
        guard let text = try optional(key) else { return nil }
        guard let v = T(rawValue: text) else { throw malformed(key, text, Self.choices(T.self)) }
        return v
    }

    /// A comma list (`clients=a,b`).
    public func list(_ key: String) throws(AgentError) -> [String] { WireValue.list(try string(key)) }

    static func choices<T>(_ type: T.Type) -> String {
        if let all = type as? any CaseIterable.Type {
            let names = (all.allCases as any Collection).compactMap { ($0 as? any RawRepresentable)?.rawValue as? String }
            return "one of " + names.joined(separator: ", ")
        }
        return "a known value"
    }
}

/// Builds the fields of a request or an answer line, in the order written.
public struct FieldWriter: Sendable {
    public private(set) var fields = Fields()
    public init() {}

    public mutating func add(_ key: String, _ value: String) { fields.append(key, value) }
    public mutating func add(_ key: String, _ value: String?) { if let value { fields.append(key, value) } }
    public mutating func add(_ key: String, _ value: Bool) { fields.append(key, WireValue.yesNo(value)) }
    public mutating func add(_ key: String, _ value: Bool?) { if let value { add(key, value) } }
    public mutating func add(_ key: String, _ value: UInt64) { fields.append(key, String(value)) }
    public mutating func add(_ key: String, _ value: UInt64?) { if let value { add(key, value) } }
    public mutating func add(_ key: String, _ value: Int) { fields.append(key, String(value)) }
    public mutating func add<T: RawRepresentable>(_ key: String, _ value: T) where T.RawValue == String { fields.append(key, value.rawValue) }
    public mutating func add<T: RawRepresentable>(_ key: String, _ value: T?) where T.RawValue == String { if let value { add(key, value) } }
    /// One `key=value` per element (a repeated key).
    public mutating func addEach(_ key: String, _ values: [String]) { for v in values { fields.append(key, v) } }
    /// A comma list.
    public mutating func addList(_ key: String, _ values: [String]) { fields.append(key, values.joined(separator: ",")) }
    public mutating func add(contentsOf other: Fields) { fields.append(contentsOf: other) }
}
