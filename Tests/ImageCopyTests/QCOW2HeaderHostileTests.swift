import Foundation
import Testing
@testable import ImageCopy

/// Headers a guest can write into a raw disk (DOMAIN, COPY and LOCALIZE read the first
/// 64 KiB of every disk as a qcow2 header). Found by `Tests/Fuzz/run fuzz-qcow2`
/// (docs/fuzzing.md); before the fix each of these trapped the agent.
@Suite("qcow2 header: hostile input")
struct QCOW2HeaderHostileTests {
    /// A 72-byte version 2 header with the given backing file fields, then `tail`.
    static func header(backingOffset: UInt64, backingSize: UInt32, tail: [UInt8] = []) -> [UInt8] {
        var b: [UInt8] = [0x51, 0x46, 0x49, 0xfb]
        func u32(_ v: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { b.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) } }
        func u64(_ v: UInt64) { u32(UInt32(truncatingIfNeeded: v >> 32)); u32(UInt32(truncatingIfNeeded: v)) }
        u32(2)                       // version
        u64(backingOffset)           // backing_file_offset
        u32(backingSize)             // backing_file_size
        u32(16)                      // cluster_bits
        u64(1 << 30)                 // size
        b += [UInt8](repeating: 0, count: 72 - b.count)
        return b + tail
    }

    @Test("a backing file offset near 2^64 is malformed (offset + size overflowed)")
    func backingOffsetOverflow() {
        let bytes = Self.header(backingOffset: UInt64.max - 10, backingSize: 100, tail: [UInt8](repeating: 0x41, count: 200))
        #expect(throws: QCOW2HeaderError.malformed(path: "<bytes>", reason: "backing file name beyond the first 64 KiB")) {
            try QCOW2Header.parse(bytes)
        }
    }

    @Test("a backing file offset above Int.max with no name is read as no backing file (Int(offset) trapped)")
    func backingOffsetBeyondInt() throws {
        let header = try #require(try QCOW2Header.parse(Self.header(backingOffset: 0xfffe_0000_0000_0000, backingSize: 0, tail: [0, 0, 0, 0, 0, 0, 0, 0])))
        #expect(header.backingFile == nil)
        #expect(header.virtualSize == 1 << 30)
    }

    @Test("a backing file name that ends exactly at the last byte read is accepted; one byte more is not")
    func backingNameAtTheEnd() throws {
        let name = Array("base.qcow2".utf8)
        let bytes = Self.header(backingOffset: 72, backingSize: UInt32(name.count), tail: name)
        #expect(try QCOW2Header.parse(bytes)?.backingFile == "base.qcow2")
        #expect(throws: QCOW2HeaderError.self) {
            try QCOW2Header.parse(Self.header(backingOffset: 72, backingSize: UInt32(name.count + 1), tail: name))
        }
        #expect(throws: QCOW2HeaderError.self) {
            try QCOW2Header.parse(Self.header(backingOffset: UInt64(bytes.count) + 1, backingSize: 1, tail: name))
        }
    }

    @Test("the input fuzz-qcow2 found first parses without trapping")
    func fuzzerCrash1() throws {
        // Tests/Fuzz/run fuzz-qcow2: crash-1d00fad0bf0ebc02637504383bd8fc13d41a44c6
        // (version 2, backing_file_offset 0xfffe000000000000, backing_file_size 0).
        let bytes = try #require(Data(base64Encoded: "UUZJ+wAAAAL//gAAAAAAAAAAAAAAAAAQAAAAAEAAAAAAAAAAAAAAAgAAAAAAAwAAAAACAAABAAAAAAABAGAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAAABwAAAAAAAAAACGAQAAAAAAAAAAZGlydHkgYml0AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWNvcgAAAAAAAAAAAAA="))
        let header = try #require(try QCOW2Header.parse(Array(bytes)))
        #expect(header.version == 2)
        #expect(header.backingFile == nil)
    }
}
