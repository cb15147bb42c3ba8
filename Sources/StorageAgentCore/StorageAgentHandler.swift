import AgentProtocol
import AgentRuntime
import ExportsFile
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The storage agent's verbs: wire decoding and answers. The domain work is in
/// `ExportsStore` (file, locks, apply) and the `ExportsApplier` backends.
///
/// Owns the exports of its host; every answer is derived from the files and processes
/// it finds, never from memory of earlier requests.
public struct StorageAgentHandler: RequestHandler {
    public let configuration: StorageAgentConfiguration
    public let policy: ExportPolicy
    public let store: ExportsStore

    /// The agent as configured: the backend chosen by `configuration.backend`.
    /// Throws `invalid-argument` for an invalid export root or client list.
    public init(configuration: StorageAgentConfiguration) throws(AgentError) {
        try self.init(configuration: configuration, applier: Self.applier(for: configuration))
    }

    /// The agent with an injected backend (tests).
    public init(configuration: StorageAgentConfiguration, applier: any ExportsApplier) throws(AgentError) {
        self.configuration = configuration
        do throws(ExportsError) {
            policy = try ExportPolicy(exportRoot: configuration.exportRoot, allowedClients: configuration.allowedClients)
        } catch {
            throw AgentError(error)
        }
        store = ExportsStore(exportsFile: configuration.exportsFile,
                             mode: configuration.exportsFileIsDropIn ? .dropIn : .shared,
                             lockTimeout: configuration.lockTimeout, applier: applier)
    }

    /// The backend `configuration` names, with the export-list probe when enabled.
    public static func applier(for c: StorageAgentConfiguration) -> any ExportsApplier {
        let probe: (any ExportListProbe)? = c.verifiesExportList ? LibNFSExportListProbe(server: c.nfsServer) : nil
        switch c.backend {
        case .kernel:
            return KernelExportsApplier(exportfsPath: c.exportfsPath, etabPath: c.etabPath, timeout: c.applyTimeout,
                                        listProbe: probe, verifyTimeout: c.verifyTimeout)
        case .ganesha:
            return GaneshaExportsApplier(includeFile: c.ganeshaExportsFile, pidFile: c.ganeshaPidFile, listProbe: probe,
                                         probeClient: try? ClientAddress(c.nfsServer), verifyTimeout: c.verifyTimeout)
        }
    }

    public var verbs: [String] { ["HEALTH", "EXPORT", "UNEXPORT", "EXPORTS", "SPACE", "CHECKSUM"] }

    public func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case "HEALTH":
            return try await Health.answer(healthChecks(), context: context, reply: reply)
        case "EXPORT":
            try context.requireAuthenticated(request.verb)
            return try await export(request, reply: reply)
        case "UNEXPORT":
            try context.requireAuthenticated(request.verb)
            return try await unexport(request, reply: reply)
        case "EXPORTS":
            return try await exports(request, reply: reply)
        case "SPACE":
            return try await space(request)
        case "CHECKSUM":
            return try await checksum(request, reply: reply)
        default:
            throw unknownVerb(request.verb)
        }
    }

    // MARK: - EXPORT

    /// `EXPORT path=P client=C [client=C ...]`: ensures P exists under the export root and
    /// is exported to every C (adding only missing clients), live on the server.
    func export(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try Self.requireKeys(request, allowed: ["path", "client"])
        let path = try Self.single(request, "path")
        let clients = request.fields.all("client")
        guard !clients.isEmpty else {
            throw AgentError(.invalidArgument, "EXPORT needs at least one client=HOST (a compute host from the inventory)")
        }
        // Everything is validated before the lock is taken and anything is written.
        let policy = self.policy
        do throws(ExportsError) {
            _ = try policy.validatedPath(path)
            for client in clients { _ = try policy.validatedClient(client) }
        } catch {
            throw AgentError(error)
        }
        let file = configuration.exportsFile
        let root = configuration.exportRoot
        let result = try await store.change({ (current: ExportsFile) throws(AgentError) -> ExportsEdit in
            do throws(ExportsError) {
                return try current.export(path: path, clients: clients, policy: policy)
            } catch .conflict(_, let foreign) {
                throw Self.conflict(path: path, file: file, foreign: foreign)
            } catch {
                throw AgentError(error)
            }
        }, prepare: { _ throws(AgentError) in
            _ = try await BlockingWork.agent { () throws(AgentError) in try ExportDirectory.ensure(path, root: root) }
        })
        for warning in result.edit.change.warnings {
            try await reply.data(["warning": warning.relation == .parent ? "parent-exported" : "child-exported",
                                  "path": warning.foreignPath, "foreign": "\(file):\(warning.lineNumber)"])
        }
        for line in result.report.warnings { try await reply.data(["warning": "reload-tool", "text": line]) }
        let line = try result.edit.file.managedExports().first { $0.path == path }
        return [
            "path": path,
            "clients": line?.clients.map(\.address.value).joined(separator: ",") ?? "",
            "changed": result.written ? "yes" : "no",
            "fsid": line.map { String($0.fsid) } ?? "",
            "backend": configuration.backend.rawValue,
        ]
    }

    static func conflict(path: String, file: String, foreign: [ExportConflict]) -> AgentError {
        let lines = foreign.map { "\(file):\($0.lineNumber) (\($0.line))" }.joined(separator: "; ")
        var details = Fields()
        for entry in foreign { details.append("foreign", "\(file):\(entry.lineNumber)") }
        return AgentError(.conflict, "\(path) is already exported by an entry storagectl does not own, at \(lines): storagectl never edits it; remove or change that line by hand, then retry", details: details)
    }

    // MARK: - UNEXPORT

    /// `UNEXPORT path=P [client=C ...]`: stops exporting P to each C, or to everyone when
    /// no client is given. Idempotent: a path storagectl does not export answers
    /// `changed=no`. The directory and its files are never removed.
    func unexport(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try Self.requireKeys(request, allowed: ["path", "client"])
        let path = try Self.single(request, "path")
        let clients = request.fields.all("client")
        // Shape checks only (not the export root or the inventory): exports made under
        // an older configuration can still be removed. The library checks the shape.
        do throws(ExportsError) {
            _ = try ExportsFile(parsing: "").unexport(path: path, client: clients.first)
            for client in clients { _ = try ClientAddress(client) }
        } catch {
            throw AgentError(error)
        }
        let result = try await store.change { (current: ExportsFile) throws(AgentError) -> ExportsEdit in
            do throws(ExportsError) {
                if clients.isEmpty { return try current.unexport(path: path) }
                // One edit per client; the store compares bytes, so the last edit's file
                // is what counts.
                var edit = try current.unexport(path: path, client: clients[0])
                for client in clients.dropFirst() { edit = try edit.file.unexport(path: path, client: client) }
                return edit
            } catch {
                throw AgentError(error)
            }
        }
        for line in result.report.warnings { try await reply.data(["warning": "reload-tool", "text": line]) }
        let remaining = try result.edit.file.managedExports().first { $0.path == path }
        var ok: Fields = [
            "path": path,
            "clients": remaining?.clients.map(\.address.value).joined(separator: ",") ?? "",
            "changed": result.written ? "yes" : "no",
            "backend": configuration.backend.rawValue,
        ]
        // The path may stay exported by the administrator's own lines: say where.
        for conflict in result.edit.file.conflicts(for: path) where conflict.isConflict {
            ok.append("foreign", "\(configuration.exportsFile):\(conflict.lineNumber)")
        }
        return ok
    }

    // MARK: - EXPORTS

    /// `EXPORTS`: every entry of the exports file, ours and foreign, read-only.
    func exports(_ request: Request, reply: ReplyStream) async throws -> Fields {
        try Self.requireKeys(request, allowed: [])
        let file = try await store.current()
        let records = Self.records(file)
        for record in records { try await reply.data(record) }
        let block: String
        switch file.managedBlockState {
        case .absent: block = "absent"
        case .present: block = "present"
        case .malformed: block = "malformed"
        }
        return [
            "exports": String(records.count),
            "managed": String(records.filter { $0["owner"] == "storagectl" }.count),
            "foreign": String(records.filter { $0["owner"] == "foreign" }.count),
            "conflicts": String(records.filter { $0["conflict"] == "yes" }.count),
            "block": block,
            "backend": configuration.backend.rawValue,
        ]
    }

    /// One `DATA` record per entry, in file order. Pure.
    ///
    /// `owner=storagectl` for lines inside the managed block (with `fsid=`, or
    /// `invalid=REASON` for a hand-edited line), `owner=foreign` for every other entry;
    /// `conflict=yes` on both sides when a foreign entry exports a path of ours.
    public static func records(_ file: ExportsFile) -> [Fields] {
        var managedRange = 0..<0
        if case .present(let begin, let end) = file.managedBlockState { managedRange = (begin + 1)..<end }
        var ours = Set<String>()
        var theirs = Set<String>()
        for (index, line) in file.lines.enumerated() {
            guard let entry = line.entry else { continue }
            let path = ExportPath.lexicallyNormalized(entry.path)
            if managedRange.contains(index) { ours.insert(path) } else { theirs.insert(path) }
        }
        let conflicted = ours.intersection(theirs)
        var records: [Fields] = []
        var lineNumber = 1
        for (index, line) in file.lines.enumerated() {
            defer { lineNumber += line.raw.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) } }
            guard let entry = line.entry else { continue }
            let managed = managedRange.contains(index)
            var record: Fields = [
                "owner": managed ? "storagectl" : "foreign",
                "path": entry.path,
                "line": String(lineNumber),
                "clients": entry.clients.map { $0.host ?? "*" }.joined(separator: ","),
            ]
            if managed {
                do {
                    record.append("fsid", String(try ManagedExport(entry: entry).fsid))
                } catch {
                    record.append("invalid", error.description)
                }
            }
            if conflicted.contains(ExportPath.lexicallyNormalized(entry.path)) { record.append("conflict", "yes") }
            record.append("text", line.content)
            records.append(record)
        }
        return records
    }

    // MARK: - Fields

    static func requireKeys(_ request: Request, allowed: Set<String>) throws(AgentError) {
        for key in request.fields.keys where !allowed.contains(key) {
            let expected = allowed.isEmpty ? "no keys" : allowed.sorted().joined(separator: ", ")
            throw AgentError(.invalidArgument, "\(request.verb) does not take '\(key)' (it takes \(expected))")
        }
    }

    static func single(_ request: Request, _ key: String) throws(AgentError) -> String {
        let values = request.fields.all(key)
        guard values.count == 1 else {
            throw AgentError(.invalidArgument, "\(request.verb) needs exactly one \(key)= (got \(values.count))")
        }
        return values[0]
    }

    // MARK: - HEALTH

    /// Checks the exports file, the export root and the reload path of the backend, on
    /// a blocking thread (`access`, `stat` and file reads must not hold one of the few
    /// threads of Swift's cooperative pool).
    public func healthChecks() async -> [HealthCheck] {
        let c = configuration
        do {
            return try await BlockingWork.run { Self.fileChecks(c) }
        } catch {
            return [HealthCheck("files", ok: false, detail: "the file checks could not run: \(error)")]
        }
    }

    /// The file checks of `healthChecks()`. Blocking.
    static func fileChecks(_ c: StorageAgentConfiguration) -> [HealthCheck] {
        var checks = [FileChecks.writableFile("exports-file", c.exportsFile)]
        checks.append(FileChecks.directory("export-root", c.exportRoot))
        switch c.backend {
        case .kernel:
            checks.append(FileChecks.executable("reload-tool", c.exportfsPath, remedy: "install nfs-kernel-server"))
        case .ganesha:
            checks.append(FileChecks.writableFile("ganesha-exports-file", c.ganeshaExportsFile))
            checks.append(FileChecks.process("reload-tool", pidFile: c.ganeshaPidFile, what: "nfs-ganesha"))
        }
        return checks
    }
}

/// Local facts for health checks; each returns a check with a remedy in its detail.
public enum FileChecks {
    public static func writableFile(_ name: String, _ path: String) -> HealthCheck {
        if access(path, F_OK) == 0 {
            return access(path, W_OK) == 0
                ? HealthCheck(name, ok: true, detail: "\(path) is writable")
                : HealthCheck(name, ok: false, detail: "\(path) is not writable: \(String(cString: strerror(errno))); the agent must run as root with write access")
        }
        let dir = (path as NSString).deletingLastPathComponent
        return access(dir, W_OK) == 0
            ? HealthCheck(name, ok: true, detail: "\(path) does not exist yet; \(dir) is writable")
            : HealthCheck(name, ok: false, detail: "\(path) does not exist and \(dir) is not writable")
    }

    public static func directory(_ name: String, _ path: String) -> HealthCheck {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            return HealthCheck(name, ok: true, detail: "\(path) is a directory")
        }
        return HealthCheck(name, ok: false, detail: "\(path) is not a directory; create it (mkdir -p \(path)) or set --export-root")
    }

    public static func executable(_ name: String, _ path: String, remedy: String) -> HealthCheck {
        access(path, X_OK) == 0
            ? HealthCheck(name, ok: true, detail: "\(path) is present")
            : HealthCheck(name, ok: false, detail: "\(path) is missing: \(remedy)")
    }

    public static func process(_ name: String, pidFile: String, what: String) -> HealthCheck {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
        else {
            return HealthCheck(name, ok: false, detail: "no pid in \(pidFile): is \(what) running?")
        }
        return kill(pid, 0) == 0
            ? HealthCheck(name, ok: true, detail: "\(what) runs as pid \(pid)")
            : HealthCheck(name, ok: false, detail: "\(what) pid \(pid) from \(pidFile) is not running; start \(what)")
    }
}
