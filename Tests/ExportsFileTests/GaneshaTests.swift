import Testing
@testable import ExportsFile

@Suite("NFS-Ganesha rendering")
struct GaneshaTests {
    private func export(_ path: String, fsid: UInt32, _ clients: [(String, ExportOptions)]) throws -> ManagedExport {
        ManagedExport(path: path, fsid: fsid, clients: try clients.map { ManagedClient(address: try ClientAddress($0.0), options: $0.1) })
    }

    @Test("managed exports render as EXPORT blocks with one CLIENT block per option set")
    func render() throws {
        let path = ourRoot + "/w1"
        let exports = [try export(path, fsid: 4242, [
            ("198.18.0.3", .storagectlDefault), ("198.18.0.2", .storagectlDefault),
            ("dest-example", ExportOptions(access: .readOnly, rootSquash: true)),
        ])]
        let id = StableID.exportIdCandidate(for: path)
        let text = try GaneshaExports.render(exports, pseudoPath: { "/shared-images" + $0.dropFirst(ourRoot.count) })
        #expect(text == """
            \(GaneshaExports.header)
            EXPORT {
            \tExport_Id = \(id);
            \tPath = "\(path)";
            \tPseudo = "/shared-images/w1";
            \tFilesystem_Id = 4242.0;
            \tProtocols = 3, 4;
            \tTransports = TCP;
            \tSecType = sys;
            \tAccess_Type = None;
            \tSquash = Root_Squash;
            \tCLIENT {
            \t\tClients = 198.18.0.2, 198.18.0.3;
            \t\tAccess_Type = RW;
            \t\tSquash = No_Root_Squash;
            \t}
            \tCLIENT {
            \t\tClients = dest-example;
            \t\tAccess_Type = RO;
            \t\tSquash = Root_Squash;
            \t}
            \tFSAL {
            \t\tName = VFS;
            \t}
            }

            """)
        #expect(GaneshaExports.exportIds(in: text) == [path: id])
    }

    @Test("the default pseudo path is the export path")
    func defaultPseudo() throws {
        let text = try GaneshaExports.render([try export(ourRoot, fsid: 1, [("198.18.0.2", .storagectlDefault)])])
        #expect(text.contains("\tPseudo = \"\(ourRoot)\";\n"))
    }

    @Test("an unsafe pseudo path is refused")
    func badPseudo() throws {
        let exports = [try export(ourRoot, fsid: 1, [("198.18.0.2", .storagectlDefault)])]
        #expect(throws: ExportsError.invalidPseudoPath(path: ourRoot, pseudo: "/x\"; Access_Type = RW; #")) {
            try GaneshaExports.render(exports, pseudoPath: { _ in "/x\"; Access_Type = RW; #" })
        }
    }

    @Test("Export_Id is stable, in 1...65535, and collisions resolve deterministically")
    func exportIds() throws {
        let paths = (0..<3000).map { "/srv/p\($0)" }
        let ids = try GaneshaExports.assignExportIds(paths: paths)
        #expect(Set(ids.values).count == paths.count)
        #expect(ids.values.allSatisfy { $0 >= 1 })
        #expect(try GaneshaExports.assignExportIds(paths: paths.reversed()) == ids)
        // A reserved or pinned id pushes a path to its next candidate.
        let first = StableID.exportIdCandidate(for: "/srv/a")
        let moved = try GaneshaExports.assignExportIds(paths: ["/srv/a"], reserved: [first])
        #expect(moved["/srv/a"] == StableID.exportIdCandidate(for: "/srv/a", attempt: 1))
        let pinned = try GaneshaExports.assignExportIds(paths: ["/srv/a", "/srv/b"], pinned: ["/srv/b": first])
        #expect(pinned["/srv/b"] == first)
        #expect(pinned["/srv/a"] != first)
    }

    @Test("a file read from the managed block renders without losing clients")
    func fromFile() throws {
        let file = ExportsFile(parsing: try Corpus.bytes("10-managed-block.exports"))
        let text = try GaneshaExports.render(try file.managedExports())
        #expect(text.contains("Clients = 198.18.0.2, 198.18.0.3;"))
        #expect(text.contains("Filesystem_Id = 123456.0;"))
    }
}

@Suite("NFS-Ganesha rendering: FSAL CEPH (a gateway of a CephFS cluster)")
struct GaneshaCephTests {
    @Test("the FSAL block names the CephFS and the Ceph user; Export_Id and Path are the VFS rendering's, so every gateway writes the same")
    func cephBlock() throws {
        let path = ourRoot + "/w1"
        let exports = [ManagedExport(path: path, fsid: 7, clients: [ManagedClient(address: try ClientAddress("198.18.0.2"), options: .storagectlDefault)])]
        let vfs = try GaneshaExports.render(exports)
        let ceph = try GaneshaExports.render(exports, fsal: .ceph(filesystem: "cephfs", user: "ganesha"))
        #expect(ceph.contains("\tFSAL {\n\t\tName = CEPH;\n\t\tFilesystem = \"cephfs\";\n\t\tUser_Id = \"ganesha\";\n\t}\n"))
        #expect(!ceph.contains("VFS"))
        #expect(GaneshaExports.exportIds(in: ceph) == GaneshaExports.exportIds(in: vfs))
        #expect(ceph.replacingOccurrences(of: "\t\tName = CEPH;\n\t\tFilesystem = \"cephfs\";\n\t\tUser_Id = \"ganesha\";\n", with: "\t\tName = VFS;\n") == vfs)
    }

    @Test("a CephFS or user name that could break out of its quotes is refused before anything is written")
    func badNames() throws {
        let exports = [ManagedExport(path: ourRoot, fsid: 1, clients: [ManagedClient(address: try ClientAddress("198.18.0.2"), options: .storagectlDefault)])]
        for (fs, user) in [("cephfs\"; Access_Type = RW; #", "ganesha"), ("cephfs", "a b"), ("", "ganesha"), ("cephfs", "-x"),
                           ("cephfs", String(repeating: "u", count: 65))] {
            #expect(throws: ExportsError.invalidCephName(filesystem: fs, user: user)) {
                try GaneshaExports.render(exports, fsal: .ceph(filesystem: fs, user: user))
            }
        }
        #expect(GaneshaExports.FSAL.isCephName("cephfs_a-1.b"))
    }

    @Test("a parked export keeps its block and id, grants nothing, and gets its clients back under the same id")
    func parked() throws {
        let root = ourRoot
        let exports = [ManagedExport(path: root, fsid: 7, clients: [ManagedClient(address: try ClientAddress("198.18.0.2"), options: .storagectlDefault)])]
        let fsal = GaneshaExports.FSAL.ceph(filesystem: "cephfs", user: "ganesha")
        let live = try GaneshaExports.render(exports, fsal: fsal)
        let ids = GaneshaExports.exportIds(in: live)
        let parked = try GaneshaExports.render([], pinned: ids, fsal: fsal, parked: ids,
                                               parkedFilesystemIds: GaneshaExports.filesystemIds(in: live))
        #expect(GaneshaExports.exportIds(in: parked) == ids)
        // ganesha refuses an export update that changes Filesystem_Id: the parked block keeps it
        #expect(GaneshaExports.filesystemIds(in: live) == [root: "7.0"] && GaneshaExports.filesystemIds(in: parked) == [root: "7.0"])
        #expect(!parked.contains("CLIENT") && parked.contains("Access_Type = None;") && parked.contains("Name = CEPH;"))
        // exported again: the same block as before, the parked one gone
        let again = try GaneshaExports.render(exports, pinned: GaneshaExports.exportIds(in: parked), fsal: fsal,
                                              parked: GaneshaExports.exportIds(in: parked),
                                              parkedFilesystemIds: GaneshaExports.filesystemIds(in: parked))
        #expect(again == live)
        // a parked id is not given to another path
        let other = ManagedExport(path: root + "/x", fsid: 8, clients: exports[0].clients)
        let both = try GaneshaExports.render([other], pinned: [:], fsal: fsal, parked: [root + "/x": 5, root: ids[root]!])
        #expect(GaneshaExports.exportIds(in: both)[root] == ids[root] && GaneshaExports.exportIds(in: both)[root + "/x"] != ids[root])
    }
}
