/// One request line: `VERB key=value ...`.
public struct Request: Sendable, Equatable {
    public var verb: String
    public var fields: Fields

    public init(_ verb: String, _ fields: Fields = Fields()) {
        self.verb = verb
        self.fields = fields
    }

    /// Parses one line (without its `\n`). Throws `invalid-argument` with a message that
    /// names what is wrong; never traps on any input.
    public static func parse(_ line: [UInt8]) throws(AgentError) -> Request {
        try Wire.checkLine(line)
        let tokens = Wire.tokens(line)
        guard let verbBytes = tokens.first else {
            throw .invalidArgument("empty request; expected VERB key=value ...")
        }
        guard verbBytes.count <= 32,
              verbBytes.enumerated().allSatisfy({ Wire.isVerbByte($0.element, first: $0.offset == 0) })
        else {
            throw .invalidArgument("bad verb '\(String(decoding: verbBytes.prefix(64), as: UTF8.self))': verbs are uppercase letters, digits and '-'")
        }
        let fields = try Wire.parseFields(tokens.dropFirst())
        return Request(String(decoding: verbBytes, as: UTF8.self), fields)
    }

    public static func parse(_ line: String) throws(AgentError) -> Request {
        try parse(Array(line.utf8))
    }

    /// The wire form, without the trailing newline.
    public var line: String { Wire.render(verb, fields) }
}
