import AgentAPI
import AgentProtocol
import ExportsFile

/// The `kernel` backend: nfs-utils' `exportfs -ra`, verified from what it printed and
/// from `etab`.
///
/// exportfs(8) reads `/etc/exports` and `/etc/exports.d/*.exports` (fixed paths in
/// nfs-utils), writes `/var/lib/nfs/etab` and pushes it to a running nfsd. Its exit
/// status is not a verdict (`shared/lab-notes.md`: an unresolvable host exits 0 and drops
/// the entry; `host (rw)` exits 0 and exports to everyone), so the verdict is:
/// - no line it printed names one of our paths (our lines never make it speak), and
/// - `Etab.discrepancies` finds every managed client live with our options and nothing
///   else on our paths, and every removed client gone;
/// - optionally (`--verify-export-list yes`) the server's export list agrees
///   (needs a running mountd).
/// Requires root (exportfs writes etab and talks to the kernel).
public struct KernelExportsApplier: ExportsApplier {
    public let exportfsPath: String
    public let etabPath: String
    public let timeout: Duration
    public let listProbe: (any ExportListProbe)?
    public let verifyTimeout: Duration

    public init(exportfsPath: String, etabPath: String, timeout: Duration = .seconds(30),
                listProbe: (any ExportListProbe)? = nil, verifyTimeout: Duration = .seconds(5)) {
        self.exportfsPath = exportfsPath
        self.etabPath = etabPath
        self.timeout = timeout
        self.listProbe = listProbe
        self.verifyTimeout = verifyTimeout
    }

    public var backend: ExportsBackend { .kernel }

    public func problems(_ plan: ApplyPlan, file: ExportsFile) async -> [String] {
        do {
            var problems = try await etabProblems(plan)
            if problems.isEmpty, let listProbe {
                problems = ExportListCheck.problems(plan, listed: try await listProbe.exports(),
                                                    aliases: await HostResolver.aliases(plan))
            }
            return problems
        } catch {
            return [error.message]
        }
    }

    public func apply(_ plan: ApplyPlan, file: ExportsFile) async throws(AgentError) -> ApplyReport {
        let argv = [exportfsPath, "-ra"]
        let timeout = self.timeout
        let result = try await BlockingWork.agent { () throws(AgentError) in try CommandRunner.run(argv, timeout: timeout) }
        let lines = Self.messages(result.output)
        // Lines naming one of our paths are about our entries: always a failure.
        let ours = Set(plan.managed.map(\.path) + plan.gone.map(\.path))
        let about = lines.filter { line in ours.contains { line.contains($0) } }
        var problems = about.map { "exportfs: \($0)" }
        problems += try await etabProblems(plan)
        if problems.isEmpty, let listProbe {
            problems = await ExportListCheck.poll(plan, probe: listProbe, timeout: verifyTimeout)
        }
        if !problems.isEmpty {
            var message = "exportfs -ra (exit status \(result.status)) did not make the managed exports live: "
                + problems.joined(separator: "; ")
            if result.status != 0 && about.isEmpty && !lines.isEmpty {
                message += " (exportfs also printed: \(lines.prefix(3).joined(separator: " | ")))"
            }
            throw AgentError(.unavailable, message)
        }
        return ApplyReport(reloaded: true, warnings: lines.filter { !about.contains($0) })
    }

    /// exportfs' messages, one per entry: indented lines continue the previous message.
    static func messages(_ output: String) -> [String] {
        var messages: [String] = []
        for line in output.split(separator: "\n") where !line.allSatisfy({ $0 == " " || $0 == "\t" }) {
            if let first = line.first, first == " " || first == "\t", !messages.isEmpty {
                messages[messages.count - 1] += " " + line.drop(while: { $0 == " " || $0 == "\t" })
            } else {
                messages.append(String(line))
            }
        }
        return messages
    }

    /// Problems found in etab; throws when etab cannot be read. A missing etab is an
    /// empty export table.
    func etabProblems(_ plan: ApplyPlan) async throws(AgentError) -> [String] {
        let path = etabPath
        let bytes = try await BlockingWork.agent { () throws(AgentError) in try PosixFiles.read(path) }
        let (entries, _) = Etab.parse(String(decoding: bytes ?? [], as: UTF8.self))
        var problems = Etab.discrepancies(managed: plan.managed, etab: entries).map { "\($0)" }
        for gone in plan.gone {
            let path = ExportPath.lexicallyNormalized(gone.path)
            let stillLive = entries.contains {
                ExportPath.lexicallyNormalized($0.path) == path
                    && ((try? ClientAddress($0.client))?.value ?? $0.client) == gone.client
            }
            if stillLive { problems.append("\(gone.path) is still live for \(gone.client) in \(etabPath)") }
        }
        return problems
    }
}

extension ExportListCheck {
    /// Asks `probe` every 100 ms until the list shows `plan` or `timeout` passes;
    /// returns the last problems (empty on success).
    static func poll(_ plan: ApplyPlan, probe: any ExportListProbe, ignoring: Set<String> = [],
                     timeout: Duration) async -> [String] {
        let deadline = ContinuousClock.now + timeout
        let aliases = await HostResolver.aliases(plan)
        var last: [String] = []
        while true {
            do {
                last = problems(plan, listed: try await probe.exports(), ignoring: ignoring, aliases: aliases)
            } catch {
                last = ["cannot read the NFS server's export list: \(error.message)"]
            }
            if last.isEmpty || ContinuousClock.now >= deadline { return last }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
