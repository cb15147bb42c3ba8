import AgentRuntime
import StoragectlCommands

// Thin executable: everything lives in StoragectlCommands.
await runAsyncCommand(StoragectlCommand.self)
