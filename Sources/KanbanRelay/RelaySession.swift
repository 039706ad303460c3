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
                var reader = RelayInbound(id: id, hub: hub, configuration: configuration, logger: logger, traffic: traffic, close: close)
                for try await message in inbound.messages(maxSize: configuration.maxMessageBytes) {
                    guard case .text(let text) = message else {
                        if case .binary(let bytes) = message { traffic.received(bytes: bytes.readableBytes) }
                        await reader.rejectBinary()
                        return
                    }
                    guard try await reader.handle(text: text) else { return }
                }
            }
            try await group.next()
            try await group.next()
        }
    }
}

/// The close a connection should end with, set by whoever decides to close it first.
final class CloseRequest: Sendable {
    let value = Mutex<(UInt16, String)?>(nil)
}
