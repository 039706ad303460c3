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
