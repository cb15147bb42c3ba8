import Foundation
import Testing
@testable import ExportsFile

@Suite("etab")
struct EtabTests {
    static let sample = """
        /srv/d1\\040sp\t198.18.0.2(rw,sync,wdelay,hide,nocrossmnt,secure,no_root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,fsid=77,anonuid=65534,anongid=65534,sec=sys,rw,secure,no_root_squash,no_all_squash)
        /srv/d1\\040sp\t198.18.0.3(ro,sync,wdelay,hide,nocrossmnt,secure,root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,fsid=77,anonuid=65534,anongid=65534,sec=sys,ro,secure,root_squash,no_all_squash)
        /srv/d1\\040sp\t*(rw,sync,wdelay,hide,nocrossmnt,secure,root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,anonuid=65534,anongid=65534,sec=sys,rw,secure,root_squash,no_all_squash)
        /srv/d2\t[2001:db8::7](rw,sync,no_root_squash,no_subtree_check,fsid=9)
        garbage line

        """

    @Test("etab lines parse into path, client and options")
    func parse() {
        let (entries, unparsed) = Etab.parse(Self.sample)
        #expect(entries.count == 4)
        #expect(entries[0].path == "/srv/d1 sp")
        #expect(entries[0].client == "198.18.0.2")
        #expect(entries[0].lastOption(among: ["rw", "ro"]) == "rw")
        #expect(entries[0].lastValue(of: "fsid") == "77")
        #expect(entries[2].client == "*")
        #expect(unparsed.map(\.line) == [5])
    }

    @Test("differences between managed exports and etab are reported")
    func discrepancies() throws {
        let (entries, _) = Etab.parse(Self.sample)
        let managed = [
            ManagedExport(path: "/srv/d1 sp", fsid: 77, clients: [
                ManagedClient(address: try ClientAddress("198.18.0.2"), options: .storagectlDefault),
                ManagedClient(address: try ClientAddress("198.18.0.3"), options: .storagectlDefault),
                ManagedClient(address: try ClientAddress("198.18.0.4"), options: .storagectlDefault),
            ]),
            ManagedExport(path: "/srv/d2", fsid: 9, clients: [
                ManagedClient(address: try ClientAddress("2001:db8:0::7"), options: .storagectlDefault),
            ]),
        ]
        let found = Etab.discrepancies(managed: managed, etab: entries)
        #expect(found == [
            .init(path: "/srv/d1 sp", client: "198.18.0.3", kind: .optionMismatch(expected: "rw", actual: "ro")),
            .init(path: "/srv/d1 sp", client: "198.18.0.3", kind: .optionMismatch(expected: "no_root_squash", actual: "root_squash")),
            .init(path: "/srv/d1 sp", client: "198.18.0.4", kind: .missing),
            .init(path: "/srv/d1 sp", client: "*", kind: .unexpectedClient),
        ])
        #expect(found.allSatisfy { !$0.description.isEmpty })
    }

    @Test("a fully live export has no discrepancies")
    func clean() throws {
        let etab = "/srv/x\t198.18.0.2(rw,sync,no_root_squash,no_subtree_check,fsid=5,sec=sys,rw,no_root_squash)\n"
        let managed = [ManagedExport(path: "/srv/x", fsid: 5, clients: [
            ManagedClient(address: try ClientAddress("198.18.0.2"), options: .storagectlDefault),
        ])]
        #expect(Etab.discrepancies(managed: managed, etab: Etab.parse(etab).entries).isEmpty)
        let wrongFsid = etab.replacingOccurrences(of: "fsid=5", with: "fsid=6")
        #expect(Etab.discrepancies(managed: managed, etab: Etab.parse(wrongFsid).entries) == [
            .init(path: "/srv/x", client: "198.18.0.2", kind: .optionMismatch(expected: "fsid=5", actual: "fsid=6")),
        ])
    }
}
