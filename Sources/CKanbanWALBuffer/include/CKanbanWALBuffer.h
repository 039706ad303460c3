#ifndef C_KANBAN_WAL_BUFFER_H
#define C_KANBAN_WAL_BUFFER_H

/// Registers, once per process, an SQLite VFS that wraps the default one and makes itself the
/// default. It changes one thing: writes to a write-ahead log are gathered in memory and reach
/// the file in one `pwrite` per transaction (and whenever SQLite syncs, reads, sizes or closes
/// that log), instead of two per page (SQLite writes each frame's 24-byte header and its page
/// separately). Everything else goes straight to the wrapped VFS.
///
/// Returns SQLITE_OK, or the error of the first registration.
int kanban_wal_buffer_register(void);

/// The name the VFS registers under.
const char *kanban_wal_buffer_name(void);

typedef struct sqlite3 sqlite3;

/// How many `pwrite` calls the VFS has made to the write-ahead log of `db`'s main database
/// through that connection, and how many writes SQLite asked of it (for tests and benchmarks).
/// Call it on the connection's own thread. Returns SQLITE_OK, or SQLITE_NOTFOUND when that log
/// is not open or not this VFS's.
int kanban_wal_buffer_log_counts(sqlite3 *db, long long *file_writes, long long *sqlite_writes);

/// For tests: from now on every write of `db`'s connection to its main database's write-ahead
/// log fails with `code` (SQLITE_FULL, 13, is a full disk), until called again with 0. A commit
/// then fails the way it does on a full disk. Call it on the connection's own thread. Returns
/// SQLITE_OK, or SQLITE_NOTFOUND when that log is not open or not this VFS's.
int kanban_wal_buffer_fail_log_writes(sqlite3 *db, int code);

#endif
