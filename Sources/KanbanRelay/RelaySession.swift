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

    /// `deflate`: what permessage-deflate negotiated (nil: none); the hub compresses what it
    /// queues accordingly, and the writer sends the frames as they are.
    func run(token: RelayToken, deflate: DeflateParameters?, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
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
        let queue = OutboundQueue<OutboundItem>(maxMessages: configuration.maxQueuedMessages, maxBytes: configuration.maxQueuedBytes)
        let closing = CloseRequest()
        let close = closing.closer(finishing: queue)
        let id = await hub.register(token: token, deflate: deflate.map(ConnectionDeflate.init),
                                    send: { item, live in queue.enqueue(item, boundedByBytes: live) }, close: close)
        defer { Task { [hub] in await hub.unregister(id) } }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let batch = await queue.next() {
                    for item in batch {
                        // Compressed (RSV1) by the hub, or meant to go as it is.
                        try await outbound.write(.custom(WebSocketFrame(fin: true, rsv1: item.compressed, opcode: .text, data: item.payload)))
                        traffic.sent(bytes: item.size)
                    }
                }
                if let (code, reason) = closing.value.withLock({ $0 }) {
                    try await outbound.close(WebSocketErrorCode(codeNumber: Int(code)), reason: reason)
                }
            }
            // The reader runs in this task (one task fewer per connection). Pushes are handed to
            // the hub without waiting for their commit (so one group commit can hold several of a
            // connection's pushes), at most `maxPipelinedPushes`.
            let pushes = PushWindow(limit: Self.maxPipelinedPushes)
            do {
                try await read(id, inbound: inbound, close: close, pushes: pushes)
            } catch {
                await pushes.drain()
                queue.finish()
                throw error
            }
            // Acks of pushes still being committed go out before the writer ends.
            await pushes.drain()
            queue.finish()
            try await group.next()
        }
    }

    /// Reads the connection's messages in order and hands them to the hub.
    private func read(_ id: Int, inbound: WebSocketInboundStream, close: @escaping @Sendable (UInt16, String) -> Void,
                      pushes: PushWindow) async throws {
        var reader = RelayInbound(id: id, hub: hub, configuration: configuration, logger: logger, traffic: traffic,
                                  close: close, pushes: pushes)
        for try await message in inbound.messages(maxSize: configuration.maxMessageBytes) {
            guard case .text(let text) = message else {
                if case .binary(let bytes) = message { traffic.received(bytes: bytes.readableBytes) }
                await reader.rejectBinary()
                return
            }
            guard try await reader.handle(text: text) else { return }
        }
    }

    /// Pushes one connection may have handed to the hub and not yet seen committed.
    static let maxPipelinedPushes = 32
}

/// The close a connection should end with, set by whoever decides to close it first.
final class CloseRequest: Sendable {
    let value = Mutex<(UInt16, String)?>(nil)

    /// The connection's close callback (for the hub and the message handler): the first code
    /// and reason stick, and `queue` stops taking messages. A connection dropped for being slow
    /// gets its close now, not after its backlog.
    func closer<Message>(finishing queue: OutboundQueue<Message>) -> @Sendable (UInt16, String) -> Void {
        { [self] code, reason in
            value.withLock { if $0 == nil { $0 = (code, reason) } }
            queue.finish(discardingQueued: code == SyncCloseCode.tooSlow)
        }
    }
}

/// Bounds a connection's pushes in flight (submitted to the hub, not yet committed).
final class PushWindow: Sendable {
    private struct State {
        var inFlight = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var drainers: [CheckedContinuation<Void, Never>] = []
        var failure: (any Error)?
    }
    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// A commit that failed (the connection is being closed).
    var failure: (any Error)? { state.withLock { $0.failure } }

    func fail(_ error: any Error) { state.withLock { if $0.failure == nil { $0.failure = error } } }

    /// Takes a slot, waiting while `limit` pushes are in flight.
    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.inFlight < limit {
                    state.inFlight += 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let resume: [CheckedContinuation<Void, Never>] = state.withLock { state in
            if !state.waiters.isEmpty {
                // The slot passes to the next waiter.
                return [state.waiters.removeFirst()]
            }
            state.inFlight -= 1
            guard state.inFlight == 0 else { return [] }
            defer { state.drainers = [] }
            return state.drainers
        }
        for continuation in resume { continuation.resume() }
    }

    /// Waits until no push is in flight.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.inFlight == 0 { return true }
                state.drainers.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
