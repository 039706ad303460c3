public import KanbanModel
import GRDB
import Synchronization
import Foundation

extension ReplicaStore {
    /// Authors one local operation: `build` sees the board's current state and returns the action
    /// (or throws to refuse); the operation is stamped, logged, applied and queued in the outbox
    /// in one transaction. Returns only after the commit. Blocks the calling thread; async code
    /// uses the `async` overload, which shares commits between concurrent callers.
    @discardableResult
    public func author(
        board: EntityID, restores: OperationID? = nil,
        _ build: (BoardState) throws -> BoardOperation.Action
    ) throws -> AppliedChange {
        try write { db in
            let op: BoardOperation
            do {
                op = try self.makeOperation(board: board, restores: restores, build, in: db)
            } catch let refusal as RefusedBuild {
                throw refusal.error
            }
            let change = try self.logAuthored([op], in: db)[0]
            self.announceAfterCommit([change], in: db)
            return change
        }
    }

    /// Authors one local operation like the synchronous overload, without blocking a thread.
    ///
    /// Group commit: while one transaction commits, operations from other callers queue; the
    /// next transaction takes all of them, so concurrent writers share one commit (and one
    /// fsync). A refused `build` fails only its own caller; a database error fails the batch,
    /// which rolls back entirely.
    @discardableResult
    public func author(
        board: EntityID, restores: OperationID? = nil,
        _ build: @escaping @Sendable (BoardState) throws -> BoardOperation.Action
    ) async throws -> AppliedChange {
        try await withCheckedThrowingContinuation { continuation in
            let job = AuthorJob(board: board, restores: restores, build: build, continuation: continuation)
            authorQueue.submit(job) { db, jobs in self.commitAuthorJobs(jobs, in: db) }
        }
    }

    /// On the database writer (`GroupCommit`): one transaction for the queued edits.
    private func commitAuthorJobs(_ jobs: [AuthorJob], in db: Database) {
        // Per job: its refusal, or the index of its operation among the ones logged.
        var outcomes: [Result<Int, any Error>] = []
        let committed: Result<[AppliedChange], any Error> = Result {
            try transaction(db) { db in
                outcomes = []
                var ops: [BoardOperation] = []
                for job in jobs {
                    do {
                        ops.append(try makeOperation(board: job.board, restores: job.restores, job.build, in: db))
                        outcomes.append(.success(ops.count - 1))
                    } catch let refusal as RefusedBuild {
                        outcomes.append(.failure(refusal.error))
                    }
                }
                let changes = try logAuthored(ops, in: db)
                announceAfterCommit(changes, in: db)
                return changes
            }
        }
        switch committed {
        case .success(let changes):
            for (job, outcome) in zip(jobs, outcomes) { job.continuation.resume(with: outcome.map { changes[$0] }) }
        case .failure(let error):
            for job in jobs { job.continuation.resume(throwing: error) }
        }
    }

    /// Stamps the operation `build` asks for. A refusal from `build` is thrown as `RefusedBuild`
    /// and leaves nothing changed; other errors are the database's.
    private func makeOperation(
        board: EntityID, restores: OperationID?, _ build: (BoardState) throws -> BoardOperation.Action, in db: Database
    ) throws -> BoardOperation {
        try ensureLoaded(board, in: db)
        return try cache.withLock { cache in
            let state = cache.boards[board]!
            let action: BoardOperation.Action
            do { action = try build(state) } catch { throw RefusedBuild(error: error) }
            return cache.author.make(action, board: board, base: state.base(for: action), restores: restores,
                                     nowMillis: clock.nowMillis())
        }
    }

    /// Logs freshly stamped local operations (the counter and clock are saved by `saveCeilings`).
    private func logAuthored(_ ops: [BoardOperation], in db: Database) throws -> [AppliedChange] {
        if ops.isEmpty { return [] }
        let log = try LogStatements(db)
        return try ops.map { op in
            guard let change = try insert(op, local: true, with: log, in: db) else {
                throw StoreError(.conflict, "operation ID \(op.id) is already in the log; the replica's counter is behind its log")
            }
            return change
        }
    }

    /// Applies operations from elsewhere (relay, tests, benchmarks) in one transaction.
    /// Operations already in the log are skipped; `cursors` advance the per-board relay cursors
    /// (never backwards) in the same transaction, `marks` naming the operation at each new
    /// cursor where it is known (see `cursorMarks`).
    @discardableResult
    public func apply(_ ops: [BoardOperation], local: Bool = false, cursors: [EntityID: Int64] = [:],
                      marks: [EntityID: OperationID] = [:]) throws -> [AppliedChange] {
        try write { db in try self.applyInTransaction(ops, local: local, cursors: cursors, marks: marks, in: db) }
    }

    /// `apply` without blocking the calling thread while the transaction commits.
    @discardableResult
    public func apply(_ ops: [BoardOperation], local: Bool = false, cursors: [EntityID: Int64] = [:],
                      marks: [EntityID: OperationID] = [:]) async throws -> [AppliedChange] {
        try await writer.writeWithoutTransaction { db in
            try self.transaction(db) { db in try self.applyInTransaction(ops, local: local, cursors: cursors, marks: marks, in: db) }
        }
    }

    private func applyInTransaction(_ ops: [BoardOperation], local: Bool, cursors: [EntityID: Int64], marks: [EntityID: OperationID],
                                    in db: Database) throws -> [AppliedChange] {
        var changes: [AppliedChange] = []
        changes.reserveCapacity(ops.count)
        let log = try LogStatements(db)
        var newest: HLCStamp?
        for op in ops {
            if !local && op.id.replica == self.replicaID {
                // One of ours came back from the relay: it is stored there, so it is acknowledged.
                try db.cachedStatement(sql: Self.deleteFromOutbox).execute { $0.operation(op.id) }
                self.outboxTail.withLock { $0.remove([op.id]) }
            }
            try self.ensureLoaded(op.board, in: db)
            if let change = try self.insert(op, local: local, with: log, in: db) { changes.append(change) }
            if newest.map({ $0 < op.stamp }) ?? true { newest = op.stamp }
        }
        let now = self.clock.nowMillis()
        if let newest { self.cache.withLock { $0.author.observe(newest, nowMillis: now) } }
        try Self.advanceCursors(cursors, marks: marks, in: db)
        self.announceAfterCommit(changes, in: db)
        return changes
    }

    /// Raises the saved ceilings once the clock or the counter has passed them, in the same
    /// transaction, so a restart resumes above every stamp and counter this transaction logs.
    /// Under a steady stream of commits only a small share of them write to `meta`.
    private func saveCeilings(in db: Database) throws {
        let (clock, counter) = cache.withLock { cache -> (HLCStamp?, UInt64?) in
            var clock: HLCStamp?, counter: UInt64?
            let last = cache.author.clock.last
            if cache.ceilings.clock.map({ last > $0 }) ?? true {
                let wall = last.wallMillis + Ceilings.clockMargin
                // Past the largest wall time a stamp can spell, the exact value is the ceiling.
                clock = wall <= Ceilings.maxWallMillis ? HLCStamp(wallMillis: wall, counter: 0, replica: last.replica) : last
                cache.ceilings.clock = clock
            }
            if cache.author.counter > cache.ceilings.counter {
                let raised = cache.author.counter + Ceilings.counterMargin
                counter = raised
                cache.ceilings.counter = raised
            }
            return (clock, counter)
        }
        if let clock {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('hlc', ?)").execute { $0.stamp(clock) }
        }
        if let counter {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('counter', ?)")
                .execute(arguments: [String(counter)])
        }
    }

    /// Calls the change listeners once the transaction has committed, in commit order
    /// (GRDB runs commit hooks on the serialized writer).
    func announceAfterCommit(_ changes: [AppliedChange], in db: Database) {
        guard !changes.isEmpty else { return }
        let listeners = self.listeners.withLock { $0 }
        guard !listeners.isEmpty else { return }
        db.afterNextTransaction(onCommit: { _ in
            // The sync session a listener wakes reads the outbox tail: it must hold these first.
            self.moveAuthoredToOutboxTail()
            for listener in listeners { listener(changes) }
        })
    }

    /// Joins a relay snapshot (a board's state at relay sequence `seq`) into the replica, stores
    /// it beside the op log, and advances the board's cursor to `seq`, in one transaction.
    public func applySnapshot(_ snapshot: BoardSnapshot, seq: Int64) throws {
        let board = snapshot.board
        let incoming = snapshot.state
        try write { db in
            try self.ensureLoaded(board, in: db)
            let state = self.cache.withLock { cache -> BoardState in
                cache.touched.insert(board)
                cache.boards[board]!.join(incoming)
                if let newest = incoming.maxStamp { cache.author.observe(newest, nowMillis: self.clock.nowMillis()) }
                return cache.boards[board]!
            }
            try Self.save(.board(board), of: state, in: db)
            for id in incoming.columns.keys { try Self.save(.column(id), of: state, in: db) }
            for id in incoming.tasks.keys { try Self.save(.task(id), of: state, in: db) }
            var stored = incoming
            var storedSeq = seq
            if let row = try Row.fetchOne(db, sql: "SELECT seq, body FROM snapshot WHERE board_id = ?", arguments: [board.rawValue]) {
                let previous = try JSONDecoder().decode(BoardSnapshot.self, from: Data((row["body"] as String).utf8))
                stored.join(previous.state)
                storedSeq = max(seq, row["seq"])
            }
            let body = String(decoding: try JSONEncoder().encode(BoardSnapshot(stored)), as: UTF8.self)
            try db.execute(sql: "INSERT OR REPLACE INTO snapshot (board_id, seq, body) VALUES (?, ?, ?)",
                           arguments: [board.rawValue, storedSeq, body])
            try Self.advanceCursors([board: seq], marks: [:], in: db)
        }
    }

    /// The statements that log each operation, looked up once per batch (`cachedStatement`
    /// hashes the SQL on every call).
    struct LogStatements {
        let insertOp: Statement
        let insertOutbox: Statement

        init(_ db: Database) throws {
            insertOp = try db.cachedStatement(sql: """
                INSERT INTO op (id, board_id, body, local) VALUES (?, ?, ?, ?)
                ON CONFLICT (id) DO NOTHING
                """)
            insertOutbox = try db.cachedStatement(sql: "INSERT INTO outbox (seq) VALUES (?)")
        }
    }

    /// Logs and applies one operation inside an open transaction; nil if it was already logged.
    func insert(_ op: BoardOperation, local: Bool, with log: LogStatements, in db: Database) throws -> AppliedChange? {
        let body = op.jsonBytes()
        try log.insertOp.execute { row in
            row.operation(op.id)
            row.text(op.board.rawValue)
            body.withUnsafeBufferPointer { row.text(bytes: $0) }
            row.bool(local)
        }
        guard db.changesCount > 0 else { return nil }
        let seq = db.lastInsertedRowID
        if local {
            try log.insertOutbox.execute { row in row.int(seq) }
        }
        let (outcome, snapshot) = cache.withLock { cache in
            if local { cache.authored.append(OutboxTail.Entry(seq: seq, id: op.id, json: body)) }
            cache.lastSeq = seq
            cache.touched.insert(op.board)
            return Self.apply(op, to: &cache.boards[op.board]!, dirty: &cache.dirty)
        }
        return AppliedChange(operation: op, seq: seq, changed: outcome.changed, local: local, entity: snapshot)
    }

    /// Applies an operation to its board's mirror (looked up once) and marks the row it changed.
    private static func apply(
        _ op: BoardOperation, to state: inout BoardState, dirty: inout [DirtyRow: DirtyFields]
    ) -> (BoardState.Outcome, EntitySnapshot) {
        var fields = DirtyFields(op.action)
        if case .task(let id) = op.action.target(board: op.board), state.tasks[id] == nil { fields = .whole }
        let outcome = state.apply(op)
        if outcome.changed { dirty[DirtyRow(board: op.board, entity: outcome.target), default: []].formUnion(fields) }
        return (outcome, state.snapshot(of: outcome.target))
    }

    /// Runs a write transaction. If it rolls back, the author, version and ceilings go back to
    /// what they were before it, and the boards it changed are dropped from the mirror (reloaded
    /// on next use).
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try writer.writeWithoutTransaction { db in try transaction(db, body) }
    }

    /// One transaction on the writer's connection, with the mirror kept in step (see `write`).
    /// Every rollback here surfaces as an error from `inTransaction` (the body always asks to
    /// commit), so the undo runs from the error. GRDB's rollback hook is not enough: when COMMIT
    /// itself fails (a full disk) and SQLite rolls back on its own, GRDB calls no hook, and the
    /// mirror kept every change of the transaction that was not stored (the board showed tasks
    /// whose creation had answered 500).
    func transaction<T>(_ db: Database, _ body: (Database) throws -> T) throws -> T {
        var result: T?
        var undo: (() -> Void)?
        do {
            try db.inTransaction(.immediate) {
                let saved = cache.withLock { cache in
                    cache.touched = []
                    cache.dirty = [:]
                    cache.authored = []
                    return (cache.author, cache.lastSeq, cache.ceilings)
                }
                // Acknowledgments recorded since the last transaction are written with this one.
                let acknowledged = pendingAcknowledgments.withLock { pending in
                    defer { pending = PendingAcknowledgments() }
                    return pending
                }
                undo = {
                    self.cache.withLock { cache in
                        for board in cache.touched { cache.boards.removeValue(forKey: board) }
                        cache.touched = []
                        cache.dirty = [:]
                        cache.authored = []
                        (cache.author, cache.lastSeq, cache.ceilings) = saved
                    }
                    self.pendingAcknowledgments.withLock { $0.add(acknowledged.ids, cursors: acknowledged.cursors, marks: acknowledged.marks) }
                }
                db.afterNextTransaction(onCommit: { _ in self.moveAuthoredToOutboxTail() })
                if !acknowledged.isEmpty { try Self.acknowledge(acknowledged.ids, cursors: acknowledged.cursors, marks: acknowledged.marks, in: db) }
                result = try body(db)
                try saveDirtyRows(in: db)
                try saveCeilings(in: db)
                return .commit
            }
        } catch {
            undo?()
            throw error
        }
        return result!
    }

    /// After a commit, on the writer: the local operations it logged join the outbox tail
    /// (idempotent; whichever commit hook runs first does it).
    func moveAuthoredToOutboxTail() {
        let authored = cache.withLock { cache in
            defer { cache.authored = [] }
            return cache.authored
        }
        if !authored.isEmpty { outboxTail.withLock { $0.append(authored) } }
    }

    /// Writes each row the transaction changed once, however many of its operations touched it.
    private func saveDirtyRows(in db: Database) throws {
        // The boards are copied out (one reference, not one per row) so that no lock is held
        // while SQLite writes; the copy is gone before the next transaction mutates them.
        let (rows, boards) = cache.withLock { cache in
            defer { cache.dirty = [:] }
            return (cache.dirty, cache.boards)
        }
        var upserts = Upserts(db)
        for (row, fields) in rows {
            if fields.contains(.whole) {
                try Self.save(row.entity, of: boards[row.board]!, with: &upserts)
            } else {
                try Self.update(row.entity, fields, of: boards[row.board]!, with: &upserts)
            }
        }
    }

    /// Loads a board's rows into the cache if it is not there yet. Call inside a write.
    func ensureLoaded(_ board: EntityID, in db: Database) throws {
        if cache.withLock({ $0.boards[board] != nil }) { return }
        let state = try Self.loadState(board, in: db)
        cache.withLock { $0.boards[board] = state }
    }
}

/// A local edit waiting for the next group commit.
struct AuthorJob: Sendable {
    let board: EntityID
    let restores: OperationID?
    let build: @Sendable (BoardState) throws -> BoardOperation.Action
    let continuation: CheckedContinuation<AppliedChange, any Error>
}

/// `build` refused the edit; carries its error.
struct RefusedBuild: Error {
    let error: any Error
}
