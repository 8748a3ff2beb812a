/*
 * Direct access to a database's real WAL and WAL-index through one of the
 * connection's tpdb files: what the follower apply (apply.c) and the
 * snapshot reader (reader.c) share. The connection must be on the tpdb VFS
 * in WAL mode; these functions use the "unix" files under it, so SQLite's
 * own locking protocol (shm lock slots) orders them with every other
 * connection in any process. Internal to vfs/.
 */
#ifndef TPDB_WALFILE_H
#define TPDB_WALFILE_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "vfs/walindex.h"

/* Files and WAL-index state of one operation. Borrowed from the connection:
 * valid while the connection stays open and idle. */
struct walCtx {
    sqlite3 *conn;
    sqlite3_file *db;  /* the unix main file */
    sqlite3_file *wal; /* the unix WAL file */
    uint8_t *region0;  /* shm region 0, once mapped */
    struct walIndexHdr h;
    char *errmsg;
};

/* TPDB_* code for an SQLITE_* I/O result. */
int walCtxIoCode(int rc);

/* A read on the connection: opens its WAL and repairs the WAL-index. */
void walCtxConnRead(sqlite3 *conn);

/* Finds the connection's unix main file; sets c->db and *size (bytes).
 * Errors: TPDB_INVALID (not a tpdb connection), TPDB_IOERR. */
int walCtxOpenMain(struct walCtx *c, int64_t *size);

/* Finds the connection's unix WAL file (opening it with a read when it is
 * not open yet); sets c->wal. Errors: TPDB_INVALID (not in WAL mode). */
int walCtxOpenWal(struct walCtx *c);

/* Takes the WAL write lock (slot 0), waiting up to timeout_ms, with a valid
 * WAL-index header read into c->h under it (a bad index is repaired by a
 * read on the connection). Errors: TPDB_BUSY, TPDB_CORRUPT, TPDB_IOERR. */
int walCtxLockAndRead(struct walCtx *c, unsigned timeout_ms);

/* Releases the write lock. */
void walCtxUnlockWrite(struct walCtx *c);

/* Maps WAL-index region `region`. Errors: TPDB_IOERR, TPDB_NOMEM. */
int walCtxMapRegion(struct walCtx *c, uint32_t region, uint8_t **out);

/* Publishes c->h (change counter + 1): copy 1, barrier, copy 0. Needs the
 * write lock. */
void walCtxPublish(struct walCtx *c);

/* Sleeps about 100 microseconds (lock polling). */
void walCtxPause(void);

#endif /* TPDB_WALFILE_H */
