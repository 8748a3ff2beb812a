/*
 * A replicated commit of a TPDB page file that arrives in parts
 * (tpdbfile.h, "Replicated commits in parts"): a replica writes each part
 * to a stage file as it comes, and at the last part applies them all as
 * one commit of the format's WAL protocol, so that no reader and no crash
 * recovery ever sees a part of it.
 *
 * Stage file: the frames the WAL will hold, in page order, exactly as the
 * WAL lays them out ([u32 TPDB page][u32 flags 0][4096 bytes]); the header
 * page stays in memory. Apply, under the page file's exclusive flock:
 * frames copied from the stage file to the WAL, the commit sentinel,
 * fdatasync (the commit is durable), then the checkpoint reads the frames
 * back from the WAL into the page file, fsyncs it and resets the WAL.
 * Memory: one buffer of STAGE_BATCH frames.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

#define STAGE_FRAME (TF_FRAME_HDR + TF_PAGE)
#define STAGE_BATCH 64 /* frames per read: 256 KiB */

struct tpdb_file_stage {
    char *path;
    int fd;
    int failed;   /* an add failed: the stage cannot be applied */
    int have_hdr; /* the first part (with the header page) is in */
    uint8_t hdr[TF_HDR];
    uint32_t db_pages; /* of the first part; every part must agree */
    uint32_t last;     /* last mapped page number staged */
    uint64_t frames;   /* frames in the stage file */
    uint8_t *buf;      /* STAGE_BATCH frames */
};

int tpdb_file_stage_open(const char *stage_path,
                         struct tpdb_file_stage **out,
                         char *errmsg)
{
    struct tpdb_file_stage *st = tpdb_calloc(1, sizeof *st);
    *out = NULL;
    if (st == NULL) {
        tpdbErrf(errmsg, "stage %s: out of memory", stage_path);
        return TPDB_NOMEM;
    }
    st->fd = -1;
    st->path = tpdb_strdup(stage_path);
    st->buf = tpdb_malloc((size_t)STAGE_BATCH * STAGE_FRAME);
    if (st->path == NULL || st->buf == NULL) {
        tpdbErrf(errmsg, "stage %s: out of memory", stage_path);
        tpdb_file_stage_close(st);
        return TPDB_NOMEM;
    }
    st->fd = open(stage_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (st->fd < 0) {
        tpdbErrf(errmsg, "create %s: %s", stage_path, strerror(errno));
        tpdb_file_stage_close(st);
        return TPDB_IOERR;
    }
    *out = st;
    return TPDB_OK;
}

void tpdb_file_stage_close(struct tpdb_file_stage *st)
{
    if (st == NULL) {
        return;
    }
    if (st->fd >= 0) {
        close(st->fd);
        unlink(st->path);
    }
    tpdb_free(st->buf);
    tpdb_free(st->path);
    tpdb_free(st);
}

/* The part's shape: the replication mapping (tfReplCheckTxn), the header
 * page in the first part only, page numbers above every staged one. */
static int stageCheck(struct tpdb_file_stage *st,
                      const struct tpdb_txn *part,
                      char *errmsg)
{
    int rc = tfReplCheckTxn(part, !st->have_hdr, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    if (st->have_hdr &&
        (part->db_pages != st->db_pages || part->pages[0].pgno <= st->last)) {
        tpdbErrf(errmsg,
                 "part of %u pages from page %u does not follow the staged "
                 "ones (%u pages, up to %u)",
                 part->db_pages, part->pages[0].pgno, st->db_pages, st->last);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

int tpdb_file_stage_add(struct tpdb_file_stage *st,
                        const struct tpdb_txn *part,
                        char *errmsg)
{
    int rc = st->failed ? TPDB_INVALID : stageCheck(st, part, errmsg);
    uint32_t i = 0;
    if (rc == TPDB_OK && !st->have_hdr) {
        memcpy(st->hdr, part->pages[0].data, TF_HDR);
        st->db_pages = part->db_pages;
        st->have_hdr = 1;
        i = 1;
    }
    for (; rc == TPDB_OK && i < part->n_pages; i++) {
        uint8_t *fr = st->buf;
        tpdbPut32(fr, part->pages[i].pgno - 1);
        tpdbPut32(fr + 4, 0);
        memcpy(fr + TF_FRAME_HDR, part->pages[i].data, TF_PAGE);
        rc = tfPwrite(st->fd, fr, STAGE_FRAME, st->frames * STAGE_FRAME);
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "write %s: %s", st->path, strerror(errno));
            break;
        }
        st->frames++;
    }
    if (rc == TPDB_OK && part->n_pages > 0) {
        st->last = part->pages[part->n_pages - 1].pgno;
    }
    if (rc != TPDB_OK) {
        st->failed = 1;
    }
    return rc;
}

/* Reads n frames of the stage file or WAL at off into st->buf. */
static int stageRead(struct tpdb_file_stage *st,
                     int fd,
                     uint64_t off,
                     uint32_t n,
                     const char *what,
                     char *errmsg)
{
    size_t got = 0;
    size_t len = (size_t)n * STAGE_FRAME;
    if (tfPread(fd, st->buf, len, off, &got) != TPDB_OK || got != len) {
        tpdbErrf(errmsg, "read %s at %llu: %s", what, (unsigned long long)off,
                 got != len ? "short read" : strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

/* Copies the staged frames to the WAL at TF_WAL_HDR, then the sentinel,
 * and syncs: the commit is durable. *end: the WAL offset after it. */
static int stageWalWrite(struct tpdb_file_stage *st,
                         struct tpdb_file *f,
                         uint64_t *end)
{
    uint64_t off = TF_WAL_HDR;
    long nframes = 0;
    int rc = TPDB_OK;
    for (uint64_t done = 0; rc == TPDB_OK && done < st->frames;) {
        uint64_t left = st->frames - done;
        uint32_t n = left < STAGE_BATCH ? (uint32_t)left : STAGE_BATCH;
        rc = stageRead(st, st->fd, done * STAGE_FRAME, n, st->path, f->errmsg);
        for (uint32_t i = 0; rc == TPDB_OK && i < n; i++) {
            tfCrashCheck(nframes++);
            rc = tfPwrite(f->wal_fd, st->buf + (size_t)i * STAGE_FRAME,
                          STAGE_FRAME, off);
            off += STAGE_FRAME;
        }
        done += n;
    }
    if (rc == TPDB_OK) {
        uint8_t *fr = st->buf;
        tpdbPut32(fr, 0);
        tpdbPut32(fr + 4, 1);
        tfSentinelEncode(f, fr + TF_FRAME_HDR);
        tfCrashCheck(nframes++);
        rc = tfPwrite(f->wal_fd, fr, STAGE_FRAME, off);
        off += STAGE_FRAME;
    }
    if (rc == TPDB_OK && fdatasync(f->wal_fd) != 0) {
        rc = TPDB_IOERR;
    }
    if (rc != TPDB_OK && f->errmsg[0] == '\0') {
        tpdbErrf(f->errmsg, "%s: WAL write: %s", f->name, strerror(errno));
    }
    if (rc == TPDB_OK) {
        tfCrashCheck(nframes); /* in place of the checkpoint */
    }
    *end = off;
    return rc;
}

/* Writes the pages of the WAL's frames up to end into the page file. */
static int stageWalPages(struct tpdb_file_stage *st,
                         struct tpdb_file *f,
                         uint64_t end)
{
    int rc = TPDB_OK;
    for (uint64_t off = TF_WAL_HDR; rc == TPDB_OK && off < end;) {
        uint64_t left = (end - off) / STAGE_FRAME;
        uint32_t n = left < STAGE_BATCH ? (uint32_t)left : STAGE_BATCH;
        rc = stageRead(st, f->wal_fd, off, n, f->wal_path, f->errmsg);
        for (uint32_t i = 0; rc == TPDB_OK && i < n; i++) {
            const uint8_t *fr = st->buf + (size_t)i * STAGE_FRAME;
            uint32_t pg = tpdbGet32(fr);
            if (pg == 0) {
                continue; /* the sentinel */
            }
            if (pg > f->page_count) {
                tpdbErrf(f->errmsg, "%s: WAL frame for page %u beyond %u",
                         f->name, pg, f->page_count);
                rc = TPDB_CORRUPT;
                break;
            }
            rc = tfPwrite(f->fd, fr + TF_FRAME_HDR, TF_PAGE,
                          TF_HDR + (uint64_t)(pg - 1) * TF_PAGE);
        }
        off += (uint64_t)n * STAGE_FRAME;
    }
    return rc;
}

/* The checkpoint of a commit that lies in the WAL only: size, header,
 * pages read back from the WAL, fsync, WAL reset. */
static int stageCheckpoint(struct tpdb_file_stage *st,
                           struct tpdb_file *f,
                           uint64_t end)
{
    uint8_t hdr[TF_HDR];
    uint8_t zero = 0;
    struct stat sb;
    uint64_t want = TF_HDR + (uint64_t)f->page_count * TF_PAGE;
    int rc = fstat(f->fd, &sb) == 0 ? TPDB_OK : TPDB_IOERR;
    if (rc == TPDB_OK && (uint64_t)sb.st_size < want) {
        rc = tfPwrite(f->fd, &zero, 1, want - 1);
    }
    tfHeaderEncode(f, hdr);
    if (rc == TPDB_OK) {
        rc = tfPwrite(f->fd, hdr, TF_HDR, 0);
    }
    if (rc == TPDB_OK) {
        rc = stageWalPages(st, f, end);
    }
    if (rc == TPDB_OK && fsync(f->fd) != 0) {
        rc = TPDB_IOERR;
    }
    if (rc == TPDB_OK) {
        rc = tfWalHeaderWrite(f);
    }
    if (rc == TPDB_OK && fsync(f->wal_fd) != 0) {
        rc = TPDB_IOERR;
    }
    if (rc != TPDB_OK && f->errmsg[0] == '\0') {
        tpdbErrf(f->errmsg, "%s: checkpoint: %s", f->name, strerror(errno));
    }
    if (rc == TPDB_OK) {
        f->real_pages = f->page_count;
        f->wal_end = TF_WAL_HDR;
        rc = tfTruncateToCount(f);
    }
    return rc;
}

int tpdb_file_stage_apply(struct tpdb_file_stage *st,
                          const char *path,
                          char *errmsg)
{
    struct tpdb_file *f = NULL;
    uint64_t end = 0;
    if (!st->have_hdr || st->failed) {
        tpdbErrf(errmsg, "apply %s to %s: nothing staged, or a part failed",
                 st->path, path);
        return TPDB_INVALID;
    }
    /* Read-write: the exclusive flock, and the WAL back to its header
     * (any committed frame of it checkpointed first). */
    int rc = tfOpen(path, TPDB_FILE_CREATE | TF_OPEN_NOCATALOG, &f, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    f->errmsg[0] = '\0';
    f->info.version = tpdbGet32(st->hdr + 8);
    f->page_count = tpdbGet32(st->hdr + 12);
    f->free_head = tpdbGet32(st->hdr + 16);
    rc = stageWalWrite(st, f, &end);
    if (rc == TPDB_OK) {
        rc = stageCheckpoint(st, f, end);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", f->errmsg);
    }
    tpdb_file_close(f);
    return rc;
}
