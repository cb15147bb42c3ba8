import AgentProtocol
import Foundation
import ImageCopy
import Libvirt
import LibNFS
import Testing
@testable import ComputeAgentCore
#if canImport(Glibc)
import Glibc
#endif

@Suite("error mapping")
struct ErrorMappingTests {
    @Test("the libnfs probe asks again after a refused MOUNT only, not after a timeout or a refused connection")
    func probeRefusal() async throws {
        #expect(Pools.isRefusal(NFSError(code: EACCES, message: "mount_cb: RPC error: Mount failed with error MNT3ERR_ACCES(13) Permission denied(13)")))
        #expect(Pools.isRefusal(NFSError(code: EINVAL, message: "Mount failed with error MNT3ERR_ACCES(13)")))
        #expect(!Pools.isRefusal(NFSError(code: ECONNREFUSED, message: "connect: Connection refused")))
        #expect(!Pools.isRefusal(NFSError(code: ETIMEDOUT, message: "timed out")))
        // a refused connection fails at once, whatever the grace
        let started = ContinuousClock.now
        #expect(throws: AgentError.self) { try Pools.probe(server: "127.0.0.1", export: "/none", refusalGrace: .seconds(30)) }
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test("copy-engine errors map to the protocol's codes and keep their cause")
    func imageCopyErrors() {
        #expect(ImageCopyError.targetExists(path: "w", size: 1, digest: nil).agentError.code == .exists)
        #expect(ImageCopyError.targetNotFound("w").agentError.code == .notFound)
        #expect(ImageCopyError.sourceChanged("w").agentError.code == .conflict)
        #expect(ImageCopyError.sourceUnreadable(path: "w", errno: ENOENT, message: "m").agentError.code == .notFound)
        #expect(ImageCopyError.sourceUnreadable(path: "w", errno: EPERM, message: "m").agentError.code == .permissionDenied)
        #expect(ImageCopyError.sourceUnreadable(path: "w", errno: EIO, message: "m").agentError.code == .internal)
        #expect(ImageCopyError.mountFailed(url: "nfs://x/y", errno: EACCES, message: "MNT3ERR_ACCES").agentError.code == .permissionDenied)
        #expect(ImageCopyError.mountFailed(url: "nfs://x/y", errno: ECONNREFUSED, message: "refused").agentError.code == .unavailable)
        #expect(ImageCopyError.mountFailed(url: "nfs://x/y", errno: ETIMEDOUT, message: "t").agentError.code == .timeout)
        #expect(ImageCopyError.nfs(operation: "write", errno: ENOSPC, message: "full").agentError.code == .unavailable)
        #expect(ImageCopyError.nfs(operation: "write", errno: EDQUOT, message: "quota").agentError.code == .unavailable)
        #expect(ImageCopyError.nfs(operation: "read", errno: ENOENT, message: "gone").agentError.code == .notFound)
        #expect(ImageCopyError.nfs(operation: "read", errno: EINVAL, message: "?").agentError.code == .internal)
        #expect(ImageCopyError.verificationFailed(path: "w", expectedSize: 1, actualSize: 2, expectedDigest: "a", actualDigest: "b").agentError.code == .internal)
        #expect(ImageCopyError.targetExists(path: "w", size: 1, digest: nil).agentError.message.contains("never overwritten"))
        let restarted = ImageCopyError.serverRestarted(path: "w").agentError
        #expect(restarted.code == .unavailable)
        #expect(restarted.message.contains("run the copy again"))
        let full = ImageCopyError.nfs(operation: "write", errno: ENOSPC, message: "full")
        #expect(full.agentError.cause as? ImageCopyError == full)
    }

    @Test("libvirt errors map on libvirt's codes and domains, not on message text")
    func libvirtErrors() {
        func map(_ code: LibvirtError.Code, _ domain: LibvirtError.Domain = .none, _ message: String = "m") -> AgentError.Code {
            ErrorMapping.agentError(LibvirtError(code: code, domain: domain, message: message)).code
        }
        #expect(map(.noDomain) == .notFound)
        #expect(map(.noStoragePool) == .notFound)
        #expect(map(.operationInvalid) == .invalidState)
        #expect(map(.noSupport) == .unsupported)
        #expect(map(.authFailed) == .permissionDenied)
        #expect(map(.xmlError) == .invalidArgument)
        #expect(map(.noConnect) == .unavailable)
        #expect(map(.rpc, .rpc) == .unavailable)
        // "Failed to connect socket to ..." is a system error of the RPC layer ...
        #expect(map(.systemError, .rpc, "whatever the text says") == .unavailable)
        // ... and the same words from another part of libvirt are not.
        #expect(map(.systemError, .none, "Failed to connect socket") == .internal)
        #expect(map(.internalError) == .internal)
        // an aborted domain job (a migration): the domain stays where it was
        #expect(map(.operationAborted) == .conflict)
        #expect(map(.migrateUnsafe) == .invalidState)
        let e = LibvirtError(code: .noDomain, domain: .test, message: "Domain not found")
        #expect(ErrorMapping.agentError(e).cause as? LibvirtError == e)
        #expect(ErrorMapping.agentError(e, .lookingUpDomain("vm1")).message.contains("no domain called 'vm1'"))
        #expect(ErrorMapping.agentError(LibvirtError(code: .xmlError, domain: .none, message: "x"), .connecting(uri: "qemu:///system")).code == .unavailable)
    }

    @Test("libvirt's own error for a socket nobody listens on is recognised as unreachable by its codes")
    func unreachableLibvirt() throws {
        let uri = "qemu+unix:///system?socket=/nonexistent/storagectl-test.sock"
        do {
            _ = try LibvirtConnection(uri: uri)
            Issue.record("connected to a socket that does not exist")
        } catch let error as LibvirtError {
            #expect(ErrorMapping.isUnreachable(error), "code \(error.code) domain \(error.domain): \(error.message)")
            #expect(ErrorMapping.agentError(error).code == .unavailable)
        } catch {
            Issue.record("unexpected \(error)")
        }
        do {
            _ = try LibvirtSession(uri: uri).connection()
            Issue.record("connected to a socket that does not exist")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.cause is LibvirtError)
        }
    }
}
