public import Foundation
import GRDB
public import KanbanModel
public import KanbanProtocol
import KanbanStore
import Synchronization

/// The relay log in one SQLite file (WAL, synchronous=FULL: an ack means the op is on disk).
public final class SQLiteRelayStorage: RelayStorage {
    let pool: DatabasePool
    /// Checkpoints outside the commits that acks wait for.
    let checkpointer: WALCheckpointer
    /// Appends waiting for the writer's next transaction.
    let appendQueue: GroupCommit<AppendJob>
    /// Transactions that stored appends (for tests).
    private let appendTransactions = Atomic<Int>(0)
    /// Called on the reader as a compaction starts folding (for tests).
    let compactionWillFold = Mutex<(@Sendable () -> Void)?>(nil)

    /// Appends waiting for a transaction, and transactions that stored appends (for tests).
    var appendQueueCounts: (waiting: Int, transactions: Int) { (appendQueue.waiting, appendTransactions.load(ordering: .relaxed)) }

    struct AppendJob: Sendable {
        let ops: [BoardOperation]
        let team: String
        let continuation: CheckedContinuation<[AppendResult], any Error>
    }

    public init(path: String) throws {
        // synchronous=FULL: an ack means the operation is on disk.
        pool = try WALCheckpointer.openPool(path: path, fullSync: true)
        appendQueue = GroupCommit(writer: pool)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE relay_meta (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) STRICT;
                CREATE TABLE relay_board (
                    id TEXT PRIMARY KEY NOT NULL,
                    team TEXT NOT NULL,
                    head INTEGER NOT NULL CHECK (head >= 0)
                ) STRICT;
                CREATE INDEX relay_board_by_team ON relay_board (team);
                CREATE TABLE relay_op (
                    board_id TEXT NOT NULL REFERENCES relay_board (id),
                    seq INTEGER NOT NULL CHECK (seq > 0),
                    op_id TEXT NOT NULL UNIQUE,
                    body TEXT, -- NULL once compacted into relay_snapshot
                    PRIMARY KEY (board_id, seq)
                ) STRICT, WITHOUT ROWID;
                CREATE TABLE relay_snapshot (
                    board_id TEXT PRIMARY KEY NOT NULL REFERENCES relay_board (id),
                    seq INTEGER NOT NULL CHECK (seq > 0),
                    body TEXT NOT NULL
                ) STRICT;
                """)
        }
        migrator.registerMigration("v2 tokens") { db in
            try db.execute(sql: """
                CREATE TABLE relay_token (
                    id TEXT PRIMARY KEY NOT NULL,
                    team TEXT NOT NULL,
                    boards TEXT, -- JSON array; NULL: every board of the team
                    write INTEGER NOT NULL,
                    issued_at INTEGER NOT NULL,
                    revoked_at INTEGER
                ) STRICT;
                """)
        }
        try migrator.migrate(pool)
        checkpointer = try WALCheckpointer(path: path, writer: pool)
    }

    /// Stops the background checkpoints and closes the log's connections (SQLite folds the
    /// write-ahead log into the file). Later calls fail with a "connection is closed" error.
    public func close() throws {
        checkpointer.stop()
        try pool.close()
    }

    /// Stores pushed operations and returns each one's sequence, once they are on disk.
    ///
    /// Group commit: appends that arrive while a transaction commits wait, without holding a
    /// thread, and the next transaction stores all of them (one commit, one fsync). The hub
    /// commits each board on its own, so with many busy boards most of its appends come
    /// together; one synced transaction each made the writer the relay's bottleneck (100 boards
    /// at 1,000 operations/s, and a blocked thread of Swift's two-thread pool per waiting
    /// append). A database error fails every append of its transaction, which rolls back.
    public func append(_ ops: [BoardOperation], team: String) async throws -> [AppendResult] {
        try await withCheckedThrowingContinuation { continuation in
            appendQueue.submit(AppendJob(ops: ops, team: team, continuation: continuation)) { db, jobs in
                self.commitAppends(jobs, in: db)
            }
        }
    }

    /// On the writer (`GroupCommit`): stores the waiting appends in one transaction.
    private func commitAppends(_ jobs: [AppendJob], in db: Database) {
        var results: [[AppendResult]] = []
        do {
            try db.inTransaction(.immediate) {
                results = try jobs.map { try Self.append($0.ops, team: $0.team, in: db) }
                return .commit
            }
            appendTransactions.add(1, ordering: .relaxed)
            for (job, result) in zip(jobs, results) { job.continuation.resume(returning: result) }
        } catch {
            for job in jobs { job.continuation.resume(throwing: error) }
        }
    }

    /// One append's operations, inside the writer's open transaction: a new operation gets the
    /// board's next sequence, a known one its first, another team's board a refusal.
    private static func append(_ ops: [BoardOperation], team: String, in db: Database) throws -> [AppendResult] {
        var results: [AppendResult] = []
        results.reserveCapacity(ops.count)
        for op in ops {
            let board = op.board.rawValue
            let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT team, head FROM relay_board WHERE id = ?"), arguments: [board])
            var head: Int64 = 0
            if let row {
                guard (row["team"] as String) == team else {
                    results.append(.forbidden(op: op.id, board: op.board))
                    continue
                }
                head = row["head"]
            } else {
                try db.cachedStatement(sql: "INSERT INTO relay_board (id, team, head) VALUES (?, ?, 0)").execute(arguments: [board, team])
            }
            if let existing = try Row.fetchOne(db.cachedStatement(sql: "SELECT board_id, seq FROM relay_op WHERE op_id = ?"),
                                               arguments: [op.id.description]) {
                guard let existingBoard = EntityID(existing["board_id"] as String) else { continue }
                results.append(.stored(op: op.id, board: existingBoard, seq: existing["seq"], new: false))
                continue
            }
            let seq = head + 1
            try db.cachedStatement(sql: "INSERT INTO relay_op (board_id, seq, op_id, body) VALUES (?, ?, ?, ?)")
                .execute(arguments: [board, seq, op.id.description, op.jsonString()])
            try db.cachedStatement(sql: "UPDATE relay_board SET head = ? WHERE id = ?").execute(arguments: [seq, board])
            results.append(.stored(op: op.id, board: op.board, seq: seq, new: true))
        }
        return results
    }

    /// On one of GRDB's reader queues, not the caller's thread: a batch of thousands takes tens of
    /// milliseconds to decode, which would hold one of Swift's cooperative threads (as many as
    /// there are cores) from the pushes and acknowledgments that need them.
    public func operations(board: EntityID, after: Int64, limit: Int) async throws -> [SyncMessage.Ops.Sequenced] {
        try await pool.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT seq, body FROM relay_op WHERE board_id = ? AND seq > ? ORDER BY seq LIMIT ?
                """), arguments: [board.rawValue, after, limit]).map { row in
                guard let body: String = row["body"] else { throw RelayError.compacted(board, row["seq"]) }
                guard let op = try? BoardOperation.decode(json: Data(body.utf8)) else {
                    throw RelayError.corrupt("operation at \(board)#\(row["seq"] as Int64) does not decode")
                }
                return SyncMessage.Ops.Sequenced(seq: row["seq"], op: op)
            }
        }
    }

    public func boards(team: String) throws -> [SyncMessage.BoardHead] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, head FROM relay_board WHERE team = ? ORDER BY id", arguments: [team]).compactMap { row in
                EntityID(row["id"] as String).map { SyncMessage.BoardHead(id: $0, head: row["head"]) }
            }
        }
    }

    public func head(of board: EntityID) throws -> Int64 {
        try pool.read { db in try Int64.fetchOne(db, sql: "SELECT head FROM relay_board WHERE id = ?", arguments: [board.rawValue]) ?? 0 }
    }

    public func team(of board: EntityID) throws -> String? {
        try pool.read { db in try String.fetchOne(db, sql: "SELECT team FROM relay_board WHERE id = ?", arguments: [board.rawValue]) }
    }

    public func recordIssued(_ token: IssuedToken) throws {
        let boards = token.boards.map { String(decoding: try! JSONEncoder().encode($0), as: UTF8.self) }
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO relay_token (id, team, boards, write, issued_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO NOTHING
                """, arguments: [token.id, token.team, boards, token.write, token.issuedAt, token.revokedAt])
        }
    }

    public func issuedTokens() throws -> [IssuedToken] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, team, boards, write, issued_at, revoked_at FROM relay_token ORDER BY issued_at, id").map { row in
                let boards = (row["boards"] as String?).flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
                var token = IssuedToken(id: row["id"], token: RelayToken(team: row["team"], boards: boards, write: row["write"],
                                                                          issuedAt: row["issued_at"]))
                token.revokedAt = row["revoked_at"]
                return token
            }
        }
    }

    public func revoke(tokenID: String) throws -> RevokeResult {
        try pool.write { db in
            guard let revokedAt = try Row.fetchOne(db, sql: "SELECT revoked_at FROM relay_token WHERE id = ?", arguments: [tokenID])
            else { return .unknown }
            if (revokedAt[0] as Int64?) != nil { return .alreadyRevoked }
            try db.execute(sql: "UPDATE relay_token SET revoked_at = ? WHERE id = ?", arguments: [Int64(Date().timeIntervalSince1970), tokenID])
            return .revoked
        }
    }

    public func revokedTokenIDs() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, sql: "SELECT id FROM relay_token WHERE revoked_at IS NOT NULL")) }
    }

    public func secret() throws -> Data {
        try pool.write { db in
            if let existing = try Data.fetchOne(db, sql: "SELECT value FROM relay_meta WHERE key = 'token_secret'") { return existing }
            let secret = TokenAuthority.makeSecret()
            try db.execute(sql: "INSERT INTO relay_meta (key, value) VALUES ('token_secret', ?)", arguments: [secret])
            return secret
        }
    }

    /// On a reader queue, as `operations`: a large board's snapshot takes a while to decode.
    public func snapshot(board: EntityID) async throws -> (seq: Int64, state: BoardSnapshot)? {
        try await pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT seq, body FROM relay_snapshot WHERE board_id = ?", arguments: [board.rawValue])
            else { return nil }
            guard let snapshot = try? JSONDecoder().decode(BoardSnapshot.self, from: Data((row["body"] as String).utf8)) else {
                throw RelayError.corrupt("snapshot of \(board) does not decode")
            }
            return (row["seq"], snapshot)
        }
    }

    public func snapshotSeq(board: EntityID) async throws -> Int64? {
        try await pool.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM relay_snapshot WHERE board_id = ?"), arguments: [board.rawValue])
        }
    }

    /// Folds the board's operations through `seq` into its snapshot and drops their bodies.
    ///
    /// Folding 150,000 operations takes seconds, so it runs on a reader, not on the writer that
    /// every append (and its ack) waits for; the writer only stores the result, then drops the
    /// folded bodies a chunk per transaction. A compaction of the same board that stored its
    /// snapshot meanwhile wins, and this one stores nothing. Until its bodies are dropped, an
    /// operation at or below the snapshot's sequence may still have one: readers go by the
    /// snapshot's sequence, not by which bodies are left.
    public func compact(board: EntityID, through seq: Int64) async throws {
        let folded: (from: Int64, through: Int64, body: String)? = try await pool.read { db in
            var state = BoardState(id: board)
            var from: Int64 = 0
            if let row = try Row.fetchOne(db, sql: "SELECT seq, body FROM relay_snapshot WHERE board_id = ?", arguments: [board.rawValue]) {
                from = row["seq"]
                guard from < seq else { return nil }
                state = try JSONDecoder().decode(BoardSnapshot.self, from: Data((row["body"] as String).utf8)).state
            }
            self.compactionWillFold.withLock { $0 }?()
            let rows = try Row.fetchCursor(db, sql: """
                SELECT seq, body FROM relay_op WHERE board_id = ? AND seq > ? AND seq <= ? ORDER BY seq
                """, arguments: [board.rawValue, from, seq])
            var through: Int64?
            while let row = try rows.next() {
                guard let body: String = row["body"], let op = try? BoardOperation.decode(json: Data(body.utf8)) else {
                    throw RelayError.corrupt("operation \(board)#\(row["seq"] as Int64) does not decode")
                }
                state.apply(op)
                through = row["seq"]
            }
            guard let through else { return nil }
            return (from, through, String(decoding: try JSONEncoder().encode(BoardSnapshot(state)), as: UTF8.self))
        }
        guard let folded else { return }
        let stored = try await pool.write { db -> Bool in
            let current = try Int64.fetchOne(db, sql: "SELECT seq FROM relay_snapshot WHERE board_id = ?", arguments: [board.rawValue]) ?? 0
            guard current == folded.from else { return false }
            try db.execute(sql: "INSERT OR REPLACE INTO relay_snapshot (board_id, seq, body) VALUES (?, ?, ?)",
                           arguments: [board.rawValue, folded.through, folded.body])
            return true
        }
        guard stored else { return }
        var low = folded.from
        while low < folded.through {
            let (from, high) = (low, min(low + Self.bodiesDroppedPerTransaction, folded.through))
            try await pool.write { db in
                try db.execute(sql: "UPDATE relay_op SET body = NULL WHERE board_id = ? AND seq > ? AND seq <= ?",
                               arguments: [board.rawValue, from, high])
            }
            low = high
        }
    }

    /// Folded operations whose bodies one transaction drops (a short wait for appends behind it).
    static let bodiesDroppedPerTransaction: Int64 = 1_000

    /// Operations in the log: the sum of the boards' heads (rows are never deleted and each
    /// board's sequence has no gaps), so the figure costs a row per board, not per operation.
    public func operationCount() throws -> Int {
        try pool.read { db in try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(head), 0) FROM relay_board") ?? 0 }
    }
}

public struct RelayError: Error, Sendable, CustomStringConvertible {
    public let description: String
    /// The operations asked for were folded into the board's snapshot after the reader looked
    /// at it: read the snapshot again and go on from it.
    public var compacted = false
    static func corrupt(_ detail: String) -> RelayError { RelayError(description: "relay log is damaged: \(detail)") }
    static func compacted(_ board: EntityID, _ seq: Int64) -> RelayError {
        RelayError(description: "operation \(board)#\(seq) was compacted; read the snapshot first", compacted: true)
    }
}

extension SQLiteRelayStorage {
    /// The writer connection's `PRAGMA synchronous` (2: FULL), for the durability test.
    func writerSynchronousLevel() throws -> Int {
        try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }
}
