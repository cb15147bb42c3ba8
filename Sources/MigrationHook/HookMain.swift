import CSystemd
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The hook process: libvirtd runs `HOOK DOMAIN OPERATION SUBOP EXTRA` with the domain
/// XML on stdin (https://libvirt.org/hooks.html). Only `migrate begin` is decided; every
/// other call exits 0 at once without reading stdin. Nothing is ever written to stdout
/// (on `migrate begin` libvirt would take it as a replacement domain XML).
public enum HookMain {
    /// How long the hook may take before its watchdog refuses (libvirtd waits for a
    /// hook with no timeout, blocked: the hook must bound itself).
    public static let deadline: Double = 2

    /// Runs the hook and exits: 0 lets the migration through, 1 refuses it.
    public static func run(arguments: [String], paths: HookPaths = .forThisProcess()) -> Never {
        guard arguments.count >= 3, arguments[1] == "migrate", arguments[2] == "begin" else { exit(0) }
        startWatchdog()
        let (code, message, log) = decide(domainArgument: arguments[0], paths: paths)
        if let log { Journal.log(log.message, priority: log.priority, domain: log.domain) }
        if let message { writeAll(2, message + "\n") }
        exit(code)
    }

    struct LogLine { var message: String; var priority: Int32; var domain: String }

    /// Reads stdin and the host's facts, and decides: (exit status, stderr sentence, journal line).
    static func decide(domainArgument: String, paths: HookPaths) -> (Int32, String?, LogLine?) {
        do throws(HookError) {
            let xml = try readAll(0, limit: DomainStorage.maximumBytes, what: "the domain XML on stdin")
            let domain = try DomainStorage.parse(xml)
            guard domain.name == domainArgument else {
                throw HookError("the domain XML on stdin names \(domain.name), not \(domainArgument)")
            }
            var config = HookConfig()
            if let text = try readFile(paths.config, what: "the hook's configuration") {
                config = try HookConfig.parse(String(decoding: text, as: UTF8.self), file: paths.config)
            }
            let recordPath = config.readyShares ?? paths.readyShares
            var listed: [String] = []
            if let text = try readFile(recordPath, what: "storagectl's record of ready shares") {
                listed = try ReadyShares.parseRecord(String(decoding: text, as: UTF8.self), file: recordPath)
            }
            guard let mountInfo = try readFile(paths.mountInfo, what: "the mount table") else {
                throw HookError("cannot read the mount table \(paths.mountInfo)")
            }
            let ready = ReadyShares(listed: listed, mountPoints: ReadyShares.parseMountInfo(String(decoding: mountInfo, as: UTF8.self)))
            switch MigrationGate.decide(domain, config: config, ready: ready, paths: RealPaths()) {
            case .allow(exempted: true):
                return (0, nil, LogLine(message: "storagectl migration hook: \(domain.name) is exempt (exempt = \(domain.name) in \(paths.config)); its storage was not checked", priority: LOG_NOTICE, domain: domain.name))
            case .allow(exempted: false):
                return (0, nil, nil)
            case .refuse(let sentence):
                return (1, sentence, LogLine(message: sentence, priority: LOG_WARNING, domain: domain.name))
            }
        } catch {
            let sentence = "storagectl refuses the incoming migration of \(domainArgument): \(error.message), so its storage cannot be checked."
            return (1, sentence, LogLine(message: sentence, priority: LOG_WARNING, domain: domainArgument))
        }
    }

    /// A thread that refuses after ``deadline``: a stdin that never reaches EOF, or a
    /// `realpath` stuck on a dead NFS mount, must not hold libvirtd forever.
    static func startWatchdog() {
        let seconds = deadline
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: seconds)
            writeAll(2, "storagectl refuses the migration: its migration hook did not decide within \(Int(seconds)) s (stdin not closed, or a share that does not answer).\n")
            _exit(1)
        }
    }

    /// Up to `limit` bytes from `fd`; more is an error.
    static func readAll(_ fd: Int32, limit: Int, what: String) throws(HookError) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return out }
            if n < 0 {
                if errno == EINTR { continue }
                throw HookError("cannot read \(what): \(String(cString: strerror(errno)))")
            }
            out.append(contentsOf: buffer[0..<n])
            if out.count > limit { throw HookError("\(what) is larger than \(limit >> 20) MiB") }
        }
    }

    /// The file's bytes (at most 1 MiB), nil when it does not exist; any other failure throws.
    static func readFile(_ path: String, what: String) throws(HookError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw HookError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        return try readAll(fd, limit: 1 << 20, what: "\(what) \(path)")
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            bytes = bytes.dropFirst(n)
        }
    }
}

/// The journal (sd_journal_sendv(3)) with the fields MESSAGE, PRIORITY,
/// SYSLOG_IDENTIFIER=storagectl-migration-hook and STORAGECTL_DOMAIN; syslog(3) when
/// journald does not answer.
enum Journal {
    static func log(_ message: String, priority: Int32, domain: String) {
        let fields = ["MESSAGE=" + message, "PRIORITY=\(priority)", "SYSLOG_IDENTIFIER=storagectl-migration-hook",
                      "STORAGECTL_DOMAIN=" + domain]
        let copies = fields.map { strdup($0)! }
        defer { copies.forEach { free($0) } }
        var iov = zip(copies, fields).map { iovec(iov_base: UnsafeMutableRawPointer($0.0), iov_len: $0.1.utf8.count) }
        if sd_journal_sendv(&iov, Int32(iov.count)) >= 0 { return }
        openlog("storagectl-migration-hook", LOG_PID, LOG_DAEMON)
        withVaList([message]) { vsyslog(priority, "%s", $0) }
        closelog()
    }
}
