import Foundation

/// A throwaway CA, server and client certificates made with the openssl command, in the
/// layout the agents and storagectl read (libvirt's file names).
public struct TestPKI {
    public let dir: String
    public var ca: String { dir + "/cacert.pem" }
    public var serverCert: String { dir + "/servercert.pem" }
    public var serverKey: String { dir + "/serverkey.pem" }
    public var clientCert: String { dir + "/clientcert.pem" }
    public var clientKey: String { dir + "/clientkey.pem" }

    /// Makes a CA and a server certificate for `serverIPs`/`serverNames`, a client
    /// certificate, all signed by the CA. With `rogue`, a second CA signs the client.
    public static func make(in dir: String, serverIPs: [String] = ["127.0.0.1"], serverNames: [String] = ["localhost"],
                            clientSignedByOtherCA: Bool = false, clientSubject: String = "/CN=client",
                            clientSAN: String? = nil) async throws -> TestPKI {
        let pki = TestPKI(dir: dir)
        let openssl = "/usr/bin/openssl"
        func run(_ args: [String]) async throws {
            let r = try await runProgram(openssl, args)
            guard r.status == 0 else { throw TestFailure("openssl \(args.joined(separator: " ")): \(r.stderr)") }
        }
        func makeCA(_ name: String) async throws {
            try await run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", "\(dir)/\(name)key.pem", "-out", "\(dir)/\(name)cert.pem", "-days", "2",
                           "-subj", "/CN=storagectl test \(name)"])
        }
        try await makeCA("ca")
        if clientSignedByOtherCA { try await makeCA("rogue") }
        func leaf(_ name: String, _ signer: String, subject: String, san: String?, usage: String) async throws {
            try await run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", "\(dir)/\(name)key.pem", "-out", "\(dir)/\(name).csr", "-subj", subject])
            var ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=\(usage)\n"
            if let san { ext += "subjectAltName=\(san)\n" }
            try ext.write(toFile: "\(dir)/\(name).ext", atomically: true, encoding: .utf8)
            try await run(["x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/\(signer)cert.pem",
                           "-CAkey", "\(dir)/\(signer)key.pem", "-CAcreateserial", "-out", "\(dir)/\(name)cert.pem",
                           "-days", "2", "-extfile", "\(dir)/\(name).ext"])
        }
        let san = (serverIPs.map { "IP:\($0)" } + serverNames.map { "DNS:\($0)" }).joined(separator: ",")
        try await leaf("server", "ca", subject: "/CN=server", san: san, usage: "serverAuth")
        try await leaf("client", clientSignedByOtherCA ? "rogue" : "ca", subject: clientSubject, san: clientSAN, usage: "clientAuth")
        return pki
    }
}
