import Foundation
public import KanbanModel
public import KanbanStore
public import KanbanProtocol
import Synchronization

/// Fans committed changes out to local subscribers (event-stream WebSockets, `kanban watch`).
///
/// Publishing never blocks the database writer: each subscriber has a bounded buffer, and a
/// subscriber that falls that far behind is ended with `overflowed` so it can reconnect and
/// start again from a fresh snapshot instead of silently missing events.
public final class EventHub: Sendable {
    public enum Message: Sendable {
        /// Committed changes, each with its event JSON encoded once for every subscriber.
        case changes([Published])
        case status(SyncStatus)
        case presence(SyncMessage.Presence)
        /// The board changed wholesale (a relay snapshot): clients should take a fresh snapshot.
        case resync(EntityID)
        /// The relay stored these operations of this agent's (no longer pending on the board).
        case acknowledged(EntityID, [OperationID])
    }

    public struct Published: Sendable {
        public let change: AppliedChange
        /// The `LocalEvent` JSON text sent to local WebSocket clients.
        public let text: String
    }

    struct Subscriber {
        let board: EntityID?
        let continuation: AsyncStream<Message>.Continuation
    }

    private let subscribers = Mutex<[Int: Subscriber]>([:])
    private let nextID = Atomic<Int>(0)
    private let overflowed = Mutex<Set<Int>>([])
    let bufferSize: Int

    public init(bufferSize: Int = 10_000) { self.bufferSize = bufferSize }

    /// A stream of messages for one board (or all boards with nil). Subscribe before reading the
    /// snapshot, then skip changes whose version the snapshot already includes.
    public func subscribe(board: EntityID?) -> (id: Int, stream: AsyncStream<Message>) {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<Message>.makeStream(bufferingPolicy: .bufferingOldest(bufferSize))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = Subscriber(board: board, continuation: continuation) }
        return (id, stream)
    }

    /// Whether a subscriber was ended because it fell behind.
    public func didOverflow(_ id: Int) -> Bool { overflowed.withLock { $0.remove(id) != nil } }

    public var subscriberCount: Int { subscribers.withLock { $0.count } }

    func publish(_ changes: [AppliedChange]) {
        // Runs after every commit: with no local client there is nothing to encode.
        guard subscribers.withLock({ !$0.isEmpty }) else { return }
        let visible = changes.filter(\.changed).map { change in
            Published(change: change, text: String(decoding: LocalEvent(change).jsonBytes(), as: UTF8.self))
        }
        guard !visible.isEmpty else { return }
        let targets = subscribers.withLock { Array($0) }
        for (id, subscriber) in targets {
            let mine = subscriber.board.map { board in visible.filter { $0.change.operation.board == board } } ?? visible
            guard !mine.isEmpty else { continue }
            if case .dropped = subscriber.continuation.yield(.changes(mine)) {
                overflowed.withLock { _ = $0.insert(id) }
                subscriber.continuation.finish()
            }
        }
    }

    func publish(_ status: SyncStatus) {
        for (_, subscriber) in subscribers.withLock({ Array($0) }) {
            subscriber.continuation.yield(.status(status))
        }
    }

    func publishPresence(_ presence: SyncMessage.Presence) {
        for (_, subscriber) in subscribers.withLock({ Array($0) }) where subscriber.board == nil || subscriber.board == presence.board {
            subscriber.continuation.yield(.presence(presence))
        }
    }

    /// Acknowledged operations, to the subscribers of their boards (with none, nothing is done).
    func publishAcknowledged(_ acks: [(op: OperationID, board: EntityID)]) {
        guard subscribers.withLock({ !$0.isEmpty }) else { return }
        var byBoard: [EntityID: [OperationID]] = [:]
        for ack in acks { byBoard[ack.board, default: []].append(ack.op) }
        for (_, subscriber) in subscribers.withLock({ Array($0) }) {
            for (board, ops) in byBoard where subscriber.board == nil || subscriber.board == board {
                subscriber.continuation.yield(.acknowledged(board, ops))
            }
        }
    }

    func publishResync(board: EntityID) {
        for (_, subscriber) in subscribers.withLock({ Array($0) }) where subscriber.board == nil || subscriber.board == board {
            subscriber.continuation.yield(.resync(board))
        }
    }
}
