/*
 * Leader capture: turns the WAL writes of a write-lock session (shm slot 0
 * held by a replicated connection) into one struct tpdb_txn for
 * hooks->commit. The first commit-marked frame header is held back; on its
 * page-data write the transaction (each page's highest frame up to the
 * commit frame, pages past the new size dropped) goes to hooks->commit, and
 * only on success do header and data reach the file. On failure the write
 * fails with an IOERR-class code: SQLite rolls back and no checksummed
 * commit frame exists for crash recovery to bring back.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vfs/vfsint.h"
#include "vfs/walindex.h"

static _Thread_local char lastError[TPDB_ERRMSG_SIZE];

const char *tpdbVfsLastError(void)
{
    return lastError;
}

void captureSetError(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lastError, sizeof lastError, fmt, ap);
    va_end(ap);
}

static void sessionReset(struct vfsSession *s)
{
    s->active = 0;
    s->owner = NULL;
    s->checked = 0;
    s->committed = 0;
    s->page_size = 0;
    s->base = 0;
    s->n = 0;
    s->held = 0;
    s->held_frame = 0;
}

void captureFree(struct vfsSession *s)
{
    tpdb_free(s->pgnos);
    s->pgnos = NULL;
    s->cap = 0;
    sessionReset(s);
}

void captureBegin(struct vfsFile *f)
{
    struct vfsSession *s = &f->db->session;
    sessionReset(s);
    s->active = 1;
    s->owner = f;
}

int captureDetach(struct vfsFile *f)
{
    struct vfsSession *s;
    int committed;
    if (f->db == NULL) {
        return -1;
    }
    s = &f->db->session;
    if (!s->active || s->owner != f) {
        return -1;
    }
    committed = s->committed;
    sessionReset(s);
    return committed;
}

void captureNotifyEnd(struct vfsFile *f, int committed)
{
    if (committed >= 0 && f->hooks.txn_end != NULL) {
        f->hooks.txn_end(f->hooks.arg, f->handle, committed);
    }
}

/* Records that `frame` holds `pgno`. Returns an SQLITE_* code. */
static int sessionTrack(struct vfsSession *s, uint32_t frame, uint32_t pgno)
{
    if (s->n == 0 || frame < s->base) {
        /* First frame, or a WAL restart moved frames back: start over. */
        s->base = frame;
        s->n = 0;
    }
    uint32_t i = frame - s->base;
    if (i >= s->cap) {
        uint32_t cap = s->cap == 0 ? 256 : s->cap;
        while (cap <= i) {
            cap *= 2;
        }
        uint32_t *p = tpdb_realloc(s->pgnos, (size_t)cap * sizeof *p);
        if (p == NULL) {
            captureSetError("capture: out of memory tracking frame %u", frame);
            return TPDB_SQLITE_REPLFAIL;
        }
        s->pgnos = p;
        s->cap = cap;
    }
    while (s->n < i) {
        s->pgnos[s->n++] = 0; /* a gap: never written in this session */
    }
    s->pgnos[i] = pgno;
    if (i >= s->n) {
        s->n = i + 1;
    }
    return SQLITE_OK;
}

/* Learns the WAL's page size from its header on disk. */
static int sessionPageSize(struct vfsSession *s, struct vfsFile *wal)
{
    uint8_t hdr[WAL_HDR_SIZE];
    int rc;
    if (s->page_size != 0) {
        return SQLITE_OK;
    }
    rc = wal->real->pMethods->xRead(wal->real, hdr, sizeof hdr, 0);
    if (rc != SQLITE_OK) {
        captureSetError("capture: read WAL header: error %d", rc);
        return rc;
    }
    s->page_size = walHdrPageSize(hdr);
    if (s->page_size == 0) {
        captureSetError("capture: WAL header has no valid page size");
        return SQLITE_IOERR_READ;
    }
    return SQLITE_OK;
}

/* Maps a TPDB_* failure of a hook to the SQLite code COMMIT fails with. */
static int hookCode(int rc)
{
    switch (rc) {
        case TPDB_UNKNOWN:
            return TPDB_SQLITE_UNKNOWN;
        case TPDB_NOTLEADER:
        case TPDB_READONLY:
            return TPDB_SQLITE_NOTLEADER;
        case TPDB_FULL:
            return SQLITE_FULL;
        default:
            return TPDB_SQLITE_REPLFAIL;
    }
}

static int writeCheck(struct vfsSession *s)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct vfsFile *owner = s->owner;
    int rc;
    if (s->checked) {
        return SQLITE_OK;
    }
    if (owner->hooks.write_check != NULL) {
        rc = owner->hooks.write_check(owner->hooks.arg, owner->handle, errmsg);
        if (rc != TPDB_OK) {
            captureSetError("write refused: %s",
                            errmsg[0] ? errmsg : tpdb_strerror(rc));
            return rc == TPDB_UNKNOWN ? TPDB_SQLITE_REPLFAIL : hookCode(rc);
        }
    }
    s->checked = 1;
    return SQLITE_OK;
}

struct pageRef {
    uint32_t pgno;
    uint32_t frame;
};

static int pageRefCmp(const void *a, const void *b)
{
    const struct pageRef *x = a, *y = b;
    if (x->pgno != y->pgno) {
        return x->pgno < y->pgno ? -1 : 1;
    }
    /* Highest frame first, so the first entry per page is the newest. */
    return x->frame > y->frame ? -1 : (x->frame < y->frame ? 1 : 0);
}

/* Lists, sorted by page, the newest frame of every page of the session up
 * to and including the commit frame, dropping pages past db_pages. Returns
 * the number of entries in *out (owned by the caller) or -1 on OOM. */
static long collectPages(struct vfsSession *s,
                         uint32_t commit_pgno,
                         uint32_t db_pages,
                         struct pageRef **out)
{
    uint32_t last = s->held_frame;
    uint32_t n_in = last >= s->base ? last - s->base : 0;
    struct pageRef *refs;
    long n = 0, m = 0;
    if (n_in > s->n) {
        n_in = s->n;
    }
    refs = tpdb_malloc(((size_t)n_in + 1) * sizeof *refs);
    if (refs == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < n_in; i++) {
        if (s->pgnos[i] != 0 && s->pgnos[i] <= db_pages) {
            refs[n++] = (struct pageRef){s->pgnos[i], s->base + i};
        }
    }
    if (commit_pgno <= db_pages) {
        refs[n++] = (struct pageRef){commit_pgno, last};
    }
    qsort(refs, (size_t)n, sizeof *refs, pageRefCmp);
    for (long i = 0; i < n; i++) {
        if (m == 0 || refs[m - 1].pgno != refs[i].pgno) {
            refs[m++] = refs[i];
        }
    }
    *out = refs;
    return m;
}

/* Fills pages[0..n) from refs: the commit frame's page is `data`, the
 * others are read back from the WAL into `images`. */
static int readImages(struct vfsSession *s,
                      struct vfsFile *wal,
                      const struct pageRef *refs,
                      long n,
                      const uint8_t *data,
                      struct tpdb_page *pages,
                      uint8_t *images)
{
    uint32_t page_size = s->page_size;
    for (long i = 0; i < n; i++) {
        pages[i].pgno = refs[i].pgno;
        if (refs[i].frame == s->held_frame) {
            pages[i].data = data;
            continue;
        }
        uint8_t *img = images + (size_t)i * page_size;
        int rc = wal->real->pMethods->xRead(
            wal->real, img, (int)page_size,
            walFrameOffset(refs[i].frame, page_size) + WAL_FRAME_HDR_SIZE);
        if (rc != SQLITE_OK) {
            captureSetError("capture: read frame %u (page %u): error %d",
                            refs[i].frame, refs[i].pgno, rc);
            return rc;
        }
        pages[i].data = img;
    }
    return SQLITE_OK;
}

/* Hands the transaction to hooks->commit_part in parts of at most
 * TPDB_VFS_PART_PAGES pages, each read back from the WAL into one buffer:
 * memory stays bounded whatever the transaction's size. */
static int commitParts(struct vfsSession *s,
                       struct vfsFile *wal,
                       const uint8_t *data,
                       const struct pageRef *refs,
                       long n,
                       uint32_t db_pages)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct vfsFile *owner = s->owner;
    struct tpdb_page *pages = tpdb_malloc(TPDB_VFS_PART_PAGES * sizeof *pages);
    uint8_t *images = tpdb_malloc((size_t)TPDB_VFS_PART_PAGES * s->page_size);
    int rc = pages != NULL && images != NULL ? SQLITE_OK : SQLITE_NOMEM;
    if (rc != SQLITE_OK) {
        captureSetError("capture: out of memory for a part");
        rc = TPDB_SQLITE_REPLFAIL;
    }
    for (long off = 0; rc == SQLITE_OK && off < n; off += TPDB_VFS_PART_PAGES) {
        long k = n - off < TPDB_VFS_PART_PAGES ? n - off : TPDB_VFS_PART_PAGES;
        rc = readImages(s, wal, refs + off, k, data, pages, images);
        if (rc != SQLITE_OK) {
            break;
        }
        struct tpdb_txn part = {s->page_size, db_pages, (uint32_t)k, pages};
        int hrc = owner->hooks.commit_part(owner->hooks.arg, owner->handle,
                                           &part, off + k == n, errmsg);
        if (hrc != TPDB_OK) {
            captureSetError("commit failed: %s",
                            errmsg[0] ? errmsg : tpdb_strerror(hrc));
            rc = hookCode(hrc);
        }
    }
    tpdb_free(images);
    tpdb_free(pages);
    return rc;
}

/* Builds the session's transaction, the commit frame's data being `data`,
 * and hands it to hooks->commit (or, when large, to commit_part in parts).
 * Returns an SQLITE_* code. */
static int commitTxn(struct vfsSession *s,
                     struct vfsFile *wal,
                     const uint8_t *data)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct vfsFile *owner = s->owner;
    uint32_t page_size = s->page_size;
    uint32_t db_pages = tpdbGetBe32(s->held_hdr + 4);
    struct pageRef *refs = NULL;
    struct tpdb_page *pages = NULL;
    uint8_t *images = NULL;
    long n;
    int rc = TPDB_SQLITE_REPLFAIL;

    n = collectPages(s, tpdbGetBe32(s->held_hdr), db_pages, &refs);
    if (n < 0) {
        captureSetError("capture: out of memory");
        goto err;
    }
    if (n > TPDB_VFS_PART_PAGES && owner->hooks.version >= 3 &&
        owner->hooks.commit_part != NULL) {
        rc = commitParts(s, wal, data, refs, n, db_pages);
        goto err;
    }
    pages = tpdb_malloc(((size_t)n + 1) * sizeof *pages);
    images = tpdb_malloc((size_t)(n + 1) * page_size);
    if (pages == NULL || images == NULL) {
        captureSetError("capture: out of memory for %ld pages", n);
        goto err;
    }
    rc = readImages(s, wal, refs, n, data, pages, images);
    if (rc != SQLITE_OK) {
        goto err;
    }
    struct tpdb_txn txn = {page_size, db_pages, (uint32_t)n, pages};
    rc = owner->hooks.commit(owner->hooks.arg, owner->handle, &txn, errmsg);
    if (rc != TPDB_OK) {
        captureSetError("commit failed: %s",
                        errmsg[0] ? errmsg : tpdb_strerror(rc));
        rc = hookCode(rc);
        goto err;
    }
    rc = SQLITE_OK;
err:
    tpdb_free(images);
    tpdb_free(pages);
    tpdb_free(refs);
    return rc;
}

/* Writes zeros where the held commit frame goes (header at ofst - 24), so
 * that the file system has allocated its blocks before the transaction is
 * replicated: once the quorum holds it, writing the frame cannot fail for
 * want of space. A zero header is no valid frame: recovery after a crash
 * here stops at the previous commit, and no reader looks past mxFrame. */
static int reserveCommitFrame(struct vfsFile *wal, int amt, sqlite3_int64 ofst)
{
    static const uint8_t zeros[WAL_FRAME_HDR_SIZE + 65536];
    sqlite3_file *r = wal->real;
    if (amt < 0 || (size_t)amt > sizeof zeros - WAL_FRAME_HDR_SIZE) {
        return SQLITE_OK;
    }
    int rc = r->pMethods->xWrite(r, zeros, WAL_FRAME_HDR_SIZE + amt,
                                 ofst - WAL_FRAME_HDR_SIZE);
    if (rc != SQLITE_OK) {
        captureSetError(
            "capture: cannot reserve the commit frame's %d bytes "
            "in the WAL (%s); nothing was replicated",
            WAL_FRAME_HDR_SIZE + amt,
            (rc & 0xff) == SQLITE_FULL ? "disk full" : sqlite3_errstr(rc));
    }
    return rc;
}

/* The page-data write of the held commit frame. */
static int commitFrame(struct vfsSession *s,
                       struct vfsFile *wal,
                       const void *buf,
                       int amt,
                       sqlite3_int64 ofst)
{
    sqlite3_file *r = wal->real;
    int rc;
    if (s->owner->hooks.commit != NULL) {
        rc = reserveCommitFrame(wal, amt, ofst);
        if (rc != SQLITE_OK) {
            s->held = 0;
            return rc;
        }
        rc = commitTxn(s, wal, buf);
        if (rc != SQLITE_OK) {
            /* Nothing of the frame was written; SQLite rolls back. */
            s->held = 0;
            return rc;
        }
    }
    s->held = 0;
    rc = r->pMethods->xWrite(r, s->held_hdr, WAL_FRAME_HDR_SIZE,
                             ofst - WAL_FRAME_HDR_SIZE);
    if (rc == SQLITE_OK) {
        rc = r->pMethods->xWrite(r, buf, amt, ofst);
    }
    if (rc != SQLITE_OK && s->owner->hooks.commit != NULL) {
        /* The cluster holds the transaction: it is not lost, but this
         * connection cannot publish it. Never report it as failed. */
        captureSetError(
            "capture: committed by the cluster, but writing "
            "commit frame %u locally failed (error %d); the "
            "node recovers the database from a peer",
            s->held_frame, rc);
        return TPDB_SQLITE_UNKNOWN;
    }
    if (rc != SQLITE_OK) {
        captureSetError("capture: write commit frame %u: error %d",
                        s->held_frame, rc);
        return rc;
    }
    s->committed = 1;
    return SQLITE_OK;
}

int captureSyncFailed(struct vfsFile *wal, int rc)
{
    struct vfsSession *s = &wal->db->session;
    if (!s->committed || s->owner == NULL || s->owner->hooks.commit == NULL) {
        return rc;
    }
    s->committed = 0;
    captureSetError(
        "capture: committed by the cluster, but syncing the WAL "
        "after commit frame %u failed locally (error %d); the "
        "node recovers the database from a peer",
        s->held_frame, rc);
    return TPDB_SQLITE_UNKNOWN;
}

/* A 24-byte frame header write at `frame`. */
static int frameHeader(struct vfsSession *s,
                       struct vfsFile *wal,
                       const uint8_t *hdr,
                       uint32_t frame,
                       sqlite3_int64 ofst)
{
    uint32_t pgno = tpdbGetBe32(hdr);
    int rc = sessionTrack(s, frame, pgno);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (tpdbGetBe32(hdr + 4) != 0 && !s->held) {
        memcpy(s->held_hdr, hdr, WAL_FRAME_HDR_SIZE);
        s->held = 1;
        s->held_frame = frame;
        return SQLITE_OK;
    }
    return wal->real->pMethods->xWrite(wal->real, hdr, WAL_FRAME_HDR_SIZE,
                                       ofst);
}

int captureWalWrite(struct vfsFile *wal,
                    const void *buf,
                    int amt,
                    sqlite3_int64 ofst)
{
    struct vfsSession *s = &wal->db->session;
    sqlite3_file *r = wal->real;
    int rc = writeCheck(s);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (s->committed) {
        /* Padding frames and checksum rewrites after the commit frame. */
        return r->pMethods->xWrite(r, buf, amt, ofst);
    }
    if (ofst < WAL_HDR_SIZE) {
        if (ofst == 0 && amt >= WAL_HDR_SIZE) {
            s->page_size = walHdrPageSize(buf);
        }
        return r->pMethods->xWrite(r, buf, amt, ofst);
    }
    rc = sessionPageSize(s, wal);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_int64 frame_size = WAL_FRAME_HDR_SIZE + (sqlite3_int64)s->page_size;
    sqlite3_int64 rel = ofst - WAL_HDR_SIZE;
    if (amt == WAL_FRAME_HDR_SIZE && rel % frame_size == 0) {
        return frameHeader(s, wal, buf, (uint32_t)(rel / frame_size) + 1, ofst);
    }
    rel -= WAL_FRAME_HDR_SIZE;
    if (s->held && amt == (int)s->page_size && rel % frame_size == 0 &&
        (uint32_t)(rel / frame_size) + 1 == s->held_frame) {
        return commitFrame(s, wal, buf, amt, ofst);
    }
    if (s->held) {
        /* SQLite always writes a frame's data right after its header. Any
         * other write here could let SQLite publish a commit that was never
         * replicated, so refuse it. */
        captureSetError(
            "capture: unexpected WAL write (%d bytes at %lld) "
            "while commit frame %u is held",
            amt, (long long)ofst, s->held_frame);
        s->held = 0;
        return TPDB_SQLITE_REPLFAIL;
    }
    return r->pMethods->xWrite(r, buf, amt, ofst);
}
