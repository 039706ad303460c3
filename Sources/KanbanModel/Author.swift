/// Makes this replica's operations: the next operation ID and a fresh HLC stamp for each.
public struct Author: Sendable {
    public private(set) var clock: HybridLogicalClock
    /// The counter of the last operation made here; the next one is `counter + 1`.
    public private(set) var counter: UInt64

    public init(replica: ReplicaID, counter: UInt64 = 0, lastStamp: HLCStamp? = nil) {
        self.clock = HybridLogicalClock(replica: replica, last: lastStamp)
        self.counter = counter
    }

    public var replica: ReplicaID { clock.replica }

    public mutating func make(
        _ action: BoardOperation.Action, board: EntityID, base: [BoardOperation.Field: HLCStamp] = [:],
        restores: OperationID? = nil, nowMillis: Int64
    ) -> BoardOperation {
        counter += 1
        let stamp = clock.tick(nowMillis: nowMillis)
        return BoardOperation(id: OperationID(replica: replica, counter: counter), stamp: stamp, board: board,
                         action: action, base: base, restores: restores)
    }

    /// Keeps later local stamps above a stamp seen from elsewhere.
    public mutating func observe(_ stamp: HLCStamp, nowMillis: Int64) {
        clock.observe(stamp, nowMillis: nowMillis)
    }
}

extension BoardState {
    /// The stamps of the registers `action` would overwrite, as this replica sees them now.
    public func base(for action: BoardOperation.Action) -> [BoardOperation.Field: HLCStamp] {
        var base: [BoardOperation.Field: HLCStamp] = [:]
        let target = action.target(board: board.id)
        for field in action.fields {
            let stamp: HLCStamp?
            switch (target, field) {
            case (.board, .title): stamp = board.title?.stamp
            case (.column(let id), .title): stamp = columns[id]?.title?.stamp
            case (.column(let id), .position): stamp = columns[id]?.position?.stamp
            case (.column(let id), .deleted): stamp = columns[id]?.deleted?.stamp
            case (.task(let id), .title): stamp = tasks[id]?.title?.stamp
            case (.task(let id), .description): stamp = tasks[id]?.description?.stamp
            case (.task(let id), .place): stamp = tasks[id]?.place?.stamp
            case (.task(let id), .deleted): stamp = tasks[id]?.deleted?.stamp
            default: stamp = nil
            }
            if let stamp { base[field] = stamp }
        }
        return base
    }

    /// A position key for a task placed directly below `after` in `column` (nil: at the top).
    /// `moving` is left out of the neighbours, so a task can be moved within its own column.
    ///
    /// One pass over the tasks, no sort: it runs on every create and move, on boards of any size.
    public func taskPosition(in column: EntityID, after: EntityID?, moving: EntityID? = nil) -> PositionKey? {
        var anchor: TaskSlot?
        if let after {
            guard after != moving, let task = tasks[after], let place = ColumnOrder.place(of: task), place.column == column
            else { return nil }
            anchor = place.slot
        }
        // The first slot after the anchor (after nothing: the first slot of the column).
        let next = order.first(in: column, after: anchor, excluding: moving)
        return PositionKey.between(anchor?.position, next?.position)
    }

    /// A position key for a column placed directly right of `after` (nil: first).
    public func columnPosition(after: EntityID?, moving: EntityID? = nil) -> PositionKey? {
        let ordered = orderedColumns().filter { $0.id != moving }
        return Self.position(keys: ordered.map { $0.position?.value ?? .initial }, ids: ordered.map(\.id), after: after)
    }

    /// nil when `after` is not among `ids`.
    static func position(keys: [PositionKey], ids: [EntityID], after: EntityID?) -> PositionKey? {
        guard let after else { return PositionKey.between(nil, keys.first) }
        guard let index = ids.firstIndex(of: after) else { return nil }
        let next = index + 1 < keys.count ? keys[index + 1] : nil
        return PositionKey.between(keys[index], next)
    }
}
