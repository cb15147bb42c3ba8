import AgentRuntime
import StorageAgentCore

// Thin executable: everything lives in StorageAgentCore.
await runAsyncCommand(StorageAgentCommand.self)
