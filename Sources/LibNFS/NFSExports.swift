import CNFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One entry of a server's export list (MOUNT3 EXPORT): the exported directory and the
/// client groups (host names, addresses, netgroups) allowed to mount it.
public struct NFSExport: Sendable, Hashable {
    public var path: String
    public var groups: [String]

    public init(path: String, groups: [String]) {
        self.path = path
        self.groups = groups
    }
}

extension NFSContext {
    /// Asks `server`'s MOUNT service for its export list (what `showmount -e` prints),
    /// in the server's order, with each export's client groups.
    ///
    /// With `mountPort` the MOUNT service is called on that TCP port directly; without it
    /// the portmapper (port 111) is asked where MOUNT is. Blocks up to `timeout`
    /// milliseconds in total (-1: no limit), enforced by this loop: libnfs 4's
    /// `mount_getexports` can wait forever, drops the groups and reports no error text,
    /// and its `rpc_set_timeout` is not public API. Uses a private RPC context, so it needs
    /// no mounted ``NFSContext``. A host name is resolved synchronously (getaddrinfo).
    /// NFSv4-only servers have no MOUNT service and fail here.
    ///
    /// - Throws: ``NFSError`` with libnfs's RPC error message (connection refused,
    ///   timeout, program unavailable, ...).
    public static func exports(server: String, mountPort: Int? = nil, timeout: Int = 10_000) throws -> [NFSExport] {
        // The box outlives the RPC context: rpc_destroy_context may still invoke pending
        // callbacks (with RPC_STATUS_CANCEL), so it is released after the context is gone
        // (defers run in reverse order).
        let request = ExportsRequest()
        let unmanaged = Unmanaged.passRetained(request)
        defer { unmanaged.release() }
        guard let rpc = rpc_init_context() else {
            throw NFSError(code: ENOMEM, message: "rpc_init_context failed")
        }
        defer { rpc_destroy_context(rpc) }

        let queued: Int32
        if let mountPort {
            queued = rpc_connect_port_async(rpc, server, Int32(clamping: mountPort),
                                            cnfs_mount_program(), cnfs_mount_v3(),
                                            exportsConnected, unmanaged.toOpaque())
        } else {
            queued = mount_getexports_async(rpc, server, exportsReceived, unmanaged.toOpaque())
        }
        guard queued == 0 else {
            let message = rpc_get_error(rpc).map { String(cString: $0) } ?? ""
            throw NFSError(code: EIO, message: message.isEmpty ? "cannot query exports of \(server)" : message)
        }

        let deadline = monotonicMilliseconds() + Int64(max(timeout, 0))
        while !request.finished {
            let remaining = deadline - monotonicMilliseconds()
            if timeout >= 0 && remaining <= 0 {
                request.fail(ETIMEDOUT, "timed out after \(timeout) ms asking \(server) for its exports")
                break
            }
            // Poll at most 100 ms at a time: libnfs runs its timeouts inside rpc_service.
            var pfd = pollfd(fd: rpc_get_fd(rpc), events: Int16(truncatingIfNeeded: rpc_which_events(rpc)), revents: 0)
            let ready = poll(&pfd, 1, timeout < 0 ? 100 : Int32(min(max(remaining, 0), 100)))
            if ready < 0 && errno != EINTR {
                request.fail(errno, "poll failed: \(String(cString: strerror(errno)))")
                break
            }
            if rpc_service(rpc, Int32(ready > 0 ? pfd.revents : 0)) < 0 {
                let message = rpc_get_error(rpc).map { String(cString: $0) } ?? ""
                request.fail(EIO, message.isEmpty ? "RPC to \(server) failed" : message)
                break
            }
        }
        return try request.result()
    }
}

/// State shared with the C callbacks of one ``NFSContext/exports(server:mountPort:timeout:)``.
/// Only touched on the calling thread (callbacks run inside rpc_service).
private final class ExportsRequest {
    var finished = false
    var exports: [NFSExport] = []
    var error: NFSError?

    func fail(_ code: Int32, _ message: String) {
        guard !finished else { return }
        finished = true
        error = NFSError(code: code, message: message)
    }

    func result() throws -> [NFSExport] {
        if let error { throw error }
        return exports
    }
}

private func callbackMessage(_ data: UnsafeMutableRawPointer?, status: Int32, fallback: String) -> String {
    // On RPC_STATUS_ERROR libnfs passes the error string as `data`; otherwise NULL.
    if status == 1, let data {
        let text = String(cString: data.assumingMemoryBound(to: CChar.self))
        if !text.isEmpty { return text }
    }
    return fallback
}

private func exportsConnected(
    rpc: OpaquePointer?, status: Int32, data: UnsafeMutableRawPointer?, privateData: UnsafeMutableRawPointer?
) {
    guard let privateData else { return }
    let request = Unmanaged<ExportsRequest>.fromOpaque(privateData).takeUnretainedValue()
    guard status == cnfs_rpc_status_success() else {
        request.fail(ECONNREFUSED, callbackMessage(data, status: status, fallback: "cannot connect to the MOUNT service"))
        return
    }
    if rpc_mount3_export_async(rpc, exportsReceived, privateData) != 0 {
        let message = rpc.flatMap { rpc_get_error($0) }.map { String(cString: $0) } ?? ""
        request.fail(EIO, message.isEmpty ? "cannot send MOUNT3 EXPORT" : message)
    }
}

private func exportsReceived(
    rpc: OpaquePointer?, status: Int32, data: UnsafeMutableRawPointer?, privateData: UnsafeMutableRawPointer?
) {
    guard let privateData else { return }
    let request = Unmanaged<ExportsRequest>.fromOpaque(privateData).takeUnretainedValue()
    guard status == cnfs_rpc_status_success() else {
        request.fail(EIO, callbackMessage(data, status: status, fallback: "MOUNT3 EXPORT failed (status \(status))"))
        return
    }
    guard !request.finished else { return }
    // `data` belongs to libnfs and is valid only during this callback: copy everything.
    var node = cnfs_exports_from_callback_data(data)
    var exports: [NFSExport] = []
    while let current = node {
        let path = current.pointee.ex_dir.map { String(cString: $0) } ?? ""
        var groups: [String] = []
        var group = current.pointee.ex_groups
        while let g = group {
            if let name = g.pointee.gr_name { groups.append(String(cString: name)) }
            group = g.pointee.gr_next
        }
        exports.append(NFSExport(path: path, groups: groups))
        node = current.pointee.ex_next
    }
    request.exports = exports
    request.finished = true
}

private func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}
