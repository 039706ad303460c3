/// The full current value of one entity, as events carry it.
public enum EntitySnapshot: Hashable, Sendable, Codable {
    case board(BoardView)
    case column(ColumnSnapshot)
    case task(TaskSnapshot)

    public struct BoardView: Hashable, Sendable, Codable {
        public var id: EntityID
        public var title: String
    }

    public struct ColumnSnapshot: Hashable, Sendable, Codable {
        public var id: EntityID
        public var boardId: EntityID
        public var title: String
        public var position: PositionKey
        public var deleted: Bool
        /// False while only later edits of the column have arrived, not its creation.
        public var created: Bool

        public init(id: EntityID, boardId: EntityID, title: String, position: PositionKey, deleted: Bool, created: Bool) {
            (self.id, self.boardId, self.title, self.position, self.deleted, self.created) = (id, boardId, title, position, deleted, created)
        }
    }

    public struct TaskSnapshot: Hashable, Sendable, Codable {
        public var id: EntityID
        public var boardId: EntityID
        public var columnId: EntityID?
        public var position: PositionKey?
        public var title: String
        public var description: String
        public var deleted: Bool
        public var created: Bool

        public init(id: EntityID, boardId: EntityID, columnId: EntityID?, position: PositionKey?, title: String,
                    description: String, deleted: Bool, created: Bool) {
            (self.id, self.boardId, self.columnId, self.position) = (id, boardId, columnId, position)
            (self.title, self.description, self.deleted, self.created) = (title, description, deleted, created)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .board(let v): try v.encode(to: encoder)
        case .column(let v): try v.encode(to: encoder)
        case .task(let v): try v.encode(to: encoder)
        }
    }

    public init(from decoder: any Decoder) throws {
        // Snapshots are only produced, never parsed, by this project; decoding picks by shape.
        if let task = try? TaskSnapshot(from: decoder) {
            self = .task(task)
        } else if let column = try? ColumnSnapshot(from: decoder) {
            self = .column(column)
        } else {
            self = .board(try BoardView(from: decoder))
        }
    }
}

extension BoardState {
    public func snapshot(of entity: EntityRef) -> EntitySnapshot {
        switch entity {
        case .board:
            return .board(.init(id: board.id, title: board.title?.value ?? ""))
        case .column(let id):
            let c = columns[id] ?? ColumnEntity(id: id)
            return .column(.init(id: id, boardId: board.id, title: c.title?.value ?? "",
                                 position: c.position?.value ?? .initial, deleted: c.deleted?.value ?? false,
                                 created: c.created))
        case .task(let id):
            let t = tasks[id] ?? TaskEntity(id: id)
            return .task(.init(id: id, boardId: board.id, columnId: t.place?.value.column,
                               position: t.place?.value.position, title: t.title?.value ?? "",
                               description: t.description?.value ?? "", deleted: t.isDeleted, created: t.created))
        }
    }
}

extension EntitySnapshot {
    /// The JSON `JSONEncoder` writes for this snapshot with sorted keys, written by hand: the
    /// agent sends one in every response to an edit and in every local event
    /// (`LocalEventEncodingTests` compares the bytes).
    public func jsonBytes() -> [UInt8] {
        switch self {
        case .board(let b):
            var out = JSONBytes(capacity: 96 + b.title.utf8.count)
            out.field("id", b.id.rawValue)
            out.field("title", b.title)
            return out.closed()
        case .column(let c):
            var out = JSONBytes(capacity: 160 + c.title.utf8.count)
            out.field("boardId", c.boardId.rawValue)
            out.field("created", c.created)
            out.field("deleted", c.deleted)
            out.field("id", c.id.rawValue)
            out.field("position", c.position.rawValue)
            out.field("title", c.title)
            return out.closed()
        case .task(let t):
            var out = JSONBytes(capacity: 224 + t.title.utf8.count + t.description.utf8.count)
            out.field("boardId", t.boardId.rawValue)
            if let column = t.columnId { out.field("columnId", column.rawValue) }
            out.field("created", t.created)
            out.field("deleted", t.deleted)
            out.field("description", t.description)
            out.field("id", t.id.rawValue)
            if let position = t.position { out.field("position", position.rawValue) }
            out.field("title", t.title)
            return out.closed()
        }
    }
}
