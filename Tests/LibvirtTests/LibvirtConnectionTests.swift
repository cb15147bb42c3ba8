import BlockingIO
import Foundation
import Libvirt
import Testing

@Suite("libvirt connection (test driver)")
struct LibvirtConnectionTests {
    @Test("connects to a private test-driver host and reports versions, hostname and URI")
    func connectAndDescribe() throws {
        let host = try TestHost()
        let connection = try host.connect()
        #expect(connection.isAlive)
        let version = try connection.libVersion
        #expect(version.major >= 9)
        #expect(version.description.split(separator: ".").count == 3)
        #expect(version.description.allSatisfy { $0.isNumber || $0 == "." })
        // libvirt's test driver reports the hypervisor version 2 (virsh: "TEST 0.0.2")
        #expect(try connection.hypervisorVersion == LibvirtVersion(major: 0, minor: 0, release: 2))
        #expect(try !connection.hostname.isEmpty)
        #expect(try connection.uri == host.uri)
    }

    @Test("decodes libvirt's packed version numbers")
    func versionDecoding() {
        #expect(LibvirtVersion(packed: 9_000_000).description == "9.0.0")
        #expect(LibvirtVersion(packed: 7_002_013).description == "7.2.13")
        #expect(LibvirtVersion(packed: 9_000_000) > LibvirtVersion(packed: 8_999_999))
    }

    @Test("an unknown URI scheme throws libvirt's own error")
    func badURI() {
        #expect {
            _ = try LibvirtConnection(uri: "nosuchdriver:///system")
        } throws: { error in
            guard let error = error as? LibvirtError else { return false }
            return !error.message.isEmpty && error.code != .ok
        }
    }
}

@Suite("libvirt domains (test driver)")
struct LibvirtDomainTests {
    @Test("looks up a shut-off domain and reads its name, UUID, state and flags")
    func lookupShutoff() throws {
        let host = try TestHost()
        let connection = try host.connect()
        let domain = try connection.lookupDomain(name: "wanderer1")
        #expect(try domain.name == "wanderer1")
        #expect(try domain.uuidString == "6695eb01-f6a4-8304-79aa-97f2502e193f")
        #expect(try domain.state == .shutoff)
        #expect(try domain.state.description == "shut off")
        #expect(try !domain.isActive)
        #expect(try domain.isPersistent)
        let byUUID = try connection.lookupDomain(uuidString: "6695EB01-F6A4-8304-79AA-97F2502E193F")
        #expect(try byUUID.name == "wanderer1")
    }

    @Test("a domain from the host file without runstate is running")
    func running() throws {
        let connection = try TestHost().connect()
        let domain = try connection.lookupDomain(name: "runner")
        #expect(try domain.state == .running)
        #expect(try domain.isActive)
    }

    @Test("the XML description contains the disk, live and inactive, with the secure flag")
    func xmlDescription() throws {
        let connection = try TestHost().connect()
        let domain = try connection.lookupDomain(name: "wanderer1")
        let live = try domain.xmlDesc()
        #expect(live.contains("/var/lib/libvirt/images/wanderer1.qcow2"))
        let inactive = try domain.xmlDesc(flags: [.inactive, .secure])
        #expect(inactive.contains("<source file='/var/lib/libvirt/images/wanderer1.qcow2'/>"))
        #expect(inactive.contains("<name>wanderer1</name>"))
    }

    @Test("lists every domain of the host")
    func listAll() throws {
        let connection = try TestHost().connect()
        let names = try connection.listAllDomains().map { try $0.name }.sorted()
        #expect(names == ["runner", "wanderer1"])
    }

    @Test("defines, starts, destroys and undefines a new domain")
    func lifecycle() throws {
        let connection = try TestHost().connect()
        let xml = TestHost.domainXML(name: "newcomer", uuid: "0f0e0d0c-0b0a-0908-0706-050403020100",
                                     disk: "/shared/newcomer.qcow2", shutoff: false)
        let domain = try connection.defineXML(xml)
        #expect(try domain.name == "newcomer")
        #expect(try domain.state == .shutoff)
        #expect(try domain.isPersistent)
        try domain.create()
        #expect(try domain.state == .running)
        #expect(throws: LibvirtError.self) { try domain.create() }
        try domain.destroy()
        #expect(try domain.state == .shutoff)
        try domain.undefine()
        #expect(try connection.listAllDomains().map { try $0.name }.sorted() == ["runner", "wanderer1"])
    }

    @Test("a missing domain throws LibvirtError with libvirt's message and prints nothing")
    func missingDomain() throws {
        let connection = try TestHost().connect()
        let (outcome, stderrText) = capturingStandardError {
            Result { try connection.lookupDomain(name: "ghost") }
        }
        guard case .failure(let error as LibvirtError) = outcome else {
            Issue.record("expected a LibvirtError, got \(outcome)")
            return
        }
        #expect(error.code == .noDomain)
        #expect(error.message.contains("Domain not found"))
        #expect(!stderrText.contains("Domain not found"))
        #expect(!stderrText.contains("libvirt:"))
    }

    @Test("hosts are isolated: a domain defined on one is absent on the other")
    func isolation() throws {
        let a = try TestHost(name: "source").connect()
        let b = try TestHost(name: "dest").connect()
        _ = try a.defineXML(TestHost.domainXML(name: "only-on-a", uuid: "11111111-2222-3333-4444-555555555555",
                                               disk: "/x.qcow2", shutoff: false))
        #expect(try a.lookupDomain(name: "only-on-a").isPersistent)
        #expect(throws: LibvirtError.self) { try b.lookupDomain(name: "only-on-a") }
    }
}

@Suite("libvirt storage pools (test driver)")
struct LibvirtStoragePoolTests {
    @Test("a netfs pool round-trips define, build, create, autostart and XML")
    func netfsRoundTrip() throws {
        let connection = try TestHost().connect()
        let xml = TestHost.netfsPoolXML(name: "shared-images", server: "cargo-bay",
                                        export: "/var/lib/libvirt/shared-images",
                                        target: "/var/lib/libvirt/shared-images")
        let pool = try connection.definePoolXML(xml)
        #expect(try pool.name == "shared-images")
        #expect(try !pool.isActive)
        #expect(try pool.isPersistent)
        #expect(try !pool.autostart)
        try pool.build()
        try pool.create()
        #expect(try pool.isActive)
        try pool.setAutostart(true)
        #expect(try pool.autostart)
        try pool.setAutostart(true)  // idempotent
        let desc = try pool.xmlDesc()
        #expect(desc.contains("<pool type='netfs'>"))
        #expect(desc.contains("<host name='cargo-bay'/>"))
        #expect(desc.contains("<dir path='/var/lib/libvirt/shared-images'/>"))
        #expect(desc.contains("<format type='nfs'/>"))
        #expect(try pool.targetPath == "/var/lib/libvirt/shared-images")
        // The test driver rejects VIR_STORAGE_XML_INACTIVE ("unsupported flags"), so
        // xmlDesc(inactive: true) is exercised against real libvirtd in the lab only.
        try pool.refresh()
        _ = try pool.info
        #expect(try pool.listVolumes().isEmpty)

        let found = try connection.lookupStoragePool(targetPath: "/var/lib/libvirt/shared-images/")
        #expect(try found?.name == "shared-images")
        #expect(try connection.lookupStoragePool(targetPath: "/nowhere") == nil)
        #expect(try connection.lookupStoragePool(name: "shared-images").uuidString == pool.uuidString)

        try pool.destroy()
        #expect(try !pool.isActive)
        try pool.undefine()
        #expect(throws: LibvirtError.self) { try connection.lookupStoragePool(name: "shared-images") }
    }

    @Test("lists pools, reads pool info and the volumes of the host file")
    func poolsAndVolumes() throws {
        let connection = try TestHost().connect()
        let pools = try connection.listAllStoragePools()
        #expect(try pools.map { try $0.name } == ["default"])
        let pool = try connection.lookupStoragePool(name: "default")
        #expect(try pool.isActive)
        let info = try pool.info
        #expect(info.capacity == 107_374_182_400)
        let volumes = try pool.listVolumes()
        #expect(try volumes.map { try $0.name } == ["wanderer1.qcow2"])
        let volume = try pool.lookupVolume(name: "wanderer1.qcow2")
        #expect(try volume.path == "/var/lib/libvirt/images/wanderer1.qcow2")
        #expect(try volume.info.capacity == 10_737_418_240)
        #expect {
            _ = try pool.lookupVolume(name: "missing.qcow2")
        } throws: { error in
            (error as? LibvirtError)?.code == .noStorageVolume
        }
        #expect {
            _ = try connection.lookupStoragePool(name: "missing")
        } throws: { error in
            (error as? LibvirtError)?.code == .noStoragePool
        }
    }

    @Test("reads the target path out of pool XML, decoding entities")
    func targetPathParsing() {
        let xml = "<pool type='dir'><source><dir path='/x'/></source><target><path>/a&amp;b</path></target></pool>"
        #expect(LibvirtStoragePool.targetPath(fromXML: xml) == "/a&b")
        #expect(LibvirtStoragePool.targetPath(fromXML: "<pool/>") == nil)
    }
}

@Suite("libvirt from async code")
struct LibvirtAsyncTests {
    @Test("connections are used from async code through a BlockingExecutor")
    func throughExecutor() async throws {
        let host = try TestHost()
        let uri = host.uri
        let executor = BlockingExecutor(name: "libvirt-test", threadCount: 2)
        defer { executor.shutdown() }
        let connection = try await executor.run { try LibvirtConnection(uri: uri) }
        let states = try await withThrowingTaskGroup(of: (String, DomainState).self) { group in
            for name in ["wanderer1", "runner"] {
                group.addTask {
                    try await executor.run { (name, try connection.lookupDomain(name: name).state) }
                }
            }
            var states: [String: DomainState] = [:]
            for try await (name, state) in group { states[name] = state }
            return states
        }
        #expect(states == ["wanderer1": .shutoff, "runner": .running])
        await #expect(throws: LibvirtError.self) {
            try await executor.run { _ = try connection.lookupDomain(name: "ghost") }
        }
    }
}
