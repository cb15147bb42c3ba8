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
                             "no socket to serve: start through the agent's .socket unit (systemd passes LISTEN_FDS) or pass --listen unix:PATH or --listen tcp:HOST:PORT")
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

    /// Runs `server` until SIGTERM/SIGINT (graceful) or the idle exit.
    public static func run(_ server: AgentServer, logger: Logger) async throws {
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}
