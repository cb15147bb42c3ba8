import Foundation
import Testing
import TestSupport

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
}
