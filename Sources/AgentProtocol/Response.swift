/// One response line. A response is zero or more `data`/`progress` lines followed by
/// exactly one terminal line, `ok` or `err`.
public enum ResponseLine: Sendable, Equatable {
    case data(Fields)
    case progress(Fields)
    case ok(Fields)
    case err(AgentError)

    public var isTerminal: Bool {
        switch self {
        case .ok, .err: return true
        case .data, .progress: return false
        }
    }

    /// The wire form, without the trailing newline.
    public var line: String {
        switch self {
        case .data(let f): return Wire.render("DATA", f)
        case .progress(let f): return Wire.render("PROGRESS", f)
        case .ok(let f): return Wire.render("OK", f)
        case .err(let e):
            var f: Fields = ["code": e.code.rawValue, "message": e.message]
            f.append(contentsOf: e.details)
            return Wire.render("ERR", f)
        }
    }

    /// Parses one response line (client side).
    public static func parse(_ line: [UInt8]) throws(AgentError) -> ResponseLine {
        try Wire.checkLine(line)
        let tokens = Wire.tokens(line)
        guard let head = tokens.first else { throw .invalidArgument("empty response line") }
        let fields = try Wire.parseFields(tokens.dropFirst())
        switch String(decoding: head, as: UTF8.self) {
        case "DATA": return .data(fields)
        case "PROGRESS": return .progress(fields)
        case "OK": return .ok(fields)
        case "ERR":
            guard let codeText = fields["code"] else {
                throw .invalidArgument("ERR line without code=")
            }
            var details = Fields()
            for p in fields where p.key != "code" && p.key != "message" { details.append(p.key, p.value) }
            let message = fields["message"] ?? ""
            guard let code = AgentError.Code(rawValue: codeText) else {
                // A newer agent's code: keep its words, classify as internal.
                return .err(AgentError(.internal, "\(codeText): \(message)", details: details))
            }
            return .err(AgentError(code, message, details: details))
        default:
            throw .invalidArgument("unknown response line type '\(String(decoding: head.prefix(32), as: UTF8.self))'")
        }
    }

    public static func parse(_ line: String) throws(AgentError) -> ResponseLine {
        try parse(Array(line.utf8))
    }
}

/// A complete response as a client sees it.
public struct Response: Sendable, Equatable {
    public var data: [Fields]
    public var progress: [Fields]
    public var result: Result<Fields, AgentError>

    public init(data: [Fields] = [], progress: [Fields] = [], result: Result<Fields, AgentError>) {
        self.data = data
        self.progress = progress
        self.result = result
    }

    /// The `OK` fields, or the agent's error thrown.
    public func get() throws(AgentError) -> Fields {
        switch result {
        case .success(let f): return f
        case .failure(let e): throw e
        }
    }
}
