import AgentProtocol
import AgentRuntime
import ArgumentParser
import Foundation

/// How `share` and `unshare` end: the result (summary or JSON) on stdout, or the failure
/// (`ShareFailure`: step, host, the agent's words, the remedy) on stderr or as JSON, with
/// the exit status of its error code.
enum FlowReport {
    /// Runs a flow, keeping its failure as a value (the agents' sessions close before
    /// anything is printed).
    static func capture<R: Sendable>(_ body: () async throws(ShareFailure) -> R) async -> Result<R, ShareFailure> {
        do throws(ShareFailure) { return .success(try await body()) } catch { return .failure(error) }
    }

    /// Prints the result or the failure and exits with the failure's status. `--json`: one
    /// document; `--json-lines` (the display's mode): a last `result` or `failure` record.
    static func finish<R>(_ command: String, vm: String, json: Bool, display: ShareDisplay, _ outcome: Result<R, ShareFailure>,
                          summary: (R) -> String, encode: (R, _ compact: Bool) throws -> String) throws {
        display.finish()
        let lines = display.mode == .jsonLines
        switch outcome {
        case .success(let result):
            if lines {
                print(ShareFormatting.finalRecord("result", document: (try? encode(result, true)) ?? "{}"))
            } else if json {
                print((try? encode(result, false)) ?? "{}")
            } else {
                print(summary(result), terminator: "")
            }
        case .failure(let error):
            if lines {
                print(ShareFormatting.finalRecord("failure", document: (try? ShareFormatting.json(failure: error, compact: true)) ?? "{}"))
            } else if json {
                print((try? ShareFormatting.json(failure: error)) ?? "{}")
            } else {
                printError("storagectl: \(command) \(vm): \(error)")
            }
            throw ExitCode(error.exitStatus)
        }
    }
}
