import AgentAPI
import AgentProtocol

/// Checks for the migration gate's values (MIGRATION-TARGET's CPU fields, UUIDs, the
/// libvirt URIs of LIBVIRT-REACH and MIGRATE). Pure; each failure is `invalid-argument`
/// naming the key. A value that passes is safe to hand to libvirt's API and to an XML
/// attribute or text set through the XML library.
extension Validation {
    /// A libvirt UUID in its canonical text form: 8-4-4-4-12 hex digits. Answered lower-case.
    public static func uuid(_ text: String, key: String = "uuid") throws(AgentError) -> String {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        let ok = groups.map(\.utf8.count) == [8, 4, 4, 4, 12]
            && groups.allSatisfy { $0.utf8.allSatisfy { isHexDigit($0) } }
        guard ok else { throw .invalidArgument("\(key)= '\(text)' is not a UUID (8-4-4-4-12 hexadecimal digits)") }
        return text.lowercased()
    }

    static func isHexDigit(_ b: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(b)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(b)
    }

    /// An identifier as libvirt's CPU, machine and architecture names are:
    /// `[A-Za-z0-9][A-Za-z0-9._-]{0,99}` (`x86_64`, `pc-i440fx-7.2`, `Skylake-Client-IBRS`).
    public static func identifier(_ text: String, key: String) throws(AgentError) -> String {
        let ok = !text.isEmpty && text.utf8.count <= 100 && isAlnum(text.utf8.first!)
            && text.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
        guard ok else {
            throw .invalidArgument("\(key)= '\(text)' is not an identifier (1-100 of A-Z a-z 0-9 . _ -, starting with a letter or digit)")
        }
        return text
    }

    /// Policies a `<cpu><feature>` may have.
    static let featurePolicies: Set<String> = ["require", "disable", "force", "optional", "forbid"]

    /// A CPU definition from the wire: every name an identifier, the emulator an absolute
    /// normalised path, the mode and policies from libvirt's sets; at most 256 features.
    public static func cpuDefinition(_ cpu: CPUDefinition) throws(AgentError) -> CPUDefinition {
        _ = try identifier(cpu.arch, key: "arch")
        _ = try identifier(cpu.machine, key: "machine")
        _ = try identifier(cpu.virtType, key: "virt-type")
        _ = try absolutePath(cpu.emulator, key: "emulator")
        if let mode = cpu.mode, !["custom", "host-model", "host-passthrough", "maximum"].contains(mode) {
            throw .invalidArgument("cpu-mode= '\(mode)' is not one of custom, host-model, host-passthrough, maximum")
        }
        if let model = cpu.model { _ = try identifier(model, key: "cpu-model") }
        if let match = cpu.match, !["minimum", "exact", "strict"].contains(match) {
            throw .invalidArgument("cpu-match= '\(match)' is not one of minimum, exact, strict")
        }
        if let check = cpu.check, !["none", "partial", "full"].contains(check) {
            throw .invalidArgument("cpu-check= '\(check)' is not one of none, partial, full")
        }
        if let fallback = cpu.fallback, !["allow", "forbid"].contains(fallback) {
            throw .invalidArgument("cpu-fallback= '\(fallback)' is not allow or forbid")
        }
        guard cpu.features.count <= 256 else { throw .invalidArgument("at most 256 cpu-feature= are accepted (got \(cpu.features.count))") }
        for f in cpu.features {
            guard featurePolicies.contains(f.policy) else {
                throw .invalidArgument("cpu-feature= '\(f.policy):\(f.name)' has the policy '\(f.policy)'; one of require, disable, force, optional, forbid")
            }
            _ = try identifier(f.name, key: "cpu-feature")
        }
        return cpu
    }

    /// Schemes a migration destination URI may use (storagectl never uses others).
    static let libvirtSchemes = ["qemu", "qemu+tcp", "qemu+tls", "qemu+ssh"]

    /// A libvirt URI of a remote (or the local) system daemon:
    /// `SCHEME://HOST[:PORT]/system` with SCHEME qemu, qemu+tcp, qemu+tls or qemu+ssh,
    /// HOST a host name or IPv4 address (``server(_:key:)``), no user, no query, no
    /// fragment, no whitespace or control characters. `qemu:///system` (no host) is
    /// accepted only when `allowLocal`.
    /// `testDriver`: also `test:///default` and `test:///ABSOLUTE/PATH.xml` (libvirt's test
    /// driver; only an agent whose own URI is a test one passes true).
    public static func libvirtURI(_ uri: String, key: String = "uri", allowLocal: Bool = false,
                                  testDriver: Bool = false) throws(AgentError) -> String {
        let form = "SCHEME://HOST/system with SCHEME qemu, qemu+tcp, qemu+tls or qemu+ssh"
        guard uri.utf8.count <= 300 else { throw .invalidArgument("\(key)= is longer than 300 bytes") }
        if let bad = uri.unicodeScalars.first(where: { $0.value <= 0x20 || $0.value >= 0x7F }) {
            throw .invalidArgument("\(key)= holds the character U+\(String(bad.value, radix: 16, uppercase: true)); a libvirt URI here is \(form)")
        }
        if testDriver, uri.hasPrefix("test://") {
            let path = String(uri.dropFirst("test://".count))
            if path == "/default" { return uri }
            _ = try absolutePath(path, key: key)
            return uri
        }
        guard let sep = uri.range(of: "://") else { throw .invalidArgument("\(key)= '\(uri)' is not \(form)") }
        let scheme = String(uri[..<sep.lowerBound])
        guard libvirtSchemes.contains(scheme) else {
            throw .invalidArgument("\(key)= '\(uri)' has the scheme '\(scheme)'; a libvirt URI here is \(form)")
        }
        let rest = uri[sep.upperBound...]
        guard !rest.contains("?"), !rest.contains("#") else {
            throw .invalidArgument("\(key)= '\(uri)' has a query or fragment; give \(form) without one")
        }
        guard let slash = rest.firstIndex(of: "/"), rest[slash...] == "/system" else {
            throw .invalidArgument("\(key)= '\(uri)' does not end in /system; give \(form)")
        }
        let authority = String(rest[..<slash])
        guard !authority.contains("@") else { throw .invalidArgument("\(key)= '\(uri)' names a user; give \(form)") }
        if authority.isEmpty {
            guard allowLocal, scheme == "qemu" else { throw .invalidArgument("\(key)= '\(uri)' names no host; give \(form)") }
            return uri
        }
        var host = authority
        if let colon = authority.lastIndex(of: ":") {
            let port = authority[authority.index(after: colon)...]
            guard let n = Int(port), (1...65535).contains(n), port.first != "0" else {
                throw .invalidArgument("\(key)= '\(uri)' has the port '\(port)', which is not a TCP port")
            }
            host = String(authority[..<colon])
        }
        _ = try server(host, key: "the host of \(key)")
        return uri
    }

    /// The host part of a URI that passed ``libvirtURI(_:key:allowLocal:)``.
    static func host(ofLibvirtURI uri: String) -> String {
        guard let sep = uri.range(of: "://") else { return "" }
        let rest = uri[sep.upperBound...]
        let authority = rest.prefix { $0 != "/" }
        return String(authority.split(separator: ":", maxSplits: 1).first ?? "")
    }
}
