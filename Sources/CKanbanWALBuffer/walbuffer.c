// An SQLite VFS that wraps the default one and gathers the writes SQLite makes to a
// write-ahead log, so that a transaction's frames reach the file in one pwrite instead of two
// per page. See include/CKanbanWALBuffer.h.
//
// Why it is safe: SQLite makes a commit visible to other connections only after it has written
// the commit frame (and synced, with synchronous=FULL), by updating the wal-index in shared
// memory. The commit frame is recognisable: its 24-byte header carries the database size after
// the commit (bytes 4-7), which is zero in every other frame. The buffer is written out right
// after that frame's page, before SQLite's own write call returns, so no other connection can
// see a commit whose frames are still in memory. It is also written out before every sync,
// read, size query, truncation, file control, memory map and close of the log, and before any
// write that does not continue it, so the file never misses what SQLite believes it wrote when
// SQLite looks at it. A crash with frames still in memory is a crash before the transaction's
// commit frame was written: the same as SQLite crashing mid-transaction, which recovery handles.

#include "CKanbanWALBuffer.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

// The unix VFS writes at most 0x1ffff bytes per call (a longer write comes back short, which
// SQLite reports as a full disk): the buffer stays under that, 31 frames of 4 KiB pages.
#define WAL_BUFFER_CAPACITY 0x1ffff
#define WAL_FRAME_HEADER_SIZE 24

typedef struct WalBufferFile {
    sqlite3_file base;
    sqlite3_file *real;     // the wrapped VFS's file, stored right after this struct
    unsigned char *buffer;  // allocated at the first write
    int length;             // bytes gathered
    sqlite3_int64 start;    // file offset of buffer[0]
    int flushAfterNextWrite; // a commit frame's header was gathered; its page comes next
    long long fileWrites;    // pwrite calls made to the log
    long long sqliteWrites;  // writes SQLite asked for
    int failWritesWith;      // tests: nonzero fails every write to the log with this code
} WalBufferFile;

static sqlite3_vfs walBufferVFS;
static sqlite3_vfs *wrapped;
static int registration = SQLITE_OK;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int flushBuffer(WalBufferFile *p) {
    if (p->length == 0) return SQLITE_OK;
    int length = p->length;
    p->length = 0;
    if (p->failWritesWith) return p->failWritesWith;
    p->fileWrites += 1;
    return p->real->pMethods->xWrite(p->real, p->buffer, length, p->start);
}

// MARK: the log file's methods

// Writes out what is gathered, returning from the calling method if that fails.
#define FLUSH_OR_RETURN(p)                  \
    do {                                    \
        int flushed = flushBuffer(p);       \
        if (flushed != SQLITE_OK) return flushed; \
    } while (0)

static int walClose(sqlite3_file *file) {
    WalBufferFile *p = (WalBufferFile *)file;
    int rc = flushBuffer(p);
    int closed = p->real->pMethods->xClose(p->real);
    free(p->buffer);
    p->buffer = NULL;
    return rc != SQLITE_OK ? rc : closed;
}

static int walRead(sqlite3_file *file, void *data, int amount, sqlite3_int64 offset) {
    WalBufferFile *p = (WalBufferFile *)file;
    FLUSH_OR_RETURN(p);
    return p->real->pMethods->xRead(p->real, data, amount, offset);
}

static int walWrite(sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset) {
    WalBufferFile *p = (WalBufferFile *)file;
    p->sqliteWrites += 1;
    const unsigned char *bytes = data;
    int commitHeader = amount == WAL_FRAME_HEADER_SIZE && (bytes[4] | bytes[5] | bytes[6] | bytes[7]) != 0;
    int continues = p->length > 0 && offset == p->start + p->length && p->length + amount <= WAL_BUFFER_CAPACITY;
    if (!continues) {
        int rc = flushBuffer(p);
        if (rc != SQLITE_OK) return rc;
        if (p->buffer == NULL && amount <= WAL_BUFFER_CAPACITY) p->buffer = malloc(WAL_BUFFER_CAPACITY);
        if (p->buffer == NULL || amount > WAL_BUFFER_CAPACITY) {
            p->flushAfterNextWrite = 0;
            if (p->failWritesWith) return p->failWritesWith;
            p->fileWrites += 1;
            return p->real->pMethods->xWrite(p->real, data, amount, offset);
        }
        p->start = offset;
    }
    memcpy(p->buffer + p->length, data, (size_t)amount);
    p->length += amount;
    if (p->flushAfterNextWrite) {
        p->flushAfterNextWrite = 0;
        return flushBuffer(p);
    }
    if (commitHeader) p->flushAfterNextWrite = 1;
    return SQLITE_OK;
}

static int walTruncate(sqlite3_file *file, sqlite3_int64 size) {
    WalBufferFile *p = (WalBufferFile *)file;
    FLUSH_OR_RETURN(p);
    return p->real->pMethods->xTruncate(p->real, size);
}

static int walSync(sqlite3_file *file, int flags) {
    WalBufferFile *p = (WalBufferFile *)file;
    FLUSH_OR_RETURN(p);
    return p->real->pMethods->xSync(p->real, flags);
}

static int walFileSize(sqlite3_file *file, sqlite3_int64 *size) {
    WalBufferFile *p = (WalBufferFile *)file;
    FLUSH_OR_RETURN(p);
    return p->real->pMethods->xFileSize(p->real, size);
}

static int walLock(sqlite3_file *file, int level) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xLock(p->real, level);
}

static int walUnlock(sqlite3_file *file, int level) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xUnlock(p->real, level);
}

static int walCheckReservedLock(sqlite3_file *file, int *result) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xCheckReservedLock(p->real, result);
}

static int walFileControl(sqlite3_file *file, int op, void *argument) {
    WalBufferFile *p = (WalBufferFile *)file;
    FLUSH_OR_RETURN(p);
    return p->real->pMethods->xFileControl(p->real, op, argument);
}

static int walSectorSize(sqlite3_file *file) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xSectorSize(p->real);
}

static int walDeviceCharacteristics(sqlite3_file *file) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xDeviceCharacteristics(p->real);
}

static int walShmMap(sqlite3_file *file, int page, int pageSize, int extend, void volatile **mapped) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xShmMap(p->real, page, pageSize, extend, mapped);
}

static int walShmLock(sqlite3_file *file, int offset, int n, int flags) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xShmLock(p->real, offset, n, flags);
}

static void walShmBarrier(sqlite3_file *file) {
    WalBufferFile *p = (WalBufferFile *)file;
    p->real->pMethods->xShmBarrier(p->real);
}

static int walShmUnmap(sqlite3_file *file, int deleteFlag) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xShmUnmap(p->real, deleteFlag);
}

static int walFetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **pointer) {
    WalBufferFile *p = (WalBufferFile *)file;
    FLUSH_OR_RETURN(p);
    return p->real->pMethods->xFetch(p->real, offset, amount, pointer);
}

static int walUnfetch(sqlite3_file *file, sqlite3_int64 offset, void *pointer) {
    WalBufferFile *p = (WalBufferFile *)file;
    return p->real->pMethods->xUnfetch(p->real, offset, pointer);
}

static sqlite3_io_methods walMethods = {
    3, walClose, walRead, walWrite, walTruncate, walSync, walFileSize, walLock, walUnlock,
    walCheckReservedLock, walFileControl, walSectorSize, walDeviceCharacteristics,
    walShmMap, walShmLock, walShmBarrier, walShmUnmap, walFetch, walUnfetch,
};

// MARK: the VFS

static int vfsOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *outFlags) {
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL)) {
        // Every other file is the wrapped VFS's own (this VFS's files are at least as large).
        return wrapped->xOpen(wrapped, name, file, flags, outFlags);
    }
    WalBufferFile *p = (WalBufferFile *)file;
    memset(p, 0, sizeof(*p));
    p->real = (sqlite3_file *)(p + 1);
    int rc = wrapped->xOpen(wrapped, name, p->real, flags, outFlags);
    p->base.pMethods = rc == SQLITE_OK ? &walMethods : NULL;
    return rc;
}

static int vfsDelete(sqlite3_vfs *vfs, const char *name, int syncDirectory) {
    (void)vfs;
    return wrapped->xDelete(wrapped, name, syncDirectory);
}

static int vfsAccess(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return wrapped->xAccess(wrapped, name, flags, result);
}

static int vfsFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return wrapped->xFullPathname(wrapped, name, size, out);
}

static void *vfsDlOpen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return wrapped->xDlOpen(wrapped, name);
}

static void vfsDlError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    wrapped->xDlError(wrapped, size, message);
}

static void (*vfsDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return wrapped->xDlSym(wrapped, handle, symbol);
}

static void vfsDlClose(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    wrapped->xDlClose(wrapped, handle);
}

static int vfsRandomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return wrapped->xRandomness(wrapped, size, out);
}

static int vfsSleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return wrapped->xSleep(wrapped, microseconds);
}

static int vfsCurrentTime(sqlite3_vfs *vfs, double *now) {
    (void)vfs;
    return wrapped->xCurrentTime(wrapped, now);
}

static int vfsGetLastError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    return wrapped->xGetLastError(wrapped, size, message);
}

static int vfsCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    return wrapped->xCurrentTimeInt64(wrapped, now);
}

static int vfsSetSystemCall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr call) {
    (void)vfs;
    return wrapped->xSetSystemCall(wrapped, name, call);
}

static sqlite3_syscall_ptr vfsGetSystemCall(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return wrapped->xGetSystemCall(wrapped, name);
}

static const char *vfsNextSystemCall(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return wrapped->xNextSystemCall(wrapped, name);
}

static void registerOnce(void) {
    wrapped = sqlite3_vfs_find(NULL);
    if (wrapped == NULL || wrapped->iVersion < 3) {
        registration = SQLITE_ERROR;
        return;
    }
    walBufferVFS = (sqlite3_vfs){
        .iVersion = 3,
        .szOsFile = (int)sizeof(WalBufferFile) + wrapped->szOsFile,
        .mxPathname = wrapped->mxPathname,
        .zName = "kanban-walbuffer",
        .pAppData = NULL,
        .xOpen = vfsOpen,
        .xDelete = vfsDelete,
        .xAccess = vfsAccess,
        .xFullPathname = vfsFullPathname,
        .xDlOpen = wrapped->xDlOpen ? vfsDlOpen : NULL,
        .xDlError = wrapped->xDlError ? vfsDlError : NULL,
        .xDlSym = wrapped->xDlSym ? vfsDlSym : NULL,
        .xDlClose = wrapped->xDlClose ? vfsDlClose : NULL,
        .xRandomness = vfsRandomness,
        .xSleep = vfsSleep,
        .xCurrentTime = vfsCurrentTime,
        .xGetLastError = wrapped->xGetLastError ? vfsGetLastError : NULL,
        .xCurrentTimeInt64 = wrapped->xCurrentTimeInt64 ? vfsCurrentTimeInt64 : NULL,
        .xSetSystemCall = wrapped->xSetSystemCall ? vfsSetSystemCall : NULL,
        .xGetSystemCall = wrapped->xGetSystemCall ? vfsGetSystemCall : NULL,
        .xNextSystemCall = wrapped->xNextSystemCall ? vfsNextSystemCall : NULL,
    };
    registration = sqlite3_vfs_register(&walBufferVFS, 1);
}

int kanban_wal_buffer_register(void) {
    pthread_once(&once, registerOnce);
    return registration;
}

const char *kanban_wal_buffer_name(void) { return "kanban-walbuffer"; }

int kanban_wal_buffer_log_counts(sqlite3 *db, long long *file_writes, long long *sqlite_writes) {
    sqlite3_file *log = NULL;
    int rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &log);
    if (rc != SQLITE_OK) return rc;
    if (log == NULL || log->pMethods != &walMethods) return SQLITE_NOTFOUND;
    const WalBufferFile *p = (const WalBufferFile *)log;
    *file_writes = p->fileWrites;
    *sqlite_writes = p->sqliteWrites;
    return SQLITE_OK;
}

int kanban_wal_buffer_fail_log_writes(sqlite3 *db, int code) {
    sqlite3_file *log = NULL;
    int rc = sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &log);
    if (rc != SQLITE_OK) return rc;
    if (log == NULL || log->pMethods != &walMethods) return SQLITE_NOTFOUND;
    ((WalBufferFile *)log)->failWritesWith = code;
    return SQLITE_OK;
}
