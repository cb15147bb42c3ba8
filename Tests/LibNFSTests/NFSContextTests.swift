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

    @Test("selects NFS versions 3 and 4")
    func versions() throws {
        let context = try NFSContext()
        try context.setVersion(3)
        try context.setVersion(4)
        context.setUID(0)
        context.setGID(0)
    }
}
