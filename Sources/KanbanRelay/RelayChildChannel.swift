import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// The relay's connections: plain HTTP/1.1 goes to Hummingbird's router; an upgrade to `/sync`
/// with a valid bearer token becomes a WebSocket served by NIO handlers (`RelayFrameHandler`,
/// `RelayConnection`), with no task kept per connection.
///
/// Why not hummingbird-websocket's channel: it serves each WebSocket from a task that lives as
/// long as the connection, and a task keeps the memory of the deepest call it ever made (its
/// async frames, in slabs of Swift's task allocator). With 2,000 idle connections that was
/// 19.6 KB of each connection's 34 KB (heaptrack, Tools/Benchmarks/RESULTS.md "Idle memory").
/// Here the connection's task ends once the upgrade is done; a connection's messages are handled
/// by a task that runs only while it has messages queued.
struct RelayChildChannel: ServerChildChannel, HTTPChannelHandler {
    enum Upgrade: Sendable {
        /// Upgraded: the NIO handlers serve the connection from here on.
        case webSocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade was asked for and refused (not `/sync`, or not a valid WebSocket request).
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, path: String)
    }

    struct Value: ServerChildChannelValue {
        let upgrade: EventLoopFuture<Upgrade>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let relay: Relay
    let logger: Logger

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Each connection keeps its last receive buffer for the next read; NIO starts them
            // at 2 KiB, much of an idle connection's footprint. Messages from agents are small
            // between bursts; the buffer grows while reads fill it.
            try channel.syncOptions?.setOption(ChannelOptions.recvAllocator,
                                               value: AdaptiveRecvByteBufferAllocator(minimum: 256, initial: 512, maximum: 65_536))
            let request = NIOLoopBoundBox(UpgradeRequest(), eventLoop: channel.eventLoop)
            let relay = self.relay
            let logger = self.logger
            let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                maxFrameSize: relay.configuration.maxMessageBytes,
                shouldUpgrade: { channel, head in
                    request.value.uri = head.uri
                    return channel.eventLoop.makeCompletedFuture { Self.accept(head, request: request, relay: relay) }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let token = request.value.token else { throw ChannelError.inappropriateOperationForState }
                        try RelayConnection.start(on: channel, token: token, deflate: request.value.deflate, relay: relay, logger: logger)
                        return .webSocket
                    }
                }
            )
            let idleTimeout = Duration.seconds(relay.configuration.httpIdleSeconds)
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration<Upgrade>(upgraders: [upgrader]) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: idleTimeout, logger: logger))
                    let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    if let path = request.value.uri { return .refused(http, path: path) }
                    return .notUpgraded(http)
                }
            }
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrades)
            // As Hummingbird's own HTTP/1 channel: its handler answers requests one at a time and
            // reports errors itself.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let pipeline = channel.pipeline.syncOperations
            let upgrade = try pipeline.configureUpgradableHTTPServerPipeline(configuration: configuration)
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(TokenGate(tokens: relay.tokens, request: request), position: .after(decoder))
            // Until its first request head has arrived a connection has no idle timer of its own
            // (HTTPConnectionStateHandler comes with the first request): one that never finishes
            // it is closed after the same idle time.
            let channel = channel
            let unfinished = channel.eventLoop.scheduleTask(in: .seconds(Int64(relay.configuration.httpIdleSeconds))) {
                channel.close(promise: nil)
            }
            upgrade.whenComplete { _ in unfinished.cancel() }
            return Value(upgrade: upgrade, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgrade.get() {
            case .webSocket:
                // Served by the channel's handlers; this task ends here and its memory goes back.
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let path):
                await refuse(http, path: path)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("connection closed before its first request was read")
        } catch {
            logger.debug("connection setup failed", metadata: ["error": "\(error)"])
        }
    }

    /// The upgrade response's extra headers, or nil to refuse: only `/sync`, only with the token
    /// `TokenGate` verified (it turned a tokenless upgrade into a plain request for the router's
    /// 401), with permessage-deflate when the client offered an acceptable one (kept in `request`
    /// for the connection).
    static func accept(_ head: HTTPRequestHead, request: NIOLoopBoundBox<UpgradeRequest>, relay: Relay) -> HTTPHeaders? {
        guard isSync(head.uri), request.value.token != nil else { return nil }
        var headers = HTTPHeaders()
        if let (parameters, response) = relay.hub.deflateSettings.negotiate(head.headers.extensionFields) {
            request.value.deflate = parameters
            headers.add(name: "Sec-WebSocket-Extensions", value: response)
        }
        return headers
    }

    static func isSync(_ uri: String) -> Bool { uri.split(separator: "?", maxSplits: 1).first == "/sync" }

    /// A refused upgrade: 400 with a JSON body saying why, and the connection closed.
    private func refuse(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, path: String) async {
        let message = Self.isSync(path)
            ? "the WebSocket upgrade request is not valid"
            : "\(path.prefix(200)) is not a WebSocket endpoint"
        let body = ["error": ["code": "upgrade_refused", "message": message,
                              "hint": "Upgrade GET /sync with Sec-WebSocket-Key and Sec-WebSocket-Version: 13 (RFC 6455)."]]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = ByteBuffer(bytes: (try? encoder.encode(body)) ?? Data("{}".utf8))
        do {
            try await http.executeThenClose { _, outbound in
                let head = HTTPResponse(status: .badRequest, headerFields: [
                    .connection: "close", .contentType: "application/json; charset=utf-8", .contentLength: "\(bytes.readableBytes)",
                ])
                try await outbound.write(contentsOf: [.head(head), .body(bytes), .end(nil)])
            }
        } catch {
            logger.trace("could not answer a refused upgrade", metadata: ["error": "\(error)"])
        }
    }
}

/// What one connection's upgrade learned, on its event loop: the target it asked for, the token
/// `TokenGate` verified, and the permessage-deflate parameters `accept` negotiated.
struct UpgradeRequest {
    var uri: String?
    var token: RelayToken?
    var deflate: DeflateParameters?
}

extension HTTPHeaders {
    /// The `Sec-WebSocket-Extensions` lines, as the extension parser takes them.
    var extensionFields: HTTPFields {
        var fields = HTTPFields()
        for value in self[canonicalForm: "sec-websocket-extensions"] {
            fields.append(HTTPField(name: .secWebSocketExtensions, value: String(value)))
        }
        return fields
    }
}

/// Looks at the first request head on a connection: an upgrade request without a valid token
/// loses its `Upgrade` header, so it reaches the router as a plain `GET /sync`, which answers 401
/// with a JSON body saying what is wrong with the token (an upgrader can only refuse with a bare
/// status). Removes itself after that head (only the first request of a connection can upgrade).
final class TokenGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    let tokens: TokenAuthority
    /// Where the verified token goes, for the upgrade.
    let request: NIOLoopBoundBox<UpgradeRequest>

    init(tokens: TokenAuthority, request: NIOLoopBoundBox<UpgradeRequest>) {
        self.tokens = tokens
        self.request = request
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        if head.headers.contains(name: "upgrade") {
            switch tokens.verify(authorization: head.headers.first(name: "authorization")) {
            case .success(let token):
                request.value.token = token
                context.fireChannelRead(data)
            case .failure:
                head.headers.remove(name: "upgrade")
                context.fireChannelRead(wrapInboundOut(.head(head)))
            }
        } else {
            context.fireChannelRead(data)
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
