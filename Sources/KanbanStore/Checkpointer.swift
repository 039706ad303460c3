public import Dispatch
import CKanbanWALBuffer
import Foundation
public import GRDB

/// Keeps a WAL-mode database's write-ahead log short without making commits wait for checkpoints.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and every
/// write queued behind that commit waits for it (it writes pages back and syncs the database
/// file): with it on, creates at 500/s had a p99 of 33 ms here.
///
/// So the owner turns it off (`PRAGMA wal_autocheckpoint = 0`) and this class checkpoints from a
/// connection of its own, PASSIVE, which never blocks the writer or readers. A passive checkpoint
/// alone is not enough under a steady stream of commits: it copies the frames that existed when
/// it started, the writer appends more meanwhile, and SQLite only rewinds the log to its start
/// when every frame has been copied back. The log then grows without end (650 MB after 20,000
/// single-op commits, every commit appending to the file rather than overwriting it, which
/// costs a second metadata sync on ext4). So when a background pass leaves a tail, the tail is
/// copied on the writer connection, between two transactions: it is short (what was committed
/// during the background pass), and afterwards the next write transaction starts the log again
/// from the beginning.
public final class WALCheckpointer: @unchecked Sendable { // Its stored properties are set once; `stop` and deinit only cancel and close.
    private let timer: any DispatchSourceTimer
    private let queue: DispatchQueue
    private let connection: DatabaseQueue

    /// - Parameters:
    ///   - path: the database file.
    ///   - writer: the connection (pool or queue) every write goes through.
    ///   - interval: time between passes.
    public init(path: String, writer: any DatabaseWriter,
                every interval: DispatchTimeInterval = .milliseconds(500)) throws {
        var configuration = GRDB.Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "kanban.checkpointer"
        let connection = try DatabaseQueue(path: path, configuration: configuration)
        let queue = DispatchQueue(label: "kanban.checkpointer")
        self.connection = connection
        self.queue = queue
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(50))
        timer.setEventHandler { [weak writer] in
            Self.pass(background: connection, writer: writer)
        }
        timer.resume()
    }

    deinit { timer.cancel() }

    /// Ends the passes for good: no new one starts, one under way finishes first, and the
    /// checkpointer's own connection is closed. Call it before closing the writer (a pass
    /// uses it); calling it again does nothing more.
    public func stop() {
        timer.cancel()
        queue.sync {}
        try? connection.close()
    }

    /// The most frames the writer is asked to copy itself; while background passes see more
    /// than this arrive during a pass, they go on first.
    static let writerTailLimit = 1_000

    static func pass(background: DatabaseQueue, writer: (any DatabaseWriter)?) {
        // `checkpoint` reports the frames in the log as of its start; what the writer appends
        // while it copies is left for the next pass.
        var logged = 0
        for _ in 0..<4 {
            // A busy database (a reader on an old snapshot, a checkpoint elsewhere) finishes later.
            guard let (log, _) = try? background.writeWithoutTransaction({ try $0.checkpoint(.passive) }),
                  log > 0
            else { return }
            let arrived = log - logged
            logged = log
            if arrived <= writerTailLimit { break }
        }
        guard let writer else { return }
        _ = try? writer.writeWithoutTransaction { try $0.checkpoint(.passive) }
    }
}

extension WALCheckpointer {
    /// How many times the write-ahead log of the database at `path` has started over (the
    /// checkpoint sequence in the WAL header, big-endian at bytes 12-15); nil without a log.
    public static func startOvers(ofDatabaseAt path: String) -> UInt32? {
        guard let handle = FileHandle(forReadingAtPath: path + "-wal") else { return nil }
        defer { try? handle.close() }
        guard let header = try? handle.read(upToCount: 16), header.count == 16 else { return nil }
        return header[12..<16].reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// Opens (creating if needed) the database at `path` in WAL mode the way the replica store
    /// and the relay keep theirs: every commit synced when `fullSync` (else only checkpoints),
    /// no checkpoint inside a commit (a `WALCheckpointer` does them: start one for the pool),
    /// and a log file that shrinks back to 64 MiB when it next starts over after a burst.
    /// `configuration` can add its own setup.
    public static func openPool(path: String, fullSync: Bool, configuration: GRDB.Configuration = .init()) throws -> DatabasePool {
        try WALBuffer.install()
        var configuration = configuration
        let synchronous = fullSync ? "FULL" : "NORMAL"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
            try db.execute(sql: "PRAGMA journal_size_limit = 67108864")
        }
        configuration.busyMode = .timeout(5)
        let pool = try DatabasePool(path: path, configuration: configuration)
        // DatabasePool sets `synchronous = NORMAL` on its writer when it turns WAL on, which it
        // does after `prepareDatabase`: set it again, or FULL would not sync any commit.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = \(synchronous)") }
        return pool
    }
}

/// The VFS of `CKanbanWALBuffer` (walbuffer.c): every database this process opens afterwards
/// writes a transaction's write-ahead log frames to the file in one `pwrite` rather than two
/// per page. A synced commit of one local edit wrote 7 pages in 14 calls.
public enum WALBuffer {
    private static let registration = kanban_wal_buffer_register()

    /// Registers the VFS as the process's default (once); throws if SQLite refused it.
    public static func install() throws {
        guard registration == 0 else {  // SQLITE_OK
            throw StoreError(.invalid, "SQLite refused the WAL-buffering VFS (SQLite error \(registration)); the system libsqlite3 must be 3.7.6 or newer")
        }
    }

    /// Writes this connection has made to its database's write-ahead log so far: the calls
    /// that reached the file, and those SQLite made. Nil when the log is not open yet (no
    /// transaction has read it) or is not written through this VFS.
    public static func logWrites(_ db: Database) -> (file: Int, sqlite: Int)? {
        var file: Int64 = 0, sqlite: Int64 = 0
        guard kanban_wal_buffer_log_counts(db.sqliteConnection, &file, &sqlite) == 0 else { return nil }
        return (Int(file), Int(sqlite))
    }

    /// For tests: makes every write of this connection to its write-ahead log fail with SQLite
    /// error `code` (13, SQLITE_FULL: a full disk) until called with 0. Returns false when the
    /// log is not open yet or not written through this VFS.
    @discardableResult
    public static func failLogWrites(_ db: Database, with code: Int32) -> Bool {
        kanban_wal_buffer_fail_log_writes(db.sqliteConnection, code) == 0
    }
}
