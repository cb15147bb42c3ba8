import CLibvirt

/// A libvirt storage pool, owning its `virStoragePoolPtr` (freed in `deinit`; the pool
/// itself is untouched). Keeps its connection alive.
///
/// Blocking and thread-safety: as ``LibvirtConnection``. Starting a `netfs` pool mounts
/// NFS through the daemon and can block for as long as the mount does.
public final class LibvirtStoragePool: @unchecked Sendable {
    let pointer: OpaquePointer
    /// The connection this pool was obtained from.
    public let connection: LibvirtConnection

    init(owning pointer: OpaquePointer, connection: LibvirtConnection) {
        self.pointer = pointer
        self.connection = connection
    }

    deinit {
        virStoragePoolFree(pointer)
    }

    /// The pool's name.
    public var name: String {
        get throws { try borrowString(virStoragePoolGetName(pointer), "virStoragePoolGetName") }
    }

    /// The pool's UUID, lower-case with dashes.
    public var uuidString: String {
        get throws {
            try readFixedString(capacity: VIR_UUID_STRING_BUFLEN, "virStoragePoolGetUUIDString") { virStoragePoolGetUUIDString(pointer, $0) }
        }
    }

    /// Whether the pool is started (for `netfs`: mounted).
    public var isActive: Bool {
        get throws { try check(virStoragePoolIsActive(pointer), "virStoragePoolIsActive") == 1 }
    }

    /// Whether the pool has a persistent definition.
    public var isPersistent: Bool {
        get throws { try check(virStoragePoolIsPersistent(pointer), "virStoragePoolIsPersistent") == 1 }
    }

    /// Whether libvirt starts the pool when the daemon starts.
    public var autostart: Bool {
        get throws {
            var value: Int32 = 0
            try check(virStoragePoolGetAutostart(pointer, &value), "virStoragePoolGetAutostart")
            return value != 0
        }
    }

    /// Sets ``autostart``. Idempotent. Only for persistent pools.
    public func setAutostart(_ enabled: Bool) throws {
        try check(virStoragePoolSetAutostart(pointer, enabled ? 1 : 0), "virStoragePoolSetAutostart")
    }

    /// The pool's XML description; `inactive: true` gives the persistent definition.
    public func xmlDesc(inactive: Bool = false) throws -> String {
        let flags = inactive ? UInt32(VIR_STORAGE_XML_INACTIVE.rawValue) : 0
        return try takeString(virStoragePoolGetXMLDesc(pointer, flags), "virStoragePoolGetXMLDesc")
    }

    /// The `<target><path>` of the pool's XML (the mount point of a `netfs` pool), or nil.
    public var targetPath: String? {
        get throws { Self.targetPath(fromXML: try xmlDesc()) }
    }

    /// The `<target><path>` of libvirt-generated pool XML, entities decoded, or nil.
    public static func targetPath(fromXML xml: String) -> String? {
        PoolXML.targetPath(in: xml)
    }

    /// Prepares the pool's underlying storage (`virStoragePoolBuild`; for `dir`/`netfs`
    /// creates the target directory). `flags` are `virStoragePoolBuildFlags`.
    public func build(flags: UInt32 = 0) throws {
        try check(virStoragePoolBuild(pointer, flags), "virStoragePoolBuild")
    }

    /// Starts the pool (`virStoragePoolCreate`; for `netfs`: mounts the export).
    /// `flags` are `virStoragePoolCreateFlags`.
    public func create(flags: UInt32 = 0) throws {
        try check(virStoragePoolCreate(pointer, flags), "virStoragePoolCreate")
    }

    /// Rescans the pool's volumes. Only for active pools.
    public func refresh() throws {
        try check(virStoragePoolRefresh(pointer, 0), "virStoragePoolRefresh")
    }

    /// Stops the pool (for `netfs`: unmounts); data and definition stay.
    public func destroy() throws {
        try check(virStoragePoolDestroy(pointer), "virStoragePoolDestroy")
    }

    /// Removes the persistent definition of an inactive pool; data stays.
    public func undefine() throws {
        try check(virStoragePoolUndefine(pointer), "virStoragePoolUndefine")
    }

    /// Capacity, allocation and free space, in bytes, and the pool's state.
    public var info: StoragePoolInfo {
        get throws {
            var raw = virStoragePoolInfo()
            try check(virStoragePoolGetInfo(pointer, &raw), "virStoragePoolGetInfo")
            return StoragePoolInfo(state: raw.state, capacity: raw.capacity,
                                   allocation: raw.allocation, available: raw.available)
        }
    }

    // MARK: Volumes

    /// Every volume libvirt knows in this active pool (as of the last refresh).
    public func listVolumes() throws -> [LibvirtStorageVolume] {
        var array: UnsafeMutablePointer<virStorageVolPtr?>?
        let count = try check(virStoragePoolListAllVolumes(pointer, &array, 0), "virStoragePoolListAllVolumes")
        return adoptArray(array, count: count) { LibvirtStorageVolume(owning: $0, pool: self) }
    }

    /// The volume called `name` (a file name for `dir`/`netfs` pools).
    /// - Throws: ``LibvirtError`` with code ``LibvirtError/Code/noStorageVolume`` if none.
    public func lookupVolume(name: String) throws -> LibvirtStorageVolume {
        let volume = try check(virStorageVolLookupByName(pointer, name), "virStorageVolLookupByName(\(name))")
        return LibvirtStorageVolume(owning: volume, pool: self)
    }
}

/// What `virStoragePoolGetInfo` reports. Sizes are bytes.
public struct StoragePoolInfo: Sendable, Hashable {
    /// `virStoragePoolState` (0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible).
    public var state: Int32
    public var capacity: UInt64
    public var allocation: UInt64
    public var available: UInt64
}

/// A libvirt storage volume, owning its `virStorageVolPtr`. Keeps its pool alive.
///
/// Blocking and thread-safety: as ``LibvirtConnection``.
public final class LibvirtStorageVolume: @unchecked Sendable {
    let pointer: OpaquePointer
    /// The pool this volume was obtained from.
    public let pool: LibvirtStoragePool

    init(owning pointer: OpaquePointer, pool: LibvirtStoragePool) {
        self.pointer = pointer
        self.pool = pool
    }

    deinit {
        virStorageVolFree(pointer)
    }

    /// The volume's name within its pool.
    public var name: String {
        get throws { try borrowString(virStorageVolGetName(pointer), "virStorageVolGetName") }
    }

    /// The volume's path on the host (for `dir`/`netfs` pools: the file's path).
    public var path: String {
        get throws { try takeString(virStorageVolGetPath(pointer), "virStorageVolGetPath") }
    }

    /// Type, capacity (virtual size) and allocation (bytes used on disk).
    public var info: StorageVolumeInfo {
        get throws {
            var raw = virStorageVolInfo()
            try check(virStorageVolGetInfo(pointer, &raw), "virStorageVolGetInfo")
            return StorageVolumeInfo(type: raw.type, capacity: raw.capacity, allocation: raw.allocation)
        }
    }
}

/// What `virStorageVolGetInfo` reports. Sizes are bytes.
public struct StorageVolumeInfo: Sendable, Hashable {
    /// `virStorageVolType` (0 file, 1 block, 2 dir, 3 network, 4 netdir, 5 ploop).
    public var type: Int32
    public var capacity: UInt64
    public var allocation: UInt64
}

/// Minimal, dependency-free reading of libvirt-generated pool XML.
enum PoolXML {
    /// The text of the first `<path>` inside the pool's top-level `<target>`. libvirt
    /// writes pool XML in a fixed layout, so a scan is enough; entities are decoded.
    static func targetPath(in xml: String) -> String? {
        // <source> may contain <dir path=...> but never a <target> element; volumes are
        // not part of pool XML.
        guard let target = xml.firstRange(of: "<target>") else { return nil }
        let afterTarget = xml[target.upperBound...]
        guard let targetEnd = afterTarget.firstRange(of: "</target>") else { return nil }
        let body = afterTarget[..<targetEnd.lowerBound]
        guard let open = body.firstRange(of: "<path>") else { return nil }
        let rest = body[open.upperBound...]
        guard let close = rest.firstRange(of: "</path>") else { return nil }
        return decodeEntities(String(rest[..<close.lowerBound]))
    }

    static func decodeEntities(_ text: String) -> String {
        guard text.contains("&") else { return text }
        return text
            .replacing("&lt;", with: "<")
            .replacing("&gt;", with: ">")
            .replacing("&quot;", with: "\"")
            .replacing("&apos;", with: "'")
            .replacing("&amp;", with: "&")
    }
}
