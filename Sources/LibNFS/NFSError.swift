import CNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An error from libnfs: the errno of the failing call (libnfs returns `-errno`) and the
/// context's detailed message (`nfs_get_error`), copied right after the call.
public struct NFSError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A positive errno value (e.g. `ECONNREFUSED`, `ENOENT`, `EACCES`); `EINVAL` for
    /// failures libnfs reports without one (e.g. a URL it cannot parse).
    public var code: Int32
    /// libnfs's message, e.g. "NFS: Lookup of /x failed with NFS3ERR_NOENT(-2)".
    public var message: String

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The ONE place a libnfs failure becomes a Swift error. `result` is the negative
    /// return value of the failing call (or any value <= 0 when it returned NULL).
    /// Must be called before the next call on `context` (which overwrites the message).
    static func last(_ context: OpaquePointer?, result: Int32, _ what: @autoclosure () -> String) -> NFSError {
        let errno = result < 0 ? -result : EINVAL
        // nfs_get_error returns the context's own buffer: copied, never freed.
        var message = context.flatMap { nfs_get_error($0) }.map { String(cString: $0) } ?? ""
        if message.isEmpty {
            message = "\(what()) failed: \(String(cString: strerror(errno)))"
        }
        return NFSError(code: errno, message: message)
    }
}
