import CoreMetrics
import Foundation
import KanbanModel
import KanbanProtocol
import KanbanStore
import Logging
import Synchronization
import WSClient

/// How a session reaches the relay: a WebSocket, or HTTP long-polling when the upgrade is
/// blocked. The protocol messages are the same on both.
enum SyncTransport: Sendable {
    case webSocket(WebSocketInboundStream, WebSocketOutboundWriter)
    case longPolling(LongPollLink)

    /// As `/health/websocket` reports it.
    var name: String {
        switch self {
        case .webSocket: "websocket"
        case .longPolling: "long-polling"
        }
    }
}

/// A long-polling session ending on schedule so the WebSocket is tried again.
struct RetryWebSocket: Error {}

/// The protocol on one live connection: hello, then three loops: apply what arrives, push the
/// outbox, and probe round-trip time.
struct SyncSession {
    let agent: Agent
    let configuration: SyncConfiguration
    let logger: Logger
    let welcomed: LinkFlags
    /// When set, the session ends then (long-polling in `auto` mode, to try the WebSocket again).
    var endAt: ContinuousClock.Instant? = nil

    var store: ReplicaStore { agent.store }

    func run(_ transport: SyncTransport) async throws {
        let hello = SyncMessage.hello(.init(replica: store.replicaID, cursors: try store.cursors(), client: "kanban-agent"))
        try await send(hello, transport)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                switch transport {
                case .webSocket(let inbound, _):
                    for try await message in inbound.messages(maxSize: ProtocolLimits.maxRelayMessageBytes) {
                        guard case .text(let text) = message else { throw ProtocolViolation(.malformed, "binary frame from relay") }
                        try await receive(text, transport)
                    }
                case .longPolling(let link):
                    var after = 0
                    while !Task.isCancelled {
                        let (batch, messages) = try await link.poll(after: after)
                        for text in messages { try await receive(text, transport) }
                        after = batch
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    await agent.localChange.wait()
                    if welcomed.welcomed.load(ordering: .relaxed) { try await pushOutbox(transport) }
                }
            }
            group.addTask {
                // Presence and other messages other parts of the agent send while the link is up.
                let (extra, continuation) = AsyncStream<SyncMessage>.makeStream(bufferingPolicy: .bufferingNewest(256))
                agent.setRelayLink { continuation.yield($0) }
                defer { agent.setRelayLink(nil) }
                for await message in extra { try await send(message, transport) }
            }
            group.addTask {
                // First probe at once, so the round-trip time and clock skew are known as soon as
                // the link is up (the board's status panel shows them), then every probeInterval.
                while !Task.isCancelled {
                    let now = Int64(Date().timeIntervalSince1970 * 1000)
                    try await send(.ping(.init(t: now)), transport)
                    try await Task.sleep(for: configuration.probeInterval)
                }
            }
            if let until = endAt {
                // Long-polling in `auto` mode ends here so the WebSocket is tried again.
                group.addTask {
                    try await Task.sleep(until: until)
                    throw RetryWebSocket()
                }
            }
            // The link is over when the inbound stream ends or any loop fails.
            try await group.next()
            group.cancelAll()
        }
    }

    /// One message from the relay.
    private func receive(_ text: String, _ transport: SyncTransport) async throws {
        agent.metrics.received(bytes: text.utf8.count)
        let decoded = try SyncMessage.decode(Data(text.utf8), limit: ProtocolLimits.maxRelayMessageBytes)
        try await handle(decoded, transport)
        if case .welcome = decoded {
            // Push whatever is queued now that the relay knows us.
            agent.localChange.fire()
        }
    }

    /// Every message to the relay goes through here, so the byte and message counters see it.
    func send(_ message: SyncMessage, _ transport: SyncTransport) async throws {
        try await send(text: message.text, transport)
    }

    func send(text: String, _ transport: SyncTransport) async throws {
        switch transport {
        case .webSocket(_, let outbound): try await outbound.write(.text(text))
        case .longPolling(let link): try await link.send(text)
        }
        agent.metrics.sent(bytes: text.utf8.count)
    }

    func pushOutbox(_ transport: SyncTransport) async throws {
        while true {
            let after = welcomed.pushed.withLock { $0 }
            // The operations' JSON as logged: nothing is decoded and encoded again.
            let batch = try store.outboxJSON(after: after, limit: configuration.pushBatch)
            guard !batch.isEmpty else { return }
            // A push must stay under the relay's message limit (1 MiB): up to 500 operations of
            // up to 64 KiB each would not, so the batch is cut by size as well.
            var encoded: [[UInt8]] = []
            var bytes = 64
            var last = after
            for entry in batch {
                let json = entry.json
                if !encoded.isEmpty && bytes + json.count + 1 > Self.maxPushBytes { break }
                encoded.append(json)
                bytes += json.count + 1
                last = entry.seq
            }
            try await send(text: SyncMessage.pushText(encodedOperations: encoded), transport)
            welcomed.pushed.withLock { $0 = max($0, last) }
        }
    }

    /// Payload budget of one push, under `ProtocolLimits.maxMessageBytes` with room to spare.
    static let maxPushBytes = ProtocolLimits.maxMessageBytes - 64 * 1024

    func handle(_ message: SyncMessage, _ transport: SyncTransport) async throws {
        switch message {
        case .welcome(let welcome):
            guard welcome.protocol == SyncMessage.protocolVersion else {
                throw ProtocolViolation(.versionMismatch, "relay speaks protocol \(welcome.protocol), agent \(SyncMessage.protocolVersion)")
            }
            welcomed.welcomed.store(true, ordering: .relaxed)
            agent.metrics.linkConnects.increment()
            agent.metrics.linkUp.record(1)
            let skew = welcome.serverTime - Int64(Date().timeIntervalSince1970 * 1000)
            agent.updateSyncStatus { status in
                status.state = .connected
                status.connectedSince = Date()
                status.lastError = nil
                status.consecutiveFailures = 0
                status.team = welcome.team
                status.clockSkewMs = skew
                status.transport = transport.name
                if case .longPolling = transport {
                    status.compression = "none (HTTP long-polling)"
                } else {
                    status.compression = "permessage-deflate (requested)"
                    status.fallbackReason = nil
                    status.webSocketRetryAt = nil
                }
            }
            logger.info("relay link up", metadata: ["team": "\(welcome.team)", "boards": "\(welcome.boards.count)"])
        case .ops(let batch):
            if let last = batch.ops.last {
                try await store.apply(batch.ops.map(\.op), cursors: [batch.board: last.seq])
            }
            // Once per board per link, when caught up with nothing of ours in flight, compare digests.
            if !welcomed.digested.withLock({ $0.contains(batch.board) }) {
                let cursor = try store.cursors()[batch.board] ?? 0
                if cursor == batch.head, !(try store.outboxHasOperations(for: batch.board)) {
                    welcomed.digested.withLock { _ = $0.insert(batch.board) }
                    let digest = try store.digest(batch.board)
                    try await send(.digest(.init(board: batch.board, seq: cursor, digest: digest)), transport)
                }
            }
            if let last = batch.ops.last {
                agent.updateSyncStatus(publish: false) { $0.cursors[batch.board.rawValue] = max($0.cursors[batch.board.rawValue] ?? 0, last.seq) }
            }
        case .ack(let ack):
            var cursors: [EntityID: Int64] = [:]
            for entry in ack.acks { cursors[entry.board] = max(cursors[entry.board] ?? 0, entry.seq) }
            try await store.acknowledge(ack.acks.map(\.op), cursors: cursors)
            agent.updateSyncStatus { status in
                for (board, seq) in cursors { status.cursors[board.rawValue] = max(status.cursors[board.rawValue] ?? 0, seq) }
            }
        case .snapshot(let snapshot):
            try store.applySnapshot(snapshot.state, seq: snapshot.seq)
            agent.hub.publishResync(board: snapshot.board)
        case .digestResult(let result):
            if !result.match {
                agent.updateSyncStatus { $0.repairs += 1 }
                logger.warning("digest mismatch after catch-up; relay is resending the board", metadata: ["board": "\(result.board)"])
            }
        case .pong(let pong):
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let rtt = Double(now - pong.t)
            agent.updateSyncStatus(publish: false) { status in
                status.roundTripMs = rtt
                status.clockSkewMs = pong.serverTime - (pong.t + Int64(rtt / 2))
            }
        case .presence(let presence):
            agent.hub.publishPresence(presence)
        case .error(let error):
            logger.warning("relay refused", metadata: ["code": "\(error.code)", "message": "\(error.message)"])
            agent.updateSyncStatus { $0.lastError = "\(error.code): \(error.message)" }
        case .hello, .push, .digest, .ping:
            throw ProtocolViolation(.unexpected, "an agent does not accept '\(message.type)' from a relay")
        }
    }

}
