import AgentRuntime
import ComputeAgentCore

// Thin executable: everything lives in ComputeAgentCore.
await runAsyncCommand(ComputeAgentCommand.self)
