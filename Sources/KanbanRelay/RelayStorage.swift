public import Foundation
public import KanbanModel
public import KanbanProtocol

/// The relay's durable log. Implementations: `SQLiteRelayStorage` (default).
public protocol RelayStorage: Sendable {
    /// Stores new operations with the next sequence of their board, in one transaction, and
    /// returns each operation's sequence (the first one, for operations stored before).
    /// Operations for a board owned by another team come back as `.forbidden`.
    func append(_ ops: [BoardOperation], team: String) throws -> [AppendResult]
    /// Operations of a board with sequence > `after`, in order, at most `limit`.
    func operations(board: EntityID, after: Int64, limit: Int) throws -> [SyncMessage.Ops.Sequenced]
    /// Boards of a team and their heads.
    func boards(team: String) throws -> [SyncMessage.BoardHead]
    func team(of board: EntityID) throws -> String?
    /// The token-signing secret, created on first use.
    func secret() throws -> Data
    func operationCount() throws -> Int
    /// The board's snapshot at the compaction horizon, if the board was compacted.
    func snapshot(board: EntityID) throws -> (seq: Int64, state: BoardSnapshot)?
    /// Replaces the operations up to `seq` with a snapshot of the state they produce. Their IDs
    /// stay known, so a late duplicate push is still answered with its first sequence.
    func compact(board: EntityID, through seq: Int64) throws
}

public enum AppendResult: Sendable, Hashable {
    case stored(op: OperationID, board: EntityID, seq: Int64, new: Bool)
    case forbidden(op: OperationID, board: EntityID)
}
