import GRDB
import KanbanModel

/// Reading and writing the materialized entity rows (upserts update rows in place, so the
/// by-ID indexes are not rewritten on every change). Each register is three columns:
/// value, HLC stamp and operation ID.
extension ReplicaStore {
    /// Writes one entity's row (inserted, or updated in place).
    static func save(_ entity: EntityRef, of state: BoardState, in db: Database) throws {
        var upserts = Upserts(db)
        try save(entity, of: state, with: &upserts)
    }

    /// Writes one entity's row with statements looked up once for many rows.
    static func save(_ entity: EntityRef, of state: BoardState, with upserts: inout Upserts) throws {
        let board = state.id.rawValue
        switch entity {
        case .board:
            let b = state.board
            try upserts.statement(.boards).execute { row in
                row.text(board)
                row.bool(b.created)
                row.register(b.title) { $0.text($1) }
            }
        case .column(let id):
            guard let c = state.columns[id] else { return }
            try upserts.statement(.columns).execute { row in
                row.text(board)
                row.text(id.rawValue)
                row.bool(c.created)
                row.register(c.title) { $0.text($1) }
                row.register(c.position) { $0.text($1.rawValue) }
                row.register(c.deleted) { $0.bool($1) }
            }
        case .task(let id):
            guard let t = state.tasks[id] else { return }
            try upserts.statement(.tasks).execute { row in
                row.text(board)
                row.text(id.rawValue)
                row.bool(t.created)
                row.register(t.title) { $0.text($1) }
                row.register(t.description) { $0.text($1) }
                row.place(t.place)
                row.register(t.deleted) { $0.bool($1) }
            }
        }
    }

    /// Writes only the changed registers of a task row that is already in the table (an
    /// upsert binds and rewrites all 16 columns, and looks the row up twice).
    static func update(_ entity: EntityRef, _ fields: DirtyFields, of state: BoardState, with upserts: inout Upserts) throws {
        guard case .task(let id) = entity, let t = state.tasks[id] else { return }
        try upserts.taskUpdate(fields).execute { row in
            if fields.contains(.title) { row.register(t.title) { $0.text($1) } }
            if fields.contains(.description) { row.register(t.description) { $0.text($1) } }
            if fields.contains(.place) { row.place(t.place) }
            if fields.contains(.deleted) { row.register(t.deleted) { $0.bool($1) } }
            row.text(state.id.rawValue)
            row.text(id.rawValue)
        }
        guard upserts.db.changesCount == 1 else {
            throw StoreError.corrupt("task \(id.rawValue) of board \(state.id.rawValue) is in memory but has no row to update")
        }
    }

    /// The upsert statements of one transaction, each looked up on first use: `cachedStatement`
    /// hashes its SQL (some 400 bytes for tasks) on every call, and a batch writes thousands of rows.
    struct Upserts {
        let db: Database
        private var statements: [Statement?] = [nil, nil, nil]
        private var taskUpdates = [Statement?](repeating: nil, count: 16)

        init(_ db: Database) { self.db = db }

        /// `UPDATE tasks SET` the registers in `fields` (not `whole`), then board and task ID.
        mutating func taskUpdate(_ fields: DirtyFields) throws -> Statement {
            let index = Int(fields.rawValue & 0x0F)
            if let statement = taskUpdates[index] { return statement }
            var columns: [String] = []
            if fields.contains(.title) { columns += ["title", "title_hlc", "title_op"] }
            if fields.contains(.description) { columns += ["description", "description_hlc", "description_op"] }
            if fields.contains(.place) { columns += ["column_id", "position", "place_hlc", "place_op"] }
            if fields.contains(.deleted) { columns += ["deleted", "deleted_hlc", "deleted_op"] }
            let sql = "UPDATE tasks SET " + columns.map { "\($0) = ?" }.joined(separator: ", ") + " WHERE board_id = ? AND id = ?"
            let statement = try db.cachedStatement(sql: sql)
            taskUpdates[index] = statement
            return statement
        }

        mutating func statement(_ table: Table) throws -> Statement {
            if let statement = statements[table.rawValue] { return statement }
            let statement = try db.cachedStatement(sql: table.upsert)
            statements[table.rawValue] = statement
            return statement
        }
    }

    /// The upsert that writes each kind of entity row.
    enum Table: Int {
        case boards, columns, tasks

        static let boardColumns = ["created", "title", "title_hlc", "title_op"]
        static let columnColumns = ["created", "title", "title_hlc", "title_op", "position", "position_hlc", "position_op",
                                    "deleted", "deleted_hlc", "deleted_op"]
        static let taskColumns = ["created", "title", "title_hlc", "title_op", "description", "description_hlc", "description_op",
                                  "column_id", "position", "place_hlc", "place_op", "deleted", "deleted_hlc", "deleted_op"]
        static let boardsUpsert = statements("boards", keys: ["id"], boardColumns)
        static let columnsUpsert = statements("board_columns", keys: ["board_id", "id"], columnColumns)
        static let tasksUpsert = statements("tasks", keys: ["board_id", "id"], taskColumns)

        var upsert: String {
            switch self {
            case .boards: Self.boardsUpsert
            case .columns: Self.columnsUpsert
            case .tasks: Self.tasksUpsert
            }
        }

        private static func statements(_ table: String, keys: [String], _ columns: [String]) -> String {
            let all = keys + columns
            return "INSERT INTO \(table) (\(all.joined(separator: ", "))) VALUES (\(all.map { _ in "?" }.joined(separator: ", ")))"
                + " ON CONFLICT (\(keys.joined(separator: ", "))) DO UPDATE SET "
                + columns.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
        }
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
