import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A storage agent (the built binary) with the kernel backend, run as the real thing:
/// `exportfs -ra` on `/etc/exports`, `etab` in `/var/lib/nfs`. It runs inside a private
/// mount namespace (`unshare -m --propagation private`) where `/etc` is an overlay whose
/// upper layer is a temporary directory and `/var/lib/nfs` is a temporary directory, so
/// the real host's files are never touched. No kernel nfsd is needed: exportfs writes
/// etab and the agent verifies from it.
///
/// Seen from the test: `/etc/exports` is `<generation dir>/upper/exports`, etab is
/// `<dir>/nfs/etab`. Each start uses a fresh overlay generation (a killed agent's
/// orphaned exportfs may keep the old overlay mounted a moment), carrying the exports
/// file over.
final class NamespacedStorageAgent {
    static let foreign = "# admin's own entries: storagectl must never change these bytes\n/srv/admin 198.18.0.9(ro,sync,no_subtree_check) \\\n    198.18.0.8(rw,sync,no_subtree_check)\n"
    static let script = """
        set -eu
        mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
        mount --bind "$2" /var/lib/nfs
        shift 2
        exec "$@"
        """

    let dir: String
    var generation = 0
    var child: ChildProcess?
    var socket: String { dir + "/s.sock" }
    var root: String { dir + "/root" }
    var etab: String { dir + "/nfs/etab" }
    var upper: String { dir + "/g\(generation)/upper" }
    var exportsFile: String { upper + "/exports" }

    static func available() -> String? {
        if getuid() != 0 { return "needs root (unshare -m, mount)" }
        for tool in ["/usr/sbin/exportfs", "/usr/bin/unshare"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing (apt-get install nfs-kernel-server util-linux)"
        }
        return nil
    }

    init() async throws {
        dir = try TestSupport.temporaryDirectory("sk")
        for sub in ["nfs", "root", "g0/upper", "g0/work"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        try Data(Self.script.utf8).write(to: URL(fileURLWithPath: dir + "/run.sh"))
        try Data(Self.foreign.utf8).write(to: URL(fileURLWithPath: exportsFile))
        try await start()
    }

    func start() async throws {
        let binary = try TestSupport.binary("storage-agent")
        let gen = dir + "/g\(generation)"
        child = try ChildProcess("/usr/bin/unshare", [
            "-m", "--propagation", "private", "/bin/sh", dir + "/run.sh", gen, dir + "/nfs",
            binary, "--listen", "unix:\(socket)", "--export-root", root,
            "--allow-client", "198.18.0.2", "--allow-client", "198.18.0.3", "--log-level", "warning",
        ], logDir: dir)
        let path = socket
        let ok = try await TestSupport.waitUntil(timeout: .seconds(10)) {
            guard let c = try? RawSocket(unixPath: path, timeout: 2) else { return false }
            await c.send("HELLO version=1\n")
            return await c.readLine()?.hasPrefix("OK") == true
        }
        guard ok else { throw TestFailure("storage-agent did not serve: \(child?.log ?? "")") }
    }

    /// kill -9, then a fresh start on a new overlay generation with the same exports file.
    func killAndRestart() async throws {
        child?.signal(SIGKILL)
        _ = try await child?.wait(timeout: .seconds(5))
        let old = upper
        generation += 1
        for sub in ["upper", "work"] {
            try FileManager.default.createDirectory(atPath: dir + "/g\(generation)/" + sub, withIntermediateDirectories: true)
        }
        for name in ["exports", "exports.storagectl.prev"] where FileManager.default.fileExists(atPath: old + "/" + name) {
            try FileManager.default.copyItem(atPath: old + "/" + name, toPath: upper + "/" + name)
        }
        try await start()
    }

    func client() async throws -> RawSocket {
        let c = try RawSocket(unixPath: socket, timeout: 20)
        await c.send("HELLO version=1\n")
        guard await c.readLine()?.hasPrefix("OK version=1") == true else { throw TestFailure("HELLO failed") }
        return c
    }

    /// Sends one request on a fresh connection and returns its terminal line.
    func ask(_ line: String) async throws -> String {
        let c = try await client()
        await c.send(line + "\n")
        return await c.readResponse().last ?? "<closed>"
    }

    func stop() async throws {
        child?.signal(SIGTERM)
        let status = try await child?.wait(timeout: .seconds(10))
        #expect(status == 0, "exit status after SIGTERM; log: \(child?.log ?? "")")
        TestSupport.removeTree(dir)
    }

    /// etab lines for `path` (tab-separated path, client(options)).
    func etabLines(_ path: String) -> [String] {
        let text = (try? String(contentsOfFile: etab, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { $0.hasPrefix(path + "\t") }
    }
}

/// Checks that `text` is a whole exports file as the agent writes it: the foreign bytes
/// unchanged, then nothing or exactly one well-formed managed block. Returns a reason
/// when it is not.
func storageAgentFileProblem(_ text: String, root: String) -> String? {
    guard text.hasPrefix(NamespacedStorageAgent.foreign) else { return "foreign bytes changed or file torn/empty" }
    let rest = text.dropFirst(NamespacedStorageAgent.foreign.count)
    if rest.isEmpty { return nil }
    var lines = rest.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard lines.last == "" else { return "no final newline: torn" }
    lines.removeLast()
    guard lines.first?.hasPrefix("# BEGIN storagectl managed block") == true, lines.last == "# END storagectl managed block" else {
        return "managed block markers wrong: \(rest.debugDescription)"
    }
    for line in lines.dropFirst().dropLast() {
        let fields = line.split(separator: " ")
        guard fields.count >= 2, fields[0].hasPrefix(root + "/"),
              fields.dropFirst().allSatisfy({ $0.hasPrefix("198.18.0.") && $0.contains("(rw,sync,no_subtree_check,no_root_squash,fsid=") && $0.hasSuffix(")") })
        else { return "bad managed line \(line.debugDescription)" }
    }
    return nil
}

@Suite("storage agent, kernel backend (real exportfs in a private mount namespace)", .serialized)
struct StorageAgentKernelTests {
    @Test("EXPORT and UNEXPORT go live in etab with our options, and away again")
    func exportUnexport() async throws {
        if let missing = NamespacedStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        let agent = try await NamespacedStorageAgent()
        let path = agent.root + "/wanderer"

        let clock = ContinuousClock()
        var answer = ""
        let firstTime = try await clock.measure { answer = try await agent.ask("EXPORT path=\(path) client=198.18.0.2") }
        #expect(answer.hasPrefix("OK path=\(path) clients=198.18.0.2 changed=yes fsid="), "\(answer)")
        #expect(answer.hasSuffix(" backend=kernel"))
        let fsid = answer.split(separator: " ").first { $0.hasPrefix("fsid=") }.map { String($0.dropFirst(5)) } ?? "?"
        var live = agent.etabLines(path)
        #expect(live.count == 1, "etab: \(live)")
        let options = live.first ?? ""
        #expect(options.hasPrefix(path + "\t198.18.0.2("))
        for option in ["rw", "sync", "no_root_squash", "no_subtree_check", "fsid=\(fsid)"] {
            #expect(options.contains("(\(option),") || options.contains(",\(option),") || options.contains(",\(option))"), "\(option) in \(options)")
        }
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o7777 == 0o755 && info.st_uid == 0, "directory created 0755 root")

        let again = try await agent.ask("EXPORT path=\(path) client=198.18.0.2")
        #expect(again.contains(" changed=no "), "\(again)")
        let both = try await agent.ask("EXPORT path=\(path) client=198.18.0.3")
        #expect(both.hasPrefix("OK path=\(path) clients=198.18.0.2,198.18.0.3 changed=yes fsid=\(fsid) "), "\(both)")
        #expect(agent.etabLines(path).count == 2)

        // Someone takes the export away behind our back: EXPORT (unchanged file) repairs it.
        try Data().write(to: URL(fileURLWithPath: agent.etab))
        let repaired = try await agent.ask("EXPORT path=\(path) client=198.18.0.3")
        #expect(repaired.contains(" changed=no "), "\(repaired)")
        #expect(agent.etabLines(path).count == 2, "re-applied: \(agent.etabLines(path))")

        let one = try await agent.ask("UNEXPORT path=\(path) client=198.18.0.2")
        #expect(one == "OK path=\(path) clients=198.18.0.3 changed=yes backend=kernel", "\(one)")
        live = agent.etabLines(path)
        #expect(live.count == 1 && live[0].hasPrefix(path + "\t198.18.0.3("), "\(live)")
        let none = try await agent.ask("UNEXPORT path=\(path)")
        #expect(none == "OK path=\(path) clients= changed=yes backend=kernel", "\(none)")
        #expect(agent.etabLines(path).isEmpty)
        #expect(try String(contentsOfFile: agent.exportsFile, encoding: .utf8) == NamespacedStorageAgent.foreign,
                "the file is the administrator's again, byte for byte")
        #expect(FileManager.default.fileExists(atPath: path), "UNEXPORT never removes data")
        print("storage-agent kernel backend: first EXPORT \(firstTime) (includes exportfs -ra and the etab check)")
        try await agent.stop()
    }

    @Test("an exported directory replaced by a symbolic link is not followed by the next reload: invalid-state naming it, nothing applied")
    func symlinkSwapNotFollowed() async throws {
        if let missing = NamespacedStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        let agent = try await NamespacedStorageAgent()
        let w1 = agent.root + "/w1", w2 = agent.root + "/w2", secret = agent.dir + "/secret"
        let first = try await agent.ask("EXPORT path=\(w1) client=198.18.0.2")
        #expect(first.hasPrefix("OK path=\(w1) "), "\(first)")
        // After EXPORT, the directory is swapped for a link to a directory outside the
        // export root (a local user with write access there, or a client of a parent export).
        try FileManager.default.createDirectory(atPath: secret, withIntermediateDirectories: true)
        #expect(rename(w1, w1 + ".moved") == 0)
        #expect(symlink(secret, w1) == 0)
        let before = try String(contentsOfFile: agent.exportsFile, encoding: .utf8)
        // The next change reloads every managed line: exportfs resolves w1 to the link's
        // target and would export it rw,no_root_squash.
        let next = try await agent.ask("EXPORT path=\(w2) client=198.18.0.2")
        #expect(next.hasPrefix("ERR code=invalid-state "), "\(next)")
        #expect(next.contains(" path=\(w1)"), "the answer names the path: \(next)")
        #expect(next.contains("UNEXPORT"), "the answer says what to do: \(next)")
        let etab = (try? String(contentsOfFile: agent.etab, encoding: .utf8)) ?? ""
        #expect(!etab.contains(secret), "the link's target must never reach etab: \(etab)")
        #expect(agent.etabLines(w2).isEmpty, "nothing applied")
        #expect(try String(contentsOfFile: agent.exportsFile, encoding: .utf8) == before, "nothing written")
        // The way out: UNEXPORT the path (allowed: it removes the line), then changes work again.
        let gone = try await agent.ask("UNEXPORT path=\(w1)")
        #expect(gone.hasPrefix("OK path=\(w1) clients= changed=yes"), "\(gone)")
        let retry = try await agent.ask("EXPORT path=\(w2) client=198.18.0.2")
        #expect(retry.hasPrefix("OK path=\(w2) "), "\(retry)")
        let after = (try? String(contentsOfFile: agent.etab, encoding: .utf8)) ?? ""
        #expect(!after.contains(secret), "\(after)")
        #expect(agent.etabLines(w2).count == 1)
        try await agent.stop()
    }

    @Test("a host exportfs cannot resolve is refused after the fact: the file is restored and applied again")
    func unresolvableHostRestores() async throws {
        if let missing = NamespacedStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        let agent = try await NamespacedStorageAgent()
        // Restart with a host-name client: allowed by the inventory, but it does not
        // resolve (no DNS in the namespace's view), so exportfs exits 0 and drops it.
        agent.child?.signal(SIGTERM)
        _ = try await agent.child?.wait(timeout: .seconds(5))
        let binary = try TestSupport.binary("storage-agent")
        let gen = agent.dir + "/g0"
        agent.child = try ChildProcess("/usr/bin/unshare", [
            "-m", "-n", "--propagation", "private", "/bin/sh", agent.dir + "/run.sh", gen, agent.dir + "/nfs",
            binary, "--listen", "unix:\(agent.socket)", "--export-root", agent.root,
            "--allow-client", "198.18.0.2", "--allow-client", "no-such-host.invalid", "--log-level", "warning",
        ], logDir: agent.dir)
        let socket = agent.socket
        _ = try await TestSupport.waitUntil(timeout: .seconds(10)) {
            guard let c = try? RawSocket(unixPath: socket, timeout: 2) else { return false }
            await c.send("HELLO version=1\n")
            return await c.readLine()?.hasPrefix("OK") == true
        }
        let ok = try await agent.ask("EXPORT path=\(agent.root)/w1 client=198.18.0.2")
        #expect(ok.hasPrefix("OK "), "\(ok)")
        let before = try String(contentsOfFile: agent.exportsFile, encoding: .utf8)
        let bad = try await agent.ask("EXPORT path=\(agent.root)/w1 client=no-such-host.invalid")
        #expect(bad.hasPrefix("ERR code=unavailable "), "\(bad)")
        #expect(bad.contains("restored%20and%20applied%20again"), "\(bad)")
        #expect(try String(contentsOfFile: agent.exportsFile, encoding: .utf8) == before)
        #expect(agent.etabLines(agent.root + "/w1").count == 1, "the previous export is still live")
        try await agent.stop()
    }

    @Test("kill -9 at random points during 200 EXPORT/UNEXPORT calls never leaves a torn or empty exports file")
    func killNine() async throws {
        if let missing = NamespacedStorageAgent.available() { Issue.record("cannot run: \(missing)"); return }
        let agent = try await NamespacedStorageAgent()
        let root = agent.root
        let done = ManagedFlag()
        let observed = ManagedCounter()
        let problems = ProblemLog()
        // A reader that looks at the file as fast as it can the whole time.
        let dir = agent.dir
        let generation = agent.generationSnapshot
        let reader = Thread {
            while !done.value {
                let current = dir + "/g\(generation.value)/upper/exports"
                if let data = FileManager.default.contents(atPath: current) {
                    let text = String(decoding: data, as: UTF8.self)
                    observed.increment()
                    if let problem = storageAgentFileProblem(text, root: root) { problems.add(problem) }
                }
            }
        }
        reader.start()
        var generator = SystemRandomNumberGenerator()
        var kills = 0
        let start = ContinuousClock.now
        for call in 0..<200 {
            let target = "\(root)/w\(Int.random(in: 0..<4, using: &generator))"
            let client = ["198.18.0.2", "198.18.0.3"].randomElement(using: &generator)!
            let line: String
            switch Int.random(in: 0..<3, using: &generator) {
            case 0: line = "UNEXPORT path=\(target)"
            case 1: line = "UNEXPORT path=\(target) client=\(client)"
            default: line = "EXPORT path=\(target) client=\(client)"
            }
            let c = try await agent.client()
            await c.send(line + "\n")
            if Int.random(in: 0..<4, using: &generator) == 0 {
                // Kill somewhere inside the request: parsing, lock, write, exportfs, verify.
                usleep(UInt32.random(in: 0..<12_000, using: &generator))
                try await agent.killAndRestart()
                agent.generationSnapshot.set(agent.generation)
                kills += 1
            } else {
                let answer = await c.readResponse().last ?? ""
                #expect(answer.hasPrefix("OK "), "call \(call): \(line) -> \(answer)")
            }
            let text = try String(contentsOfFile: agent.exportsFile, encoding: .utf8)
            if let problem = storageAgentFileProblem(text, root: root) { problems.add("after call \(call): \(problem)") }
        }
        done.set()
        while !reader.isFinished { usleep(1000) }
        #expect(problems.all.isEmpty, "\(problems.all.prefix(5))")
        #expect(kills >= 20, "killed \(kills) times")
        print("storage-agent kill -9 test: 200 calls, \(kills) kills, \(observed.value) observations of the file, \(ContinuousClock.now - start)")
        try await agent.stop()
    }
}

extension NamespacedStorageAgent {
    /// The generation number the background reader follows.
    var generationSnapshot: ManagedCounter { Self.snapshots.counter(for: dir) }
    static let snapshots = SnapshotRegistry()
}

final class SnapshotRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var counters: [String: ManagedCounter] = [:]
    func counter(for key: String) -> ManagedCounter {
        lock.withLock {
            if let c = counters[key] { return c }
            let c = ManagedCounter()
            counters[key] = c
            return c
        }
    }
}

final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    var value: Bool { lock.withLock { flag } }
    func set() { lock.withLock { flag = true } }
}

final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func increment() { lock.withLock { count += 1 } }
    func set(_ v: Int) { lock.withLock { count = v } }
}

final class ProblemLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    var all: [String] { lock.withLock { items } }
    func add(_ s: String) { lock.withLock { items.append(s) } }
}
