/// The board as a front-end shows it: visible columns in order, each with its visible tasks in
/// order, plus the tasks that have nowhere to show.
///
/// Order is (position key, ID) for columns and for tasks inside a column.
/// A live task whose column is deleted, or not yet known here (its `column.create` has not
/// arrived), is never dropped: it is listed in `orphans`, sorted by (column ID, position, ID),
/// and returns to its column when the column is restored or arrives. Deleted tasks are listed
/// in `trash` (newest deletion first) so they can be restored.
public struct BoardDocument: Codable, Hashable, Sendable {
    public var id: EntityID
    public var title: String
    /// The local replica's change counter when the document was read; events with a higher
    /// version are newer than this document.
    public var version: Int64
    public var columns: [ColumnView]
    public var orphans: [TaskView]
    public var trash: [TaskView]
    /// Deleted columns, so they can be restored (their live tasks are in `orphans`).
    public var deletedColumns: [ColumnView]

    public init(id: EntityID, title: String, version: Int64, columns: [ColumnView], orphans: [TaskView], trash: [TaskView],
                deletedColumns: [ColumnView] = []) {
        (self.id, self.title, self.version, self.columns, self.orphans, self.trash) = (id, title, version, columns, orphans, trash)
        self.deletedColumns = deletedColumns
    }

    public struct ColumnView: Codable, Hashable, Sendable {
        public var id: EntityID
        public var title: String
        public var position: PositionKey
        public var tasks: [TaskView]

        public init(id: EntityID, title: String, position: PositionKey, tasks: [TaskView]) {
            (self.id, self.title, self.position, self.tasks) = (id, title, position, tasks)
        }
    }

    public struct TaskView: Codable, Hashable, Sendable {
        public var id: EntityID
        public var columnId: EntityID
        public var position: PositionKey
        public var title: String
        public var description: String
        public var deleted: Bool

        public init(id: EntityID, columnId: EntityID, position: PositionKey, title: String, description: String, deleted: Bool) {
            (self.id, self.columnId, self.position, self.title, self.description, self.deleted) = (id, columnId, position, title, description, deleted)
        }
    }
}

extension BoardState {
    /// Whether the board itself has been created (its `board.create` is known here).
    public var exists: Bool { board.created }

    /// The visible document of this state.
    public func document(version: Int64 = 0) -> BoardDocument {
        let visibleColumns = columns.values.filter(\.isVisible)
            .sorted { ($0.position?.value ?? .initial, $0.id) < ($1.position?.value ?? .initial, $1.id) }
        let visibleIDs = Set(visibleColumns.map(\.id))
        var byColumn: [EntityID: [BoardDocument.TaskView]] = [:]
        var orphans: [BoardDocument.TaskView] = []
        var trash: [(HLCStamp, BoardDocument.TaskView)] = []
        for task in tasks.values where task.created {
            guard let view = taskView(task) else { continue }
            if task.isDeleted {
                trash.append((task.deleted!.stamp, view))
            } else if visibleIDs.contains(view.columnId) {
                byColumn[view.columnId, default: []].append(view)
            } else {
                orphans.append(view)
            }
        }
        let inOrder: (BoardDocument.TaskView, BoardDocument.TaskView) -> Bool = {
            ($0.position, $0.id) < ($1.position, $1.id)
        }
        return BoardDocument(
            id: board.id,
            title: board.title?.value ?? "",
            version: version,
            columns: visibleColumns.map { column in
                BoardDocument.ColumnView(
                    id: column.id, title: column.title?.value ?? "",
                    position: column.position?.value ?? .initial,
                    tasks: (byColumn[column.id] ?? []).sorted(by: inOrder))
            },
            orphans: orphans.sorted { ($0.columnId, $0.position, $0.id) < ($1.columnId, $1.position, $1.id) },
            trash: trash.sorted { $0.0 > $1.0 }.map(\.1),
            deletedColumns: columns.values.filter { $0.created && !$0.isVisible }
                .sorted { ($0.deleted!.stamp, $0.id) > ($1.deleted!.stamp, $1.id) }
                .map { .init(id: $0.id, title: $0.title?.value ?? "", position: $0.position?.value ?? .initial, tasks: []) }
        )
    }

    /// The view of one task, if it has been created and placed.
    public func taskView(_ task: TaskEntity) -> BoardDocument.TaskView? {
        guard task.created, let place = task.place?.value else { return nil }
        return BoardDocument.TaskView(
            id: task.id, columnId: place.column, position: place.position,
            title: task.title?.value ?? "", description: task.description?.value ?? "",
            deleted: task.isDeleted)
    }

    /// Visible tasks of one column, in order.
    public func orderedTasks(in column: EntityID) -> [TaskEntity] {
        orderedTaskSlots(in: column).map { tasks[$0.id]! }
    }

    /// (position, ID) of the visible tasks of one column, in order; cheaper than whole entities.
    public func orderedTaskSlots(in column: EntityID) -> [(position: PositionKey, id: EntityID)] {
        order.tasks(in: column).map { ($0.position, $0.id) }
    }

    /// Visible columns, in order.
    public func orderedColumns() -> [ColumnEntity] {
        columns.values.filter(\.isVisible)
            .sorted { ($0.position?.value ?? .initial, $0.id) < ($1.position?.value ?? .initial, $1.id) }
    }
}
