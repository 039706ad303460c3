public import KanbanModel
import KanbanStore
import HTTPTypes

/// What this agent holds that the relay does not have yet: a board's queued operations, and
/// throwing them away when the relay will never take them (a read-only token, a board outside
/// the token) or the user does not want them.
extension Agent {
    public struct QueuedChanges: Codable, Sendable {
        public let board: EntityID
        /// This agent's own operations on the board that no relay has acknowledged, oldest first.
        public let operations: [BoardOperation]
        /// Why the relay refuses them, when it does.
        public let refused: [SyncStatus.Refusal]
    }

    public struct DiscardedChanges: Codable, Sendable {
        public let board: EntityID
        /// The operations thrown away, oldest first (empty when nothing was queued).
        public let discarded: [OperationID]
        /// The board as it is now, or nil when it existed only through what was discarded.
        public let document: BoardDocument?
    }

    /// One of this agent's own changes the relay does not have yet: the operation and the
    /// entity it changes (what the web board marks on a card until the relay acknowledges it).
    public struct PendingChange: Encodable, Sendable {
        public let op: OperationID
        public let entity: EntityID
    }

    /// Empty for an agent without a relay: nothing waits for one there (every change is queued,
    /// and listing them all would only make each snapshot bigger).
    public func pendingChanges(_ board: EntityID) throws -> [PendingChange] {
        guard linkState != .disabled else { return [] }
        return try store.queuedTargets(board).map { PendingChange(op: $0.op, entity: $0.entity) }
    }

    public func queued(_ board: EntityID) throws -> QueuedChanges {
        let operations = try store.queuedOperations(board)
        if operations.isEmpty { _ = try document(board) }  // 404 for a board this agent does not know
        return QueuedChanges(board: board, operations: operations,
                             refused: syncStatus.refused.filter { $0.board == board.rawValue })
    }

    /// Refused without a relay (the changes exist nowhere else), and while the link is up and
    /// the relay takes the board's operations: a push of them may be on its way, and its
    /// acknowledgment would move the board's cursor past operations this replica no longer has.
    /// What the relay refuses is never stored, and while the link is down nothing is in flight
    /// (a push stored before the link fell comes back in catch-up).
    public func discardQueued(_ board: EntityID) async throws -> DiscardedChanges {
        let queued = try store.queuedCount(board)
        if queued == 0 { _ = try document(board) }  // 404 for a board this agent does not know
        let status = syncStatus
        if status.state == .disabled {
            throw AgentError(.conflict, code: "no_relay",
                             "this agent has no relay: every change is only on this machine, and discarding would delete them for good",
                             hint: "Delete what you do not want instead (it can be restored from the trash), or start the agent with --relay.")
        }
        if status.state == .connected, !status.refused.contains(where: { $0.board == board.rawValue }), queued > 0 {
            throw AgentError(.conflict, code: "syncing",
                             "this board's queued changes are being sent to the relay, which takes them",
                             hint: "Discarding is for changes the relay refuses, or for changes made offline while the agent is not connected.")
        }
        let discarded = try await store.discardQueued(board)
        let document = try store.document(board)
        guard !discarded.isEmpty else { return DiscardedChanges(board: board, discarded: [], document: document) }
        // Pages on the board redraw it from a fresh snapshot; the refusal has nothing left to refuse.
        hub.publishResync(board: board)
        updateSyncStatus { status in status.refused.removeAll { $0.board == board.rawValue } }
        return DiscardedChanges(board: board, discarded: discarded, document: document)
    }
}
