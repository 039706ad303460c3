/// A visible task's place in its column: columns order their tasks by position key, then by
/// task ID.
public struct TaskSlot: Hashable, Comparable, Sendable {
    public let position: PositionKey
    public let id: EntityID

    public static func < (a: TaskSlot, b: TaskSlot) -> Bool { (a.position, a.id) < (b.position, b.id) }
}

/// Each column's visible (created, not deleted) tasks in order, derived from a board's tasks and
/// kept in step with every change to them (`BoardState.setTask`), so finding or listing a
/// column's tasks does not scan the whole board. It holds nothing the tasks do not: two equal
/// sets of tasks give equal orders.
struct ColumnOrder: Hashable, Sendable {
    private var slots: [EntityID: [TaskSlot]] = [:]

    /// Where `task` belongs in the order, or nil when it is not visible in any column.
    static func place(of task: TaskEntity) -> (column: EntityID, slot: TaskSlot)? {
        guard task.created, !task.isDeleted, let place = task.place?.value else { return nil }
        return (place.column, TaskSlot(position: place.position, id: task.id))
    }

    /// A task moved from `old` to `new` (either may be nil: it appeared or disappeared).
    mutating func update(from old: (column: EntityID, slot: TaskSlot)?, to new: (column: EntityID, slot: TaskSlot)?) {
        if let old, let new, old.column == new.column, old.slot == new.slot { return }
        // Arrays are changed in place in the dictionary (a copy out and back would copy the
        // whole column on every change).
        if let old, let index = slots[old.column].flatMap({ list -> Int? in
            let index = Self.lowerBound(list, old.slot)
            return index < list.count && list[index] == old.slot ? index : nil
        }) {
            slots[old.column]!.remove(at: index)
            if slots[old.column]!.isEmpty { slots[old.column] = nil }
        }
        if let new {
            let index = slots[new.column].map { Self.lowerBound($0, new.slot) } ?? 0
            slots[new.column, default: []].insert(new.slot, at: index)
        }
    }

    func tasks(in column: EntityID) -> [TaskSlot] { slots[column] ?? [] }

    /// The first slot strictly after `anchor` (nil: the first slot), skipping `excluding`.
    func first(in column: EntityID, after anchor: TaskSlot?, excluding: EntityID?) -> TaskSlot? {
        guard let list = slots[column] else { return nil }
        var index = anchor.map { Self.upperBound(list, $0) } ?? 0
        while index < list.count, list[index].id == excluding { index += 1 }
        return index < list.count ? list[index] : nil
    }

    /// Index of the first element not less than `slot`.
    private static func lowerBound(_ list: [TaskSlot], _ slot: TaskSlot) -> Int {
        var (low, high) = (0, list.count)
        while low < high {
            let mid = (low + high) / 2
            if list[mid] < slot { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// Index of the first element greater than `slot`.
    private static func upperBound(_ list: [TaskSlot], _ slot: TaskSlot) -> Int {
        var (low, high) = (0, list.count)
        while low < high {
            let mid = (low + high) / 2
            if slot < list[mid] { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
