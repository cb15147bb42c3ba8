// fuzz-qcow2: the qcow2 header reader (docs/fuzzing.md). A guest can write any bytes at
// the start of a raw disk, and DOMAIN, COPY and LOCALIZE read the first 64 KiB of every
// disk image as a qcow2 header; `QCOW2Header.read` hands at most 64 KiB to `parse`.
import ImageCopy

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQCOW2(_ start: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: min(size, 65536))) } ?? []
    guard let header = try? QCOW2Header.parse(bytes) else { return 0 }
    if header.version != 2 && header.version != 3 { fatalError("accepted qcow2 version \(header.version)") }
    if let name = header.backingFile, name.utf8.count > 1023 { fatalError("accepted a backing file name of \(name.utf8.count) bytes") }
    return 0
}
