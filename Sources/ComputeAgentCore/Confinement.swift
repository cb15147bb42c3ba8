import AgentProtocol
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// The roots every path a request names must lie under (`--share-root`,
/// `--images-root`) and the NFS servers it may name (`--nfs-server`, plus the servers
/// of this host's shares). A path is checked lexically (`RootedPath.components`: at or
/// below the root, no `..`), then its existing part is opened from the root one
/// component at a time without following a symbolic link (`RootedPath.open`), and
/// checked again where libvirt or the kernel resolves it later. A refusal is
/// `invalid-argument` naming the option that would allow the value. Blocking where
/// it opens directories.
struct Confinement: Sendable {
    var shareRoots: [String]
    var imagesRoot: String
    var nfsServers: [String]

    init(_ c: ComputeAgentConfiguration) {
        shareRoots = c.shareRoots
        imagesRoot = c.imagesRoot
        nfsServers = c.nfsServers
    }

    /// The share root `path` is at or below (lexically). Pure.
    func shareRoot(of path: String, key: String) throws(AgentError) -> String {
        // The longest root that holds it: nested roots are allowed.
        guard let root = shareRoots.filter({ RootedPath.isWithin(path, root: $0) }).max(by: { $0.count < $1.count }) else {
            throw AgentError(.invalidArgument, "\(key)=\(path) is not under a share root of this agent (\(shareRoots.joined(separator: ", "))); start compute-agent with --share-root \(path) (or share-root = \(path) in [compute-agent]) to allow it")
        }
        return root
    }

    /// `dir` lexically at or below the images root. Pure.
    func imagesDirectory(_ dir: String, key: String) throws(AgentError) {
        guard RootedPath.isWithin(dir, root: imagesRoot) else {
            throw AgentError(.invalidArgument, "\(key)=\(dir) is not under the images root of this agent (\(imagesRoot)); start compute-agent with --images-root \(dir) (or images-root = \(dir) in [compute-agent]) to allow it")
        }
    }

    /// Opens each existing directory of `path` from `root` down without following a
    /// symbolic link: a link or a non-directory on the way is `invalid-argument`; a
    /// missing component ends the walk (the rest is created later, e.g. by libvirt's
    /// pool build). Returns whether all of `path` exists. Blocking.
    static func requireRealDirectories(_ path: String, under root: String, key: String) throws(AgentError) -> Bool {
        guard let parts = RootedPath.components(of: path, under: root) else {
            throw AgentError(.invalidArgument, "\(key)=\(path) is not under \(root)")
        }
        var rootStatus = stat()
        guard stat(root, &rootStatus) == 0 else { return false }   // the root itself does not exist yet
        var prefix = root
        for part in [Substring("")] + parts {
            if !part.isEmpty { prefix = (prefix.hasSuffix("/") ? prefix : prefix + "/") + part }
            do {
                let fd = try RootedPath.openDirectory(prefix, under: root)
                close(fd)
            } catch .system(_, _, let code) where code == ENOENT {
                return false
            } catch .symbolicLink(let link) {
                throw AgentError(.invalidArgument, "\(key)=\(path): \(link) is a symbolic link; give the real path (links below \(root) are refused)")
            } catch {
                throw AgentError(.invalidArgument, "\(key)=\(path): \(error.description)")
            }
        }
        return true
    }

    /// Whether `server` may be named by a request: listed by `--nfs-server` or in `known`
    /// (the servers of this host's netfs pools and libnfs share records).
    func requireServer(_ server: String, known: Set<String>, key: String = "server") throws(AgentError) {
        guard nfsServers.contains(server) || known.contains(server) else {
            throw AgentError(.invalidArgument, "\(key)=\(server) is not the server of a share of this host; attach the share with POOL-ENSURE first, or start compute-agent with --nfs-server \(server) (or nfs-server = \(server) in [compute-agent]) to allow it")
        }
    }
}
