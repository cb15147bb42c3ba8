import AgentProtocol
import AgentRuntime

/// Streams a job's `PROGRESS` while a request waits for the job, for COPY and LOCALIZE.
enum JobStreaming {
    /// Sends `progress` every `interval` (the first at once) until the job's task ends,
    /// then returns its value. Structured: the watcher is a child task of this call,
    /// cancelled and awaited before it returns (also when it throws). A reply that
    /// cannot be written (the client went away) stops the watcher, not the job: the job
    /// belongs to the agent, and this call still waits for it (so a client that asks
    /// again finds it running or finished).
    static func awaitJob<Record: Sendable>(_ job: AgentJob<Record>, every interval: Duration, reply: ReplyStream) async throws -> Record {
        try await withThrowingTaskGroup(of: Record?.self) { group in
            // Awaiting a task's value does not cancel it: the job goes on either way.
            group.addTask { try await job.task.value }
            group.addTask {
                await watch(job.progress, every: interval, reply: reply)
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let record = next { return record }
            }
            // Unreachable: the job's child always returns a record or throws.
            throw AgentError(.internal, "the job of \(job.domain) ended without a result")
        }
    }

    /// One `PROGRESS done= total= rate= [disk=]` per `interval` until cancelled or the
    /// reply fails.
    static func watch(_ progress: JobProgress, every interval: Duration, reply: ReplyStream) async {
        while !Task.isCancelled {
            let s = progress.snapshot
            var f: Fields = ["done": String(s.done), "total": String(s.total), "rate": String(s.rate)]
            if !s.disk.isEmpty { f.append("disk", s.disk) }
            do { try await reply.progress(f) } catch { return }
            do { try await Task.sleep(for: interval) } catch { return }
        }
    }
}
