import AgentProtocol

/// Where an agent listens or is reached: `unix:/run/storagectl/agent.sock`,
/// `tcp:HOST:PORT`, or `tls:HOST:PORT` (TCP with mutual TLS; `tls:[::1]:7700` for IPv6).
public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)
    case tls(host: String, port: Int)

    public init(parsing text: String) throws(AgentError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/"), path.utf8.count < 108,
                  !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
            else {
                throw .invalidArgument("'\(text)': a unix endpoint needs an absolute path shorter than 108 bytes")
            }
            self = .unix(path: path)
            return
        }
        let secure = text.hasPrefix("tls:")
        guard text.hasPrefix("tcp:") || secure else {
            throw .invalidArgument("'\(text)' is not an endpoint; write unix:PATH, tcp:HOST:PORT or tls:HOST:PORT")
        }
        let rest = text.dropFirst(4)
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]"), rest[rest.index(after: close)...].hasPrefix(":") else {
                throw .invalidArgument("'\(text)': write an IPv6 endpoint as tcp:[ADDRESS]:PORT")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            portText = rest[rest.index(close, offsetBy: 2)...]
        } else {
            guard let colon = rest.lastIndex(of: ":") else {
                throw .invalidArgument("'\(text)': a tcp or tls endpoint needs a port (tcp:HOST:PORT)")
            }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw .invalidArgument("'\(text)': port must be a number from 1 to 65535")
        }
        guard !host.isEmpty, host.utf8.count <= 253,
              host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":") })
        else {
            throw .invalidArgument("'\(text)': host must be a host name or an address")
        }
        self = secure ? .tls(host: String(host), port: port) : .tcp(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port): return host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)"
        case .tls(let host, let port): return host.contains(":") ? "tls:[\(host)]:\(port)" : "tls:\(host):\(port)"
        }
    }
}
