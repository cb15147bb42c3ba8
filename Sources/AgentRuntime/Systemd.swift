import CSystemd
#if canImport(Glibc)
import Glibc
#endif

/// A listening socket passed by systemd (or `systemd-socket-activate`).
public struct ActivatedSocket: Sendable, Equatable {
    public var fd: Int32
    /// `FileDescriptorName=` of the socket unit, `LISTEN_FDNAMES` entry; "unknown" if unnamed.
    public var name: String
    /// True for AF_UNIX stream sockets (peers are then checked with SO_PEERCRED).
    public var isUnix: Bool
}

/// The libsystemd calls an agent makes: sd_listen_fds(3) and sd_notify(3).
///
/// Both are safe without systemd: with no `LISTEN_FDS` there are no sockets, and with no
/// `NOTIFY_SOCKET` a notification is a no-op.
public enum Systemd {
    public enum ActivationError: Error, CustomStringConvertible {
        case failed(errno: Int32)
        case notAStreamSocket(fd: Int32, name: String)

        public var description: String {
            switch self {
            case .failed(let e): return "sd_listen_fds failed: \(String(cString: strerror(e)))"
            case .notAStreamSocket(let fd, let name):
                return "passed fd \(fd) (\(name)) is not a listening stream socket; check ListenStream= in the .socket unit"
            }
        }
    }

    /// Takes the sockets systemd passed, honouring `LISTEN_FDNAMES`, and unsets the
    /// `LISTEN_*` variables so children do not inherit them.
    public static func takeListenSockets() throws -> [ActivatedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let n = sd_listen_fds_with_names(1, &names)
        guard n >= 0 else { throw ActivationError.failed(errno: -n) }
        defer {
            if let names {
                var i = 0
                while let p = names[i] { free(p); i += 1 }
                free(names)
            }
        }
        var sockets: [ActivatedSocket] = []
        for i in 0..<Int(n) {
            let fd = SD_LISTEN_FDS_START + Int32(i)
            let name = names?[i].map { String(cString: $0) } ?? "unknown"
            guard sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1) > 0 else {
                throw ActivationError.notAStreamSocket(fd: fd, name: name)
            }
            let isUnix = sd_is_socket(fd, AF_UNIX, Int32(SOCK_STREAM.rawValue), 1) > 0
            sockets.append(ActivatedSocket(fd: fd, name: name, isUnix: isUnix))
        }
        return sockets
    }

    /// Sends `state` (for example `READY=1\nSTATUS=serving`) to the service manager.
    /// Returns false when nobody listens (`NOTIFY_SOCKET` unset) or sending failed.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }
}
