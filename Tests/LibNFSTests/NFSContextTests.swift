import BlockingIO
import Foundation
import LibNFS
import Testing

/// A TCP port on 127.0.0.1 that is bound but not listening: connections to it are
/// refused at once. Only loopback traffic, never any other address.
private final class RefusingPort {
    let fd: Int32
    let port: Int

    init(listening: Bool = false) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw POSIXError(.EADDRNOTAVAIL)
        }
        if listening { _ = listen(fd, 4) }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }
}

@Suite("libnfs client (no server)")
struct NFSContextTests {
    @Test("a URL libnfs cannot parse throws NFSError with libnfs's message")
    func invalidURL() throws {
        let context = try NFSContext()
        #expect {
            try context.mount(url: "http://127.0.0.1/export")
        } throws: { error in
            guard let error = error as? NFSError else { return false }
            return error.code > 0 && !error.message.isEmpty
        }
    }

    @Test("mounting from a loopback port where nothing listens throws NFSError")
    func connectionRefused() async throws {
        let port = try RefusingPort()
        let executor = BlockingExecutor(name: "nfs-test", threadCount: 1)
        defer { executor.shutdown() }
        let url = "nfs://127.0.0.1/srv/shared-images?nfsport=\(port.port)&mountport=\(port.port)"
        let outcome = try await executor.run { () -> NFSError? in
            let context = try NFSContext()
            context.setAutoreconnect(0)
            context.setTimeout(milliseconds: 2_000)
            do {
                try context.mount(url: url)
                return nil
            } catch let error as NFSError {
                return error
            }
        }
        let error = try #require(outcome)
        #expect(error.code > 0)
        #expect(!error.message.isEmpty)
    }

    @Test("asking a refusing loopback port for its exports throws NFSError with a message")
    func exportsRefused() throws {
        let port = try RefusingPort()
        #expect {
            _ = try NFSContext.exports(server: "127.0.0.1", mountPort: port.port, timeout: 2_000)
        } throws: { error in
            guard let error = error as? NFSError else { return false }
            return !error.message.isEmpty
        }
    }

    @Test("asking a silent loopback server for its exports times out on time")
    func exportsTimeout() throws {
        let port = try RefusingPort(listening: true)  // accepts, never answers
        let start = ContinuousClock.now
        #expect {
            _ = try NFSContext.exports(server: "127.0.0.1", mountPort: port.port, timeout: 300)
        } throws: { error in
            (error as? NFSError)?.code == ETIMEDOUT
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < .seconds(3))
    }

    @Test("accepts NFS versions 3 and 4 only; another throws libnfs's message")
    func versions() throws {
        let context = try NFSContext()
        try context.setVersion(3)
        try context.setVersion(4)
        for bad in [2, 5] {
            #expect {
                try context.setVersion(bad)
            } throws: { error in
                (error as? NFSError)?.message == "NFS version \(bad) is not supported"
            }
        }
    }

    @Test("mounting sends the selected version's first call with the uid and gid set (AUTH_SYS)",
          arguments: [3, 4])
    func versionAndCredentialsOnTheWire(version: Int) async throws {
        let port = try RefusingPort(listening: true)  // accepts; the capture answers nothing
        let fd = port.fd
        async let captured = firstRequest(listeningOn: fd)
        let executor = BlockingExecutor(name: "nfs-wire", threadCount: 1)
        defer { executor.shutdown() }
        let url = "nfs://127.0.0.1/srv/shared-images?nfsport=\(port.port)&mountport=\(port.port)"
        let mounted = try await executor.run { () -> Bool in
            let context = try NFSContext()
            try context.setVersion(version)
            context.setUID(4321)
            context.setGID(8765)
            context.setAutoreconnect(0)
            context.setTimeout(milliseconds: 2_000)
            do { try context.mount(url: url); return true } catch { return false }
        }
        let call = try #require(RPCCall(record: await captured))
        withExtendedLifetime(port) {}
        #expect(!mounted)  // the capture closed the connection without an answer
        // NFSv3 starts with MOUNT (100005) v3 MNT; NFSv4 talks to NFS (100003) v4 at once
        #expect(call.program == (version == 3 ? 100_005 : 100_003))
        #expect(call.version == UInt32(version))
        #expect(call.flavor == 1)  // AUTH_SYS
        #expect(call.uid == 4321)
        #expect(call.gid == 8765)
    }
}

/// Accepts one connection on the listening socket `fd`, reads the first RPC record the
/// client sends (waiting at most 5 s), closes the connection and returns the bytes.
private func firstRequest(listeningOn fd: Int32) async -> [UInt8] {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            var bytes: [UInt8] = []
            var listener = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&listener, 1, 5_000) == 1 {
                let client = accept(fd, nil, nil)
                if client >= 0 {
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    var peer = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
                    // the record marker's low 31 bits are the fragment's length
                    func complete() -> Bool {
                        guard bytes.count >= 4 else { return false }
                        let length = bytes[0..<4].reduce(0) { $0 << 8 | Int($1) } & 0x7fff_ffff
                        return bytes.count >= 4 + length
                    }
                    while !complete(), poll(&peer, 1, 5_000) == 1 {
                        let n = read(client, &buffer, buffer.count)
                        guard n > 0 else { break }
                        bytes += buffer[0..<n]
                    }
                    close(client)
                }
            }
            continuation.resume(returning: bytes)
        }
    }
}

/// The header of an ONC RPC call (RFC 5531) with AUTH_SYS credentials (flavor 1), from
/// one record as sent over TCP (record marker first).
private struct RPCCall {
    var program: UInt32
    var version: UInt32
    var flavor: UInt32
    var uid: UInt32
    var gid: UInt32

    init?(record b: [UInt8]) {
        func word(_ at: Int) -> UInt32? {
            guard at >= 0, at + 4 <= b.count else { return nil }
            return b[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) }
        }
        // marker 0, xid 4, type 8 (0 = call), rpcvers 12, prog 16, vers 20, proc 24,
        // cred flavor 28, cred length 32, stamp 36, machine name 40 (length + padded bytes)
        guard word(8) == 0, word(12) == 2, let program = word(16), let version = word(20),
              let flavor = word(28), let nameLength = word(40) else { return nil }
        let uidAt = 44 + (Int(nameLength) + 3) / 4 * 4
        guard let uid = word(uidAt), let gid = word(uidAt + 4) else { return nil }
        self.program = program
        self.version = version
        self.flavor = flavor
        self.uid = uid
        self.gid = gid
    }
}
