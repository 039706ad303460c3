import Foundation
import GRDB
import KanbanModel
import KanbanStore
import Testing

/// The WAL-buffering VFS (`CKanbanWALBuffer`) is what every file-backed store writes through.
/// The convergence, crash and durability suites run on it too; these check its own promises.
@Suite(.serialized) struct WALBufferTests {
    /// A commit's frames reach the file together: far fewer writes than SQLite asked for.
    @Test func aCommitsFramesAreWrittenTogether() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ReplicaStore(path: dir.appendingPathComponent("replica.sqlite").path)
        let board = EntityID.make()
        try store.author(board: board) { _ in .createBoard(title: "Plan") }
        let before = WALBuffer.writes
        for n in 0..<50 { try store.author(board: board) { _ in .renameBoard(title: "Plan \(n)") } }
        let after = WALBuffer.writes
        let asked = after.sqlite - before.sqlite, made = after.file - before.file
        // Each commit asks for two writes per page (header, page); other stores in this process
        // may write meanwhile, which only adds to both counts.
        #expect(asked >= 50 * 4, "SQLite asked for \(asked) writes")
        #expect(made * 3 <= asked, "\(made) file writes for \(asked) asked")
    }

    /// Every commit is readable at once from another connection, synced (FULL) or not (NORMAL:
    /// no sync call tells the VFS the transaction is over; the commit frame does).
    @Test(arguments: [ReplicaStore.Configuration.Durability.full, .normal])
    func otherConnectionsSeeEveryCommit(durability: ReplicaStore.Configuration.Durability) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replica.sqlite").path
        let store = try ReplicaStore(path: path, configuration: .init(durability: durability))
        let other = try otherConnection(path)
        let board = EntityID.make()
        try store.author(board: board) { _ in .createBoard(title: "Plan") }
        for n in 1...200 {
            try store.author(board: board) { _ in .renameBoard(title: "Plan \(n)") }
            let title = try other.read { db in try String.fetchOne(db, sql: "SELECT title FROM boards WHERE id = ?", arguments: [board.rawValue]) }
            #expect(title == "Plan \(n)")
            let integrity = n % 50 == 0 ? try other.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") } : "ok"
            #expect(integrity == "ok")
        }
    }
}
