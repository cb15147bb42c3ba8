import Foundation
@testable import ExportsFile

/// Test fixtures under `Corpus/`, located relative to this source file (not resources).
enum Corpus {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .appendingPathComponent("Corpus", isDirectory: true)

    static var names: [String] {
        let all = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return all.filter { $0.hasSuffix(".exports") }.sorted()
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: directory.appendingPathComponent(name)))
    }
}

/// SplitMix64: a tiny seeded deterministic generator for the property tests.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension ExportsFile {
    /// The bytes of every line outside the managed block (all lines when there is none).
    var bytesOutsideBlock: [UInt8] {
        var range = 0..<0
        if case .present(let begin, let end) = managedBlockState { range = begin..<(end + 1) }
        var out: [UInt8] = []
        for (index, line) in lines.enumerated() where !range.contains(index) {
            out.append(contentsOf: line.raw)
        }
        return out
    }
}

let testPolicy: ExportPolicy = {
    do {
        return try ExportPolicy(
            exportRoot: "/var/lib/libvirt/shared-images",
            allowedClients: ["198.18.0.2", "198.18.0.3", "source-example", "dest-example", "2001:db8::7"])
    } catch {
        fatalError("test policy: \(error)")
    }
}()

let ourRoot = "/var/lib/libvirt/shared-images"
