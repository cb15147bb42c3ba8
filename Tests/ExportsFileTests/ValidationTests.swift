import Testing
@testable import ExportsFile

@Suite("validation")
struct ValidationTests {
    static let hostilePaths: [(String, ExportsError)] = [
        ("", .pathEmpty),
        ("relative/dir", .pathNotAbsolute(path: "relative/dir")),
        ("/var/lib/libvirt/shared-images/../../../etc", .pathHasDotDot(path: "/var/lib/libvirt/shared-images/../../../etc")),
        ("/var/lib/libvirt/shared-images//w1", .pathNotNormalized(path: "/var/lib/libvirt/shared-images//w1", normalized: "/var/lib/libvirt/shared-images/w1")),
        ("/var/lib/libvirt/shared-images/w1/", .pathNotNormalized(path: "/var/lib/libvirt/shared-images/w1/", normalized: "/var/lib/libvirt/shared-images/w1")),
        ("/var/lib/libvirt/shared-images/./w1", .pathNotNormalized(path: "/var/lib/libvirt/shared-images/./w1", normalized: "/var/lib/libvirt/shared-images/w1")),
        ("/var/lib/libvirt/shared-images/my share", .pathHasWhitespace(path: "/var/lib/libvirt/shared-images/my share")),
        ("/var/lib/libvirt/shared-images/a\tb", .pathHasControlCharacter(path: "/var/lib/libvirt/shared-images/a\tb")),
        ("/var/lib/libvirt/shared-images/a\nb", .pathHasControlCharacter(path: "/var/lib/libvirt/shared-images/a\nb")),
        ("/var/lib/libvirt/shared-images/a\u{0}b", .pathHasControlCharacter(path: "/var/lib/libvirt/shared-images/a\u{0}b")),
        ("/var/lib/libvirt/shared-images/a\u{00A0}b", .pathHasWhitespace(path: "/var/lib/libvirt/shared-images/a\u{00A0}b")),
        ("/var/lib/libvirt/shared-images/a\"b", .pathHasForbiddenCharacter(path: "/var/lib/libvirt/shared-images/a\"b", character: "\"")),
        ("/var/lib/libvirt/shared-images/a'b", .pathHasForbiddenCharacter(path: "/var/lib/libvirt/shared-images/a'b", character: "'")),
        ("/var/lib/libvirt/shared-images/a\\040b", .pathHasForbiddenCharacter(path: "/var/lib/libvirt/shared-images/a\\040b", character: "\\")),
        ("/var/lib/libvirt/shared-images/a#b", .pathHasForbiddenCharacter(path: "/var/lib/libvirt/shared-images/a#b", character: "#")),
        ("/etc", .pathOutsideExportRoot(path: "/etc", root: "/var/lib/libvirt/shared-images")),
        ("/var/lib/libvirt/shared-images-evil", .pathOutsideExportRoot(path: "/var/lib/libvirt/shared-images-evil", root: "/var/lib/libvirt/shared-images")),
        ("/var/lib/libvirt", .pathOutsideExportRoot(path: "/var/lib/libvirt", root: "/var/lib/libvirt/shared-images")),
        ("/", .pathOutsideExportRoot(path: "/", root: "/var/lib/libvirt/shared-images")),
    ]

    @Test("hostile export paths are refused with a specific error", arguments: hostilePaths)
    func hostilePath(path: String, expected: ExportsError) {
        #expect(throws: expected) { try testPolicy.validatedPath(path) }
        #expect(throws: expected) { try ExportsFile(parsing: "").export(path: path, clients: ["198.18.0.2"], policy: testPolicy) }
        #expect(expected.code == "invalid-argument")
    }

    @Test("an overlong path is refused")
    func longPath() {
        let path = ourRoot + "/" + String(repeating: "a", count: 1100)
        #expect {
            try testPolicy.validatedPath(path)
        } throws: { error in
            guard case ExportsError.pathTooLong(_, let length, let limit) = error else { return false }
            return length == path.utf8.count && limit == 1024
        }
    }

    @Test("the export root itself and directories below it are accepted")
    func acceptedPaths() throws {
        #expect(try testPolicy.validatedPath(ourRoot) == ourRoot)
        #expect(try testPolicy.validatedPath(ourRoot + "/w1/disks") == ourRoot + "/w1/disks")
    }

    static let hostileClients: [(String, ExportsError)] = [
        ("", .clientEmpty),
        ("*", .clientWildcard(client: "*")),
        ("*.example.com", .clientWildcard(client: "*.example.com")),
        ("host?", .clientWildcard(client: "host?")),
        ("@ng", .clientNetgroup(client: "@ng")),
        ("198.18.0.0/24", .clientSubnet(client: "198.18.0.0/24")),
        ("2001:db8::/64", .clientSubnet(client: "2001:db8::/64")),
        ("host(rw)", .clientHasOptions(client: "host(rw)")),
        ("(rw)", .clientHasOptions(client: "(rw)")),
        ("source example", .clientInvalid(client: "source example", reason: "it contains whitespace, control or non-ASCII characters")),
        ("a\nb", .clientInvalid(client: "a\nb", reason: "it contains whitespace, control or non-ASCII characters")),
        ("a\u{0}b", .clientInvalid(client: "a\u{0}b", reason: "it contains whitespace, control or non-ASCII characters")),
        ("\"host\"", .clientInvalid(client: "\"host\"", reason: "labels may contain only letters, digits and hyphens")),
        ("-bad.example", .clientInvalid(client: "-bad.example", reason: "a label starts or ends with a hyphen")),
        ("198.18.0.256", .clientInvalid(client: "198.18.0.256", reason: "it looks like an IPv4 address but is not a valid one")),
        ("198.018.0.2", .clientInvalid(client: "198.018.0.2", reason: "it looks like an IPv4 address but is not a valid one")),
        ("fe80::1%eth0", .clientInvalid(client: "fe80::1%eth0", reason: "IPv6 zone identifiers are not supported")),
        ("1::2::3", .clientInvalid(client: "1::2::3", reason: "it is not a valid IPv6 address")),
        ("[2001:db8::7]", .clientInvalid(client: "[2001:db8::7]", reason: "write IPv6 addresses without brackets")),
        ("evil-host", .clientNotInInventory(client: "evil-host", allowed: ["198.18.0.2", "198.18.0.3", "2001:db8::7", "dest-example", "source-example"])),
        ("198.18.0.9", .clientNotInInventory(client: "198.18.0.9", allowed: ["198.18.0.2", "198.18.0.3", "2001:db8::7", "dest-example", "source-example"])),
    ]

    @Test("hostile clients are refused with a specific error", arguments: hostileClients)
    func hostileClient(client: String, expected: ExportsError) {
        #expect(throws: expected) { try testPolicy.validatedClient(client) }
        #expect(throws: expected) { try ExportsFile(parsing: "").export(path: ourRoot + "/w1", clients: [client], policy: testPolicy) }
        #expect(!expected.description.isEmpty)
    }

    @Test("no clients at all is refused")
    func noClients() {
        #expect(throws: ExportsError.noClients) { try ExportsFile(parsing: "").export(path: ourRoot, clients: [], policy: testPolicy) }
    }

    @Test("clients are normalised: case, IPv6 canonical form")
    func normalisation() throws {
        #expect(try ClientAddress("Source-Example").value == "source-example")
        #expect(try ClientAddress("2001:0DB8:0000:0000:0000:0000:0000:0007").value == "2001:db8::7")
        #expect(try ClientAddress("::ffff:198.18.0.2").value == "::ffff:c612:2")
        #expect(try ClientAddress("1:0:0:1:0:0:0:1").value == "1:0:0:1::1")
        #expect(try testPolicy.validatedClient("SOURCE-example").value == "source-example")
    }

    static let badOptions: [([String], ExportsError)] = [
        (["rw", "insecure"], .optionNotAllowed(option: "insecure")),
        (["rw", "all_squash"], .optionNotAllowed(option: "all_squash")),
        (["crossmnt"], .optionNotAllowed(option: "crossmnt")),
        (["fsid=0"], .optionInvalidValue(option: "fsid=0", reason: "fsid must be a number in 1...2147483647; 0, root and UUIDs are not used")),
        (["fsid=root"], .optionInvalidValue(option: "fsid=root", reason: "fsid must be a number in 1...2147483647; 0, root and UUIDs are not used")),
        (["fsid=2147483648"], .optionInvalidValue(option: "fsid=2147483648", reason: "fsid must be a number in 1...2147483647; 0, root and UUIDs are not used")),
        (["rw", "ro"], .optionsContradictory("rw", "ro")),
        (["root_squash", "no_root_squash"], .optionsContradictory("root_squash", "no_root_squash")),
    ]

    @Test("options outside the allow-list are refused", arguments: badOptions)
    func options(options: [String], expected: ExportsError) {
        #expect(throws: expected) { try ExportOptions.parse(options) }
    }

    @Test("allowed options parse back to what storagectl renders")
    func optionRoundTrip() throws {
        let options = ExportOptions(access: .readOnly, rootSquash: true)
        let parsed = try ExportOptions.parse(options.rendered(fsid: 42))
        #expect(parsed.options == options && parsed.fsid == 42)
        #expect(ExportOptions.storagectlDefault.rendered(fsid: 7) == ["rw", "sync", "no_subtree_check", "no_root_squash", "fsid=7"])
    }

    @Test("an invalid export root or inventory is refused")
    func policy() {
        #expect(throws: ExportsError.self) { try ExportPolicy(exportRoot: "/", allowedClients: []) }
        #expect(throws: ExportsError.self) { try ExportPolicy(exportRoot: "/srv/../etc", allowedClients: []) }
        #expect(throws: ExportsError.clientWildcard(client: "*")) { try ExportPolicy(exportRoot: "/srv", allowedClients: ["*"]) }
    }

    @Test("unexport checks shape only, so hosts that left the inventory can be removed")
    func unexportShape() throws {
        #expect(throws: ExportsError.clientNetgroup(client: "@ng")) { try ExportsFile(parsing: "").unexport(path: ourRoot, client: "@ng") }
        #expect(throws: ExportsError.pathHasDotDot(path: "/a/../b")) { try ExportsFile(parsing: "").unexport(path: "/a/../b") }
        let text = "\(ManagedBlockMarkers.beginMarker)\n/old/root/w 198.18.0.99(rw,sync,no_subtree_check,no_root_squash,fsid=9)\n\(ManagedBlockMarkers.endMarker)\n"
        let edit = try ExportsFile(parsing: text).unexport(path: "/old/root/w", client: "198.18.0.99")
        #expect(edit.file.text.isEmpty)
    }
}
