import AgentProtocol
import BlockingIO
import Foundation
import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// Installs, removes and inspects storagectl's libvirt migration hook on this host
/// (docs/migration.md, "The hook"; docs/install.md).
///
/// The hook is a COPY of the hook binary named `storagectl` in libvirt's `qemu.d` hook
/// directory (not a symlink: a dangling link is silently skipped by libvirtd, which would
/// disarm the gate when a build directory or package path goes away). libvirtd reads
/// its hooks at start and on SIGHUP only, so install and uninstall send SIGHUP to the
/// libvirtd of the pid file (after checking `/proc/PID/comm` is `libvirtd`), and record
/// it (pid, start time) in `<state-dir>/migration-hook.json`, so ``status()`` can tell
/// "installed" from "loaded". Requires root. Blocking: call off the cooperative pool.
public struct HookInstallation: Sendable {
    public var hooksDir: String
    public var libvirtdPidFile: String
    public var stateDir: String
    /// `/proc` (injected by tests).
    public var proc: String = "/proc"

    public static let defaultHooksDir = "/etc/libvirt/hooks/qemu.d"
    public static let defaultPidFile = "/run/libvirtd.pid"
    public static let hookName = "storagectl"

    public init(hooksDir: String = Self.defaultHooksDir, libvirtdPidFile: String = Self.defaultPidFile, stateDir: String) {
        self.hooksDir = hooksDir
        self.libvirtdPidFile = libvirtdPidFile
        self.stateDir = stateDir
    }

    /// The installation as recorded by the last install (its hooks dir and pid file), or
    /// the defaults with `stateDir`.
    public static func recorded(stateDir: String) -> HookInstallation {
        var h = HookInstallation(stateDir: stateDir)
        if let r = h.readRecord() {
            h.hooksDir = r.hooksDir
            h.libvirtdPidFile = r.libvirtdPidFile
        }
        return h
    }

    public var hookPath: String { "\(hooksDir)/\(Self.hookName)" }
    var recordPath: String { "\(stateDir)/migration-hook.json" }

    struct Record: Codable, Equatable {
        var hooksDir: String
        var libvirtdPidFile: String
        var binary: String?
        /// The libvirtd that was sent SIGHUP after the last change, by pid and start time
        /// (clock ticks since boot, /proc/PID/stat field 22), and when.
        var sighupPid: Int32?
        var sighupStartTicks: UInt64?
        var sighupAt: Double?
    }

    /// A running libvirtd: its pid and start time.
    struct Daemon: Equatable {
        var pid: Int32
        var startTicks: UInt64
        /// Seconds since the epoch.
        var started: Double
    }

    // MARK: - install / uninstall

    /// Copies `binary` to ``hookPath`` atomically (mode 0755), then makes libvirtd load
    /// it. Idempotent. Returns what it did, one sentence per line.
    public func install(binary: String) throws(AgentError) -> [String] {
        guard binary.hasPrefix("/") else { throw AgentError.invalidArgument("--hook-binary must be an absolute path") }
        var st = stat()
        guard stat(binary, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_mode & 0o111 != 0 else {
            throw AgentError(.notFound, "the hook binary \(binary) is not an executable file; build or install storagectl-migration-hook, or name it with --hook-binary")
        }
        // Whoever can write it could run anything as root inside libvirtd's hook calls.
        guard st.st_mode & 0o022 == 0 else {
            throw AgentError(.invalidState, "the hook binary \(binary) is writable by group or others; fix its mode (chmod go-w)")
        }
        guard let bytes = FileManager.default.contents(atPath: binary) else {
            throw AgentError(.unavailable, "cannot read the hook binary \(binary)")
        }
        try makeDirectories(hooksDir)
        do {
            try AtomicFile.write([UInt8](bytes), to: hookPath, mode: 0o755, temporaryName: ".\(Self.hookName).tmp")
        } catch {
            throw AgentError(.internal, "cannot write the hook \(hookPath): \(error)")
        }
        var done = ["installed \(hookPath) (a copy of \(binary))"]
        var record = Record(hooksDir: hooksDir, libvirtdPidFile: libvirtdPidFile, binary: binary)
        done.append(try reload(&record))
        try writeRecord(record)
        return done
    }

    /// Removes ``hookPath`` and makes libvirtd forget it. Idempotent.
    public func uninstall() throws(AgentError) -> [String] {
        var done: [String] = []
        if unlink(hookPath) == 0 {
            done.append("removed \(hookPath)")
        } else if errno == ENOENT {
            done.append("\(hookPath) was not installed")
        } else {
            throw AgentError(.internal, "cannot remove \(hookPath): \(String(cString: strerror(errno)))")
        }
        var record = Record(hooksDir: hooksDir, libvirtdPidFile: libvirtdPidFile)
        done.append(try reload(&record))
        unlink(recordPath)
        return done
    }

    /// SIGHUP to libvirtd (checked by /proc/PID/comm), noted in `record`.
    private func reload(_ record: inout Record) throws(AgentError) -> String {
        guard let daemon = libvirtd() else {
            return "libvirtd is not running (no live libvirtd in \(libvirtdPidFile)): it reads the hook when it starts"
        }
        guard kill(daemon.pid, SIGHUP) == 0 else {
            throw AgentError(.internal, "cannot send SIGHUP to libvirtd (pid \(daemon.pid)): \(String(cString: strerror(errno)))")
        }
        record.sighupPid = daemon.pid
        record.sighupStartTicks = daemon.startTicks
        record.sighupAt = Date().timeIntervalSince1970
        return "sent SIGHUP to libvirtd (pid \(daemon.pid)) so that it reloads its hooks"
    }

    // MARK: - status

    /// Installed: ``hookPath`` is a regular executable file not writable by group or
    /// others. Loaded: the libvirtd of the pid file started after the hook was written,
    /// or was sent SIGHUP (this very process: same pid and start time) after it.
    public func status() -> HookStatus {
        var st = stat()
        guard lstat(hookPath, &st) == 0 else {
            return HookStatus(installed: false, loaded: false,
                              detail: "the migration hook is not installed (\(hookPath) is missing): run compute-agent install-hook")
        }
        guard st.st_mode & S_IFMT == S_IFREG, st.st_mode & 0o111 != 0, st.st_mode & 0o022 == 0 else {
            return HookStatus(installed: false, loaded: false,
                              detail: "\(hookPath) is not an executable file writable by root only: run compute-agent install-hook again")
        }
        let written = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        guard let daemon = libvirtd() else {
            return HookStatus(installed: true, loaded: false,
                              detail: "the hook is installed at \(hookPath), but no libvirtd runs (pid file \(libvirtdPidFile)); it is loaded when libvirtd starts")
        }
        let record = readRecord()
        let reloaded = record.map { $0.sighupPid == daemon.pid && $0.sighupStartTicks == daemon.startTicks && ($0.sighupAt ?? 0) >= written - 1 } ?? false
        if daemon.started > written || reloaded {
            return HookStatus(installed: true, loaded: true,
                              detail: "the hook \(hookPath) is installed and libvirtd (pid \(daemon.pid)) has loaded it")
        }
        return HookStatus(installed: true, loaded: false,
                          detail: "the hook \(hookPath) is installed, but libvirtd (pid \(daemon.pid)) started before it and was not sent SIGHUP since: run compute-agent install-hook again (or restart libvirtd)")
    }

    /// The libvirtd named by the pid file, when that pid is a live libvirtd.
    func libvirtd() -> Daemon? {
        guard let text = try? String(contentsOfFile: libvirtdPidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
              let comm = try? String(contentsOfFile: "\(proc)/\(pid)/comm", encoding: .utf8),
              comm.trimmingCharacters(in: .whitespacesAndNewlines) == "libvirtd",
              let stat = try? String(contentsOfFile: "\(proc)/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)": state is field 3, so starttime (22) is the 20th.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count >= 20, let ticks = UInt64(fields[19]), fields[0] != "Z" else { return nil }
        // Its age on the boot clock, subtracted from the wall clock now: /proc/stat's
        // btime is whole seconds, too coarse to order a start against a file's mtime.
        var boot = timespec(), wall = timespec()
        clock_gettime(CLOCK_BOOTTIME, &boot)
        clock_gettime(CLOCK_REALTIME, &wall)
        let age = Double(boot.tv_sec) + Double(boot.tv_nsec) / 1e9 - Double(ticks) / Double(sysconf(Int32(_SC_CLK_TCK)))
        return Daemon(pid: pid, startTicks: ticks, started: Double(wall.tv_sec) + Double(wall.tv_nsec) / 1e9 - age)
    }

    func readRecord() -> Record? {
        guard let data = FileManager.default.contents(atPath: recordPath) else { return nil }
        return try? JSONDecoder().decode(Record.self, from: data)
    }

    private func writeRecord(_ record: Record) throws(AgentError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try makeDirectories(stateDir, mode: 0o700)
            try AtomicFile.write([UInt8](try encoder.encode(record)), to: recordPath, mode: 0o600, temporaryName: ".migration-hook.json.tmp")
        } catch let e as AgentError {
            throw e
        } catch {
            throw AgentError(.internal, "cannot record the hook's installation in \(recordPath): \(error)")
        }
    }

    private func makeDirectories(_ dir: String, mode: mode_t = 0o755) throws(AgentError) {
        var path = ""
        for part in dir.split(separator: "/") {
            path += "/" + part
            if mkdir(path, mode) != 0 && errno != EEXIST {
                throw AgentError(.internal, "cannot create \(path): \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// The real ``MigrationHookProbe``: ``HookInstallation/status()`` of the installation the
/// state dir records, on a blocking thread.
public struct InstalledMigrationHook: MigrationHookProbe {
    public let stateDir: String

    public init(stateDir: String) { self.stateDir = stateDir }

    public func status() async -> HookStatus {
        let dir = stateDir
        return (try? await BlockingExecutor.shared.run { HookInstallation.recorded(stateDir: dir).status() })
            ?? HookStatus(installed: false, loaded: false, detail: "cannot inspect the migration hook")
    }
}

/// libvirt's test driver (`test:` URIs, the agents' own tests) runs no hooks and migrates
/// nothing: there is no gate to arm, and HEALTH says so instead of failing.
public struct TestDriverHasNoHooks: MigrationHookProbe {
    public let uri: String
    public init(uri: String) { self.uri = uri }
    public func status() async -> HookStatus {
        HookStatus(installed: true, loaded: true, detail: "libvirt's test driver (\(uri)) runs no hooks and migrates nothing: no gate to arm")
    }
}
