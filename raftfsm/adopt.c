/*
 * Adoption (node.h, tpdbNodeAdopt): an existing database file the cluster
 * does not know, opened on the leader, becomes part of the cluster.
 *
 * It runs inside the VFS's xOpen, where SQLite may hold mutexes of its own
 * (with shared cache, its static main mutex): it never opens an SQLite
 * connection. The main file is read through the "unix" VFS (filepeek.h:
 * this process's locks on it survive) and the WAL is read directly, its
 * frames validated as SQLite's WAL recovery does (salts, checksum chain,
 * last commit frame), so the image is the database as a reader would see
 * it, WAL content included. Nothing is written to the file: the WAL stays
 * and SQLite reads it as before.
 *
 * The image goes out in parts of TPDB_VFS_PART_PAGES pages: one IMAGE entry
 * when it fits in one part, else a large transaction (entry.h CHUNK_BEGIN,
 * CHUNK..., CHUNK_END) that followers commit at its end. Memory: one part,
 * plus 8 bytes per frame of the WAL.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "raftfsm/node.h"
#include "raftfsm/nodeint.h"
#include "vfs/filepeek.h"
#include "vfs/vfs.h"
#include "vfs/walindex.h"

/* The latest committed frame of a page in the WAL. */
struct walPage {
    uint32_t pgno;
    uint32_t frame;
};

/* Where the committed image of a database comes from. */
struct source {
    const char *path;
    struct tpdb_peek *db;
    int walFd;             /* -1: no valid WAL */
    uint32_t pageSize;     /* of the image */
    uint32_t dbPages;      /* pages in the image */
    struct walPage *pages; /* sorted by pgno, one per page; tpdb_malloc'd */
    uint32_t nPages;
    uint32_t cursor; /* next pages[] entry for an ascending read */
};

static int cmpWalPage(const void *a, const void *b)
{
    const struct walPage *x = a;
    const struct walPage *y = b;
    if (x->pgno != y->pgno) {
        return x->pgno < y->pgno ? -1 : 1;
    }
    return x->frame < y->frame ? -1 : x->frame > y->frame;
}

/* Keeps the latest frame of each page, pages within dbPages. */
static void walPagesSettle(struct source *src)
{
    uint32_t k = 0;
    qsort(src->pages, src->nPages, sizeof *src->pages, cmpWalPage);
    for (uint32_t i = 0; i < src->nPages; i++) {
        if (src->pages[i].pgno > src->dbPages) {
            continue;
        }
        if (k > 0 && src->pages[k - 1].pgno == src->pages[i].pgno) {
            src->pages[k - 1] = src->pages[i];
        } else {
            src->pages[k++] = src->pages[i];
        }
    }
    src->nPages = k;
}

static int walPagesAdd(struct source *src,
                       uint32_t *cap,
                       uint32_t pgno,
                       uint32_t frame)
{
    if (src->nPages == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 256;
        void *p = tpdb_realloc(src->pages, (size_t)ncap * sizeof *src->pages);
        if (p == NULL) {
            return TPDB_NOMEM;
        }
        src->pages = p;
        *cap = ncap;
    }
    src->pages[src->nPages].pgno = pgno;
    src->pages[src->nPages].frame = frame;
    src->nPages++;
    return TPDB_OK;
}

static int preadAll(int fd, uint8_t *buf, size_t n, int64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)off + done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return r < 0 ? -1 : 0;
        }
        done += (size_t)r;
    }
    return 1;
}

/* Scans the frames after the WAL header hdr, one at a time: a frame counts
 * while its salts match and the checksum chain holds; the committed part
 * ends at the last commit frame. Sets src->dbPages from it (0: no commit). */
static int walScan(struct source *src, const uint8_t *hdr, char *errmsg)
{
    uint32_t ps = walHdrPageSize(hdr);
    int big = (tpdbGetBe32(hdr) & 1) != 0;
    uint32_t sum[2] = {tpdbGetBe32(hdr + 24), tpdbGetBe32(hdr + 28)};
    size_t frameSize = WAL_FRAME_HDR_SIZE + (size_t)ps;
    uint8_t *frame = tpdb_malloc(frameSize);
    uint32_t cap = 0, committed = 0;
    int rc = TPDB_OK;
    if (frame == NULL) {
        return TPDB_NOMEM;
    }
    for (uint32_t i = 1; rc == TPDB_OK; i++) {
        int r = preadAll(src->walFd, frame, frameSize, walFrameOffset(i, ps));
        if (r < 0) {
            tpdbErrf(errmsg, "read %s-wal: %s", src->path, strerror(errno));
            rc = TPDB_IOERR;
            break;
        }
        uint32_t pgno = tpdbGetBe32(frame);
        if (r == 0 || pgno == 0 || memcmp(frame + 8, hdr + 16, 8) != 0) {
            break;
        }
        walChecksum(big, frame, 8, sum);
        walChecksum(big, frame + WAL_FRAME_HDR_SIZE, ps, sum);
        if (sum[0] != tpdbGetBe32(frame + 16) ||
            sum[1] != tpdbGetBe32(frame + 20)) {
            break;
        }
        rc = walPagesAdd(src, &cap, pgno, i);
        if (tpdbGetBe32(frame + 4) != 0) {
            src->dbPages = tpdbGetBe32(frame + 4);
            committed = src->nPages;
        }
    }
    tpdb_free(frame);
    src->nPages = committed; /* frames after the last commit never were */
    if (rc == TPDB_OK && committed > 0) {
        src->pageSize = ps;
        walPagesSettle(src);
    }
    return rc;
}

/* Opens and scans path-wal if it holds a valid header. A WAL that SQLite's
 * recovery would ignore is ignored. SQLite takes no lock on a -wal file,
 * so a descriptor of our own cannot drop one. */
static int walOpen(struct source *src, char *errmsg)
{
    char wal[4096 + 8];
    uint8_t hdr[WAL_HDR_SIZE];
    snprintf(wal, sizeof wal, "%s-wal", src->path);
    src->walFd = open(wal, O_RDONLY | O_CLOEXEC);
    if (src->walFd < 0) {
        if (errno == ENOENT) {
            return TPDB_OK;
        }
        tpdbErrf(errmsg, "open %s: %s", wal, strerror(errno));
        return TPDB_IOERR;
    }
    uint32_t sum[2] = {0, 0};
    int r = preadAll(src->walFd, hdr, sizeof hdr, 0);
    if (r > 0 && walHdrPageSize(hdr) != 0 &&
        tpdbGetBe32(hdr + 4) == WAL_VERSION) {
        walChecksum((tpdbGetBe32(hdr) & 1) != 0, hdr, 24, sum);
    }
    if (r <= 0 || sum[0] != tpdbGetBe32(hdr + 24) ||
        sum[1] != tpdbGetBe32(hdr + 28) || (sum[0] == 0 && sum[1] == 0)) {
        close(src->walFd);
        src->walFd = -1;
        return TPDB_OK;
    }
    return walScan(src, hdr, errmsg);
}

/* Page size and page count from the main file's header, when the WAL has
 * no commit. Errors: TPDB_CORRUPT (not a SQLite database). */
static int mainHeader(struct source *src, int64_t size, char *errmsg)
{
    uint8_t h[100];
    size_t got = 0;
    int rc = tpdbPeekRead(src->db, h, sizeof h, 0, &got, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    uint32_t ps = (uint32_t)(h[16] << 8 | h[17]);
    ps = ps == 1 ? 65536 : ps;
    if (got != sizeof h || memcmp(h, "SQLite format 3", 16) != 0 || ps < 512 ||
        (ps & (ps - 1)) != 0) {
        tpdbErrf(errmsg,
                 "%s is not a SQLite database (its header is not one), so it "
                 "cannot be imported into the cluster",
                 src->path);
        return TPDB_CORRUPT;
    }
    src->pageSize = ps;
    /* The in-header size counts when it is valid for this version. */
    uint32_t inHeader = tpdbGetBe32(h + 28);
    if (inHeader != 0 && memcmp(h + 24, h + 92, 4) == 0) {
        src->dbPages = inHeader;
    } else {
        src->dbPages = (uint32_t)(size / ps);
    }
    return TPDB_OK;
}

/* Reads page pgno of the image into buf. Calls come in ascending pgno. */
static int readPage(struct source *src,
                    uint32_t pgno,
                    uint8_t *buf,
                    char *errmsg)
{
    uint32_t ps = src->pageSize;
    while (src->cursor < src->nPages && src->pages[src->cursor].pgno < pgno) {
        src->cursor++;
    }
    if (src->cursor < src->nPages && src->pages[src->cursor].pgno == pgno) {
        int64_t off = walFrameOffset(src->pages[src->cursor].frame, ps) +
                      WAL_FRAME_HDR_SIZE;
        if (preadAll(src->walFd, buf, ps, off) <= 0) {
            tpdbErrf(errmsg, "read page %u from %s-wal: %s", pgno, src->path,
                     errno ? strerror(errno) : "short read");
            return TPDB_IOERR;
        }
        return TPDB_OK;
    }
    /* Past the end of the main file it reads as zeros, as SQLite does. */
    return tpdbPeekRead(src->db, buf, ps, (int64_t)(pgno - 1) * ps, NULL,
                        errmsg);
}

/* Whether the image is one page holding an empty schema: a file SQLite
 * just created (tpdbFsmFileHoldsNoData, with the WAL included). */
static int imageEmpty(struct source *src, uint8_t *page, char *errmsg)
{
    if (src->dbPages != 1) {
        return 0;
    }
    if (readPage(src, 1, page, errmsg) != TPDB_OK) {
        return 0;
    }
    src->cursor = 0;
    return page[100] == 0x0D && page[103] == 0 && page[104] == 0;
}

/* Fails when a hot rollback journal sits next to the file: the file alone
 * is then not the database. */
static int journalCheck(const char *path, char *errmsg)
{
    static const uint8_t magic[8] = {0xd9, 0xd5, 0x05, 0xf9,
                                     0x20, 0xa1, 0x63, 0xd7};
    char journal[4096 + 16];
    uint8_t head[8];
    snprintf(journal, sizeof journal, "%s-journal", path);
    if (tpdbPeekHead(journal, head, sizeof head) == sizeof head &&
        memcmp(head, magic, sizeof magic) == 0) {
        tpdbErrf(errmsg,
                 "%s has a hot rollback journal (%s): open it once with "
                 "plain SQLite to roll the interrupted transaction back, then "
                 "open it here",
                 path, journal);
        return TPDB_BUSY;
    }
    return TPDB_OK;
}

static void sourceClose(struct source *src)
{
    tpdbPeekClose(src->db);
    if (src->walFd >= 0) {
        close(src->walFd);
    }
    tpdb_free(src->pages);
}

/* Opens the image of the database at path. src->dbPages == 0: nothing to
 * import (no file, an empty one, no committed content). */
static int sourceOpen(struct source *src, const char *path, char *errmsg)
{
    int64_t size = 0;
    memset(src, 0, sizeof *src);
    src->path = path;
    src->walFd = -1;
    int rc = tpdbPeekOpen(path, &src->db, errmsg);
    if (rc == TPDB_NOTFOUND) {
        return TPDB_OK;
    }
    if (rc == TPDB_OK) {
        rc = tpdbPeekSize(src->db, &size, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = walOpen(src, errmsg);
    }
    if (rc == TPDB_OK && src->dbPages == 0 && size > 0) {
        rc = mainHeader(src, size, errmsg);
    }
    return rc;
}

/* Proposes the image in parts; the caller holds the write check. */
static int proposeImage(struct tpdb_node *n,
                        const char *name,
                        struct source *src,
                        struct tpdb_page *pages,
                        uint8_t *buf,
                        char *errmsg)
{
    uint32_t per = TPDB_VFS_PART_PAGES;
    int rc = TPDB_OK;
    for (uint32_t first = 1; rc == TPDB_OK && first <= src->dbPages;
         first += per) {
        uint32_t k =
            src->dbPages - first + 1 < per ? src->dbPages - first + 1 : per;
        for (uint32_t i = 0; rc == TPDB_OK && i < k; i++) {
            pages[i].pgno = first + i;
            pages[i].data = buf + (size_t)i * src->pageSize;
            rc = readPage(src, first + i, buf + (size_t)i * src->pageSize,
                          errmsg);
            if (rc == TPDB_OK && first + i == 1 && buf[18] == 1 &&
                buf[19] == 1) {
                /* Followers apply only to WAL-mode files; the connection
                 * that opened it switches it to WAL, then adopts it
                 * (ext/hooks.c). */
                tpdbErrf(errmsg,
                         "%s is in rollback-journal mode: it is imported once "
                         "a connection has switched it to WAL",
                         name);
                rc = TPDB_INVALID;
            }
        }
        if (rc != TPDB_OK) {
            break;
        }
        struct tpdb_txn part = {.page_size = src->pageSize,
                                .db_pages = src->dbPages,
                                .n_pages = k,
                                .pages = pages};
        int final = first + k > src->dbPages;
        int type = final && first == 1 ? TPDB_ENTRY_IMAGE
                   : final             ? TPDB_ENTRY_CHUNK_END
                   : first == 1        ? TPDB_ENTRY_CHUNK_BEGIN
                                       : TPDB_ENTRY_CHUNK;
        rc = tpdbNodePropose(n, type, name, &part, errmsg);
        if (!final && rc == TPDB_UNKNOWN) {
            /* Without its last part the import cannot have committed. */
            rc = TPDB_RAFT;
        }
        if (rc != TPDB_OK) {
            tpdbErrWrap(errmsg, "pages %u-%u of %u", first, first + k - 1,
                        src->dbPages);
        }
    }
    return rc;
}

static int importFile(struct tpdb_node *n,
                      const char *name,
                      struct source *src,
                      char *errmsg)
{
    size_t per = TPDB_VFS_PART_PAGES;
    struct tpdb_page *pages = tpdb_malloc(per * sizeof *pages);
    uint8_t *buf = tpdb_malloc(per * src->pageSize);
    int rc = TPDB_NOMEM;
    if (pages == NULL || buf == NULL) {
        tpdbErrf(errmsg, "out of memory");
        goto out;
    }
    if (imageEmpty(src, buf, errmsg)) {
        rc = TPDB_OK;
        goto out;
    }
    rc = tpdbNodeWriteCheck(n, name, errmsg);
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg,
                    "%s holds data but is not part of the cluster; open it "
                    "on the leader to import it",
                    name);
        goto out;
    }
    rc = proposeImage(n, name, src, pages, buf, errmsg);
    if (rc == TPDB_OK) {
        /* The file already holds what the entries carry. */
        tpdbNodeOwnWriteDone(n, name, 1);
    }
out:
    tpdb_free(buf);
    tpdb_free(pages);
    return rc;
}

int tpdbNodeAdopt(struct tpdb_node *n,
                  const char *name,
                  const char *path,
                  char *errmsg)
{
    struct source src;
    int replaced = tpdbFsmFileReplaced(&n->fsm, name);
    int rc;
    if (tpdbFsmKnows(&n->fsm, name)) {
        /* A known database whose file was deleted or replaced while the
         * node ran is the leader's business: a new file with data is
         * imported again (it replaces the cluster's copy), an empty one
         * starts over (its first commit carries every page). Elsewhere the
         * node's own fetches replace files. */
        if (!replaced || tpdbNodeWriteCheck(n, name, errmsg) != TPDB_OK) {
            return TPDB_OK;
        }
        tpdbLog(TPDB_LOG_INFO,
                "%s was deleted or replaced while the node ran; importing "
                "the new file if it holds data",
                path);
    }
    rc = sourceOpen(&src, path, errmsg);
    if (rc == TPDB_OK && src.dbPages > 0) {
        rc = journalCheck(path, errmsg);
    }
    if (rc == TPDB_OK && src.dbPages > 0) {
        rc = importFile(n, name, &src, errmsg);
    }
    sourceClose(&src);
    if (rc == TPDB_OK) {
        /* Known now, as this file. */
        tpdbFsmFileReplaced(&n->fsm, name);
    } else {
        tpdbErrWrap(errmsg, "import %s into the cluster", name);
    }
    return rc;
}
