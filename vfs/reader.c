/*
 * Snapshot reader: reads every page of a database as of one committed
 * state while writers go on, for streaming a database to a peer.
 *
 * Pinning, under the WAL write lock for a moment: read the WAL-index header
 * (the last commit's frame M and size), then hold a WAL read-lock slot whose
 * read mark is M, exactly as a SQLite reader does. While it is held no
 * checkpoint copies frames past M into the main file and no writer
 * restarts the WAL, so "the main file overlaid with the newest frame <= M
 * of each page" stays that state. The write lock is released at once; the
 * read lock is held until close. Memory: 4 bytes per database page (the
 * newest frame of each page), plus what the caller reads into.
 */
#include <string.h>

#include "vfs/vfsint.h"
#include "vfs/walfile.h"

#define READER_READ_MAX (64 * 1024)

struct tpdb_vfs_reader {
    struct walCtx c;
    int slot; /* read-lock slot held (1..4) */
    uint32_t page_size;
    uint32_t n_pages;
    uint32_t mx_frame;
    uint32_t *latest; /* newest frame <= mx_frame per page, 0: main file */
};

/* Takes read-lock slot i shared if its mark is (or can be set to) m. */
static int tryReadSlot(struct walCtx *c, int i, uint32_t m, int set)
{
    uint8_t *mark = c->region0 + WALI_READMARK + 4 * i;
    if (set) {
        if (c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(i), 1,
                                      SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE) !=
            SQLITE_OK) {
            return 0;
        }
        walShmPut32(mark, m);
        c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(i), 1,
                                  SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
    } else if (walShmGet32(mark) != m) {
        return 0;
    }
    if (c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(i), 1,
                                  SQLITE_SHM_LOCK | SQLITE_SHM_SHARED) !=
        SQLITE_OK) {
        return 0;
    }
    c->db->pMethods->xShmBarrier(c->db);
    if (walShmGet32(mark) != m) {
        /* Changed between the exclusive and the shared lock. */
        c->db->pMethods->xShmLock(c->db, WALI_LOCK_READ(i), 1,
                                  SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED);
        return 0;
    }
    return 1;
}

/* Holds a read slot with mark mx_frame; returns the slot or 0. */
static int holdReadSlot(struct walCtx *c, uint32_t m)
{
    for (int set = 0; set < 2; set++) {
        for (int i = 1; i <= 4; i++) {
            if (tryReadSlot(c, i, m, set)) {
                return i;
            }
        }
    }
    return 0;
}

/* Page size and size in pages of the state pinned in r->c.h. */
static int readGeometry(struct tpdb_vfs_reader *r, int64_t main_size)
{
    struct walCtx *c = &r->c;
    uint8_t b[2];
    if (c->h.mx_frame > 0) {
        r->page_size = c->h.page_size;
        r->n_pages = c->h.n_page;
        return TPDB_OK;
    }
    if (main_size == 0) {
        r->page_size = 4096;
        r->n_pages = 0;
        return TPDB_OK;
    }
    int rc = c->db->pMethods->xRead(c->db, b, 2, 16);
    if (rc != SQLITE_OK) {
        tpdbErrf(c->errmsg, "read database header: error %d", rc);
        return walCtxIoCode(rc);
    }
    r->page_size = (uint32_t)(b[0] << 8 | b[1]);
    r->page_size = r->page_size == 1 ? 65536 : r->page_size;
    if (r->page_size < 512 || (r->page_size & (r->page_size - 1)) != 0) {
        tpdbErrf(c->errmsg, "database header names page size %u", r->page_size);
        return TPDB_CORRUPT;
    }
    r->n_pages = (uint32_t)(main_size / r->page_size);
    return TPDB_OK;
}

/* Records the newest frame <= mx_frame of every page, from the WAL-index
 * page-number arrays. */
static int mapFrames(struct tpdb_vfs_reader *r)
{
    r->latest = tpdb_calloc((size_t)r->n_pages + 1, sizeof *r->latest);
    if (r->latest == NULL) {
        tpdbErrf(r->c.errmsg, "out of memory");
        return TPDB_NOMEM;
    }
    uint8_t *region = NULL;
    uint32_t mapped = UINT32_MAX;
    for (uint32_t f = 1; f <= r->mx_frame; f++) {
        uint32_t block = walIndexBlock(f);
        if (block != mapped) {
            int rc = walCtxMapRegion(&r->c, block, &region);
            if (rc != TPDB_OK) {
                return rc;
            }
            mapped = block;
        }
        const uint8_t *pgnos = region + (block == 0 ? WALI_HEADER_BYTES : 0);
        uint32_t pgno =
            walShmGet32(pgnos + 4 * (size_t)(f - walIndexBlockZero(block) - 1));
        if (pgno >= 1 && pgno <= r->n_pages) {
            r->latest[pgno] = f;
        }
    }
    return TPDB_OK;
}

/* Under the write lock: the geometry, a read slot, the caller's hook. */
static int pinLocked(struct tpdb_vfs_reader *r,
                     int64_t main_size,
                     int (*pinned)(void *arg, char *errmsg),
                     void *arg)
{
    int rc = readGeometry(r, main_size);
    if (rc != TPDB_OK) {
        return rc;
    }
    r->mx_frame = r->c.h.mx_frame;
    r->slot = holdReadSlot(&r->c, r->mx_frame);
    if (r->slot == 0) {
        tpdbErrf(r->c.errmsg, "every WAL read-lock slot is busy");
        return TPDB_BUSY;
    }
    rc = pinned != NULL ? pinned(arg, r->c.errmsg) : TPDB_OK;
    if (rc != TPDB_OK) {
        r->c.db->pMethods->xShmLock(r->c.db, WALI_LOCK_READ(r->slot), 1,
                                    SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED);
        r->slot = 0;
    }
    return rc;
}

int tpdbVfsReaderOpen(sqlite3 *conn,
                      unsigned timeout_ms,
                      int (*pinned)(void *arg, char *errmsg),
                      void *arg,
                      struct tpdb_vfs_reader **out,
                      char *errmsg)
{
    struct tpdb_vfs_reader *r = tpdb_calloc(1, sizeof *r);
    int64_t size = 0;
    int rc;
    *out = NULL;
    if (r == NULL) {
        tpdbErrf(errmsg, "reader: out of memory");
        return TPDB_NOMEM;
    }
    r->c.conn = conn;
    r->c.errmsg = errmsg;
    rc = walCtxOpenMain(&r->c, &size);
    if (rc == TPDB_OK) {
        rc = walCtxOpenWal(&r->c);
    }
    if (rc == TPDB_OK) {
        rc = walCtxLockAndRead(&r->c, timeout_ms);
        if (rc == TPDB_OK) {
            /* The size of the main file as of the pin. */
            sqlite3_int64 sz = 0;
            if (r->c.db->pMethods->xFileSize(r->c.db, &sz) == SQLITE_OK) {
                size = sz;
            }
            rc = pinLocked(r, size, pinned, arg);
            walCtxUnlockWrite(&r->c);
        }
    }
    if (rc == TPDB_OK) {
        rc = mapFrames(r);
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "reader");
        tpdbVfsReaderClose(r);
        return rc;
    }
    *out = r;
    return TPDB_OK;
}

uint32_t tpdbVfsReaderPageSize(const struct tpdb_vfs_reader *r)
{
    return r->page_size;
}

uint32_t tpdbVfsReaderPages(const struct tpdb_vfs_reader *r)
{
    return r->n_pages;
}

/* Reads pages [first, first + n) from the main file; zeros past its end. */
static int readMain(struct tpdb_vfs_reader *r,
                    uint32_t first,
                    uint32_t n,
                    uint8_t *buf)
{
    size_t total = (size_t)n * r->page_size;
    for (size_t off = 0; off < total; off += READER_READ_MAX) {
        size_t len =
            total - off < READER_READ_MAX ? total - off : READER_READ_MAX;
        int64_t at = (int64_t)(first - 1) * r->page_size + (int64_t)off;
        int rc = r->c.db->pMethods->xRead(r->c.db, buf + off, (int)len, at);
        if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) {
            tpdbErrf(r->c.errmsg, "read main file at %lld: error %d",
                     (long long)at, rc);
            return walCtxIoCode(rc);
        }
    }
    return TPDB_OK;
}

int tpdbVfsReaderRead(struct tpdb_vfs_reader *r,
                      uint32_t first,
                      uint32_t n,
                      uint8_t *buf,
                      char *errmsg)
{
    r->c.errmsg = errmsg;
    if (first == 0 || n == 0 || (uint64_t)first + n - 1 > r->n_pages) {
        tpdbErrf(errmsg, "reader: pages %u+%u outside 1..%u", first, n,
                 r->n_pages);
        return TPDB_INVALID;
    }
    int rc = readMain(r, first, n, buf);
    for (uint32_t i = 0; rc == TPDB_OK && i < n; i++) {
        uint32_t f = r->latest[first + i];
        if (f == 0) {
            continue;
        }
        int64_t at = walFrameOffset(f, r->page_size) + WAL_FRAME_HDR_SIZE;
        int src = r->c.wal->pMethods->xRead(
            r->c.wal, buf + (size_t)i * r->page_size, (int)r->page_size, at);
        if (src != SQLITE_OK) {
            tpdbErrf(errmsg, "reader: read frame %u (page %u): error %d", f,
                     first + i, src);
            rc = walCtxIoCode(src);
        }
    }
    return rc;
}

void tpdbVfsReaderClose(struct tpdb_vfs_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->slot != 0) {
        r->c.db->pMethods->xShmLock(r->c.db, WALI_LOCK_READ(r->slot), 1,
                                    SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED);
    }
    tpdb_free(r->latest);
    tpdb_free(r);
}
