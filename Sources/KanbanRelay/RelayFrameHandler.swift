import KanbanProtocol
import NIOCore
import NIOWebSocket
import Synchronization

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
