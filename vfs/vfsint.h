/*
 * Internal structures of the tpdb VFS shared by vfs.c (the shim and the
 * registry of open databases), capture.c (leader capture) and apply.c
 * (follower apply). Not installed; nothing outside vfs/ includes it.
 */
#ifndef TPDB_VFSINT_H
#define TPDB_VFSINT_H

#include <stdint.h>

#include <sqlite3.h>

#include "vfs/vfs.h"

/* State of one WAL write-lock session (shm slot 0 held by a replicated
 * connection of this process). Touched only by the thread that holds the
 * lock; the unix VFS's shm mutex orders successive holders. */
struct vfsSession {
    int active;            /* slot 0 is held by owner */
    struct vfsFile *owner; /* main db file that took the lock */
    int checked;           /* hooks->write_check passed */
    int committed;         /* hooks->commit succeeded and frame written */
    uint32_t page_size;    /* of the WAL; 0 until known */
    uint32_t base;         /* frame number of pgnos[0] */
    uint32_t n;            /* frames tracked: base .. base + n - 1 */
    uint32_t cap;          /* allocated entries of pgnos */
    uint32_t *pgnos;       /* page number per tracked frame, 0 unknown */
    int held;              /* a commit-marked header is held back */
    uint32_t held_frame;   /* its frame number */
    uint8_t held_hdr[24];  /* its bytes */
};

/* One database open in this process, keyed by its main file's full path and
 * shared by every connection to it. Refcounted by the main and WAL files
 * that point at it; created and freed under the registry mutex. */
struct vfsDb {
    char *path;
    unsigned refs;
    struct vfsDb *next;
    struct vfsSession session;
};

enum { VFS_FILE_OTHER = 0, VFS_FILE_MAIN, VFS_FILE_WAL };

/* An open file of the tpdb VFS: the wrapper SQLite sees, followed in the
 * same allocation by the "unix" VFS's file. */
struct vfsFile {
    sqlite3_file base;
    int kind;                    /* VFS_FILE_* */
    struct vfsDb *db;            /* main and WAL files; else NULL */
    int replicated;              /* main, WAL: hooks present, not internal,
                                    not read-only */
    int shm_mapped;              /* main: the WAL-index is mapped (WAL mode) */
    int wal_switch;              /* main: 1 PRAGMA journal_mode=WAL seen, its
                                    switch (a rollback-journal transaction on
                                    page 1) may come; 2 that transaction
                                    holds RESERVED; 3 an attached file's
                                    switch by a PRAGMA with no schema holds
                                    RESERVED (its writes checked) */
    struct tpdb_vfs_hooks hooks; /* main: copy taken at open */
    void *handle;                /* main: from hooks->db_open */
    sqlite3_file *real;          /* the unix file, right after this struct */
    /* WAL: asked at each sync whether to skip it (tpdbVfsWalSyncFilter);
     * NULL: every sync is done. */
    int (*sync_skip)(void *arg);
    void *sync_skip_arg;
};

/* The io methods of every tpdb file; apply.c uses it to check that a
 * connection's files belong to the tpdb VFS. */
extern const sqlite3_io_methods vfsIoMethods;

/* Capture (capture.c). */

/* The main file `f` took shm slot 0 exclusively: a session begins. */
void captureBegin(struct vfsFile *f);

/* The main file `f` is about to release shm slot 0: ends the session while
 * the lock is still held (the next holder may begin its own at once) and
 * returns its committed flag, or -1 when `f` does not own the session. */
int captureDetach(struct vfsFile *f);

/* Calls hooks->txn_end for a session that captureDetach ended, once the
 * lock is released; no-op when `committed` is -1. */
void captureNotifyEnd(struct vfsFile *f, int committed);

/* A write to the WAL file `wal` while a session is active on its database.
 * Writes through, holds back or fails the write; returns an SQLITE_* code. */
int captureWalWrite(struct vfsFile *wal,
                    const void *buf,
                    int amt,
                    sqlite3_int64 ofst);

/* The WAL file `wal`'s xSync failed with rc while a session is active on
 * its database. After the commit frame was written the cluster already
 * holds the transaction, but SQLite will not publish it: the session is no
 * longer committed (txn_end says so, and the node recovers the database)
 * and COMMIT reports an unknown outcome, never a failure. Returns the code
 * for xSync to return. */
int captureSyncFailed(struct vfsFile *wal, int rc);

/* Frees the session's buffers (the database is going away). */
void captureFree(struct vfsSession *s);

/* Sets this thread's last error message (tpdbVfsLastError). */
void captureSetError(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif /* TPDB_VFSINT_H */
