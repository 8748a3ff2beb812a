/*
 * Follower apply: appends a replicated transaction to a database's real WAL
 * and keeps the real WAL-index in step, so every reader in any process sees
 * it on its next read. Under the WAL write lock: check both WAL-index header
 * copies (a read on the connection repairs a bad index), restart a fully
 * checkpointed WAL if no reader uses it, append checksummed frames, sync,
 * index them, publish copy 1, barrier, copy 0. Nothing is published unless
 * every earlier step succeeded; a crash before publication leaves frames
 * that WAL recovery brings back, which is right since Raft committed them.
 */
#include <string.h>
#include <time.h>

#include "vfs/vfsint.h"
#include "vfs/walindex.h"

#define APPLY_REPAIR_TRIES 5
#define APPLY_WRITE_MAX (64 * 1024)

struct applyCtx {
    sqlite3 *conn;
    const struct tpdb_txn *txn;
    sqlite3_file *db;  /* the unix main file */
    sqlite3_file *wal; /* the unix WAL file */
    uint8_t *region0;  /* shm region 0 */
    struct walIndexHdr h;
    char *errmsg;
};

static int ioCode(int rc)
{
    return rc == SQLITE_FULL ? TPDB_FULL
                             : (rc == SQLITE_NOMEM ? TPDB_NOMEM : TPDB_IOERR);
}

static int txnCheck(const struct tpdb_txn *txn, char *errmsg)
{
    uint32_t ps = txn->page_size;
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) {
        tpdbErrf(errmsg, "apply: invalid page size %u", ps);
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

/* A read on the connection: opens its WAL and repairs the WAL-index. Its
 * result does not matter, only its side effects. */
static void connRead(sqlite3 *conn)
{
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

/* An empty main file gets page 1 so that SQLite sees a WAL database. */
static int initMain(struct applyCtx *c)
{
    const struct tpdb_page *p1 = &c->txn->pages[0];
    int rc;
    if (p1->pgno != 1) {
        tpdbErrf(c->errmsg,
                 "apply: database is empty and the transaction "
                 "has no page 1");
        return TPDB_INVALID;
    }
    rc = c->db->pMethods->xWrite(c->db, p1->data, (int)c->txn->page_size, 0);
    if (rc == SQLITE_OK) {
        rc = c->db->pMethods->xSync(c->db, SQLITE_SYNC_NORMAL);
    }
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg,
                 "apply: write page 1 to the empty database: "
                 "error %d",
                 rc);
        return ioCode(rc);
    }
    connRead(c->conn);
    return TPDB_OK;
}

static int openFiles(struct applyCtx *c)
{
    struct vfsFile *mf =
        connFile(c->conn, SQLITE_FCNTL_FILE_POINTER, VFS_FILE_MAIN);
    struct vfsFile *wal;
    sqlite3_int64 size = 0;
    int rc;
    if (mf == NULL) {
        tpdbErrf(c->errmsg, "apply: connection is not on the tpdb VFS");
        return TPDB_INVALID;
    }
    c->db = mf->real;
    rc = c->db->pMethods->xFileSize(c->db, &size);
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg, "apply: size of main file: error %d", rc);
        return ioCode(rc);
    }
    if (size == 0) {
        rc = initMain(c);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    wal = connFile(c->conn, SQLITE_FCNTL_JOURNAL_POINTER, VFS_FILE_WAL);
    if (wal == NULL) {
        connRead(c->conn);
        wal = connFile(c->conn, SQLITE_FCNTL_JOURNAL_POINTER, VFS_FILE_WAL);
    }
    if (wal == NULL) {
        tpdbErrf(c->errmsg, "apply: database is not in WAL mode");
        return TPDB_INVALID;
    }
    c->wal = wal->real;
    return TPDB_OK;
}

static void sleepBriefly(void)
{
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, NULL);
}

static int lockWrite(struct applyCtx *c, uint64_t deadline)
{
    for (;;) {
        int rc = c->db->pMethods->xShmLock(
            c->db, WALI_LOCK_WRITE, 1, SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
        if (rc == SQLITE_OK) {
            return TPDB_OK;
        }
        if (rc != SQLITE_BUSY) {
            tpdbErrf(c->errmsg, "apply: take WAL write lock: error %d", rc);
            return ioCode(rc);
        }
        if (tpdbNowMs() >= deadline) {
            tpdbErrf(c->errmsg, "apply: WAL write lock busy");
            return TPDB_BUSY;
        }
        sleepBriefly();
    }
}

static void unlockWrite(struct applyCtx *c)
{
    c->db->pMethods->xShmLock(c->db, WALI_LOCK_WRITE, 1,
                              SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

static int mapRegion(struct applyCtx *c, uint32_t region, uint8_t **out)
{
    void volatile *p = NULL;
    int rc =
        c->db->pMethods->xShmMap(c->db, (int)region, WALI_REGION_SIZE, 1, &p);
    if (rc != SQLITE_OK || p == NULL) {
        tpdbErrf(c->errmsg, "apply: map WAL-index region %u: error %d", region,
                 rc);
        return rc == SQLITE_OK ? TPDB_IOERR : ioCode(rc);
    }
    *out = (uint8_t *)p;
    return TPDB_OK;
}

/* Reads both header copies; 1 if they agree and are valid. */
static int readHdr(struct applyCtx *c)
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

/* Takes the write lock with a valid WAL-index header read under it. */
static int lockAndRead(struct applyCtx *c, unsigned timeout_ms)
{
    uint64_t deadline = tpdbNowMs() + timeout_ms;
    for (int tries = 0;; tries++) {
        int rc = lockWrite(c, deadline);
        if (rc != TPDB_OK) {
            return rc;
        }
        rc = mapRegion(c, 0, &c->region0);
        if (rc != TPDB_OK) {
            unlockWrite(c);
            return rc;
        }
        if (readHdr(c)) {
            return TPDB_OK;
        }
        unlockWrite(c);
        if (tries + 1 >= APPLY_REPAIR_TRIES) {
            tpdbErrf(c->errmsg, "apply: WAL-index header stays invalid");
            return TPDB_CORRUPT;
        }
        connRead(c->conn);
    }
}

static void publishHdr(struct applyCtx *c)
{
    uint8_t buf[WALI_HDR_SIZE];
    c->h.change++;
    walIndexHdrEncode(&c->h, buf);
    c->db->pMethods->xShmBarrier(c->db);
    memcpy(c->region0 + WALI_HDR_SIZE, buf, WALI_HDR_SIZE);
    c->db->pMethods->xShmBarrier(c->db);
    memcpy(c->region0, buf, WALI_HDR_SIZE);
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
static void maybeRestart(struct applyCtx *c)
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
    publishHdr(c);
    walShmPut32(ck + WALI_NBACKFILL, 0);
    walShmPut32(ck + WALI_NBACKFILL_ATTEMPTED, 0);
    walShmPut32(ck + WALI_READMARK + 4, 0);
    for (int i = 2; i < 5; i++) {
        walShmPut32(ck + WALI_READMARK + 4 * i, WALI_READMARK_NOT_USED);
    }
    c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(1), 4,
                              SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

/* Page size of the database as its file's header names it. */
static int checkPageSize(struct applyCtx *c)
{
    uint32_t ps = c->h.page_size;
    uint8_t b[2];
    if (c->h.mx_frame == 0) {
        int rc = c->db->pMethods->xRead(c->db, b, 2, 16);
        if (rc != SQLITE_OK) {
            tpdbErrf(c->errmsg, "apply: read database header: error %d", rc);
            return ioCode(rc);
        }
        ps = (uint32_t)(b[0] << 8 | b[1]);
        ps = ps == 1 ? 65536 : ps;
    }
    if (ps != c->txn->page_size) {
        tpdbErrf(c->errmsg,
                 "apply: page size %u does not match the database's %u",
                 c->txn->page_size, ps);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

/* Writes a WAL header for an empty WAL, starting a new checksum chain. */
static int writeWalHdr(struct applyCtx *c)
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
    newSalts(c->h.salt);
    walHdrEncode(hdr, c->txn->page_size, seq, c->h.salt, c->h.frame_cksum);
    rc = c->wal->pMethods->xWrite(c->wal, hdr, WAL_HDR_SIZE, 0);
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg, "apply: write WAL header: error %d", rc);
        return ioCode(rc);
    }
    c->h.big_end_cksum = (uint8_t)walHostBigEndian();
    c->h.page_size = c->txn->page_size;
    return TPDB_OK;
}

/* Encodes frame i of the transaction into buf, continuing the checksum. */
static void encodeFrame(struct applyCtx *c, uint32_t i, uint8_t *buf)
{
    const struct tpdb_txn *txn = c->txn;
    int big = c->h.big_end_cksum;
    tpdbPutBe32(buf, txn->pages[i].pgno);
    tpdbPutBe32(buf + 4, i + 1 == txn->n_pages ? txn->db_pages : 0);
    memcpy(buf + 8, c->h.salt, 8);
    memcpy(buf + WAL_FRAME_HDR_SIZE, txn->pages[i].data, txn->page_size);
    walChecksum(big, buf, 8, c->h.frame_cksum);
    walChecksum(big, buf + WAL_FRAME_HDR_SIZE, txn->page_size,
                c->h.frame_cksum);
    tpdbPutBe32(buf + 16, c->h.frame_cksum[0]);
    tpdbPutBe32(buf + 20, c->h.frame_cksum[1]);
}

/* Appends every page as a frame after mx_frame, several frames per write
 * but never more than APPLY_WRITE_MAX bytes (the unix VFS fails single
 * writes over 128 KiB). Updates c->h.frame_cksum but not mx_frame. */
static int writeFrames(struct applyCtx *c)
{
    const struct tpdb_txn *txn = c->txn;
    size_t frame_size = WAL_FRAME_HDR_SIZE + (size_t)txn->page_size;
    uint32_t per_write = (uint32_t)(APPLY_WRITE_MAX / frame_size);
    per_write = per_write == 0 ? 1 : per_write;
    uint8_t *buf = tpdb_malloc(frame_size * per_write);
    int rc = TPDB_OK;
    if (buf == NULL) {
        tpdbErrf(c->errmsg, "apply: out of memory");
        return TPDB_NOMEM;
    }
    for (uint32_t i = 0; i < txn->n_pages && rc == TPDB_OK;) {
        uint32_t first = c->h.mx_frame + 1 + i;
        uint32_t n =
            txn->n_pages - i < per_write ? txn->n_pages - i : per_write;
        for (uint32_t j = 0; j < n; j++) {
            encodeFrame(c, i + j, buf + j * frame_size);
        }
        int wrc =
            c->wal->pMethods->xWrite(c->wal, buf, (int)(n * frame_size),
                                     walFrameOffset(first, txn->page_size));
        if (wrc != SQLITE_OK) {
            tpdbErrf(c->errmsg,
                     "apply: write frames %u-%u (pages %u-%u): error %d", first,
                     first + n - 1, txn->pages[i].pgno,
                     txn->pages[i + n - 1].pgno, wrc);
            rc = ioCode(wrc);
        }
        i += n;
    }
    tpdb_free(buf);
    return rc;
}

/* Adds the appended frames to the WAL-index hash tables. */
static int indexFrames(struct applyCtx *c)
{
    uint32_t mapped = UINT32_MAX;
    uint8_t *region = NULL;
    for (uint32_t i = 0; i < c->txn->n_pages; i++) {
        uint32_t frame = c->h.mx_frame + 1 + i;
        uint32_t block = walIndexBlock(frame);
        if (block != mapped) {
            int rc = mapRegion(c, block, &region);
            if (rc != TPDB_OK) {
                return rc;
            }
            mapped = block;
        }
        if (walIndexAdd(region, frame, c->txn->pages[i].pgno) != 0) {
            tpdbErrf(c->errmsg, "apply: WAL-index hash table %u is full",
                     block);
            return TPDB_CORRUPT;
        }
    }
    return TPDB_OK;
}

/* Everything done under the write lock after the header was read. */
static int applyLocked(struct applyCtx *c, int sync)
{
    int rc;
    maybeRestart(c);
    rc = checkPageSize(c);
    if (rc == TPDB_OK && c->h.mx_frame == 0) {
        rc = writeWalHdr(c);
    }
    if (rc == TPDB_OK) {
        rc = writeFrames(c);
    }
    if (rc == TPDB_OK && sync) {
        int src = c->wal->pMethods->xSync(c->wal, SQLITE_SYNC_NORMAL);
        if (src != SQLITE_OK) {
            tpdbErrf(c->errmsg, "apply: sync WAL: error %d", src);
            rc = ioCode(src);
        }
    }
    if (rc == TPDB_OK) {
        rc = indexFrames(c);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    c->h.mx_frame += c->txn->n_pages;
    c->h.n_page = c->txn->db_pages;
    publishHdr(c);
    return TPDB_OK;
}

int tpdbVfsApply(sqlite3 *conn,
                 const struct tpdb_txn *txn,
                 int sync,
                 unsigned timeout_ms,
                 char *errmsg)
{
    struct applyCtx c = {.conn = conn, .txn = txn, .errmsg = errmsg};
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
        rc = openFiles(&c);
    }
    if (rc == TPDB_OK) {
        rc = lockAndRead(&c, timeout_ms);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = applyLocked(&c, sync);
    unlockWrite(&c);
    return rc;
}
