import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import KanbanModel
import KanbanProtocol
import KanbanStore
import Logging
import Synchronization
import NIOWebSocket

/// `GET /api/events?board=ID`: a WebSocket that sends the board document, then every change.
struct EventStream {
    let agent: Agent
    let policy: LocalhostPolicy

    /// Close code sent to a client that fell too far behind; it should reconnect.
    static let closeTooSlow: UInt16 = 4008

    func register(on router: Router<BasicWebSocketRequestContext>) {
        router.ws("api/events") { request, context in
            // hummingbird-websocket answers a refused upgrade with an empty 400, so the reason
            // goes to the agent's log (plain GETs of this path get the JSON reason from the
            // HTTP router).
            let refusal: String?
            if let hostRefusal = policy.hostRefusal(request) {
                refusal = hostRefusal.message
            } else if let originRefusal = policy.originRefusal(request.headers[.origin]) {
                refusal = originRefusal
            } else if let text = request.uri.queryParameters.get("board"), let board = EntityID(text),
                      (try? agent.store.document(board)) ?? nil != nil {
                refusal = nil
            } else {
                refusal = "?board= does not name a board on this agent"
            }
            if let refusal {
                context.logger.notice("event stream upgrade refused", metadata: ["reason": "\(refusal)"])
                return .dontUpgrade
            }
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            let board = EntityID(context.request.uri.queryParameters.get("board") ?? "")!
            try await stream(board: board, inbound: inbound, outbound: outbound, logger: context.logger)
        }
    }

    func stream(board: EntityID, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger) async throws {
        // Subscribe first, then read the snapshot: nothing committed in between can be missed.
        let (subscription, messages) = agent.hub.subscribe(board: board)
        guard let doc = try agent.store.document(board) else { return }
        try await send(try snapshot(doc), to: outbound)
        let since = VersionMark(doc.version)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // Clients may say which task they are editing: {"type":"presence","editing":ID|null}.
                agent.updatePresence(board: board, client: subscription, viewing: true)
                defer { agent.updatePresence(board: board, client: subscription, viewing: false) }
                for try await message in inbound.messages(maxSize: 64 * 1024) {
                    guard case .text(let text) = message,
                          let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                          object["type"] as? String == "presence"
                    else { continue }
                    let editing = (object["editing"] as? String).flatMap { EntityID($0) }
                    agent.updatePresence(board: board, client: subscription, viewing: true, editing: editing)
                }
            }
            group.addTask {
                for await message in messages {
                    switch message {
                    case .changes(let changes):
                        for published in changes where published.change.seq > since.value.load(ordering: .relaxed) {
                            try await outbound.write(.text(published.text))
                        }
                    case .status(let status):
                        try await send(StatusEvent(type: "sync:status", sync: status), to: outbound)
                    case .presence(let presence):
                        try await send(PresenceEvent(type: "presence", presence: presence), to: outbound)
                    case .resync:
                        guard let fresh = try agent.store.document(board) else { continue }
                        since.value.store(fresh.version, ordering: .relaxed)
                        try await send(try snapshot(fresh), to: outbound)
                    case .acknowledged(_, let ops):
                        try await send(AcknowledgedEvent(type: "sync:acked", ops: ops), to: outbound)
                    }
                }
                if agent.hub.didOverflow(subscription) {
                    try await outbound.close(.unknown(Self.closeTooSlow), reason: "too slow; reconnect for a fresh snapshot")
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    struct Snapshot: Encodable {
        let type: String
        let version: Int64
        let board: BoardDocument
        let sync: SyncStatus
        /// This agent's changes to the board that the relay has not acknowledged yet.
        let pending: [Agent.PendingChange]
    }

    /// The first message of a stream, and the one a resync sends.
    func snapshot(_ doc: BoardDocument) throws -> Snapshot {
        Snapshot(type: "snapshot", version: doc.version, board: doc, sync: agent.syncStatus, pending: try agent.pendingChanges(doc.id))
    }

    /// `{"type": "sync:acked", "ops": [...]}`: the relay stored these operations of this agent.
    struct AcknowledgedEvent: Encodable {
        let type: String
        let ops: [OperationID]
    }

    struct PresenceEvent: Encodable {
        let type: String
        let presence: SyncMessage.Presence
    }

    struct StatusEvent: Encodable {
        let type: String
        let sync: SyncStatus
    }

    func send(_ value: some Encodable, to outbound: WebSocketOutboundWriter) async throws {
        let data = try apiEncoder.encode(value)
        try await outbound.write(.text(String(decoding: data, as: UTF8.self)))
    }
}

/// The version a client's last snapshot included; changes at or below it are not sent again.
final class VersionMark: Sendable {
    let value: Atomic<Int64>
    init(_ version: Int64) { value = Atomic(version) }
}
