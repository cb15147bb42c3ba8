// fuzz-config: the INI config files (docs/fuzzing.md, docs/install.md) and every reader
// of their values: storagectl's inventory (`storagectl.conf`), the `[agent]` section every
// agent merges into its options (then validated and turned into server limits, in the
// order `AgentMain.serve` uses), and the storage and compute agents' own sections.
// `ConfigFile.load` hands `parse` at most 1 MiB of valid UTF-8.
import AgentRuntime
import ArgumentParser
import ComputeAgentCore
import ConfigFile
import StorageAgentCore
import StoragectlCommands

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ start: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: min(size, 1 << 20))) } ?? []
    guard let text = String(validating: bytes, as: UTF8.self),
          let file = try? ConfigFile.parse(text, path: "fuzz.conf") else { return 0 }
    for section in file.sections {
        _ = try? file.requireKnownKeys(section, ["agent"])
    }
    _ = try? Inventory(file)
    if var options = try? AgentOptions.parse([]), (try? options.merge(file)) != nil, (try? options.validate()) != nil {
        _ = options.limits()
        _ = options.tlsFiles
    }
    if let command = try? StorageAgentCommand.parse([]) { _ = try? command.resolved(file) }
    if let command = try? ComputeAgentCommand.parse([]) { _ = try? command.resolved(file) }
    return 0
}
