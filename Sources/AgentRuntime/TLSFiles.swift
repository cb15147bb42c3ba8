import AgentProtocol
import NIOSSL

/// Certificates for mutual TLS, in the layout libvirt's own TLS already uses
/// (libvirtd.conf(5) key_file/cert_file/ca_file), so hosts that migrate over TLS need no
/// new PKI: the agents present the host's server certificate and accept any client
/// certificate signed by the CA; storagectl presents the client certificate and checks
/// the agent's certificate against the host name or address it dialled.
public struct TLSFiles: Sendable, Equatable {
    public var ca: String
    public var certificate: String
    public var privateKey: String

    public init(ca: String, certificate: String, privateKey: String) {
        self.ca = ca
        self.certificate = certificate
        self.privateKey = privateKey
    }

    public static let libvirtServer = TLSFiles(ca: "/etc/pki/CA/cacert.pem",
                                               certificate: "/etc/pki/libvirt/servercert.pem",
                                               privateKey: "/etc/pki/libvirt/private/serverkey.pem")
    public static let libvirtClient = TLSFiles(ca: "/etc/pki/CA/cacert.pem",
                                               certificate: "/etc/pki/libvirt/clientcert.pem",
                                               privateKey: "/etc/pki/libvirt/private/clientkey.pem")

    private func load() throws(AgentError) -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey, ca: [NIOSSLCertificate]) {
        func read<T>(_ what: String, _ path: String, _ body: () throws -> T) throws(AgentError) -> T {
            do { return try body() } catch {
                throw AgentError(.unavailable, "cannot load TLS \(what) \(path): \(error); see docs/install.md (TLS)")
            }
        }
        let chain = try read("certificate", certificate) { try NIOSSLCertificate.fromPEMFile(certificate) }
        let key = try read("private key", privateKey) { try NIOSSLPrivateKey(file: privateKey, format: .pem) }
        let roots = try read("CA certificate", ca) { try NIOSSLCertificate.fromPEMFile(ca) }
        return (chain, key, roots)
    }

    /// Server side: our certificate, client certificates required and checked against the CA.
    public func serverContext() throws(AgentError) -> NIOSSLContext {
        let (chain, key, roots) = try load()
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        config.trustRoots = .certificates(roots)
        config.certificateVerification = .noHostnameVerification
        config.minimumTLSVersion = .tlsv12
        do { return try NIOSSLContext(configuration: config) } catch {
            throw AgentError(.unavailable, "cannot set up TLS: \(error)")
        }
    }

    /// Client side: our certificate, the agent's checked against the CA and the name or
    /// address dialled.
    public func clientContext() throws(AgentError) -> NIOSSLContext {
        let (chain, key, roots) = try load()
        var config = TLSConfiguration.makeClientConfiguration()
        config.certificateChain = chain.map { .certificate($0) }
        config.privateKey = .privateKey(key)
        config.trustRoots = .certificates(roots)
        config.certificateVerification = .fullVerification
        config.minimumTLSVersion = .tlsv12
        do { return try NIOSSLContext(configuration: config) } catch {
            throw AgentError(.unavailable, "cannot set up TLS: \(error)")
        }
    }
}
