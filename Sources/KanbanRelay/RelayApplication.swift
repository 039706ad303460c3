import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import KanbanModel
import KanbanProtocol
import CoreMetrics
import Prometheus
public import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A relay: storage, token authority and hub.
public final class Relay: Sendable {
    let registry = PrometheusCollectorRegistry()

    /// Prometheus text exposition of the relay's gauges and counters.
    public func metricsText() async -> String {
        let stats = await hub.stats
        func gauge(_ name: String, _ help: String, _ value: Int) {
            registry.makeGauge(descriptor: .kanban(name, help)).set(to: Double(value))
        }
        gauge("kanban_relay_connections", "Open agent connections.", stats.connections)
        gauge("kanban_relay_poll_sessions", "Open long-polling sessions (agents whose WebSocket upgrade is blocked), included in connections.",
              polls.count)
        gauge("kanban_relay_rooms", "Boards with at least one connection joined.", stats.rooms)
        gauge("kanban_relay_operations_accepted", "Operations accepted and sequenced since the relay started.", await hub.acceptedOperations)
        gauge("kanban_relay_digest_mismatches",
              "Agents whose board digest did not match the relay's after catch-up, since the relay started (each repaired by a resend).",
              await hub.digestMismatches)
        gauge("kanban_relay_history_mismatches",
              "Agents that connected with another operation at their cursor than the relay's log has there (its data restored from an older copy), since the relay started (each sent the whole board and pushing its own again).",
              await hub.historyMismatches)
        gauge("kanban_relay_compactions", "Board logs compacted into snapshots since the relay started.", await hub.compactions)
        gauge("kanban_relay_remote_operations", "Operations other relay instances committed that reached this instance's rooms.",
              await hub.remoteOperationCount)
        gauge("kanban_relay_gap_fill_operations",
              "Operations read from the log to fill a gap before live delivery (a missed or late cross-instance notification).",
              await hub.gapFills)
        let writes = await hub.writes
        gauge("kanban_relay_append_failures", "Appends the log refused (a full disk, the database down) since the relay started.",
              writes.failures)
        gauge("kanban_relay_log_writes_failing", "1 while the log refuses appends (since the last one that worked), else 0.",
              writes.failing == nil ? 0 : 1)
        gauge("kanban_relay_log_operations", "Operations in the relay's log (after compaction).", (try? await storage.operationCount()) ?? 0)
        return registry.emitToString()
    }

    public let storage: any RelayStorage
    public let traffic: RelayTraffic
    public let hub: RelayHub
    public let tokens: TokenAuthority
    public let configuration: RelayConfiguration
    /// Long-polling sessions of agents whose WebSocket upgrade is blocked.
    public let polls = PollSessions()
    /// WebSocket connections not yet finished.
    let sessions = OpenSessions()
    /// The store read behind `/health/ready`.
    let readiness = ReadinessProbe()

    let logger: Logger

    public init(storage: any RelayStorage, configuration: RelayConfiguration = .init(), logger: Logger = Logger(label: "kanban.relay")) async throws {
        self.storage = storage
        self.configuration = configuration
        self.logger = logger
        self.tokens = TokenAuthority(secret: try await storage.secret())
        _ = tokens.revoked.replace(with: try await storage.revokedTokenIDs())
        self.traffic = RelayTraffic(registry: registry)
        self.hub = RelayHub(storage: storage, configuration: configuration, logger: logger, traffic: traffic)
    }
}

/// Reads the revoked tokens from the store every `period` (`kanban relay token revoke` writes
/// them there, from another process, and other instances share them on PostgreSQL): from then
/// on their upgrades and long-polling requests get 401 `token_revoked`, and their open
/// connections are closed with 4003.
struct TokenRevocationWatcher: Service {
    let relay: Relay
    var period: Duration = .seconds(2)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var failing = false
            while !Task.isCancelled {
                do {
                    let newly = relay.tokens.revoked.replace(with: try await relay.storage.revokedTokenIDs())
                    if !newly.isEmpty {
                        let closed = await relay.hub.close(revoked: newly)
                        relay.logger.notice("tokens revoked", metadata: ["tokens": "\(newly.sorted())", "closedConnections": "\(closed)"])
                    }
                    failing = false
                } catch {
                    // The store is down: keep the last list (readiness and the hub report the store).
                    if !failing { relay.logger.warning("could not read revoked tokens", metadata: ["error": "\(error)"]) }
                    failing = true
                }
                try? await Task.sleep(for: period)
            }
        }
    }
}

/// Feeds what other instances publish (storage shared by several relays) into the hub, and
/// tells them this instance is alive. Runs beside the server; ends on graceful shutdown.
struct RelayClusterService: Service {
    let relay: Relay
    let cluster: any RelayCluster
    /// How often this instance says it is alive; presence from an instance silent for three
    /// periods is dropped.
    static let alivePeriod: Duration = .seconds(5)

    func run() async throws {
        let hub = relay.hub
        let logger = relay.logger
        let cluster = self.cluster
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in cluster.events {
                        do {
                            switch event {
                            case .operations(let board, let team, let first, let last, let ops):
                                try await hub.remote(board: board, team: team, first: first, last: last, ops: ops)
                            case .presence(let instance, let connection, let presence):
                                await hub.remote(instance: instance, connection: connection, presence: presence)
                            case .alive(let instance):
                                await hub.alive(instance: instance)
                            case .resync:
                                try await hub.resync()
                            }
                        } catch {
                            // The log could not be read (database down): compare every room with
                            // the log again until it works, so no room stays behind.
                            logger.warning("cross-instance delivery failed; retrying from the log", metadata: ["error": "\(error)"])
                            while !Task.isCancelled {
                                try? await Task.sleep(for: .milliseconds(500))
                                if (try? await hub.resync()) != nil { break }
                            }
                        }
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        do { try await cluster.publishAlive() } catch {
                            logger.notice("could not publish liveness", metadata: ["error": "\(error)"])
                        }
                        await hub.expireInstances(olderThan: Self.alivePeriod * 3)
                        try? await Task.sleep(for: Self.alivePeriod)
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
    }
}

/// Builds the relay server: `/sync` (WebSocket, bearer token, permessage-deflate), `/health`,
/// `/health/websocket`. The executable and the tests run this same object.
public func buildRelayApplication(
    relay: Relay, logger: Logger = Logger(label: "kanban.relay"),
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let configuration = relay.configuration
    let router = Router(context: BasicRequestContext.self)
    router.get("sync") { request, _ -> Response in
        // Reached when the upgrade was not accepted: say why, before any upgrade.
        switch relay.tokens.verify(authorization: request.headers[.authorization]) {
        case .failure(let failure):
            return relayError(.unauthorized, code: failure.code, failure.rawValue, hint: failure.hint)
        case .success:
            return relayError(.upgradeRequired, code: "websocket_required", "/sync is a WebSocket endpoint and this request did not upgrade",
                              hint: "Connect with a WebSocket client; if one did, a proxy in between dropped the Upgrade/Connection headers.")
        }
    }
    router.get("health") { _, _ in relayJSON(["status": "ok"]) }
    router.get("health/ready") { _, _ in
        // Liveness is /health; this also asks the store, so a balancer or an orchestrator can
        // hold traffic while PostgreSQL (or the SQLite file) does not answer.
        // A store that reads but refuses writes (a full disk) is not ready either.
        var problem = await relay.hub.writes.problem()
        if problem == nil { problem = await relay.readiness.problem(relay.storage, within: .seconds(2)) }
        if let problem {
            return relayJSON(["status": "unavailable", "store": problem], status: .serviceUnavailable)
        }
        return relayJSON(["status": "ready", "store": "ok"])
    }
    router.get("health/websocket") { _, _ in
        let stats = await relay.hub.stats
        let mismatches = await relay.hub.digestMismatches
        let histories = await relay.hub.historyMismatches
        let count = (try? await relay.storage.operationCount()) ?? -1
        return relayJSON(["connections": stats.connections, "rooms": stats.rooms, "logOperations": count, "digestMismatches": mismatches,
                          "historyMismatches": histories, "pollSessions": relay.polls.count])
    }
    let polling = LongPolling(relay: relay, logger: logger)
    polling.register(on: router)

    router.get("metrics") { _, _ in
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: await relay.metricsText())))
    }

    return Application(
        router: router,
        // `/sync` upgrades are served by NIO handlers (RelayChildChannel), the rest by the router.
        server: HTTPServerBuilder { responder in RelayChildChannel(responder: responder, relay: relay, logger: logger) },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "kanban-relay"),
        services: [RelaySessionsShutdown(sessions: relay.sessions),
                   PollSessionReaper(polling: polling),
                   RelayHeartbeat(hub: relay.hub, period: .seconds(configuration.heartbeatSeconds)),
                   RelayMemoryTrim(traffic: relay.traffic, logger: logger),
                   TokenRevocationWatcher(relay: relay)] + (relay.storage.cluster.map { [RelayClusterService(relay: relay, cluster: $0)] } ?? []),
        onServerRunning: { channel in await onListening(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
}

/// The read behind `/health/ready`: nil when the store answers a cheap read (a board's head)
/// within the limit, else what went wrong. At most one read is out at a time: probes that come
/// while one runs wait for that one (each up to its own limit), so a store that hangs for
/// minutes holds one read, not one per probe.
final class ReadinessProbe: Sendable {
    private struct State {
        /// When the read now out started (nil: none is).
        var readStarted: ContinuousClock.Instant?
        var waiters: [Int: CheckedContinuation<String?, Never>] = [:]
        var nextWaiter = 0
    }
    private let state = Mutex(State())
    /// Reads started (for tests).
    let reads = Atomic<Int>(0)

    func problem(_ storage: any RelayStorage, within limit: Duration) async -> String? {
        await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            let (waiter, startRead, readStarted) = state.withLock { state in
                let waiter = state.nextWaiter
                state.nextWaiter += 1
                state.waiters[waiter] = continuation
                if let started = state.readStarted { return (waiter, false, started) }
                let now = ContinuousClock.now
                state.readStarted = now
                return (waiter, true, now)
            }
            if startRead {
                reads.add(1, ordering: .relaxed)
                Task {
                    let problem: String?
                    do {
                        _ = try await storage.head(of: readinessProbeBoard)
                        problem = nil
                    } catch {
                        problem = "\(error)"
                    }
                    let waiting = self.state.withLock { state in
                        defer { state.waiters = [:]; state.readStarted = nil }
                        return state.waiters
                    }
                    for continuation in waiting.values { continuation.resume(returning: problem) }
                }
            }
            Task {
                try? await Task.sleep(for: limit)
                guard let continuation = self.state.withLock({ $0.waiters.removeValue(forKey: waiter) }) else { return }
                let waited = ContinuousClock.now - readStarted
                continuation.resume(returning: "the store did not answer within \(limit)"
                    + (waited > limit + .milliseconds(500) ? " (its read has been waiting for \(StoreWrites.seconds(waited)))" : ""))
            }
        }
    }
}

/// A board ID no one uses, read by the readiness check.
private let readinessProbeBoard = EntityID("00000000-0000-7000-8000-000000000000")!

func relayJSON(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func relayError(_ status: HTTPResponse.Status, code: String, _ message: String, hint: String) -> Response {
    var response = relayJSON(["error": ["code": code, "message": message, "hint": hint]], status: status)
    if status == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer realm=\"kanban-relay\"" }
    return response
}
