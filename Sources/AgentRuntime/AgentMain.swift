import AgentProtocol
import ConfigFile
import Foundation
import Logging
import NIOSSL
import ServiceLifecycle

/// The process shell every agent shares: logging, listeners, the service group.
public enum AgentMain {
    /// Loads the config file when it exists (a missing default file is fine; a missing
    /// file named with `--config` is an error).
    public static func loadConfig(path: String?, defaultPath: String) throws -> ConfigFile? {
        if let path { return try ConfigFile.load(path: path) }
        guard FileManager.default.fileExists(atPath: defaultPath) else { return nil }
        return try ConfigFile.load(path: defaultPath)
    }

    public static func makeLogger(_ label: String, level: String?) -> Logger {
        let lvl = level.flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = lvl
            return handler
        }
        return Logger(label: label)
    }

    /// The listeners: systemd's sockets, then every `--listen`. Fails with advice when
    /// there are none.
    public static func listeners(_ options: AgentOptions) throws -> [Listener] {
        var result = try Systemd.takeListenSockets().map(Listener.activated)
        for text in options.listen { result.append(.endpoint(try Endpoint(parsing: text))) }
        guard !result.isEmpty else {
            throw AgentError(.invalidArgument,
                             "no socket to serve: start through the agent's .socket unit (systemd passes LISTEN_FDS) or pass --listen unix:PATH or --listen tls:HOST:PORT")
        }
        if !options.plainTCP, let plain = result.first(where: { $0.transport == .tcp }) {
            throw AgentError(.invalidArgument,
                             "\(plain) is plain TCP, which is off: listen with tls:HOST:PORT (or name the systemd socket 'tls'), or pass --plain-tcp (config plain-tcp = yes) to serve HELLO, PING and a health summary there")
        }
        return result
    }

    /// The host name, as `HELLO` and `HEALTH` report it.
    public static func hostName() -> String {
        ProcessInfo.processInfo.hostName
    }

    /// The TLS context when any listener speaks TLS, else nil.
    public static func tlsContext(for listeners: [Listener], options: AgentOptions) throws -> NIOSSLContext? {
        guard listeners.contains(where: { $0.transport == .tls }) else { return nil }
        return try options.tlsFiles.serverContext()
    }

    /// The whole life of an agent process: its config file (`configPath`, else
    /// `defaultConfig` when present), the common options merged and checked, the logger,
    /// the listeners and TLS, then the server until SIGTERM or the idle exit.
    /// `makeHandler` turns the loaded config file into the agent's verbs.
    public static func serve(agent name: String, options commandLine: AgentOptions, configPath: String?,
                             defaultConfig: String, makeHandler: (ConfigFile?) throws -> any RequestHandler) async throws {
        let file = try loadConfig(path: configPath, defaultPath: defaultConfig)
        var options = commandLine
        try options.merge(file)
        try options.validate()
        let handler = try makeHandler(file)
        let logger = makeLogger(name, level: options.logLevel)
        let listeners = try listeners(options)
        let server = AgentServer(
            listeners: listeners,
            limits: options.limits(),
            identity: AgentIdentity(agent: name, host: hostName()),
            handler: handler,
            logger: logger,
            tls: try tlsContext(for: listeners, options: options),
            policy: options.accessPolicy)
        if listeners.contains(where: { $0.transport == .tls }), options.allowAdmin.isEmpty {
            logger.notice("no allow-admin pattern: over TLS nobody may change this host (root on the unix socket still may); see docs/security.md")
        }
        try await run(server, logger: logger)
    }

    /// Runs `server` until SIGTERM/SIGINT (graceful) or the idle exit.
    public static func run(_ server: AgentServer, logger: Logger) async throws {
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}
