// storagectl-copy-bench: drives the image copy engine from the lab's suite and benchmark.
// Not installed; not a user tool. Usage:
//   storagectl-copy-bench copy [options] SOURCE RELATIVE-PATH
//   storagectl-copy-bench checksum [options] RELATIVE-PATH
// options: --server ADDR (198.18.0.1) --export PATH (/var/lib/libvirt/shared-images)
//          --in-flight N --chunk-kib N --verify commit|read-back|full --commit-mib N --hash-threads N --progress
// Prints one line `OK key=value ...` or `ERR code=CODE message=...` (exit 1).
import ComputeAgentCore
import Foundation
import ImageCopy

var arguments = Array(CommandLine.arguments.dropFirst())
func usage() -> Never {
    FileHandle.standardError.write(Data("usage: storagectl-copy-bench copy|checksum [--server A] [--export P] [--in-flight N] [--chunk-kib N] [--verify commit|read-back|full --commit-mib N --hash-threads N] [--progress] ARGS...\n".utf8))
    exit(2)
}
guard let command = arguments.first else { usage() }
arguments.removeFirst()
var server = "198.18.0.1", export = "/var/lib/libvirt/shared-images"
var inFlight = 6, chunkKiB = 512, showProgress = false
var verification = ImageCopier.Verification.commit
var commitMiB = 128
var hashThreads = ImageCopier.defaultHashThreads
var positional: [String] = []
while let argument = arguments.first {
    arguments.removeFirst()
    func value() -> String { guard let v = arguments.first else { usage() }; arguments.removeFirst(); return v }
    switch argument {
    case "--server": server = value()
    case "--export": export = value()
    case "--in-flight": inFlight = Int(value()) ?? { usage() }()
    case "--chunk-kib": chunkKiB = Int(value()) ?? { usage() }()
    case "--verify":
        switch value() {
        case "commit": verification = .commit
        case "read-back": verification = .readBack
        case "full": verification = .fullChecksum
        default: usage()
        }
    case "--commit-mib": commitMiB = Int(value()) ?? { usage() }()
    case "--hash-threads": hashThreads = Int(value()) ?? { usage() }()
    case "--progress": showProgress = true
    default: positional.append(argument)
    }
}
if ProcessInfo.processInfo.environment["COPY_BENCH_DEFAULT_MALLOC"] == nil { ImageCopier.tuneMallocForCopies() }
let target = NFSTarget(server: server, exportPath: export)
let copier = ImageCopier(inFlight: inFlight, chunkBytes: chunkKiB * 1024, verification: verification,
                         commitInterval: UInt64(max(0, commitMiB)) << 20, hashThreads: hashThreads)

func fail(_ error: any Error) -> Never {
    if let error = error as? ImageCopyError {
        let agent = error.agentError
        print("ERR code=\(agent.code.rawValue) message=\(agent.message)")
    } else {
        print("ERR code=internal message=\(error)")
    }
    exit(1)
}

let progressCount = ProgressCounter()
final class ProgressCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func bump() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}

switch command {
case "copy":
    guard positional.count == 2 else { usage() }
    let verbose = showProgress
    let (source, relativePath) = (positional[0], positional[1])
    // SIGINT/SIGTERM cancel the copy's task (the engine then removes its temporary file).
    let task = Task {
        try await copier.copy(source: source, to: target, relativePath: relativePath) { progress in
            progressCount.bump()
            if verbose {
                FileHandle.standardError.write(Data("PROGRESS done=\(progress.done) total=\(progress.total) rate=\(UInt64(progress.bytesPerSecond))\n".utf8))
            }
        }
    }
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let signals = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0, queue: .global()) }
    for source in signals {
        source.setEventHandler { task.cancel() }
        source.resume()
    }
    do {
        let result = try await task.value
        let mbps = result.elapsedSeconds > 0 ? Double(result.size) / result.elapsedSeconds / 1e6 : 0
        print("OK size=\(result.size) data=\(result.dataBytes) digest=\(result.digest)"
              + " seconds=\(String(format: "%.3f", result.elapsedSeconds)) verify-seconds=\(String(format: "%.3f", result.verifySeconds)) commit-seconds=\(String(format: "%.3f", result.commitSeconds)) server-restarts=\(result.serverRestarts) already-present=\(result.alreadyPresent)"
              + " logical-mbps=\(String(format: "%.1f", mbps)) progress-reports=\(progressCount.value)")
    } catch {
        fail(error)
    }
case "checksum":
    guard positional.count == 1 else { usage() }
    do {
        let start = Date()
        let result = try await copier.checksum(of: positional[0], on: target)
        print("OK size=\(result.size) digest=\(result.digest) seconds=\(String(format: "%.3f", Date().timeIntervalSince(start)))")
    } catch {
        fail(error)
    }
default:
    usage()
}
