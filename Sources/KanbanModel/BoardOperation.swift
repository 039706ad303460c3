/// One change to one board, as authored by one replica. Operations are immutable facts: the
/// state of a board is a pure function of the set of its operations.
public struct BoardOperation: Hashable, Sendable {
    public var id: OperationID
    public var stamp: HLCStamp
    public var board: EntityID
    public var action: Action
    /// For each register this operation writes, the stamp of the value its author saw there.
    /// Used only to tell a concurrent (conflicting) overwrite from a deliberate one.
    public var base: [Field: HLCStamp]
    /// The losing write this operation brings back, when it restores a conflict.
    public var restores: OperationID?

    public init(
        id: OperationID, stamp: HLCStamp, board: EntityID, action: Action,
        base: [Field: HLCStamp] = [:], restores: OperationID? = nil
    ) {
        self.id = id
        self.stamp = stamp
        self.board = board
        self.action = action
        self.base = base
        self.restores = restores
    }

    /// A last-writer-wins register of an entity.
    public enum Field: String, Hashable, Sendable, CaseIterable, Codable, Comparable {
        case title, description, place, position, deleted
        public static func < (lhs: Field, rhs: Field) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    public enum Action: Hashable, Sendable {
        case createBoard(title: String)
        case renameBoard(title: String)
        case createColumn(column: EntityID, title: String, position: PositionKey)
        case renameColumn(column: EntityID, title: String)
        case moveColumn(column: EntityID, position: PositionKey)
        case deleteColumn(column: EntityID)
        case restoreColumn(column: EntityID)
        case createTask(task: EntityID, column: EntityID, position: PositionKey, title: String, description: String)
        case updateTask(task: EntityID, title: String?, description: String?)
        case moveTask(task: EntityID, column: EntityID, position: PositionKey)
        case deleteTask(task: EntityID)
        case restoreTask(task: EntityID)
    }
}

extension BoardOperation.Action {
    /// The wire name of the action, e.g. `task.create`.
    public var kind: Kind {
        switch self {
        case .createBoard: .boardCreate
        case .renameBoard: .boardRename
        case .createColumn: .columnCreate
        case .renameColumn: .columnRename
        case .moveColumn: .columnMove
        case .deleteColumn: .columnDelete
        case .restoreColumn: .columnRestore
        case .createTask: .taskCreate
        case .updateTask: .taskUpdate
        case .moveTask: .taskMove
        case .deleteTask: .taskDelete
        case .restoreTask: .taskRestore
        }
    }

    public enum Kind: String, Sendable, CaseIterable, Codable {
        case boardCreate = "board.create", boardRename = "board.rename"
        case columnCreate = "column.create", columnRename = "column.rename", columnMove = "column.move"
        case columnDelete = "column.delete", columnRestore = "column.restore"
        case taskCreate = "task.create", taskUpdate = "task.update", taskMove = "task.move"
        case taskDelete = "task.delete", taskRestore = "task.restore"
    }

    /// The entity the action targets (the board itself for board actions).
    public func target(board: EntityID) -> EntityRef {
        switch self {
        case .createBoard, .renameBoard: .board(board)
        case .createColumn(let c, _, _), .renameColumn(let c, _), .moveColumn(let c, _),
             .deleteColumn(let c), .restoreColumn(let c): .column(c)
        case .createTask(let t, _, _, _, _), .updateTask(let t, _, _), .moveTask(let t, _, _),
             .deleteTask(let t), .restoreTask(let t): .task(t)
        }
    }

    /// The registers this action writes.
    public var fields: [BoardOperation.Field] {
        switch self {
        case .createBoard, .renameBoard, .renameColumn: [.title]
        case .createColumn: [.title, .position]
        case .moveColumn: [.position]
        case .deleteColumn, .restoreColumn, .deleteTask, .restoreTask: [.deleted]
        case .createTask: [.title, .description, .place]
        case .updateTask(_, let title, let description):
            (title == nil ? [] : [.title]) + (description == nil ? [] : [.description])
        case .moveTask: [.place]
        }
    }
}

/// Names an entity of a board.
public enum EntityRef: Hashable, Sendable, Comparable {
    case board(EntityID)
    case column(EntityID)
    case task(EntityID)

    public var id: EntityID {
        switch self {
        case .board(let id), .column(let id), .task(let id): id
        }
    }

    public var kindName: String {
        switch self {
        case .board: "board"
        case .column: "column"
        case .task: "task"
        }
    }
}
