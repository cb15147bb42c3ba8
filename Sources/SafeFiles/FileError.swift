#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A failed file operation of this module: the system call's errno, or a refusal of
/// the module's own (a symbolic link, a path outside its root, not a regular file).
/// Callers map it to their own error vocabulary; `description` is a sentence naming
/// the path.
public enum FileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A system call failed: what was being done, on which path, and errno.
    case system(operation: String, path: String, errno: Int32)
    /// A component of the path (at or below the root) is a symbolic link.
    case symbolicLink(path: String)
    /// The path is not lexically at or below the root (or holds a `..` component).
    case outsideRoot(path: String, root: String)
    /// The path exists and is not a regular file (a directory, device, FIFO, socket).
    case notRegularFile(path: String)

    /// errno of a failed system call; `ELOOP`, `EXDEV`, `EINVAL` for the refusals.
    public var errno: Int32 {
        switch self {
        case .system(_, _, let code): return code
        case .symbolicLink: return ELOOP
        case .outsideRoot: return EXDEV
        case .notRegularFile: return EINVAL
        }
    }

    public var description: String {
        switch self {
        case .system(let operation, let path, let code):
            return "cannot \(operation) \(path): \(String(cString: strerror(code)))"
        case .symbolicLink(let path):
            return "\(path) is or passes through a symbolic link, which is refused"
        case .outsideRoot(let path, let root):
            return "\(path) is not under \(root)"
        case .notRegularFile(let path):
            return "\(path) is not a regular file"
        }
    }
}

/// errno of the calling thread, read at once (before anything can change it).
@inline(__always)
func lastErrno() -> Int32 { Glibc.errno }

/// Linux `O_PATH` (<asm-generic/fcntl.h>); Glibc's Swift module does not export it.
public let openPathOnly: Int32 = 0o10000000
