import AgentProtocol
import SafeFiles

/// Checks for every value a compute agent verb takes from the wire, before anything is
/// looked up, written or handed to libvirt. Pure; each failure is `invalid-argument`
/// with a sentence that names the key and what is accepted.
///
/// The protocol layer has already refused control bytes and invalid UTF-8 in values
/// (`PercentEncoding.decode`); these checks repeat what matters so they hold for
/// callers that build requests in-process.
public enum Validation {
    /// Longest domain name accepted. libvirt has no fixed limit, but a name becomes a
    /// file name (state dir) and part of paths; 200 bytes is far beyond real names.
    public static let maxDomainNameBytes = 200

    /// A libvirt domain name: 1-200 bytes, no control bytes, no `/`, not `.` or `..`,
    /// no leading or trailing space. It is only ever passed to libvirt's lookup API,
    /// never pasted into XML or argv.
    public static func domainName(_ name: String, key: String = "domain") throws(AgentError) -> String {
        guard !name.isEmpty else { throw .invalidArgument("\(key)= is empty; give the libvirt domain name (virsh list --all)") }
        guard name.utf8.count <= maxDomainNameBytes else {
            throw .invalidArgument("\(key)= is \(name.utf8.count) bytes long; domain names longer than \(maxDomainNameBytes) bytes are refused")
        }
        if let bad = name.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) }) {
            throw .invalidArgument("\(key)= holds the control character U+\(String(bad.value, radix: 16, uppercase: true)); domain names never do")
        }
        guard !name.contains("/") else { throw .invalidArgument("\(key)= '\(name)' contains '/', which libvirt domain names cannot hold") }
        guard name != ".", name != ".." else { throw .invalidArgument("\(key)= '\(name)' is not a domain name") }
        guard name.first != " ", name.last != " " else {
            throw .invalidArgument("\(key)= '\(name)' starts or ends with a space; give the exact libvirt domain name")
        }
        return name
    }

    /// A storage pool name storagectl creates or names: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    public static func poolName(_ name: String, key: String = "name") throws(AgentError) -> String {
        let ok = !name.isEmpty && name.utf8.count <= 64
            && name.utf8.enumerated().allSatisfy { i, b in isAlnum(b) || (i > 0 && (b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: "-"))) }
        guard ok else {
            throw .invalidArgument("\(key)= '\(name)' is not a pool name storagectl accepts: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
        }
        return name
    }

    /// An NFS server: an IPv4 address or a DNS host name (RFC 1123 labels). No port, no
    /// IPv6 literal (QEMU's nfs driver and libnfs URLs take neither in this form).
    public static func server(_ text: String, key: String = "server") throws(AgentError) -> String {
        if isIPv4(text) { return text }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        let ok = !text.isEmpty && text.utf8.count <= 253 && labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63
                && label.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") }
                && label.utf8.first != UInt8(ascii: "-") && label.utf8.last != UInt8(ascii: "-")
        } && !(labels.last.map { $0.allSatisfy(\.isNumber) } ?? true)
        guard ok else {
            throw .invalidArgument("\(key)= '\(text)' is not a host name or IPv4 address (no port, no scheme, no IPv6 literal)")
        }
        return text
    }

    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && p.allSatisfy(\.isNumber)
                && (p == "0" || p.first != "0") && (Int(p) ?? 256) <= 255
        }
    }

    /// An absolute, normalised path: starts with `/`, is not `/` itself, has no empty,
    /// `.` or `..` component and no trailing `/`, and only bytes from
    /// `[A-Za-z0-9._+~@-]` besides `/` (no whitespace, quotes, `%`, `,` or `=`, which
    /// would need escaping in mount options, pool XML or NFS URLs). At most 1024 bytes.
    public static func absolutePath(_ path: String, key: String) throws(AgentError) -> String {
        guard path.hasPrefix("/"), path != "/" else {
            throw .invalidArgument("\(key)= '\(path)' is not an absolute path below / (it must start with '/')")
        }
        guard path.utf8.count <= 1024 else { throw .invalidArgument("\(key)= is longer than 1024 bytes") }
        try components(path.dropFirst(), key: key, whole: path)
        return path
    }

    /// A relative, normalised path inside a share: like ``absolutePath(_:key:)`` without
    /// the leading `/`; no component may start with `.` (temporary and nonce files of
    /// storagectl are dot files).
    public static func relativePath(_ path: String, key: String = "path") throws(AgentError) -> String {
        guard !path.isEmpty, !path.hasPrefix("/") else {
            throw .invalidArgument("\(key)= '\(path)' must be a path relative to the share (no leading '/')")
        }
        guard path.utf8.count <= 1024 else { throw .invalidArgument("\(key)= is longer than 1024 bytes") }
        try components(Substring(path), key: key, whole: path)
        if path.split(separator: "/").contains(where: { $0.hasPrefix(".") }) {
            throw .invalidArgument("\(key)= '\(path)' has a component starting with '.'; those names are storagectl's temporary files")
        }
        return path
    }

    private static func components(_ rest: Substring, key: String, whole: String) throws(AgentError) {
        for component in rest.split(separator: "/", omittingEmptySubsequences: false) {
            guard !component.isEmpty else {
                throw .invalidArgument("\(key)= '\(whole)' is not normalised (empty component or trailing '/')")
            }
            guard component != ".", component != ".." else {
                throw .invalidArgument("\(key)= '\(whole)' contains '\(component)'; give the normalised path")
            }
            for b in component.utf8 where !(isAlnum(b) || b == UInt8(ascii: ".") || b == UInt8(ascii: "_")
                                              || b == UInt8(ascii: "+") || b == UInt8(ascii: "~")
                                              || b == UInt8(ascii: "@") || b == UInt8(ascii: "-")) {
                throw .invalidArgument("\(key)= '\(whole)' contains the byte 0x\(String(b, radix: 16)); paths may hold only A-Z a-z 0-9 . _ + ~ @ - and '/'")
            }
        }
    }

    /// A nonce name: `[A-Za-z0-9_-]{1,64}`.
    public static func nonceName(_ name: String, key: String) throws(AgentError) -> String {
        guard !name.isEmpty, name.utf8.count <= 64,
              name.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }) else {
            throw .invalidArgument("\(key)= '\(name)' must be 1-64 of A-Z a-z 0-9 _ -")
        }
        return name
    }

    /// Whether `path` is `root` or lexically below it (`RootedPath.isWithin`, the one
    /// under-root check: a `..` component is never below anything). Opening a file
    /// under a root goes through `RootedPath.open`, which refuses symbolic links.
    public static func isWithin(_ path: String, root: String) -> Bool {
        RootedPath.isWithin(path, root: root)
    }

    /// The name of a domain's directory on the share: the domain name when it is a safe
    /// file name (`[A-Za-z0-9][A-Za-z0-9._+-]*`, at most 128 bytes), else its UUID.
    public static func shareDirectory(domain: String, uuid: String) -> String {
        let safe = !domain.isEmpty && domain.utf8.count <= 128 && isAlnum(domain.utf8.first!)
            && domain.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
                                          || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") }
        return safe ? domain : uuid
    }

    static func isAlnum(_ b: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
    }
}
