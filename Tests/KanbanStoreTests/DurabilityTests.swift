import Foundation
import GRDB
import KanbanModel
@testable import KanbanStore
import Testing

struct DurabilityTests {
    /// The writer connection must run with the synchronous level the durability asks for
    /// (`.full`: sync the WAL at every commit), whatever GRDB sets when it opens the pool.
    @Test(arguments: [(ReplicaStore.Configuration.Durability.full, 2), (.normal, 1)])
    func writerSyncsAsConfigured(durability: ReplicaStore.Configuration.Durability, level: Int) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        for _ in 0..<2 {  // a new file, then reopening it
            let store = try ReplicaStore(path: path, configuration: .init(durability: durability))
            let synchronous = try store.writer.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
            #expect(synchronous == level)
        }
    }
}

/// Records the writer's synchronous level as each transaction commits.
private final class CommitSyncLevels: TransactionObserver, @unchecked Sendable { // Used on the writer only.
    var levels: [Int] = []
    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool { false }
    func databaseDidChange(with event: DatabaseEvent) {}
    func databaseDidCommit(_ db: Database) {
        levels.append((try? Int.fetchOne(db, sql: "PRAGMA synchronous")) ?? -1)
    }
    func databaseDidRollback(_ db: Database) {}
}

struct AcknowledgmentSyncTests {
    /// An acknowledgment's commit is not synced (the operations are durable here and at the relay;
    /// a lost acknowledgment means a re-push the relay acknowledges again), and the writer is back
    /// at FULL for the next local edit, also when the acknowledgment fails.
    @Test func acknowledgmentsCommitUnsyncedAndLocalEditsStaySynced() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path, configuration: .init(durability: .full))
        defer { try? store.close() }
        let observer = CommitSyncLevels()
        try await store.writer.writeWithoutTransaction { db in db.add(transactionObserver: observer, extent: .databaseLifetime) }
        let board = EntityID.make()
        let created = try await store.author(board: board) { _ in .createBoard(title: "Plan") }
        try await store.acknowledge([created.operation.id], cursors: [board: 1])
        let renamed = try await store.author(board: board) { _ in .renameBoard(title: "Roadmap") }
        try acknowledgeBlocking(store, [renamed.operation.id], cursors: [board: 2])
        try await store.author(board: board) { _ in .renameBoard(title: "Plan B") }
        let levels = try await store.writer.read { _ in observer.levels }
        #expect(levels == [2, 1, 2, 1, 2], "FULL = 2 for local edits, NORMAL = 1 for acknowledgments")
        #expect(try store.outboxCount() == 1)
        #expect(try store.cursors() == [board: 2])
    }

    /// The blocking overload (a synchronous context picks it).
    private func acknowledgeBlocking(_ store: ReplicaStore, _ ids: [OperationID], cursors: [EntityID: Int64]) throws {
        try store.acknowledge(ids, cursors: cursors)
    }

    /// When the unsynced work fails, its error comes out and the writer is back at FULL.
    @Test func aFailedUnsyncedCommitRestoresTheLevel() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path, configuration: .init(durability: .full))
        defer { try? store.close() }
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            try store.writer.writeWithoutTransaction { db in
                try store.withoutSync(db) {
                    #expect(try Int.fetchOne(db, sql: "PRAGMA synchronous") == 1)
                    throw Refused()
                }
            }
        }
        let level = try store.writer.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(level == 2)
    }
}

struct FullDiskTests {
    /// A commit that fails at COMMIT (its log writes fail as on a full disk) changes nothing the
    /// store shows: not the board, not the outbox, not the next operation's ID. The mirror used
    /// to keep the failed edits, so the board listed tasks whose creation had failed. Both the
    /// group-committed `author` (the agent's API) and a remote `apply` are checked; then the
    /// disk "frees up" and edits go on, and a reopened store has exactly what committed.
    @Test func aCommitThatFailsOnAFullDiskChangesNothingTheStoreShows() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path)
        let board = EntityID.make(), column = EntityID.make()
        try await store.author(board: board) { _ in .createBoard(title: "Plan") }
        try await store.author(board: board) { _ in .createColumn(column: column, title: "Todo", position: PositionKey.between(nil, nil)) }
        try await store.author(board: board) { _ in .createTask(task: EntityID.make(), column: column, position: PositionKey.between(nil, nil), title: "stored", description: "") }
        let before = try #require(try store.document(board))
        let outboxBefore = try store.outbox().map(\.id)

        #expect(try await store.writer.writeWithoutTransaction { WALBuffer.failLogWrites($0, with: 13) })  // SQLITE_FULL
        for n in 0..<3 {
            await #expect(throws: DatabaseError.self) {
                try await store.author(board: board) { _ in
                    .createTask(task: EntityID.make(), column: column, position: PositionKey.between(nil, nil), title: "lost \(n)", description: "")
                }
            }
        }
        let elsewhere = try #require(ReplicaID("elsewhere"))
        let remote = BoardOperation(id: OperationID(replica: elsewhere, counter: 1),
                                    stamp: HLCStamp(wallMillis: 1, counter: 0, replica: elsewhere), board: board,
                                    action: .renameBoard(title: "from elsewhere"))
        await #expect(throws: DatabaseError.self) { try await store.apply([remote], cursors: [board: 7]) }
        #expect(try store.document(board) == before)
        #expect(try store.outbox().map(\.id) == outboxBefore)
        #expect(try store.cursors()[board] == nil)

        #expect(try await store.writer.writeWithoutTransaction { WALBuffer.failLogWrites($0, with: 0) })
        let kept = try await store.author(board: board) { _ in
            .createTask(task: EntityID.make(), column: column, position: PositionKey.between(nil, nil), title: "after", description: "")
        }
        // The counter went back with the failed transactions: the next ID follows the stored ones.
        let lastStored = try #require(outboxBefore.last)
        #expect(kept.operation.id.counter == lastStored.counter + 1)
        let titles = try #require(try store.document(board)).columns.flatMap(\.tasks).map(\.title)
        #expect(titles.sorted() == ["after", "stored"])
        try store.close()

        let reopened = try ReplicaStore(path: path)
        defer { try? reopened.close() }
        #expect(try reopened.document(board) == (try store.document(board)))
        #expect(try reopened.stateFromDisk(board).digest == (try reopened.stateFromLog(board).digest))
    }
}
