import ConfigFile
import Testing
@testable import AgentRuntime

/// `[agent]` numbers that trapped an agent at startup (Double to Int / Int64 milliseconds
/// out of range), found through `Tests/Fuzz/run fuzz-config` (docs/fuzzing.md). Each is now
/// a config error with file and line, or a validation error for the flag.
@Suite("agent options: numbers out of range")
struct AgentOptionsConfigBoundsTests {
    @Test("a huge or infinite number in [agent] is an error, not a trap", arguments: [
        "max-connections = 1e300", "max-connections = 9223372036854775808", "read-timeout = 1e300",
        "idle-exit = inf", "read-timeout = infinity", "idle-exit = 1e10",
    ])
    func hugeNumber(_ line: String) throws {
        let file = try ConfigFile.parse("[agent]\n\(line)\n", path: "agent.conf")
        #expect(throws: ConfigError.self) {
            var options = try AgentOptions.parse([])
            try options.merge(file)
        }
    }

    @Test("numbers in range still merge, validate and become limits")
    func inRange() throws {
        let file = try ConfigFile.parse("[agent]\nmax-connections = 1e9\nread-timeout = 1e9\nidle-exit = 0.5\n", path: "agent.conf")
        var options = try AgentOptions.parse([])
        try options.merge(file)
        try options.validate()
        let limits = options.limits()
        #expect(limits.maxConnections == 1_000_000_000)
        #expect(limits.readTimeout == .milliseconds(1_000_000_000_000))
        #expect(limits.idleExit == Duration.milliseconds(500))
    }

    @Test("the same numbers on the command line fail validation before limits() converts them", arguments: [
        ["--read-timeout", "1e300"], ["--idle-exit", "inf"], ["--read-timeout", "nan"],
    ])
    func hugeFlag(_ arguments: [String]) {
        #expect(throws: (any Error).self) {
            let options = try AgentOptions.parse(arguments)
            try options.validate()
        }
    }
}
