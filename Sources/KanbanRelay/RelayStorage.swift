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
}

public enum AppendResult: Sendable, Hashable {
    case stored(op: OperationID, board: EntityID, seq: Int64, new: Bool)
    case forbidden(op: OperationID, board: EntityID)
}
