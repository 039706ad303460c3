/// Joining whole states, for relay snapshots past the compaction horizon.
///
/// The join takes, register by register, the write with the higher stamp, and ORs the created
/// flags. It is commutative, associative and idempotent, and applying an operation to a join
/// equals joining the applied states, so a replica that receives a snapshot plus the tail of
/// the log converges with one that received every operation.
extension BoardState {
    public mutating func join(_ other: BoardState) {
        guard other.id == id else { return }
        board.created = board.created || other.board.created
        board.title.join(other.board.title)
        for (id, theirs) in other.columns {
            var mine = columns[id] ?? ColumnEntity(id: id)
            mine.created = mine.created || theirs.created
            mine.title.join(theirs.title)
            mine.position.join(theirs.position)
            mine.deleted.join(theirs.deleted)
            columns[id] = mine
        }
        for (id, theirs) in other.tasks {
            var mine = tasks[id] ?? TaskEntity(id: id)
            mine.created = mine.created || theirs.created
            mine.title.join(theirs.title)
            mine.description.join(theirs.description)
            mine.place.join(theirs.place)
            mine.deleted.join(theirs.deleted)
            setTask(mine)
        }
    }
}

extension BoardState {
    /// The highest stamp of any register, so a clock can be moved past everything in a state.
    public var maxStamp: HLCStamp? {
        var stamps: [HLCStamp] = [board.title?.stamp].compactMap { $0 }
        for c in columns.values { stamps += [c.title?.stamp, c.position?.stamp, c.deleted?.stamp].compactMap { $0 } }
        for t in tasks.values { stamps += [t.title?.stamp, t.description?.stamp, t.place?.stamp, t.deleted?.stamp].compactMap { $0 } }
        return stamps.max()
    }
}

extension Optional {
    mutating func join<V>(_ other: Register<V>?) where Wrapped == Register<V> {
        guard let other else { return }
        merge(other.value, stamp: other.stamp, op: other.op)
    }
}

/// The wire and disk form of a `BoardState`: every register with its stamp and operation.
public struct BoardSnapshot: Codable, Hashable, Sendable {
    public struct Reg<V: Codable & Hashable & Sendable>: Codable, Hashable, Sendable {
        public var v: V
        public var hlc: HLCStamp
        public var op: OperationID
    }

    public struct Column: Codable, Hashable, Sendable {
        public var id: EntityID
        public var created: Bool
        public var title: Reg<String>?
        public var position: Reg<PositionKey>?
        public var deleted: Reg<Bool>?
    }

    public struct Task: Codable, Hashable, Sendable {
        public var id: EntityID
        public var created: Bool
        public var title: Reg<String>?
        public var description: Reg<String>?
        public var place: Reg<Placement>?
        public var deleted: Reg<Bool>?
    }

    public var board: EntityID
    public var created: Bool
    public var title: Reg<String>?
    public var columns: [Column]
    public var tasks: [Task]

    public init(_ state: BoardState) {
        func r<V>(_ reg: Register<V>?) -> Reg<V>? { reg.map { Reg(v: $0.value, hlc: $0.stamp, op: $0.op) } }
        board = state.id
        created = state.board.created
        title = r(state.board.title)
        columns = state.columns.keys.sorted().map { id in
            let c = state.columns[id]!
            return Column(id: id, created: c.created, title: r(c.title), position: r(c.position), deleted: r(c.deleted))
        }
        tasks = state.tasks.keys.sorted().map { id in
            let t = state.tasks[id]!
            return Task(id: id, created: t.created, title: r(t.title), description: r(t.description), place: r(t.place), deleted: r(t.deleted))
        }
    }

    public var state: BoardState {
        func r<V>(_ reg: Reg<V>?) -> Register<V>? { reg.map { Register(value: $0.v, stamp: $0.hlc, op: $0.op) } }
        var state = BoardState(id: board)
        state.board.created = created
        state.board.title = r(title)
        for c in columns {
            var entity = ColumnEntity(id: c.id)
            entity.created = c.created
            entity.title = r(c.title)
            entity.position = r(c.position)
            entity.deleted = r(c.deleted)
            state.columns[c.id] = entity
        }
        for t in tasks {
            var entity = TaskEntity(id: t.id)
            entity.created = t.created
            entity.title = r(t.title)
            entity.description = r(t.description)
            entity.place = r(t.place)
            entity.deleted = r(t.deleted)
            state.setTask(entity)
        }
        return state
    }
}
