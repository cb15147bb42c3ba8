/// `HELLO` version negotiation.
///
/// A client lists the versions it speaks (`HELLO version=1 [version=2 ...]`); the agent
/// answers with the highest one both speak, or `ERR code=unsupported` naming the versions
/// it speaks in the message and in `versions=`.
public enum Hello {
    public static func negotiate(_ request: Request, supported: [Int] = Wire.supportedVersions) throws(AgentError) -> Int {
        let asked = request.fields.all("version")
        guard !asked.isEmpty else {
            throw AgentError(.invalidArgument, "HELLO needs version=N (this agent speaks \(list(supported)))",
                             details: ["versions": list(supported)])
        }
        var numbers: [Int] = []
        for text in asked {
            guard let n = Int(text), n > 0, String(n) == text else {
                throw .invalidArgument("version '\(text)' is not a positive integer")
            }
            numbers.append(n)
        }
        guard let best = numbers.filter(supported.contains).max() else {
            throw AgentError(.unsupported,
                             "protocol version \(list(numbers)) is not spoken here; this agent speaks \(list(supported))",
                             details: ["versions": list(supported)])
        }
        return best
    }

    static func list(_ v: [Int]) -> String { v.map(String.init).joined(separator: ",") }

    /// The request a client sends first.
    public static func request(versions: [Int] = Wire.supportedVersions) -> Request {
        Request("HELLO", Fields(versions.map { Fields.Pair("version", String($0)) }))
    }
}
