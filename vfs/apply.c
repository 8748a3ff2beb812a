/*
 * Follower apply: appends a replicated transaction to a database's real WAL
 * and keeps the real WAL-index in step, so every reader in any process sees
 * it on its next read. Under the WAL write lock: check both WAL-index header
 * copies (a read on the connection repairs a bad index), restart a fully
 * checkpointed WAL if no reader uses it (the file truncated, its new
 * header synced before any frame), append checksummed frames, sync, index them,
 * publish copy 1, barrier, copy 0. Nothing is published unless every earlier
 * step succeeded; a crash before publication leaves frames that WAL recovery
 * brings back, which is right since Raft committed them.
 *
 * A staged apply (tpdbVfsStage*) does the same for a transaction that
 * arrives in pieces (a database streamed from a peer, a transaction sent
 * as several log entries): frames without a commit mark are appended as
 * the pieces come, under the write lock held from begin to commit; the
 * commit appends one more frame, a copy of the last page carrying the
 * commit mark, then syncs, indexes and publishes. Readers see nothing of a
 * staged transaction before its commit, and a crash or an abort leaves only
 * uncommitted frames, which WAL recovery ignores. Memory: 4 bytes per
 * staged frame plus one page.
 */
#include <string.h>

#include "vfs/vfsint.h"
#include "vfs/walfile.h"

#define APPLY_WRITE_MAX (64 * 1024)

struct tpdb_vfs_stage {
    struct walCtx c;
    uint32_t page_size;
    uint32_t n;      /* frames staged after c.h.mx_frame */
    uint32_t cap;    /* entries allocated in pgnos */
    uint32_t *pgnos; /* page number of each staged frame */
    uint8_t *last;   /* copy of the last staged page */
};

static int pageSizeValid(uint32_t ps)
{
    return ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0;
}

static int txnCheck(const struct tpdb_txn *txn, char *errmsg)
{
    if (!pageSizeValid(txn->page_size)) {
        tpdbErrf(errmsg, "apply: invalid page size %u", txn->page_size);
        return TPDB_INVALID;
    }
    if (txn->n_pages == 0 || txn->pages == NULL || txn->db_pages == 0) {
        tpdbErrf(errmsg, "apply: empty transaction");
        return TPDB_INVALID;
    }
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        const struct tpdb_page *p = &txn->pages[i];
        if (p->pgno == 0 || p->pgno > txn->db_pages || p->data == NULL ||
            (i > 0 && p->pgno <= txn->pages[i - 1].pgno)) {
            tpdbErrf(errmsg,
                     "apply: page %u (entry %u of %u) is out of order, "
                     "missing or past the database size %u",
                     p->pgno, i, txn->n_pages, txn->db_pages);
            return TPDB_INVALID;
        }
    }
    return TPDB_OK;
}

/* An empty main file gets page 1 so that SQLite sees a WAL database. */
static int initMain(struct walCtx *c, const struct tpdb_txn *txn)
{
    const struct tpdb_page *p1 = &txn->pages[0];
    int rc;
    if (p1->pgno != 1) {
        tpdbErrf(c->errmsg,
                 "apply: database is empty and the transaction "
                 "has no page 1");
        return TPDB_INVALID;
    }
    rc = c->db->pMethods->xWrite(c->db, p1->data, (int)txn->page_size, 0);
    if (rc == SQLITE_OK) {
        rc = c->db->pMethods->xSync(c->db, SQLITE_SYNC_NORMAL);
    }
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg,
                 "apply: write page 1 to the empty database: "
                 "error %d",
                 rc);
        return walCtxIoCode(rc);
    }
    walCtxConnRead(c->conn);
    return TPDB_OK;
}

/* Salt-1 + 1 and a random salt-2, so no frame of an older generation of
 * the WAL can pass for one of the new. */
static void newSalts(uint8_t salt[8])
{
    tpdbPutBe32(salt, tpdbGetBe32(salt) + 1);
    sqlite3_randomness(4, salt + 4);
}

/* Restarts a fully checkpointed WAL when no reader uses it: publishes an
 * empty WAL with new salts and resets the checkpoint info while read locks
 * 1-4 are held, as SQLite's own writer does. */
static void maybeRestart(struct walCtx *c)
{
    uint8_t *ck = c->region0;
    if (c->h.mx_frame == 0 ||
        walShmGet32(ck + WALI_NBACKFILL) != c->h.mx_frame) {
        return;
    }
    if (c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(1), 4,
                                  SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE) !=
        SQLITE_OK) {
        return;
    }
    c->h.mx_frame = 0;
    newSalts(c->h.salt);
    walCtxPublish(c);
    walShmPut32(ck + WALI_NBACKFILL, 0);
    walShmPut32(ck + WALI_NBACKFILL_ATTEMPTED, 0);
    walShmPut32(ck + WALI_READMARK + 4, 0);
    for (int i = 2; i < 5; i++) {
        walShmPut32(ck + WALI_READMARK + 4 * i, WALI_READMARK_NOT_USED);
    }
    c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(1), 4,
                              SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

/* Checks page_size against the database's (the WAL's, or the main file's
 * header when the WAL is empty). */
static int checkPageSize(struct walCtx *c, uint32_t page_size)
{
    uint32_t ps = c->h.page_size;
    uint8_t b[2];
    if (c->h.mx_frame == 0) {
        int rc = c->db->pMethods->xRead(c->db, b, 2, 16);
        if (rc != SQLITE_OK) {
            tpdbErrf(c->errmsg, "apply: read database header: error %d", rc);
            return walCtxIoCode(rc);
        }
        ps = (uint32_t)(b[0] << 8 | b[1]);
        ps = ps == 1 ? 65536 : ps;
    }
    if (ps != page_size) {
        tpdbErrf(c->errmsg,
                 "apply: page size %u does not match the database's %u",
                 page_size, ps);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

/* Writes a WAL header for an empty WAL, starting a new checksum chain. */
static int writeWalHdr(struct walCtx *c, uint32_t page_size)
{
    uint8_t hdr[WAL_HDR_SIZE];
    uint32_t seq = 0;
    sqlite3_int64 size = 0;
    int rc = c->wal->pMethods->xFileSize(c->wal, &size);
    if (rc == SQLITE_OK && size >= WAL_HDR_SIZE) {
        rc = c->wal->pMethods->xRead(c->wal, hdr, WAL_HDR_SIZE, 0);
        if (rc == SQLITE_OK && walHdrPageSize(hdr) != 0) {
            seq = tpdbGetBe32(hdr + 12) + 1;
        }
    }
    /* A restarted WAL is truncated first (as SQLite's writer does with a
     * journal_size_limit): the old generation's frames that are still
     * dirty in the page cache are then dropped, not written by the sync
     * below. The node's checkpointer does not sync the WAL (see
     * docs/design.md, "Durability of the local copy"), so most of them
     * never reach the disk. */
    if (rc == SQLITE_OK && size > WAL_HDR_SIZE) {
        rc = c->wal->pMethods->xTruncate(c->wal, 0);
    }
    newSalts(c->h.salt);
    walHdrEncode(hdr, page_size, seq, c->h.salt, c->h.frame_cksum);
    if (rc == SQLITE_OK) {
        rc = c->wal->pMethods->xWrite(c->wal, hdr, WAL_HDR_SIZE, 0);
    }
    /* Synced before any frame, as SQLite's writer does: until the
     * truncation and the header are on disk, the file there may still
     * hold the old generation's frames, and were new frames to reach the
     * disk without the header, recovery after a power loss would take the
     * old header and the old frames not yet overwritten for the database,
     * over the newer checkpointed main file. */
    if (rc == SQLITE_OK) {
        rc = c->wal->pMethods->xSync(c->wal, SQLITE_SYNC_NORMAL);
    }
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg, "apply: write WAL header: error %d", rc);
        return walCtxIoCode(rc);
    }
    c->h.big_end_cksum = (uint8_t)walHostBigEndian();
    c->h.page_size = page_size;
    return TPDB_OK;
}

/* Everything under the write lock before the first frame: restart a
 * checkpointed WAL, check the page size, start an empty WAL. */
static int prepareLocked(struct walCtx *c, uint32_t page_size)
{
    maybeRestart(c);
    int rc = checkPageSize(c, page_size);
    if (rc == TPDB_OK && c->h.mx_frame == 0) {
        rc = writeWalHdr(c, page_size);
    }
    return rc;
}

/* Encodes one frame into buf, continuing the checksum in c->h. */
static void encodeFrame(struct walCtx *c,
                        uint32_t page_size,
                        const struct tpdb_page *p,
                        uint32_t commit,
                        uint8_t *buf)
{
    int big = c->h.big_end_cksum;
    tpdbPutBe32(buf, p->pgno);
    tpdbPutBe32(buf + 4, commit);
    memcpy(buf + 8, c->h.salt, 8);
    memcpy(buf + WAL_FRAME_HDR_SIZE, p->data, page_size);
    walChecksum(big, buf, 8, c->h.frame_cksum);
    walChecksum(big, buf + WAL_FRAME_HDR_SIZE, page_size, c->h.frame_cksum);
    tpdbPutBe32(buf + 16, c->h.frame_cksum[0]);
    tpdbPutBe32(buf + 20, c->h.frame_cksum[1]);
}

/* Appends pages[0..n) as frames after frame `after`, several frames per
 * write but never more than APPLY_WRITE_MAX bytes (the unix VFS fails
 * single writes over 128 KiB). The last frame carries `commit` (the
 * database size after the commit, 0 for none). Updates c->h.frame_cksum
 * but not mx_frame. */
static int writeFrames(struct walCtx *c,
                       uint32_t page_size,
                       uint32_t after,
                       const struct tpdb_page *pages,
                       uint32_t n,
                       uint32_t commit)
{
    size_t frame_size = WAL_FRAME_HDR_SIZE + (size_t)page_size;
    uint32_t per_write = (uint32_t)(APPLY_WRITE_MAX / frame_size);
    per_write = per_write == 0 ? 1 : per_write;
    uint8_t *buf = tpdb_malloc(frame_size * per_write);
    int rc = TPDB_OK;
    if (buf == NULL) {
        tpdbErrf(c->errmsg, "apply: out of memory");
        return TPDB_NOMEM;
    }
    for (uint32_t i = 0; i < n && rc == TPDB_OK;) {
        uint32_t first = after + 1 + i;
        uint32_t k = n - i < per_write ? n - i : per_write;
        for (uint32_t j = 0; j < k; j++) {
            encodeFrame(c, page_size, &pages[i + j],
                        i + j + 1 == n ? commit : 0, buf + j * frame_size);
        }
        int wrc = c->wal->pMethods->xWrite(c->wal, buf, (int)(k * frame_size),
                                           walFrameOffset(first, page_size));
        if (wrc != SQLITE_OK) {
            tpdbErrf(c->errmsg,
                     "apply: write frames %u-%u (pages %u-%u): error %d", first,
                     first + k - 1, pages[i].pgno, pages[i + k - 1].pgno, wrc);
            rc = walCtxIoCode(wrc);
        }
        i += k;
    }
    tpdb_free(buf);
    return rc;
}

static int syncWal(struct walCtx *c)
{
    int rc = c->wal->pMethods->xSync(c->wal, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg, "apply: sync WAL: error %d", rc);
        return walCtxIoCode(rc);
    }
    return TPDB_OK;
}

/* Adds frame -> pgno to the WAL-index; *mapped / *region cache the hash
 * block mapped last (start with UINT32_MAX / NULL). */
static int indexFrame(struct walCtx *c,
                      uint32_t frame,
                      uint32_t pgno,
                      uint32_t *mapped,
                      uint8_t **region)
{
    uint32_t block = walIndexBlock(frame);
    if (block != *mapped) {
        int rc = walCtxMapRegion(c, block, region);
        if (rc != TPDB_OK) {
            return rc;
        }
        *mapped = block;
    }
    if (walIndexAdd(*region, frame, pgno) != 0) {
        tpdbErrf(c->errmsg, "apply: WAL-index hash table %u is full", block);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

/* Everything done under the write lock after the header was read. */
static int applyLocked(struct walCtx *c, const struct tpdb_txn *txn, int sync)
{
    uint32_t mapped = UINT32_MAX;
    uint8_t *region = NULL;
    int rc = prepareLocked(c, txn->page_size);
    if (rc == TPDB_OK) {
        rc = writeFrames(c, txn->page_size, c->h.mx_frame, txn->pages,
                         txn->n_pages, txn->db_pages);
    }
    if (rc == TPDB_OK && sync) {
        rc = syncWal(c);
    }
    for (uint32_t i = 0; rc == TPDB_OK && i < txn->n_pages; i++) {
        rc = indexFrame(c, c->h.mx_frame + 1 + i, txn->pages[i].pgno, &mapped,
                        &region);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    c->h.mx_frame += txn->n_pages;
    c->h.n_page = txn->db_pages;
    walCtxPublish(c);
    return TPDB_OK;
}

int tpdbVfsApply(sqlite3 *conn,
                 const struct tpdb_txn *txn,
                 int sync,
                 unsigned timeout_ms,
                 char *errmsg)
{
    struct walCtx c = {.conn = conn, .errmsg = errmsg};
    int64_t size = 0;
    int rc;
    if (conn == NULL || txn == NULL) {
        tpdbErrf(errmsg, "apply: no connection or transaction");
        return TPDB_MISUSE;
    }
    if (!sqlite3_get_autocommit(conn)) {
        tpdbErrf(errmsg, "apply: a transaction is open on the connection");
        return TPDB_MISUSE;
    }
    rc = txnCheck(txn, errmsg);
    if (rc == TPDB_OK) {
        rc = walCtxOpenMain(&c, &size);
    }
    if (rc == TPDB_OK && size == 0) {
        rc = initMain(&c, txn);
    }
    if (rc == TPDB_OK) {
        rc = walCtxOpenWal(&c);
    }
    if (rc == TPDB_OK) {
        rc = walCtxLockAndRead(&c, timeout_ms);
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "apply");
        return rc;
    }
    rc = applyLocked(&c, txn, sync);
    walCtxUnlockWrite(&c);
    return rc;
}

int tpdbVfsStageBegin(sqlite3 *conn,
                      uint32_t page_size,
                      unsigned timeout_ms,
                      struct tpdb_vfs_stage **out,
                      char *errmsg)
{
    struct tpdb_vfs_stage *st;
    int64_t size = 0;
    int rc;
    *out = NULL;
    if (conn == NULL || !sqlite3_get_autocommit(conn) ||
        !pageSizeValid(page_size)) {
        tpdbErrf(errmsg, "stage: bad connection or page size %u", page_size);
        return TPDB_MISUSE;
    }
    st = tpdb_calloc(1, sizeof *st);
    if (st == NULL || (st->last = tpdb_malloc(page_size)) == NULL) {
        tpdb_free(st);
        tpdbErrf(errmsg, "stage: out of memory");
        return TPDB_NOMEM;
    }
    st->c.conn = conn;
    st->c.errmsg = errmsg;
    st->page_size = page_size;
    rc = walCtxOpenMain(&st->c, &size);
    if (rc == TPDB_OK && size == 0) {
        tpdbErrf(errmsg, "the main file is empty: initialise it first");
        rc = TPDB_INVALID;
    }
    if (rc == TPDB_OK) {
        rc = walCtxOpenWal(&st->c);
    }
    if (rc == TPDB_OK) {
        rc = walCtxLockAndRead(&st->c, timeout_ms);
        if (rc == TPDB_OK) {
            rc = prepareLocked(&st->c, page_size);
            if (rc != TPDB_OK) {
                walCtxUnlockWrite(&st->c);
            }
        }
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "stage");
        tpdb_free(st->last);
        tpdb_free(st);
        return rc;
    }
    *out = st;
    return TPDB_OK;
}

int tpdbVfsStageAppend(struct tpdb_vfs_stage *st,
                       const struct tpdb_page *pages,
                       uint32_t n,
                       char *errmsg)
{
    st->c.errmsg = errmsg;
    if (n == 0) {
        return TPDB_OK;
    }
    if ((uint64_t)st->c.h.mx_frame + st->n + n + 1 > UINT32_MAX / 2) {
        tpdbErrf(errmsg, "stage: too many frames");
        return TPDB_TOOBIG;
    }
    if (st->n + n > st->cap) {
        uint32_t cap = st->cap ? st->cap : 1024;
        while (cap < st->n + n) {
            cap *= 2;
        }
        uint32_t *p = tpdb_realloc(st->pgnos, sizeof *p * cap);
        if (p == NULL) {
            tpdbErrf(errmsg, "stage: out of memory");
            return TPDB_NOMEM;
        }
        st->pgnos = p;
        st->cap = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (pages[i].pgno == 0 || pages[i].data == NULL) {
            tpdbErrf(errmsg, "stage: page %u is invalid", pages[i].pgno);
            return TPDB_INVALID;
        }
    }
    int rc = writeFrames(&st->c, st->page_size, st->c.h.mx_frame + st->n, pages,
                         n, 0);
    if (rc != TPDB_OK) {
        return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        st->pgnos[st->n++] = pages[i].pgno;
    }
    memcpy(st->last, pages[n - 1].data, st->page_size);
    return TPDB_OK;
}

uint32_t tpdbVfsStageFrames(const struct tpdb_vfs_stage *st)
{
    return st->n;
}

static void stageFree(struct tpdb_vfs_stage *st)
{
    tpdb_free(st->pgnos);
    tpdb_free(st->last);
    tpdb_free(st);
}

/* The commit frame, the sync and the index; the caller publishes. */
static int stageFinish(struct tpdb_vfs_stage *st, uint32_t db_pages, int sync)
{
    struct walCtx *c = &st->c;
    struct tpdb_page last = {st->pgnos[st->n - 1], st->last};
    uint32_t mapped = UINT32_MAX;
    uint8_t *region = NULL;
    int rc = writeFrames(c, st->page_size, c->h.mx_frame + st->n, &last, 1,
                         db_pages);
    if (rc == TPDB_OK && sync) {
        rc = syncWal(c);
    }
    for (uint32_t i = 0; rc == TPDB_OK && i < st->n; i++) {
        rc = indexFrame(c, c->h.mx_frame + 1 + i, st->pgnos[i], &mapped,
                        &region);
    }
    if (rc == TPDB_OK) {
        rc = indexFrame(c, c->h.mx_frame + st->n + 1, last.pgno, &mapped,
                        &region);
    }
    return rc;
}

int tpdbVfsStageCommit(struct tpdb_vfs_stage *st,
                       uint32_t db_pages,
                       int sync,
                       char *errmsg)
{
    int rc;
    st->c.errmsg = errmsg;
    if (st->n == 0 || db_pages == 0) {
        tpdbErrf(errmsg, "stage: nothing staged or database size 0");
        rc = TPDB_INVALID;
    } else {
        rc = stageFinish(st, db_pages, sync);
    }
    if (rc == TPDB_OK) {
        st->c.h.mx_frame += st->n + 1;
        st->c.h.n_page = db_pages;
        walCtxPublish(&st->c);
    }
    walCtxUnlockWrite(&st->c);
    stageFree(st);
    return rc;
}

void tpdbVfsStageAbort(struct tpdb_vfs_stage *st)
{
    if (st != NULL) {
        walCtxUnlockWrite(&st->c);
        stageFree(st);
    }
}
