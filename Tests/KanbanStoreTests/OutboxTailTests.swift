import Foundation
import GRDB
import KanbanModel
import KanbanSimulation
import Synchronization
@testable import KanbanStore
import Testing

struct OutboxTailTests {
    struct Refused: Error {}

    /// One outbox row as the table holds it.
    struct Row: Equatable {
        let seq: Int64
        let id: OperationID
        let json: [UInt8]
    }

    /// The outbox table read on a connection of its own, in sequence order.
    func table(_ path: String) throws -> [Row] {
        try otherConnection(path).read { db in
            try GRDB.Row.fetchAll(db, sql: "SELECT outbox.seq, op.id, op.body FROM outbox JOIN op ON op.seq = outbox.seq ORDER BY outbox.seq")
                .map { Row(seq: $0[0], id: OperationID($0[1] as String)!, json: Array(($0[2] as String).utf8)) }
        }
    }

    /// A board queued again for a relay that lost operations (`requeueForRelay`): every one of
    /// its operations is in the outbox again, a push reads them all in log order (the tail no
    /// longer covers them: read from the table), and the board's cursor is gone.
    @Test func aBoardQueuedAgainIsPushedWhole() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path, configuration: .init(durability: .normal))
        let board = EntityID.make(), other = EntityID.make()
        try await store.author(board: board) { _ in .createBoard(title: "Plan") }
        try await store.author(board: other) { _ in .createBoard(title: "Other") }
        for i in 1...4 { try await store.author(board: board) { _ in .renameBoard(title: "Plan \(i)") } }
        let sent = try store.outbox()
        try await store.acknowledge(sent.map(\.id), cursors: [board: 9, other: 3])
        #expect(try store.outboxJSON(after: 0, limit: 100).isEmpty)
        try await store.author(board: board) { _ in .renameBoard(title: "Plan 5") }  // in the tail, unacknowledged

        let queued = try await store.requeueForRelay(board)
        #expect(queued == 5)  // the five acknowledged operations of the board; the sixth was still queued
        let pushed = try store.outboxJSON(after: 0, limit: 100)
        #expect(pushed.map(\.seq) == (try table(path)).map(\.seq))
        #expect(pushed.count == 6 && pushed.allSatisfy { String(decoding: $0.json, as: UTF8.self).contains(board.rawValue) })
        let cursors = try store.cursors()
        #expect(cursors[board] == nil && cursors[other] == 3)
    }

    /// What a push reads (`outboxJSON`) is what the table holds, less what was acknowledged,
    /// whether it comes from the tail in memory or from the table: through local edits alone and
    /// several in one transaction, refused edits that roll back, acknowledgments recorded and
    /// written, transactions that fail after logging, and reopening (after which the older rows
    /// are read from the table again).
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func pushesReadTheTableLessAcknowledged(seed: UInt64) async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        var rng = SplitMix64(seed: seed)
        var store = try ReplicaStore(path: path, configuration: .init(durability: .normal))
        let board = EntityID.make()
        try await store.author(board: board) { _ in .createBoard(title: "Plan") }
        // A board titled "boom" fails its transaction after the operation is logged: the
        // rollback of a transaction that did log local operations.
        try await otherConnection(path).write { db in
            for event in ["INSERT", "UPDATE"] {
                try db.execute(sql: """
                    CREATE TRIGGER boom_\(event) BEFORE \(event) ON boards WHEN NEW.title = 'boom'
                    BEGIN SELECT RAISE(ABORT, 'boom'); END
                    """)
            }
        }
        var acknowledged: Set<OperationID> = []
        var fromMemory = 0, fromTable = 0
        for step in 0..<250 {
            switch rng.next() % 12 {
            case 0..<5:
                try await store.author(board: board) { _ in .renameBoard(title: "Plan \(step)") }
            case 5:
                // Concurrent edits share one transaction (group commit).
                let current = store
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for n in 0..<Int(1 + rng.next() % 4) {
                        group.addTask { try await current.author(board: board) { _ in .renameBoard(title: "Plan \(step).\(n)") } }
                    }
                    try await group.waitForAll()
                }
            case 6:
                #expect(throws: Refused.self) { try store.author(board: board) { _ in throw Refused() } }
            case 7, 8:
                let waiting = try table(path).filter { !acknowledged.contains($0.id) }
                let taken = waiting.prefix(Int(rng.next() % UInt64(waiting.count + 1))).map(\.id)
                store.acknowledgeLater(taken, cursors: [board: Int64(step)])
                acknowledged.formUnion(taken)
            case 9:
                try await store.flushAcknowledgments()
            case 10:
                if rng.next() % 4 == 0 {
                    try await store.flushAcknowledgments()  // what a closing agent's session leaves is re-pushed, never lost
                    store = try ReplicaStore(path: path, configuration: .init(durability: .normal))
                }
            default:
                #expect(throws: DatabaseError.self) { try store.author(board: board) { _ in .renameBoard(title: "boom") } }
            }
            let expected = try table(path).filter { !acknowledged.contains($0.id) }
            var afters: [Int64] = [0, expected.last?.seq ?? 0]
            if !expected.isEmpty { afters.append(expected[Int(rng.next() % UInt64(expected.count))].seq) }
            for after in afters {
                let limit = Int(1 + rng.next() % 6)
                if store.outboxTail.withLock({ after >= $0.floor }) { fromMemory += 1 } else { fromTable += 1 }
                let read = try store.outboxJSON(after: after, limit: limit)
                let want = expected.filter { $0.seq > after }.prefix(limit)
                #expect(read.map(\.seq) == want.map(\.seq), "seed \(seed) step \(step) after \(after)")
                #expect(read.map(\.json) == want.map(\.json), "seed \(seed) step \(step) after \(after)")
            }
        }
        // Both ways of answering were checked.
        #expect(fromMemory > 100 && fromTable > 10, "memory \(fromMemory), table \(fromTable)")
    }

    /// A tail over its budget drops its oldest entries and answers only above them.
    @Test func anOverfullTailHandsItsOldestBackToTheTable() {
        var tail = OutboxTail(floor: 10)
        let make = { (seq: Int64) in
            OutboxTail.Entry(seq: seq, id: OperationID(replica: ReplicaID("r1")!, counter: UInt64(seq)), json: Array("op \(seq)".utf8))
        }
        tail.append((11...Int64(10 + OutboxTail.maxEntries)).map(make))
        #expect(tail.floor == 10 && tail.entries.count == OutboxTail.maxEntries)
        #expect(tail.entries(after: 9, limit: 5) == nil)
        #expect(tail.entries(after: 10, limit: 2)?.map(\.seq) == [11, 12])

        tail.append([make(Int64(11 + OutboxTail.maxEntries))])
        #expect(tail.entries.count == OutboxTail.maxEntries / 2)
        let lowest = tail.entries[0].seq
        #expect(tail.floor == lowest - 1)
        #expect(tail.entries(after: lowest - 2, limit: 5) == nil)
        #expect(tail.entries(after: lowest - 1, limit: 2)?.map(\.seq) == [lowest, lowest + 1])

        tail.remove([tail.entries[0].id, tail.entries[2].id])
        #expect(tail.entries(after: lowest - 1, limit: 2)?.map(\.seq) == [lowest + 1, lowest + 3])
        #expect(tail.entries(after: Int64(11 + OutboxTail.maxEntries), limit: 2)?.isEmpty == true)
    }
}
