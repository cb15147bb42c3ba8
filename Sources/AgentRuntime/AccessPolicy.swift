import AgentAPI
import AgentProtocol
import X509
#if canImport(Glibc)
import Glibc
#endif

/// Who the peer of a connection is, as far as the agent can prove it.
public struct PeerIdentity: Sendable, Equatable, CustomStringConvertible {
    public var transport: Transport
    /// The client certificate's subject (RFC 4514: `CN=storagectl,O=Example,C=GB`).
    public var subject: String?
    /// Its subject alternative names, `DNS:name` and `IP:address`.
    public var alternativeNames: [String]
    /// The peer's uid on a unix socket (SO_PEERCRED).
    public var uid: UInt32?

    public init(transport: Transport, subject: String? = nil, alternativeNames: [String] = [], uid: UInt32? = nil) {
        self.transport = transport
        self.subject = subject
        self.alternativeNames = alternativeNames
        self.uid = uid
    }

    /// The identity a verified client certificate (DER) proves.
    public static func certificate(der: [UInt8]) throws -> PeerIdentity {
        let certificate = try Certificate(derEncoded: der)
        var names: [String] = []
        if let sans = try certificate.extensions.subjectAlternativeNames {
            for name in sans {
                switch name {
                case .dnsName(let n): names.append("DNS:" + n)
                case .ipAddress(let bytes): if let text = Self.address(Array(bytes.bytes)) { names.append("IP:" + text) }
                default: continue
                }
            }
        }
        return PeerIdentity(transport: .tls, subject: certificate.subject.description, alternativeNames: names)
    }

    static func address(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return nil
        }
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) } != nil
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    /// The subject with its attributes in the other order (`C=GB,O=Example,CN=storagectl`),
    /// as gnutls and so libvirt's `tls_allowed_dn_list` write it.
    public var subjectCountryFirst: String? {
        subject.map { Self.splitDN($0).reversed().joined(separator: ",") }
    }

    /// Splits an RFC 4514 string on the commas that separate attributes (not `\,`).
    static func splitDN(_ dn: String) -> [String] {
        var parts: [String] = [], current = "", escaped = false
        for c in dn {
            if escaped { current.append(c); escaped = false; continue }
            if c == "\\" { current.append(c); escaped = true; continue }
            if c == "," { parts.append(current); current = ""; continue }
            current.append(c)
        }
        parts.append(current)
        return parts
    }

    public var description: String {
        switch transport {
        case .unix: return "unix peer uid=\(uid.map(String.init) ?? "?")"
        case .tcp: return "unauthenticated tcp peer"
        case .tls:
            return "certificate '\(subject ?? "?")'" + (alternativeNames.isEmpty ? "" : " (\(alternativeNames.joined(separator: ", ")))")
        }
    }
}

/// What a peer may ask, from least to most.
public enum AccessRole: Int, Sendable, Comparable, CustomStringConvertible {
    /// `HELLO`, `PING` and a health summary (plain TCP, or a certificate on no list).
    case summary = 0
    /// Every verb that only reads: `EXPORTS`, `SPACE`, `CHECKSUM`, `DOMAIN`, `DOMAINS`,
    /// `VERIFY` without a nonce, `HEALTH` with its details.
    case reader = 1
    /// Every verb, including the ones that change the host.
    case admin = 2

    public static func < (a: AccessRole, b: AccessRole) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .summary: return "summary"
        case .reader: return "reader"
        case .admin: return "admin"
        }
    }
}

/// Who may do what on an agent: root on the unix socket is admin; a client certificate
/// is admin when it matches an `allow-admin` pattern, reader when it matches an
/// `allow-reader` pattern, and gets the summary only otherwise; plain TCP gets the
/// summary only. Patterns are shell globs (fnmatch(3)), as in libvirt's
/// `tls_allowed_dn_list`, matched against the certificate's subject in either
/// attribute order (`CN=admin,O=Example,C=GB` or `C=GB,O=Example,CN=admin`) and against
/// each subject alternative name (`DNS:admin.example`, `IP:198.18.0.9`).
public struct AccessPolicy: Sendable, Equatable {
    public var admins: [String]
    public var readers: [String]

    public init(admins: [String] = [], readers: [String] = []) {
        self.admins = admins
        self.readers = readers
    }

    /// Config keys (section `[agent]`) and options.
    public static let adminKey = "allow-admin"
    public static let readerKey = "allow-reader"

    public func role(of peer: PeerIdentity) -> AccessRole {
        switch peer.transport {
        case .unix: return .admin            // root only: the server checks SO_PEERCRED first
        case .tcp: return .summary
        case .tls:
            if admins.contains(where: { Self.matches($0, peer) }) { return .admin }
            if readers.contains(where: { Self.matches($0, peer) }) { return .reader }
            return .summary
        }
    }

    /// True when `pattern` matches the peer's subject (either order) or one of its names.
    public static func matches(_ pattern: String, _ peer: PeerIdentity) -> Bool {
        let candidates = [peer.subject, peer.subjectCountryFirst].compactMap { $0 } + peer.alternativeNames
        return candidates.contains { fnmatch(pattern, $0, 0) == 0 }
    }

    /// Refuses a request the peer's role does not allow: `permission-denied` naming the
    /// identity and the config key that would allow it.
    public func authorize(_ verb: String, needs needed: AccessRole, peer: PeerIdentity) throws(AgentError) {
        let role = role(of: peer)
        guard role < needed else { return }
        switch peer.transport {
        case .tcp:
            throw AgentError(.permissionDenied,
                             "\(verb) is not served over plain TCP (it serves HELLO, PING and a health summary only); use the agent's unix socket as root, or tls:HOST:PORT with a client certificate listed in \(needed == .admin ? Self.adminKey : Self.readerKey)")
        default:
            let key = needed == .admin ? Self.adminKey : "\(Self.readerKey) or \(Self.adminKey)"
            throw AgentError(.permissionDenied,
                             "\(peer) may not ask \(verb) (its role here is \(role)); add a pattern that matches it to \(key) in the agent's configuration (docs/security.md)")
        }
    }
}
