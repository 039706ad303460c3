/// A write that lost to a concurrent write on the same register, found from the op log.
///
/// A write W on register R is a conflict when it is not R's current value, no later write on R
/// was made by someone who saw W as R's value (its `base` for R is W's stamp), and no operation
/// has restored W. Sequential edits are therefore never conflicts; two people editing the same
/// title at once leave exactly one conflict (the loser) until someone restores or overwrites
/// it knowingly.
public struct Conflict: Hashable, Sendable, Codable {
    public var entity: String
    public var entityId: EntityID
    public var field: BoardOperation.Field
    public var loser: OperationID
    public var loserStamp: HLCStamp
    public var loserValue: ConflictValue
    public var winner: OperationID
    public var winnerValue: ConflictValue
}

/// The value a write put in a register. JSON: a string (text or position key), an object
/// `{"column", "position"}` (placement) or a boolean (deleted).
public enum ConflictValue: Hashable, Sendable, Codable {
    case text(String)
    case placement(Placement)
    case position(PositionKey)
    case flag(Bool)

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .text(let v): try c.encode(v)
        case .placement(let v): try c.encode(v)
        case .position(let v): try c.encode(v)
        case .flag(let v): try c.encode(v)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let flag = try? c.decode(Bool.self) {
            self = .flag(flag)
        } else if let placement = try? c.decode(Placement.self) {
            self = .placement(placement)
        } else {
            self = .text(try c.decode(String.self))
        }
    }
}

extension BoardOperation {
    /// The (entity, field, value) triples this operation writes.
    public var writes: [(EntityRef, Field, ConflictValue)] {
        let target = action.target(board: board)
        switch action {
        case .createBoard(let title), .renameBoard(let title), .renameColumn(_, let title):
            return [(target, .title, .text(title))]
        case .createColumn(_, let title, let position):
            return [(target, .title, .text(title)), (target, .position, .position(position))]
        case .moveColumn(_, let position):
            return [(target, .position, .position(position))]
        case .deleteColumn, .deleteTask:
            return [(target, .deleted, .flag(true))]
        case .restoreColumn, .restoreTask:
            return [(target, .deleted, .flag(false))]
        case .createTask(_, let column, let position, let title, let description):
            return [(target, .title, .text(title)), (target, .description, .text(description)),
                    (target, .place, .placement(Placement(column: column, position: position)))]
        case .updateTask(_, let title, let description):
            var out: [(EntityRef, Field, ConflictValue)] = []
            if let title { out.append((target, .title, .text(title))) }
            if let description { out.append((target, .description, .text(description))) }
            return out
        case .moveTask(_, let column, let position):
            return [(target, .place, .placement(Placement(column: column, position: position)))]
        }
    }
}

public enum ConflictFinder {
    struct Slot: Hashable {
        var entity: EntityRef
        var field: BoardOperation.Field
    }

    /// Conflicts among a board's operations, sorted by entity, field and loser stamp.
    /// The result depends only on the set of operations, not their order.
    public static func conflicts(in operations: some Sequence<BoardOperation>) -> [Conflict] {
        var writes: [Slot: [(BoardOperation, ConflictValue)]] = [:]
        var seen: [Slot: Set<HLCStamp>] = [:]
        var restored = Set<OperationID>()
        var unique: [OperationID: BoardOperation] = [:]
        for op in operations { unique[op.id] = op }
        for op in unique.values {
            for (entity, field, value) in op.writes {
                let slot = Slot(entity: entity, field: field)
                writes[slot, default: []].append((op, value))
                if let base = op.base[field] { seen[slot, default: []].insert(base) }
            }
            if let r = op.restores { restored.insert(r) }
        }
        var result: [Conflict] = []
        for (slot, list) in writes where list.count > 1 {
            let winner = list.max { $0.0.stamp < $1.0.stamp }!
            let seenHere = seen[slot] ?? []
            for (op, value) in list where op.id != winner.0.id {
                if seenHere.contains(op.stamp) || restored.contains(op.id) { continue }
                // A task's create is the starting value, not a competing edit.
                if case .createTask = op.action { continue }
                if case .createColumn = op.action { continue }
                if case .createBoard = op.action { continue }
                result.append(Conflict(
                    entity: slot.entity.kindName, entityId: slot.entity.id, field: slot.field,
                    loser: op.id, loserStamp: op.stamp, loserValue: value,
                    winner: winner.0.id, winnerValue: winner.1))
            }
        }
        return result.sorted {
            ($0.entityId, $0.field, $0.loserStamp) < ($1.entityId, $1.field, $1.loserStamp)
        }
    }
}
