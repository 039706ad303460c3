import Foundation
import HTTPTypes
import Hummingbird
import KanbanProtocol
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// HTTP long-polling: the fallback for agents whose WebSocket upgrade is blocked by something
/// in the way (a proxy that drops `Upgrade`). A session is one connection to the hub, exactly
/// like a WebSocket: the agent POSTs the same protocol messages one per request, in order, and
/// GETs what the relay queued for it. Replies are numbered batches; a batch stays with the
/// relay until the next poll confirms it (`after=N`), so a response lost on the way is sent
/// again and nothing is skipped. Protocol/sync-protocol.md describes the routes.
final class PollSession: Sendable {
    let id: String
    let token: RelayToken
    let connection: Int
    let queue: OutboundQueue<OutboundItem>
    /// Set when the hub or a protocol error closes the session; a poll then answers 410.
    let closing: CloseRequest
    /// Closes the session as the hub would close a WebSocket (the next poll answers 410).
    let close: @Sendable (UInt16, String) -> Void
    /// Serializes the agent's POSTs, so messages are handled in order and one at a time.
    let sendGate = AsyncGate()
    /// Serializes polls (a new poll first interrupts the one waiting).
    let pollGate = AsyncGate()
    /// Guarded by `sendGate`.
    nonisolated(unsafe) var reader: RelayInbound?
    /// Guarded by `pollGate`: the number of the last batch handed out and its messages, kept
    /// until the agent confirms it.
    nonisolated(unsafe) var sent = 0
    nonisolated(unsafe) var unconfirmed: [OutboundItem] = []
    private let activity = Mutex<(lastSeen: ContinuousClock.Instant, busy: Int)>((.now, 0))
    private let ended = Atomic<Bool>(false)

    init(id: String, token: RelayToken, connection: Int, queue: OutboundQueue<OutboundItem>, closing: CloseRequest,
         close: @escaping @Sendable (UInt16, String) -> Void) {
        self.id = id
        self.token = token
        self.connection = connection
        self.queue = queue
        self.closing = closing
        self.close = close
    }

    /// Marks a request in progress; a session with one in progress never expires.
    func begin() { activity.withLock { $0.busy += 1; $0.lastSeen = .now } }
    func finish() { activity.withLock { $0.busy -= 1; $0.lastSeen = .now } }

    func idle(longerThan limit: Duration) -> Bool {
        activity.withLock { $0.busy == 0 && ContinuousClock.now - $0.lastSeen > limit }
    }

    /// True the first time only: whoever ends the session releases what it holds.
    func markEnded() -> Bool { !ended.exchange(true, ordering: .acquiringAndReleasing) }
}

/// The relay's long-polling sessions by ID.
public final class PollSessions: Sendable {
    private let sessions = Mutex<[String: PollSession]>([:])

    var count: Int { sessions.withLock { $0.count } }

    func add(_ session: PollSession) { sessions.withLock { $0[session.id] = session } }
    func get(_ id: String) -> PollSession? { sessions.withLock { $0[id] } }
    func remove(_ id: String) { sessions.withLock { _ = $0.removeValue(forKey: id) } }
    var all: [PollSession] { sessions.withLock { Array($0.values) } }
}

/// A FIFO lock for async code: `enter` waits its turn, `leave` lets the next one in.
final class AsyncGate: Sendable {
    private let state = Mutex<(busy: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func enter() async {
        await withCheckedContinuation { continuation in
            let go = state.withLock { state in
                if !state.busy {
                    state.busy = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if go { continuation.resume() }
        }
    }

    func leave() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.busy = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

extension HTTPField.Name {
    /// The number of the batch a poll response carries; the next poll sends it as `after`.
    static let kanbanPollBatch = Self("Kanban-Poll-Batch")!
}

/// The long-polling routes under `/sync/poll` (a proxy that forwards `/sync` forwards them too).
struct LongPolling {
    let relay: Relay
    let logger: Logger
    var configuration: RelayConfiguration { relay.configuration }
    var sessions: PollSessions { relay.polls }

    func register(on router: Router<BasicRequestContext>) {
        router.post("sync/poll") { request, _ in await open(request) }
        router.post("sync/poll/:session") { request, context in
            await withSession(request, context) { session in await send(request, session) }
        }
        router.get("sync/poll/:session") { request, context in
            await withSession(request, context) { session in await poll(request, session) }
        }
        router.delete("sync/poll/:session") { request, context in
            await withSession(request, context) { session in
                await end(session)
                return Response(status: .noContent)
            }
        }
    }

    private func open(_ request: Request) async -> Response {
        let token: RelayToken
        switch verifiedToken(request) {
        case .failure(let refusal): return refusal.response
        case .success(let verified): token = verified
        }
        guard relay.traffic.connections.acquire(token, limit: configuration.maxConnectionsPerToken) else {
            return relayError(.tooManyRequests, code: "too_many_connections",
                              "this token already has \(configuration.maxConnectionsPerToken) open connections",
                              hint: "Stop other agents using the same token, or raise --max-connections-per-token on the relay.")
        }
        let queue = OutboundQueue<OutboundItem>(maxMessages: configuration.maxQueuedMessages, maxBytes: configuration.maxQueuedBytes)
        let closing = CloseRequest()
        let close = closing.closer(finishing: queue)
        // No permessage-deflate here: the hub queues each message as plain JSON text.
        let connection = await relay.hub.register(token: token, deflate: nil,
                                                  send: closing.sender { item, live in queue.enqueue(item, boundedByBytes: live) }, close: close)
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255) }
        let id = bytes.map { String(format: "%02x", $0) }.joined()
        let session = PollSession(id: id, token: token, connection: connection, queue: queue, closing: closing, close: close)
        session.reader = RelayInbound(id: connection, hub: relay.hub, configuration: configuration, logger: logger,
                                      traffic: relay.traffic, close: close)
        sessions.add(session)
        logger.info("long-polling session opened", metadata: ["session": "\(id.prefix(8))", "team": "\(token.team)"])
        return relayJSON(OpenAnswer(session: id, wait: configuration.pollWaitSeconds, protocol: SyncMessage.protocolVersion),
                         status: .created)
    }

    struct OpenAnswer: Encodable {
        let session: String
        /// Longest a poll waits for something to send, in seconds.
        let wait: Int
        let `protocol`: Int
    }

    /// Checks the token against the session's and runs `body` with the session marked busy.
    private func withSession(_ request: Request, _ context: BasicRequestContext,
                             _ body: (PollSession) async -> Response) async -> Response {
        let token: RelayToken
        switch verifiedToken(request) {
        case .failure(let refusal): return refusal.response
        case .success(let verified): token = verified
        }
        guard let id = context.parameters.get("session"), let session = sessions.get(id), session.token == token else {
            return relayError(.notFound, code: "poll_session_unknown", "no long-polling session with that ID (it ended or expired)",
                              hint: "Open a new one with POST /sync/poll and send hello again (the agent does by itself). "
                                  + "If it keeps happening with several relay instances behind a load balancer: a session lives in "
                                  + "the instance that opened it, so the balancer must send all of a client's /sync/poll requests "
                                  + "to one instance (hash on the client address, as Tools/nginx/kanban-relays.conf does).")
        }
        session.begin()
        defer { session.finish() }
        return await body(session)
    }

    /// One protocol message from the agent, handled before the answer (204) goes back.
    private func send(_ request: Request, _ session: PollSession) async -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: configuration.maxMessageBytes)
        } catch {
            return relayError(.contentTooLarge, code: "message_too_large",
                              "a message may be at most \(configuration.maxMessageBytes) bytes",
                              hint: "Split pushes into smaller batches.")
        }
        await session.sendGate.enter()
        defer { session.sendGate.leave() }
        guard var reader = session.reader else {
            return closedAnswer(session)
        }
        let text = String(decoding: body.readableBytesView, as: UTF8.self)
        do {
            let accepted = try await reader.handle(text: text)
            session.reader = accepted ? reader : nil
            return accepted ? Response(status: .noContent) : closedAnswer(session)
        } catch {
            // A refused append was logged by the hub, once for its run of failures.
            logger.log(level: error is AppendFailed ? .debug : .warning, "long-polling message failed",
                       metadata: ["session": "\(session.id.prefix(8))", "error": "\(error)"])
            session.reader = nil
            await end(session)
            if let failed = error as? AppendFailed, relayStoreIsFull(failed) {
                return relayError(.internalServerError, code: "relay_error", failed.closeReason,
                                  hint: "Retry later; the operations stay queued on the agent until the relay stores them.")
            }
            return relayError(.internalServerError, code: "relay_error", "the relay could not handle the message",
                              hint: "Reconnect; the relay's log has the details.")
        }
    }

    /// Waits up to the poll wait for messages, and answers them as one batch.
    private func poll(_ request: Request, _ session: PollSession) async -> Response {
        let after = request.uri.queryParameters.get("after", as: Int.self) ?? 0
        // A poll waiting from before (the agent gave up on it) answers empty and makes room.
        session.queue.interrupt()
        await session.pollGate.enter()
        defer { session.pollGate.leave() }
        // An interrupt left over from an earlier poll's timer or successor is not for this one.
        session.queue.clearInterrupt()
        if after == session.sent - 1, !session.unconfirmed.isEmpty {
            // The last answer was lost on the way: send it again.
            return batch(session.sent, session.unconfirmed)
        }
        guard after == session.sent else {
            await end(session)
            return relayError(.conflict, code: "poll_out_of_order",
                              "poll after batch \(after), but the relay's last batch is \(session.sent)",
                              hint: "Open a new session and send hello again; the cursors in hello catch up what was missed.")
        }
        session.unconfirmed = []
        let wait = min(max(request.uri.queryParameters.get("wait", as: Int.self) ?? configuration.pollWaitSeconds, 0),
                       configuration.pollWaitSeconds)
        let queue = session.queue
        let timer = Task {
            try await Task.sleep(for: .seconds(wait))
            queue.interrupt()
        }
        // A relay shutting down answers at once (410, close 1001) instead of holding the poll,
        // which would hold up the shutdown.
        let items = await withGracefulShutdownHandler {
            await queue.next()
        } onGracefulShutdown: {
            session.close(1001, "relay shutting down")
        }
        timer.cancel()
        guard let items else { return closedAnswer(session) }
        guard !items.isEmpty else { return batch(session.sent, []) }
        session.sent += 1
        session.unconfirmed = items
        return batch(session.sent, items)
    }

    private func batch(_ number: Int, _ items: [OutboundItem]) -> Response {
        var buffer = ByteBuffer()
        for (index, item) in items.enumerated() {
            if index > 0 { buffer.writeString("\n") }
            var payload = item.payload
            buffer.writeBuffer(&payload)
            relay.traffic.sent(bytes: item.size)
        }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson", .kanbanPollBatch: String(number)],
                        body: .init(byteBuffer: buffer))
    }

    /// The session was closed (protocol error, too slow): 410 with the close code, as a
    /// WebSocket would have closed.
    private func closedAnswer(_ session: PollSession) -> Response {
        let (code, reason) = session.closing.value.withLock { $0 } ?? (1000, "closed")
        Task { await end(session) }
        var response = relayJSON(ClosedAnswer(error: .init(code: "closed", message: reason,
                                                           hint: "Open a new session; the cursors in hello catch up what was missed."),
                                              close: Int(code)), status: .gone)
        response.headers[.connection] = "close"
        return response
    }

    struct ClosedAnswer: Encodable {
        struct Detail: Encodable { let code: String; let message: String; let hint: String }
        let error: Detail
        /// The WebSocket close code this corresponds to (Protocol/sync-protocol.md).
        let close: Int
    }

    /// Ends a session once: leaves the hub and frees its slot.
    func end(_ session: PollSession) async {
        guard session.markEnded() else { return }
        sessions.remove(session.id)
        session.queue.finish(discardingQueued: true)
        await relay.hub.unregister(session.connection)
        relay.traffic.connections.release(session.token)
        logger.info("long-polling session ended", metadata: ["session": "\(session.id.prefix(8))"])
    }

    /// A refused request's answer, carried as an error so `Result` can hold it.
    struct Refusal: Error {
        let response: Response
    }

    /// The request's bearer token, or the 401 that says what is wrong with it.
    private func verifiedToken(_ request: Request) -> Result<RelayToken, Refusal> {
        relay.tokens.verify(authorization: request.headers[.authorization]).mapError { failure in
            Refusal(response: relayError(.unauthorized, code: failure.code, failure.rawValue, hint: failure.hint))
        }
    }
}

/// Ends long-polling sessions nobody has used for `pollSessionTimeoutSeconds` (the agent went
/// away without saying so), which also clears their presence.
struct PollSessionReaper: Service {
    let polling: LongPolling

    func run() async throws {
        let limit = Duration.seconds(polling.configuration.pollSessionTimeoutSeconds)
        let period = min(Duration.seconds(5), limit / 2)
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                for session in polling.sessions.all where session.idle(longerThan: limit) {
                    await polling.end(session)
                }
            }
        }
    }
}
