import AsyncHTTPClient
import CoreMetrics
import Foundation
import HTTPTypes
import KanbanModel
import KanbanProtocol
import NIOWebSocket
import KanbanStore
public import Logging
public import ServiceLifecycle
import Synchronization
import WSClient
import WSCompression

/// Where and how the agent syncs.
public struct SyncConfiguration: Sendable {
    /// `ws://host:port/sync` or `wss://...`.
    public var relayURL: String
    public var token: String
    /// Reconnect delays: full jitter over min(cap, base * 2^attempt).
    public var backoffBase: Duration = .milliseconds(250)
    /// At most this long between attempts: once the relay is back, an agent waits up to this
    /// long (uniformly random below it) before it syncs again.
    public var backoffCap: Duration = .seconds(10)
    /// A link the relay welcomed starts the backoff over once it did some work (the relay
    /// acknowledged a push, or sent operations or a snapshot) or stayed up this long. A link
    /// that is welcomed and then dropped before either counts as one more failure: a relay that
    /// welcomes every agent and fails every push (a full disk) is not reconnected to every
    /// ~125 ms for as long as that lasts.
    public var backoffResetAfter: Duration = .seconds(10)
    /// WebSocket ping period; a missed pong closes the link.
    public var heartbeat: Duration = .seconds(15)
    /// Application-level ping for round-trip time and clock skew.
    public var probeInterval: Duration = .seconds(10)
    public var pushBatch: Int = 500
    /// How long the TCP connect plus the WebSocket upgrade may take before the attempt is
    /// abandoned and retried.
    public var handshakeTimeout: Duration = .seconds(10)
    /// WebSocket, HTTP long-polling, or WebSocket with long-polling as the fallback.
    public var transport: SyncTransportChoice = .auto
    /// While long-polling in `auto` mode, how often the WebSocket is tried again.
    public var webSocketRetryInterval: Duration = .seconds(60)

    public init(relayURL: String, token: String) {
        self.relayURL = relayURL
        self.token = token
    }
}

/// How the agent reaches the relay (`kanban agent --relay-transport`).
public enum SyncTransportChoice: String, Sendable, CaseIterable {
    /// WebSocket; when something in the way blocks the upgrade, HTTP long-polling, with the
    /// WebSocket tried again every `webSocketRetryInterval`.
    case auto
    case webSocket = "websocket"
    case longPolling = "long-polling"
}

/// Keeps the agent's replica in sync with a relay: uploads the outbox in order, applies what
/// others wrote, catches up from per-board cursors after every reconnect, and reconnects with
/// capped, fully jittered exponential backoff.
public struct SyncClient: Service {
    let agent: Agent
    let configuration: SyncConfiguration
    let logger: Logger

    public init(agent: Agent, configuration: SyncConfiguration, logger: Logger = Logger(label: "kanban.sync")) {
        self.agent = agent
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        agent.updateSyncStatus { $0.state = .connecting; $0.relayURL = configuration.relayURL }
        await cancelWhenGracefulShutdown {
            var failures = 0
            // Set while the WebSocket is known to be blocked: when it was, and by what.
            var blocked: (at: ContinuousClock.Instant, problem: SyncStatus.Attempt)?
            var fallenBack = false
            while !Task.isCancelled {
                let polling: Bool
                switch configuration.transport {
                case .webSocket: polling = false
                case .longPolling: polling = true
                case .auto: polling = blocked.map { ContinuousClock.now - $0.at < configuration.webSocketRetryInterval } ?? false
                }
                agent.metrics.linkAttempts.increment()
                let linkStart = ContinuousClock.now
                let outcome: Outcome
                if polling {
                    let retryAt = configuration.transport == .auto ? blocked.map { $0.at + configuration.webSocketRetryInterval } : nil
                    if let blocked, let retryAt {
                        agent.updateSyncStatus { status in
                            status.fallbackReason = "\(blocked.problem.message) Syncing over HTTP long-polling instead."
                            status.webSocketRetryAt = Date().addingTimeInterval(Double((retryAt - .now).milliseconds) / 1000)
                        }
                    }
                    outcome = await pollOnce(until: retryAt)
                } else {
                    outcome = await connectOnce()
                }
                agent.metrics.linkUp.record(0)
                let linkLasted = ContinuousClock.now - linkStart
                if outcome.welcomed {
                    let up = linkLasted.components
                    agent.metrics.linkDuration(Double(up.seconds) + Double(up.attoseconds) / 1e18)
                }
                if Task.isCancelled { break }
                if outcome.retryWebSocket {
                    // A long-polling session ended on schedule: try the WebSocket now.
                    blocked = nil
                    continue
                }
                if outcome.retryNow {
                    // "Reconnect now" during a handshake: that attempt is dropped, a fresh one starts.
                    logger.info("reconnect requested; abandoned the pending handshake")
                    continue
                }
                agent.metrics.linkFailure(outcome.failure?.errorClass ?? "closed")
                if !polling, configuration.transport == .auto, let failure = outcome.failure,
                   Self.blockedUpgrade.contains(failure.errorClass) {
                    // Something in the way refuses the upgrade: long-poll at once, retry later.
                    // (Warned once; each periodic retry that finds it still blocked says so at info.)
                    logger.log(level: fallenBack ? .info : .warning, "WebSocket upgrade blocked; falling back to HTTP long-polling", metadata: [
                        "error.class": "\(failure.errorClass)", "websocket_retry_in_s": "\(configuration.webSocketRetryInterval.components.seconds)",
                    ])
                    blocked = (ContinuousClock.now, failure)
                    fallenBack = true
                    agent.updateSyncStatus { $0.record(failure) }
                    continue
                }
                if outcome.welcomed, !polling { blocked = nil; fallenBack = false }
                let succeeded = outcome.welcomed && (outcome.progressed || linkLasted >= configuration.backoffResetAfter)
                failures = succeeded ? 1 : failures + 1
                let exponent = min(failures - 1, 20)
                let ceiling = min(configuration.backoffCap, configuration.backoffBase * (1 << exponent))
                let delay = Duration.milliseconds(Int64.random(in: 0...max(1, ceiling.milliseconds)))
                agent.updateSyncStatus { status in
                    status.state = .reconnecting
                    status.connectedSince = nil
                    status.consecutiveFailures = failures
                    status.nextAttemptAt = Date().addingTimeInterval(Double(delay.milliseconds) / 1000)
                    if let failure = outcome.failure {
                        status.lastError = failure.message
                        status.record(failure)
                    }
                }
                logger.info("relay link down", metadata: [
                    "error.class": "\(outcome.failure?.errorClass ?? "closed")", "retry_in_ms": "\(delay.milliseconds)",
                    "transport": "\(polling ? "long-polling" : "websocket")",
                ])
                await agent.waitForReconnect(upTo: delay)
                agent.updateSyncStatus { $0.state = .connecting; $0.nextAttemptAt = nil }
            }
        }
    }

    /// Failure classes that mean something between agent and relay refuses the WebSocket
    /// upgrade (a proxy dropping `Upgrade`, a firewall): in `auto` mode the agent long-polls.
    public static let blockedUpgrade: Set<String> = ["http_426", "no_upgrade", "upgrade_refused", "http_400", "http_403", "http_405"]

    /// One long-polling session, from opening it to its end (a failure, or `until` passing).
    func pollOnce(until: ContinuousClock.Instant?) async -> Outcome {
        // Each session has an HTTP client, so connections of its own. With the process-wide
        // client, keep-alive connections opened through a balancer before it failed over (or
        // that a per-connection balancer pinned to another instance) served the next session's
        // requests too, which then reached an instance that did not open it: in the two-relay
        // soak, every attempt for 80 s failed with `poll_affinity`.
        let outcome = try? await HTTPClient.withHTTPClient { client in
            await pollSession(until: until, client: client)
        }
        return outcome ?? Outcome(failure: attempt(for: .closeCode(1006)))
    }

    private func pollSession(until: ContinuousClock.Instant?, client: HTTPClient) async -> Outcome {
        let welcomed = LinkFlags()
        let opened: LongPollLink?
        do {
            // Opening the session races "Reconnect now", which drops it (the HTTP client cancels the request).
            opened = try await withThrowingTaskGroup(of: LongPollLink?.self) { group in
                group.addTask {
                    try await LongPollLink.open(relayURL: configuration.relayURL, token: configuration.token,
                                                timeout: configuration.handshakeTimeout, client: client)
                }
                group.addTask {
                    await agent.waitForReconnect()
                    return nil
                }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
        } catch {
            return Outcome(failure: attempt(for: await LinkFailure.classify(error, url: configuration.relayURL, token: configuration.token)))
        }
        guard let link = opened else { return Outcome(retryNow: true) }
        welcomed.upgraded.store(true, ordering: .releasing)
        var session = SyncSession(agent: agent, configuration: configuration, logger: logger, welcomed: welcomed)
        session.endAt = until
        do {
            try await session.run(.longPolling(link))
            await link.close()
            return Outcome(welcomed: welcomed.welcomed.load(ordering: .relaxed), progressed: welcomed.progressed.load(ordering: .relaxed), failure: attempt(for: LinkProblem.closeCode(1000)))
        } catch is RetryWebSocket {
            await link.close()
            return Outcome(welcomed: true, retryWebSocket: true)
        } catch {
            if !(error is LinkProblem) { await link.close() }
            return Outcome(welcomed: welcomed.welcomed.load(ordering: .relaxed), progressed: welcomed.progressed.load(ordering: .relaxed),
                           failure: attempt(for: await LinkFailure.classify(error, url: configuration.relayURL, token: configuration.token)))
        }
    }

    private func attempt(for problem: LinkProblem) -> SyncStatus.Attempt {
        .init(at: Date(), errorClass: problem.code, message: problem.message, fix: problem.fix)
    }

    struct Outcome {
        var welcomed = false
        /// The relay acknowledged a push or sent operations or a snapshot on this link.
        var progressed = false
        var failure: SyncStatus.Attempt?
        /// A long-polling session ended on schedule to try the WebSocket again.
        var retryWebSocket = false
        /// "Reconnect now" abandoned the attempt before its handshake finished.
        var retryNow = false
    }

    /// One connection, from upgrade to close.
    func connectOnce() async -> Outcome {
        let welcomed = LinkFlags()
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(configuration.token)"
        let wsConfiguration = WebSocketClientConfiguration(
            maxFrameSize: ProtocolLimits.maxRelayMessageBytes,
            additionalHeaders: headers,
            extensions: [.perMessageDeflate(clientMaxWindow: 12, serverMaxWindow: 12, memoryLevel: 3,
                                            maxDecompressedFrameSize: ProtocolLimits.maxRelayMessageBytes, minFrameSizeToCompress: 64)],
            autoPing: .enabled(timePeriod: configuration.heartbeat)
        )
        // The client library can wait forever for an upgrade answer that never comes (the peer
        // read the request and closed), and then ignores cancellation. So the attempt runs in its
        // own task and a watchdog gives up on it when the handshake overruns, or at once on
        // "Reconnect now"; an abandoned attempt holds only its closed channel.
        let race = OnceContinuation<Outcome>()
        let timeout = configuration.handshakeTimeout
        let attempt = Task { race.resume(await self.attempt(wsConfiguration, welcomed: welcomed)) }
        race.onCancel { attempt.cancel() }
        let watchdog = Task {
            let requested = await agent.waitForReconnect(upTo: timeout)
            guard !Task.isCancelled, !welcomed.upgraded.load(ordering: .acquiring) else { return }
            let outcome = requested ? Outcome(retryNow: true) : Outcome(failure: self.attempt(for: LinkProblem.handshakeTimeout))
            if race.resume(outcome) {
                attempt.cancel()
                if !requested { logger.warning("relay handshake timed out; abandoning the attempt", metadata: ["timeout": "\(timeout)"]) }
            }
        }
        // The watchdog stops with the attempt, so it never takes a later "Reconnect now".
        defer { watchdog.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in race.set(continuation) }
        } onCancel: {
            race.cancel(with: Outcome())
        }
    }

    private func attempt(_ wsConfiguration: WebSocketClientConfiguration, welcomed: LinkFlags) async -> Outcome {
        do {
            let closeFrame = try await WebSocketClient.connect(url: configuration.relayURL, configuration: wsConfiguration, logger: logger) {
                inbound, outbound, _ in
                welcomed.upgraded.store(true, ordering: .releasing)
                let session = SyncSession(agent: agent, configuration: configuration, logger: logger, welcomed: welcomed)
                try await session.run(.webSocket(inbound, outbound))
            }
            let problem = LinkProblem.closeCode(closeFrame.map { UInt16(webSocketErrorCode: $0.closeCode) } ?? 1006)
            return Outcome(welcomed: welcomed.welcomed.load(ordering: .relaxed), progressed: welcomed.progressed.load(ordering: .relaxed),
                           failure: .init(at: Date(), errorClass: problem.code,
                                          message: problem.message + (closeFrame?.reason.map { " (\($0))" } ?? ""), fix: problem.fix))
        } catch {
            return Outcome(welcomed: welcomed.welcomed.load(ordering: .relaxed), progressed: welcomed.progressed.load(ordering: .relaxed),
                           failure: attempt(for: await LinkFailure.classify(error, url: configuration.relayURL, token: configuration.token)))
        }
    }
}

/// Maps a link failure to the shared `LinkProblem` classification (also used by `kanban doctor`).
enum LinkFailure {
    /// A refused upgrade whose cause the probes could not tell (or were not waited for).
    static let upgradeRefused = LinkProblem(code: "upgrade_refused", message: "The WebSocket upgrade was refused.",
                                            fix: "Run `kanban doctor --relay URL --token T`.")

    static func classify(_ error: any Error, url: String, token: String) async -> LinkProblem {
        if let wsError = error as? WebSocketClientError, wsError == .webSocketUpgradeFailed {
            // The probes block on sockets (up to 2 s each): on a Dispatch thread, not one of
            // Swift's few pool threads (the agent's API runs there), and a caller that is
            // cancelled (the agent stops) does not wait for them.
            return await Blocking.run { probeRefusedUpgrade(url: url, token: token) }
                ?? upgradeRefused
        }
        return classifyLocally(error)
    }

    /// The client library does not say what came back to a refused upgrade: ask again to learn
    /// why. First as an upgrade, which shows what a proxy in the way does to one (426: it dropped
    /// Upgrade; 200: it answered itself); an empty 400 says little, so then without the upgrade.
    private static func probeRefusedUpgrade(url: String, token: String) -> LinkProblem {
        guard case .success(let target) = RelayProbe.parse(url) else {
            return upgradeRefused
        }
        if case .success(let answer) = RelayProbe.upgrade(target, token: token, asUpgrade: true, timeout: 2) {
            if answer.status == 101 {
                return LinkProblem(code: "upgrade_failed", message: "The WebSocket upgrade failed, but the same upgrade works now.",
                                   fix: "Nothing to do if it does not recur; the agent retries. Otherwise run `kanban doctor`.")
            }
            if answer.status != 400 || !answer.body.isEmpty { return .upgradeStatus(answer.status, body: answer.body) }
        }
        if case .success(let answer) = RelayProbe.upgrade(target, token: token, asUpgrade: false, timeout: 2) {
            return answer.status == 426 ? LinkProblem(code: "upgrade_refused", message: "The relay refused the WebSocket upgrade.",
                                                      fix: "Run `kanban doctor` for the details.")
                                        : .upgradeStatus(answer.status, body: answer.body)
        }
        return upgradeRefused
    }

    /// Every failure but a refused upgrade: known from the error alone.
    private static func classifyLocally(_ error: any Error) -> LinkProblem {
        if let problem = error as? LinkProblem { return problem }
        if let violation = error as? ProtocolViolation {
            return violation.code == .versionMismatch ? .versionMismatch
                : LinkProblem(code: "protocol", message: "The relay sent something this agent does not understand: \(violation.message)",
                              fix: "Run the same kanban release on both sides.")
        }
        // The agent's own store, not the link: what the relay sent could not be stored here.
        if StoreError.isDiskFull(error) { return .localDiskFull }
        if StoreError.isDatabaseError(error) {
            return LinkProblem(code: "local_store", message: "This agent could not store what the relay sent: \(error)",
                               fix: "Check the agent's data directory (`kanban debug verify --data DIR`) and its log; the agent retries.")
        }
        let text = "\(error)".lowercased()
        if text.contains("refused") { return .refused }
        if text.contains("timed out") || text.contains("timeout") { return .timeout }
        if text.contains("resolve") || text.contains("getaddrinfo") || text.contains("dns") { return .dns }
        if text.contains("ssl") || text.contains("tls") || text.contains("certificate") { return .tls }
        return LinkProblem(code: "network", message: "The connection failed: \(error)", fix: "Run `kanban doctor` to walk the checks.")
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// Per-connection state shared by the session's loops.
final class LinkFlags: Sendable {
    /// The WebSocket upgrade completed.
    let upgraded = Atomic<Bool>(false)
    let welcomed = Atomic<Bool>(false)
    /// The relay acknowledged a push, or sent operations or a snapshot (`Outcome.progressed`).
    let progressed = Atomic<Bool>(false)
    /// Local seq of the last outbox entry sent on this connection.
    let pushed = Mutex<Int64>(0)
    /// Older outbox rows were queued again: the next push starts over from the outbox's start
    /// (set by whoever queued them, taken by the push loop, the only writer of `pushed`).
    let repush = Atomic<Bool>(false)
    /// The relay's welcome said this token may write.
    let writable = Atomic<Bool>(true)
    /// The welcome's team is the one this replica last synced with (or it never synced).
    let sameTeam = Atomic<Bool>(true)
    /// This replica's relay cursors as this link left them (from the hello's, advanced by every
    /// `ops` and `ack`), to notice at once a relay whose head is below them.
    let cursors = Mutex<[EntityID: Int64]>([:])
    /// Boards whose digest was already compared on this connection.
    let digested = Mutex<Set<EntityID>>([])
    /// Boards with acknowledgments since the acknowledgment loop last looked: an acknowledgment
    /// can settle a board (its last own operation stored) with no `ops` message after it.
    let acknowledgedBoards = Mutex<Set<EntityID>>([])
}

/// A continuation resumed by whichever of several racers comes first; later resumes are ignored.
final class OnceContinuation<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, Never>?
        /// A value that arrived before `set`.
        var early: T?
        var done = false
        var cancelled = false
        var cancelHook: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())

    func set(_ continuation: CheckedContinuation<T, Never>) {
        let early: T? = state.withLock { state in
            if state.early == nil { state.continuation = continuation }
            return state.early
        }
        if let early { continuation.resume(returning: early) }
    }

    /// Resumes with `value` unless a value was already given; true if this call won.
    @discardableResult
    func resume(_ value: T) -> Bool {
        let (won, waiting): (Bool, CheckedContinuation<T, Never>?) = state.withLock { state in
            if state.done { return (false, nil) }
            state.done = true
            if state.continuation == nil { state.early = value }
            defer { state.continuation = nil }
            return (true, state.continuation)
        }
        waiting?.resume(returning: value)
        return won
    }

    /// Runs `hook` when `cancel(with:)` is called, or now if it already was.
    func onCancel(_ hook: @escaping @Sendable () -> Void) {
        let already = state.withLock { state in
            state.cancelHook = hook
            return state.cancelled
        }
        if already { hook() }
    }

    /// Resumes with `value` (if nothing did yet) and runs the cancel hook.
    func cancel(with value: T) {
        let hook = state.withLock { state in
            state.cancelled = true
            return state.cancelHook
        }
        resume(value)
        hook?()
    }
}
