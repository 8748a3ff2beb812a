/*
 * Pager of the native TPDB page format: the 64-byte header, page reads (dirty
 * set, then committed WAL pages, then the file, then zeros), WAL replay on
 * open, the free list, statement undo, and the commit protocol (frames,
 * commit sentinel, fdatasync, checkpoint into the page file).
 *
 * Header: magic "TPANDADB" | version u32 | page_count u32 | free_head u32 |
 * 44 reserved. WAL: "TPANDAWL" | version 3 | 20 zero, then frames.
 * Our commit sentinel's image starts with "TPDBSNT1", page_count, free_head
 * and a CRC-32C of those 16 bytes; recovery adopts them (defect B5).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

static const char tfMagic[8] = {'T', 'P', 'A', 'N', 'D', 'A', 'D', 'B'};
static const char tfWalMagic[8] = {'T', 'P', 'A', 'N', 'D', 'A', 'W', 'L'};
static const char tfSntMagic[8] = {'T', 'P', 'D', 'B', 'S', 'N', 'T', '1'};

static long tfCrashFrames = -1;

void tpdb_file_test_crash_after_frames(long frames)
{
    tfCrashFrames = frames;
}

void tfCrashCheck(long nframes)
{
    if (tfCrashFrames >= 0 && nframes >= tfCrashFrames) {
        _exit(77);
    }
}

void tfSentinelEncode(const struct tpdb_file *f, uint8_t *snt)
{
    memset(snt, 0, TF_PAGE);
    memcpy(snt, tfSntMagic, 8);
    tpdbPut32(snt + 8, f->page_count);
    tpdbPut32(snt + 12, f->free_head);
    tpdbPut32(snt + 16, tpdbCrc32c(0, snt, 16));
}

/* ---- Page map ---------------------------------------------------------- */

static size_t tfMapSlot(const struct tfPageMap *m, uint32_t pgno)
{
    size_t i = (size_t)(pgno * 2654435761u) & (m->cap - 1);
    while (m->keys[i] != 0 && m->keys[i] != pgno) {
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

static int tfMapGrow(struct tfPageMap *m)
{
    size_t ncap = m->cap == 0 ? 64 : m->cap * 2;
    uint32_t *keys = tpdb_calloc(ncap, sizeof *keys);
    uint8_t **pages = tpdb_calloc(ncap, sizeof *pages);
    uint32_t *order = tpdb_calloc(ncap, sizeof *order);
    if (keys == NULL || pages == NULL || order == NULL) {
        tpdb_free(keys);
        tpdb_free(pages);
        tpdb_free(order);
        return TPDB_NOMEM;
    }
    struct tfPageMap nm = {keys, pages, ncap, order, 0};
    for (size_t i = 0; i < m->n; i++) {
        uint32_t pg = m->order[i];
        size_t s = tfMapSlot(&nm, pg);
        nm.keys[s] = pg;
        nm.pages[s] = m->pages[tfMapSlot(m, pg)];
        nm.order[nm.n++] = pg;
    }
    tpdb_free(m->keys);
    tpdb_free(m->pages);
    tpdb_free(m->order);
    *m = nm;
    return TPDB_OK;
}

uint8_t *tfMapGet(const struct tfPageMap *m, uint32_t pgno)
{
    if (m->cap == 0) {
        return NULL;
    }
    size_t s = tfMapSlot(m, pgno);
    return m->keys[s] == pgno ? m->pages[s] : NULL;
}

int tfMapPut(struct tfPageMap *m, uint32_t pgno, const uint8_t *img)
{
    uint8_t *cur = tfMapGet(m, pgno);
    if (cur != NULL) {
        memcpy(cur, img, TF_PAGE);
        return TPDB_OK;
    }
    if ((m->n + 1) * 2 > m->cap && tfMapGrow(m) != TPDB_OK) {
        return TPDB_NOMEM;
    }
    uint8_t *p = tpdb_malloc(TF_PAGE);
    if (p == NULL) {
        return TPDB_NOMEM;
    }
    memcpy(p, img, TF_PAGE);
    size_t s = tfMapSlot(m, pgno);
    m->keys[s] = pgno;
    m->pages[s] = p;
    m->order[m->n++] = pgno;
    return TPDB_OK;
}

/* Removes pgno: clears its slot and reinserts the rest of its probe
 * cluster, so linear probing stays correct without tombstones. */
void tfMapDel(struct tfPageMap *m, uint32_t pgno)
{
    if (tfMapGet(m, pgno) == NULL) {
        return;
    }
    size_t s = tfMapSlot(m, pgno);
    tpdb_free(m->pages[s]);
    m->keys[s] = 0;
    m->pages[s] = NULL;
    for (size_t i = (s + 1) & (m->cap - 1); m->keys[i] != 0;
         i = (i + 1) & (m->cap - 1)) {
        uint32_t k = m->keys[i];
        uint8_t *p = m->pages[i];
        m->keys[i] = 0;
        m->pages[i] = NULL;
        size_t t = tfMapSlot(m, k);
        m->keys[t] = k;
        m->pages[t] = p;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->order[i] != pgno) {
            m->order[n++] = m->order[i];
        }
    }
    m->n = n;
}

void tfMapClear(struct tfPageMap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        tpdb_free(m->pages[i]);
    }
    tpdb_free(m->keys);
    tpdb_free(m->pages);
    tpdb_free(m->order);
    memset(m, 0, sizeof *m);
}

/* ---- Low-level I/O ------------------------------------------------------ */

int tfPread(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return TPDB_IOERR;
        }
        if (r == 0) {
            break;
        }
        done += (size_t)r;
    }
    *got = done;
    return TPDB_OK;
}

int tfPwrite(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pwrite(fd, buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return errno == ENOSPC ? TPDB_FULL : TPDB_IOERR;
        }
        done += (size_t)r;
    }
    return TPDB_OK;
}

/* ---- Pages ---------------------------------------------------------------*/

int tfPageRead(struct tpdb_file *f, uint32_t pgno, uint8_t *buf)
{
    if (pgno == 0 || pgno > f->page_count) {
        tpdbErrf(f->errmsg, "%s: page %u out of range (page_count %u)", f->name,
                 pgno, f->page_count);
        return TPDB_CORRUPT;
    }
    const uint8_t *img = tfMapGet(&f->dirty, pgno);
    if (img == NULL) {
        img = tfMapGet(&f->wal, pgno);
    }
    if (img != NULL) {
        memcpy(buf, img, TF_PAGE);
        return TPDB_OK;
    }
    size_t got = 0;
    uint64_t off = TF_HDR + (uint64_t)(pgno - 1) * TF_PAGE;
    if (tfPread(f->fd, buf, TF_PAGE, off, &got) != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: page %u: read failed: %s", f->name, pgno,
                 strerror(errno));
        return TPDB_IOERR;
    }
    memset(buf + got, 0, TF_PAGE - got);
    return TPDB_OK;
}

static int tfUndoRecord(struct tpdb_file *f, uint32_t pgno)
{
    for (size_t i = 0; i < f->nundo; i++) {
        if (f->undo[i].pgno == pgno) {
            return TPDB_OK;
        }
    }
    if (f->nundo == f->capundo) {
        size_t ncap = f->capundo == 0 ? 32 : f->capundo * 2;
        struct tfUndo *u = tpdb_realloc(f->undo, ncap * sizeof *u);
        if (u == NULL) {
            return TPDB_NOMEM;
        }
        f->undo = u;
        f->capundo = ncap;
    }
    uint8_t *img = NULL;
    const uint8_t *cur = tfMapGet(&f->dirty, pgno);
    if (cur != NULL) {
        img = tpdb_malloc(TF_PAGE);
        if (img == NULL) {
            return TPDB_NOMEM;
        }
        memcpy(img, cur, TF_PAGE);
    }
    f->undo[f->nundo].pgno = pgno;
    f->undo[f->nundo].img = img;
    f->nundo++;
    return TPDB_OK;
}

int tfPageWrite(struct tpdb_file *f, uint32_t pgno, const uint8_t *buf)
{
    if (pgno == 0 || pgno > f->page_count) {
        tpdbErrf(f->errmsg, "%s: write of page %u out of range", f->name, pgno);
        return TPDB_CORRUPT;
    }
    int rc = f->in_stmt ? tfUndoRecord(f, pgno) : TPDB_OK;
    if (rc == TPDB_OK) {
        rc = tfMapPut(&f->dirty, pgno, buf);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: page %u: out of memory", f->name, pgno);
    }
    return rc;
}

void tfUndoClear(struct tpdb_file *f)
{
    for (size_t i = 0; i < f->nundo; i++) {
        tpdb_free(f->undo[i].img);
    }
    f->nundo = 0;
}

/* Restores every page the statement touched. Putting back an image whose
 * page is already in the map cannot fail (it copies in place). */
void tfUndoApply(struct tpdb_file *f)
{
    for (size_t i = f->nundo; i > 0; i--) {
        struct tfUndo *u = &f->undo[i - 1];
        if (u->img != NULL) {
            (void)tfMapPut(&f->dirty, u->pgno, u->img);
        } else {
            tfMapDel(&f->dirty, u->pgno);
        }
    }
    tfUndoClear(f);
}

void tfDirtyDrop(struct tpdb_file *f)
{
    tfMapClear(&f->dirty);
}

uint64_t tfChainLimit(const struct tpdb_file *f)
{
    return f->real_pages + f->wal.n + f->dirty.n + 2;
}

int tfPageAlloc(struct tpdb_file *f, uint32_t *pgno)
{
    uint8_t page[TF_PAGE];
    if (f->free_head == 0) {
        if (f->page_count == UINT32_MAX) {
            tpdbErrf(f->errmsg, "%s: page numbers exhausted", f->name);
            return TPDB_FULL;
        }
        f->page_count++;
        f->real_pages++;
        *pgno = f->page_count;
        return TPDB_OK;
    }
    uint32_t head = f->free_head;
    int rc = tfPageRead(f, head, page);
    if (rc != TPDB_OK) {
        tpdbErrWrap(f->errmsg, "free list head");
        return rc;
    }
    uint32_t next = tpdbGet32(page + 1);
    if (page[0] != TF_PT_FREE || head == 1 || next > f->page_count) {
        tpdbErrf(f->errmsg,
                 "%s: page %u: free-list page is not free "
                 "(type %u, next %u)",
                 f->name, head, page[0], next);
        return TPDB_CORRUPT;
    }
    f->free_head = next;
    *pgno = head;
    return TPDB_OK;
}

int tfPageFree(struct tpdb_file *f, uint32_t pgno)
{
    uint8_t page[TF_PAGE];
    memset(page, 0, sizeof page);
    tpdbPut32(page + 1, f->free_head);
    int rc = tfPageWrite(f, pgno, page);
    if (rc == TPDB_OK) {
        f->free_head = pgno;
    }
    return rc;
}

/* ---- WAL replay --------------------------------------------------------- */

/* Adopts our sentinel's header record if it carries one. */
static void tfSentinelAdopt(struct tpdb_file *f,
                            const uint8_t *img,
                            uint64_t limit)
{
    if (memcmp(img, tfSntMagic, 8) != 0 ||
        tpdbCrc32c(0, img, 16) != tpdbGet32(img + 16) ||
        tpdbGet32(img + 8) > limit) {
        return;
    }
    if (tpdbGet32(img + 8) > f->page_count) {
        f->page_count = tpdbGet32(img + 8);
    }
    f->free_head = tpdbGet32(img + 12);
}

static int tfWalRecordPage(struct tpdb_file *f, uint32_t pgno)
{
    uint32_t *p = tpdb_realloc(f->wal_pages, (f->n_wal_pages + 1) * sizeof *p);
    if (p == NULL) {
        return TPDB_NOMEM;
    }
    f->wal_pages = p;
    f->wal_pages[f->n_wal_pages++] = pgno;
    return TPDB_OK;
}

/* Moves the pending frames into the committed map. */
/* Moves the pending frames into the committed map. Every page a commit
 * allocates is one of its frames, so no committed page can lie beyond
 * `limit` (the header's page count plus the frames read so far). */
static int tfWalPromote(struct tpdb_file *f,
                        struct tfPageMap *pending,
                        uint64_t limit)
{
    for (size_t i = 0; i < pending->n; i++) {
        uint32_t pg = pending->order[i];
        if (pg > limit) {
            tpdbErrf(f->errmsg,
                     "%s%s: committed frame for page %u beyond "
                     "any allocation (page_count %u)",
                     f->name, TPDB_FILE_WAL_SUFFIX, pg, f->info.page_count);
            return TPDB_CORRUPT;
        }
        int fresh = tfMapGet(&f->wal, pg) == NULL;
        if (tfMapPut(&f->wal, pg, tfMapGet(pending, pg)) != TPDB_OK ||
            (fresh && tfWalRecordPage(f, pg) != TPDB_OK)) {
            tpdbErrf(f->errmsg, "%s: WAL replay: out of memory", f->name);
            return TPDB_NOMEM;
        }
        if (pg > f->page_count) {
            f->page_count = pg;
        }
    }
    tfMapClear(pending);
    return TPDB_OK;
}

static int tfWalReplay(struct tpdb_file *f)
{
    uint8_t hdr[TF_WAL_HDR];
    uint8_t frame[TF_FRAME_HDR + TF_PAGE];
    struct tfPageMap pending = {0};
    size_t got = 0;
    int rc = tfPread(f->wal_fd, hdr, sizeof hdr, 0, &got);
    if (rc != TPDB_OK || got < sizeof hdr || memcmp(hdr, tfWalMagic, 8) != 0) {
        return rc == TPDB_OK ? TPDB_OK : TPDB_IOERR;
    }
    f->wal_valid = 1;
    uint64_t off = TF_WAL_HDR;
    uint64_t limit = f->page_count;
    for (;;) {
        rc = tfPread(f->wal_fd, frame, sizeof frame, off, &got);
        if (rc != TPDB_OK || got < sizeof frame) {
            break;
        }
        off += sizeof frame;
        uint32_t pgno = tpdbGet32(frame);
        uint32_t flags = tpdbGet32(frame + 4);
        if (pgno == 0 && (flags & 1) != 0) {
            tfSentinelAdopt(f, frame + TF_FRAME_HDR, limit);
            rc = tfWalPromote(f, &pending, limit);
            f->info.wal_committed++;
        } else if (pgno != 0) {
            limit++;
            rc = tfMapPut(&pending, pgno, frame + TF_FRAME_HDR);
        }
        if (rc != TPDB_OK) {
            break;
        }
    }
    tfMapClear(&pending);
    if (rc == TPDB_IOERR) {
        tpdbErrf(f->errmsg, "%s: WAL read failed", f->name);
    } else if (rc == TPDB_NOMEM) {
        tpdbErrf(f->errmsg, "%s: WAL replay: out of memory", f->name);
    }
    return rc;
}

/* ---- Header ------------------------------------------------------------- */

static int tfHeaderRead(struct tpdb_file *f, uint64_t size)
{
    uint8_t hdr[TF_HDR];
    size_t got = 0;
    memset(hdr, 0, sizeof hdr);
    if (size >= TF_HDR) {
        if (tfPread(f->fd, hdr, TF_HDR, 0, &got) != TPDB_OK || got < TF_HDR) {
            tpdbErrf(f->errmsg, "%s: header read failed", f->name);
            return TPDB_IOERR;
        }
        if (memcmp(hdr, tfMagic, 8) != 0) {
            tpdbErrf(f->errmsg, "%s: not a TrashPandaDB file (bad magic)",
                     f->name);
            return TPDB_CORRUPT;
        }
    }
    f->info.version = size >= TF_HDR ? tpdbGet32(hdr + 8) : 2;
    if (f->info.version == 1) {
        tpdbErrf(f->errmsg,
                 "%s: TrashPandaDB file was created with the "
                 "JSON storage format (v1)",
                 f->name);
        return TPDB_CORRUPT;
    }
    f->info.page_count = tpdbGet32(hdr + 12);
    f->info.free_list_head = tpdbGet32(hdr + 16);
    f->page_count = f->info.page_count < 1 ? 1 : f->info.page_count;
    f->free_head = f->info.free_list_head;
    f->real_pages =
        size <= TF_HDR ? 0 : (size - TF_HDR + TF_PAGE - 1) / TF_PAGE;
    return TPDB_OK;
}

void tfHeaderEncode(const struct tpdb_file *f, uint8_t *hdr)
{
    memset(hdr, 0, TF_HDR);
    memcpy(hdr, tfMagic, 8);
    tpdbPut32(hdr + 8, f->info.version == 0 ? 2 : f->info.version);
    tpdbPut32(hdr + 12, f->page_count);
    tpdbPut32(hdr + 16, f->free_head);
}

/* ---- Commit ------------------------------------------------------------- */

int tfWalHeaderWrite(struct tpdb_file *f)
{
    uint8_t hdr[TF_WAL_HDR];
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, tfWalMagic, 8);
    tpdbPut32(hdr + 8, 3);
    if (ftruncate(f->wal_fd, TF_WAL_HDR) != 0 ||
        tfPwrite(f->wal_fd, hdr, sizeof hdr, 0) != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: WAL reset failed: %s", f->name,
                 strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

static int tfFrameWrite(struct tpdb_file *f,
                        uint64_t *off,
                        uint32_t pgno,
                        uint32_t flags,
                        const uint8_t *img,
                        long *nframes)
{
    uint8_t frame[TF_FRAME_HDR + TF_PAGE];
    tfCrashCheck(*nframes);
    tpdbPut32(frame, pgno);
    tpdbPut32(frame + 4, flags);
    memcpy(frame + TF_FRAME_HDR, img, TF_PAGE);
    int rc = tfPwrite(f->wal_fd, frame, sizeof frame, *off);
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: WAL frame for page %u: write failed: %s",
                 f->name, pgno, strerror(errno));
        return rc;
    }
    *off += sizeof frame;
    (*nframes)++;
    return TPDB_OK;
}

/* Writes the pages of `m` at their offsets in the page file. */
static int tfPagesWrite(struct tpdb_file *f, const struct tfPageMap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        uint32_t pg = m->order[i];
        uint64_t off = TF_HDR + (uint64_t)(pg - 1) * TF_PAGE;
        int rc = tfPwrite(f->fd, tfMapGet(m, pg), TF_PAGE, off);
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg, "%s: page %u: write failed: %s", f->name, pg,
                     strerror(errno));
            return rc;
        }
    }
    return TPDB_OK;
}

/* Checkpoint: extend, header, pages, fsync, WAL back to its header. */
static int tfCheckpoint(struct tpdb_file *f, long nframes)
{
    uint8_t hdr[TF_HDR];
    uint8_t zero = 0;
    struct stat st;
    uint64_t want = TF_HDR + (uint64_t)f->page_count * TF_PAGE;
    tfCrashCheck(nframes);
    int rc = fstat(f->fd, &st) == 0 ? TPDB_OK : TPDB_IOERR;
    if (rc == TPDB_OK && (uint64_t)st.st_size < want) {
        rc = tfPwrite(f->fd, &zero, 1, want - 1);
    }
    tfHeaderEncode(f, hdr);
    if (rc == TPDB_OK) {
        rc = tfPwrite(f->fd, hdr, TF_HDR, 0);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: checkpoint: header write failed", f->name);
        return rc;
    }
    rc = tfPagesWrite(f, &f->wal);
    if (rc == TPDB_OK) {
        rc = tfPagesWrite(f, &f->dirty);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    if (fsync(f->fd) != 0) {
        tpdbErrf(f->errmsg, "%s: checkpoint: fsync failed: %s", f->name,
                 strerror(errno));
        return TPDB_IOERR;
    }
    rc = tfWalHeaderWrite(f);
    if (rc == TPDB_OK && fsync(f->wal_fd) != 0) {
        rc = TPDB_IOERR;
    }
    f->real_pages = f->page_count;
    if (rc == TPDB_OK) {
        tfMapClear(&f->wal);
        f->wal_end = TF_WAL_HDR;
    }
    return rc;
}

/* Keeps a durable but not checkpointed commit readable: its pages join the
 * committed WAL pages, which the next checkpoint writes too. */
static void tfKeepInWal(struct tpdb_file *f)
{
    for (size_t i = 0; i < f->dirty.n; i++) {
        uint32_t pg = f->dirty.order[i];
        if (tfMapPut(&f->wal, pg, tfMapGet(&f->dirty, pg)) != TPDB_OK) {
            tpdbLog(TPDB_LOG_ERROR, "%s: out of memory keeping page %u",
                    f->name, pg);
        }
    }
}

int tfCommitWrite(struct tpdb_file *f, int *durable)
{
    uint8_t snt[TF_PAGE];
    uint64_t off = f->wal_end < TF_WAL_HDR ? TF_WAL_HDR : f->wal_end;
    long nframes = 0;
    int rc = TPDB_OK;
    *durable = 0;
    for (size_t i = 0; i < f->dirty.n && rc == TPDB_OK; i++) {
        uint32_t pg = f->dirty.order[i];
        rc = tfFrameWrite(f, &off, pg, 0, tfMapGet(&f->dirty, pg), &nframes);
    }
    tfSentinelEncode(f, snt);
    if (rc == TPDB_OK) {
        rc = tfFrameWrite(f, &off, 0, 1, snt, &nframes);
    }
    if (rc == TPDB_OK && fdatasync(f->wal_fd) != 0) {
        tpdbErrf(f->errmsg, "%s: WAL fdatasync failed: %s", f->name,
                 strerror(errno));
        rc = TPDB_IOERR;
    }
    if (rc != TPDB_OK) {
        return rc; /* frames past wal_end are overwritten next time */
    }
    *durable = 1;
    f->wal_end = off;
    rc = tfCheckpoint(f, nframes);
    if (rc != TPDB_OK) {
        tfKeepInWal(f);
    }
    return rc;
}

/* ---- Open / close ------------------------------------------------------- */

static int tfOpenFiles(struct tpdb_file *f, int flags)
{
    int oflags = f->rdonly ? O_RDONLY : O_RDWR;
    if (!f->rdonly && (flags & TPDB_FILE_CREATE) != 0) {
        oflags |= O_CREAT;
    }
    f->fd = open(f->path, oflags | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        tpdbErrf(f->errmsg, "%s: open failed: %s", f->name, strerror(errno));
        return errno == ENOENT ? TPDB_NOTFOUND : TPDB_IOERR;
    }
    if ((flags & TF_OPEN_NOLOCK) == 0 &&
        flock(f->fd, (f->rdonly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        tpdbErrf(f->errmsg, "%s: locked by another handle", f->name);
        return TPDB_BUSY;
    }
    oflags = f->rdonly ? O_RDONLY : (O_RDWR | O_CREAT);
    f->wal_fd = open(f->wal_path, oflags | O_CLOEXEC, 0644);
    if (f->wal_fd < 0 && !(f->rdonly && errno == ENOENT)) {
        tpdbErrf(f->errmsg, "%s: open failed: %s", f->wal_path,
                 strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

static int tfNames(struct tpdb_file *f, const char *path)
{
    size_t len = strlen(path);
    const char *slash = strrchr(path, '/');
    f->path = tpdb_strdup(path);
    f->wal_path = tpdb_malloc(len + sizeof TPDB_FILE_WAL_SUFFIX);
    if (f->path == NULL || f->wal_path == NULL) {
        return TPDB_NOMEM;
    }
    memcpy(f->wal_path, path, len);
    memcpy(f->wal_path + len, TPDB_FILE_WAL_SUFFIX,
           sizeof TPDB_FILE_WAL_SUFFIX);
    f->name = f->path + (slash == NULL ? 0 : (size_t)(slash - path) + 1);
    return TPDB_OK;
}

static int tfOpenState(struct tpdb_file *f)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        tpdbErrf(f->errmsg, "%s: stat failed", f->name);
        return TPDB_IOERR;
    }
    f->info.file_size = (uint64_t)st.st_size;
    int rc = tfHeaderRead(f, f->info.file_size);
    if (rc == TPDB_OK && f->wal_fd >= 0 && fstat(f->wal_fd, &st) == 0) {
        f->info.wal_size = (uint64_t)st.st_size;
        rc = tfWalReplay(f);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    f->info.eff_page_count = f->page_count;
    f->info.eff_free_head = f->free_head;
    if (f->free_head > f->page_count) {
        tpdbErrf(f->errmsg,
                 "%s: free-list head %u out of range "
                 "(page_count %u)",
                 f->name, f->free_head, f->page_count);
        return TPDB_CORRUPT;
    }
    if (!f->rdonly && (f->wal.n > 0 || f->info.wal_committed > 0 ||
                       f->info.wal_size != TF_WAL_HDR || !f->wal_valid)) {
        if (f->info.file_size < TF_HDR) {
            f->info.version = 2;
        }
        rc = tfCheckpoint(f, -1);
    }
    f->c_page_count = f->page_count;
    f->c_free_head = f->free_head;
    return rc;
}

int tpdb_file_open(const char *path,
                   int flags,
                   struct tpdb_file **out,
                   char *errmsg)
{
    return tfOpen(path, flags & (TPDB_FILE_RDONLY | TPDB_FILE_CREATE), out,
                  errmsg);
}

int tfOpen(const char *path, int flags, struct tpdb_file **out, char *errmsg)
{
    struct tpdb_file *f = NULL;
    int rc = TPDB_INVALID;
    if (out != NULL) {
        *out = NULL;
    }
    if (path == NULL || out == NULL) {
        tpdbErrf(errmsg, "tpdb_file_open: NULL argument");
        return rc;
    }
    f = tpdb_calloc(1, sizeof *f);
    if (f == NULL) {
        tpdbErrf(errmsg, "%s: out of memory", path);
        return TPDB_NOMEM;
    }
    f->fd = -1;
    f->wal_fd = -1;
    f->rdonly = (flags & TPDB_FILE_RDONLY) != 0;
    rc = tfNames(f, path);
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: out of memory", path);
        goto err;
    }
    rc = tfOpenFiles(f, flags);
    if (rc == TPDB_OK) {
        rc = tfOpenState(f);
    }
    if (rc == TPDB_OK && (flags & TF_OPEN_NOCATALOG) == 0) {
        rc = tfCatalogLoad(f);
    }
    if (rc != TPDB_OK) {
        goto err;
    }
    *out = f;
    return TPDB_OK;
err:
    tpdbErrf(errmsg, "%s", f->errmsg);
    tpdb_file_close(f);
    return rc;
}

void tpdb_file_close(struct tpdb_file *f)
{
    if (f == NULL) {
        return;
    }
    tfUndoClear(f);
    tpdb_free(f->undo);
    tfMapClear(&f->dirty);
    tfMapClear(&f->wal);
    tfCatalogFree(&f->cat);
    tfCatalogSaveFree(&f->s_cat);
    tfCatalogSaveFree(&f->t_cat);
    tpdb_free(f->wal_pages);
    if (f->wal_fd >= 0) {
        close(f->wal_fd);
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
    tpdb_free(f->path);
    tpdb_free(f->wal_path);
    tpdb_free(f);
}

const char *tpdb_file_errmsg(const struct tpdb_file *f)
{
    return f == NULL ? "NULL handle" : f->errmsg;
}

void tpdb_file_get_info(const struct tpdb_file *f, struct tpdb_file_info *info)
{
    *info = f->info;
}

const uint32_t *tpdb_file_wal_pages(const struct tpdb_file *f, size_t *n)
{
    *n = f->n_wal_pages;
    return f->wal_pages;
}

/* Next page of a chain: free list (byte 1) or catalog continuation (0). */
static int tfChainNext(struct tpdb_file *f,
                       int which,
                       uint32_t pg,
                       uint32_t *next)
{
    uint8_t page[TF_PAGE];
    int rc = tfPageRead(f, pg, page);
    if (rc != TPDB_OK) {
        return rc;
    }
    if (which == TPDB_CHAIN_FREELIST && page[0] != TF_PT_FREE) {
        tpdbErrf(f->errmsg, "%s: page %u: free-list page has type %u", f->name,
                 pg, page[0]);
        return TPDB_CORRUPT;
    }
    *next = tpdbGet32(page + (which == TPDB_CHAIN_FREELIST ? 1 : 0));
    return TPDB_OK;
}

int tpdb_file_chain(struct tpdb_file *f, int which, uint32_t **pages, size_t *n)
{
    uint8_t page[TF_PAGE];
    uint32_t *arr = NULL;
    size_t cnt = 0;
    size_t cap = 0;
    uint32_t pg = f->free_head;
    int rc = TPDB_OK;
    *pages = NULL;
    *n = 0;
    if (which == TPDB_CHAIN_CATALOG) {
        rc = tfPageRead(f, 1, page);
        pg = rc == TPDB_OK ? tpdbGet32(page + 3) : 0;
    }
    while (rc == TPDB_OK && pg != 0) {
        if (cnt >= tfChainLimit(f)) {
            tpdbErrf(f->errmsg, "%s: page %u: cycle in page chain", f->name,
                     pg);
            rc = TPDB_CORRUPT;
            break;
        }
        if (cnt == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            uint32_t *na = tpdb_realloc(arr, cap * sizeof *na);
            if (na == NULL) {
                rc = TPDB_NOMEM;
                break;
            }
            arr = na;
        }
        arr[cnt++] = pg;
        rc = tfChainNext(f, which, pg, &pg);
    }
    if (rc != TPDB_OK) {
        tpdb_free(arr);
        return rc;
    }
    *pages = arr;
    *n = cnt;
    return TPDB_OK;
}
