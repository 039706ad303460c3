import Foundation
import GRDB
import KanbanModel
import KanbanStore
import KanbanTestSupport
import Testing

struct WALCheckpointerTests {
    /// Under a steady stream of commits, a background checkpoint never catches up with the
    /// writer, and SQLite only starts the log over once every frame is copied back: without
    /// the writer finishing the tail, the log grows by every frame ever committed.
    @Test func logStartsOverUnderSteadyCommits() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("wal.sqlite").path
        var configuration = Configuration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
        let pool = try DatabasePool(path: path, configuration: configuration)
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)") }
        let checkpointer = try WALCheckpointer(path: path, writer: pool, every: .milliseconds(50))

        var commits = 0
        var largest: Int64 = 0
        let start = Date()
        while Date().timeIntervalSince(start) < 1.5 {
            try pool.write { db in try db.execute(sql: "INSERT INTO t (body) VALUES (zeroblob(200))") }
            commits += 1
            var info = stat()
            if stat(path + "-wal", &info) == 0 { largest = max(largest, Int64(info.st_size)) }
        }
        withExtendedLifetime(checkpointer) {}
        // Every commit appends at least one frame (a 4 KiB page and its 24-byte header).
        let appended = Int64(commits) * 4_120
        #expect(commits > 100)
        #expect(largest > 0)
        #expect(largest < appended / 3,
                "the WAL reached \(largest) bytes after \(commits) commits (at least \(appended) bytes appended): it never started over")
    }

    /// Local edits share transactions (group commit) and keep the writer busy while they keep
    /// coming; the checkpointer's pass on the writer must still get its turn between them, or
    /// the log never starts over.
    @Test(.timeLimit(.minutes(1)))
    func logStartsOverUnderSteadyGroupCommits() async throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path)
        defer { try? store.close() }
        let board = EntityID.make()
        try await store.author(board: board) { _ in .createBoard(title: "Steady") }
        let first = try #require(WALCheckpointer.startOvers(ofDatabaseAt: path))

        // Two start-overs while the edits never pause (the checkpointer runs every 0.5 s).
        let (edits, startedOver) = try await whileSteadyWriters(4, timeout: .seconds(20)) { writer, count in
            let title = "W\(writer) \(count)"
            try await store.author(board: board) { _ in .renameBoard(title: title) }
        } until: {
            (WALCheckpointer.startOvers(ofDatabaseAt: path) ?? first) >= first &+ 2
        }
        #expect(startedOver, "the log did not start over twice in 20 s of steady edits")
        #expect(edits > 0, "the writers edited while the log started over")
    }
}
