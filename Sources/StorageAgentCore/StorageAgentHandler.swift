import AgentAPI
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
    /// HEALTH's checks, shared by the requests that arrive while they run (`SharedProbe`).
    let health: SharedProbe<[HealthCheck]>

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
                             lockTimeout: configuration.lockTimeout, applier: applier, exportRoot: configuration.exportRoot)
        health = SharedProbe { [configuration] in await Self.healthChecks(configuration) }
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
        case .ganeshaCeph:
            return GaneshaExportsApplier(includeFile: c.ganeshaExportsFile, pidFile: c.ganeshaPidFile, listProbe: probe,
                                         probeClient: try? ClientAddress(c.nfsServer), verifyTimeout: c.verifyTimeout,
                                         fsal: .ceph(filesystem: c.cephFilesystem, user: c.cephUser))
        }
    }

    public var verbs: [String] {
        [HealthQuery.verb, ExportRequest.verb, UnexportRequest.verb, ExportsQuery.verb, SpaceQuery.verb, ChecksumRequest.verb]
            + (configuration.backend == .ganeshaCeph ? [CephSessionsQuery.verb, CephEvictRequest.verb] : [])
    }

    public func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        switch request.verb {
        case HealthQuery.verb:
            _ = try HealthQuery(request)
            return try await Health.answer(health.run(), context: context, reply: reply)
        case ExportRequest.verb:
            return try await export(ExportRequest(request), context: context, reply: reply)
        case UnexportRequest.verb:
            return try await unexport(UnexportRequest(request), context: context, reply: reply)
        case ExportsQuery.verb:
            try context.authorize(ExportsQuery(request))
            return try await exports(reply: reply)
        case SpaceQuery.verb:
            return try await space(SpaceQuery(request), context: context)
        case ChecksumRequest.verb:
            return try await checksum(ChecksumRequest(request), context: context, reply: reply)
        case CephSessionsQuery.verb where configuration.backend == .ganeshaCeph:
            let asked = try CephSessionsQuery(request)
            try context.authorize(asked)
            return try await cephSessions(reply: reply)
        case CephEvictRequest.verb where configuration.backend == .ganeshaCeph:
            return try await cephEvict(CephEvictRequest(request), context: context)
        default:
            throw unknownVerb(request.verb)
        }
    }

    // MARK: - EXPORT

    /// `EXPORT path=P client=C [client=C ...]`: ensures P exists under the export root and
    /// is exported to every C (adding only missing clients), live on the server.
    func export(_ asked: ExportRequest, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        try context.authorize(asked)
        let path = asked.path, clients = asked.clients
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
        var warnings: [ExportWarning] = result.edit.change.warnings.map { w in
            w.relation == .parent ? .parentExported(path: w.foreignPath, foreign: "\(file):\(w.lineNumber)")
                                  : .childExported(path: w.foreignPath, foreign: "\(file):\(w.lineNumber)")
        }
        warnings += result.report.warnings.map(ExportWarning.reloadTool)
        // Advice, not a refusal: the export root should be a file system of its own.
        // Written as its own DATA line until AgentAPI's ExportWarning has a case for it
        // (older readers decode an unknown warning= as a reload-tool warning with its text).
        if let problem = try? await BlockingWork.run({ ExportRootFileSystem.problem(root: root) }) {
            try await reply.data(["warning": Self.exportRootWarning, "path": root, "text": problem])
        }
        let line = try result.edit.file.managedExports().first { $0.path == path }
        return try await reply.answer(ExportRequest.self, .init(
            path: path, clients: line?.clients.map(\.address.value) ?? [], changed: result.written,
            fsid: line.map { String($0.fsid) } ?? "", backend: configuration.backend, warnings: warnings))
    }

    /// `DATA warning=export-root-shared path=ROOT text=...` on EXPORT (and the HEALTH
    /// check `export-root-fs`): the export root is not a file system of its own.
    static let exportRootWarning = "export-root-shared"

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
    func unexport(_ asked: UnexportRequest, context: RequestContext, reply: ReplyStream) async throws -> Fields {
        try context.authorize(asked)
        let path = asked.path, clients = asked.clients
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
        let remaining = try result.edit.file.managedExports().first { $0.path == path }
        // The path may stay exported by the administrator's own lines: say where.
        let foreign = result.edit.file.conflicts(for: path).filter(\.isConflict)
            .map { "\(configuration.exportsFile):\($0.lineNumber)" }
        return try await reply.answer(UnexportRequest.self, .init(
            path: path, clients: remaining?.clients.map(\.address.value) ?? [], changed: result.written,
            backend: configuration.backend, foreign: foreign, warnings: result.report.warnings.map(ExportWarning.reloadTool)))
    }

    // MARK: - EXPORTS

    /// `EXPORTS`: every entry of the exports file, ours and foreign, read-only.
    func exports(reply: ReplyStream) async throws -> Fields {
        let file = try await store.current()
        let block: ExportsQuery.BlockState
        switch file.managedBlockState {
        case .absent: block = .absent
        case .present: block = .present
        case .malformed: block = .malformed
        }
        return try await reply.answer(ExportsQuery.self, .init(records: Self.records(file), block: block,
                                                               backend: configuration.backend))
    }

    /// One `DATA` record per entry, in file order. Pure.
    ///
    /// `owner=storagectl` for lines inside the managed block (with `fsid=`, or
    /// `invalid=REASON` for a hand-edited line), `owner=foreign` for every other entry;
    /// `conflict=yes` on both sides when a foreign entry exports a path of ours.
    public static func records(_ file: ExportsFile) -> [ExportRecord] {
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
        var records: [ExportRecord] = []
        var lineNumber = 1
        for (index, line) in file.lines.enumerated() {
            defer { lineNumber += line.raw.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) } }
            guard let entry = line.entry else { continue }
            let managed = managedRange.contains(index)
            var record = ExportRecord(owner: managed ? .storagectl : .foreign, path: entry.path, line: lineNumber,
                                      clients: entry.clients.map { $0.host ?? "*" },
                                      conflict: conflicted.contains(ExportPath.lexicallyNormalized(entry.path)), text: line.content)
            if managed {
                do {
                    record.fsid = String(try ManagedExport(entry: entry).fsid)
                } catch {
                    record.invalid = error.description
                }
            }
            // A foreign line may list hundreds of clients: its record is cut to fit in
            // one protocol line (docs/protocol.md, EXPORTS).
            records.append(record.fitted())
        }
        return records
    }

    // MARK: - HEALTH

    /// Checks the exports file, the export root and the reload path of the backend, on
    /// a blocking thread (`access`, `stat` and file reads must not hold one of the few
    /// threads of Swift's cooperative pool).
    public func healthChecks() async -> [HealthCheck] { await Self.healthChecks(configuration) }

    static func healthChecks(_ c: StorageAgentConfiguration) async -> [HealthCheck] {
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
        if FileManager.default.fileExists(atPath: c.exportRoot) {
            // Advice: state=ok (nothing is refused, health is not degraded) with a
            // warning= fact and the advice as the detail.
            if let problem = ExportRootFileSystem.problem(root: c.exportRoot) {
                checks.append(HealthCheck("export-root-fs", ok: true, detail: "warning: " + problem,
                                          facts: ["warning": Self.exportRootWarning]))
            } else {
                checks.append(HealthCheck("export-root-fs", ok: true, detail: "\(c.exportRoot) is a file system of its own"))
            }
        }
        let unsafe = ExportPathCheck.failures(((try? ExportsFile(parsing: PosixFiles.read(c.exportsFile) ?? [],
                                                                mode: c.exportsFileIsDropIn ? .dropIn : .shared).managedExports()) ?? []).map(\.path),
                                              root: c.exportRoot)
        checks.append(HealthCheck("managed-paths", ok: unsafe.isEmpty, detail: unsafe.isEmpty
            ? "every managed export is a real directory under \(c.exportRoot)"
            : ExportPathCheck.summary(unsafe, root: c.exportRoot)))
        switch c.backend {
        case .kernel:
            checks.append(FileChecks.executable("reload-tool", c.exportfsPath, remedy: "install nfs-kernel-server"))
        case .ganesha:
            checks.append(FileChecks.writableFile("ganesha-exports-file", c.ganeshaExportsFile))
            checks.append(GaneshaProcess.healthCheck("reload-tool", pidFile: c.ganeshaPidFile))
        case .ganeshaCeph:
            checks.append(FileChecks.writableFile("ganesha-exports-file", c.ganeshaExportsFile))
            checks.append(GaneshaProcess.healthCheck("reload-tool", pidFile: c.ganeshaPidFile))
            checks.append(CephGateway.mountCheck(root: c.exportRoot))
            checks.append(CephGateway.writeCacheCheck(conf: c.cephConf, user: c.cephUser))
            checks.append(FileChecks.executable("ceph-tool", c.cephPath, remedy: "install ceph-common"))
            if let address = c.floatingAddress { checks.append(CephGateway.floatingCheck(address)) }
        }
        return checks
    }
}

/// Local facts for health checks; each returns a check with a remedy in its detail.
public enum FileChecks {
    public static func writableFile(_ name: String, _ path: String) -> HealthCheck {
        // The file is replaced by rename(2) in its directory: the directory must be writable.
        let directory = (path as NSString).deletingLastPathComponent
        if access(directory, F_OK) == 0 && access(directory, W_OK) != 0 {
            return HealthCheck(name, ok: false, detail: "\(directory) is not writable (\(String(cString: strerror(errno)))), and \(path) is replaced by a rename in it; under systemd: the drop-in `storage-agent --print-unit-drop-in` prints (docs/install.md)")
        }
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
}
