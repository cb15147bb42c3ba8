import AgentAPI
import AgentProtocol
import ExportsFile
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The `ganesha` backend: the managed entries as NFS-Ganesha EXPORT blocks in an include
/// file, SIGHUP to ganesha, then proof from the server's export list.
///
/// - The include file (`--ganesha-exports-file`, `%include`d from ganesha.conf by the
///   administrator) is rendered by `GaneshaExports.render` and replaced atomically.
///   Export_Ids already in it are read back and kept, so an export's id never changes
///   while it stays exported (ganesha treats a changed id as remove + add).
/// - SIGHUP makes ganesha re-read its exports; a broken block is applied partially with
///   only CRIT log lines and "Reread exports complete" is logged anyway
///   (`shared/lab-notes.md`), so the log is never trusted: the export list is.
/// - Ganesha lists an export only to hosts that have access to it. So that the agent
///   can see its exports, the probe's own address (`--nfs-server`, when it is a valid
///   client address that is not already a client) is added to every export as a
///   listing-only client (`Access_Type = MDONLY_RO; Squash = All_Squash`: listed,
///   metadata as the anonymous user, no file data). Not read-only access: ganesha does
///   not require a privileged source port, and AUTH_SYS lets any local user claim any
///   uid, so a read-only client at 127.0.0.1 let every local user of the storage host
///   read images owned by, e.g., the qemu user (tested).
///   With `--verify-export-list no` nothing is added and nothing is verified beyond
///   delivering the signal.
/// Requires permission to write the include file and to signal ganesha (root).
public struct GaneshaExportsApplier: ExportsApplier {
    public let includeFile: String
    public let pidFile: String
    public let listProbe: (any ExportListProbe)?
    /// The address the probe asks from; granted read-only access (see above).
    public let probeClient: ClientAddress?
    public let verifyTimeout: Duration
    /// `VFS` (backend `ganesha`) or `CEPH` (backend `ganesha-ceph`).
    public let fsal: GaneshaExports.FSAL

    public init(includeFile: String, pidFile: String, listProbe: (any ExportListProbe)?,
                probeClient: ClientAddress?, verifyTimeout: Duration = .seconds(5), fsal: GaneshaExports.FSAL = .vfs) {
        self.fsal = fsal
        self.includeFile = includeFile
        self.pidFile = pidFile
        self.listProbe = listProbe
        self.probeClient = probeClient
        self.verifyTimeout = verifyTimeout
    }

    public var backend: ExportsBackend { fsal == .vfs ? .ganesha : .ganeshaCeph }

    var ignoring: Set<String> { probeClient.map { [$0.value] } ?? [] }

    /// The client that may list the exports (the probe's address), when verifying.
    var listingClients: [ClientAddress] {
        guard let probeClient, listProbe != nil else { return [] }
        return [probeClient]
    }

    /// The include file's text for `plan`, keeping the ids in `current`.
    func render(_ plan: ApplyPlan, current: String) throws(AgentError) -> String {
        do throws(ExportsError) {
            let ids = GaneshaExports.exportIds(in: current)
            // FSAL CEPH: a block is never removed, only parked; render parks each of these
            // the plan does not export.
            return try GaneshaExports.render(plan.managed, pinned: ids, listingOnly: listingClients, fsal: fsal,
                                             parked: fsal == .vfs ? [:] : ids,
                                             parkedFilesystemIds: GaneshaExports.filesystemIds(in: current))
        } catch {
            throw AgentError(error)
        }
    }

    func currentInclude() async throws(AgentError) -> String {
        let path = includeFile
        let bytes = try await BlockingWork.agent { () throws(AgentError) in try PosixFiles.read(path) }
        return String(decoding: bytes ?? [], as: UTF8.self)
    }

    public func problems(_ plan: ApplyPlan, file: ExportsFile) async -> [String] {
        do {
            let current = try await currentInclude()
            if try render(plan, current: current) != current {
                return ["\(includeFile) does not hold the managed exports yet"]
            }
            guard let listProbe else { return [] }
            return ExportListCheck.problems(plan, listed: try await listProbe.exports(), ignoring: ignoring,
                                            aliases: await HostResolver.aliases(plan))
        } catch {
            return [error.message]
        }
    }

    public func apply(_ plan: ApplyPlan, file: ExportsFile) async throws(AgentError) -> ApplyReport {
        let current = try await currentInclude()
        let text = try render(plan, current: current)
        let path = includeFile
        if text != current {
            try await BlockingWork.agent { () throws(AgentError) in try PosixFiles.writeAtomically(path, Array(text.utf8)) }
        }
        let pidFile = self.pidFile
        let pid = try await BlockingWork.agent { () throws(AgentError) -> pid_t in
            let ganesha = try GaneshaProcess(pidFile: pidFile)
            try ganesha.signal(SIGHUP)
            return ganesha.pid
        }
        guard let listProbe else { return ApplyReport(reloaded: true) }
        let problems = await ExportListCheck.poll(plan, probe: listProbe, ignoring: ignoring, timeout: verifyTimeout)
        if !problems.isEmpty {
            throw AgentError(.unavailable, "nfs-ganesha (pid \(pid)) did not serve the managed exports within \(verifyTimeout) after SIGHUP: "
                + problems.joined(separator: "; ") + "; see its log for CRIT lines about \(includeFile)")
        }
        return ApplyReport(reloaded: true)
    }
}
