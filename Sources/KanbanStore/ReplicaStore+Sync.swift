public import KanbanModel
import GRDB
import Synchronization

/// The agent's side of relay sync: the outbox of unacknowledged local operations and the
/// per-board cursors of relay sequences already applied.
extension ReplicaStore {
    /// The oldest unacknowledged local operations, in authoring order.
    public func outbox(limit: Int = 1_000) throws -> [BoardOperation] {
        try writeRecordedAcknowledgments()
        return try writer.read { db in
            try String.fetchAll(db, sql: """
                SELECT op.body FROM outbox JOIN op ON op.seq = outbox.seq ORDER BY outbox.seq LIMIT ?
                """, arguments: [limit]).map { try Self.decodeLogged($0) }
        }
    }

    /// Unacknowledged local operations logged after local sequence `seq`, oldest first.
    public func outbox(after seq: Int64, limit: Int) throws -> [(seq: Int64, op: BoardOperation)] {
        try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT outbox.seq, op.body FROM outbox JOIN op ON op.seq = outbox.seq
                WHERE outbox.seq > ? ORDER BY outbox.seq LIMIT ?
                """, arguments: [seq, limit]).map { row in (row["seq"], try Self.decodeLogged(row["body"])) }
        }
    }

    /// `outbox(after:limit:)` as the operations' logged JSON, which is what a push sends: no
    /// decoding and encoding again on the way out. Leaves out operations already acknowledged.
    public func outboxJSON(after seq: Int64, limit: Int) throws -> [(seq: Int64, json: [UInt8])] {
        // The sync session runs this after every local commit: usually the tail in memory has it.
        if let recent = outboxTail.withLock({ $0.entries(after: seq, limit: limit) }) { return recent }
        // From the table, which still holds acknowledgments only recorded: written first, so
        // both paths leave out what the relay has.
        try writeRecordedAcknowledgments()
        // One statement (see `lookUpBoard`).
        return try writer.unsafeRead { db in
            let rows = try Row.fetchCursor(db.cachedStatement(sql: """
                SELECT outbox.seq, op.body FROM outbox JOIN op ON op.seq = outbox.seq
                WHERE outbox.seq > ? ORDER BY outbox.seq LIMIT ?
                """), arguments: [seq, limit])
            var entries: [(seq: Int64, json: [UInt8])] = []
            while let row = try rows.next() {
                let body: String = row[1]
                entries.append((row[0], Array(body.utf8)))
            }
            return entries
        }
    }

    /// The board's relay cursor and the digest of its state, taken together on the writer
    /// between transactions; nil while a local operation of the board is unacknowledged (the
    /// digest would cover it before the relay does). Checking the outbox on a reader and then
    /// hashing the mirror is not enough: a local edit changes the mirror inside its transaction,
    /// before its outbox row is committed, and can commit between the two.
    public func settledDigest(_ board: EntityID) async throws -> (seq: Int64, digest: String)? {
        let settled: (seq: Int64, state: BoardState)? = try await writer.writeWithoutTransaction { db in
            try self.flushAcknowledgments(in: db)
            let pending = try Bool.fetchOne(db, sql: "SELECT 1 FROM outbox JOIN op ON op.seq = outbox.seq WHERE op.board_id = ? LIMIT 1",
                                            arguments: [board.rawValue]) ?? false
            if pending { return nil }
            let seq = try Int64.fetchOne(db, sql: "SELECT seq FROM cursor WHERE board_id = ?", arguments: [board.rawValue]) ?? 0
            try self.ensureLoaded(board, in: db)
            return (seq, self.cache.withLock { $0.boards[board]! })
        }
        // Hashed off the writer: the state is a copy.
        return settled.map { (seq: $0.seq, digest: $0.state.digest) }
    }

    /// Rebuilds the board's tables and in-memory state from its own operation log (and relay
    /// snapshot), in one transaction. A digest mismatch after catch-up usually means operations
    /// are missing, which the relay's resend supplies; but when the log is complete and the
    /// materialized state still differs (a damaged row, a bug), resending operations that are
    /// all known changes nothing: this does. Returns whether the state changed.
    @discardableResult
    public func rematerialize(_ board: EntityID) throws -> Bool {
        try write { db in try self.rebuildFromLog(board, in: db) }
    }

    /// Inside a write transaction: replaces the board's rows and mirror with the state its log
    /// (and snapshot) gives, if that differs. Returns whether it did.
    private func rebuildFromLog(_ board: EntityID, in db: Database) throws -> Bool {
        try ensureLoaded(board, in: db)
        let rebuilt = try Self.stateFromLog(board, in: db)
        let changed = cache.withLock { cache -> Bool in
            guard cache.boards[board]?.digest != rebuilt.digest else { return false }
            cache.touched.insert(board)
            cache.boards[board] = rebuilt
            return true
        }
        guard changed else { return false }
        // The rebuilt board may lack entities the index has seen in it (kept answers must stay true).
        boardIndex.withLock { index in index = index.filter { $0.value != board } }
        try db.execute(sql: "DELETE FROM tasks WHERE board_id = ?", arguments: [board.rawValue])
        try db.execute(sql: "DELETE FROM board_columns WHERE board_id = ?", arguments: [board.rawValue])
        try Self.save(.board(board), of: rebuilt, in: db)
        for id in rebuilt.columns.keys { try Self.save(.column(id), of: rebuilt, in: db) }
        for id in rebuilt.tasks.keys { try Self.save(.task(id), of: rebuilt, in: db) }
        return true
    }

    /// The rows of this replica's own operations on a board (`?`) that wait for a relay's
    /// acknowledgment: what `queuedCount`, `queuedOperations`, `queuedTargets` and
    /// `discardQueued` read.
    static let queuedOfBoard = "FROM outbox JOIN op ON op.seq = outbox.seq WHERE op.board_id = ? AND op.local = 1"

    /// How many of this replica's own operations on the board wait for a relay's acknowledgment.
    public func queuedCount(_ board: EntityID) throws -> Int {
        try writeRecordedAcknowledgments()
        return try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) \(Self.queuedOfBoard)", arguments: [board.rawValue]) ?? 0
        }
    }

    /// This replica's own operations on the board that wait for a relay's acknowledgment, oldest first.
    public func queuedOperations(_ board: EntityID) throws -> [BoardOperation] {
        try writeRecordedAcknowledgments()
        return try writer.read { db in
            try String.fetchAll(db, sql: "SELECT op.body \(Self.queuedOfBoard) ORDER BY op.seq", arguments: [board.rawValue])
                .map { try Self.decodeLogged($0) }
        }
    }

    /// What each of the board's queued operations changes (its task, its column, or the board
    /// itself), oldest first: the cards a page marks as not on the relay yet. Read from the
    /// logged JSON by SQLite, without decoding the operations, since a page loads it on every
    /// open and a long time offline can queue thousands (10,000 took 150 ms to decode). The key
    /// an action's target is under is fixed by the operation codec; `QueuedTargetsTests` checks
    /// this against `Action.target` for every kind.
    public func queuedTargets(_ board: EntityID) throws -> [(op: OperationID, entity: EntityID)] {
        try writeRecordedAcknowledgments()
        return try writer.read { db in
            let sql = """
                SELECT op.id, coalesce(json_extract(op.body, '$.task'), json_extract(op.body, '$.column'), op.board_id)
                \(Self.queuedOfBoard) ORDER BY op.seq
                """
            let rows = try Row.fetchCursor(db, sql: sql, arguments: [board.rawValue])
            var targets: [(op: OperationID, entity: EntityID)] = []
            while let row = try rows.next() {
                let opText: String = row[0], entityText: String = row[1]
                guard let op = OperationID(opText), let entity = EntityID(entityText) else {
                    throw StoreError.corrupt("queued operation '\(opText)' names no entity it changes ('\(entityText)')")
                }
                targets.append((op, entity))
            }
            return targets
        }
    }

    /// Throws away this replica's own operations on the board that no relay has acknowledged
    /// (what a relay refuses, a read-only token's edits, offline edits the user does not want),
    /// and rebuilds the board from the rest of its log, in one transaction. Returns how many
    /// went. A board this replica created and never got acknowledged is gone afterwards.
    ///
    /// The rows stay in the log under a marker (`board_id` and `id` prefixed with
    /// `discarded:`), so no board reads them, their IDs are free again, and the log's sequence
    /// (its largest rowid plus one, a version clients compare) never goes back. An operation
    /// the relay had stored although its acknowledgment never arrived comes back with the
    /// relay's catch-up and is applied again: nothing the team has is undone here.
    public func discardQueued(_ board: EntityID) async throws -> [OperationID] {
        try await writer.writeWithoutTransaction { db in
            // `transaction` writes recorded acknowledgments first: those operations are kept.
            try self.transaction(db) { db in
                let rows = try Row.fetchAll(db, sql: "SELECT op.seq, op.id \(Self.queuedOfBoard) ORDER BY op.seq",
                                            arguments: [board.rawValue])
                guard !rows.isEmpty else { return [] }
                var discarded: [OperationID] = []
                for row in rows {
                    let seq: Int64 = row["seq"]
                    let text: String = row["id"]
                    guard let id = OperationID(text) else { throw StoreError.corrupt("operation ID '\(text)' in the outbox does not parse") }
                    try db.execute(sql: "DELETE FROM outbox WHERE seq = ?", arguments: [seq])
                    try db.execute(sql: """
                        UPDATE op SET id = 'discarded:' || seq || ':' || id, board_id = 'discarded:' || board_id WHERE seq = ?
                        """, arguments: [seq])
                    discarded.append(id)
                }
                _ = try self.rebuildFromLog(board, in: db)
                // After the commit: a rollback must leave the tail covering the rows it kept.
                let gone = discarded
                db.afterNextTransaction(onCommit: { _ in self.outboxTail.withLock { $0.remove(gone) } })
                return gone
            }
        }
    }

    /// For a relay that holds fewer of the board's operations than this replica received from it
    /// (restored from an older copy of its log): forgets the board's relay cursor, so that the
    /// relay's catch-up from its start is taken in and the cursor is rebuilt from it, and queues
    /// every operation of the board in this log, this replica's and others', to be pushed again.
    /// The relay stores the ones it lost (with new sequences, so every replica gets them) and
    /// acknowledges the others with their first sequence. Returns how many joined the outbox.
    /// Operations that reached this replica only folded into a relay snapshot cannot be pushed.
    /// `forgetCursor: false` keeps the cursor (a digest mismatch with the cursor at the relay's
    /// head: the relay has everything up to it, this replica may have more); `push: false` only
    /// forgets it (a read-only token: the relay would refuse the pushes).
    public func requeueForRelay(_ board: EntityID, forgetCursor: Bool = true, push: Bool = true) async throws -> Int {
        try await writer.writeWithoutTransaction { db in
            try self.transaction(db) { db in
                // Acknowledgments recorded before (their cursors from the relay's lost history)
                // were written by this transaction first; the cursor goes after them.
                if forgetCursor {
                    try db.execute(sql: "DELETE FROM cursor WHERE board_id = ?", arguments: [board.rawValue])
                }
                guard push else { return 0 }
                let top = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM op") ?? 0
                try db.execute(sql: "INSERT OR IGNORE INTO outbox (seq) SELECT seq FROM op WHERE board_id = ?",
                               arguments: [board.rawValue])
                let queued = db.changesCount
                // The tail holds the newest outbox rows only: these older ones are read from the table.
                self.outboxTail.withLock { $0.raiseFloor(to: top) }
                return queued
            }
        }
    }

    public func outboxCount() throws -> Int {
        // Acknowledged operations are not counted: written first if any are only recorded.
        try writeRecordedAcknowledgments()
        // One statement: no read transaction around it (see `lookUpBoard`).
        return try writer.unsafeRead { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM outbox")) ?? 0 }
    }

    /// Drops acknowledged operations from the outbox, advancing cursors in the same transaction.
    ///
    /// The commit is not synced to disk, even with `full` durability: losing it to a power cut
    /// loses nothing. The operations are durable here (their own commits were synced) and at the
    /// relay (it stores before it acknowledges); an acknowledgment lost with the machine means
    /// they are pushed again, and the relay acknowledges a known operation again with its first
    /// sequence. A lost cursor advance means operations are received again and skipped as known.
    /// Nothing later can survive without it either: the next synced commit syncs the whole log,
    /// this commit included, and recovery stops at the first frame that did not reach the disk.
    /// One fsync less per pushed operation, on the writer every local edit waits for.
    public func acknowledge(_ ids: [OperationID], cursors: [EntityID: Int64] = [:], marks: [EntityID: OperationID] = [:]) throws {
        try writer.writeWithoutTransaction { db in try self.commitAcknowledgment(ids, cursors: cursors, marks: marks, in: db) }
    }

    /// `acknowledge` without blocking the calling thread while the transaction commits.
    public func acknowledge(_ ids: [OperationID], cursors: [EntityID: Int64] = [:], marks: [EntityID: OperationID] = [:]) async throws {
        try await writer.writeWithoutTransaction { db in try self.commitAcknowledgment(ids, cursors: cursors, marks: marks, in: db) }
    }

    /// Records an acknowledgment to be written with the next transaction on this store, whatever
    /// it is (a local edit's synced commit, operations from the relay), or by
    /// `flushAcknowledgments()`, whichever comes first. Under a steady stream of local edits that
    /// is one write transaction per edit instead of two. Until then the operations stay in the
    /// outbox table, which is safe (see `acknowledge`: losing an acknowledgment costs a re-push);
    /// `outboxCount()`, `cursors()` and `settledDigest(_:)` already account for it.
    public func acknowledgeLater(_ ids: [OperationID], cursors: [EntityID: Int64] = [:], marks: [EntityID: OperationID] = [:]) {
        outboxTail.withLock { $0.remove(ids) }
        pendingAcknowledgments.withLock { $0.add(ids, cursors: cursors, marks: marks) }
    }

    /// Writes the acknowledgments recorded by `acknowledgeLater` that no transaction has taken
    /// yet (an unsynced commit, as `acknowledge`); does nothing when there are none.
    public func flushAcknowledgments() async throws {
        guard pendingAcknowledgments.withLock({ !$0.isEmpty }) else { return }
        try await writer.writeWithoutTransaction { db in try self.flushAcknowledgments(in: db) }
    }

    /// `flushAcknowledgments()`, blocking the calling thread.
    private func writeRecordedAcknowledgments() throws {
        guard pendingAcknowledgments.withLock({ !$0.isEmpty }) else { return }
        try writer.writeWithoutTransaction { db in try self.flushAcknowledgments(in: db) }
    }

    /// `flushAcknowledgments()` on the writer, outside a transaction.
    func flushAcknowledgments(in db: Database) throws {
        guard pendingAcknowledgments.withLock({ !$0.isEmpty }) else { return }
        // `transaction` takes the recorded acknowledgments itself.
        try withoutSync(db) { try transaction(db) { _ in } }
    }

    /// On the writer: the acknowledgment's transaction, committed unsynced (see `acknowledge`).
    private func commitAcknowledgment(_ ids: [OperationID], cursors: [EntityID: Int64], marks: [EntityID: OperationID], in db: Database) throws {
        outboxTail.withLock { $0.remove(ids) }
        try withoutSync(db) { try transaction(db) { db in try Self.acknowledge(ids, cursors: cursors, marks: marks, in: db) } }
    }

    /// Runs `body` (on the writer, outside any transaction) with commits not synced, then puts
    /// the store's own setting back; if that fails, the error is thrown (a writer left unsynced
    /// would break the `full` promise for every later commit).
    func withoutSync<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        guard durability == .full else { return try body() }
        try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
        let result = Result { try body() }
        try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
        return try result.get()
    }

    /// Drops one operation, by ID, from the outbox (which is keyed by log sequence only).
    static let deleteFromOutbox = "DELETE FROM outbox WHERE seq = (SELECT seq FROM op WHERE id = ?)"

    static func acknowledge(_ ids: [OperationID], cursors: [EntityID: Int64], marks: [EntityID: OperationID], in db: Database) throws {
        for id in ids {
            try db.cachedStatement(sql: deleteFromOutbox).execute(arguments: [id.description])
        }
        try advanceCursors(cursors, marks: marks, in: db)
    }

    /// Raises relay cursors (never lowers them). A cursor that moves takes the board's mark
    /// from `marks`, or loses it when `marks` has none; one that stays keeps it, or takes one
    /// it lacked.
    static func advanceCursors(_ cursors: [EntityID: Int64], marks: [EntityID: OperationID], in db: Database) throws {
        for (board, seq) in cursors {
            try db.cachedStatement(sql: """
                INSERT INTO cursor (board_id, seq, op_id) VALUES (?, ?, ?)
                ON CONFLICT (board_id) DO UPDATE SET
                    op_id = CASE WHEN excluded.seq > seq THEN excluded.op_id
                                 WHEN excluded.seq = seq THEN coalesce(op_id, excluded.op_id)
                                 ELSE op_id END,
                    seq = max(seq, excluded.seq)
                """).execute(arguments: [board.rawValue, seq, marks[board]?.description])
        }
    }

    /// Per board, the ID of the operation the relay gave the cursor's sequence, where known
    /// (with acknowledgments recorded but not yet written): what the hello's `marks` carry.
    public func cursorMarks() throws -> [EntityID: OperationID] {
        try writeRecordedAcknowledgments()
        return try writer.read { db in
            var out: [EntityID: OperationID] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT board_id, op_id FROM cursor WHERE op_id IS NOT NULL") {
                if let board = EntityID(row["board_id"] as String), let op = OperationID(row["op_id"] as String) { out[board] = op }
            }
            return out
        }
    }

    /// Relay cursors per board (with those of acknowledgments recorded but not yet written).
    public func cursors() throws -> [EntityID: Int64] {
        var out = try writer.read { db in
            var out: [EntityID: Int64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT board_id, seq FROM cursor") {
                if let id = EntityID(row["board_id"] as String) { out[id] = row["seq"] }
            }
            return out
        }
        for (board, seq) in pendingAcknowledgments.withLock({ $0.cursors }) { out[board] = max(out[board] ?? 0, seq) }
        return out
    }
}

/// Relay acknowledgments recorded by `acknowledgeLater` and not yet written.
struct PendingAcknowledgments {
    var ids: [OperationID] = []
    var cursors: [EntityID: Int64] = [:]
    /// The mark of each board's highest cursor here.
    var marks: [EntityID: OperationID] = [:]

    var isEmpty: Bool { ids.isEmpty && cursors.isEmpty }

    mutating func add(_ ids: [OperationID], cursors: [EntityID: Int64], marks: [EntityID: OperationID] = [:]) {
        self.ids += ids
        for (board, seq) in cursors where seq >= self.cursors[board] ?? 0 {
            if seq > self.cursors[board] ?? 0 || self.marks[board] == nil { self.marks[board] = marks[board] }
            self.cursors[board] = seq
        }
    }
}

extension ReplicaStore {
    /// The team of the relay this replica last synced with (its cursors are that relay's
    /// sequences); nil before the first welcome.
    public func syncedTeam() throws -> String? {
        try writer.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'synced_team'") }
    }

    /// Records the team of the relay that welcomed this replica.
    public func recordSyncedTeam(_ team: String) async throws {
        try await writer.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('synced_team', ?)", arguments: [team])
        }
    }
}
