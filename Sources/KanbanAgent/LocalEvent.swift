public import KanbanModel
public import KanbanStore

/// One message on the local event stream (`GET /api/events?board=ID`).
///
/// The first message is `{"type": "snapshot", "version": V, "board": {...}}`; after it, one
/// message per change with a version above V, named like the old system's events
/// (`task:created`, `task:moved`, ...), carrying the full new entity.
public struct LocalEvent: Sendable, Encodable {
    public let type: String
    public let version: Int64
    public let boardId: EntityID
    public let opId: OperationID
    /// `local` when this agent authored the change, `remote` when it came from the relay.
    public let origin: String
    public let board: EntitySnapshot.BoardView?
    public let column: EntitySnapshot.ColumnSnapshot?
    public let task: EntitySnapshot.TaskSnapshot?

    public init(_ change: AppliedChange) {
        type = Self.name(of: change.operation.action.kind)
        version = change.seq
        boardId = change.operation.board
        opId = change.operation.id
        origin = change.local ? "local" : "remote"
        switch change.entity {
        case .board(let b): (board, column, task) = (b, nil, nil)
        case .column(let c): (board, column, task) = (nil, c, nil)
        case .task(let t): (board, column, task) = (nil, nil, t)
        }
    }

    public static func name(of kind: BoardOperation.Action.Kind) -> String {
        switch kind {
        case .boardCreate: "board:created"
        case .boardRename: "board:updated"
        case .columnCreate: "column:created"
        case .columnRename: "column:updated"
        case .columnMove: "column:moved"
        case .columnDelete: "column:deleted"
        case .columnRestore: "column:restored"
        case .taskCreate: "task:created"
        case .taskUpdate: "task:updated"
        case .taskMove: "task:moved"
        case .taskDelete: "task:deleted"
        case .taskRestore: "task:restored"
        }
    }
}
