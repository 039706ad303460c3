public import KanbanModel
import KanbanStore
import CoreMetrics
import HTTPTypes

/// The edits front-ends ask for. Each validates against the current state, then authors one
/// operation; it returns after the operation is committed to the log.
extension Agent {
    public func createBoard(title: String) async throws -> BoardDocument {
        try check { try OperationLimits.checkTitle(title) }
        let board = EntityID.make()
        _ = try await author(board) { _ in .createBoard(title: title) }
        return try document(board)
    }

    public func renameBoard(_ board: EntityID, title: String) async throws -> BoardDocument {
        try check { try OperationLimits.checkTitle(title) }
        _ = try await author(board) { state in
            try Self.requireBoard(state)
            return .renameBoard(title: title)
        }
        return try document(board)
    }

    public func document(_ board: EntityID) throws -> BoardDocument {
        guard let doc = try store.document(board) else { throw AgentError.notFound("board", board.rawValue) }
        return doc
    }

    public func createColumn(board: EntityID, title: String, after: EntityID?) async throws -> EntitySnapshot {
        try check { try OperationLimits.checkTitle(title) }
        return try await author(board) { state in
            try Self.requireBoard(state)
            guard let position = state.columnPosition(after: after) else {
                throw AgentError.badRequest("'after' is not a column of this board", field: "after")
            }
            return .createColumn(column: EntityID.make(), title: title, position: position)
        }.entity
    }

    /// Renames and/or moves a column. `after`: absent = stay, null = first, ID = right of it.
    public func updateColumn(_ column: EntityID, title: String?, after: EntityID??) async throws -> EntitySnapshot {
        if let title { try check { try OperationLimits.checkTitle(title) } }
        guard title != nil || after != nil else {
            throw AgentError.badRequest("nothing to change: send 'title' and/or 'after'")
        }
        let board = try boardOf(column: column)
        // Check everything before writing anything, so a bad `after` cannot leave a rename behind.
        try store.withState(board) { state, _ in
            try Self.requireColumn(state, column)
            if let after {
                if after == column { throw AgentError.badRequest("a column cannot go after itself", field: "after") }
                guard state.columnPosition(after: after, moving: column) != nil else {
                    throw AgentError.badRequest("'after' is not a column of this board", field: "after")
                }
            }
        }
        var last: AppliedChange?
        if let title {
            last = try await author(board) { state in
                try Self.requireColumn(state, column)
                return .renameColumn(column: column, title: title)
            }
        }
        if let after {
            last = try await author(board) { state in
                try Self.requireColumn(state, column)
                if after == column { throw AgentError.badRequest("a column cannot go after itself", field: "after") }
                guard let position = state.columnPosition(after: after, moving: column) else {
                    throw AgentError.badRequest("'after' is not a column of this board", field: "after")
                }
                return .moveColumn(column: column, position: position)
            }
        }
        return last!.entity
    }

    public func deleteColumn(_ column: EntityID) async throws -> EntitySnapshot {
        let board = try boardOf(column: column)
        return try await author(board) { state in
            try Self.requireColumn(state, column, allowDeleted: true)
            return .deleteColumn(column: column)
        }.entity
    }

    public func restoreColumn(_ column: EntityID) async throws -> EntitySnapshot {
        let board = try boardOf(column: column)
        return try await author(board) { _ in .restoreColumn(column: column) }.entity
    }

    public func createTask(column: EntityID, title: String, description: String?, after: EntityID?) async throws -> EntitySnapshot {
        try check {
            try OperationLimits.checkTitle(title)
            if let description { try OperationLimits.checkDescription(description) }
        }
        let board = try boardOf(column: column)
        return try await author(board) { state in
            try Self.requireColumn(state, column)
            guard let position = state.taskPosition(in: column, after: after) else {
                throw AgentError.badRequest("'after' is not a task in this column", field: "after")
            }
            return .createTask(task: EntityID.make(), column: column, position: position, title: title,
                               description: description ?? "")
        }.entity
    }

    public func updateTask(_ task: EntityID, title: String?, description: String?) async throws -> EntitySnapshot {
        try check {
            if let title { try OperationLimits.checkTitle(title) }
            if let description { try OperationLimits.checkDescription(description) }
        }
        guard title != nil || description != nil else {
            throw AgentError.badRequest("nothing to change: send 'title' and/or 'description'")
        }
        let board = try boardOf(task: task)
        return try await author(board) { _ in .updateTask(task: task, title: title, description: description) }.entity
    }

    public func moveTask(_ task: EntityID, to column: EntityID, after: EntityID?) async throws -> EntitySnapshot {
        let board = try boardOf(task: task)
        return try await author(board) { state in
            try Self.requireColumn(state, column, field: "columnId")
            if after == task { throw AgentError.badRequest("a task cannot go below itself", field: "after") }
            guard let position = state.taskPosition(in: column, after: after, moving: task) else {
                throw AgentError.badRequest("'after' is not a task in the target column", field: "after")
            }
            return .moveTask(task: task, column: column, position: position)
        }.entity
    }

    public func deleteTask(_ task: EntityID) async throws -> EntitySnapshot {
        let board = try boardOf(task: task)
        return try await author(board) { _ in .deleteTask(task: task) }.entity
    }

    public func restoreTask(_ task: EntityID) async throws -> EntitySnapshot {
        let board = try boardOf(task: task)
        return try await author(board) { _ in .restoreTask(task: task) }.entity
    }

    public func conflicts(_ board: EntityID) throws -> [Conflict] {
        _ = try document(board)
        return try store.conflicts(board)
    }

    /// Writes a losing value back, recording which conflict it resolves.
    public func restoreConflict(board: EntityID, loser: OperationID) async throws -> EntitySnapshot {
        guard let conflict = try store.conflicts(board).first(where: { $0.loser == loser }) else {
            throw AgentError.notFound("conflict", loser.description)
        }
        return try await author(board, restores: loser) { _ in
            let id = conflict.entityId
            switch (conflict.entity, conflict.loserValue) {
            case ("board", .text(let title)): return .renameBoard(title: title)
            case ("column", .text(let title)): return .renameColumn(column: id, title: title)
            case ("column", .position(let key)): return .moveColumn(column: id, position: key)
            case ("column", .flag(let deleted)): return deleted ? .deleteColumn(column: id) : .restoreColumn(column: id)
            case ("task", .text(let text)):
                return conflict.field == .title ? .updateTask(task: id, title: text, description: nil)
                                                : .updateTask(task: id, title: nil, description: text)
            case ("task", .placement(let p)): return .moveTask(task: id, column: p.column, position: p.position)
            case ("task", .flag(let deleted)): return deleted ? .deleteTask(task: id) : .restoreTask(task: id)
            default: throw AgentError.badRequest("this conflict cannot be restored")
            }
        }.entity
    }

    // MARK: - Helpers

    func author(_ board: EntityID, restores: OperationID? = nil,
                _ build: @escaping @Sendable (BoardState) throws -> BoardOperation.Action) async throws -> AppliedChange {
        let start = ContinuousClock.now
        defer {
            let elapsed = (ContinuousClock.now - start).components
            metrics.commitLatency.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        }
        let change = try await store.author(board: board, restores: restores, build)
        CommittedOperations.current?.append(change.operation.id)
        return change
    }

    func boardOf(task: EntityID) throws -> EntityID {
        guard let board = try store.boardOfTask(task) else { throw AgentError.notFound("task", task.rawValue) }
        return board
    }

    func boardOf(column: EntityID) throws -> EntityID {
        guard let board = try store.boardOfColumn(column) else { throw AgentError.notFound("column", column.rawValue) }
        return board
    }

    static func requireBoard(_ state: BoardState) throws {
        guard state.exists else { throw AgentError.notFound("board", state.id.rawValue) }
    }

    static func requireColumn(_ state: BoardState, _ column: EntityID, allowDeleted: Bool = false, field: String? = nil) throws {
        guard let c = state.columns[column], c.created else {
            throw AgentError.notFound("column", column.rawValue, field: field)
        }
        if !allowDeleted && !c.isVisible {
            throw AgentError(.conflict, code: "column_deleted", "column \(column) is deleted",
                             hint: "Restore it with POST /api/columns/\(column)/restore, or use another column.", field: field)
        }
    }

    func check(_ body: () throws -> Void) throws {
        do { try body() } catch let error as OperationError { throw error.agentError }
    }
}
