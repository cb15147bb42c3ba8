import AgentProtocol
import ArgumentParser
import ConfigFile

/// Options every agent takes. Each may also be set in the agent's config file, section
/// `[agent]`; a flag on the command line wins over the file.
public struct AgentOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("listen"), help: ArgumentHelp(
        "Listen on ENDPOINT: unix:PATH, tls:HOST:PORT (mutual TLS) or tcp:HOST:PORT (read-only verbs); repeatable. systemd's sockets are used as well; one named 'tls' (FileDescriptorName=tls) speaks TLS.",
        valueName: "endpoint"))
    public var listen: [String] = []

    @Option(name: .customLong("idle-exit"), help: ArgumentHelp(
        "When socket-activated, exit after SECONDS with no connection (systemd starts the agent again on the next one).",
        valueName: "seconds"))
    public var idleExit: Double?

    @Option(name: .customLong("max-connections"), help: "Connections served at once; more get ERR busy (default 1024).")
    public var maxConnections: Int?

    @Option(name: .customLong("read-timeout"), help: ArgumentHelp(
        "Close a connection that sends nothing for SECONDS outside a request (default 30).", valueName: "seconds"))
    public var readTimeout: Double?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).")
    public var logLevel: String?

    @Option(name: .customLong("tls-ca"), help: ArgumentHelp("CA certificate for tls: listeners (default /etc/pki/CA/cacert.pem, libvirt's layout).", valueName: "file"))
    public var tlsCA: String?

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("Server certificate (default /etc/pki/libvirt/servercert.pem).", valueName: "file"))
    public var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("Server private key (default /etc/pki/libvirt/private/serverkey.pem).", valueName: "file"))
    public var tlsKey: String?

    @Option(name: .customLong("allow-admin"), help: ArgumentHelp(
        "A client certificate allowed every verb over TLS, as a shell glob over its subject (C=GB,O=Example,CN=storagectl-admin, either attribute order) or a subject alternative name (DNS:admin.example, IP:198.18.0.9); repeatable. Root on the unix socket is always admin. See docs/security.md.",
        valueName: "pattern"))
    public var allowAdmin: [String] = []

    @Option(name: .customLong("allow-reader"), help: ArgumentHelp(
        "A client certificate allowed the verbs that only read (same patterns as --allow-admin); repeatable.",
        valueName: "pattern"))
    public var allowReader: [String] = []

    @Flag(name: .customLong("plain-tcp"), help: "Serve tcp: listeners (off by default). Plain TCP authenticates nobody: it answers HELLO, PING and a health summary only.")
    public var plainTCP = false

    public init() {}

    /// The largest number `idle-exit`, `read-timeout` and `max-connections` take (about
    /// 31 years of seconds): `limits()` converts them to integers without trapping.
    static let maximumNumber = 1e9

    /// Keys of the `[agent]` config section.
    public static let configKeys: Set<String> = ["listen", "idle-exit", "max-connections", "read-timeout", "log-level",
                                                 "tls-ca", "tls-cert", "tls-key", AccessPolicy.adminKey, AccessPolicy.readerKey,
                                                 "plain-tcp"]

    /// Who may do what (docs/security.md).
    public var accessPolicy: AccessPolicy { AccessPolicy(admins: allowAdmin, readers: allowReader) }

    /// The certificate files for `tls` listeners.
    public var tlsFiles: TLSFiles {
        TLSFiles(ca: tlsCA ?? TLSFiles.libvirtServer.ca,
                 certificate: tlsCert ?? TLSFiles.libvirtServer.certificate,
                 privateKey: tlsKey ?? TLSFiles.libvirtServer.privateKey)
    }

    /// Fills options not given on the command line from `[agent]` of `config`.
    public mutating func merge(_ config: ConfigFile?) throws {
        guard let section = config?.sections("agent").last, let config else { return }
        func number(_ key: String) throws -> Double? {
            guard let e = section.entry(key) else { return nil }
            // Bounded: the values become Int and Int64 milliseconds (`limits()`), and a
            // conversion out of range traps (found by Tests/Fuzz fuzz-config).
            guard let v = Double(e.value), v > 0, v <= Self.maximumNumber else {
                throw ConfigError(file: config.path, line: e.line, message: "\(key) must be a positive number up to \(Int(Self.maximumNumber))")
            }
            return v
        }
        if listen.isEmpty { listen = section.values("listen") }
        if idleExit == nil { idleExit = try number("idle-exit") }
        if maxConnections == nil, let v = try number("max-connections") { maxConnections = Int(v) }
        if readTimeout == nil { readTimeout = try number("read-timeout") }
        if logLevel == nil { logLevel = section.value("log-level") }
        if tlsCA == nil { tlsCA = section.value("tls-ca") }
        if tlsCert == nil { tlsCert = section.value("tls-cert") }
        if tlsKey == nil { tlsKey = section.value("tls-key") }
        if allowAdmin.isEmpty { allowAdmin = section.values(AccessPolicy.adminKey) }
        if allowReader.isEmpty { allowReader = section.values(AccessPolicy.readerKey) }
        if !plainTCP, let e = section.entry("plain-tcp") {
            switch e.value {
            case "yes": plainTCP = true
            case "no": break
            default: throw ConfigError(file: config.path, line: e.line, message: "plain-tcp must be yes or no")
            }
        }
    }

    public func limits() -> ServerLimits {
        var limits = ServerLimits()
        if let maxConnections { limits.maxConnections = maxConnections }
        if let readTimeout { limits.readTimeout = .milliseconds(Int64(readTimeout * 1000)) }
        if let idleExit { limits.idleExit = .milliseconds(Int64(idleExit * 1000)) }
        return limits
    }

    public func validate() throws {
        for l in listen {
            do { _ = try Endpoint(parsing: l) } catch { throw ValidationError("--listen \(error.message)") }
        }
        if let idleExit, !(idleExit > 0 && idleExit <= Self.maximumNumber) { throw ValidationError("--idle-exit must be positive, up to \(Int(Self.maximumNumber))") }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        if let readTimeout, !(readTimeout > 0 && readTimeout <= Self.maximumNumber) { throw ValidationError("--read-timeout must be positive, up to \(Int(Self.maximumNumber))") }
        for pattern in allowAdmin + allowReader where pattern.isEmpty || pattern.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            throw ValidationError("--allow-admin/--allow-reader: '\(pattern)' is not a pattern (empty, or it holds control characters)")
        }
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }
}

import Logging
