import CLibvirt

/// A connection to a libvirt driver (`qemu:///system`, `qemu+tcp://host/system`,
/// `test:///path/host.xml`, ...), owning its `virConnectPtr` (closed in `deinit`).
///
/// Blocking: every method makes a synchronous libvirt call that may block on the network
/// or the daemon for seconds. From async code, run them off Swift's cooperative thread
/// pool, e.g. with `BlockingExecutor.run` from the `BlockingIO` module.
///
/// Thread-safety: libvirt connections and the objects obtained from them may be used
/// from several threads at once (libvirt locks internally), hence `@unchecked Sendable`.
/// Errors are copied from libvirt's thread-local last error on the calling thread, right
/// after the failing call.
public final class LibvirtConnection: @unchecked Sendable {
    let pointer: OpaquePointer

    /// Opens a read-write (or read-only) connection to `uri`.
    /// - Throws: ``LibvirtError`` with libvirt's message (e.g. no such driver, daemon not
    ///   running, authentication required).
    public init(uri: String, readOnly: Bool = false) throws {
        try LibvirtLibrary.ensureInitialized()
        let opened = readOnly ? virConnectOpenReadOnly(uri) : virConnectOpen(uri)
        self.pointer = try check(opened, "virConnectOpen(\(uri))")
    }

    deinit {
        virConnectClose(pointer)
    }

    // MARK: Host

    /// The version of the libvirt library in use (this process's libvirt), e.g. 9.0.0.
    public var libVersion: LibvirtVersion {
        get throws {
            var packed: UInt = 0
            try check(virConnectGetLibVersion(pointer, &packed), "virConnectGetLibVersion")
            return LibvirtVersion(packed: packed)
        }
    }

    /// The version of the hypervisor behind the driver (QEMU's version for `qemu://`).
    public var hypervisorVersion: LibvirtVersion {
        get throws {
            var packed: UInt = 0
            try check(virConnectGetVersion(pointer, &packed), "virConnectGetVersion")
            return LibvirtVersion(packed: packed)
        }
    }

    /// The hypervisor host's name as libvirt reports it.
    public var hostname: String {
        get throws { try takeString(virConnectGetHostname(pointer), "virConnectGetHostname") }
    }

    /// The canonical URI of this connection.
    public var uri: String {
        get throws { try takeString(virConnectGetURI(pointer), "virConnectGetURI") }
    }

    /// Whether the connection is still usable (false once a remote daemon went away).
    public var isAlive: Bool {
        virConnectIsAlive(pointer) == 1
    }

    // MARK: Domains

    /// The domain called `name`.
    /// - Throws: ``LibvirtError`` with code ``LibvirtError/Code/noDomain`` if none.
    public func lookupDomain(name: String) throws -> LibvirtDomain {
        let domain = try check(virDomainLookupByName(pointer, name), "virDomainLookupByName(\(name))")
        return LibvirtDomain(owning: domain, connection: self)
    }

    /// The domain with this UUID (any case, with dashes).
    public func lookupDomain(uuidString: String) throws -> LibvirtDomain {
        let domain = try check(virDomainLookupByUUIDString(pointer, uuidString),
                               "virDomainLookupByUUIDString(\(uuidString))")
        return LibvirtDomain(owning: domain, connection: self)
    }

    /// Every domain, active and inactive (persistent), in libvirt's order.
    /// `flags` are `virConnectListAllDomainsFlags` (0 = all).
    public func listAllDomains(flags: UInt32 = 0) throws -> [LibvirtDomain] {
        var array: UnsafeMutablePointer<virDomainPtr?>?
        let count = try check(virConnectListAllDomains(pointer, &array, flags), "virConnectListAllDomains")
        return adoptArray(array, count: count) { LibvirtDomain(owning: $0, connection: self) }
    }

    /// Defines (or redefines, matched by name and UUID) a persistent domain from XML.
    /// Does not start it. Idempotent for identical XML.
    public func defineXML(_ xml: String) throws -> LibvirtDomain {
        let domain = try check(virDomainDefineXML(pointer, xml), "virDomainDefineXML")
        return LibvirtDomain(owning: domain, connection: self)
    }

    // MARK: Storage pools

    /// Every storage pool, active and inactive. `flags` are
    /// `virConnectListAllStoragePoolsFlags` (0 = all).
    public func listAllStoragePools(flags: UInt32 = 0) throws -> [LibvirtStoragePool] {
        var array: UnsafeMutablePointer<virStoragePoolPtr?>?
        let count = try check(virConnectListAllStoragePools(pointer, &array, flags),
                              "virConnectListAllStoragePools")
        return adoptArray(array, count: count) { LibvirtStoragePool(owning: $0, connection: self) }
    }

    /// The pool called `name`.
    /// - Throws: ``LibvirtError`` with code ``LibvirtError/Code/noStoragePool`` if none.
    public func lookupStoragePool(name: String) throws -> LibvirtStoragePool {
        let pool = try check(virStoragePoolLookupByName(pointer, name), "virStoragePoolLookupByName(\(name))")
        return LibvirtStoragePool(owning: pool, connection: self)
    }

    /// The first pool (in libvirt's order) whose `<target><path>` equals `targetPath`
    /// (trailing slashes ignored), or nil. Reads every pool's XML: O(pools) calls.
    public func lookupStoragePool(targetPath: String) throws -> LibvirtStoragePool? {
        let wanted = normalizedPath(targetPath)
        for pool in try listAllStoragePools() {
            if let path = try pool.targetPath, normalizedPath(path) == wanted {
                return pool
            }
        }
        return nil
    }

    /// Defines a persistent, inactive pool from XML. Does not build or start it.
    /// `flags` are `virStoragePoolDefineFlags` (0 = none).
    public func definePoolXML(_ xml: String, flags: UInt32 = 0) throws -> LibvirtStoragePool {
        let pool = try check(virStoragePoolDefineXML(pointer, xml, flags), "virStoragePoolDefineXML")
        return LibvirtStoragePool(owning: pool, connection: self)
    }
}

/// Wraps each element of an array returned by a virConnectListAll* call (taking over
/// its reference), then frees the array itself.
func adoptArray<Element>(
    _ array: UnsafeMutablePointer<OpaquePointer?>?,
    count: Int32,
    _ wrap: (OpaquePointer) -> Element
) -> [Element] {
    guard let array else { return [] }
    defer { clibvirt_free_array(array) }
    var result: [Element] = []
    result.reserveCapacity(Int(count))
    for index in 0..<Int(count) {
        if let element = array[index] {
            result.append(wrap(element))
        }
    }
    return result
}

func normalizedPath(_ path: String) -> String {
    var path = path
    while path.count > 1 && path.hasSuffix("/") {
        path.removeLast()
    }
    return path
}
