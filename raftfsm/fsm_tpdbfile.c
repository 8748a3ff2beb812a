/*
 * TPDB page files streamed to or from a peer: the parts of a catch-up
 * (fsm_stream.c) that differ from SQLite databases. Pages travel in the
 * replication mapping of tpdbfile.h (page 1 = the 64-byte header, page N+1
 * = TPDB page N).
 *
 * Serving: a read-only handle on the file holds its shared flock, which
 * every writer of the file needs exclusively (the FSM's apply queues its
 * entries meanwhile, a local writer waits), so the handle reads one state
 * from the first page to the last. Once the flock is held nothing can be
 * half-written, and the served index is the FSM's applied index.
 *
 * Receiving: the pages go straight into a temp file, .tpdb/NAME.fetch (the
 * stream never sits in memory); the entries queued since the restore are
 * applied to it through the library's crash-safe protocol; then, with the
 * old file's exclusive flock held (its WAL checkpointed, so no frame of it
 * can ever be replayed over the new file: the format's WAL has no salt),
 * the temp file is renamed over it and the directory fsynced. A reader
 * sees the old state or the new one, never a mix; a crash before the
 * rename leaves the old file, and the fetch is redone at restart.
 *
 * A whole file that arrives in the log as a chunk sequence
 * (TPDB_ENTRY_TPDBFILE_BEGIN, fsm_chunk.c) is received the same way, into
 * .tpdb/NAME.stage, and switched to at its END.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "raftfsm/fsmint.h"
#include "vfs/tpdbfile/tpdbfile.h"

struct fsmTfFetch {
    struct fsmState *s;
    struct fsmDb *db;
    char tmp[4096 + 64];    /* metaDir/NAME.fetch */
    char tmpWal[4096 + 72]; /* its WAL, made by the applies */
    int fd;                 /* tmp, while pages arrive; -1 after */
    uint32_t pages;         /* pages received so far */
    unsigned staged;        /* queued entries applied to tmp */
};

static void pause2ms(void)
{
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int fsmTfServeOpen(struct fsmState *s,
                   struct fsmDb *db,
                   uint64_t min,
                   struct tpdb_file **out,
                   uint64_t *served,
                   char *errmsg)
{
    int rc = tpdb_file_open(db->path, TPDB_FILE_RDONLY, out, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    pthread_mutex_lock(&s->mutex);
    int holds = !db->fetching && s->lastApplied >= min &&
                (db->written >= min || db->written == db->lastSeen);
    if (holds) {
        *served = s->lastApplied;
    } else {
        tpdbErrf(errmsg,
                 "%s is not written up to %llu here yet (written %llu, "
                 "applied %llu%s)",
                 db->name, (unsigned long long)min,
                 (unsigned long long)db->written,
                 (unsigned long long)s->lastApplied,
                 db->fetching ? ", itself fetching" : "");
    }
    pthread_mutex_unlock(&s->mutex);
    if (!holds) {
        tpdb_file_close(*out);
        *out = NULL;
        return TPDB_BUSY;
    }
    return TPDB_OK;
}

static int tempBegin(struct fsmState *s,
                     struct fsmDb *db,
                     const char *suffix,
                     struct fsmTfFetch **out,
                     char *errmsg)
{
    struct fsmTfFetch *tf = tpdb_calloc(1, sizeof *tf);
    *out = NULL;
    if (tf == NULL) {
        tpdbErrf(errmsg, "fetch: out of memory");
        return TPDB_NOMEM;
    }
    tf->s = s;
    tf->db = db;
    snprintf(tf->tmp, sizeof tf->tmp, "%s/%s.%s", s->metaDir, db->name, suffix);
    snprintf(tf->tmpWal, sizeof tf->tmpWal, "%s%s", tf->tmp,
             TPDB_FILE_WAL_SUFFIX);
    unlink(tf->tmpWal); /* of an earlier attempt */
    tf->fd = open(tf->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tf->fd < 0) {
        tpdbErrf(errmsg, "create %s: %s", tf->tmp, strerror(errno));
        tpdb_free(tf);
        return TPDB_IOERR;
    }
    *out = tf;
    return TPDB_OK;
}

int fsmTfFetchBegin(struct fsmState *s,
                    struct fsmDb *db,
                    struct fsmTfFetch **out,
                    char *errmsg)
{
    return tempBegin(s, db, "fetch", out, errmsg);
}

int fsmTfStageBegin(struct fsmState *s,
                    struct fsmDb *db,
                    struct fsmTfFetch **out,
                    char *errmsg)
{
    return tempBegin(s, db, "stage", out, errmsg);
}

static int writeAll(int fd, const uint8_t *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return errno == ENOSPC ? TPDB_FULL : TPDB_IOERR;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return TPDB_OK;
}

/* Mapped page 1 must be a TPDB header (magic, not the JSON version 1). */
static int checkHeader(const uint8_t *h, char *errmsg)
{
    if (memcmp(h, "TPANDADB", 8) != 0 || tpdbGet32(h + 8) == 1 ||
        tpdbGet32(h + 12) == UINT32_MAX) {
        tpdbErrf(errmsg, "the stream does not start with a TPDB header");
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

int fsmTfFetchPages(struct fsmTfFetch *tf,
                    uint32_t first,
                    uint32_t n,
                    const uint8_t *data,
                    char *errmsg)
{
    int rc = first == tf->pages + 1 && tf->fd >= 0 ? TPDB_OK : TPDB_PROTO;
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "pages from %u out of order (have %u)", first,
                 tf->pages);
    }
    for (uint32_t i = 0; rc == TPDB_OK && i < n; i++) {
        const uint8_t *pg = data + (size_t)i * TPDB_FILE_PAGE_SIZE;
        uint32_t no = first + i;
        if (no == 1) {
            rc = checkHeader(pg, errmsg);
            if (rc == TPDB_OK) {
                rc = writeAll(tf->fd, pg, 64, 0);
            }
        } else {
            off_t off = 64 + (off_t)(no - 2) * TPDB_FILE_PAGE_SIZE;
            rc = writeAll(tf->fd, pg, TPDB_FILE_PAGE_SIZE, off);
        }
        if (rc == TPDB_FULL || rc == TPDB_IOERR) {
            tpdbErrf(errmsg, "write %s: %s", tf->tmp, strerror(errno));
        }
    }
    if (rc == TPDB_OK) {
        tf->pages += n;
    }
    return rc;
}

/* The header's page count matches the pages received, and the file is on
 * disk: the state to apply queued entries to. */
static int streamComplete(struct fsmTfFetch *tf,
                          uint32_t db_pages,
                          char *errmsg)
{
    uint8_t h[64];
    if (tf->fd < 0) {
        return TPDB_OK; /* checked already */
    }
    if (tf->pages != db_pages || db_pages == 0 ||
        pread(tf->fd, h, sizeof h, 0) != (ssize_t)sizeof h ||
        tpdbGet32(h + 12) + 1 != db_pages) {
        tpdbErrf(errmsg,
                 "received %u of %u pages, or a header that does "
                 "not match them",
                 tf->pages, db_pages);
        return TPDB_PROTO;
    }
    if (fsync(tf->fd) != 0) {
        tpdbErrf(errmsg, "fsync %s: %s", tf->tmp, strerror(errno));
        return TPDB_IOERR;
    }
    close(tf->fd);
    tf->fd = -1;
    return TPDB_OK;
}

int fsmTfFetchStage(struct fsmTfFetch *tf,
                    uint32_t db_pages,
                    const struct tpdb_txn *txn,
                    char *errmsg)
{
    int rc = streamComplete(tf, db_pages, errmsg);
    if (rc == TPDB_OK && txn != NULL) {
        rc = tpdb_file_apply(tf->tmp, txn, errmsg);
        tf->staged++;
    }
    return rc;
}

int fsmTfFetchPartsOpen(struct fsmTfFetch *tf,
                        struct tpdb_file_stage **out,
                        char *errmsg)
{
    char path[sizeof tf->tmp + 8];
    snprintf(path, sizeof path, "%s.parts", tf->tmp);
    return tpdb_file_stage_open(path, out, errmsg);
}

int fsmTfFetchStageParts(struct fsmTfFetch *tf,
                         uint32_t db_pages,
                         struct tpdb_file_stage *st,
                         char *errmsg)
{
    int rc = streamComplete(tf, db_pages, errmsg);
    if (rc == TPDB_OK) {
        rc = tpdb_file_stage_apply(st, tf->tmp, errmsg);
        tf->staged++;
    }
    return rc;
}

/* Checkpoints and checks the temp file (it opens, its catalog loads), then
 * drops its WAL: after the rename the old file's (empty) WAL serves. */
static int tmpReady(struct fsmTfFetch *tf, char *errmsg)
{
    struct tpdb_file *f = NULL;
    int rc = tpdb_file_open(tf->tmp, 0, &f, errmsg);
    tpdb_file_close(f);
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "received file");
        return rc == TPDB_BUSY ? TPDB_IOERR : rc;
    }
    if (unlink(tf->tmpWal) != 0 && errno != ENOENT) {
        tpdbErrf(errmsg, "remove %s: %s", tf->tmpWal, strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

/* Opens the current file read-write, which takes its exclusive flock and
 * checkpoints its WAL, waiting up to lock_ms while a handle holds it. A
 * file that cannot be opened (corrupt, not a TPDB file) is moved aside; a
 * WAL left without its page file is moved aside too. *old: NULL when
 * there is no file. */
static int lockCurrent(struct fsmTfFetch *tf,
                       unsigned lock_ms,
                       struct tpdb_file **old,
                       char *errmsg)
{
    struct fsmDb *db = tf->db;
    uint64_t deadline = tpdbNowMs() + lock_ms;
    char wal[4096 + 8];
    char msg[TPDB_ERRMSG_SIZE] = "";
    int rc;
    while ((rc = tpdb_file_open(db->path, 0, old, msg)) == TPDB_BUSY &&
           tpdbNowMs() < deadline) {
        pause2ms();
    }
    if (rc == TPDB_OK || rc == TPDB_BUSY) {
        if (rc == TPDB_BUSY) {
            tpdbErrf(errmsg, "%s is held by a reader or writer", db->name);
        }
        return rc;
    }
    *old = NULL;
    if (rc != TPDB_NOTFOUND) {
        tpdbLog(TPDB_LOG_WARN, "%s: local copy unusable: %s", db->name, msg);
        return fsmMoveAside(db, "corrupt", errmsg);
    }
    snprintf(wal, sizeof wal, "%s%s", db->path, TPDB_FILE_WAL_SUFFIX);
    if (access(wal, F_OK) == 0) {
        char aside[4096 + 64];
        snprintf(aside, sizeof aside, "%s.stray-%lld", wal,
                 (long long)time(NULL));
        if (rename(wal, aside) != 0) {
            tpdbErrf(errmsg, "move %s aside: %s", wal, strerror(errno));
            return TPDB_IOERR;
        }
    }
    return TPDB_OK;
}

static int syncDir(const char *dir, char *errmsg)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? TPDB_OK : TPDB_IOERR;
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "fsync %s: %s", dir, strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

int fsmTfFetchCommit(struct fsmTfFetch *tf, unsigned lock_ms, char *errmsg)
{
    struct tpdb_file *old = NULL;
    int rc = tmpReady(tf, errmsg);
    if (rc == TPDB_OK) {
        rc = lockCurrent(tf, lock_ms, &old, errmsg);
    }
    if (rc == TPDB_OK && rename(tf->tmp, tf->db->path) != 0) {
        tpdbErrf(errmsg, "rename %s: %s", tf->tmp, strerror(errno));
        rc = TPDB_IOERR;
    }
    /* The old inode's flock goes with its handle: readers that waited
     * open the new file. */
    tpdb_file_close(old);
    if (rc == TPDB_OK) {
        tf->tmp[0] = '\0';
        rc = syncDir(tf->s->dataDir, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = syncDir(tf->s->metaDir, errmsg);
    }
    return rc;
}

void fsmTfFetchAbort(struct fsmTfFetch *tf)
{
    if (tf == NULL) {
        return;
    }
    if (tf->fd >= 0) {
        close(tf->fd);
    }
    if (tf->tmp[0] != '\0') {
        unlink(tf->tmp);
        unlink(tf->tmpWal);
    }
    tpdb_free(tf);
}

uint32_t fsmTfMappedPages(const char *path)
{
    uint8_t h[64];
    FILE *f = fopen(path, "rb");
    size_t got = f != NULL ? fread(h, 1, sizeof h, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    if (got != sizeof h || memcmp(h, "TPANDADB", 8) != 0) {
        return 0;
    }
    uint32_t count = tpdbGet32(h + 12);
    return count == UINT32_MAX ? 0 : (count == 0 ? 1 : count) + 1;
}

int fsmTfUsable(const char *path)
{
    struct tpdb_file *f = NULL;
    int rc = tpdb_file_open(path, TPDB_FILE_RDONLY, &f, NULL);
    tpdb_file_close(f);
    /* Held by a writer: it opened for that writer, and the writer's
     * commits keep it whole. */
    return rc == TPDB_OK || rc == TPDB_BUSY;
}
