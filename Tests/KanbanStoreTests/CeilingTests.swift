import Foundation
import GRDB
@testable import KanbanStore
import KanbanModel
import KanbanSimulation
import Synchronization
import Testing

/// The clock and the operation counter are saved as ceilings, rewritten only when passed: a
/// reopened store must still stamp and number above everything it logged.
struct CeilingTests {
    /// A wall clock the test moves by hand.
    final class ManualClock: Sendable {
        let now = Mutex<Int64>(1_800_000_000_000)
        var clock: WallClock { WallClock { [self] in now.withLock { $0 } } }
        func advance(_ millis: Int64) { now.withLock { $0 += millis } }
    }

    /// Checks that the next local operation is above every logged stamp and local counter.
    func expectNextAboveLog(_ store: ReplicaStore, board: EntityID, round: Int) throws {
        let logged = try store.operations(board)
        let next = try store.author(board: board) { _ in .renameBoard(title: "after round \(round)") }.operation
        let maxStamp = try #require(logged.map(\.stamp).max())
        let maxCounter = logged.filter { $0.id.replica == store.replicaID }.map(\.id.counter).max() ?? 0
        #expect(next.stamp > maxStamp, "round \(round): \(next.stamp) is not above the logged \(maxStamp)")
        #expect(next.id.counter > maxCounter, "round \(round): counter \(next.id.counter) reuses or undercuts \(maxCounter)")
    }

    /// Several sessions, each dropped without any closing write (as a crash would leave it), with
    /// more local operations than the counter margin, wall time moving in small and large steps,
    /// and remote stamps from ahead of the local clock.
    @Test func reopeningResumesAboveEveryLoggedStampAndCounter() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let time = ManualClock()
        let board = EntityID.make()
        var remote = Author(replica: ReplicaID("remote")!)
        let configuration = ReplicaStore.Configuration(durability: .normal, clock: time.clock)
        let steps: [Int64] = [0, 0, 1, 7, 300, 1_500]
        for round in 0..<4 {
            let store = try ReplicaStore(path: path, configuration: configuration)
            if round > 0 { try expectNextAboveLog(store, board: board, round: round) }
            if round == 0 { try store.author(board: board) { _ in .createBoard(title: "Ceilings") } }
            for i in 0..<(Int(ReplicaStore.Ceilings.counterMargin) * 3 / 2) {
                time.advance(steps[i % steps.count])
                try store.author(board: board) { _ in .renameBoard(title: "local \(round).\(i)") }
                if i % 250 == 0 {
                    // A replica whose clock runs ahead pulls this one's clock past its ceiling.
                    let ahead = time.now.withLock { $0 } + 4 * ReplicaStore.Ceilings.clockMargin
                    try store.apply([remote.make(.renameBoard(title: "remote \(round).\(i)"), board: board, nowMillis: ahead)])
                }
            }
        }
        let store = try ReplicaStore(path: path, configuration: configuration)
        defer { try? store.close() }
        try expectNextAboveLog(store, board: board, round: 4)
        #expect(try store.stateFromDisk(board) == store.stateFromLog(board))
    }

    /// The point of the ceilings: a run of commits writes `meta` once, not once per commit.
    @Test func mostCommitsLeaveMetaAlone() throws {
        let time = ManualClock()
        let store = try ReplicaStore.inMemory(configuration: .init(clock: time.clock))
        try store.writer.writeWithoutTransaction { db in
            try db.execute(sql: """
                CREATE TEMP TABLE meta_writes (n INTEGER NOT NULL);
                INSERT INTO meta_writes VALUES (0);
                CREATE TEMP TRIGGER meta_inserted AFTER INSERT ON main.meta BEGIN UPDATE meta_writes SET n = n + 1; END;
                CREATE TEMP TRIGGER meta_updated AFTER UPDATE ON main.meta BEGIN UPDATE meta_writes SET n = n + 1; END;
                """)
        }
        let board = EntityID.make()
        for i in 0..<200 {
            time.advance(1)
            try store.author(board: board) { _ in i == 0 ? .createBoard(title: "Quiet") : .renameBoard(title: "\(i)") }
        }
        // The first commit saves both ceilings; 200 ms and 200 operations stay under them.
        let writes = try store.writer.read { db in try Int.fetchOne(db, sql: "SELECT n FROM temp.meta_writes") }
        #expect(writes == 2)
    }

    /// A database written by the first schema (`op.seq` AUTOINCREMENT, outbox with `op_id`, exact
    /// clock and counter in `meta`) opens with the same boards, log, outbox and digest, and
    /// continues above its stamps, counters and sequences.
    @Test func aDatabaseOfTheFirstSchemaMigratesAndKeepsItsContents() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path

        // The contents: remote operations, local ones (some acknowledged), a cursor.
        let source = try ReplicaStore.inMemory()
        var sim = ReplicaSimulation(seed: 11, replicaCount: 3)
        sim.run(operationsPerReplica: 60)
        let board = sim.board
        try source.apply(sim.allOperations, cursors: [board: 42])
        for i in 0..<5 { try source.author(board: board) { _ in .renameBoard(title: "mine \(i)") } }
        try source.acknowledge(Array(try source.outbox().prefix(2)).map(\.id))
        let author = source.cache.withLock { $0.author }

        // The same contents written into the first schema, with `meta` as the first code kept it.
        let old = try DatabaseQueue(path: path)
        try ReplicaStore.migrator.migrate(old, upTo: "v2-snapshots")
        try old.write { db in
            try db.execute(sql: "INSERT INTO meta (key, value) VALUES ('replica_id', ?), ('counter', ?), ('hlc', ?)",
                           arguments: [source.replicaID.rawValue, String(author.counter), author.clock.last.description])
            let rows = try source.writer.read { src in
                (try Row.fetchAll(src, sql: "SELECT seq, id, board_id, body, local FROM op ORDER BY seq"),
                 try Row.fetchAll(src, sql: "SELECT outbox.seq, op.id FROM outbox JOIN op USING (seq)"),
                 try Row.fetchAll(src, sql: "SELECT * FROM boards"),
                 try Row.fetchAll(src, sql: "SELECT * FROM board_columns"),
                 try Row.fetchAll(src, sql: "SELECT * FROM tasks"),
                 try Row.fetchAll(src, sql: "SELECT board_id, seq FROM cursor"))
            }
            for row in rows.0 {
                try db.execute(sql: "INSERT INTO op (seq, id, board_id, body, local) VALUES (?, ?, ?, ?, ?)",
                               arguments: StatementArguments(row.databaseValues))
            }
            for row in rows.1 {
                try db.execute(sql: "INSERT INTO outbox (seq, op_id) VALUES (?, ?)",
                               arguments: StatementArguments(row.databaseValues))
            }
            for (table, tableRows) in [("boards", rows.2), ("board_columns", rows.3), ("tasks", rows.4), ("cursor", rows.5)] {
                for row in tableRows {
                    let columns = Array(row.columnNames)
                    let values = columns.map { _ in "?" }.joined(separator: ", ")
                    try db.execute(sql: "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES (\(values))",
                                   arguments: StatementArguments(row.databaseValues))
                }
            }
        }
        let oldSchema = try old.read { db in try String.fetchOne(db, sql: "SELECT sql FROM sqlite_schema WHERE name = 'op'") }
        #expect(oldSchema?.contains("AUTOINCREMENT") == true)
        try old.close()

        let store = try ReplicaStore(path: path)
        #expect(store.replicaID == source.replicaID)
        #expect(try store.digest(board) == source.digest(board))
        #expect(try store.stateFromDisk(board) == store.stateFromLog(board))
        #expect(try store.operationIDs(board) == source.operationIDs(board))
        #expect(try store.outbox().map(\.id) == source.outbox().map(\.id))
        #expect(try store.cursors() == [board: 42])
        #expect(try store.cursorMarks().isEmpty, "the first schema knew no marks")
        #expect(store.version == source.version)
        #expect(try store.integrityCheck() == "ok")
        try store.writer.read { db in
            #expect(try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").isEmpty)
            let op = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_schema WHERE name = 'op'") ?? ""
            #expect(!op.contains("AUTOINCREMENT"))
            #expect(try db.indexes(on: "op").map(\.name).contains("op_by_board"))
            #expect(try db.columns(in: "outbox").map(\.name) == ["seq"])
        }

        // It carries on: above every stamp, counter and sequence, and acknowledgements still work.
        try expectNextAboveLog(store, board: board, round: 0)
        #expect(store.version == source.version + 1)
        let outbox = try store.outbox()
        #expect(outbox.count == 4)
        try store.acknowledge([outbox[0].id])
        #expect(try store.outbox().map(\.id) == Array(outbox.dropFirst().map(\.id)))
    }
}
