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

extension LocalEvent {
    /// `apiEncoder.encode(self)`, written by hand: the event hub encodes one per applied change,
    /// on the database writer, before the next commit can start (`LocalEventEncodingTests`
    /// compares the bytes with `JSONEncoder`'s).
    public func jsonBytes() -> [UInt8] {
        var out = JSONBytes(capacity: 512)
        if let board { out.field("board", json: EntitySnapshot.board(board).jsonBytes()) }
        out.field("boardId", boardId.rawValue)
        if let column { out.field("column", json: EntitySnapshot.column(column).jsonBytes()) }
        out.key("opId")
        opId.withUTF8Text { out.string($0) }
        out.field("origin", origin)
        if let task { out.field("task", json: EntitySnapshot.task(task).jsonBytes()) }
        out.field("type", type)
        out.field("version", version)
        return out.closed()
    }
}
