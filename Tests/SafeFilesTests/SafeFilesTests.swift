import Foundation
import Testing
@testable import SafeFiles
#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under the system temp dir, removed by `remove()`.
private struct Scratch {
    let path: String
    init() throws {
        var template = Array((NSTemporaryDirectory() + "/safefiles.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw FileError.system(operation: "mkdtemp", path: "", errno: errno) }
        path = String(cString: made)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
    func read(_ name: String) -> String? { try? String(contentsOfFile: path + "/" + name, encoding: .utf8) }
    func write(_ name: String, _ text: String) throws { try text.write(toFile: path + "/" + name, atomically: false, encoding: .utf8) }
}

private struct Interrupted: Error {}

@Suite("AtomicFile: durable atomic replacement")
struct AtomicFileTests {
    @Test("a write replaces the file, keeps its mode, and leaves no temporary name")
    func replaces() throws {
        let s = try Scratch()
        defer { s.remove() }
        try s.write("f", "old")
        chmod(s.path + "/f", 0o640)
        try AtomicFile.write(Array("new".utf8), to: s.path + "/f")
        #expect(s.read("f") == "new")
        var st = stat()
        #expect(stat(s.path + "/f", &st) == 0 && st.st_mode & 0o7777 == 0o640)
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.path) == ["f"])
    }

    @Test("a new file gets exactly the mode asked for, whatever the umask")
    func newMode() throws {
        let s = try Scratch()
        defer { s.remove() }
        let old = umask(0o077)
        defer { umask(old) }
        try AtomicFile.write(Array("x".utf8), to: s.path + "/n", mode: 0o644)
        var st = stat()
        #expect(stat(s.path + "/n", &st) == 0 && st.st_mode & 0o7777 == 0o644)
    }

    @Test("a write interrupted before the rename leaves the old file and no temporary file")
    func interrupted() throws {
        let s = try Scratch()
        defer { s.remove() }
        try s.write("f", "old")
        #expect(throws: FileError.self) {
            try AtomicFile.write(Array("new".utf8), to: s.path + "/f", mode: 0o644, temporaryName: nil,
                                 beforeRename: { () throws(FileError) in throw .system(operation: "test", path: "", errno: EINTR) })
        }
        #expect(s.read("f") == "old")
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.path) == ["f"])
    }

    @Test("a leftover temporary file of a crashed write is replaced; the old file was intact meanwhile")
    func leftover() throws {
        let s = try Scratch()
        defer { s.remove() }
        try s.write("f", "old")
        try s.write(".f.storagectl-tmp", "half-writ")
        #expect(s.read("f") == "old")
        try AtomicFile.write(Array("new".utf8), to: s.path + "/f")
        #expect(s.read("f") == "new")
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.path) == ["f"])
    }

    @Test("a symbolic link or a directory at the final name is refused and left alone")
    func notRegular() throws {
        let s = try Scratch()
        defer { s.remove() }
        try s.write("target", "keep")
        symlink(s.path + "/target", s.path + "/link")
        #expect(throws: FileError.notRegularFile(path: s.path + "/link")) { try AtomicFile.write(Array("x".utf8), to: s.path + "/link") }
        #expect(s.read("target") == "keep")
        mkdir(s.path + "/d", 0o755)
        #expect(throws: FileError.notRegularFile(path: s.path + "/d")) { try AtomicFile.write(Array("x".utf8), to: s.path + "/d") }
    }
}

@Suite("RootedPath: the one under-root check")
struct RootedPathTests {
    @Test("lexical: at or below the root, after dropping empty and '.' components", arguments: [
        ("/srv/share", "/srv/share", true), ("/srv/share/a/b", "/srv/share", true), ("/srv/share//a/./b/", "/srv/share/", true),
        ("/srv/shared", "/srv/share", false), ("/srv", "/srv/share", false), ("/srv/share/../etc", "/srv/share", false),
        ("/srv/share/a/..", "/srv/share", false), ("relative", "/srv", false), ("/anything", "/", true),
    ])
    func lexical(_ path: String, _ root: String, _ expected: Bool) {
        #expect(RootedPath.isWithin(path, root: root) == expected, "\(path) under \(root)")
    }

    @Test("strictly below excludes the root itself")
    func below() {
        #expect(!RootedPath.isBelow("/srv/share", root: "/srv/share"))
        #expect(RootedPath.isBelow("/srv/share/x", root: "/srv/share"))
    }

    @Test("opens a regular file through real directories and returns its descriptor")
    func opens() throws {
        let s = try Scratch()
        defer { s.remove() }
        try FileManager.default.createDirectory(atPath: s.path + "/a/b", withIntermediateDirectories: true)
        try s.write("a/b/f", "data")
        let fd = try RootedPath.open(s.path + "/a/b/f", under: s.path, regularFile: true)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(read(fd, &buffer, 8) == 4)
        let root = try RootedPath.open(s.path, under: s.path, flags: openPathOnly)
        close(root)
    }

    @Test("a symbolic link anywhere below the root is refused, naming the link")
    func symlinks() throws {
        let s = try Scratch()
        defer { s.remove() }
        let root = s.path + "/root"
        try FileManager.default.createDirectory(atPath: root + "/real", withIntermediateDirectories: true)
        try s.write("outside", "secret")
        try s.write("root/real/f", "data")
        symlink(s.path, root + "/dirlink")                    // a directory link in the middle
        symlink(s.path + "/outside", root + "/real/filelink") // a file link at the end
        symlink(root + "/real/f", root + "/inside")           // even one that stays inside
        #expect(throws: FileError.symbolicLink(path: root + "/dirlink")) { try RootedPath.open(root + "/dirlink/outside", under: root) }
        #expect(throws: FileError.symbolicLink(path: root + "/real/filelink")) { try RootedPath.open(root + "/real/filelink", under: root) }
        #expect(throws: FileError.symbolicLink(path: root + "/real/filelink")) {
            try RootedPath.open(root + "/real/filelink", under: root, regularFile: true)
        }
        #expect(throws: FileError.symbolicLink(path: root + "/inside")) { try RootedPath.open(root + "/inside", under: root) }
        // O_PATH | O_NOFOLLOW would open the link itself: still refused
        #expect(throws: FileError.symbolicLink(path: root + "/dirlink")) { try RootedPath.open(root + "/dirlink", under: root, flags: openPathOnly) }
        // realpath-style checks would accept this one; the component walk refuses it
        #expect(throws: FileError.outsideRoot(path: root + "/../outside", root: root)) { try RootedPath.open(root + "/../outside", under: root) }
    }

    @Test("a FIFO or directory is not a regular file and is never opened as one")
    func nonRegular() throws {
        let s = try Scratch()
        defer { s.remove() }
        mkfifo(s.path + "/fifo", 0o600)   // opening it for reading would block
        #expect(throws: FileError.notRegularFile(path: s.path + "/fifo")) { try RootedPath.open(s.path + "/fifo", under: s.path, regularFile: true) }
        mkdir(s.path + "/d", 0o755)
        #expect(throws: FileError.notRegularFile(path: s.path + "/d")) { try RootedPath.open(s.path + "/d", under: s.path, regularFile: true) }
        #expect(throws: FileError.system(operation: "stat", path: s.path + "/missing", errno: ENOENT)) {
            try RootedPath.open(s.path + "/missing", under: s.path, regularFile: true)
        }
    }
}
