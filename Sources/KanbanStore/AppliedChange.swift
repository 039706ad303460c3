public import KanbanModel

/// One operation newly added to the log, and what it did.
public struct AppliedChange: Sendable, Hashable {
    public let operation: BoardOperation
    /// Local log sequence: the version of the replica after this change.
    public let seq: Int64
    /// Whether any visible or hidden register changed (false when the write lost to a newer one).
    public let changed: Bool
    /// True when this replica authored the operation.
    public let local: Bool
    /// The target entity after the change.
    public let entity: EntitySnapshot
}

/// A board as listed by `boards()`.
public struct BoardSummary: Sendable, Hashable, Codable {
    public let id: EntityID
    public let title: String
}
