import GRDB
import KanbanModel

/// Reading and writing the materialized entity rows (upserts update rows in place, so the
/// by-ID indexes are not rewritten on every change). Each register is three columns:
/// value, HLC stamp and operation ID.
extension ReplicaStore {
    /// Writes one entity's row (inserted, or updated in place).
    static func save(_ entity: EntityRef, of state: BoardState, in db: Database) throws {
        let board = state.id.rawValue.databaseValue
        var values: [DatabaseValue] = []  // the non-key columns, in table order
        values.reserveCapacity(16)
        let table: Table
        let key: [DatabaseValue]
        switch entity {
        case .board:
            let b = state.board
            values.append(b.created.databaseValue)
            append(b.title, to: &values) { $0.databaseValue }
            (table, key) = (.boards, [board])
        case .column(let id):
            guard let c = state.columns[id] else { return }
            values.append(c.created.databaseValue)
            append(c.title, to: &values) { $0.databaseValue }
            append(c.position, to: &values) { $0.rawValue.databaseValue }
            append(c.deleted, to: &values) { $0.databaseValue }
            (table, key) = (.columns, [board, id.rawValue.databaseValue])
        case .task(let id):
            guard let t = state.tasks[id] else { return }
            values.append(t.created.databaseValue)
            append(t.title, to: &values) { $0.databaseValue }
            append(t.description, to: &values) { $0.databaseValue }
            if let place = t.place {
                values.append(place.value.column.rawValue.databaseValue)
                values.append(place.value.position.rawValue.databaseValue)
                values.append(place.stamp.description.databaseValue)
                values.append(place.op.description.databaseValue)
            } else {
                values.append(contentsOf: repeatElement(.null, count: 4))
            }
            append(t.deleted, to: &values) { $0.databaseValue }
            (table, key) = (.tasks, [board, id.rawValue.databaseValue])
        }
        try db.cachedStatement(sql: table.upsert).execute(arguments: StatementArguments(key + values))
    }

    /// The upsert that writes each kind of entity row.
    enum Table {
        case boards, columns, tasks

        static let boardColumns = ["created", "title", "title_hlc", "title_op"]
        static let columnColumns = ["created", "title", "title_hlc", "title_op", "position", "position_hlc", "position_op",
                                    "deleted", "deleted_hlc", "deleted_op"]
        static let taskColumns = ["created", "title", "title_hlc", "title_op", "description", "description_hlc", "description_op",
                                  "column_id", "position", "place_hlc", "place_op", "deleted", "deleted_hlc", "deleted_op"]
        static let sql: [Table: String] = [
            .boards: statements("boards", keys: ["id"], boardColumns),
            .columns: statements("board_columns", keys: ["board_id", "id"], columnColumns),
            .tasks: statements("tasks", keys: ["board_id", "id"], taskColumns),
        ]

        var upsert: String { Self.sql[self]! }

        private static func statements(_ table: String, keys: [String], _ columns: [String]) -> String {
            let all = keys + columns
            return "INSERT INTO \(table) (\(all.joined(separator: ", "))) VALUES (\(all.map { _ in "?" }.joined(separator: ", ")))"
                + " ON CONFLICT (\(keys.joined(separator: ", "))) DO UPDATE SET "
                + columns.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
        }
    }

    /// A register as three column values: value, stamp, operation ID (all NULL when unset).
    private static func append<V>(_ r: Register<V>?, to values: inout [DatabaseValue], _ value: (V) -> DatabaseValue) {
        guard let r else {
            values.append(contentsOf: repeatElement(.null, count: 3))
            return
        }
        values.append(value(r.value))
        values.append(r.stamp.description.databaseValue)
        values.append(r.op.description.databaseValue)
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
            state.setTask(t)
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
