public import KanbanModel
import GRDB
import Synchronization
import Foundation

extension ReplicaStore {
    /// Boards that exist here (their `board.create` is known), by title then ID.
    public func boards() throws -> [BoardSummary] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT id, title FROM boards WHERE created = 1 ORDER BY title, id").compactMap { row in
                guard let id = EntityID(row["id"] as String) else { return nil }
                return BoardSummary(id: id, title: row["title"] ?? "")
            }
        }
    }

    /// Runs `body` on the current merged state of a board (loaded from disk on first use).
    public func withState<T>(_ board: EntityID, _ body: (BoardState, Int64) throws -> T) throws -> T {
        if let result = try cache.withLock({ cache -> T? in
            guard let state = cache.boards[board] else { return nil }
            return try body(state, cache.lastSeq)
        }) {
            return result
        }
        try write { db in try self.ensureLoaded(board, in: db) }
        return try cache.withLock { cache in try body(cache.boards[board]!, cache.lastSeq) }
    }

    /// The board as a front-end shows it; nil if the board does not exist here.
    public func document(_ board: EntityID) throws -> BoardDocument? {
        try withState(board) { state, version in state.exists ? state.document(version: version) : nil }
    }

    /// Digest of the board's materialized state.
    public func digest(_ board: EntityID) throws -> String {
        try withState(board) { state, _ in state.digest }
    }

    /// The board's state read straight from its rows, bypassing the in-memory mirror.
    public func stateFromDisk(_ board: EntityID) throws -> BoardState {
        try writer.read { db in try Self.loadState(board, in: db) }
    }

    /// The board's state rebuilt from nothing but the operation log (and any relay snapshot).
    public func stateFromLog(_ board: EntityID) throws -> BoardState {
        try writer.read { db in try Self.stateFromLog(board, in: db) }
    }

    /// `stateFromLog` inside a transaction of the caller's.
    static func stateFromLog(_ board: EntityID, in db: Database) throws -> BoardState {
        var state = BoardState(id: board)
        if let body = try String.fetchOne(db, sql: "SELECT body FROM snapshot WHERE board_id = ?", arguments: [board.rawValue]) {
            do {
                state = try JSONDecoder().decode(BoardSnapshot.self, from: Data(body.utf8)).state
            } catch {
                throw StoreError.corrupt("snapshot of \(board) does not decode")
            }
        }
        let bodies = try String.fetchCursor(db, sql: "SELECT body FROM op WHERE board_id = ? ORDER BY seq", arguments: [board.rawValue])
        while let body = try bodies.next() { state.apply(try decodeLogged(body)) }
        return state
    }

    /// Every logged operation of a board, in local arrival order.
    public func operations(_ board: EntityID) throws -> [BoardOperation] {
        try writer.read { db in
            try String.fetchAll(db, sql: "SELECT body FROM op WHERE board_id = ? ORDER BY seq", arguments: [board.rawValue])
                .map { try Self.decodeLogged($0) }
        }
    }

    /// The IDs of a board's logged operations, in local arrival order.
    public func operationIDs(_ board: EntityID) throws -> [String] {
        try writer.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM op WHERE board_id = ? ORDER BY seq", arguments: [board.rawValue])
        }
    }

    /// Whether the log holds an operation.
    public func contains(_ id: OperationID) throws -> Bool {
        try writer.read { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM op WHERE id = ?", arguments: [id.description]) ?? false
        }
    }

    /// The number of operations in the log.
    public func operationCount() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM op") ?? 0 }
    }

    /// The board holding a created task, if any.
    public func boardOfTask(_ task: EntityID) throws -> EntityID? {
        try lookUpBoard(.task(task), "SELECT board_id FROM tasks WHERE id = ? AND created = 1 LIMIT 1")
    }

    /// The board holding a created column, if any.
    public func boardOfColumn(_ column: EntityID) throws -> EntityID? {
        try lookUpBoard(.column(column), "SELECT board_id FROM board_columns WHERE id = ? AND created = 1 LIMIT 1")
    }

    /// Most entries `boardIndex` holds before it starts over.
    static let boardIndexLimit = 100_000

    /// One single-row query that every edit runs first (which board holds this column or task).
    /// A single statement reads one consistent snapshot by itself, so it runs without the read
    /// transaction `read` wraps around it (a BEGIN and a COMMIT), on a statement the reader
    /// connection keeps prepared: together these were a tenth of an agent's CPU per created task.
    ///
    /// Every edit asks first, so answers are kept (`boardIndex`): a created entity stays created
    /// and in its board, and only found ones are kept, so a kept answer is always right.
    private func lookUpBoard(_ entity: EntityRef, _ sql: String) throws -> EntityID? {
        if let board = boardIndex.withLock({ $0[entity] }) { return board }
        let found = try writer.unsafeRead { db in
            try String.fetchOne(db.cachedStatement(sql: sql), arguments: [entity.id.rawValue]).flatMap { EntityID($0) }
        }
        if let found {
            boardIndex.withLock { index in
                if index.count >= Self.boardIndexLimit { index.removeAll(keepingCapacity: true) }
                index[entity] = found
            }
        }
        return found
    }

    /// Writes that lost to concurrent writes on this board.
    public func conflicts(_ board: EntityID) throws -> [Conflict] {
        ConflictFinder.conflicts(in: try operations(board))
    }

    /// Looks up one logged operation.
    public func operation(_ id: OperationID) throws -> BoardOperation? {
        try writer.read { db in
            try String.fetchOne(db, sql: "SELECT body FROM op WHERE id = ?", arguments: [id.description])
                .map { try Self.decodeLogged($0) }
        }
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    public func integrityCheck() throws -> String {
        try writer.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: "; ") }
    }

    static func decodeLogged(_ body: String) throws -> BoardOperation {
        do {
            return try BoardOperation.decode(json: Data(body.utf8))
        } catch {
            throw StoreError.corrupt("logged operation: \(error)")
        }
    }
}
