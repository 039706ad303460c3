import Foundation
import KanbanModel
import KanbanProtocol
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import ServiceLifecycle
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
    /// On the channel's event loop, from the upgrade (which checked the token).
    static func start(on channel: any Channel, head: HTTPRequestHead, relay: Relay, logger: Logger) throws {
        guard case .success(let token) = relay.tokens.verify(authorization: head.headers.first(name: "authorization")) else {
            throw ChannelError.inappropriateOperationForState
        }
        let deflate = relay.hub.deflateSettings.negotiate(head.headers.extensionFields)?.0
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
            _ = pump.enqueue(OutboundItem(payload: ByteBuffer(string: message), compressed: false, size: message.utf8.count),
                             boundedByBytes: false)
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

/// The relay's side of a connection's close handshake (RFC 6455 7.1.2): one close frame at
/// most; the TCP connection closes when the peer answers (`RelayFrameHandler`) or `timeout` later.
final class CloseHandshake: Sendable {
    private let sent = Mutex(false)
    private let channel: any Channel
    static let timeout: TimeAmount = .seconds(10)

    init(channel: any Channel) { self.channel = channel }

    /// Whether a close frame went out (nothing may follow it).
    var isSent: Bool { sent.withLock { $0 } }

    /// Takes the right to send the close frame; false if one went out already.
    func claim() -> Bool {
        sent.withLock { sent in
            defer { sent = true }
            return !sent
        }
    }

    /// Sends a close frame unless one went out.
    func send(_ code: UInt16, _ reason: String) {
        guard claim() else { return }
        var payload = ByteBuffer()
        payload.writeInteger(code)
        payload.writeString(Self.fitting(reason))
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
        let channel = channel
        channel.eventLoop.execute {
            channel.writeAndFlush(frame, promise: nil)
            let timer = channel.eventLoop.scheduleTask(in: Self.timeout) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { _ in timer.cancel() }
        }
    }

    /// A close reason fits in 123 bytes of UTF-8 (a control frame's payload is at most 125).
    static func fitting(_ reason: String) -> String {
        guard reason.utf8.count > 123 else { return reason }
        var fitted = ""
        for character in reason {
            guard fitted.utf8.count + character.utf8.count <= 123 else { break }
            fitted.append(character)
        }
        return fitted
    }
}

/// The frames of an upgraded `/sync` connection: answers pings and closes, joins fragments,
/// inflates compressed messages (permessage-deflate, `client_no_context_takeover`: one inflater
/// per message), and hands each message to its `RelayConnection`. Frame decoding errors are
/// answered by NIO's `WebSocketProtocolErrorHandler` before this handler (close 1002 or 1009).
final class RelayFrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let connection: RelayConnection
    private let maxMessageBytes: Int
    /// The message being read (joined from its fragments), its kind and whether it is compressed.
    private var message: ByteBuffer?
    private var messageIsText = true
    private var messageIsCompressed = false
    private var inflater: Inflater?
    /// The connection was failed: nothing more is read.
    private var failed = false

    init(connection: RelayConnection, maxMessageBytes: Int) {
        self.connection = connection
        self.maxMessageBytes = maxMessageBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // After a failure only the peer's answer to the close frame counts.
        guard !failed || frame.opcode == .connectionClose else { return }
        // RSV1 is permessage-deflate's, on the first frame of a data message only (checked there).
        let control = frame.opcode == .ping || frame.opcode == .pong || frame.opcode == .connectionClose
        guard !frame.rsv2, !frame.rsv3, !(control && frame.rsv1) else {
            return fail(context, SyncCloseCode.protocolError, "reserved bits set (no extension negotiated uses them)")
        }
        switch frame.opcode {
        case .ping:
            // Nothing may follow a close frame, a pong neither.
            guard !connection.handshake.isSent else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break
        case .connectionClose:
            receivedClose(context, frame)
        case .text, .binary, .continuation:
            receivedData(context, frame)
        default:
            fail(context, SyncCloseCode.protocolError, "reserved opcode \(frame.opcode)")
        }
    }

    private func receivedData(_ context: ChannelHandlerContext, _ frame: WebSocketFrame) {
        if frame.opcode == .continuation {
            guard message != nil else { return fail(context, SyncCloseCode.protocolError, "a continuation frame with no message to continue") }
            guard !frame.rsv1 else { return fail(context, SyncCloseCode.protocolError, "RSV1 on a continuation frame") }
        } else {
            guard message == nil else { return fail(context, SyncCloseCode.protocolError, "a new message began before the last one ended") }
            guard !frame.rsv1 || connection.deflate != nil else {
                return fail(context, SyncCloseCode.protocolError, "a compressed frame without permessage-deflate negotiated")
            }
            message = ByteBuffer()
            messageIsText = frame.opcode == .text
            messageIsCompressed = frame.rsv1
        }
        var payload = frame.unmaskedData
        let joined = message?.readableBytes ?? 0
        if messageIsCompressed, let deflate = connection.deflate {
            if frame.fin { payload.writeBytes([0, 0, 0xff, 0xff]) }
            do {
                if inflater == nil { inflater = try Inflater(windowBits: deflate.receiveWindow) }
                let (inflated, ended) = try inflater!.inflate(&payload, limit: maxMessageBytes - joined)
                payload = inflated
                if ended || (frame.fin && deflate.receiveNoContextTakeover) { inflater = nil }
            } catch NIOWebSocketError.invalidFrameLength {
                return fail(context, SyncCloseCode.messageTooBig, "message larger than \(maxMessageBytes) bytes after decompression")
            } catch {
                return fail(context, SyncCloseCode.invalidPayload, "the compressed message does not inflate (permessage-deflate)")
            }
        }
        guard joined + payload.readableBytes <= maxMessageBytes else {
            return fail(context, SyncCloseCode.messageTooBig, "message larger than \(maxMessageBytes) bytes")
        }
        guard frame.fin else {
            message!.writeBuffer(&payload)
            return
        }
        var whole = payload
        if joined > 0 {
            message!.writeBuffer(&payload)
            whole = message!
        }
        message = nil
        let item: RelayConnection.Inbound
        if messageIsText {
            guard let text = whole.withUnsafeReadableBytes({ String(validating: $0, as: UTF8.self) }) else {
                return fail(context, SyncCloseCode.invalidPayload, "a text message that is not UTF-8")
            }
            item = .text(text)
        } else {
            item = .binary(whole.readableBytes)
        }
        if connection.deliver(item) {
            // Resumed by the connection once it has handled most of what is queued.
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
    }

    private func receivedClose(_ context: ChannelHandlerContext, _ frame: WebSocketFrame) {
        // Claimed before the input ends: the end lets the connection send its own close.
        let answering = connection.handshake.claim()
        _ = connection.deliver(.end)
        guard answering else {
            // The peer's answer to the relay's close: the relay closes the TCP connection.
            context.close(promise: nil)
            return
        }
        // The peer closes first: answer with its code (RFC 6455 5.5.1), then close.
        var data = frame.unmaskedData
        let code: UInt16
        switch data.readableBytes {
        case 0: code = SyncCloseCode.normal
        case 1: code = SyncCloseCode.protocolError
        default:
            let sent = data.readInteger(as: UInt16.self)!
            code = Self.isValidCloseCode(sent) ? sent : SyncCloseCode.protocolError
        }
        var reply = context.channel.allocator.buffer(capacity: 2)
        reply.writeInteger(code)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    /// Codes a peer may send in a close frame (RFC 6455 7.4).
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: true
        default: false
        }
    }

    /// Fails the connection (RFC 6455 7.1.7): a close frame with `code`; what the peer sends
    /// from here on is dropped, except its close, on which the TCP connection closes (or after
    /// the handshake's timeout). Closing at once could reset the connection while the peer is
    /// still writing, and it would never read the code. Messages already queued are handled.
    private func fail(_ context: ChannelHandlerContext, _ code: UInt16, _ reason: String) {
        failed = true
        message = nil
        inflater = nil
        connection.handshake.send(code, reason)
        _ = connection.deliver(.end)
    }

    func channelInactive(context: ChannelHandlerContext) {
        _ = connection.deliver(.end)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // The server is shutting down: what is queued goes out, then close 1001.
            connection.close(SyncCloseCode.goingAway, "the relay is shutting down")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Frame errors were answered with a close frame by NIO's error handler, which closes
        // the channel once it is written; anything else (a reset link): close now.
        if error is NIOWebSocketError { return }
        context.close(promise: nil)
    }
}

/// Upgraded WebSocket connections that have not finished yet, so a shutdown can wait for their
/// close handshakes (nothing else keeps the server waiting for them: no task serves them).
final class OpenSessions: Sendable {
    private struct State {
        var open = 0
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    var count: Int { state.withLock { $0.open } }

    func opened() { state.withLock { $0.open += 1 } }

    func closed() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open -= 1
            guard state.open == 0 else { return [] }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no session is open, or after `timeout`.
    func waitUntilNone(timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let key = state.withLock { state -> Int? in
                guard state.open > 0 else { return nil }
                state.nextWaiter += 1
                state.waiters[state.nextWaiter] = continuation
                return state.nextWaiter
            }
            guard let key else { return continuation.resume() }
            Task {
                try? await Task.sleep(for: timeout)
                self.state.withLock { $0.waiters.removeValue(forKey: key) }?.resume()
            }
        }
    }
}

/// On a graceful shutdown, after the server stopped accepting and asked every WebSocket to close
/// (1001), waits (at most `limit`) until their close handshakes and last acks are done, so the
/// relay's storage is closed only after them. Listed first among the services: shut down last.
struct RelaySessionsShutdown: Service {
    let sessions: OpenSessions
    var limit: Duration = .seconds(5)

    func run() async throws {
        try? await gracefulShutdown()
        await sessions.waitUntilNone(timeout: limit)
    }
}
