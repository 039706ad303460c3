import Foundation
import GRDB
import KanbanModel
import KanbanStore
import Synchronization
import Testing

/// `settledDigest`: the digest an agent compares with the relay's after catch-up must cover
/// exactly the operations up to its cursor, never a local edit the relay does not have yet.
struct SettledDigestTests {
    /// A board with one column, authored on another replica, as the relay would deliver it.
    func remoteBoard() throws -> (board: EntityID, column: EntityID, ops: [BoardOperation]) {
        let remote = try ReplicaStore.inMemory()
        let board = EntityID.make()
        let column = EntityID.make()
        try remote.author(board: board) { _ in .createBoard(title: "Shared") }
        try remote.author(board: board) { _ in .createColumn(column: column, title: "Todo", position: PositionKey("V")!) }
        return (board, column, try remote.outbox())
    }

    @Test func theDigestWaitsForLocalEditsToBeAcknowledged() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path)
        defer { try? store.close() }
        let (board, column, ops) = try remoteBoard()
        try await store.apply(ops, cursors: [board: 2])
        let caughtUp = try #require(try await store.settledDigest(board))
        let digestAt2 = try store.digest(board)
        #expect(caughtUp.seq == 2 && caughtUp.digest == digestAt2)

        let change = try await store.author(board: board) { state in
            .createTask(task: EntityID.make(), column: column, position: state.taskPosition(in: column, after: nil)!,
                        title: "Mine", description: "")
        }
        #expect(try await store.settledDigest(board) == nil, "a local edit is not acknowledged yet")
        try await store.acknowledge([change.operation.id], cursors: [board: 3])
        let acknowledged = try #require(try await store.settledDigest(board))
        let digestAt3 = try store.digest(board)
        #expect(acknowledged.seq == 3 && acknowledged.digest == digestAt3)
        #expect(acknowledged.digest != caughtUp.digest)
    }

    /// Local edits committing while digests are taken: every digest taken must be the state at
    /// the cursor, before any of them. Checking the outbox and then hashing the in-memory board
    /// (what the agent did before) let an edit that committed in between into the digest (in
    /// about one round in five here, so several rounds).
    @Test func editsCommittingMeanwhileAreNeverHashed() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path,
                                     configuration: .init(durability: .normal))
        defer { try? store.close() }
        var taken = 0
        for _ in 0..<12 {
            let (board, column, ops) = try remoteBoard()
            try await store.apply(ops, cursors: [board: 2])
            let atCursor = try store.digest(board)
            let authored = Flag(), firstTaken = Flag()
            let digests = try await withThrowingTaskGroup(of: [String].self) { group in
                group.addTask {
                    defer { authored.set() }
                    let deadline = ContinuousClock.now + .seconds(5)
                    while !firstTaken.isSet, ContinuousClock.now < deadline { await Task.yield() }
                    for i in 0..<100 {
                        try await store.author(board: board) { state in
                            .createTask(task: EntityID.make(), column: column, position: state.taskPosition(in: column, after: nil)!,
                                        title: "T\(i)", description: "")
                        }
                    }
                    return []
                }
                group.addTask {
                    var seen: [String] = []
                    while !authored.isSet {
                        if let settled = try await store.settledDigest(board) {
                            seen.append(settled.digest)
                            firstTaken.set()
                        }
                    }
                    return seen
                }
                return try await group.reduce(into: [String]()) { $0 += $1 }
            }
            taken += digests.count
            #expect(!digests.isEmpty)
            #expect(digests.allSatisfy { $0 == atCursor },
                    "\(digests.filter { $0 != atCursor }.count) of \(digests.count) digests covered a local edit the relay did not have")
        }
        #expect(taken >= 12)
    }
}

/// A flag one task sets and another polls.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

/// `rematerialize`: a board whose tables no longer match its operation log is rebuilt from the
/// log; an intact one is left alone.
struct RematerializeTests {
    @Test func aDamagedBoardIsRebuiltFromItsLog() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let board = EntityID.make(), column = EntityID.make(), task = EntityID.make()
        let intact: String
        do {
            let store = try ReplicaStore(path: path)
            try store.author(board: board) { _ in .createBoard(title: "Plan") }
            try store.author(board: board) { _ in .createColumn(column: column, title: "Todo", position: PositionKey("V")!) }
            try store.author(board: board) { _ in
                .createTask(task: task, column: column, position: PositionKey("V")!, title: "Write", description: "")
            }
            #expect(try store.rematerialize(board) == false, "an intact board is not rewritten")
            intact = try store.digest(board)
        }
        // Damage the materialized rows behind the store's back: a title changed, a row added.
        // The closed store's background checkpoint may still hold the file for a moment.
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let raw = try DatabaseQueue(path: path, configuration: configuration)
        try raw.write { db in
            try db.execute(sql: "UPDATE tasks SET title = 'tampered' WHERE id = ?", arguments: [task.rawValue])
            try db.execute(sql: """
                INSERT INTO tasks (board_id, id, created) VALUES (?, ?, 1)
                """, arguments: [board.rawValue, EntityID.make().rawValue])
        }
        try raw.close()

        let store = try ReplicaStore(path: path)
        defer { try? store.close() }
        #expect(try store.digest(board) != intact, "the damage is visible")
        #expect(try store.rematerialize(board) == true)
        #expect(try store.digest(board) == intact)
        #expect(try store.document(board)?.columns.first?.tasks.map(\.title) == ["Write"])
        #expect(try store.stateFromDisk(board).digest == intact, "the rows were rewritten, not only the mirror")
        #expect(try store.integrityCheck() == "ok")
    }
}

/// `discardQueued`: a board's unacknowledged local operations leave the board, which is rebuilt
/// from the rest of its log; acknowledged ones stay, sequences never go back, and an operation
/// thrown away here is taken again when a relay sends it (it had stored it after all).
struct DiscardQueuedTests {
    @Test func queuedOperationsLeaveAndTheRestStays() async throws {
        let store = try ReplicaStore.inMemory()
        let board = EntityID.make(), other = EntityID.make(), column = EntityID.make(), task = EntityID.make()
        var acknowledged: [OperationID] = []
        for action: BoardOperation.Action in [
            .createBoard(title: "Plan"),
            .createColumn(column: column, title: "Todo", position: PositionKey("V")!),
            .createTask(task: task, column: column, position: PositionKey("V")!, title: "Write", description: ""),
        ] {
            acknowledged.append(try await store.author(board: board) { _ in action }.operation.id)
        }
        try await store.acknowledge(acknowledged, cursors: [board: 3])
        // A remote operation between local ones, then local edits nobody acknowledges.
        var remote = Author(replica: ReplicaID("r2")!)
        let fromTeam = remote.make(.createTask(task: EntityID.make(), column: column, position: PositionKey("k")!, title: "Team", description: ""),
                                   board: board, nowMillis: 1_000)
        let rename = try await store.author(board: board) { _ in .updateTask(task: task, title: "Mine", description: nil) }
        _ = try await store.apply([fromTeam], cursors: [board: 4])
        let delete = try await store.author(board: board) { _ in .deleteTask(task: task) }
        _ = try await store.author(board: other) { _ in .createBoard(title: "Other") }
        let top = store.version
        #expect(try store.queuedCount(board) == 2)
        #expect(try store.queuedOperations(board).map(\.id) == [rename.operation.id, delete.operation.id])

        let discarded = try await store.discardQueued(board)
        #expect(discarded == [rename.operation.id, delete.operation.id])
        let titles = try #require(try store.document(board)).columns.flatMap(\.tasks).map(\.title)
        #expect(Set(titles) == ["Write", "Team"], "the team's task stays, the local edits are gone: \(titles)")
        #expect(try store.stateFromDisk(board).digest == store.stateFromLog(board).digest, "rows and log agree")
        #expect(try store.queuedCount(board) == 0 && store.queuedCount(other) == 1, "the other board's queue is untouched")
        #expect(try store.outboxJSON(after: 0, limit: 100).count == 1, "nothing discarded is pushed")
        #expect(try !store.contains(rename.operation.id))
        #expect(try await store.discardQueued(board).isEmpty)

        // The relay had the rename after all: it comes back with the catch-up and applies.
        let back = try await store.apply([rename.operation], cursors: [board: 5])
        #expect(back.count == 1 && back[0].changed)
        #expect(try store.document(board)?.columns.flatMap(\.tasks).contains { $0.title == "Mine" } == true)
        let next = try await store.author(board: other) { _ in .renameBoard(title: "Other 2") }
        #expect(next.seq > top, "sequence \(next.seq) after the discard, \(top) before it")

        // A board that only the discarded operations made is gone.
        let newest = store.version
        #expect(try await store.discardQueued(other).count == 2)
        #expect(try store.document(other) == nil)
        #expect(try store.boards().map(\.id) == [board])
        // They were the log's newest rows, and still the next operation's sequence (a version
        // pages and streams compare) is above them.
        let after = try await store.author(board: EntityID.make()) { _ in .createBoard(title: "New") }
        #expect(after.seq > newest, "sequence \(after.seq) after discarding the newest rows, \(newest) before")
        #expect(try store.integrityCheck() == "ok")
    }
}

struct QueuedTargetsTests {
    /// `queuedTargets` reads the target from the logged JSON; it must name what the decoded
    /// operation's `target` names, for every kind of action.
    @Test func everyKindOfActionNamesItsTarget() async throws {
        let store = try ReplicaStore.inMemory()
        let board = EntityID.make(), column = EntityID.make(), other = EntityID.make(), task = EntityID.make()
        let actions: [BoardOperation.Action] = [
            .createBoard(title: "Plan"),
            .renameBoard(title: "Plan 2"),
            .createColumn(column: column, title: "Todo", position: PositionKey("V")!),
            .createColumn(column: other, title: "Done", position: PositionKey("k")!),
            .renameColumn(column: column, title: "Doing"),
            .moveColumn(column: column, position: PositionKey("z")!),
            .createTask(task: task, column: column, position: PositionKey("V")!, title: "Write", description: "d"),
            .updateTask(task: task, title: "Written", description: nil),
            .updateTask(task: task, title: nil, description: "more"),
            .moveTask(task: task, column: other, position: PositionKey("V")!),
            .deleteTask(task: task),
            .restoreTask(task: task),
            .deleteColumn(column: column),
            .restoreColumn(column: column),
        ]
        for action in actions { _ = try await store.author(board: board) { _ in action } }
        let operations = try store.queuedOperations(board)
        #expect(operations.count == actions.count)
        let targets = try store.queuedTargets(board)
        #expect(targets.map(\.op) == operations.map(\.id))
        #expect(targets.map(\.entity) == operations.map { $0.action.target(board: board).id })
        #expect(Set(targets.map(\.entity)) == [board, column, other, task])
        try await store.acknowledge(operations.prefix(3).map(\.id), cursors: [board: 3])
        #expect(try store.queuedTargets(board).map(\.op) == operations.dropFirst(3).map(\.id))
    }
}

struct CursorMarkTests {
    /// Each relay cursor keeps the ID of the operation at its sequence (the hello's marks): a
    /// cursor that moves takes the new mark or none, one that stays keeps its mark, and
    /// forgetting the cursor forgets the mark.
    @Test func marksFollowTheirCursors() async throws {
        let store = try ReplicaStore.inMemory()
        let board = EntityID.make(), other = EntityID.make()
        var remote = Author(replica: ReplicaID("r2")!)
        let create = remote.make(.createBoard(title: "Plan"), board: board, nowMillis: 1_000)
        let rename = remote.make(.renameBoard(title: "Plan 2"), board: board, nowMillis: 2_000)
        let elsewhere = remote.make(.createBoard(title: "Other"), board: other, nowMillis: 3_000)
        _ = try await store.apply([create, elsewhere], cursors: [board: 1, other: 1], marks: [board: create.id])
        #expect(try store.cursorMarks() == [board: create.id], "no mark given for the other board")
        _ = try await store.apply([create], cursors: [board: 1], marks: [board: rename.id])
        #expect(try store.cursorMarks()[board] == create.id, "the same sequence again keeps its mark")
        _ = try await store.apply([rename], cursors: [board: 2], marks: [board: rename.id])
        #expect(try store.cursorMarks()[board] == rename.id)
        _ = try await store.apply([], cursors: [board: 3])
        #expect(try store.cursorMarks()[board] == nil, "a cursor moved without a mark has none")
        #expect(try store.cursors()[board] == 3)

        let mine = try await store.author(board: board) { _ in .renameBoard(title: "Mine") }.operation
        store.acknowledgeLater([mine.id], cursors: [board: 4], marks: [board: mine.id])
        #expect(try store.cursorMarks()[board] == mine.id, "a recorded acknowledgment's mark")
        store.acknowledgeLater([], cursors: [board: 3], marks: [board: create.id])
        #expect(try store.cursorMarks()[board] == mine.id, "a lower acknowledgment moves nothing")
        #expect(try store.cursors()[board] == 4)
        _ = try await store.requeueForRelay(board)
        #expect(try store.cursorMarks()[board] == nil && store.cursors()[board] == nil)
    }
}
