/// Deterministic identifiers derived from an export path.
///
/// Scheme (documented so that other implementations can reproduce it):
/// - hash: 64-bit FNV-1a over the bytes `domain`, `0x00`, the path's UTF-8 bytes, and for
///   attempt k > 0 additionally `0x00` + k in decimal ASCII;
/// - fsid (exports(5) `fsid=N`): domain `storagectl-fsid`, N = 1 + hash % 2147483647, so
///   N is in 1...2^31-1: never 0 (`fsid=0`/`fsid=root` marks the NFSv4 root) and it fits
///   every signed 32-bit consumer;
/// - Export_Id (NFS-Ganesha): domain `storagectl-ganesha-export-id`,
///   id = 1 + hash % 65535, so id is in 1...65535 (0 is Ganesha's pseudo root).
/// Collisions are resolved by taking attempts 0, 1, 2, ... until an unused value is found.
/// An fsid, once written into the file, is read back rather than re-derived, so it never
/// changes for an exported path.
public enum StableID {
    /// The largest fsid storagectl derives.
    public static let maximumFsid: UInt32 = 2_147_483_647

    static func fnv1a64(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    static func hash(domain: String, path: String, attempt: Int) -> UInt64 {
        var bytes = Array(domain.utf8)
        bytes.append(0)
        bytes.append(contentsOf: path.utf8)
        if attempt > 0 {
            bytes.append(0)
            bytes.append(contentsOf: String(attempt).utf8)
        }
        return fnv1a64(bytes)
    }

    /// The fsid candidate number `attempt` for `path` (1...2147483647).
    public static func fsidCandidate(for path: String, attempt: Int = 0) -> UInt32 {
        UInt32(1 + hash(domain: "storagectl-fsid", path: path, attempt: attempt) % UInt64(maximumFsid))
    }

    /// The first fsid candidate for `path` not in `used`.
    public static func fsid(for path: String, avoiding used: Set<UInt32>) -> UInt32 {
        var attempt = 0
        while true {
            let candidate = fsidCandidate(for: path, attempt: attempt)
            if !used.contains(candidate) { return candidate }
            attempt += 1
        }
    }

    /// The Export_Id candidate number `attempt` for `path` (1...65535).
    public static func exportIdCandidate(for path: String, attempt: Int = 0) -> UInt16 {
        UInt16(1 + hash(domain: "storagectl-ganesha-export-id", path: path, attempt: attempt) % 65535)
    }
}
