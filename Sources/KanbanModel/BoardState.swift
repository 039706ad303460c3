/// The merged state of one board: every register of the board, its columns and its tasks.
///
/// `apply` is the only way state changes. For any set of operations, applying them in any order
/// with any duplicates yields an equal `BoardState` and the same `digest`.
public struct BoardState: Hashable, Sendable {
    public var board: BoardEntity
    public var columns: [EntityID: ColumnEntity] = [:]
    /// Every task by ID; changed only through `apply`, `join` and `setTask`, which keep `order`
    /// in step.
    public private(set) var tasks: [EntityID: TaskEntity] = [:]
    /// Derived from `tasks`: each column's visible tasks in order.
    private(set) var order = ColumnOrder()

    public init(id: EntityID) { self.board = BoardEntity(id: id) }

    /// Puts a task's entity in place (loading a stored state, joining a snapshot).
    public mutating func setTask(_ entity: TaskEntity) {
        let old = tasks[entity.id].flatMap(ColumnOrder.place(of:))
        tasks[entity.id] = entity
        order.update(from: old, to: ColumnOrder.place(of: entity))
    }

    public var id: EntityID { board.id }

    /// What applying one operation did.
    public struct Outcome: Hashable, Sendable {
        /// Whether any register (or the created flag) changed.
        public var changed: Bool
        public var target: EntityRef
    }

    /// Merges one operation into the state. Operations for other boards are ignored.
    @discardableResult
    public mutating func apply(_ op: BoardOperation) -> Outcome {
        let target = op.action.target(board: op.board)
        guard op.board == board.id else { return Outcome(changed: false, target: target) }
        let s = op.stamp, o = op.id
        var changed = false
        switch op.action {
        case .createBoard(let title):
            changed = !board.created
            board.created = true
            changed = board.title.merge(title, stamp: s, op: o) || changed
        case .renameBoard(let title):
            changed = board.title.merge(title, stamp: s, op: o)
        case .createColumn(let id, let title, let position):
            changed = updateColumn(id) { c in
                let fresh = !c.created
                c.created = true
                let t = c.title.merge(title, stamp: s, op: o)
                let p = c.position.merge(position, stamp: s, op: o)
                return fresh || t || p
            }
        case .renameColumn(let id, let title):
            changed = updateColumn(id) { $0.title.merge(title, stamp: s, op: o) }
        case .moveColumn(let id, let position):
            changed = updateColumn(id) { $0.position.merge(position, stamp: s, op: o) }
        case .deleteColumn(let id):
            changed = updateColumn(id) { $0.deleted.merge(true, stamp: s, op: o) }
        case .restoreColumn(let id):
            changed = updateColumn(id) { $0.deleted.merge(false, stamp: s, op: o) }
        case .createTask(let id, let column, let position, let title, let description):
            changed = updateTask(id) { t in
                let fresh = !t.created
                t.created = true
                let a = t.title.merge(title, stamp: s, op: o)
                let b = t.description.merge(description, stamp: s, op: o)
                let c = t.place.merge(Placement(column: column, position: position), stamp: s, op: o)
                return fresh || a || b || c
            }
        case .updateTask(let id, let title, let description):
            changed = updateTask(id) { t in
                var any = false
                if let title { any = t.title.merge(title, stamp: s, op: o) || any }
                if let description { any = t.description.merge(description, stamp: s, op: o) || any }
                return any
            }
        case .moveTask(let id, let column, let position):
            changed = updateTask(id) { $0.place.merge(Placement(column: column, position: position), stamp: s, op: o) }
        case .deleteTask(let id):
            changed = updateTask(id) { $0.deleted.merge(true, stamp: s, op: o) }
        case .restoreTask(let id):
            changed = updateTask(id) { $0.deleted.merge(false, stamp: s, op: o) }
        }
        return Outcome(changed: changed, target: target)
    }

    private mutating func updateColumn(_ id: EntityID, _ body: (inout ColumnEntity) -> Bool) -> Bool {
        var entity = columns[id] ?? ColumnEntity(id: id)
        let changed = body(&entity)
        if changed { columns[id] = entity }
        return changed
    }

    private mutating func updateTask(_ id: EntityID, _ body: (inout TaskEntity) -> Bool) -> Bool {
        var entity = tasks[id] ?? TaskEntity(id: id)
        let changed = body(&entity)
        if changed { setTask(entity) }
        return changed
    }
}
