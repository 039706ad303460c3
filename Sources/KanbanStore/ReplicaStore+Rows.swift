import GRDB
import KanbanModel

/// Reading and writing the materialized entity rows (upserts update rows in place, so the
/// by-ID indexes are not rewritten on every change). Each register is three columns:
/// value, HLC stamp and operation ID.
extension ReplicaStore {
    static func save(_ entity: EntityRef, of state: BoardState, in db: Database) throws {
        let board = state.id.rawValue
        switch entity {
        case .board:
            let b = state.board
            try db.cachedStatement(sql: """
                INSERT INTO boards (id, created, title, title_hlc, title_op) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET created = excluded.created, title = excluded.title,
                  title_hlc = excluded.title_hlc, title_op = excluded.title_op
                """).execute(arguments: StatementArguments([board, b.created] as [(any DatabaseValueConvertible)?] + reg(b.title) { $0 }))
        case .column(let id):
            guard let c = state.columns[id] else { return }
            try db.cachedStatement(sql: """
                INSERT INTO board_columns (board_id, id, created, title, title_hlc, title_op,
                  position, position_hlc, position_op, deleted, deleted_hlc, deleted_op)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (board_id, id) DO UPDATE SET created = excluded.created,
                  title = excluded.title, title_hlc = excluded.title_hlc, title_op = excluded.title_op,
                  position = excluded.position, position_hlc = excluded.position_hlc, position_op = excluded.position_op,
                  deleted = excluded.deleted, deleted_hlc = excluded.deleted_hlc, deleted_op = excluded.deleted_op
                """).execute(arguments: StatementArguments([board, id.rawValue, c.created] as [(any DatabaseValueConvertible)?]
                    + reg(c.title) { $0 } + reg(c.position) { $0.rawValue } + reg(c.deleted) { $0 }))
        case .task(let id):
            guard let t = state.tasks[id] else { return }
            try db.cachedStatement(sql: """
                INSERT INTO tasks (board_id, id, created, title, title_hlc, title_op,
                  description, description_hlc, description_op, column_id, position, place_hlc, place_op,
                  deleted, deleted_hlc, deleted_op)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (board_id, id) DO UPDATE SET created = excluded.created,
                  title = excluded.title, title_hlc = excluded.title_hlc, title_op = excluded.title_op,
                  description = excluded.description, description_hlc = excluded.description_hlc,
                  description_op = excluded.description_op, column_id = excluded.column_id, position = excluded.position,
                  place_hlc = excluded.place_hlc, place_op = excluded.place_op,
                  deleted = excluded.deleted, deleted_hlc = excluded.deleted_hlc, deleted_op = excluded.deleted_op
                """).execute(arguments: StatementArguments([board, id.rawValue, t.created] as [(any DatabaseValueConvertible)?]
                    + reg(t.title) { $0 } + reg(t.description) { $0 }
                    + [t.place?.value.column.rawValue, t.place?.value.position.rawValue,
                       t.place?.stamp.description, t.place?.op.description]
                    + reg(t.deleted) { $0 }))
        }
    }

    private static func reg<V>(_ r: Register<V>?, _ value: (V) -> some DatabaseValueConvertible) -> [(any DatabaseValueConvertible)?] {
        guard let r else { return [nil, nil, nil] }
        return [value(r.value), r.stamp.description, r.op.description]
    }

    /// Rebuilds a board's state from its rows (not from the log).
    static func loadState(_ board: EntityID, in db: Database) throws -> BoardState {
        var state = BoardState(id: board)
        if let row = try Row.fetchOne(db, sql: "SELECT * FROM boards WHERE id = ?", arguments: [board.rawValue]) {
            state.board.created = row["created"]
            state.board.title = try register(row, "title") { (v: String) in v }
        }
        for row in try Row.fetchAll(db, sql: "SELECT * FROM board_columns WHERE board_id = ?", arguments: [board.rawValue]) {
            let id = try entityID(row["id"])
            var c = ColumnEntity(id: id)
            c.created = row["created"]
            c.title = try register(row, "title") { (v: String) in v }
            c.position = try register(row, "position") { (v: String) in try key(v) }
            c.deleted = try register(row, "deleted") { (v: Bool) in v }
            state.columns[id] = c
        }
        for row in try Row.fetchAll(db, sql: "SELECT * FROM tasks WHERE board_id = ?", arguments: [board.rawValue]) {
            let id = try entityID(row["id"])
            var t = TaskEntity(id: id)
            t.created = row["created"]
            t.title = try register(row, "title") { (v: String) in v }
            t.description = try register(row, "description") { (v: String) in v }
            if let hlc: String = row["place_hlc"] {
                let column = try entityID(row["column_id"])
                let position = try key(row["position"])
                t.place = Register(value: Placement(column: column, position: position),
                                   stamp: try stamp(hlc), op: try opID(row["place_op"]))
            }
            t.deleted = try register(row, "deleted") { (v: Bool) in v }
            state.tasks[id] = t
        }
        return state
    }

    private static func register<Raw: DatabaseValueConvertible, V>(
        _ row: Row, _ name: String, _ convert: (Raw) throws -> V
    ) throws -> Register<V>? {
        guard let hlc: String = row[name + "_hlc"] else { return nil }
        guard let raw: Raw = row[name] else { throw StoreError.corrupt("\(name) is null where \(name)_hlc is set") }
        return Register(value: try convert(raw), stamp: try stamp(hlc), op: try opID(row[name + "_op"]))
    }

    private static func entityID(_ text: String?) throws -> EntityID {
        guard let text, let id = EntityID(text) else { throw StoreError.corrupt("bad entity ID \(text ?? "null")") }
        return id
    }

    private static func key(_ text: String?) throws -> PositionKey {
        guard let text, let key = PositionKey(text) else { throw StoreError.corrupt("bad position key \(text ?? "null")") }
        return key
    }

    private static func stamp(_ text: String) throws -> HLCStamp {
        guard let stamp = HLCStamp(text) else { throw StoreError.corrupt("bad HLC stamp \(text)") }
        return stamp
    }

    private static func opID(_ text: String?) throws -> OperationID {
        guard let text, let id = OperationID(text) else { throw StoreError.corrupt("bad operation ID \(text ?? "null")") }
        return id
    }
}
