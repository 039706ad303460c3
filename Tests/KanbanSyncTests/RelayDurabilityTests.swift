import Foundation
import GRDB
import KanbanModel
import KanbanProtocol
@testable import KanbanRelay
import KanbanStore
import KanbanTestSupport
import Synchronization
import Testing

struct RelayDurabilityTests {
    /// The relay acknowledges an operation only after its commit, so that commit must be synced
    /// (`synchronous = FULL`), whatever GRDB sets when it opens the pool in WAL mode.
    @Test func theRelayLogSyncsEveryCommit() throws {
        let dir = try temporaryRelayDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("relay.sqlite").path
        for _ in 0..<2 {  // a new file, then reopening it
            #expect(try SQLiteRelayStorage(path: path).writerSynchronousLevel() == 2)
        }
    }

    /// What `kanban relay` does when it stops: the log is folded into the file, and an append
    /// that comes too late fails with an error rather than trapping.
    @Test func closingLeavesOnlyTheLogFileAndRefusesLaterAppends() async throws {
        let dir = try temporaryRelayDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("relay.sqlite").path
        let storage = try SQLiteRelayStorage(path: path)
        var author = Author(replica: ReplicaID("r1")!)
        let board = EntityID.make()
        _ = try await storage.append([author.make(.createBoard(title: "B"), board: board, nowMillis: 1_000)], team: "t")
        try storage.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["relay.sqlite"])
        await #expect(throws: (any Error).self) {
            try await storage.append([author.make(.renameBoard(title: "C"), board: board, nowMillis: 2_000)], team: "t")
        }
        let reopened = try SQLiteRelayStorage(path: path)
        defer { try? reopened.close() }
        #expect(try reopened.head(of: board) == 1)
    }
}

/// Appends to the relay log share transactions (group commit) instead of one synced commit each.
@Suite(.timeLimit(.minutes(1)))
struct RelayGroupCommitTests {
    @Test func appendsThatArriveDuringACommitAreStoredTogetherInTheNext() async throws {
        let dir = try temporaryRelayDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let storage = try SQLiteRelayStorage(path: dir.appendingPathComponent("relay.sqlite").path)

        // Hold the writer (as a long commit would), on a thread of its own so that no thread of
        // Swift's pool blocks.
        let holding = Atomic<Bool>(false)
        let release = DispatchSemaphore(value: 0)
        let holder = Thread {
            storage.pool.writeWithoutTransaction { _ in
                holding.store(true, ordering: .releasing)
                release.wait()
            }
        }
        holder.start()
        try await eventually("the writer is held") { holding.load(ordering: .acquiring) }

        // 50 boards, one push each, as the hub's per-board commits would send them.
        var author = Author(replica: ReplicaID("r1")!)
        let pushes = (0..<50).map { i in [author.make(.createBoard(title: "B\(i)"), board: EntityID.make(), nowMillis: 1_000 + Int64(i))] }
        let results = try await withThrowingTaskGroup(of: [AppendResult].self) { group in
            for ops in pushes { group.addTask { try await storage.append(ops, team: "t") } }
            try await eventually("all 50 appends wait for the writer") { storage.appendQueueCounts.waiting == 50 }
            release.signal()
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(results.count == 50)
        #expect(results.allSatisfy { if case .stored(_, _, 1, true) = $0 { true } else { false } },
                "each board's first operation gets sequence 1")
        #expect(storage.appendQueueCounts.transactions == 1, "the 50 waiting appends are one transaction")
        #expect(try storage.operationCount() == 50)
    }

    /// Group commit keeps the writer busy while appends keep coming; the checkpointer's pass on
    /// the writer must still get its turn, or the log never starts over and grows by every
    /// frame committed (the store's `WALCheckpointerTests`, for the relay's log).
    @Test func theLogStartsOverUnderSteadyAppends() async throws {
        let dir = try temporaryRelayDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("relay.sqlite").path
        let storage = try SQLiteRelayStorage(path: path)
        let board = EntityID.make()
        var author = Author(replica: ReplicaID("steady")!)
        _ = try await storage.append([author.make(.createBoard(title: "B"), board: board, nowMillis: 1_000)], team: "t")
        let first = try #require(WALCheckpointer.startOvers(ofDatabaseAt: path))

        // Two start-overs while the appends never pause (the checkpointer runs every 0.5 s).
        let (appends, startedOver) = try await whileSteadyWriters(4, timeout: .seconds(20)) { writer, count in
            var author = Author(replica: ReplicaID("writer\(writer)")!, counter: UInt64(count))
            let op = author.make(.renameBoard(title: "B\(count)"), board: board, nowMillis: 2_000 + Int64(count))
            _ = try await storage.append([op], team: "t")
        } until: {
            (WALCheckpointer.startOvers(ofDatabaseAt: path) ?? first) >= first &+ 2
        }
        #expect(startedOver, "the log did not start over twice in 20 s of steady appends")
        #expect(appends > 0, "the writers appended while the log started over")
    }

    /// Folding a long board log into a snapshot takes seconds; appends to other boards (and
    /// the acks waiting for them) must not wait for it. The fold is held at its start until an
    /// append has been stored: with the fold on the writer, the append could not be stored and
    /// the hold gives up after 10 s.
    @Test func appendsAreStoredWhileABoardIsFolded() async throws {
        let dir = try temporaryRelayDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let storage = try SQLiteRelayStorage(path: dir.appendingPathComponent("relay.sqlite").path)
        var author = Author(replica: ReplicaID("r1")!)
        let board = EntityID.make()
        var ops = [author.make(.createBoard(title: "Long"), board: board, nowMillis: 1_000)]
        for i in 1..<2_000 { ops.append(author.make(.renameBoard(title: "T\(i)"), board: board, nowMillis: 1_000 + Int64(i))) }
        _ = try await storage.append(ops, team: "t")

        let folding = Atomic<Bool>(false)
        let storedDuringFold = Atomic<Bool>(false)
        let appended = DispatchSemaphore(value: 0)
        storage.compactionWillFold.withLock {
            $0 = {
                folding.store(true, ordering: .releasing)
                storedDuringFold.store(appended.wait(timeout: .now() + 10) == .success, ordering: .releasing)
            }
        }
        let other = [author.make(.createBoard(title: "Other"), board: EntityID.make(), nowMillis: 5_000)]
        let results = try await withThrowingTaskGroup(of: [AppendResult].self) { group in
            group.addTask { try await storage.compact(board: board, through: 1_500); return [] }
            try await eventually("the compaction is folding") { folding.load(ordering: .acquiring) }
            let results = try await storage.append(other, team: "t")
            appended.signal()
            try await group.waitForAll()
            return results
        }
        let stored = storedDuringFold.load(ordering: .acquiring)
        #expect(stored, "an append to another board was stored while the board was folded")
        #expect(results.count == 1 && { if case .stored(_, _, 1, true) = results[0] { true } else { false } }())

        // The compacted board: the snapshot at 1,500 (op i, a rename to "T<i>", has sequence i + 1),
        // the operations after it, and no bodies left through 1,500.
        let snapshot = try #require(try await storage.snapshot(board: board))
        #expect(snapshot.seq == 1_500)
        #expect(try await storage.snapshotSeq(board: board) == 1_500)
        #expect(try await storage.snapshotSeq(board: other[0].board) == nil)
        #expect(snapshot.state.title?.v == "T1499")
        #expect(try await storage.operations(board: board, after: 1_500, limit: 1_000).map(\.seq) == Array(1_501...2_000))
        let bodies = try await storage.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM relay_op WHERE board_id = ? AND body IS NOT NULL", arguments: [board.rawValue])
        }
        #expect(bodies == 500)
        // The log's operation count (from the boards' heads) still counts every row.
        let rows = try await storage.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM relay_op") }
        #expect(rows == 2_001)
        #expect(try storage.operationCount() == rows)
    }
}
