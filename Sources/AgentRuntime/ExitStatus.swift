import AgentProtocol
import ArgumentParser
import ConfigFile
#if canImport(Glibc)
import Glibc
#endif

/// The one mapping from the error vocabulary to process exit statuses, for `storagectl`
/// and the agents alike. Values follow sysexits.h so scripts can tell "fix your input"
/// from "try again later".
public enum ExitStatus {
    public static let success: Int32 = 0
    /// Something failed that retrying will not fix by itself (`internal`, a failed check).
    public static let failure: Int32 = 1

    public static func code(for code: AgentError.Code) -> Int32 {
        switch code {
        case .invalidArgument, .unsupported: return 64      // EX_USAGE
        case .conflict, .exists, .invalidState: return 65   // EX_DATAERR
        case .notFound: return 66                           // EX_NOINPUT
        case .unavailable: return 69                        // EX_UNAVAILABLE
        case .busy, .timeout: return 75                     // EX_TEMPFAIL
        case .permissionDenied: return 77                   // EX_NOPERM
        case .internal: return failure
        }
    }

    /// The table for `--help` texts.
    public static let helpText = """
        EXIT STATUS
          0   success
          1   failure (an internal error, or a host or check reported unhealthy)
          64  invalid arguments or configuration (invalid-argument, unsupported)
          65  refused by the current state (conflict, exists, invalid-state)
          66  not found (not-found)
          69  an agent could not be reached (unavailable)
          75  temporary: busy or timed out; try again (busy, timeout)
          77  permission denied (permission-denied)
        """

    /// Runs `body`; prints an error as `PROGRAM: error: ...` on stderr and exits with
    /// its mapped status. ArgumentParser's own errors pass through unchanged.
    public static func reporting(_ program: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let e as AgentError {
            printError("\(program): error: \(e.message) [\(e.code.rawValue)]")
            throw ExitCode(code(for: e.code))
        } catch let e as ConfigError {
            printError("\(program): error: \(e)")
            throw ExitCode(64)
        }
    }
}

/// Writes one line to standard error (unbuffered, whole line in one write).
public func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    bytes.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
}

/// Runs an async root command. (Calling `main` on the concrete type from top-level code
/// picks ParsableCommand's synchronous overload, which never awaits `run()`.)
public func runAsyncCommand<C: AsyncParsableCommand>(_ command: C.Type) async {
    await command.main(nil)
}
