public import Foundation
public import KanbanModel
public import KanbanProtocol

/// The relay's durable log. Implementations: `SQLiteRelayStorage` (default, one instance) and
/// `PostgresRelayStorage` (several instances on one database).
///
/// The requirements are async because a networked database answers asynchronously; the SQLite
/// implementation satisfies the short ones with synchronous methods, and awaits GRDB's reader
/// queues for the reads that can take long (a board's operations, its snapshot). The hub serializes the calls that
/// need an order (a board's append and delivery), not the storage.
public protocol RelayStorage: Sendable {
    /// Stores new operations with the next sequence of their board, in one transaction, and
    /// returns each operation's sequence (the first one, for operations stored before). A board's
    /// new operations get consecutive sequences, in the order given. Operations for a board
    /// owned by another team come back as `.forbidden`.
    func append(_ ops: [BoardOperation], team: String) async throws -> [AppendResult]
    /// Operations of a board with sequence > `after`, in order, at most `limit`.
    func operations(board: EntityID, after: Int64, limit: Int) async throws -> [SyncMessage.Ops.Sequenced]
    /// Boards of a team and their heads.
    func boards(team: String) async throws -> [SyncMessage.BoardHead]
    /// The board's highest sequence (0 for a board the relay does not know).
    func head(of board: EntityID) async throws -> Int64
    func team(of board: EntityID) async throws -> String?
    /// The token-signing secret, created on first use.
    func secret() async throws -> Data
    func operationCount() async throws -> Int
    /// The board's snapshot at the compaction horizon, if the board was compacted.
    func snapshot(board: EntityID) async throws -> (seq: Int64, state: BoardSnapshot)?
    /// The sequence of the board's snapshot, without reading the snapshot (a large board's
    /// takes a while to decode); nil when the board was not compacted. A default reads it
    /// through `snapshot`.
    func snapshotSeq(board: EntityID) async throws -> Int64?
    /// Replaces the operations up to `seq` with a snapshot of the state they produce. Their IDs
    /// stay known, so a late duplicate push is still answered with its first sequence.
    func compact(board: EntityID, through seq: Int64) async throws
    /// Records a token `kanban relay token create` issued (its ID and claims, not the token).
    func recordIssued(_ token: IssuedToken) async throws
    /// Every recorded token, oldest first, with when it was revoked.
    func issuedTokens() async throws -> [IssuedToken]
    /// Revokes the recorded token with this ID from now on.
    func revoke(tokenID: String) async throws -> RevokeResult
    /// IDs of the revoked tokens (what the relay refuses and disconnects).
    func revokedTokenIDs() async throws -> Set<String>
    /// The ID of the board's operation with sequence `seq`; nil when there is none or it was
    /// folded into a snapshot (what the hello's marks are checked against; a default reads it
    /// through `operations`).
    func operationID(board: EntityID, seq: Int64) async throws -> OperationID?
    /// Delivery between relay instances sharing this storage; nil for a single instance.
    var cluster: (any RelayCluster)? { get }
    /// Releases the storage when the relay stops (connections, listeners, background work);
    /// later calls fail.
    func close() async throws
}

extension RelayStorage {
    public var cluster: (any RelayCluster)? { nil }

    public func snapshotSeq(board: EntityID) async throws -> Int64? { try await snapshot(board: board)?.seq }

    public func operationID(board: EntityID, seq: Int64) async throws -> OperationID? {
        guard seq > 0 else { return nil }
        do {
            return try await operations(board: board, after: seq - 1, limit: 1).first { $0.seq == seq }?.op.id
        } catch let error as RelayError where error.compacted {
            return nil
        }
    }
}

public enum RevokeResult: Sendable, Hashable {
    case revoked
    case alreadyRevoked
    /// No token with that ID was recorded.
    case unknown
}

public enum AppendResult: Sendable, Hashable {
    case stored(op: OperationID, board: EntityID, seq: Int64, new: Bool)
    case forbidden(op: OperationID, board: EntityID)
}

/// Live delivery between relay instances that share one storage: operations another instance
/// committed, presence of agents connected elsewhere, and which instances are alive.
public protocol RelayCluster: Sendable {
    /// This process's instance ID (new on every start).
    var instance: String { get }
    /// What other instances published, in the order the database delivered it. One consumer.
    var events: AsyncStream<RelayClusterEvent> { get }
    /// Tells the other instances about a presence change of a connection on this instance.
    func publish(presence: SyncMessage.Presence, connection: Int) async throws
    /// Tells the other instances this one is alive (their presence entries expire otherwise).
    func publishAlive() async throws
}

public enum RelayClusterEvent: Sendable {
    /// Another instance committed `first...last` of a board; `ops` when they fit in the
    /// notification (otherwise read them from the log).
    case operations(board: EntityID, team: String, first: Int64, last: Int64, ops: [SyncMessage.Ops.Sequenced]?)
    case presence(instance: String, connection: Int, SyncMessage.Presence)
    case alive(instance: String)
    /// The listener (re)connected: notifications may have been missed; compare with the log.
    case resync
}
