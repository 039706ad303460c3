import Foundation
import GRDB
import KanbanStore
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
}
