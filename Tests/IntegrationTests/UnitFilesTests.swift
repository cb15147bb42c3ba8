import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The systemd units in units/ pass `systemd-analyze verify` (offline, in a scratch root
/// with stub binaries at the ExecStart paths) and its security gate.
@Suite("systemd units")
struct UnitFilesTests {
    static let units = ["storage-agent.socket", "storage-agent-tls.socket", "storage-agent.service",
                        "compute-agent.socket", "compute-agent-tls.socket", "compute-agent.service"]

    /// A scratch root: our units in /etc/systemd/system, the distribution's targets, and
    /// stub executables where ExecStart points.
    static func scratchRoot() throws -> String {
        let root = try TestSupport.temporaryDirectory("units")
        let fm = FileManager.default
        for d in ["etc/systemd/system", "usr/local/sbin", "lib/systemd/system"] {
            try fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
        }
        for target in try fm.contentsOfDirectory(atPath: "/lib/systemd/system") where target.hasSuffix(".target") {
            try? fm.copyItem(atPath: "/lib/systemd/system/" + target, toPath: root + "/lib/systemd/system/" + target)
        }
        for bin in ["storage-agent", "compute-agent"] {
            let p = root + "/usr/local/sbin/" + bin
            try "#!/bin/sh\nexit 0\n".write(toFile: p, atomically: true, encoding: .utf8)
            chmod(p, 0o755)
        }
        for unit in units {
            try fm.copyItem(atPath: TestSupport.packageRoot.appendingPathComponent("units/" + unit).path,
                            toPath: root + "/etc/systemd/system/" + unit)
        }
        return root
    }

    @Test("systemd-analyze verify accepts every unit without a single warning")
    func verify() async throws {
        let root = try Self.scratchRoot()
        defer { TestSupport.removeTree(root) }
        // verify exits 0 on unknown keys and bad values, printing only warnings: any output fails.
        let r = try await runProgram("/usr/bin/systemd-analyze",
                               ["verify", "--man=no", "--root=\(root)"] + Self.units.map { root + "/etc/systemd/system/" + $0 })
        #expect(r.status == 0)
        #expect(r.stdout.isEmpty && r.stderr.isEmpty, "systemd-analyze said:\n\(r.stdout)\(r.stderr)")
    }

    @Test("the services are Type=notify and hardened below an exposure of 4.0")
    func security() async throws {
        let root = try Self.scratchRoot()
        defer { TestSupport.removeTree(root) }
        for service in ["storage-agent.service", "compute-agent.service"] {
            let text = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("units/" + service), encoding: .utf8)
            #expect(text.contains("Type=notify"))
            let r = try await runProgram("/usr/bin/systemd-analyze",
                                   ["security", "--offline=true", "--root=\(root)", "--threshold=40", service])
            #expect(r.status == 0, "\(service) exposure too high:\n\(r.stdout.suffix(400))")
        }
    }

    /// The values of every `KEY=` line of a unit file, split on spaces (an empty
    /// assignment resets the list, as systemd does).
    static func values(_ key: String, in unit: String) throws -> [String] {
        let text = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("units/" + unit), encoding: .utf8)
        var result: [String] = []
        for line in text.split(separator: "\n") where line.hasPrefix(key + "=") {
            let value = line.dropFirst(key.count + 1)
            if value.isEmpty { result = [] } else { result += value.split(separator: " ").map(String.init) }
        }
        return result
    }

    /// Fixed script: a TCP listener on 127.0.0.1:2049 in a private network namespace
    /// prints the source port of each connection; libnfs' nfs-ls connects to it under
    /// the capability bounding set given as $1 (setpriv syntax), as root. Every wait is
    /// bounded: a listener that started too late for the client (python3 slow to start
    /// under load) once left `wait` hanging for good.
    static let portScript = """
        set -eu
        ip link set lo up
        timeout 30 python3 -c '
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(20)
        s.bind(("127.0.0.1", 2049)); s.listen(8); print("ready", flush=True)
        c, a = s.accept(); print(a[1], flush=True); c.close()
        ' > "$2" &
        i=0; while ! grep -q ready "$2" && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        for attempt in 1 2 3; do
            timeout 10 setpriv --bounding-set="$1" nfs-ls "nfs://127.0.0.1/x?nfsport=2049&mountport=2049" >/dev/null 2>>"$2.err" || echo "attempt $attempt: exit $?" >>"$2.err"
            if grep -q '^[0-9]' "$2"; then break; fi
        done
        wait
        """

    @Test("compute-agent.service keeps CAP_NET_BIND_SERVICE: libnfs then connects from a port below 1024, as a kernel nfsd's default `secure` export requires")
    func computeAgentPrivilegedPort() async throws {
        for tool in ["/usr/bin/unshare", "/usr/bin/setpriv", "/usr/bin/nfs-ls", "/usr/bin/python3", "/usr/sbin/ip"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            Issue.record("cannot run: \(tool) is missing"); return
        }
        if getuid() != 0 { Issue.record("cannot run: needs root (unshare -n)"); return }
        // The service runs as root without User=: its capabilities are its bounding set.
        let caps = try Self.values("CapabilityBoundingSet", in: "compute-agent.service")
        #expect(!caps.isEmpty && !caps.contains { $0.hasPrefix("~") }, "an explicit allow-list: \(caps)")
        #expect(try Self.values("User", in: "compute-agent.service").isEmpty, "runs as root")
        let dir = try TestSupport.temporaryDirectory("port")
        defer { TestSupport.removeTree(dir) }
        try Self.portScript.write(toFile: dir + "/port.sh", atomically: true, encoding: .utf8)
        func sourcePort(_ caps: [String]) async throws -> Int? {
            let set = (["-all"] + caps.map { "+" + $0.lowercased().replacingOccurrences(of: "cap_", with: "") }).joined(separator: ",")
            let r = try await runProgram("/usr/bin/unshare", ["-n", "/bin/sh", dir + "/port.sh", set, dir + "/ports"])
            let text = (try? String(contentsOfFile: dir + "/ports", encoding: .utf8)) ?? ""
            let errors = (try? String(contentsOfFile: dir + "/ports.err", encoding: .utf8)) ?? ""
            #expect(r.status == 0, "\(r)")
            let port = text.split(separator: "\n").compactMap { Int($0) }.first
            if port == nil { Issue.record("no connection under \(set): listener said \(text.debugDescription); nfs-ls: \(errors.suffix(600))") }
            try? FileManager.default.removeItem(atPath: dir + "/ports.err")
            return port
        }
        let shipped = try #require(try await sourcePort(caps), "libnfs did not connect")
        #expect(shipped < 1024, "under the unit's CapabilityBoundingSet (\(caps.joined(separator: " "))) libnfs connects from port \(shipped): a kernel nfsd refuses it on a `secure` export")
        // And the control: without CAP_NET_BIND_SERVICE the same client cannot.
        let without = try #require(try await sourcePort(caps.filter { $0 != "CAP_NET_BIND_SERVICE" }))
        #expect(without >= 1024, "\(without)")
    }

    @Test("no writable /etc beyond what the exports need; no state path hard-coded for configuration")
    func writablePaths() throws {
        let compute = try Self.values("ReadWritePaths", in: "compute-agent.service")
        #expect(!compute.contains { $0.trimmingCharacters(in: CharacterSet(charactersIn: "-")).hasPrefix("/etc") }, "compute agent: \(compute)")
        let storage = try Self.values("ReadWritePaths", in: "storage-agent.service").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "-")) }
        #expect(!storage.contains("/etc") && !storage.contains("/etc/"), "storage agent: all of /etc writable: \(storage)")
        for path in storage where path.hasPrefix("/etc") {
            #expect(["/etc/exports.d", "/etc/ganesha"].contains(path), "storage agent: \(path)")
        }
        #expect(!storage.contains("/run/ganesha"), "the pid file is only read")
    }

    @Test("storage-agent --print-unit-drop-in makes writable what the configuration writes, and systemd-analyze verify takes it")
    func unitDropIn() async throws {
        let dir = try TestSupport.temporaryDirectory("dropin")
        defer { TestSupport.removeTree(dir) }
        let binary = try TestSupport.binary("storage-agent")
        func dropIn(_ config: String) async throws -> String {
            try config.write(toFile: dir + "/agent.conf", atomically: true, encoding: .utf8)
            let r = try await runProgram(binary, ["--config", dir + "/agent.conf", "--print-unit-drop-in"])
            #expect(r.status == 0, "\(r)")
            return r.stdout
        }
        let defaults = try await dropIn("[storage-agent]\n")
        #expect(defaults.contains("\nReadWritePaths=\nReadWritePaths=/etc -/var/lib/libvirt/shared-images -/var/lib/nfs\n"), "\(defaults)")
        let narrow = try await dropIn("[storage-agent]\nexports-file = /etc/exports.d/storagectl.exports\nexport-root = /srv/images\n")
        #expect(narrow.contains("\nReadWritePaths=/etc/exports.d -/srv/images -/var/lib/nfs\n"), "\(narrow)")
        let ganesha = try await dropIn("[storage-agent]\nexports-file = /etc/exports.d/storagectl.exports\nbackend = ganesha\n")
        #expect(ganesha.contains("\nReadWritePaths=/etc/exports.d -/var/lib/libvirt/shared-images /etc/ganesha\n"), "\(ganesha)")
        let root = try Self.scratchRoot()
        defer { TestSupport.removeTree(root) }
        try FileManager.default.createDirectory(atPath: root + "/etc/systemd/system/storage-agent.service.d", withIntermediateDirectories: true)
        try narrow.write(toFile: root + "/etc/systemd/system/storage-agent.service.d/50-paths.conf", atomically: true, encoding: .utf8)
        let r = try await runProgram("/usr/bin/systemd-analyze", ["verify", "--man=no", "--root=\(root)", root + "/etc/systemd/system/storage-agent.service"])
        #expect(r.status == 0 && r.stdout.isEmpty && r.stderr.isEmpty, "systemd-analyze said:\n\(r.stdout)\(r.stderr)")
    }
}

