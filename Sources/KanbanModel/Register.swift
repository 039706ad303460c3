/// A last-writer-wins register: the value written by the operation with the highest HLC stamp.
///
/// Merging is commutative, associative and idempotent, which is what lets operations arrive in
/// any order, any number of times.
public struct Register<Value: Hashable & Sendable>: Hashable, Sendable {
    public var value: Value
    public var stamp: HLCStamp
    public var op: OperationID

    public init(value: Value, stamp: HLCStamp, op: OperationID) {
        self.value = value
        self.stamp = stamp
        self.op = op
    }
}

extension Optional {
    /// Folds a write into an optional register; returns whether the register changed.
    @discardableResult
    mutating func merge<V>(_ value: V, stamp: HLCStamp, op: OperationID) -> Bool where Wrapped == Register<V> {
        if let current = self, current.stamp >= stamp { return false }
        self = Register(value: value, stamp: stamp, op: op)
        return true
    }
}

/// Where a task sits: its column and its position key inside that column.
/// One register, so a move is atomic: a task is never in one column at another column's position.
public struct Placement: Hashable, Sendable, Codable {
    public var column: EntityID
    public var position: PositionKey

    public init(column: EntityID, position: PositionKey) {
        self.column = column
        self.position = position
    }
}
