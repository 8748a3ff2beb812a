/*
 * Direct access to a database's WAL and WAL-index (see walfile.h).
 */
#include "vfs/walfile.h"

#include <string.h>
#include <time.h>

#include "vfs/vfsint.h"

#define WALCTX_REPAIR_TRIES 5

int walCtxIoCode(int rc)
{
    return rc == SQLITE_FULL ? TPDB_FULL
                             : (rc == SQLITE_NOMEM ? TPDB_NOMEM : TPDB_IOERR);
}

void walCtxConnRead(sqlite3 *conn)
{
    /* Only the side effects matter: the WAL is opened, the index
     * repaired. */
    sqlite3_exec(conn, "SELECT 1 FROM sqlite_schema LIMIT 1", NULL, NULL, NULL);
}

/* The tpdb file behind a connection's main database or its journal/WAL;
 * NULL if it is not one of ours of the wanted kind. */
static struct vfsFile *connFile(sqlite3 *conn, int op, int kind)
{
    sqlite3_file *p = NULL;
    if (sqlite3_file_control(conn, "main", op, &p) != SQLITE_OK || p == NULL ||
        p->pMethods != &vfsIoMethods) {
        return NULL;
    }
    struct vfsFile *f = (struct vfsFile *)p;
    return f->kind == kind ? f : NULL;
}

int walCtxOpenMain(struct walCtx *c, int64_t *size)
{
    struct vfsFile *mf =
        connFile(c->conn, SQLITE_FCNTL_FILE_POINTER, VFS_FILE_MAIN);
    sqlite3_int64 sz = 0;
    if (mf == NULL) {
        tpdbErrf(c->errmsg, "connection is not on the tpdb VFS");
        return TPDB_INVALID;
    }
    c->db = mf->real;
    int rc = c->db->pMethods->xFileSize(c->db, &sz);
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg, "size of main file: error %d", rc);
        return walCtxIoCode(rc);
    }
    *size = sz;
    return TPDB_OK;
}

int walCtxOpenWal(struct walCtx *c)
{
    struct vfsFile *wal =
        connFile(c->conn, SQLITE_FCNTL_JOURNAL_POINTER, VFS_FILE_WAL);
    if (wal == NULL) {
        walCtxConnRead(c->conn);
        wal = connFile(c->conn, SQLITE_FCNTL_JOURNAL_POINTER, VFS_FILE_WAL);
    }
    if (wal == NULL) {
        tpdbErrf(c->errmsg, "database is not in WAL mode");
        return TPDB_INVALID;
    }
    c->wal = wal->real;
    return TPDB_OK;
}

void walCtxPause(void)
{
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, NULL);
}

static int lockWrite(struct walCtx *c, uint64_t deadline)
{
    for (;;) {
        int rc = c->db->pMethods->xShmLock(
            c->db, WALI_LOCK_WRITE, 1, SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
        if (rc == SQLITE_OK) {
            return TPDB_OK;
        }
        if (rc != SQLITE_BUSY) {
            tpdbErrf(c->errmsg, "take WAL write lock: error %d", rc);
            return walCtxIoCode(rc);
        }
        if (tpdbNowMs() >= deadline) {
            tpdbErrf(c->errmsg, "WAL write lock busy");
            return TPDB_BUSY;
        }
        walCtxPause();
    }
}

void walCtxUnlockWrite(struct walCtx *c)
{
    c->db->pMethods->xShmLock(c->db, WALI_LOCK_WRITE, 1,
                              SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

int walCtxMapRegion(struct walCtx *c, uint32_t region, uint8_t **out)
{
    void volatile *p = NULL;
    int rc =
        c->db->pMethods->xShmMap(c->db, (int)region, WALI_REGION_SIZE, 1, &p);
    if (rc != SQLITE_OK || p == NULL) {
        tpdbErrf(c->errmsg, "map WAL-index region %u: error %d", region, rc);
        return rc == SQLITE_OK ? TPDB_IOERR : walCtxIoCode(rc);
    }
    *out = (uint8_t *)p;
    return TPDB_OK;
}

/* Reads both header copies; 1 if they agree and are valid. */
static int readHdr(struct walCtx *c)
{
    uint8_t h0[WALI_HDR_SIZE], h1[WALI_HDR_SIZE];
    memcpy(h0, c->region0, WALI_HDR_SIZE);
    c->db->pMethods->xShmBarrier(c->db);
    memcpy(h1, c->region0 + WALI_HDR_SIZE, WALI_HDR_SIZE);
    if (memcmp(h0, h1, WALI_HDR_SIZE) != 0 || !walIndexHdrValid(h0)) {
        return 0;
    }
    walIndexHdrDecode(h0, &c->h);
    return 1;
}

int walCtxLockAndRead(struct walCtx *c, unsigned timeout_ms)
{
    uint64_t deadline = tpdbNowMs() + timeout_ms;
    for (int tries = 0;; tries++) {
        int rc = lockWrite(c, deadline);
        if (rc != TPDB_OK) {
            return rc;
        }
        rc = walCtxMapRegion(c, 0, &c->region0);
        if (rc != TPDB_OK) {
            walCtxUnlockWrite(c);
            return rc;
        }
        if (readHdr(c)) {
            return TPDB_OK;
        }
        walCtxUnlockWrite(c);
        if (tries + 1 >= WALCTX_REPAIR_TRIES) {
            tpdbErrf(c->errmsg, "WAL-index header stays invalid");
            return TPDB_CORRUPT;
        }
        walCtxConnRead(c->conn);
    }
}

void walCtxPublish(struct walCtx *c)
{
    uint8_t buf[WALI_HDR_SIZE];
    c->h.change++;
    walIndexHdrEncode(&c->h, buf);
    c->db->pMethods->xShmBarrier(c->db);
    memcpy(c->region0 + WALI_HDR_SIZE, buf, WALI_HDR_SIZE);
    c->db->pMethods->xShmBarrier(c->db);
    memcpy(c->region0, buf, WALI_HDR_SIZE);
}
