import Foundation
import GRDB
public import KanbanModel
import Synchronization

/// One replica on disk: the operation log (the source of truth), the boards, columns and tasks
/// materialized from it, the outbox of local operations a relay has not acknowledged, and the
/// per-board relay cursors. Every operation is appended to the log and applied to the tables in
/// one SQLite transaction, so a crash leaves either both or neither.
///
/// ```swift
/// let store = try ReplicaStore(path: "/tmp/kanban/replica.sqlite")
/// let change = try store.author(board: boardID) { state in .renameBoard(title: "Roadmap") }
/// ```
public final class ReplicaStore: Sendable {
    public struct Configuration: Sendable {
        /// `full` syncs the WAL on every commit (survives power loss); `normal` survives a
        /// process crash and is faster.
        public enum Durability: String, Sendable { case full, normal }
        public var durability: Durability = .full
        /// Replica ID for a new database; an existing database keeps its own.
        public var replicaID: ReplicaID? = nil
        public var clock: WallClock = .system

        public init(durability: Durability = .full, replicaID: ReplicaID? = nil, clock: WallClock = .system) {
            self.durability = durability
            self.replicaID = replicaID
            self.clock = clock
        }
    }

    /// In-memory mirror of the tables of the boards touched so far, and the operation author.
    /// Mutated only inside write transactions, which GRDB runs one at a time; a rolled-back
    /// transaction drops the boards it touched so they are reloaded from disk.
    struct Cache {
        var boards: [EntityID: BoardState] = [:]
        var author: Author
        var lastSeq: Int64
        /// The clock and counter bounds saved in `meta`.
        var ceilings: Ceilings
        /// Boards changed by the open transaction.
        var touched: Set<EntityID> = []
        /// Rows the open transaction changed in the mirror and has yet to write, once each,
        /// just before it commits.
        var dirty: [DirtyRow: DirtyFields] = [:]
        /// Local operations the open transaction logged, for the outbox tail once it commits.
        var authored: [OutboxTail.Entry] = []
    }

    /// Upper bounds of the clock and of the local operation counter, saved in `meta` in place of
    /// their live values so that most commits leave the meta pages alone (rewriting them cost two
    /// page writes per commit). Every logged stamp is at most `clock` and every local counter at
    /// most `counter`; a reopened store resumes from them, so its next stamp and operation ID are
    /// above everything in its log, also after a crash. The price of a restart is a gap in the
    /// counters and a clock up to `clockMargin` ms ahead of wall time until wall time catches up.
    ///
    /// Older databases hold the exact last values under the same keys, which are ceilings too.
    struct Ceilings {
        static let clockMargin: Int64 = 1_000
        static let counterMargin: UInt64 = 1_000
        /// The largest wall time a stamp's text can hold (15 digits).
        static let maxWallMillis: Int64 = 999_999_999_999_999
        var clock: HLCStamp?
        var counter: UInt64
    }

    struct DirtyRow: Hashable {
        let board: EntityID
        let entity: EntityRef
    }

    /// Which registers of an entity row the open transaction changed. A row that is new in this
    /// transaction (or any board or column row) is written whole; an existing task row gets an
    /// UPDATE of only the registers that changed.
    struct DirtyFields: OptionSet {
        let rawValue: UInt8
        static let title = DirtyFields(rawValue: 1)
        static let description = DirtyFields(rawValue: 2)
        static let place = DirtyFields(rawValue: 4)
        static let deleted = DirtyFields(rawValue: 8)
        static let whole = DirtyFields(rawValue: 0x80)

        /// The registers `action` can change on an existing row (`whole` for a create, whose
        /// `created` flag changes too, and for anything but tasks).
        init(_ action: BoardOperation.Action) {
            switch action {
            case .updateTask(_, let title, let description):
                var fields: DirtyFields = []
                if title != nil { fields.insert(.title) }
                if description != nil { fields.insert(.description) }
                self = fields.isEmpty ? .whole : fields
            case .moveTask: self = .place
            case .deleteTask, .restoreTask: self = .deleted
            default: self = .whole
            }
        }

        init(rawValue: UInt8) { self.rawValue = rawValue }
    }

    let writer: any DatabaseWriter
    let cache: Mutex<Cache>
    let listeners = Mutex<[@Sendable ([AppliedChange]) -> Void]>([])
    /// Acknowledgments the next write transaction takes (`acknowledgeLater`).
    let pendingAcknowledgments = Mutex(PendingAcknowledgments())
    /// The newest outbox entries, in memory (see `OutboxTail`).
    let outboxTail: Mutex<OutboxTail>
    /// Which board holds each created column and task looked up so far: an entity never changes
    /// boards, so an answer read once stays true (see `boardOfColumn`).
    let boardIndex = Mutex<[EntityRef: EntityID]>([:])
    /// Local edits waiting for their group commit.
    let authorQueue: GroupCommit<AuthorJob>
    /// Background WAL checkpoints (file-backed stores only).
    let checkpointer = Mutex<WALCheckpointer?>(nil)
    let clock: WallClock
    /// Whether commits sync the WAL (see `Configuration.Durability`).
    let durability: Configuration.Durability
    public let replicaID: ReplicaID
    public let path: String

    /// Opens (creating if needed) the database at `path`, in WAL mode.
    public convenience init(path: String, configuration: Configuration = .init()) throws {
        var config = GRDB.Configuration()
        // 64 MiB of page cache: board rows and indexes stay in memory on busy replicas.
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -65536") }
        let pool = try WALCheckpointer.openPool(path: path, fullSync: configuration.durability == .full, configuration: config)
        try self.init(writer: pool, path: path, configuration: configuration)
        checkpointer.withLock { $0 = try? WALCheckpointer(path: path, writer: pool) }
    }

    /// Stops the background checkpoints and closes the store's database connections; SQLite
    /// then copies the write-ahead log into the database file and removes it. Call it when
    /// nothing uses the store any more: every later read or write fails with a "connection is
    /// closed" error, and so does an edit still waiting for its group commit.
    public func close() throws {
        checkpointer.withLock { $0 }?.stop()
        try writer.close()
    }

    /// An in-memory store, for tests.
    public static func inMemory(configuration: Configuration = .init()) throws -> ReplicaStore {
        try ReplicaStore(writer: DatabaseQueue(), path: ":memory:", configuration: configuration)
    }

    init(writer: any DatabaseWriter, path: String, configuration: Configuration) throws {
        self.writer = writer
        authorQueue = GroupCommit(writer: writer)
        self.path = path
        self.clock = configuration.clock
        self.durability = configuration.durability
        try Self.migrator.migrate(writer)
        let (replica, counter, lastStamp, lastSeq) = try writer.write { db in
            let replica: ReplicaID
            if let text = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'replica_id'"),
               let id = ReplicaID(text) {
                replica = id
            } else {
                replica = configuration.replicaID ?? .random()
                try db.execute(sql: "INSERT INTO meta (key, value) VALUES ('replica_id', ?), ('counter', '0')",
                               arguments: [replica.rawValue])
            }
            let counter = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'counter'").flatMap { UInt64($0) } ?? 0
            // Ceilings (see `Ceilings`): new local stamps and counters start above everything logged.
            let stamp = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'hlc'").flatMap { HLCStamp($0) }
            let seq = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM op") ?? 0
            return (replica, counter, stamp, seq)
        }
        self.replicaID = replica
        let author = Author(replica: replica, counter: counter, lastStamp: lastStamp)
        self.cache = Mutex(Cache(author: author, lastSeq: lastSeq, ceilings: Ceilings(clock: lastStamp, counter: counter)))
        self.outboxTail = Mutex(OutboxTail(floor: lastSeq))
    }

    /// Registers a function called with every batch of newly logged operations, after commit and
    /// in commit order. It runs on the database writer: keep it short and non-blocking.
    public func addChangeListener(_ listener: @escaping @Sendable ([AppliedChange]) -> Void) {
        listeners.withLock { $0.append(listener) }
    }

    /// The highest local log sequence: a version number for documents and events.
    public var version: Int64 { cache.withLock { $0.lastSeq } }
}
