import GRDB

extension ReplicaStore {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT;

                -- The operation log: every operation this replica knows, in local arrival order.
                CREATE TABLE op (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    board_id TEXT NOT NULL,
                    body TEXT NOT NULL,
                    local INTEGER NOT NULL CHECK (local IN (0, 1))
                ) STRICT;
                CREATE INDEX op_by_board ON op (board_id, seq);

                CREATE TABLE boards (
                    id TEXT PRIMARY KEY NOT NULL,
                    created INTEGER NOT NULL CHECK (created IN (0, 1)),
                    title TEXT, title_hlc TEXT, title_op TEXT,
                    CHECK ((title_hlc IS NULL) = (title_op IS NULL))
                ) STRICT;

                CREATE TABLE board_columns (
                    board_id TEXT NOT NULL,
                    id TEXT NOT NULL,
                    created INTEGER NOT NULL CHECK (created IN (0, 1)),
                    title TEXT, title_hlc TEXT, title_op TEXT,
                    position TEXT, position_hlc TEXT, position_op TEXT,
                    deleted INTEGER, deleted_hlc TEXT, deleted_op TEXT,
                    PRIMARY KEY (board_id, id),
                    CHECK ((title_hlc IS NULL) = (title_op IS NULL)),
                    CHECK ((position_hlc IS NULL) = (position_op IS NULL)),
                    CHECK ((deleted_hlc IS NULL) = (deleted_op IS NULL))
                ) STRICT, WITHOUT ROWID;
                CREATE INDEX board_columns_by_id ON board_columns (id);

                CREATE TABLE tasks (
                    board_id TEXT NOT NULL,
                    id TEXT NOT NULL,
                    created INTEGER NOT NULL CHECK (created IN (0, 1)),
                    title TEXT, title_hlc TEXT, title_op TEXT,
                    description TEXT, description_hlc TEXT, description_op TEXT,
                    column_id TEXT, position TEXT, place_hlc TEXT, place_op TEXT,
                    deleted INTEGER, deleted_hlc TEXT, deleted_op TEXT,
                    PRIMARY KEY (board_id, id),
                    CHECK ((title_hlc IS NULL) = (title_op IS NULL)),
                    CHECK ((description_hlc IS NULL) = (description_op IS NULL)),
                    CHECK ((place_hlc IS NULL) = (place_op IS NULL) AND (place_hlc IS NULL) = (column_id IS NULL)),
                    CHECK ((deleted_hlc IS NULL) = (deleted_op IS NULL))
                ) STRICT, WITHOUT ROWID;
                CREATE INDEX tasks_by_id ON tasks (id);

                -- Local operations not yet acknowledged by a relay, in authoring order.
                CREATE TABLE outbox (
                    seq INTEGER PRIMARY KEY REFERENCES op (seq),
                    op_id TEXT NOT NULL UNIQUE REFERENCES op (id)
                ) STRICT;

                -- Per board: the highest relay sequence applied here.
                CREATE TABLE cursor (
                    board_id TEXT PRIMARY KEY NOT NULL,
                    seq INTEGER NOT NULL CHECK (seq >= 0)
                ) STRICT;
                """)
        }
        migrator.registerMigration("v2-snapshots") { db in
            try db.execute(sql: """
                -- Board states received from a relay in place of operations past its compaction
                -- horizon (joined if several arrive). Together with the op log, the source of truth.
                CREATE TABLE snapshot (
                    board_id TEXT PRIMARY KEY NOT NULL,
                    seq INTEGER NOT NULL CHECK (seq >= 0),
                    body TEXT NOT NULL CHECK (json_valid(body))
                ) STRICT;
                """)
        }
        migrator.registerMigration("v3-no-autoincrement") { db in
            // Two fewer page writes per commit. `op.seq` loses AUTOINCREMENT, whose counter row in
            // sqlite_sequence was rewritten by every commit: operations are never deleted from the
            // log, so the largest rowid plus one is the same increasing sequence. The outbox loses
            // its `op_id` column, whose unique index took a page per local commit; operations are
            // found through the log's own ID index. Tables are rebuilt and renamed in place (the
            // migrator runs this with foreign keys off and checks them before committing).
            try db.execute(sql: """
                CREATE TABLE op_new (
                    seq INTEGER PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    board_id TEXT NOT NULL,
                    body TEXT NOT NULL,
                    local INTEGER NOT NULL CHECK (local IN (0, 1))
                ) STRICT;
                INSERT INTO op_new (seq, id, board_id, body, local) SELECT seq, id, board_id, body, local FROM op ORDER BY seq;
                CREATE TABLE outbox_new (seq INTEGER PRIMARY KEY REFERENCES op (seq)) STRICT;
                INSERT INTO outbox_new (seq) SELECT seq FROM outbox ORDER BY seq;
                DROP TABLE outbox;
                DROP TABLE op;
                ALTER TABLE op_new RENAME TO op;
                ALTER TABLE outbox_new RENAME TO outbox;
                CREATE INDEX op_by_board ON op (board_id, seq);
                """)
        }
        migrator.registerMigration("v4-cursor-marks") { db in
            // The operation the relay gave each cursor's sequence (NULL: not known, e.g. after a
            // snapshot): sent in the hello so the relay can tell a history that differs.
            try db.execute(sql: "ALTER TABLE cursor ADD COLUMN op_id TEXT")
        }
        return migrator
    }
}
