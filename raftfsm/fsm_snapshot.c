/*
 * Snapshots and restore of the state machine (see fsm.h).
 *
 * Taking a snapshot at index I (raft_fsm version 3): `snapshot` on the loop
 * thread lists the databases and notes how many own transactions each had
 * acknowledged; `snapshot_async` on a worker waits until those are in the
 * WAL and no queued entry at or before I is left, fsyncs every database
 * file and WAL (and the directory), records I as durable for each in
 * .tpdb/durable, and returns a snapshot record (snaprec.h). Nothing grows
 * with the databases: SQLite databases and TPDB page files alike are
 * listed by name and size only.
 * Version 2 (the test fixture) does the same inline and answers RAFT_BUSY
 * instead of waiting.
 *
 * Restore of a record at I: a database whose files are durable at I or
 * later (a restart: the node took that snapshot itself, or fetched past it)
 * is kept as it is; raft then replays the entries after I, which is
 * harmless for entries the files already hold. Any other database (behind,
 * missing, unreadable, or new to this node) waits for a stream from a peer
 * (fsm_stream.c, fsm_tpdbfile.c); entries for it queue meanwhile. A TPDB
 * file is kept only if it also opens (a damaged one is fetched). Records of
 * earlier formats (TPS1, and TPS2 with TPDB files as whole images) are
 * still restored by applying each image.
 *
 * The durable file: "tpdb-durable 1" then one "INDEX NAME" line per
 * database, replaced atomically (write, fsync, rename, fsync directory).
 * Besides snapshots, the END of a large transaction records its database
 * as durable at END once the files are synced (fsmMakeDbDurable): the
 * snapshots taken while it was staged could record it only as of before
 * its BEGIN, and a restart would otherwise fetch the whole database.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raftfsm/fsmint.h"
#include "raftfsm/snaprec.h"
#include "raftfsm/snapshot.h"
#include "vfs/filepeek.h"
#include "vfs/tpdbfile/tpdbfile.h"
#include "vfs/vfs.h"

/* How long snapshot_async waits for own writes and queued entries. */
#define SNAP_SETTLE_MS 10000
#define DURABLE_MAGIC "tpdb-durable 1"

static int syncPath(const char *path, int dir, char *errmsg)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return TPDB_OK;
        }
        tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    int rc = fsync(fd) == 0 ? TPDB_OK : TPDB_IOERR;
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "fsync %s: %s", path, strerror(errno));
    }
    close(fd);
    return rc;
}

/* fsyncs a database's WAL, then its main file. The main file is opened
 * through filepeek.h, since closing a descriptor of our own would drop the
 * locks of the process's connections to it; SQLite never locks a -wal. */
static int syncDb(const struct fsmDb *db, char *errmsg)
{
    char wal[4096 + 8];
    struct tpdb_peek *p = NULL;
    snprintf(wal, sizeof wal, "%s-wal", db->path);
    int rc = syncPath(wal, 0, errmsg);
    if (rc == TPDB_OK) {
        rc = tpdbPeekOpen(db->path, &p, errmsg);
        if (rc == TPDB_OK) {
            rc = tpdbPeekSync(p, errmsg);
            tpdbPeekClose(p);
        } else if (rc == TPDB_NOTFOUND) {
            rc = TPDB_OK;
        }
    }
    return rc;
}

int fsmDurableLoad(struct fsmState *s, char *errmsg)
{
    char line[TPDB_DBNAME_MAX + 64];
    char *path = fsmJoinPath(s->metaDir, "durable");
    if (path == NULL) {
        return TPDB_NOMEM;
    }
    FILE *f = fopen(path, "r");
    int rc = TPDB_OK;
    if (f == NULL) {
        rc = errno == ENOENT ? TPDB_OK : TPDB_IOERR;
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        }
        tpdb_free(path);
        return rc;
    }
    if (fgets(line, sizeof line, f) == NULL ||
        strncmp(line, DURABLE_MAGIC, strlen(DURABLE_MAGIC)) != 0) {
        /* Unreadable: nothing counts as durable, so every database is
         * fetched again rather than trusted. */
        tpdbLog(TPDB_LOG_WARN, "%s is not a durable file: ignored", path);
    } else {
        while (fgets(line, sizeof line, f) != NULL) {
            uint64_t index = 0;
            int at = 0;
            line[strcspn(line, "\n")] = '\0';
            if (sscanf(line, "%" SCNu64 " %n", &index, &at) != 1 || at == 0) {
                continue;
            }
            struct fsmDb *db = fsmDbFind(s, line + at);
            if (db != NULL) {
                db->durable = index;
            }
        }
    }
    fclose(f);
    tpdb_free(path);
    return rc;
}

/* Writes the durable file's text to `tmp` and syncs it. */
static int durableWrite(struct fsmState *s, const char *tmp, char *errmsg)
{
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        tpdbErrf(errmsg, "create %s: %s", tmp, strerror(errno));
        return TPDB_IOERR;
    }
    int ok = fprintf(f, "%s\n", DURABLE_MAGIC) > 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL && ok; db = db->next) {
        ok = fprintf(f, "%" PRIu64 " %s\n", db->durable, db->name) > 0;
    }
    pthread_mutex_unlock(&s->mutex);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0 || !ok) {
        tpdbErrf(errmsg, "write %s: %s", tmp, strerror(errno));
        return errno == ENOSPC ? TPDB_FULL : TPDB_IOERR;
    }
    return TPDB_OK;
}

int fsmDurableSave(struct fsmState *s, char *errmsg)
{
    char *path = fsmJoinPath(s->metaDir, "durable");
    char *tmp = fsmJoinPath(s->metaDir, "durable.tmp");
    int rc = path != NULL && tmp != NULL ? TPDB_OK : TPDB_NOMEM;
    pthread_mutex_lock(&s->durableMutex);
    if (rc == TPDB_OK) {
        rc = durableWrite(s, tmp, errmsg);
    }
    if (rc == TPDB_OK && rename(tmp, path) != 0) {
        tpdbErrf(errmsg, "rename %s: %s", tmp, strerror(errno));
        rc = TPDB_IOERR;
    }
    if (rc == TPDB_OK) {
        rc = syncPath(s->metaDir, 1, errmsg);
    }
    pthread_mutex_unlock(&s->durableMutex);
    tpdb_free(path);
    tpdb_free(tmp);
    return rc;
}

void tpdbFsmSetLogBudget(struct raft_fsm *fsm,
                         uint64_t bytes,
                         unsigned threshold,
                         unsigned trailing)
{
    struct fsmState *s = fsm->data;
    s->budget = bytes;
    s->threshold = threshold;
    s->trailing = trailing;
}

void fsmLogCharge(struct fsmState *s, size_t len)
{
    struct raft *r = s->raft;
    s->logBytes += len;
    if (s->budget == 0 || r == NULL || s->logBytes < s->budget) {
        return;
    }
    /* raft 0.15 snapshots by entry count only: lower the threshold to the
     * entries applied since the last snapshot, this one included. */
    raft_index since = raft_last_applied(r) + 1 - r->log.snapshot.last_index;
    if (since < s->threshold) {
        raft_set_snapshot_threshold(r, since > 0 ? (unsigned)since : 1);
    }
}

/* How many of the log's newest entries fit in max_bytes (at most
 * max_entries): the trailing entries a snapshot keeps. raft.h's log is a
 * circular buffer of entries [front, back). */
static unsigned trailingThatFits(const struct raft_log *log,
                                 uint64_t max_bytes,
                                 unsigned max_entries)
{
    size_t n = log->back >= log->front ? log->back - log->front
                                       : log->size - log->front + log->back;
    uint64_t bytes = 0;
    unsigned k = 0;
    while (k < n && k < max_entries) {
        size_t i = (log->back + log->size - 1 - k) % log->size;
        bytes += log->entries[i].buf.len;
        if (bytes > max_bytes) {
            break;
        }
        k++;
    }
    return k;
}

/* Before a snapshot: keep only as many trailing entries as fit in half the
 * budget; after it: the configured threshold and trailing again. */
static void budgetBefore(struct fsmState *s)
{
    if (s->budget > 0 && s->raft != NULL) {
        raft_set_snapshot_trailing(
            s->raft,
            trailingThatFits(&s->raft->log, s->budget / 2, s->trailing));
    }
}

static void budgetAfter(struct fsmState *s)
{
    if (s->budget > 0 && s->raft != NULL) {
        s->logBytes = 0;
        raft_set_snapshot_threshold(s->raft, s->threshold);
    }
#ifdef __GLIBC__
    /* raft frees the compacted entries once the snapshot is stored; large
     * entries live on the heap, which glibc otherwise keeps: give it back
     * so that a node's RSS follows its log. */
    malloc_trim(0);
#endif
}

void fsmSnapshotRelease(struct fsmState *s)
{
    s->nSnapDbs = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        db->inSnapshot = 0;
    }
    pthread_mutex_unlock(&s->mutex);
}

/* Whether db holds everything up to the snapshot index on its files (or in
 * the page cache, before the fsync). Mutex held. */
static int settled(const struct fsmState *s, const struct fsmDb *db)
{
    /* A database waiting for a stream keeps its durable index: its files
     * are not the state, the stream will be. */
    return db->snapSkip ||
           (db->done >= db->snapAcked &&
            (db->pendingHead == NULL || db->pendingHead->index > s->snapIndex));
}

int fsmSnapshot(struct raft_fsm *fsm,
                struct raft_buffer *bufs[],
                unsigned *n_bufs)
{
    struct fsmState *s = fsm->data;
    unsigned n = 0;
    int busy = 0;
    *bufs = NULL;
    *n_bufs = 0;
    budgetBefore(s);
    s->snapIndex = s->raft != NULL ? raft_last_applied(s->raft) : 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        db->inSnapshot = 1;
        db->snapAcked = db->acked;
        db->snapStageFirst =
            db->stage != NULL ? db->stageFirst : db->tfStageFirst;
        db->snapSkip = db->fetching;
        /* Without a worker to wait on, own writes and queued entries must
         * be done already. */
        busy |= !s->async && !settled(s, db);
        n++;
    }
    pthread_mutex_unlock(&s->mutex);
    if (busy) {
        fsmSnapshotRelease(s);
        return RAFT_BUSY;
    }
    s->nSnapDbs = n;
    if (!s->async) {
        int rv = fsmSnapshotAsync(fsm, bufs, n_bufs);
        if (rv != 0) {
            fsmSnapshotRelease(s);
        }
        return rv;
    }
    return 0;
}

/* Waits until every listed database is settled (see settled()). */
static int waitSettled(struct fsmState *s, struct fsmDb *head, char *errmsg)
{
    uint64_t deadline = tpdbNowMs() + SNAP_SETTLE_MS;
    int rc = TPDB_OK;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = head; db != NULL && rc == TPDB_OK; db = db->next) {
        while (db->inSnapshot && !settled(s, db)) {
            if (tpdbNowMs() >= deadline) {
                tpdbErrf(errmsg,
                         "%s is not written up to %llu after %u ms (a local "
                         "transaction holds its write lock?)",
                         db->name, (unsigned long long)s->snapIndex,
                         SNAP_SETTLE_MS);
                rc = TPDB_BUSY;
                break;
            }
            tpdbCondWaitMs(&s->cond, &s->mutex, 10);
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

/* Fills the record entry of one listed database: its name, kind and
 * whether (TPDB files: how many mapped pages, from the header) it holds
 * data. */
static void describeDb(const struct fsmDb *db, struct tpdb_snaprec_db *out)
{
    struct stat st;
    snprintf(out->name, sizeof out->name, "%s", db->name);
    out->image = NULL;
    if (db->tpdbFile) {
        out->kind = TPDB_SNAPREC_TPDBREF;
        out->page_size = TPDB_FILE_PAGE_SIZE;
        out->db_pages = fsmTfMappedPages(db->path);
        return;
    }
    out->kind = TPDB_SNAPREC_SQLITE;
    out->page_size = 0;
    out->db_pages = stat(db->path, &st) == 0 && st.st_size > 0 ? 1 : 0;
}

/* The record of every listed database, after they are durable. */
static int buildRecord(struct fsmState *s,
                       struct fsmDb *head,
                       void **buf,
                       size_t *len,
                       char *errmsg)
{
    struct tpdb_snaprec_db *rec =
        tpdb_calloc(s->nSnapDbs ? s->nSnapDbs : 1, sizeof *rec);
    unsigned n = 0;
    int rc = rec != NULL ? TPDB_OK : TPDB_NOMEM;
    for (struct fsmDb *db = head; db != NULL && rc == TPDB_OK; db = db->next) {
        if (db->inSnapshot && n < s->nSnapDbs) {
            describeDb(db, &rec[n]);
            n++;
        }
    }
    if (rc == TPDB_OK) {
        rc = tpdbSnaprecEncode(s->snapIndex, rec, n, buf, len, errmsg);
    }
    tpdb_free(rec);
    return rc;
}

/* Makes every listed database durable and records it. */
static int makeDurable(struct fsmState *s, struct fsmDb *head, char *errmsg)
{
    int rc = syncPath(s->dataDir, 1, errmsg);
    for (struct fsmDb *db = head; db != NULL && rc == TPDB_OK; db = db->next) {
        if (db->inSnapshot && !db->snapSkip) {
            rc = syncDb(db, errmsg);
        }
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = head; db != NULL; db = db->next) {
        /* Frames staged for a large transaction that began at or before
         * the index are not committed: the files hold only what came
         * before it. */
        uint64_t upto =
            db->snapStageFirst != 0 && db->snapStageFirst - 1 < s->snapIndex
                ? db->snapStageFirst - 1
                : s->snapIndex;
        if (db->inSnapshot && !db->snapSkip && db->durable < upto) {
            db->durable = upto;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return fsmDurableSave(s, errmsg);
}

int fsmMakeDbDurable(struct fsmState *s,
                     struct fsmDb *db,
                     uint64_t index,
                     char *errmsg)
{
    int rc = syncPath(s->dataDir, 1, errmsg);
    if (rc == TPDB_OK) {
        rc = syncDb(db, errmsg);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    int changed = 0;
    pthread_mutex_lock(&s->mutex);
    /* A database that waits for a stream is not its files any more. */
    if (!db->fetching && db->durable < index) {
        db->durable = index;
        changed = 1;
    }
    pthread_mutex_unlock(&s->mutex);
    if (changed) {
        rc = fsmDurableSave(s, errmsg);
    }
    if (rc == TPDB_OK && changed) {
        pthread_mutex_lock(&s->mutex);
        s->stats.durable_points++;
        pthread_mutex_unlock(&s->mutex);
    }
    return rc;
}

int fsmSnapshotAsync(struct raft_fsm *fsm,
                     struct raft_buffer *bufs[],
                     unsigned *n_bufs)
{
    struct fsmState *s = fsm->data;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    void *out = NULL;
    size_t outLen = 0;
    pthread_mutex_lock(&s->mutex);
    struct fsmDb *head = s->dbs;
    pthread_mutex_unlock(&s->mutex);
    int rc = waitSettled(s, head, errmsg);
    if (rc == TPDB_OK) {
        rc = makeDurable(s, head, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = buildRecord(s, head, &out, &outLen, errmsg);
    }
    if (rc == TPDB_OK) {
        *bufs = raft_malloc(sizeof **bufs);
        rc = *bufs != NULL ? TPDB_OK : TPDB_NOMEM;
    }
    if (rc != TPDB_OK) {
        raft_free(out);
        tpdbLog(rc == TPDB_BUSY ? TPDB_LOG_WARN : TPDB_LOG_ERROR,
                "snapshot at %llu: %s", (unsigned long long)s->snapIndex,
                errmsg);
        return rc == TPDB_NOMEM ? RAFT_NOMEM
                                : (rc == TPDB_BUSY ? RAFT_BUSY : RAFT_IOERR);
    }
    (*bufs)[0].base = out;
    (*bufs)[0].len = outLen;
    *n_bufs = 1;
    pthread_mutex_lock(&s->mutex);
    s->stats.snapshots++;
    pthread_mutex_unlock(&s->mutex);
    return 0;
}

int fsmSnapshotFinalize(struct raft_fsm *fsm,
                        struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct fsmState *s = fsm->data;
    if (*bufs != NULL) {
        for (unsigned i = 0; i < *n_bufs; i++) {
            raft_free((*bufs)[i].base);
        }
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    fsmSnapshotRelease(s);
    budgetAfter(s);
    return 0;
}

/* A TPDB file from its image in a record of the earlier format, unless the
 * local one is durable at the index already. */
static int restoreTpdbFile(struct fsmState *s,
                           struct fsmDb *db,
                           const struct tpdb_snaprec_db *r,
                           uint64_t index,
                           int keep,
                           char *errmsg)
{
    struct tpdb_txn txn;
    fsmMarkTpdbFile(s, db);
    if (keep || r->db_pages == 0) {
        return TPDB_OK;
    }
    int rc = fsmImageTxn(&txn, r->image, r->page_size, r->db_pages);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tpdb_file_apply(db->path, &txn, errmsg);
    tpdb_free(txn.pages);
    (void)index;
    return rc;
}

/* Marks db as waiting for a stream that holds index and asks for one. */
static int awaitStream(struct fsmState *s,
                       struct fsmDb *db,
                       uint64_t index,
                       char *errmsg)
{
    pthread_mutex_lock(&s->mutex);
    db->fetching = 1;
    db->fetchMin = index;
    pthread_mutex_unlock(&s->mutex);
    tpdbLog(TPDB_LOG_INFO, "%s: local copy is behind index %llu; fetching it",
            db->name, (unsigned long long)index);
    if (s->fetcher.start == NULL) {
        tpdbErrf(errmsg, "%s must be fetched from a peer, but no fetcher",
                 db->name);
        return TPDB_INVALID;
    }
    s->fetcher.start(s->fetcher.arg, db->name, index);
    return TPDB_OK;
}

/* Decides, for one database of the record, whether it stays or waits for a
 * stream. */
static int restoreOne(struct fsmState *s,
                      const struct tpdb_snaprec_db *r,
                      uint64_t index,
                      char *errmsg)
{
    struct fsmDb *db;
    int created = 0;
    int rc = fsmDbGet(s, r->name, &db, &created, errmsg);
    if (rc == TPDB_OK && created) {
        rc = fsmMoveAsideIfData(db, errmsg);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    fsmPendingClear(s, db); /* older than the record */
    pthread_mutex_lock(&s->mutex);
    int keep = !created && db->durable >= index;
    pthread_mutex_unlock(&s->mutex);
    if (r->kind == TPDB_SNAPREC_TPDBFILE) {
        return restoreTpdbFile(s, db, r, index, keep && db->tpdbFile, errmsg);
    }
    if (r->kind == TPDB_SNAPREC_TPDBREF) {
        fsmMarkTpdbFile(s, db);
        if (r->db_pages == 0 || (keep && fsmTfUsable(db->path))) {
            return TPDB_OK;
        }
        return awaitStream(s, db, index, errmsg);
    }
    if (r->db_pages == 0 ||
        (keep && fsmFileStartsWith(db->path, "SQLite format 3", 16))) {
        return TPDB_OK;
    }
    return awaitStream(s, db, index, errmsg);
}

/* Restores a snapshot of the earlier format: each whole image applied as
 * one transaction. */
static int restoreLegacyDb(void *arg,
                           const struct tpdb_snapshot_db *sdb,
                           char *errmsg)
{
    struct fsmState *s = arg;
    struct fsmDb *db;
    struct tpdb_txn txn;
    int created = 0;
    int rc = fsmDbGet(s, sdb->name, &db, &created, errmsg);
    if (rc == TPDB_OK && created) {
        rc = fsmMoveAsideIfData(db, errmsg);
    }
    if (rc != TPDB_OK || sdb->db_pages == 0) {
        return rc;
    }
    fsmPendingClear(s, db);
    if (sdb->page_size == TPDB_FILE_PAGE_SIZE &&
        memcmp(sdb->image, "TPANDADB", 8) == 0) {
        fsmMarkTpdbFile(s, db);
    }
    rc = fsmImageTxn(&txn, sdb->image, sdb->page_size, sdb->db_pages);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = fsmApplyTxn(s, db, &txn, 0, 10000, errmsg);
    tpdb_free(txn.pages);
    return rc;
}

static int restoreRecord(struct fsmState *s,
                         const struct raft_buffer *buf,
                         char *errmsg)
{
    struct tpdb_snaprec_db *dbs = NULL;
    unsigned n = 0;
    uint64_t index = 0;
    int rc = tpdbSnaprecDecode(buf->base, buf->len, &index, &dbs, &n, errmsg);
    if (rc == TPDB_OK) {
        /* The state machine is at the record's index now: a stream served
         * at exactly that index needs no further entry. */
        pthread_mutex_lock(&s->mutex);
        s->lastApplied = index > s->lastApplied ? index : s->lastApplied;
        pthread_mutex_unlock(&s->mutex);
    }
    for (unsigned i = 0; rc == TPDB_OK && i < n; i++) {
        rc = restoreOne(s, &dbs[i], index, errmsg);
    }
    tpdb_free(dbs);
    return rc;
}

int fsmRestore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct fsmState *s = fsm->data;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    uint64_t applied = 0;
    uint64_t t0 = tpdbNowMs();
    int rc;
    if (tpdbSnaprecIs(buf->base, buf->len)) {
        rc = restoreRecord(s, buf, errmsg);
    } else {
        rc = tpdbSnapshotDecode(buf->base, buf->len, &applied, restoreLegacyDb,
                                s, errmsg);
    }
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "restore snapshot: %s", errmsg);
        return rc == TPDB_NOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    raft_free(buf->base);
    tpdbLog(TPDB_LOG_DEBUG, "snapshot restored in %llu ms",
            (unsigned long long)(tpdbNowMs() - t0));
    pthread_mutex_lock(&s->mutex);
    s->stats.restores++;
    pthread_mutex_unlock(&s->mutex);
    return 0;
}
