import AgentProtocol
import Foundation
import ImageCopy
import LibNFS
#if canImport(Glibc)
import Glibc
#endif

/// The facts of an image header VERIFY reports: qcow2 (magic `QFI\xfb`) with its
/// version and virtual size, or raw.
struct HeaderFacts: Sendable, Equatable {
    var format: String
    var version: UInt32?
    var virtualSize: UInt64?

    /// From the first bytes of the file, with the copy engine's header parser.
    static func parse(_ bytes: [UInt8], fileSize: UInt64) -> HeaderFacts {
        guard let header = try? QCOW2Header.parse(bytes) else {
            let magic = bytes.count >= 4 && bytes[0..<4].elementsEqual([0x51, 0x46, 0x49, 0xFB])
            return magic ? HeaderFacts(format: "qcow2", version: nil, virtualSize: nil)   // malformed qcow2
                         : HeaderFacts(format: "raw", version: nil, virtualSize: fileSize)
        }
        return HeaderFacts(format: "qcow2", version: header.version, virtualSize: header.virtualSize)
    }
}

/// VERIFY: this host sees the shared copy (size + header) and takes part in the
/// shared-storage test with nonce files (`.storagectl-nonce-NAME` beside the image).
/// Blocking: run through `ComputeWork`.
enum Verification {
    enum Nonce: Sendable, Equatable {
        case none
        case write(name: String)
        case read(name: String, value: String)
    }

    struct Outcome: Sendable {
        var size: UInt64
        var allocated: UInt64?
        var header: HeaderFacts
        var nonce: NonceOutcome = NonceOutcome()
    }

    /// What the shared-storage test did: the nonce written (with its value) or read and matched.
    struct NonceOutcome: Sendable, Equatable {
        var name: String?
        var value: String?
        var matched: Bool?
    }

    static func nonceFile(_ relativeDir: String, _ name: String) -> String {
        (relativeDir.isEmpty ? "" : relativeDir + "/") + ".storagectl-nonce-" + name
    }

    static func randomValue() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%08x", UInt32.random(in: .min ... .max, using: &g)) }.joined()
    }

    /// Mount mode: the file at `path` through this host's mount of the share.
    static func local(path: String, nonce: Nonce) throws(AgentError) -> Outcome {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errno
            throw AgentError(e == ENOENT ? .notFound : .unavailable, "this host does not see \(path): \(String(cString: strerror(e)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else { throw AgentError(.invalidState, "\(path) is not a regular file") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AgentError(.unavailable, "cannot open \(path): \(String(cString: strerror(errno)))") }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        close(fd)
        let header = HeaderFacts.parse(Array(buffer.prefix(max(0, n))), fileSize: UInt64(st.st_size))
        let dir = (path as NSString).deletingLastPathComponent
        var fields = NonceOutcome()
        switch nonce {
        case .none: break
        case .write(let name):
            let file = dir + "/.storagectl-nonce-" + name
            let value = randomValue()
            let wfd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard wfd >= 0 else { throw AgentError(.unavailable, "cannot write \(file): \(String(cString: strerror(errno)))") }
            let bytes = Array((value + "\n").utf8)
            let w = bytes.withUnsafeBytes { write(wfd, $0.baseAddress, $0.count) }
            let synced = fsync(wfd) == 0
            close(wfd)
            guard w == bytes.count, synced else { throw AgentError(.unavailable, "cannot write \(file)") }
            fields = NonceOutcome(name: name, value: value)
        case .read(let name, let value):
            let file = dir + "/.storagectl-nonce-" + name
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw AgentError(.notFound, "this host does not see the nonce file \(file) the other host wrote: it does not see the same storage")
            }
            fields = try compare(text, value, name: name, file: file)
            unlink(file)
        }
        return Outcome(size: UInt64(st.st_size), allocated: UInt64(st.st_blocks) * 512, header: header, nonce: fields)
    }

    /// libnfs mode: `relative` under the share's export, read through libnfs.
    static func remote(share: Share, relative: String, nonce: Nonce) throws(AgentError) -> Outcome {
        try SharedFiles.withNFS(share) { nfs throws(AgentError) -> Outcome in
            let where_ = "\(share.server):\(share.export)/\(relative)"
            do {
                let st = try nfs.stat("/" + relative)
                guard st.isRegularFile else { throw AgentError(.invalidState, "\(where_) is not a regular file") }
                let file = try nfs.open("/" + relative)
                let head = try file.pread(count: Int(min(st.size, 65536)), offset: 0)
                let header = HeaderFacts.parse(head, fileSize: st.size)
                let dir = (relative as NSString).deletingLastPathComponent
                var fields = NonceOutcome()
                switch nonce {
                case .none: break
                case .write(let name):
                    let path = "/" + nonceFile(dir, name)
                    let value = randomValue()
                    let out = try nfs.creat(path, mode: 0o600)
                    let bytes = Array((value + "\n").utf8)
                    try bytes.withUnsafeBytes { try out.pwriteAll($0, offset: 0) }
                    try out.close()
                    fields = NonceOutcome(name: name, value: value)
                case .read(let name, let value):
                    let path = "/" + nonceFile(dir, name)
                    let text: String
                    do {
                        let st = try nfs.stat(path)
                        let f = try nfs.open(path)
                        text = String(decoding: try f.pread(count: Int(min(st.size, 4096)), offset: 0), as: UTF8.self)
                    } catch let e as NFSError where e.code == ENOENT {
                        throw AgentError(.notFound, "this host does not see the nonce file \(share.server):\(share.export)\(path) the other host wrote: it does not see the same storage")
                    }
                    fields = try compare(text, value, name: name, file: path)
                    try? nfs.unlink(path)
                }
                return Outcome(size: st.size, allocated: st.used, header: header, nonce: fields)
            } catch let e as AgentError {
                throw e
            } catch let e as NFSError where e.code == ENOENT {
                throw AgentError(.notFound, "this host does not see \(where_) through libnfs: \(e.message)")
            } catch {
                throw AgentError(.unavailable, "reading \(where_) through libnfs failed: \(error)")
            }
        }
    }

    static func compare(_ text: String, _ value: String, name: String, file: String) throws(AgentError) -> NonceOutcome {
        let seen = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard seen == value else {
            throw AgentError(.invalidState, "the nonce file \(file) holds another value than the writer reported: this host does not see the same storage (or another test overwrote it)")
        }
        return NonceOutcome(name: name, matched: true)
    }
}
