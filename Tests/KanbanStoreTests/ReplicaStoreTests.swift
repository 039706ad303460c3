import Foundation
import GRDB
import KanbanModel
import KanbanSimulation
import KanbanStore
import Testing

/// A new empty directory, named after the test that asked for it (so a leftover says whose it is).
func temporaryDirectory(_ test: String = #function) -> URL {
    let name = test.prefix { $0 != "(" }
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kanban-test-\(name)-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Rows in the outbox table of the database at `path`, read on a connection of its own.
func rowsInOutbox(_ path: String) throws -> Int {
    try otherConnection(path).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outbox") ?? 0 }
}

/// A connection of its own to the database at `path`, that waits out the store's locks.
func otherConnection(_ path: String) throws -> DatabaseQueue {
    var configuration = Configuration()
    configuration.busyMode = .timeout(10)
    return try DatabaseQueue(path: path, configuration: configuration)
}

struct ReplicaStoreTests {
    func simulation(seed: UInt64, replicas: Int = 3, ops: Int = 100) -> ReplicaSimulation {
        var sim = ReplicaSimulation(seed: seed, replicaCount: replicas)
        sim.run(operationsPerReplica: ops)
        return sim
    }

    @Test func reopeningRestoresTheSameDigestAndDocument() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let sim = simulation(seed: 7)
        var reference = BoardState(id: sim.board)
        for op in sim.allOperations { reference.apply(op) }

        let (digest, document, replica): (String, BoardDocument?, ReplicaID)
        do {
            let store = try ReplicaStore(path: path)
            try store.apply(sim.allOperations)
            digest = try store.digest(sim.board)
            document = try store.document(sim.board)
            replica = store.replicaID
            #expect(digest == reference.digest)
        }
        let reopened = try ReplicaStore(path: path)
        defer { try? reopened.close() }
        #expect(reopened.replicaID == replica)
        #expect(try reopened.digest(sim.board) == digest)
        #expect(try reopened.document(sim.board) == document)
        #expect(try reopened.stateFromDisk(sim.board) == reference)
        #expect(try reopened.stateFromLog(sim.board) == reference)
        #expect(try reopened.integrityCheck() == "ok")
    }

    @Test func reapplyingKnownOperationsChangesNothing() throws {
        let store = try ReplicaStore.inMemory()
        let sim = simulation(seed: 8)
        let first = try store.apply(sim.allOperations)
        #expect(first.count == sim.allOperations.count)
        let digest = try store.digest(sim.board)
        let count = try store.operationCount()
        let again = try store.apply(sim.allOperations.shuffled())
        #expect(again.isEmpty)
        #expect(try store.digest(sim.board) == digest)
        #expect(try store.operationCount() == count)
    }

    @Test(arguments: Array(UInt64(1)...12))
    func storesConvergeUnderShuffledDuplicatedDelivery(seed: UInt64) throws {
        let sim = simulation(seed: seed, replicas: 3 + Int(seed % 3))
        var rng = SplitMix64(seed: seed)
        var digests: Set<String> = []
        for _ in 0..<2 {
            let store = try ReplicaStore.inMemory()
            var ops = sim.allOperations + sim.allOperations.filter { _ in rng.next() % 4 == 0 }
            ops.shuffle(using: &rng)
            // Deliver in random batch sizes, as a relay link would.
            while !ops.isEmpty {
                let n = min(ops.count, 1 + Int(rng.next() % 50))
                try store.apply(Array(ops.prefix(n)))
                ops.removeFirst(n)
            }
            digests.insert(try store.digest(sim.board))
            #expect(try store.stateFromDisk(sim.board) == store.stateFromLog(sim.board), "seed \(seed)")
        }
        var reference = BoardState(id: sim.board)
        for op in sim.allOperations { reference.apply(op) }
        #expect(digests == [reference.digest], "seed \(seed)")
    }

    @Test func authoredOperationsGoToTheOutboxUntilAcknowledged() throws {
        let store = try ReplicaStore.inMemory()
        let board = EntityID.make()
        let column = EntityID.make()
        let created = try store.author(board: board) { _ in .createBoard(title: "Plan") }
        #expect(created.local && created.changed)
        try store.author(board: board) { state in
            .createColumn(column: column, title: "Todo", position: state.columnPosition(after: nil)!)
        }
        let task = EntityID.make()
        try store.author(board: board) { state in
            .createTask(task: task, column: column, position: state.taskPosition(in: column, after: nil)!, title: "Write", description: "")
        }
        let outbox = try store.outbox()
        #expect(outbox.map(\.id.counter) == [1, 2, 3])
        #expect(outbox.allSatisfy { $0.id.replica == store.replicaID })
        // What a push sends is the logged JSON, byte for byte the operations' encoding.
        let logged = try store.outboxJSON(after: 1, limit: 10)
        #expect(logged.map(\.json) == outbox.dropFirst().map { $0.jsonBytes() })
        #expect(logged.map(\.seq) == Array(logged.map(\.seq).sorted()) && logged.count == 2)
        try store.acknowledge([outbox[0].id, outbox[1].id], cursors: [board: 2])
        #expect(try store.outbox().map(\.id) == [outbox[2].id])
        #expect(try store.cursors() == [board: 2])
        try store.acknowledge([], cursors: [board: 1])
        #expect(try store.cursors() == [board: 2], "cursors never move backwards")
        #expect(try store.boardOfTask(task) == board)
        let doc = try #require(try store.document(board))
        #expect(doc.columns.map(\.title) == ["Todo"])
        #expect(doc.columns[0].tasks.map(\.title) == ["Write"])
    }

    /// `acknowledgeLater` writes nothing by itself: the next transaction on the store takes the
    /// acknowledgments (a rolled-back one gives them back), and every read that reports the
    /// outbox or the cursors already counts them.
    @Test func recordedAcknowledgmentsRideOnTheNextTransaction() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let board = EntityID.make()
        struct Refused: Error {}
        do {
            let store = try ReplicaStore(path: path)
            try store.author(board: board) { _ in .createBoard(title: "Plan") }
            for n in 1...3 { try store.author(board: board) { _ in .renameBoard(title: "Plan \(n)") } }
            let logged = try store.outboxJSON(after: 0, limit: 10).map(\.seq)
            let ids = try store.outbox().map(\.id)
            #expect(logged.count == 4 && ids.count == 4)

            store.acknowledgeLater([ids[0], ids[1]], cursors: [board: 7])
            // Not written yet: the rows are still in the table, but the cursor and the next push
            // already leave them out.
            #expect(try rowsInOutbox(path) == 4)
            #expect(try store.outboxJSON(after: 0, limit: 10).map(\.seq) == Array(logged.suffix(2)))
            #expect(try store.cursors() == [board: 7])

            // A transaction that rolls back hands them back to the next one.
            #expect(throws: Refused.self) { try store.author(board: board) { _ in throw Refused() } }
            #expect(try rowsInOutbox(path) == 4)

            // The next local edit's transaction writes them.
            try store.author(board: board) { _ in .renameBoard(title: "Plan 4") }
            #expect(try rowsInOutbox(path) == 3)
            let after = try store.outboxJSON(after: 0, limit: 10).map(\.seq)
            #expect(after.count == 3 && Array(after.prefix(2)) == Array(logged.suffix(2)))

            // The outbox count never includes an acknowledged operation.
            store.acknowledgeLater([ids[2]], cursors: [board: 8])
            #expect(try store.outboxCount() == 2)
            #expect(try store.outboxJSON(after: 0, limit: 10).count == 2)
        }
        let reopened = try ReplicaStore(path: path)
        defer { try? reopened.close() }
        #expect(try reopened.cursors() == [board: 8])
        #expect(try reopened.outboxCount() == 2)
    }

    /// Which board holds a column or task is remembered once found, never while not found: an
    /// entity that does not exist yet is found as soon as it is created.
    @Test func boardLookupsFindEntitiesCreatedAfterAMiss() throws {
        let store = try ReplicaStore.inMemory()
        let board = EntityID.make(), column = EntityID.make(), task = EntityID.make()
        try store.author(board: board) { _ in .createBoard(title: "Plan") }
        #expect(try store.boardOfColumn(column) == nil)
        #expect(try store.boardOfTask(task) == nil)
        try store.author(board: board) { _ in .createColumn(column: column, title: "Todo", position: PositionKey.between(nil, nil)) }
        try store.author(board: board) { _ in
            .createTask(task: task, column: column, position: PositionKey.between(nil, nil), title: "One", description: "")
        }
        for _ in 0..<2 {  // read, then remembered
            #expect(try store.boardOfColumn(column) == board)
            #expect(try store.boardOfTask(task) == board)
        }
        #expect(try store.boardOfTask(column) == nil, "a column is not a task")
    }

    /// `close` leaves only the database file (the log folded into it, as the agent and relay
    /// do when they stop); edits after it fail with an error instead of trapping or waiting.
    @Test func closingFoldsTheLogIntoTheFileAndLaterEditsFail() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path)
        let board = EntityID.make()
        try await store.author(board: board) { _ in .createBoard(title: "Kept") }
        try await store.author(board: board) { _ in .renameBoard(title: "Kept too") }
        #expect(FileManager.default.fileExists(atPath: path + "-wal"))

        try store.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["replica.sqlite"])
        #expect(throws: (any Error).self) { try store.author(board: board) { _ in .renameBoard(title: "Lost") } }
        await #expect(throws: (any Error).self) { try await store.author(board: board) { _ in .renameBoard(title: "Lost") } }

        let reopened = try ReplicaStore(path: path)
        defer { try? reopened.close() }
        #expect(try reopened.document(board)?.title == "Kept too")
    }

    /// Commits never checkpoint (that stalled every write queued behind them); a background
    /// connection copies the WAL back into the database file instead.
    @Test func theWALIsCheckpointedInTheBackground() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path)
        defer { try? store.close() }
        let size = { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        let before = size()
        try await store.apply(simulation(seed: 3, ops: 400).allOperations)
        let deadline = ContinuousClock.now + .seconds(10)
        while size() <= before + 100_000, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(size() > before + 100_000, "the database file stayed at \(size()) bytes: nothing was checkpointed")
        #expect(try store.integrityCheck() == "ok")
    }

    @Test func operationCountersSurviveReopening() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let board = EntityID.make()
        do {
            let store = try ReplicaStore(path: path)
            try store.author(board: board) { _ in .createBoard(title: "A") }
            try store.author(board: board) { _ in .renameBoard(title: "B") }
        }
        let store = try ReplicaStore(path: path)
        defer { try? store.close() }
        let third = try store.author(board: board) { _ in .renameBoard(title: "C") }
        // The counter resumes from its saved ceiling: above the log, with a gap.
        #expect(third.operation.id.counter > 2)
        let ops = try store.operations(board)
        #expect(ops.map(\.stamp) == ops.map(\.stamp).sorted(), "stamps keep increasing across restarts")
    }

    @Test func aRefusedAuthorWritesNothing() throws {
        let store = try ReplicaStore.inMemory()
        let board = EntityID.make()
        struct Refused: Error {}
        #expect(throws: Refused.self) { try store.author(board: board) { _ in throw Refused() } }
        #expect(try store.operationCount() == 0)
        #expect(try store.outboxCount() == 0)
        let next = try store.author(board: board) { _ in .createBoard(title: "A") }
        #expect(next.operation.id.counter == 1)
    }

    /// The async `author` shares transactions between concurrent callers (group commit): each
    /// caller still gets its own operation or its own refusal, and the log, outbox, counters and
    /// tables agree with one another afterwards, also after reopening.
    @Test func concurrentAuthorsEachGetTheirOwnOutcome() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path)
        defer { try? store.close() }
        let board = EntityID.make()
        try await store.author(board: board) { _ in .createBoard(title: "Group") }
        let column = EntityID.make()
        try await store.author(board: board) { _ in .createColumn(column: column, title: "C", position: PositionKey("V")!) }
        struct Refused: Error, Equatable { let index: Int }

        let outcomes = await withTaskGroup(of: (Int, Result<AppliedChange, any Error>).self) { group in
            for i in 0..<200 {
                group.addTask {
                    do {
                        let change = try await store.author(board: board) { state in
                            if i % 10 == 3 { throw Refused(index: i) }
                            return .createTask(task: EntityID.make(), column: column,
                                               position: state.taskPosition(in: column, after: nil)!, title: "T\(i)", description: "")
                        }
                        return (i, .success(change))
                    } catch {
                        return (i, .failure(error))
                    }
                }
            }
            return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        var committed: [AppliedChange] = []
        for (i, outcome) in outcomes {
            switch outcome {
            case .success(let change):
                #expect(i % 10 != 3, "task \(i) should have been refused")
                committed.append(change)
            case .failure(let error):
                #expect((error as? Refused) == Refused(index: i), "task \(i) got someone else's outcome: \(error)")
            }
        }
        #expect(committed.count == 180)
        #expect(Set(committed.map(\.operation.id.counter)) == Set((3...182).map { UInt64($0) }), "counters are dense")
        #expect(Set(committed.map(\.seq)).count == 180)
        #expect(try store.outboxCount() == 182)
        let titles = Set(try #require(try store.document(board)).columns[0].tasks.map(\.title))
        #expect(titles == Set((0..<200).filter { $0 % 10 != 3 }.map { "T\($0)" }))
        #expect(try store.stateFromDisk(board) == (try store.stateFromLog(board)))
        let digest = try store.digest(board)
        let reopened = try ReplicaStore(path: path)
        #expect(try reopened.digest(board) == digest)
        #expect(try await reopened.author(board: board) { _ in .renameBoard(title: "next") }.operation.id.counter > 182)
    }

    @Test func concurrentEditsAreListedAsConflictsAndCanBeRestored() throws {
        let a = try ReplicaStore.inMemory(), b = try ReplicaStore.inMemory()
        let board = EntityID.make()
        let created = try a.author(board: board) { _ in .createBoard(title: "Start") }
        try b.apply([created.operation])
        let fromA = try a.author(board: board) { _ in .renameBoard(title: "From A") }
        let fromB = try b.author(board: board) { _ in .renameBoard(title: "From B") }
        try a.apply([fromB.operation])
        try b.apply([fromA.operation])
        #expect(try a.digest(board) == b.digest(board))
        let conflicts = try a.conflicts(board)
        #expect(conflicts.count == 1)
        let loser = try #require(conflicts.first)
        #expect(Set([loser.loser, loser.winner]) == Set([fromA.operation.id, fromB.operation.id]))
        guard case .text(let lostTitle) = loser.loserValue else { Issue.record("expected text"); return }
        try a.author(board: board, restores: loser.loser) { _ in .renameBoard(title: lostTitle) }
        #expect(try a.document(board)?.title == lostTitle)
        #expect(try a.conflicts(board).isEmpty)
    }
}
