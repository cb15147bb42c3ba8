/// One line of `/proc/self/mountinfo` (proc(5)):
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
public struct MountInfoEntry: Sendable, Equatable {
    /// The root of the mount within its file system (field 4).
    public var root: String
    /// Where it is mounted (field 5).
    public var mountPoint: String
    /// The file system type after the `-` separator; nil on a line without one.
    public var fileSystem: String?

    public init(root: String, mountPoint: String, fileSystem: String?) {
        self.root = root
        self.mountPoint = mountPoint
        self.fileSystem = fileSystem
    }
}

/// The one mountinfo reader of the agents and the migration hook: no dependencies (the
/// hook links it and must start in milliseconds).
public enum MountInfo {
    /// Every line with at least the mount point, in the kernel's order (a later mount on
    /// the same point hides an earlier one); paths with their octal escapes decoded.
    public static func parse(_ text: String) -> [MountInfoEntry] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 4 else { return nil }
            var fileSystem: String?
            if let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 1 < fields.count { fileSystem = String(fields[dash + 1]) }
            return MountInfoEntry(root: unescape(fields[3]), mountPoint: unescape(fields[4]), fileSystem: fileSystem)
        }
    }

    /// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`,
    /// `\134`; an escape whose value does not fit a byte is kept as written.
    public static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
               let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
