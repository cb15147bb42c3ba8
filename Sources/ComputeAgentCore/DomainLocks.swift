import AgentProtocol

/// One changing request per domain at a time (COPY start, ADOPT, RESTORE, LOCALIZE):
/// two requests that read a domain's definition, decide, and write it (or its saved
/// definition in the state dir) would otherwise interleave. Keyed by the domain name
/// the request gives (every such verb looks the domain up by it).
///
/// A request that finds the domain held waits up to `wait` (polling: the holders are
/// short, a few libvirt calls and one state file; a running copy job does not hold it),
/// then gets `busy` with the remedy. Not re-entrant.
actor DomainLocks {
    private var held: Set<String> = []

    private func tryAcquire(_ domain: String) -> Bool { held.insert(domain).inserted }
    private func release(_ domain: String) { held.remove(domain) }

    /// Runs `body` holding `domain`.
    /// - Throws: `busy` when another request held it for longer than `wait`; what `body` throws.
    func withDomain<T: Sendable>(_ domain: String, wait: Duration,
                                 _ body: @Sendable () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + wait
        while !tryAcquire(domain) {
            guard ContinuousClock.now < deadline else {
                throw AgentError(.busy, "another request is changing \(domain); run the command again when it has finished",
                                 details: ["domain": domain])
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        defer { release(domain) }
        return try await body()
    }

    /// Whether a request holds `domain` now (tests).
    func isHeld(_ domain: String) -> Bool { held.contains(domain) }
}
