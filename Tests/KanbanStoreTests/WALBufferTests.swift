import Foundation
import GRDB
import KanbanModel
import KanbanStore
import Testing

/// The WAL-buffering VFS (`CKanbanWALBuffer`) is what every file-backed store writes through.
/// The convergence, crash and durability suites run on it too; these check its own promises.
@Suite(.serialized) struct WALBufferTests {
    /// A commit's frames reach the file together: one write per commit, where SQLite asks for
    /// two per page. The counts are this connection's own, so other suites writing meanwhile do
    /// not move them.
    @Test(arguments: [true, false])
    func aCommitsFramesAreWrittenTogether(fullSync: Bool) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pool = try WALCheckpointer.openPool(path: dir.appendingPathComponent("log.sqlite").path, fullSync: fullSync)
        try pool.write { db in
            try db.execute(sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            try db.execute(sql: "CREATE INDEX notesByBody ON notes(body)")
        }
        let counted = pool.writeWithoutTransaction { WALBuffer.logWrites($0) }
        let before = try #require(counted, "the pool's log is not written through the VFS")
        for n in 0..<50 {
            // Each commit changes at least two pages: the table's and the index's.
            try pool.write { db in
                try db.execute(sql: "INSERT INTO notes (body) VALUES (?)", arguments: [String(repeating: "note \(n) ", count: 40)])
            }
        }
        let recounted = pool.writeWithoutTransaction { WALBuffer.logWrites($0) }
        let after = try #require(recounted)
        let asked = after.sqlite - before.sqlite, made = after.file - before.file
        // SQLite writes each frame's header and page separately: two calls per changed page.
        #expect(asked >= 50 * 2 * 2, "SQLite asked for \(asked) writes")
        #expect(made == 50, "\(made) file writes for \(asked) asked over 50 commits")
    }

    /// Every commit is readable at once from another connection, synced (FULL) or not (NORMAL:
    /// no sync call tells the VFS the transaction is over; the commit frame does).
    @Test(arguments: [ReplicaStore.Configuration.Durability.full, .normal])
    func otherConnectionsSeeEveryCommit(durability: ReplicaStore.Configuration.Durability) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path, configuration: .init(durability: durability))
        defer { try? store.close() }
        let other = try otherConnection(path)
        let board = EntityID.make()
        try store.author(board: board) { _ in .createBoard(title: "Plan") }
        for n in 1...200 {
            try store.author(board: board) { _ in .renameBoard(title: "Plan \(n)") }
            let title = try other.read { db in try String.fetchOne(db, sql: "SELECT title FROM boards WHERE id = ?", arguments: [board.rawValue]) }
            #expect(title == "Plan \(n)")
            if n == 1 {
                // Connections opened after a store go through the VFS too (the store made it the default).
                #expect(try other.read { WALBuffer.logWrites($0) } != nil)
            }
            let integrity = n % 50 == 0 ? try other.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") } : "ok"
            #expect(integrity == "ok")
        }
    }
}
