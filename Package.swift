// swift-tools-version: 6.0
// storagectl: NFS shared storage for KVM live migration.
// One capability per target; executables are thin shells over the *Core/*Commands libraries.
import PackageDescription

let package = Package(
    name: "storagectl",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "storagectl", targets: ["storagectl"]),
        .executable(name: "storage-agent", targets: ["storage-agent"]),
        .executable(name: "compute-agent", targets: ["compute-agent"]),
        .executable(name: "storagectl-migration-hook", targets: ["storagectl-migration-hook"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
    ],
    targets: [
        // Wire format of the agent line protocol v1: no dependencies.
        .target(name: "AgentProtocol"),
        // The typed contract of every verb: request and answer types, encoded to and decoded
        // from protocol v1's key=value lines in one place. Agents, storagectl and the test fakes use it.
        .target(name: "AgentAPI", dependencies: ["AgentProtocol"]),
        // INI-style configuration files (storagectl.conf, agent configs) with line numbers in errors.
        .target(name: "ConfigFile"),
        // exports(5): parse/render byte-exact, the managed block, validation, ganesha EXPORT blocks, etab.
        .target(name: "ExportsFile", dependencies: ["SafeFiles"]),
        // Dedicated threads for blocking C and file I/O, off Swift's cooperative pool: no deps.
        .target(name: "BlockingIO"),
        // The migration gate's network probes: a bounded TCP listener and prober (reachability,
        // the bandwidth exchange) and a bounded resolver; POSIX sockets and poll(2) on BlockingIO threads.
        .target(name: "NetProbe", dependencies: ["BlockingIO"]),
        // Byte-level guards run before any XML parser sees untrusted text (no processing
        // instruction, no DOCTYPE): shared by the compute agent and the migration hook.
        .target(name: "XMLGuards"),
        // /proc/self/mountinfo, parsed once for the storage agent, the compute agent and the hook: no deps.
        .target(name: "MountInfo"),
        // Local file primitives the agents trust: durable atomic replacement, symlink-free opening under a root.
        .target(name: "SafeFiles"),
        // libvirt C API + `clibvirt_` shim helpers (last-error copy, silent error handler).
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        // Thin synchronous Swift wrapper over libvirt: connections, domains, pools, volumes.
        .target(name: "Libvirt", dependencies: ["CLibvirt"]),
        // libnfs C API + `cnfs_` shim helpers hiding the libnfs 4/5 vs 6 (LIBNFS_API_V2) differences.
        .systemLibrary(name: "CNFS", pkgConfig: "libnfs", providers: [.apt(["libnfs-dev"])]),
        // Thin synchronous Swift wrapper over libnfs: mount, stat, files, directories, exports.
        .target(name: "LibNFS", dependencies: ["CNFS"]),
        // libsystemd: sd_listen_fds_with_names, sd_notify.
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // C declarations Swift's Glibc module does not expose (struct ucred).
        .target(name: "CAgentSupport"),
        // Child processes: posix_spawn (only fds 0-2 inherited), reaped once, a deadline that kills that pid only.
        .target(name: "ProcessSpawn", dependencies: ["CAgentSupport", "BlockingIO"]),
        // Socket activation, notify, the line server and client shared by agents and CLI.
        .target(
            name: "AgentRuntime",
            dependencies: [
                "AgentProtocol", "AgentAPI", "ConfigFile", "CSystemd", "CAgentSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(name: "StorageAgentCore", dependencies: ["AgentProtocol", "AgentAPI", "AgentRuntime", "ConfigFile", "ExportsFile", "LibNFS", "BlockingIO", "ContentDigest", "ProcessSpawn", "SafeFiles", "MountInfo",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log")]),
        .target(name: "ComputeAgentCore", dependencies: ["AgentProtocol", "AgentAPI", "AgentRuntime", "ConfigFile", "Libvirt", "BlockingIO", "ImageCopy", "LibNFS", "ContentDigest", "SafeFiles", "NetProbe", "XMLGuards", "MountInfo",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log")]),
        .target(name: "StoragectlCommands", dependencies: ["AgentProtocol", "AgentAPI", "AgentRuntime", "ConfigFile", "ContentDigest", "SafeFiles",
            .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // libxxhash's XXH3-128 (Debian's libxxhash-dev; on x86 its run-time dispatched SIMD entry points).
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        // The content digest of disk images (xxh3-128: XXH3-128 over 4 MiB block digests).
        .target(name: "ContentDigest", dependencies: ["CXXHash"]),
        // The image copy engine: local (sparse) file -> NFS export over libnfs, pipelined, digest computed while reading.
        // Its errors carry typed causes (System's Errno); the compute agent maps them to the protocol.
        .target(name: "ImageCopy", dependencies: ["CNFS", "LibNFS", "BlockingIO", "ContentDigest", "SafeFiles",
            .product(name: "SystemPackage", package: "swift-system")]),
        // Benchmark/lab driver of the copy engine (Tests/Lab/bench-copy, suite 20-copy-engine).
        // It prints the compute agent's error codes for the engine's failures (ComputeAgentCore's mapping).
        .executableTarget(name: "storagectl-copy-bench", dependencies: ["ImageCopy", "ComputeAgentCore"]),
        // Benchmark of the agents' request handling through AgentClient (Tests/Lab/bench-agents):
        // PING/HEALTH/EXPORT latency percentiles and throughput over N concurrent connections.
        .executableTarget(name: "storagectl-agent-bench", dependencies: ["AgentProtocol", "AgentRuntime"]),
        // libvirt's qemu hook that refuses an incoming migration whose disks are not on a
        // share this host has ready (docs/migration.md): pure decision logic, no libvirt,
        // no NIO (it must answer within 100 ms), and its thin executable.
        .target(name: "MigrationHook", dependencies: ["XMLGuards", "MountInfo", "CSystemd"]),
        .executableTarget(name: "storagectl-migration-hook", dependencies: ["MigrationHook"]),
        .executableTarget(name: "storagectl", dependencies: ["StoragectlCommands", "AgentRuntime"]),
        .executableTarget(name: "storage-agent", dependencies: ["StorageAgentCore", "AgentRuntime"]),
        .executableTarget(name: "compute-agent", dependencies: ["ComputeAgentCore", "AgentRuntime"]),

        // Test helpers shared by the test targets (sockets, processes, temp dirs).
        .target(name: "TestSupport", dependencies: ["BlockingIO", "ProcessSpawn"], path: "Tests/TestSupport"),
        // Simulated agent hosts shared by test targets: SimHost (a compute agent on libvirt's test
        // driver), Sandbox and RecordingApplier (a storage agent on temporary files).
        .target(name: "AgentTestSupport", dependencies: ["ComputeAgentCore", "StorageAgentCore", "AgentProtocol", "AgentAPI", "AgentRuntime",
                                                          "ExportsFile", "TestSupport"], path: "Tests/AgentTestSupport"),
        .testTarget(name: "AgentProtocolTests", dependencies: ["AgentProtocol"]),
        .testTarget(name: "AgentAPITests", dependencies: ["AgentAPI", "AgentProtocol"]),
        .testTarget(name: "ExportsFileTests", dependencies: ["ExportsFile", "TestSupport"], exclude: ["Corpus"]),
        .testTarget(name: "BlockingIOTests", dependencies: ["BlockingIO"]),
        .testTarget(name: "NetProbeTests", dependencies: ["NetProbe", "BlockingIO"]),
        .testTarget(name: "SafeFilesTests", dependencies: ["SafeFiles"]),
        .testTarget(name: "ProcessSpawnTests", dependencies: ["ProcessSpawn", "BlockingIO"]),
        .testTarget(name: "LibvirtTests", dependencies: ["Libvirt", "BlockingIO"]),
        .testTarget(name: "LibNFSTests", dependencies: ["LibNFS", "BlockingIO"]),
        .testTarget(name: "ConfigFileTests", dependencies: ["ConfigFile"]),
        .testTarget(name: "AgentRuntimeTests", dependencies: ["AgentRuntime", "AgentProtocol", "AgentAPI", "TestSupport",
            .product(name: "NIOSSL", package: "swift-nio-ssl")]),
        .testTarget(name: "StoragectlCommandsTests", dependencies: ["StoragectlCommands", "AgentProtocol", "AgentAPI", "AgentRuntime", "ConfigFile", "TestSupport",
            "AgentTestSupport", "ComputeAgentCore", "StorageAgentCore", "ContentDigest",
            .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "StorageAgentCoreTests", dependencies: ["StorageAgentCore", "ExportsFile", "AgentProtocol", "AgentAPI", "AgentRuntime", "ContentDigest", "AgentTestSupport"]),
        .testTarget(name: "ContentDigestTests", dependencies: ["ContentDigest", "CXXHash"]),
        .testTarget(name: "ImageCopyTests", dependencies: ["ImageCopy", "ContentDigest", "TestSupport",
            .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "ComputeAgentCoreTests", dependencies: ["ComputeAgentCore", "MigrationHook", "AgentProtocol", "AgentRuntime", "Libvirt", "ConfigFile", "ImageCopy", "TestSupport", "AgentTestSupport"]),
        .testTarget(name: "MigrationHookTests", dependencies: ["MigrationHook", "TestSupport"]),
        .testTarget(name: "IntegrationTests", dependencies: ["AgentRuntime", "AgentProtocol", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

// Coverage-guided fuzz targets (docs/fuzzing.md): one executable per parser of untrusted
// bytes, each a single file holding `LLVMFuzzerTestOneInput` and no `main` (libFuzzer
// supplies it). Declared only when STORAGECTL_FUZZ=1, which `Tests/Fuzz/run` sets for its
// own `swift build --sanitize=fuzzer --product NAME --scratch-path .build-fuzz`: without
// libFuzzer they would not link, and fuzz-xml's `@testable import` needs a debug build,
// so the normal and release builds never see them.
if Context.environment["STORAGECTL_FUZZ"] == "1" {
    let fuzzTargets: [(name: String, dependencies: [Target.Dependency])] = [
        ("fuzz-line", ["AgentProtocol", "AgentAPI"]),
        ("fuzz-exports", ["ExportsFile"]),
        ("fuzz-qcow2", ["ImageCopy"]),
        ("fuzz-xml", ["ComputeAgentCore", "AgentAPI", "AgentProtocol"]),
        ("fuzz-config", ["ConfigFile", "AgentRuntime", "StoragectlCommands", "StorageAgentCore", "ComputeAgentCore",
                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),
    ]
    for fuzz in fuzzTargets {
        package.targets.append(.executableTarget(name: fuzz.name, dependencies: fuzz.dependencies, path: "Tests/Fuzz/\(fuzz.name)"))
        package.products.append(.executable(name: fuzz.name, targets: [fuzz.name]))
    }
}
