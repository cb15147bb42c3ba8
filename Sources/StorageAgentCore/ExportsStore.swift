import AgentProtocol
import ExportsFile
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The outcome of one change.
public struct StoreChange: Sendable {
    /// The edit as computed from the file found under the lock (after several edits
    /// folded into one, `edit.change` describes the last one only).
    public let edit: ExportsEdit
    /// True when the exports file was rewritten.
    public let written: Bool
    /// What the backend did (`reloaded == false` when everything was already live).
    public let report: ApplyReport
}

/// The exports file of the storage host, changed one writer at a time and applied.
///
/// Locking: in this process an actor-held FIFO gate admits one change at a time; across
/// processes an exclusive `flock` on `<exports-file>.storagectl.lock` (waited for at most
/// `lockTimeout`, then `busy`). Reads (`current()`) take no lock: the file is only ever
/// replaced by `rename(2)`, so a reader sees one whole version.
///
/// Durability (`PosixFiles.writeAtomically`): the previous version is kept as
/// `<exports-file>.storagectl.prev`, the new one is written to a temporary file in the
/// same directory, fsynced, renamed over the file, and the directory fsynced. A crash
/// (kill -9, power loss) at any instant leaves the old or the new file, never a torn or
/// empty one.
///
/// Failure: when the backend cannot prove the new file live, the previous bytes are
/// written back the same way and applied again; the error says what failed and how the
/// restore went.
public actor ExportsStore {
    public let exportsFile: String
    public let mode: ExportsFile.Mode
    public let lockTimeout: Duration
    public let applier: any ExportsApplier
    /// When set, every managed path of a file about to be applied is re-checked under it
    /// (`ExportPathCheck`): a real directory, no symbolic link below the root.
    public let exportRoot: String?

    private var busy = false
    /// One `exports applied` line per change that reached the backend, with the backend's
    /// share of the time (`backend-ms`) beside ours (`own-ms`, from the gate to the answer):
    /// the request log's `elapsed` is the whole verb (docs/benchmarks.md, EXPORT at scale).
    private static let logger = Logger(label: "storage-agent")
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init(exportsFile: String, mode: ExportsFile.Mode, lockTimeout: Duration, applier: any ExportsApplier,
                exportRoot: String? = nil) {
        self.exportsFile = exportsFile
        self.mode = mode
        self.lockTimeout = lockTimeout
        self.applier = applier
        self.exportRoot = exportRoot
    }

    /// The managed paths of `file` that fail `ExportPathCheck` (none without an export root).
    func unsafePaths(_ file: ExportsFile) async throws(AgentError) -> [ExportPathCheck.Failure] {
        guard let root = exportRoot else { return [] }
        let paths = ((try? file.managedExports()) ?? []).map(\.path)
        return try await BlockingWork.agent { () throws(AgentError) in ExportPathCheck.failures(paths, root: root) }
    }

    public nonisolated var lockPath: String { exportsFile + ".storagectl.lock" }
    public nonisolated var previousPath: String { exportsFile + ".storagectl.prev" }

    /// The file as it is now (an absent file is an empty one).
    public func current() async throws(AgentError) -> ExportsFile {
        let path = exportsFile
        let bytes = try await BlockingWork.agent { () throws(AgentError) in try PosixFiles.read(path) }
        return ExportsFile(parsing: bytes ?? [], mode: mode)
    }

    /// Changes the file with `edit`, then makes the backend serve it.
    ///
    /// Under the locks: reads the file, computes `edit` (which validates and may throw:
    /// nothing has been written then), runs `prepare` (e.g. creating the directory), and
    /// writes the new file when it differs. Every managed path of the new file is
    /// checked first (`ExportPathCheck`): one that is no longer a real directory under the
    /// export root makes the change `invalid-state`, with nothing written or applied, so the
    /// server is never told to reload a file that exports through a symbolic link (removing
    /// that path, e.g. UNEXPORT, passes). Then the plan is applied, or, when the file
    /// did not change, only checked and applied if it is not live (so a repeated call
    /// also repairs an export that a reboot or a hand-run `exportfs -ua` took away).
    public func change(
        _ edit: @Sendable (ExportsFile) throws(AgentError) -> ExportsEdit,
        prepare: @Sendable (ExportsEdit) async throws(AgentError) -> Void = { _ throws(AgentError) in }
    ) async throws(AgentError) -> StoreChange {
        await enter()
        defer { leave() }
        let started = ContinuousClock.now
        var backend = Duration.zero
        var entries = 0
        var applied = false
        defer {
            if applied {
                let total = ContinuousClock.now - started
                Self.logger.info("exports applied", metadata: [
                    "entries": "\(entries)", "own-ms": "\(Self.milliseconds(total - backend))",
                    "backend-ms": "\(Self.milliseconds(backend))"])
            }
        }
        let lockPath = self.lockPath, timeout = lockTimeout
        let lock = try await BlockingWork.agent { () throws(AgentError) in try FileLock.acquire(lockPath, timeout: timeout) }
        defer { lock.unlock() }

        let path = exportsFile
        let oldBytes = try await BlockingWork.agent { () throws(AgentError) in try PosixFiles.read(path) }
        let old = ExportsFile(parsing: oldBytes ?? [], mode: mode)
        let result = try edit(old)
        entries = result.file.foreignEntries.count + ((try? result.file.managedExports().count) ?? 0)
        try await prepare(result)
        let unsafe = try await unsafePaths(result.file)
        if !unsafe.isEmpty, let root = exportRoot { throw ExportPathCheck.error(unsafe, root: root) }
        let plan = try await Self.plan(old: old, new: result.file)

        let newBytes = result.file.bytes
        if newBytes == (oldBytes ?? []) {
            let problems = await applier.problems(plan, file: result.file)
            if problems.isEmpty { return StoreChange(edit: result, written: false, report: ApplyReport(reloaded: false)) }
            let (report, took) = try await timedApply(plan, result.file)
            backend += took; applied = true
            return StoreChange(edit: result, written: false, report: report)
        }

        let previous = previousPath
        try await BlockingWork.agent { () throws(AgentError) in
            if let oldBytes { try PosixFiles.writeAtomically(previous, oldBytes) }
            try PosixFiles.writeAtomically(path, newBytes)
        }
        let failure: AgentError
        do {
            let (report, took) = try await timedApply(plan, result.file)
            backend += took; applied = true
            return StoreChange(edit: result, written: true, report: report)
        } catch {
            failure = error
            applied = false
        }
        // Put the previous version back and apply it again; say both.
        var message = failure.message
        // The previous file may hold the path this change removed because it failed the
        // check: it is not put back then (it would be applied through the link).
        let unsafeOld = (try? await unsafePaths(old)) ?? []
        if !unsafeOld.isEmpty {
            message += ". The previous exports file was not put back: it exports "
                + unsafeOld.map { "\($0.path), which \($0.reason)" }.joined(separator: "; ")
                + " (the previous version is in \(previousPath))"
            throw AgentError(failure.code, message, details: failure.details)
        }
        do {
            try await BlockingWork.agent { () throws(AgentError) in
                if let oldBytes {
                    try PosixFiles.writeAtomically(path, oldBytes)
                } else {
                    if unlink(path) != 0 && errno != ENOENT {
                        throw AgentError(.internal, "cannot remove \(path): \(PosixFiles.errorText())")
                    }
                    try PosixFiles.syncDirectory(of: path)
                }
            }
            let back = try await Self.plan(old: result.file, new: old)
            _ = try await applier.apply(back, file: old)
            message += ". The previous exports file was restored and applied again; nothing changed"
        } catch {
            message += ". Restoring the previous exports file failed too: \(error.message) (the previous version is in \(previousPath))"
        }
        throw AgentError(failure.code, message, details: failure.details)
    }

    /// What the server must serve once `new` replaces `old`: `new`'s managed exports
    /// with real paths, and the clients `old` had that `new` dropped (unless a foreign
    /// entry still exports that path).
    static func plan(old: ExportsFile, new: ExportsFile) async throws(AgentError) -> ApplyPlan {
        let newManaged: [ManagedExport]
        let oldManaged: [ManagedExport]
        do throws(ExportsError) {
            newManaged = try new.managedExports()
            oldManaged = (try? old.managedExports()) ?? []
        } catch {
            throw AgentError(error)
        }
        let foreignPaths = Set(new.foreignEntries.map { ExportPath.lexicallyNormalized($0.path) })
        var kept = Set<GoneExport>()
        for export in newManaged { for client in export.clients { kept.insert(GoneExport(path: export.path, client: client.address.value)) } }
        var gone: [GoneExport] = []
        for export in oldManaged where !foreignPaths.contains(ExportPath.lexicallyNormalized(export.path)) {
            for client in export.clients {
                let pair = GoneExport(path: export.path, client: client.address.value)
                if !kept.contains(pair) { gone.append(pair) }
            }
        }
        let resolved = await BlockingWork.resolve(newManaged.map(\.path) + gone.map(\.path))
        return ApplyPlan(
            managed: newManaged.map { ManagedExport(path: resolved[$0.path] ?? $0.path, fsid: $0.fsid, clients: $0.clients) },
            gone: gone.map { GoneExport(path: resolved[$0.path] ?? $0.path, client: $0.client) })
    }

    /// The backend's apply, and how long it took.
    private func timedApply(_ plan: ApplyPlan, _ file: ExportsFile) async throws(AgentError) -> (ApplyReport, Duration) {
        let t0 = ContinuousClock.now
        let report = try await applier.apply(plan, file: file)
        return (report, ContinuousClock.now - t0)
    }

    static func milliseconds(_ d: Duration) -> String {
        let us = d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
        let frac = String(us % 1000)
        return "\(us / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
    }

    private func enter() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func leave() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}

extension BlockingWork {
    /// Real paths (etab and the NFS server speak real paths); unresolvable paths are left out.
    static func resolve(_ paths: [String]) async -> [String: String] {
        (try? await run {
            var result: [String: String] = [:]
            for path in paths { if let real = PosixFiles.realPath(path) { result[path] = real } }
            return result
        }) ?? [:]
    }
}

extension AgentError {
    /// The one mapping from the ExportsFile library's errors to the wire vocabulary.
    public init(_ error: ExportsError) {
        self.init(AgentError.Code(rawValue: error.code) ?? .internal, error.description)
    }
}
