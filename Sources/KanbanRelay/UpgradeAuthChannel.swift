import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1

/// The relay's connection setup: hummingbird-websocket's HTTP/1 + WebSocket channel, plus a
/// check of the bearer token before the upgrade is even considered.
///
/// hummingbird-websocket answers every refused upgrade with an empty 400. The sync protocol
/// promises a 401 with a JSON body saying what is wrong with the token, so an upgrade request
/// without a valid token has its `Upgrade` header removed before the upgrade handler sees it:
/// it then reaches the HTTP router as a plain `GET /sync`, whose handler answers the 401.
struct UpgradeAuthChannel: ServerChildChannel {
    typealias Value = HTTP1WebSocketUpgradeChannel.Value

    let inner: HTTP1WebSocketUpgradeChannel
    let tokens: TokenAuthority

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let value = inner.setup(channel: channel, logger: logger)
        do {
            // Each connection keeps its last receive buffer for the next read; NIO starts them
            // at 2 KiB, most of an idle connection's footprint besides its task. Messages from
            // agents are small between bursts; the buffer grows while reads fill it.
            try channel.syncOptions?.setOption(ChannelOptions.recvAllocator,
                                               value: AdaptiveRecvByteBufferAllocator(minimum: 256, initial: 512, maximum: 65_536))
            // The inner setup built its pipeline synchronously; go right behind the request decoder.
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(TokenGate(tokens: tokens), position: .after(decoder))
        } catch {
            logger.error("cannot install the token check; closing the connection", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
        return value
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Looks at the first request head on a connection: an upgrade request without a valid token
/// loses its `Upgrade` header. Removes itself after that head (only the first request of a
/// connection can upgrade).
final class TokenGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    let tokens: TokenAuthority

    init(tokens: TokenAuthority) { self.tokens = tokens }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        if head.headers.contains(name: "upgrade"),
           case .failure = tokens.verify(authorization: head.headers.first(name: "authorization")) {
            head.headers.remove(name: "upgrade")
            context.fireChannelRead(wrapInboundOut(.head(head)))
        } else {
            context.fireChannelRead(data)
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
