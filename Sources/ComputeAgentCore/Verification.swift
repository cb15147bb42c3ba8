import AgentProtocol
import Foundation
import ImageCopy
import LibNFS
import SafeFiles
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

    /// Mount mode: the file at `path` through this host's mount of the share, opened
    /// from the pool's target `root` without following a symbolic link (`RootedPath`);
    /// the nonce file beside it likewise.
    static func local(path: String, root: String, nonce: Nonce) throws(AgentError) -> Outcome {
        let fd = try openRooted(path, root: root, directory: false)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw AgentError(.unavailable, "cannot stat \(path): \(String(cString: strerror(errno)))") }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        let header = HeaderFacts.parse(Array(buffer.prefix(max(0, n))), fileSize: UInt64(max(0, st.st_size)))
        let dirPath = (path as NSString).deletingLastPathComponent
        var fields = NonceOutcome()
        switch nonce {
        case .none: break
        case .write(let name):
            let dir = try openRooted(dirPath, root: root, directory: true)
            defer { close(dir) }
            let file = dirPath + "/.storagectl-nonce-" + name
            let value = randomValue()
            let wfd = openat(dir, ".storagectl-nonce-" + name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
            guard wfd >= 0 else { throw AgentError(.unavailable, "cannot write \(file): \(String(cString: strerror(errno)))") }
            let bytes = Array((value + "\n").utf8)
            let w = bytes.withUnsafeBytes { write(wfd, $0.baseAddress, $0.count) }
            let synced = fsync(wfd) == 0
            close(wfd)
            guard w == bytes.count, synced else { throw AgentError(.unavailable, "cannot write \(file)") }
            fields = NonceOutcome(name: name, value: value)
        case .read(let name, let value):
            let dir = try openRooted(dirPath, root: root, directory: true)
            defer { close(dir) }
            let file = dirPath + "/.storagectl-nonce-" + name
            let rfd = openat(dir, ".storagectl-nonce-" + name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            guard rfd >= 0 else {
                throw AgentError(.notFound, "this host does not see the nonce file \(file) the other host wrote: it does not see the same storage")
            }
            var text = [UInt8](repeating: 0, count: 4096)
            let got = text.withUnsafeMutableBytes { read(rfd, $0.baseAddress, $0.count) }
            close(rfd)
            fields = try compare(String(decoding: text.prefix(max(0, got)), as: UTF8.self), value, name: name, file: file)
            unlinkat(dir, ".storagectl-nonce-" + name, 0)
        }
        let (allocated, overflow) = UInt64(max(0, st.st_blocks)).multipliedReportingOverflow(by: 512)
        return Outcome(size: UInt64(max(0, st.st_size)), allocated: overflow ? nil : allocated, header: header, nonce: fields)
    }

    /// `path` (a regular file, or a directory) below `root`, through `RootedPath`.
    private static func openRooted(_ path: String, root: String, directory: Bool) throws(AgentError) -> Int32 {
        do {
            return directory ? try RootedPath.openDirectory(path, under: root)
                             : try RootedPath.open(path, under: root, flags: O_RDONLY | O_NONBLOCK, regularFile: true)
        } catch .system(_, _, let code) where code == ENOENT {
            throw AgentError(.notFound, "this host does not see \(path): \(String(cString: strerror(code)))")
        } catch .notRegularFile {
            throw AgentError(.invalidState, "\(path) is not a regular file")
        } catch .symbolicLink(let link) {
            throw AgentError(.invalidArgument, "\(link) is a symbolic link; VERIFY does not follow links on the share")
        } catch .outsideRoot {
            throw AgentError(.invalidArgument, "\(path) is not under the pool's target \(root)")
        } catch {
            throw AgentError(.unavailable, "this host does not see \(path): \(error.description)")
        }
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
