import AgentProtocol
import Foundation
import NIOSSL
import Testing
import TestSupport
@testable import AgentRuntime

@Suite("access policy")
struct AccessPolicyTests {
    static let admin = PeerIdentity(transport: .tls, subject: "CN=storagectl-admin,O=Example,C=GB",
                                    alternativeNames: ["DNS:admin.example", "IP:198.18.0.9"])
    static let host = PeerIdentity(transport: .tls, subject: "CN=dest-example,O=Example,C=GB", alternativeNames: ["DNS:dest-example"])

    @Test("root on the unix socket is admin; plain TCP gets the summary only; a certificate gets what its patterns say")
    func roles() {
        let policy = AccessPolicy(admins: ["C=GB,O=Example,CN=storagectl-*"], readers: ["DNS:*-example"])
        #expect(policy.role(of: PeerIdentity(transport: .unix, uid: 0)) == .admin)
        #expect(policy.role(of: PeerIdentity(transport: .tcp)) == .summary)
        #expect(policy.role(of: Self.admin) == .admin, "libvirt's tls_allowed_dn_list order (C first) matches")
        #expect(policy.role(of: Self.host) == .reader, "a SAN pattern")
        #expect(policy.role(of: PeerIdentity(transport: .tls, subject: "CN=intruder,O=Example,C=GB")) == .summary)
        #expect(AccessPolicy().role(of: Self.admin) == .summary, "no list: a certificate from the CA alone is not enough")
    }

    @Test("RFC 4514 order and SANs match too; a comma inside a value does not split it")
    func patterns() {
        #expect(AccessPolicy.matches("CN=storagectl-admin,O=Example,C=GB", Self.admin))
        #expect(AccessPolicy.matches("IP:198.18.0.*", Self.admin))
        #expect(!AccessPolicy.matches("CN=storagectl-admin", Self.admin), "a pattern matches the whole subject")
        let escaped = PeerIdentity(transport: .tls, subject: "CN=a\\,b,O=x")
        #expect(escaped.subjectCountryFirst == "O=x,CN=a\\,b")
    }

    @Test("a refusal names the identity and the config key that would allow it")
    func refusal() {
        let policy = AccessPolicy(readers: ["DNS:dest-example"])
        do { try policy.authorize("EXPORT", needs: .admin, peer: Self.host); Issue.record("allowed") } catch {
            #expect(error.code == .permissionDenied)
            #expect(error.message.contains("CN=dest-example,O=Example,C=GB") && error.message.contains("allow-admin"))
        }
        do { try policy.authorize("DOMAIN", needs: .reader, peer: PeerIdentity(transport: .tcp)); Issue.record("allowed") } catch {
            #expect(error.message.contains("plain TCP"))
        }
        #expect(throws: Never.self) { try policy.authorize("DOMAIN", needs: .reader, peer: Self.host) }
    }

    @Test("the identity of a real client certificate: subject and SANs")
    func certificate() async throws {
        let dir = try TestSupport.temporaryDirectory("pki")
        defer { TestSupport.removeTree(dir) }
        let pki = try await TestPKI.make(in: dir, clientSubject: "/C=GB/O=Example/CN=storagectl-admin",
                                         clientSAN: "DNS:admin.example,IP:198.18.0.9")
        let der = try NIOSSLCertificate.fromPEMFile(pki.clientCert)[0].toDERBytes()
        let peer = try PeerIdentity.certificate(der: der)
        #expect(peer.subject == "CN=storagectl-admin,O=Example,C=GB")
        #expect(peer.alternativeNames == ["DNS:admin.example", "IP:198.18.0.9"])
        #expect(AccessPolicy(admins: ["C=GB,O=Example,CN=storagectl-admin"]).role(of: peer) == .admin)
    }
}
