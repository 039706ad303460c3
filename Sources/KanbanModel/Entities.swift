/// A board's registers. `created` is set once by `board.create` and never unset.
public struct BoardEntity: Hashable, Sendable {
    public let id: EntityID
    public var created = false
    public var title: Register<String>?

    public init(id: EntityID) { self.id = id }
}

/// A column's registers. Operations that arrive before `column.create` fill the registers they
/// write; the column shows once it is created.
public struct ColumnEntity: Hashable, Sendable {
    public let id: EntityID
    public var created = false
    public var title: Register<String>?
    public var position: Register<PositionKey>?
    public var deleted: Register<Bool>?

    public init(id: EntityID) { self.id = id }

    public var isVisible: Bool { created && !(deleted?.value ?? false) }
}

/// A task's registers.
public struct TaskEntity: Hashable, Sendable {
    public let id: EntityID
    public var created = false
    public var title: Register<String>?
    public var description: Register<String>?
    public var place: Register<Placement>?
    public var deleted: Register<Bool>?

    public init(id: EntityID) { self.id = id }

    public var isDeleted: Bool { deleted?.value ?? false }
}
