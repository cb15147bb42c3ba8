import AgentProtocol
import Foundation
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// The re-check of every managed export path before the NFS server is told to load it.
///
/// An NFS server exports a path by resolving it when it loads the exports: exportfs(8)
/// writes the *target* of a symbolic link into etab, nfs-ganesha opens `Path` following
/// links. A directory checked once at `EXPORT` and replaced by a link later (by anyone
/// who can write under the export root, or by a client of a parent export) would be
/// exported `rw,no_root_squash` wherever the link points on the next reload, which any
/// change of any other export triggers. So every path of the file about to be applied
/// is opened again from the export root with ``RootedPath`` (no symbolic link below the
/// root, a real directory at the end) on every apply.
///
/// The check narrows, it cannot close, the window: the server resolves the path by name
/// after the check. What it guarantees is that the agent never hands the server a path
/// that leads through a link at the time of the change.
enum ExportPathCheck {
    /// A path that failed, and why (a sentence fragment: "is a symbolic link to ...").
    struct Failure: Sendable, Equatable {
        var path: String
        var reason: String
    }

    /// Each path that is not a real directory reached from `root` without following a
    /// symbolic link. Blocking.
    static func failures(_ paths: [String], root: String) -> [Failure] {
        var failures: [Failure] = []
        for path in paths {
            do {
                let fd = try RootedPath.openDirectory(path, under: root)
                close(fd)
            } catch .symbolicLink(let link) {
                let target = PosixFiles.readLink(link).map { " (to \($0))" } ?? ""
                failures.append(Failure(path: path, reason: link == path
                    ? "is a symbolic link\(target), no longer the directory that was exported"
                    : "passes through the symbolic link \(link)\(target)"))
            } catch .outsideRoot {
                failures.append(Failure(path: path, reason: "is not under the export root \(root) (exported under an older configuration?)"))
            } catch .system(_, _, let code) where code == ENOENT {
                failures.append(Failure(path: path, reason: "does not exist any more"))
            } catch .system(_, _, let code) where code == ENOTDIR {
                failures.append(Failure(path: path, reason: "is not a directory"))
            } catch {
                failures.append(Failure(path: path, reason: "cannot be checked: \(error.description)"))
            }
        }
        return failures
    }

    /// What HEALTH says about `failures` (not empty).
    static func summary(_ failures: [Failure], root: String) -> String {
        failures.map { "the managed export \($0.path) \($0.reason)" }.joined(separator: "; ")
            + ": every EXPORT and UNEXPORT of another path is refused until the real directory is back under \(root) or "
            + failures.map { "UNEXPORT path=\($0.path)" }.joined(separator: ", ") + " removes it"
    }

    /// The `invalid-state` answer for `failures` (not empty): each path, why, and what to
    /// do; `path=` in the details for each.
    static func error(_ failures: [Failure], root: String) -> AgentError {
        let each = failures.map { "\($0.path) \($0.reason)" }.joined(separator: "; ")
        let remedies = failures.map { "UNEXPORT path=\($0.path)" }.joined(separator: ", ")
        var details = Fields()
        for failure in failures { details.append("path", failure.path) }
        return AgentError(.invalidState, "refused, nothing was written or reloaded: the managed export \(each). "
            + "An NFS server resolves export paths when it reloads and would export whatever the path leads to now, so "
            + "the agent applies no exports file holding it. Put the real directory back under \(root), or stop exporting it: \(remedies)",
            details: details)
    }
}
