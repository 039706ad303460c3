import Foundation
import HummingbirdWebSocket
import KanbanModel
import KanbanProtocol
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// One agent's WebSocket on the relay: reads its messages in order and hands them to the hub;
/// a writer task drains the connection's bounded outbound queue.
struct RelaySession {
    let hub: RelayHub
    let configuration: RelayConfiguration
    let logger: Logger
    let traffic: RelayTraffic

    func run(token: RelayToken, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        guard traffic.connections.acquire(token, limit: configuration.maxConnectionsPerToken) else {
            logger.notice("connection refused: too many for this token", metadata: ["team": "\(token.team)"])
            let message = SyncMessage.error(.init(code: "too_many_connections",
                message: "this token already has \(configuration.maxConnectionsPerToken) open connections", fatal: true))
            try await outbound.write(.text(message.text))
            try await outbound.close(WebSocketErrorCode(codeNumber: Int(SyncCloseCode.tooManyConnections)),
                                     reason: "connection limit per token reached")
            return
        }
        defer { traffic.connections.release(token) }
        let queue = OutboundQueue(maxMessages: configuration.maxQueuedMessages, maxBytes: configuration.maxQueuedBytes)
        let closing = CloseRequest()
        let close: @Sendable (UInt16, String) -> Void = { code, reason in
            closing.value.withLock { if $0 == nil { $0 = (code, reason) } }
            // A connection dropped for being slow gets its close frame now, not after its backlog.
            queue.finish(discardingQueued: code == SyncCloseCode.tooSlow)
        }
        let id = await hub.register(token: token, send: { text, live in queue.enqueue(text, boundedByBytes: live) }, close: close)
        defer { Task { [hub] in await hub.unregister(id) } }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let batch = await queue.next() {
                    for text in batch {
                        try await outbound.write(.text(text))
                        traffic.sent(bytes: text.utf8.count)
                    }
                }
                if let (code, reason) = closing.value.withLock({ $0 }) {
                    try await outbound.close(WebSocketErrorCode(codeNumber: Int(code)), reason: reason)
                }
            }
            group.addTask {
                defer { queue.finish() }
                var greeted = false
                var pushRate = TokenBucket(perSecond: configuration.maxOperationsPerSecond)
                for try await message in inbound.messages(maxSize: configuration.maxMessageBytes) {
                    guard case .text(let text) = message else {
                        if case .binary(let bytes) = message { traffic.received(bytes: bytes.readableBytes) }
                        await fail(id, close, .init(.malformed, "binary frames are not part of the protocol; send JSON text"))
                        return
                    }
                    traffic.received(bytes: text.utf8.count)
                    let decoded: SyncMessage
                    do {
                        decoded = try SyncMessage.decode(Data(text.utf8))
                    } catch let violation as ProtocolViolation {
                        await fail(id, close, violation)
                        return
                    } catch {
                        await fail(id, close, .init(.malformed, "message could not be read"))
                        return
                    }
                    if !greeted {
                        guard case .hello(let hello) = decoded else {
                            await fail(id, close, .init(.unexpected, "the first message must be hello"))
                            return
                        }
                        guard hello.protocol == SyncMessage.protocolVersion else {
                            await fail(id, close, .init(.versionMismatch,
                                "agent speaks protocol \(hello.protocol), this relay speaks \(SyncMessage.protocolVersion); upgrade the older side"),
                                code: SyncCloseCode.versionMismatch)
                            return
                        }
                        greeted = true
                        try await hub.hello(id, hello)
                        continue
                    }
                    switch decoded {
                    case .push(let push):
                        // Over the rate, the next read waits: the sender is slowed by TCP, nothing is dropped.
                        let wait = pushRate.take(push.ops.count)
                        if wait > .zero { try await Task.sleep(for: wait) }
                        try await hub.push(id, push.ops)
                    case .presence(let presence): await hub.presence(id, presence)
                    case .digest(let digest): try await hub.digest(id, digest)
                    case .ping(let ping):
                        await hub.send(id, .pong(.init(t: ping.t, serverTime: Int64(Date().timeIntervalSince1970 * 1000))))
                    default:
                        await fail(id, close, .init(.unexpected, "a relay does not accept '\(decoded.type)' from an agent"))
                        return
                    }
                }
            }
            try await group.next()
            try await group.next()
        }
    }

    private func fail(_ id: Int, _ close: @Sendable (UInt16, String) -> Void, _ violation: ProtocolViolation,
                      code: UInt16 = SyncCloseCode.badMessage) async {
        logger.notice("protocol violation", metadata: ["connection": "\(id)", "code": "\(violation.code.rawValue)"])
        await hub.send(id, .error(.init(code: violation.code.rawValue, message: violation.message, fatal: true)))
        close(code, String(violation.message.prefix(120)))
    }
}

/// The close a connection should end with, set by whoever decides to close it first.
final class CloseRequest: Sendable {
    let value = Mutex<(UInt16, String)?>(nil)
}
