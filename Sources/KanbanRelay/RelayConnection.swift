import KanbanProtocol
import Logging
import NIOCore
import Synchronization

/// One agent's WebSocket on the relay, after the upgrade: the messages `RelayFrameHandler`
/// reads go to the hub in order, and what the hub sends goes out through the connection's
/// bounded `OutboundPump`.
///
/// No task waits on an idle connection. A message that finds the connection's queue empty starts
/// a task that hands the queued messages to `RelayInbound` one after the other and ends when the
/// queue is empty; the next message starts another. (A task keeps the memory of the deepest call
/// it ever made until it ends: one per idle connection was most of what a relay with thousands
/// of them held; see `RelayChildChannel`.)
final class RelayConnection: Sendable {
    enum Inbound: Sendable {
        case text(String)
        /// A binary message (not part of the protocol) of this many bytes.
        case binary(Int)
        /// The input ended (close frame, a failed connection, or the TCP link went away).
        case end
    }

    private struct State {
        var queue: [Inbound] = []
        /// A task is taking messages from `queue` (from the start: the first one registers the
        /// connection with the hub).
        var running = true
        /// Set once registered; each drain takes it, and puts it back when it stops.
        var reader: RelayInbound?
        var id: Int?
        /// Reading is paused: too many messages queued.
        var paused = false
        /// `.end` was queued: nothing after it is.
        var ended = false
        /// The connection stopped handling messages (its end, or a broken protocol).
        var done = false
    }

    let deflate: DeflateParameters?
    let handshake: CloseHandshake
    let activity: InboundActivity
    /// Asks the connection to close with a code and reason (the hub, the message handler,
    /// a server shutdown): the first one sticks; queued messages go out first, then the close.
    let close: @Sendable (UInt16, String) -> Void
    private let token: RelayToken
    private let relay: Relay
    private let logger: Logger
    private let channel: any Channel
    private let pump: OutboundPump
    private let pushes: PushWindow
    private let closing: CloseRequest
    private let state = Mutex(State())

    /// Pushes one connection may have handed to the hub and not yet seen committed.
    static let maxPipelinedPushes = 32
    /// Messages queued and not yet handled at which reading pauses, and at which it resumes.
    static let pauseReadingAt = 16
    static let resumeReadingAt = 4

    private init(relay: Relay, token: RelayToken, deflate: DeflateParameters?, channel: any Channel, logger: Logger) {
        self.relay = relay
        self.token = token
        self.deflate = deflate
        self.channel = channel
        self.logger = logger
        let configuration = relay.configuration
        let traffic = relay.traffic
        let closing = CloseRequest()
        let handshake = CloseHandshake(channel: channel)
        pump = OutboundPump(channel: channel, maxMessages: configuration.maxQueuedMessages, maxBytes: configuration.maxQueuedBytes,
                            sent: { traffic.sent(bytes: $0) }) {
            // After the last queued message: the close that was asked for, or a normal one (a
            // no-op when the peer closed first or the link is gone).
            let (code, reason) = closing.value.withLock { $0 } ?? (SyncCloseCode.normal, "")
            handshake.send(code, reason)
        }
        self.handshake = handshake
        self.closing = closing
        close = closing.closer(finishing: pump)
        activity = InboundActivity(channel: channel)
        pushes = PushWindow(limit: Self.maxPipelinedPushes)
    }

    /// Takes over an upgraded `/sync` connection: adds the handlers and starts registering it.
    /// On the channel's event loop, from the upgrade, with the token it verified and the
    /// permessage-deflate parameters it negotiated (nil: none).
    static func start(on channel: any Channel, token: RelayToken, deflate: DeflateParameters?, relay: Relay, logger: Logger) throws {
        let connection = RelayConnection(relay: relay, token: token, deflate: deflate, channel: channel, logger: logger)
        let pipeline = channel.pipeline.syncOperations
        // First in the pipeline: it sees every byte, pongs included (`RelayHeartbeat`).
        try pipeline.addHandler(connection.activity, position: .first)
        try pipeline.addHandler(RelayFrameHandler(connection: connection, maxMessageBytes: relay.configuration.maxMessageBytes))
        relay.sessions.opened()
        Task { await connection.open() }
    }

    /// Registers with the hub (or refuses a token over its connection limit), then handles
    /// whatever arrived meanwhile.
    private func open() async {
        let traffic = relay.traffic
        let limit = relay.configuration.maxConnectionsPerToken
        guard traffic.connections.acquire(token, limit: limit) else {
            logger.notice("connection refused: too many for this token", metadata: ["team": "\(token.team)"])
            let message = SyncMessage.error(.init(code: "too_many_connections",
                message: "this token already has \(limit) open connections", fatal: true)).text
            _ = pump.enqueue(.plain(message), boundedByBytes: false)
            close(SyncCloseCode.tooManyConnections, "connection limit per token reached")
            await stop()
            return
        }
        let pump = self.pump
        let id = await relay.hub.register(token: token, deflate: deflate.map(ConnectionDeflate.init),
                                          send: closing.sender { item, live in pump.enqueue(item, boundedByBytes: live) }, close: close,
                                          activity: activity)
        let reader = RelayInbound(id: id, hub: relay.hub, configuration: relay.configuration, logger: logger, traffic: traffic,
                                  close: close, pushes: pushes)
        state.withLock { state in
            state.id = id
            state.reader = reader
        }
        await drain()
    }

    /// Queues a message read from the connection (on its event loop); true when reading should
    /// pause until the queue shrinks.
    func deliver(_ item: Inbound) -> Bool {
        let (start, pause, newlyPaused) = state.withLock { state -> (Bool, Bool, Bool) in
            guard !state.done, !state.ended else { return (false, false, false) }
            if case .end = item { state.ended = true }
            state.queue.append(item)
            defer { state.running = true }
            guard state.queue.count >= Self.pauseReadingAt else { return (!state.running, false, false) }
            defer { state.paused = true }
            // Paused again even when already paused: a resume the drain sent just before may
            // still be on its way to the event loop.
            return (!state.running, true, !state.paused)
        }
        if start { Task { await self.drain() } }
        if newlyPaused { relay.traffic.readPaused() }
        return pause
    }

    /// Hands the queued messages to the reader in order until the queue is empty.
    private func drain() async {
        guard var reader = state.withLock({ $0.reader }) else { return }
        while true {
            let (next, resume) = state.withLock { state -> (Inbound?, Bool) in
                guard !state.queue.isEmpty else {
                    state.reader = reader
                    state.running = false
                    return (nil, false)
                }
                let next = state.queue.removeFirst()
                guard state.paused, state.queue.count <= Self.resumeReadingAt else { return (next, false) }
                state.paused = false
                return (next, true)
            }
            guard let next else { return }
            if resume { channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in } }
            switch next {
            case .text(let text):
                do {
                    if try await reader.handle(text: text) { continue }
                } catch let failed as AppendFailed {
                    // Logged by the hub, once for its run of failed appends.
                    logger.debug("connection closed: its push was not stored", metadata: ["error": "\(failed)"])
                    close(SyncCloseCode.internalError, failed.closeReason)
                } catch {
                    logger.error("connection failed", metadata: ["error": "\(error)"])
                    close(SyncCloseCode.internalError, "the relay could not handle the message")
                }
            case .binary(let size):
                relay.traffic.received(bytes: size)
                await reader.rejectBinary()
            case .end:
                break
            }
            await stop()
            return
        }
    }

    /// The connection handles nothing more: acks of pushes still being committed and anything
    /// queued go out, then the close; then it leaves the hub.
    private func stop() async {
        let id = state.withLock { state in
            state.done = true
            state.queue = []
            return state.id
        }
        await pushes.drain()
        pump.finish()
        await pump.ended()
        if let id {
            await relay.hub.unregister(id)
            relay.traffic.connections.release(token)
        }
        relay.sessions.closed()
    }
}
