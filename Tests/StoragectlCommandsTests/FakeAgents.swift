import AgentAPI
import AgentProtocol
import AgentRuntime
import Foundation
@testable import StoragectlCommands

/// Calls agents' request handlers in this process: the same `Request` in, the same
/// lines out as over a socket, without one. Serves the fakes below and the real
/// `StorageAgentHandler` / `ComputeAgentHandler` alike.
final class InProcessAgents: AgentCaller, @unchecked Sendable {
    let handlers: [String: any RequestHandler]
    let transport: Transport

    /// Serve one request at a time per (host, connection), as an agent session does:
    /// a request sent on a busy connection waits for the one before it.
    let sessions: SessionGate?
    /// Every request as `HOST CONNECTION VERB` (connection `main` for the first).
    let connectionLog = Log()

    init(_ handlers: [String: any RequestHandler], transport: Transport = .unix, serializeConnections: Bool = false) {
        self.handlers = handlers
        self.transport = transport
        self.sessions = serializeConnections ? SessionGate() : nil
    }

    final class Log: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String] = []
        func add(_ s: String) { lock.withLock { lines.append(s) } }
        var all: [String] { lock.withLock { lines } }
    }

    /// One request at a time per key; the others wait in order.
    actor SessionGate {
        var busy: Set<String> = []
        var waiting: [String: [CheckedContinuation<Void, Never>]] = [:]
        func acquire(_ key: String) async {
            if busy.insert(key).inserted { return }
            await withCheckedContinuation { waiting[key, default: []].append($0) }
        }
        func release(_ key: String) {
            if var q = waiting[key], !q.isEmpty {
                let next = q.removeFirst()
                waiting[key] = q
                next.resume()
            } else {
                busy.remove(key)
            }
        }
    }

    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        try await call(host, request, timeout: timeout, connection: "main", onLine: onLine)
    }

    func call(_ host: Inventory.Host, _ request: Request, timeout: Duration, connection: String,
              onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        connectionLog.add("\(host.name) \(connection) \(request.verb)")
        let key = host.name + "#" + connection
        await sessions?.acquire(key)
        defer { if let sessions { Task { await sessions.release(key) } } }
        return try await serve(host, request, onLine: onLine)
    }

    final class Lines: @unchecked Sendable {
        let lock = NSLock()
        var data: [Fields] = []
        var progress: [Fields] = []
        func add(_ line: ResponseLine) {
            lock.withLock {
                switch line {
                case .data(let f): data.append(f)
                case .progress(let f): progress.append(f)
                default: break
                }
            }
        }
    }

    private func serve(_ host: Inventory.Host, _ request: Request,
                       onLine: (@Sendable (ResponseLine) -> Void)?) async throws(AgentError) -> Response {
        guard let handler = handlers[host.name] else {
            throw AgentError(.unavailable, "cannot reach agent at \(host.agent): no such host in this test")
        }
        // Requests cross the wire as lines: render and parse, as a socket would.
        let wire: Request
        do { wire = try Request.parse(request.line) } catch { return Response(result: .failure(error)) }
        let lines = Lines()
        let reply = ReplyStream { line in
            let parsed = try ResponseLine.parse(line.line)
            lines.add(parsed)
            onLine?(parsed)
        }
        let context = RequestContext(identity: AgentIdentity(agent: "fake", host: host.name), peer: "in-process",
                                     protocolVersion: 1, transport: transport)
        let result: Result<Fields, AgentError>
        do {
            result = .success(try await handler.handle(wire, context: context, reply: reply))
        } catch let e as AgentError {
            result = .failure(e)
        } catch {
            result = .failure(AgentError(.internal, "\(error)"))
        }
        return lines.lock.withLock { Response(data: lines.data, progress: lines.progress, result: result) }
    }
}

/// Simulated agents of a small site: a storage host `store` and compute hosts `src`,
/// `dst`, `other` (and whatever else the inventory names). Requests are decoded with
/// the typed contract, so an unknown or misspelt key is refused as a real agent refuses
/// it; nonces are random and single-use as on a real compute agent.
final class FakeSite: @unchecked Sendable {
    let lock = NSLock()
    var log: [String] = []
    var running = false
    var available: UInt64 = 100 << 30
    var clients: [String] = []
    var pools: Set<String> = []
    var copied = false
    var adopted = false
    var localized = false
    var corruptChecksum = false
    /// Answer as agents from before content digests did (`sha256=`).
    var oldComputeAgent = false
    var oldStorageAgent = false
    /// Answer `digest=` as agents from before XXH3-128 did: the SHA-256 content digest,
    /// 64 hex digits without an algorithm prefix.
    var sha256ComputeAgent = false
    var sha256StorageAgent = false
    var failPoolOn: String?
    /// ADOPT attach=libnfs makes the disks NFS network disks.
    var adoptedLibNFS = false
    /// The VM's disks (target, file name, allocated bytes).
    var disks: [(target: String, file: String, size: UInt64)] = [("vda", "w1.qcow2", 1048576)]
    /// Nonce files on the share: name -> value. Removed when read.
    var nonces: [String: String] = [:]
    /// Other VMs with a disk on the share, per compute host.
    var otherShared: [String: [String]] = [:]
    let digest = "xxh3-128:" + String(repeating: "ab", count: 16)
    /// The same content's digest as an agent from before XXH3-128 spelled it (SHA-256).
    let sha256Digest = String(repeating: "ab", count: 32)
    let root = "/srv/shared"

    var verbs: [String] { lock.withLock { log } }
    func reset() { lock.withLock { log = [] } }

    /// The migration gate's facts and behaviour (MigrationFakes.swift).
    let migration = MigrationFake()

    /// LIVE-COPY / LIVE-LOCALIZE wait after their first PROGRESS until LIVE-ABORT.
    var holdLive = false
    /// With `holdLive`: the job had begun pivoting when LIVE-ABORT came; it finishes.
    var pivotDespiteAbort = false
    /// The last LIVE-COPY, as the agent decoded it.
    var liveRequest: LiveCopyRequest?
    let liveAborted = AsyncStream.makeStream(of: Void.self)

    func caller(hosts: [String] = ["store", "src", "dst", "other"], serializeConnections: Bool = false) -> InProcessAgents {
        InProcessAgents(Dictionary(uniqueKeysWithValues: hosts.map { ($0, Agent(site: self, host: $0) as any RequestHandler) }),
                        serializeConnections: serializeConnections)
    }

    func path(of disk: (target: String, file: String, size: UInt64)) -> String { "w1/" + disk.file }

    struct Agent: RequestHandler {
        let site: FakeSite
        let host: String
        var verbs: [String] { [] }

        func handle(_ request: Request, context: RequestContext, reply: ReplyStream) async throws -> Fields {
            // Progress first, outside the lock (the reply may call back into the test).
            if host == "src", request.verb == CopyRequest.verb, !site.lock.withLock({ site.adopted }) {
                let total = site.lock.withLock { site.disks.reduce(UInt64(0)) { $0 + $1.size } }
                try await reply.progress(TransferProgress(done: 0, total: total, rate: 0, disk: "vda"))
                try await reply.progress(TransferProgress(done: total, total: total, rate: total, disk: "vda"))
            }
            if host == "src", request.verb == LiveCopyRequest.verb || request.verb == LiveLocalizeRequest.verb {
                let total = site.lock.withLock { site.disks.reduce(UInt64(0)) { $0 + $1.size } }
                try await reply.progress(TransferProgress(done: 0, total: total, rate: 0, disk: "vda"))
                if site.lock.withLock({ site.holdLive }) {
                    for await _ in site.liveAborted.stream { break }
                    if !site.lock.withLock({ site.pivotDespiteAbort }) {
                        site.lock.withLock { site.log.append("src \(request.verb) cancelled") }
                        throw AgentError(.invalidState, "the live copy of w1 was stopped by LIVE-ABORT; w1 runs on its original disks")
                    }
                }
                try await reply.progress(TransferProgress(done: total, total: total, rate: total, disk: "vda"))
            }
            if let answer = try await site.migration.handle(site: site, host: host, request: request, reply: reply) {
                return answer
            }
            let answer = site.locked(host, request)
            for d in answer.data { try await reply.data(d) }
            return try answer.ok.get()
        }
    }

    /// Logs and answers one request under the lock.
    func locked(_ host: String, _ request: Request) -> (data: [Fields], ok: Result<Fields, AgentError>) {
        lock.lock()
        defer { lock.unlock() }
        log.append("\(host) \(request.verb)")
        do {
            let (data, ok) = try answer(host, request)
            return (data, .success(ok))
        } catch {
            return ([], .failure(error))
        }
    }

    /// Every verb storagectl's flows send, answered as a real agent would (shape-wise).
    func answer(_ host: String, _ request: Request) throws(AgentError) -> ([Fields], Fields) {
        let facts = ShareFacts(pool: "shared-images", server: "198.18.0.1", export: root, attach: .mount, target: root)
        switch (host, request.verb) {
        case (_, DomainQuery.verb):
            let q = try DomainQuery(request)
            if let answer = try migration.domain(site: self, host: host, name: q.name) { return answer }
            guard host == "src", q.name == "w1" else { throw AgentError(.notFound, "no domain called '\(q.name)' on this host") }
            let records = disks.map { d in
                adopted && adoptedLibNFS
                    ? DiskRecord(target: d.target, type: "network", source: "nfs://198.18.0.1" + root + "/" + path(of: d), format: "qcow2")
                    : DiskRecord(target: d.target, type: "file", source: adopted ? root + "/" + path(of: d) : "/var/lib/libvirt/images/" + d.file,
                                 format: "qcow2", virtualSize: 10 * d.size, allocated: d.size)
            }
            return DomainQuery.encodeAnswer(.init(name: "w1", uuid: "8f0b5a2e-5b1e-4c55-9b0f-3a8f6f0d2c11",
                                                  state: running ? .running : .shutOff, persistent: true, disks: records))
        case ("store", SpaceQuery.verb):
            let q = try SpaceQuery(request)
            return SpaceQuery.encodeAnswer(.init(path: q.path ?? root, total: available * 2, free: available, available: available))
        case ("store", ExportRequest.verb):
            let q = try ExportRequest(request)
            let changed = !Set(q.clients).isSubset(of: Set(clients))
            for c in q.clients where !clients.contains(c) { clients.append(c) }
            return ExportRequest.encodeAnswer(.init(path: q.path, clients: clients, changed: changed, fsid: "1187815656", backend: .ganesha))
        case ("store", UnexportRequest.verb):
            let q = try UnexportRequest(request)
            let before = clients
            clients.removeAll { q.clients.isEmpty || q.clients.contains($0) }
            return UnexportRequest.encodeAnswer(.init(path: q.path, clients: clients, changed: before != clients, backend: .ganesha))
        case ("store", ExportsQuery.verb):
            _ = try ExportsQuery(request)
            let records = clients.isEmpty ? [] : [ExportRecord(owner: .storagectl, path: root, line: 2, clients: clients, fsid: "1187815656",
                                                               text: "\(root) \(clients.joined(separator: " "))")]
            return ExportsQuery.encodeAnswer(.init(records: records, block: clients.isEmpty ? .absent : .present, backend: .ganesha))
        case ("store", ChecksumRequest.verb):
            let q = try ChecksumRequest(request)
            guard let d = disks.first(where: { root + "/" + path(of: $0) == q.path }), copied else {
                throw AgentError(.notFound, "\(q.path): No such file or directory")
            }
            var (data, ok) = ChecksumRequest.encodeAnswer(.init(path: q.path, size: d.size,
                                                                digest: corruptChecksum ? "xxh3-128:" + String(repeating: "00", count: 16)
                                                                    : sha256StorageAgent ? sha256Digest : digest, seconds: "0.01"))
            if oldStorageAgent { ok = Fields(ok.map { $0.key == "digest" ? Fields.Pair("sha256", $0.value) : $0 }) }
            return (data, ok)
        case (_, DomainsQuery.verb):
            _ = try DomainsQuery(request)
            var list: [AgentAPI.DomainListing] = []
            if host == "src" {
                list.append(.init(name: "w1", state: running ? .running : .shutOff, persistent: true, shared: adopted))
                list.append(.init(name: "local-only", state: .shutOff, persistent: true, shared: false))
            }
            for vm in otherShared[host] ?? [] { list.append(.init(name: vm, state: .running, persistent: true, shared: true)) }
            return DomainsQuery.encodeAnswer(list)
        case (let h, PoolEnsureRequest.verb) where h != "store":
            let q = try PoolEnsureRequest(request)
            if h == failPoolOn { throw AgentError(.conflict, "pool 'x' already uses the target") }
            let changed = !pools.contains(h)
            pools.insert(h)
            return ([], PoolEnsureRequest.Answer(name: q.name, attach: q.attach, server: q.server, export: q.export, target: q.target,
                                                 nfsVersion: q.nfsVersion, mountOptions: ["nolock"], active: true, autostart: true,
                                                 changed: changed, actions: changed ? ["defined", "built", "started", "autostarted"] : []).encoded())
        case ("src", CopyRequest.verb):
            let q = try CopyRequest(request)
            if running { throw AgentError(.invalidState, "w1 is running", details: ["state": "running"]) }
            if adopted {
                return CopyRequest.encodeAnswer(.init(rows: disks.map { .skipped(disk: $0.target, source: root + "/" + path(of: $0), reason: "already-shared") },
                                                      domain: q.domain, share: facts, bytes: 0, attached: false, restarted: false, seconds: 0))
            }
            let present = copied
            copied = true
            var (data, ok) = CopyRequest.encodeAnswer(.init(
                rows: disks.map { .copied(CopiedImage(disk: $0.target, source: "/var/lib/libvirt/images/" + $0.file, path: path(of: $0),
                                                     size: $0.size, dataBytes: $0.size, digest: sha256ComputeAgent ? sha256Digest : digest,
                                                     alreadyPresent: present)) },
                domain: q.domain, share: facts, bytes: disks.reduce(0) { $0 + $1.size }, attached: false, restarted: false, seconds: 0.1))
            if oldComputeAgent {
                data = data.map { Fields($0.map { $0.key == "digest" ? Fields.Pair("sha256", $0.value) : $0 }) }
            }
            return (data, ok)
        case (let h, VerifyRequest.verb) where h != "store":
            let q = try VerifyRequest(request)
            guard copied else { throw AgentError(.notFound, "this host does not see \(q.path)") }
            guard let d = disks.first(where: { q.path.hasSuffix("/" + $0.file) }) else { throw AgentError(.notFound, "no \(q.path)") }
            var answer = VerifyRequest.Answer(path: q.path, via: q.share == nil ? .mount : .libnfs, size: d.size, format: "qcow2",
                                              virtualSize: 10 * d.size)
            switch q.nonce {
            case .none: break
            case .write(let name):
                let value = String(UInt64.random(in: 1...UInt64.max), radix: 16)
                nonces[name] = value
                answer.nonce = name
                answer.nonceValue = value
            case .read(let name, let value):
                guard h != "src" else { throw AgentError(.invalidArgument, "the writer read its own nonce") }
                guard let seen = nonces.removeValue(forKey: name) else {
                    throw AgentError(.notFound, "this host does not see the nonce file .storagectl-nonce-\(name)")
                }
                guard seen == value else { throw AgentError(.invalidState, "the nonce file holds another value") }
                answer.nonce = name
                answer.nonceMatch = true
            }
            return ([], answer.encoded())
        case ("src", AdoptRequest.verb):
            let q = try AdoptRequest(request)
            let changed = !adopted
            adopted = true
            adoptedLibNFS = q.attach == .libnfs
            return AdoptRequest.encodeAnswer(.init(
                moved: changed ? disks.map { MovedDisk(disk: $0.target, from: "/var/lib/libvirt/images/" + $0.file, to: root + "/" + path(of: $0)) } : [],
                domain: q.domain, share: facts, changed: changed, saved: nil))
        case ("src", LocalizeRequest.verb):
            let q = try LocalizeRequest(request)
            if running { throw AgentError(.invalidState, "w1 is running") }
            let moved = adopted ? disks.map {
                LocalizedImage(disk: $0.target, from: root + "/" + path(of: $0), to: "/var/lib/libvirt/images/w1/" + $0.file, size: $0.size, digest: digest)
            } : []
            localized = localized || adopted
            adopted = false
            return LocalizeRequest.encodeAnswer(.init(moved: moved, domain: q.domain, share: facts, dir: q.dir ?? "/var/lib/libvirt/images",
                                                      changed: !moved.isEmpty, restored: nil))
        case ("src", LiveCopyRequest.verb):
            let q = try LiveCopyRequest(request)
            liveRequest = q
            guard running else { throw AgentError(.invalidState, "w1 is shut off; a live copy needs it running") }
            let already = adopted
            adopted = true
            copied = true
            adoptedLibNFS = q.share != .pool("shared-images")
            let moved = disks.map {
                LiveMovedDisk(disk: $0.target, from: "/var/lib/libvirt/images/" + $0.file, to: root + "/" + path(of: $0), path: path(of: $0),
                              format: "qcow2", virtualSize: 10 * $0.size, copied: already ? 0 : $0.size, already: already)
            }
            return LiveCopyRequest.encodeAnswer(.init(moved: moved, domain: q.domain, share: facts, bytes: already ? 0 : moved.reduce(0) { $0 + $1.copied },
                                                      changed: !already, attached: false, saved: already ? nil : "/var/lib/storagectl/domains/x.previous.xml",
                                                      seconds: 0.5))
        case ("src", LiveLocalizeRequest.verb):
            let q = try LiveLocalizeRequest(request)
            guard running else { throw AgentError(.invalidState, "w1 is shut off; a live copy needs it running") }
            let moved = adopted ? disks.map {
                LiveMovedDisk(disk: $0.target, from: root + "/" + path(of: $0), to: "/var/lib/libvirt/images/w1/" + $0.file, path: path(of: $0),
                              format: "qcow2", virtualSize: 10 * $0.size, copied: $0.size, already: false)
            } : []
            localized = localized || adopted
            adopted = false
            return LiveLocalizeRequest.encodeAnswer(.init(moved: moved, domain: q.domain, share: facts, bytes: moved.reduce(0) { $0 + $1.copied },
                                                          changed: !moved.isEmpty, attached: false, dir: q.dir ?? "/var/lib/libvirt/images"))
        case ("src", LiveAbortRequest.verb):
            _ = try LiveAbortRequest(request)
            let held = holdLive
            if held { liveAborted.continuation.yield() }
            return ([], LiveAbortRequest.Answer(aborted: held && !pivotDespiteAbort, pivoted: held && pivotDespiteAbort).encoded())
        default:
            throw AgentError(.unsupported, "unknown verb '\(request.verb)' on fake \(host)")
        }
    }
}
