import AgentProtocol
import AgentRuntime
import ArgumentParser
import ContentDigest
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `storagectl digest FILE...`: the content digest of local files, the value `share`,
/// `unshare` and the agents report for disk images. Reads local files only; asks no agent.
public struct DigestCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "digest",
        abstract: "Print the content digest of local files, as share, unshare and the agents report it.",
        discussion: """
            The content digest of a file is "xxh3-128:" and the XXH3-128 (32 lowercase hex \
            digits) of the concatenated XXH3-128 digests of its consecutive 4 MiB blocks \
            (16 big-endian bytes each; the last block may be shorter; an empty file has the \
            XXH3-128 of nothing). It is Dropbox's "content hash" scheme with 4 MiB blocks and \
            XXH3-128, rsync's whole-file checksum, in place of SHA-256: it detects corruption \
            in transit or on disk, it is not a defence against an adversary (docs/protocol.md). \
            It is not the file's XXH3-128 (xxh128sum prints another value): blocks of zeros \
            always have the same digest, so holes of a sparse image are skipped (SEEK_DATA) \
            and the blocks are hashed in parallel; an image costs time in proportion to its \
            data, not to its virtual size.

            share reports the digest of each copy (computed by the copy engine while it \
            reads, then again by the storage host on its own disk: CHECKSUM), unshare the \
            digest of each local copy. Compare them with a file here, for example on the \
            storage host: storagectl digest /var/lib/libvirt/shared-images/VM/VM.qcow2

            Output: one line per FILE, "DIGEST  FILE" (xxh3-128: and 32 lowercase hex digits, \
            two spaces, the name as given), like sha256sum. With --json, one document: {"files": [{"path", \
            "size", "digest"}]}, a file that cannot be read as {"path", "code", "message"}. \
            Symbolic links are followed; only regular files are digested.

            The same value with python3 and Debian's python3-xxhash (paste the three lines \
            as they are):
              python3 -c 'import xxhash,sys;X=xxhash.xxh3_128;f=open(sys.argv[1],"rb");\\
              d=b"".join(X(b).digest()for b in iter(lambda:f.read(4<<20),b""));\\
              print("xxh3-128:"+X(d).hexdigest())' FILE

            EXIT STATUS
              0   every FILE was digested
              1   a read error
              64  a FILE is not a regular file
              65  a FILE changed size while it was read
              66  a FILE does not exist
              77  a FILE may not be read
            With several failures, the status of the first one. The other files are still \
            digested.
            """)

    @Argument(help: ArgumentHelp("Local files to digest.", valueName: "file"))
    public var files: [String]

    @Flag(name: .customLong("json"), help: "Print one JSON document instead of lines.")
    public var json = false

    public init() {}

    public func run() async throws {
        var outcomes: [DigestOutcome] = []
        for path in files {
            // Blocking reads on threads of their own, never on the cooperative pool.
            let result = await Self.onThread { () -> Result<DigestedFile, AgentError> in
                do throws(AgentError) { return .success(try Self.digest(of: path)) } catch { return .failure(error) }
            }
            if !json {
                switch result {
                case .success(let d): print(DigestFormatting.line(d))
                case .failure(let e): printError(DigestFormatting.errorLine(e))
                }
                fflush(nil)  // each line as it is known, also into a pipe
            }
            outcomes.append(DigestOutcome(path: path, result: result))
        }
        if json { print(try DigestFormatting.json(outcomes)) }
        let status = DigestFormatting.exitStatus(outcomes)
        if status != ExitStatus.success { throw ExitCode(status) }
    }

    /// The content digest of the local file `path` (symbolic links followed). Blocking:
    /// reads with `threads` threads, holes skipped.
    /// - Throws: `not-found`, `permission-denied`, `invalid-argument` (not a regular
    ///   file), `invalid-state` (it changed size while read), `internal` (a read error).
    public static func digest(of path: String, threads: Int = ContentDigest.defaultThreads) throws(AgentError) -> DigestedFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            let text = String(cString: strerror(e))
            switch e {
            case ENOENT, ENOTDIR: throw AgentError(.notFound, "\(path): \(text)")
            case EACCES, EPERM: throw AgentError(.permissionDenied, "\(path): \(text) (run as root?)")
            default: throw AgentError(.internal, "cannot open \(path): \(text)")
            }
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw AgentError(.internal, "cannot stat \(path): \(String(cString: strerror(errno)))") }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw AgentError(.invalidArgument, "\(path) is a directory; name the image files in it")
        default: throw AgentError(.invalidArgument, "\(path) is not a regular file; storagectl digests image files only")
        }
        let size = UInt64(st.st_size)
        do throws(FileDigestError) {
            return DigestedFile(path: path, size: size, digest: try ContentDigest.ofFile(fd: fd, size: size, threads: threads))
        } catch {
            var now = stat()
            if fstat(fd, &now) == 0, UInt64(now.st_size) != size {
                throw AgentError(.invalidState, "\(path) changed size while it was read (\(size) bytes, now \(now.st_size)); digest it again once nothing writes it")
            }
            throw AgentError(.internal, "reading \(path) at byte \(error.offset): \(error.message)")
        }
    }

    /// Runs `body` on a thread of its own and returns its result.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }
}

/// One digested file.
public struct DigestedFile: Sendable, Codable, Equatable {
    public var path: String
    public var size: UInt64
    /// The content digest, `xxh3-128:` and 32 lowercase hex digits.
    public var digest: String
}

/// What `storagectl digest` found for one of its arguments.
public struct DigestOutcome: Sendable, Equatable {
    public var path: String
    public var result: Result<DigestedFile, AgentError>
}

/// Pure renderings of `storagectl digest`'s output.
public enum DigestFormatting {
    /// `DIGEST  PATH`, as sha256sum prints its lines.
    public static func line(_ d: DigestedFile) -> String { "\(d.digest)  \(d.path)" }

    /// A digest shortened for a summary line: its algorithm (`xxh3-128:`) and its first
    /// `hexDigits` hex digits, then `…`.
    public static func short(_ digest: String, hexDigits: Int = 16) -> String {
        let value = digest.firstIndex(of: ":").map { digest.index(after: $0) } ?? digest.startIndex
        return String(digest[..<value]) + String(digest[value...].prefix(hexDigits)) + "…"
    }

    public static func errorLine(_ e: AgentError) -> String { "storagectl: error: \(e.message) [\(e.code.rawValue)]" }

    /// `{"files": [...]}`: `path`, `size`, `digest` per file; `path`, `code`, `message`
    /// for a file that could not be digested.
    public static func json(_ outcomes: [DigestOutcome]) throws -> String {
        struct Entry: Encodable { var path: String; var size: UInt64?; var digest: String?; var code: String?; var message: String? }
        struct Doc: Encodable { var files: [Entry] }
        let entries = outcomes.map { o -> Entry in
            switch o.result {
            case .success(let d): return Entry(path: d.path, size: d.size, digest: d.digest)
            case .failure(let e): return Entry(path: o.path, code: e.code.rawValue, message: e.message)
            }
        }
        return String(decoding: try ShareFormatting.encoder().encode(Doc(files: entries)), as: UTF8.self)
    }

    /// 0 when every file was digested, else the status of the first failure.
    public static func exitStatus(_ outcomes: [DigestOutcome]) -> Int32 {
        for o in outcomes { if case .failure(let e) = o.result { return ExitStatus.code(for: e.code) } }
        return ExitStatus.success
    }
}
