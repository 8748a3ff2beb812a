/*
 * The replicated state machine (see fsm.h): databases, apply, the queue of
 * entries not yet written, proposals. Snapshots and restore are in
 * fsm_snapshot.c, streams to and from peers in fsm_stream.c.
 *
 * Apply: an entry this node instance proposed is only acknowledged (its
 * frames are written by the proposing SQLite connection once the commit
 * hook returns); any other entry is decoded and appended to the database's
 * WAL through tpdbVfsApply on an internal, idle connection. An entry that
 * cannot be written at once (a local connection holds the
 * write lock), or whose database waits for a stream, is queued in order
 * and written by tpdbFsmDrain (or by the stream's commit), so the loop
 * thread never blocks for long and raft never sees a failed apply.
 *
 * TPDB page files (TPDB_ENTRY_TPDBFILE, entry.h) are applied with
 * tpdb_file_apply, which needs the file's exclusive flock and fsyncs: in a
 * node (an async FSM) their entries always go through the queue and the
 * checkpointer thread writes them (fsm_checkpoint.c), retrying while a
 * local handle holds the file; without that thread, as for SQLite.
 */
#include "raftfsm/fsm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsmint.h"
#include "vfs/filepeek.h"
#include "vfs/tpdbfile/tpdbfile.h"
#include "vfs/vfs.h"

char *fsmJoinPath(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = tpdb_malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

/* Appends name to the manifest of replicated databases and syncs it. */
static int manifestAdd(struct fsmState *s, const char *name, char *errmsg)
{
    char *path = fsmJoinPath(s->metaDir, "databases");
    int rc = TPDB_OK;
    int fd;
    if (path == NULL) {
        return TPDB_NOMEM;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        rc = TPDB_IOERR;
        goto out;
    }
    size_t len = strlen(name);
    if (write(fd, name, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0) {
        tpdbErrf(errmsg, "write %s: %s", path, strerror(errno));
        rc = TPDB_IOERR;
    }
    close(fd);
out:
    tpdb_free(path);
    return rc;
}

struct fsmDb *fsmDbFind(struct fsmState *s, const char *name)
{
    struct fsmDb *db;
    pthread_mutex_lock(&s->mutex);
    for (db = s->dbs; db != NULL; db = db->next) {
        if (strcmp(db->name, name) == 0) {
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return db;
}

int fsmFileStartsWith(const char *path, const char *magic, size_t n)
{
    char head[32];
    size_t got = n <= sizeof head ? tpdbPeekHead(path, head, n) : 0;
    return got == n && memcmp(head, magic, n) == 0;
}

int fsmImageTxn(struct tpdb_txn *txn,
                const uint8_t *image,
                uint32_t page_size,
                uint32_t pages)
{
    txn->page_size = page_size;
    txn->db_pages = pages;
    txn->n_pages = pages;
    txn->pages = tpdb_malloc(sizeof *txn->pages * (pages ? pages : 1));
    if (txn->pages == NULL) {
        return TPDB_NOMEM;
    }
    for (uint32_t i = 0; i < pages; i++) {
        txn->pages[i].pgno = i + 1;
        txn->pages[i].data = image + (size_t)i * page_size;
    }
    return TPDB_OK;
}

/* Adds database `name` to the list; with `manifest` also to the manifest
 * (a database this node meets for the first time). `sqlite` says that the
 * caller knows it is a SQLite database (an entry of a SQLite transaction
 * or image made it): its file is not read to tell. */
static int dbCreate(struct fsmState *s,
                    const char *name,
                    int manifest,
                    int sqlite,
                    struct fsmDb **out,
                    char *errmsg)
{
    struct fsmDb *db = tpdb_calloc(1, sizeof *db);
    int rc = TPDB_NOMEM;
    if (db == NULL) {
        return TPDB_NOMEM;
    }
    db->name = tpdb_strdup(name);
    db->path = fsmJoinPath(s->dataDir, name);
    if (db->name != NULL && db->path != NULL) {
        rc = manifest ? manifestAdd(s, name, errmsg) : TPDB_OK;
    }
    if (rc != TPDB_OK) {
        tpdb_free(db->name);
        tpdb_free(db->path);
        tpdb_free(db);
        return rc;
    }
    /* A TPDB page file starts with the TPDB magic, never a SQLite
     * database. The peek opens the file through SQLite's unix VFS (its
     * POSIX locks), which allocates from SQLite's heap: on the loop thread
     * that would take an allocation failure meant for a connection of the
     * process (SQLite's malloc fault injection: backup_malloc.test), so it
     * is skipped when the entry already says. */
    db->tpdbFile = !sqlite && fsmFileStartsWith(db->path, "TPANDADB", 8);
    pthread_mutex_lock(&s->mutex);
    db->next = s->dbs;
    s->dbs = db;
    pthread_mutex_unlock(&s->mutex);
    *out = db;
    return TPDB_OK;
}

/* fsmDbGet; `sqlite` as for dbCreate. */
static int dbGet(struct fsmState *s,
                 const char *name,
                 int sqlite,
                 struct fsmDb **out,
                 int *created,
                 char *errmsg)
{
    *created = 0;
    *out = fsmDbFind(s, name);
    if (*out != NULL) {
        return TPDB_OK;
    }
    if (!tpdbDbNameValid(name)) {
        tpdbErrf(errmsg, "unsafe database name '%s'", name);
        return TPDB_CORRUPT;
    }
    int rc = dbCreate(s, name, 1, sqlite, out, errmsg);
    *created = rc == TPDB_OK;
    return rc;
}

int fsmDbGet(struct fsmState *s,
             const char *name,
             struct fsmDb **out,
             int *created,
             char *errmsg)
{
    return dbGet(s, name, 0, out, created, errmsg);
}

/* Registers the databases of the manifest (a restarted node keeps its
 * files: they are the state). */
static int manifestLoad(struct fsmState *s, char *errmsg)
{
    char line[TPDB_DBNAME_MAX + 2];
    char *path = fsmJoinPath(s->metaDir, "databases");
    int rc = TPDB_OK;
    if (path == NULL) {
        return TPDB_NOMEM;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        rc = errno == ENOENT ? TPDB_OK : TPDB_IOERR;
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        }
        tpdb_free(path);
        return rc;
    }
    while (rc == TPDB_OK && fgets(line, sizeof line, f) != NULL) {
        struct fsmDb *db;
        line[strcspn(line, "\n")] = '\0';
        if (tpdbDbNameValid(line) && fsmDbFind(s, line) == NULL) {
            rc = dbCreate(s, line, 0, 0, &db, errmsg);
        }
    }
    fclose(f);
    tpdb_free(path);
    return rc;
}

int tpdbFsmFileHoldsNoData(const char *path)
{
    uint8_t h[108];
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size == 0) {
        return 1;
    }
    /* Not fopen: its fclose would drop the locks of this process's
     * connections to the file (filepeek.h). */
    size_t got = tpdbPeekHead(path, h, sizeof h);
    if (got != sizeof h || memcmp(h, "SQLite format 3", 16) != 0) {
        return 0;
    }
    long pageSize = h[16] == 0 && h[17] == 1 ? 65536 : (h[16] << 8) | h[17];
    return st.st_size == pageSize && h[100] == 0x0D && h[103] == 0 &&
           h[104] == 0;
}

int fsmMoveAside(struct fsmDb *db, const char *why, char *errmsg)
{
    char aside[4096 + 64];
    snprintf(aside, sizeof aside, "%s.%s-%lld", db->path, why,
             (long long)time(NULL));
    if (rename(db->path, aside) != 0) {
        tpdbErrf(errmsg, "move %s aside: %s", db->path, strerror(errno));
        return TPDB_IOERR;
    }
    for (int i = 0; i < 2; i++) {
        char from[4096 + 8];
        char to[4096 + 80];
        const char *sfx = i == 0 ? "-wal" : "-shm";
        snprintf(from, sizeof from, "%s%s", db->path, sfx);
        snprintf(to, sizeof to, "%s%s", aside, sfx);
        rename(from, to);
    }
    tpdbLog(TPDB_LOG_WARN, "%s: moved to %s (%s)", db->path, aside, why);
    return TPDB_OK;
}

int fsmMoveAsideIfData(struct fsmDb *db, char *errmsg)
{
    /* Data unknown to the cluster: never overwritten. */
    return tpdbFsmFileHoldsNoData(db->path)
               ? TPDB_OK
               : fsmMoveAside(db, "orphan", errmsg);
}

int fsmOpenInternal(const char *path, sqlite3 **out, char *errmsg)
{
    char *uri = tpdbUriOfPath(path, TPDB_URI_INTERNAL "=1");
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI |
                SQLITE_OPEN_FULLMUTEX;
    int rc;
    if (uri == NULL) {
        *out = NULL;
        tpdbErrf(errmsg, "open %s: out of memory", path);
        return TPDB_NOMEM;
    }
    rc = sqlite3_open_v2(uri, out, flags, "tpdb");
    tpdb_free(uri);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "open %s: %s", path,
                 *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));
        sqlite3_close(*out);
        *out = NULL;
        return TPDB_IOERR;
    }
    sqlite3_busy_timeout(*out, FSM_INTERNAL_BUSY_MS);
    /* Internal connections never run SQLite's own autocheckpoint: they have
     * no SQLite-level writes. Checkpoints are explicit. */
    sqlite3_wal_autocheckpoint(*out, 0);
    return TPDB_OK;
}

static void maybeCheckpoint(struct fsmState *s, struct fsmDb *db)
{
    if (db->framesSinceCheckpoint < FSM_CHECKPOINT_FRAMES) {
        return;
    }
    db->framesSinceCheckpoint = 0;
    fsmCheckpointRequest(s, db);
}

static void countApplied(struct fsmState *s, const struct tpdb_txn *txn)
{
    pthread_mutex_lock(&s->mutex);
    s->stats.applied_entries++;
    s->stats.applied_pages += txn->n_pages;
    pthread_mutex_unlock(&s->mutex);
}

/* Writes a TPDB file commit through the library's own WAL protocol (always
 * synced), retrying while a handle holds the file, up to lock_ms. */
static int applyTpdbFile(struct fsmState *s,
                         struct fsmDb *db,
                         const struct tpdb_txn *txn,
                         unsigned lock_ms,
                         char *errmsg)
{
    uint64_t deadline = tpdbNowMs() + lock_ms;
    int rc;
    while ((rc = tpdb_file_apply(db->path, txn, errmsg)) == TPDB_BUSY &&
           tpdbNowMs() < deadline) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc == TPDB_OK) {
        countApplied(s, txn);
    }
    return rc;
}

uint64_t fsmFileId(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return 0;
    }
    return ((uint64_t)st.st_dev << 40) ^ (uint64_t)st.st_ino ^ 1;
}

int fsmApplierConn(struct fsmState *s, struct fsmDb *db, char *errmsg)
{
    pthread_mutex_lock(&s->mutex);
    int reopen = db->reopen;
    db->reopen = 0;
    pthread_mutex_unlock(&s->mutex);
    /* A file deleted or replaced under the node: writing the old one would
     * lose the entry, and its WAL-index may be the new file's. */
    if (db->conn != NULL && fsmFileId(db->path) != db->connId) {
        reopen = 1;
    }
    if (reopen && db->conn != NULL) {
        sqlite3_close(db->conn);
        db->conn = NULL;
    }
    if (db->conn != NULL) {
        return TPDB_OK;
    }
    uint64_t t0 = tpdbNowMs();
    int rc = fsmOpenInternal(db->path, &db->conn, errmsg);
    db->connId = rc == TPDB_OK ? fsmFileId(db->path) : 0;
    tpdbLog(TPDB_LOG_DEBUG, "%s: applier connection opened in %llu ms",
            db->name, (unsigned long long)(tpdbNowMs() - t0));
    return rc;
}

void fsmMarkWritten(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    pthread_mutex_lock(&s->mutex);
    if (index > db->written) {
        db->written = index;
    }
    pthread_mutex_unlock(&s->mutex);
}

void fsmAfterWrite(struct fsmState *s,
                   struct fsmDb *db,
                   const struct tpdb_txn *txn,
                   uint64_t index)
{
    db->framesSinceCheckpoint += txn->n_pages;
    countApplied(s, txn);
    fsmMarkWritten(s, db, index);
    maybeCheckpoint(s, db);
}

int fsmCreateWalDb(sqlite3 *conn,
                   const char *path,
                   uint32_t page_size,
                   char *errmsg)
{
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > 0) {
        return TPDB_OK;
    }
    char *sql = sqlite3_mprintf("PRAGMA page_size=%u; PRAGMA journal_mode=WAL;",
                                page_size);
    int rc =
        sql != NULL && sqlite3_exec(conn, sql, NULL, NULL, NULL) == SQLITE_OK
            ? TPDB_OK
            : TPDB_IOERR;
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "create %s: %s", path, sqlite3_errmsg(conn));
    }
    sqlite3_free(sql);
    return rc;
}

int fsmApplyTxn(struct fsmState *s,
                struct fsmDb *db,
                const struct tpdb_txn *txn,
                uint64_t index,
                unsigned lock_ms,
                char *errmsg)
{
    if (db->tpdbFile) {
        int rc = applyTpdbFile(s, db, txn, lock_ms, errmsg);
        if (rc == TPDB_OK) {
            fsmMarkWritten(s, db, index);
        }
        return rc;
    }
    int rc = fsmApplierConn(s, db, errmsg);
    if (rc == TPDB_OK) {
        rc = tpdbVfsApply(db->conn, txn, 0, lock_ms, errmsg);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    fsmAfterWrite(s, db, txn, index);
    return TPDB_OK;
}

static uint64_t appliedIndex(struct fsmState *s)
{
    return s->raft != NULL ? raft_last_applied(s->raft) + 1 : 0;
}

/* Acknowledges an own entry: returns 1 if `seq` was a registered proposal. */
static int ackOwn(struct fsmState *s, struct fsmDb *db, uint64_t seq, int type)
{
    /* A non-final part of a large transaction is acknowledged, but the
     * transaction is written (and counted as in flight) only after its
     * end. */
    int counts = type != TPDB_ENTRY_CHUNK_BEGIN && type != TPDB_ENTRY_CHUNK &&
                 type != TPDB_ENTRY_TPDBFILE_BEGIN &&
                 type != TPDB_ENTRY_TPDBFILE_DELTA;
    struct tpdb_proposal *p;
    int found = 0;
    pthread_mutex_lock(&s->mutex);
    for (p = s->proposals; p != NULL; p = p->next) {
        if (p->seq == seq && p->state == TPDB_BUSY) {
            p->state = TPDB_OK;
            if (counts) {
                db->acked++;
                db->lastAckIndex = appliedIndex(s);
                db->lastAckEnd = type == TPDB_ENTRY_CHUNK_END && !db->tpdbFile
                                     ? db->lastAckIndex
                                     : 0;
            }
            s->stats.own_entries++;
            found = 1;
            pthread_cond_broadcast(&s->cond);
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return found;
}

/* Whether this node is the configuration's only voter (loop thread). */
static int soleVoter(const struct fsmState *s)
{
    const struct raft_configuration *conf =
        s->raft != NULL ? &s->raft->configuration : NULL;
    unsigned voters = 0;
    int self = 0;
    for (unsigned i = 0; conf != NULL && i < conf->n; i++) {
        if (conf->servers[i].role == RAFT_VOTER) {
            voters++;
            self |= conf->servers[i].id == s->raft->id;
        }
    }
    return voters == 1 && self;
}

static void ownCopyDrop(struct fsmDb *db)
{
    tpdb_free(db->ownCopy);
    db->ownCopy = NULL;
    db->ownCopyLen = 0;
    db->ownCopyIndex = 0;
}

/* Keeps a copy of own entry buf of db at index, if it is a whole
 * transaction and this node the only voter (struct fsmDb's ownCopy); drops
 * the kept one in any case, and keeps none if buf is NULL. A copy that
 * cannot be made leaves none: the database then waits for a fetch, as in
 * a cluster. */
static void ownKeep(struct fsmState *s,
                    struct fsmDb *db,
                    const struct raft_buffer *buf,
                    int type,
                    uint64_t index)
{
    void *copy = NULL;
    if (buf != NULL && type == TPDB_ENTRY_TXN && !db->tpdbFile &&
        soleVoter(s)) {
        copy = tpdb_malloc(buf->len);
        if (copy != NULL) {
            memcpy(copy, buf->base, buf->len);
        }
    }
    pthread_mutex_lock(&s->mutex);
    ownCopyDrop(db);
    if (copy != NULL) {
        db->ownCopy = copy;
        db->ownCopyLen = buf->len;
        db->ownCopyIndex = index;
    }
    pthread_mutex_unlock(&s->mutex);
}

static void fetchFrom(struct fsmState *s, struct fsmDb *db, uint64_t index);

/* The queue of db passed its bound: a local connection has held the write
 * lock for long. Rather than grow, the queue is dropped and the database
 * will be replaced by a stream holding at least `index`, once the lock is
 * free; snapshots go on meanwhile (fsm_snapshot.c skips it). */
static void queueOverflow(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    tpdbLog(TPDB_LOG_WARN,
            "%s: %u entries wait for the write lock a local connection "
            "holds; they are dropped and the database will be fetched "
            "from a peer once the lock is free",
            db->name, db->nQueued);
    fsmPendingClear(s, db);
    fetchFrom(s, db, index);
}

/* Marks db as waiting for a stream holding `index` and asks for one. */
static void fetchFrom(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    pthread_mutex_lock(&s->mutex);
    db->fetching = 1;
    db->fetchMin = index > db->fetchMin ? index : db->fetchMin;
    pthread_mutex_unlock(&s->mutex);
    if (s->fetcher.start != NULL) {
        s->fetcher.start(s->fetcher.arg, db->name, index);
    }
}

/* Logs that entry index of db could not be written (errmsg), at most once
 * per FSM_ERRLOG_MS for the same entry, saying how often it failed in
 * between: a queue retried every few ms on a full disk would otherwise
 * write the same line a hundred times a second. */
static void logApplyError(struct fsmState *s,
                          struct fsmDb *db,
                          uint64_t index,
                          const char *errmsg)
{
    uint64_t now = tpdbNowMs();
    unsigned repeats = 0;
    pthread_mutex_lock(&s->mutex);
    int quiet = db->errIndex == index && now < db->errLoggedAt + FSM_ERRLOG_MS;
    if (quiet) {
        db->errRepeats++;
    } else {
        repeats = db->errIndex == index ? db->errRepeats : 0;
        db->errIndex = index;
        db->errLoggedAt = now;
        db->errRepeats = 0;
    }
    pthread_mutex_unlock(&s->mutex);
    if (quiet) {
        return;
    }
    if (repeats > 0) {
        tpdbLog(TPDB_LOG_ERROR,
                "apply entry %llu to %s: %s (failed %u more times since the "
                "last report)",
                (unsigned long long)index, db->name, errmsg, repeats);
    } else {
        tpdbLog(TPDB_LOG_ERROR, "apply entry %llu to %s: %s",
                (unsigned long long)index, db->name, errmsg);
    }
}

/* Queues a decoded entry of db for a later write; takes e's payload. */
static int pendingPush(struct fsmState *s,
                       struct fsmDb *db,
                       struct tpdb_entry *e,
                       uint64_t index)
{
    struct fsmPending *p = tpdb_malloc(sizeof *p);
    if (p == NULL) {
        return TPDB_NOMEM;
    }
    p->entry = *e;
    p->index = index;
    p->next = NULL;
    e->payload = NULL;
    pthread_mutex_lock(&s->mutex);
    if (db->pendingTail != NULL) {
        db->pendingTail->next = p;
    } else {
        db->pendingHead = p;
    }
    db->pendingTail = p;
    s->nPending++;
    db->nQueued++;
    db->queuedBytes += (uint64_t)p->entry.txn.n_pages * p->entry.txn.page_size;
    int over = !db->fetchActive && (db->nQueued > s->queueMax ||
                                    db->queuedBytes > s->queueBytesMax);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mutex);
    if (over) {
        queueOverflow(s, db, index);
    }
    return TPDB_OK;
}

static void pendingPop(struct fsmState *s, struct fsmDb *db)
{
    pthread_mutex_lock(&s->mutex);
    struct fsmPending *p = db->pendingHead;
    db->pendingHead = p->next;
    if (db->pendingHead == NULL) {
        db->pendingTail = NULL;
    }
    s->nPending--;
    db->nQueued--;
    db->queuedBytes -= (uint64_t)p->entry.txn.n_pages * p->entry.txn.page_size;
    pthread_mutex_unlock(&s->mutex);
    tpdbEntryRelease(&p->entry);
    tpdb_free(p);
}

void fsmPendingClear(struct fsmState *s, struct fsmDb *db)
{
    pthread_mutex_lock(&s->mutex);
    struct fsmPending *rest = db->pendingHead;
    if (db->tfWriting && rest != NULL) {
        /* The thread writing the head frees it. */
        db->tfDropHead = 1;
        db->pendingTail = rest;
        struct fsmPending *head = rest;
        rest = head->next;
        head->next = NULL;
    } else {
        db->pendingHead = NULL;
        db->pendingTail = NULL;
    }
    for (struct fsmPending *p = rest; p != NULL; p = p->next) {
        s->nPending--;
        db->nQueued--;
        db->queuedBytes -=
            (uint64_t)p->entry.txn.n_pages * p->entry.txn.page_size;
    }
    pthread_mutex_unlock(&s->mutex);
    while (rest != NULL) {
        struct fsmPending *p = rest;
        rest = p->next;
        tpdbEntryRelease(&p->entry);
        tpdb_free(p);
    }
}

void fsmMarkTpdbFile(struct fsmState *s, struct fsmDb *db)
{
    if (!db->tpdbFile) {
        /* Under the mutex: the checkpointer thread reads it there. */
        pthread_mutex_lock(&s->mutex);
        db->tpdbFile = 1;
        pthread_mutex_unlock(&s->mutex);
    }
}

int fsmTfReady(const struct fsmDb *db, uint64_t now)
{
    return db->tpdbFile && db->pendingHead != NULL && !db->fetching &&
           !db->fetchActive && !db->tfWriting && now >= db->tfRetryAt;
}

void fsmTfWriteHead(struct fsmState *s, struct fsmDb *db)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    pthread_mutex_lock(&s->mutex);
    struct fsmPending *p = db->pendingHead;
    pthread_mutex_unlock(&s->mutex);
    uint64_t index = p->index;
    int rc = fsmApplyEntry(s, db, &p->entry, index, 0, errmsg);
    pthread_mutex_lock(&s->mutex);
    db->tfWriting = 0;
    int pop = rc == TPDB_OK || db->tfDropHead;
    db->tfDropHead = 0;
    if (pop) {
        db->pendingHead = p->next;
        if (db->pendingHead == NULL) {
            db->pendingTail = NULL;
        }
        s->nPending--;
        db->nQueued--;
        db->queuedBytes -=
            (uint64_t)p->entry.txn.n_pages * p->entry.txn.page_size;
    } else {
        /* A handle holds the file (or the disk failed): retry soon, and
         * let the checkpoints of other databases run meanwhile. */
        db->tfRetryAt = tpdbNowMs() + (rc == TPDB_BUSY ? 5 : 100);
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mutex);
    /* p is not read once the mutex is dropped: with tfWriting cleared the
     * loop thread may clear the queue (fsmPendingClear) and free it. */
    if (!pop && rc != TPDB_BUSY) {
        logApplyError(s, db, index, errmsg);
    }
    if (pop) {
        tpdbEntryRelease(&p->entry);
        tpdb_free(p);
    }
}

/* Writes db's queued entries in order until one cannot be written yet. */
static void pendingDrain(struct fsmState *s, struct fsmDb *db, unsigned lock_ms)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    for (;;) {
        pthread_mutex_lock(&s->mutex);
        struct fsmPending *p = db->fetching ? NULL : db->pendingHead;
        pthread_mutex_unlock(&s->mutex);
        if (p == NULL) {
            return;
        }
        int rc = fsmApplyEntry(s, db, &p->entry, p->index, lock_ms, errmsg);
        if (rc != TPDB_OK) {
            if (rc != TPDB_BUSY) {
                logApplyError(s, db, p->index, errmsg);
            }
            return;
        }
        pendingPop(s, db);
    }
}

/* Whether db's entries must wait in the queue; records the index. */
static int mustQueue(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    pthread_mutex_lock(&s->mutex);
    s->lastApplied = index;
    s->lastStored = s->raft != NULL ? s->raft->last_stored : 0;
    db->lastSeen = index;
    int queue = db->fetching || db->pendingHead != NULL;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mutex);
    return queue;
}

/* Raft 0.15 stops applying for good when apply fails, so apply never
 * fails for a condition that passes: an entry that cannot be written yet
 * (write lock held by a local connection, disk full, a stream awaited) is
 * queued in order and written later. Only an entry that can never be read
 * stops the node, since skipping it would diverge. */
static int fsmApply(struct raft_fsm *fsm,
                    const struct raft_buffer *buf,
                    void **result)
{
    struct fsmState *s = fsm->data;
    struct tpdb_entry e;
    struct fsmDb *db;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    uint64_t index = appliedIndex(s);
    int created = 0;
    int rc;

    *result = NULL;
    fsmLogCharge(s, buf->len);
    rc = tpdbEntryPeek(buf->base, buf->len, &e, errmsg);
    if (rc == TPDB_OK && !tpdbDbNameValid(e.db)) {
        /* No node of this version proposes such a name (encoding refuses
         * it). Every node skips it alike, so skipping cannot diverge,
         * whereas failing would stop applying for good. */
        tpdbLog(TPDB_LOG_ERROR,
                "apply entry %llu: database name '%s' not allowed; entry "
                "skipped",
                (unsigned long long)index, e.db);
        return 0;
    }
    if (rc == TPDB_OK) {
        rc = dbGet(s, e.db,
                   e.type == TPDB_ENTRY_TXN || e.type == TPDB_ENTRY_IMAGE, &db,
                   &created, errmsg);
    }
    if (rc == TPDB_OK &&
        (e.type == TPDB_ENTRY_TPDBFILE || e.type == TPDB_ENTRY_TPDBFILE_BEGIN ||
         e.type == TPDB_ENTRY_TPDBFILE_DELTA)) {
        fsmMarkTpdbFile(s, db);
    }
    if (rc == TPDB_OK && e.origin == s->origin) {
        /* Kept before the acknowledgement: the client may write, and fail
         * to, as soon as it is acknowledged. */
        ownKeep(s, db, buf, e.type, index);
        /* Recorded before the acknowledgement too: once woken, the client
         * writes the entry's frames, and a checkpoint that then copies
         * them must see this index as applied (ckptSyncSkip compares it
         * with what the local log holds on disk). */
        mustQueue(s, db, index);
        if (ackOwn(s, db, e.seq, e.type)) {
            return 0;
        }
        ownKeep(s, db, NULL, e.type, index);
    }
    if (rc == TPDB_OK && created) {
        rc = fsmMoveAsideIfData(db, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdbEntryDecode(buf->base, buf->len, &e, errmsg);
    }
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "apply entry %llu: %s",
                (unsigned long long)index, errmsg);
        return rc == TPDB_NOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    /* TPDB page files are written with fsyncs: off the loop, when the
     * checkpointer thread runs. */
    int offLoop = db->tpdbFile && s->ckptRunning;
    if (!mustQueue(s, db, index) && !offLoop) {
        rc = fsmApplyEntry(s, db, &e, index, FSM_APPLY_LOCK_MS, errmsg);
        if (rc == TPDB_OK) {
            tpdbEntryRelease(&e);
            return 0;
        }
        tpdbLog(rc == TPDB_BUSY ? TPDB_LOG_DEBUG : TPDB_LOG_ERROR,
                "apply entry %llu to %s: %s; queued", (unsigned long long)index,
                db->name, errmsg);
    }
    rc = pendingPush(s, db, &e, index);
    tpdbEntryRelease(&e);
    if (offLoop) {
        fsmCheckpointWake(s);
    }
    return rc == TPDB_OK ? 0 : RAFT_NOMEM;
}

void tpdbFsmDrain(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (db->tpdbFile && s->ckptRunning) {
            continue; /* the checkpointer thread writes these */
        }
        if (db->pendingHead != NULL) {
            pendingDrain(s, db, 0);
        }
    }
}

unsigned tpdbFsmPending(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    unsigned n;
    pthread_mutex_lock(&s->mutex);
    n = s->nPending;
    pthread_mutex_unlock(&s->mutex);
    return n;
}

unsigned tpdbFsmPendingFor(struct raft_fsm *fsm, const char *name)
{
    struct fsmState *s = fsm->data;
    unsigned n = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (strcmp(db->name, name) != 0) {
            continue;
        }
        /* A database waiting for a stream counts as one more. */
        n += db->fetching ? 1 : 0;
        for (struct fsmPending *p = db->pendingHead; p != NULL; p = p->next) {
            n++;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return n;
}

uint64_t tpdbFsmWrittenIndex(struct raft_fsm *fsm, uint64_t applied)
{
    struct fsmState *s = fsm->data;
    uint64_t written = applied;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (db->fetching && db->fetchMin - 1 < written) {
            written = db->fetchMin - 1;
        }
        if (db->pendingHead != NULL && db->pendingHead->index <= written) {
            written = db->pendingHead->index - 1;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return written;
}

void tpdbFsmDbStates(struct raft_fsm *fsm,
                     uint64_t applied,
                     void (*fn)(void *arg,
                                const struct tpdb_fsm_db_state *state),
                     void *arg)
{
    struct fsmState *s = fsm->data;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        /* As tpdbFsmWrittenIndex, for this database alone. */
        uint64_t written = applied;
        if (db->fetching && db->fetchMin - 1 < written) {
            written = db->fetchMin - 1;
        }
        if (db->pendingHead != NULL && db->pendingHead->index <= written) {
            written = db->pendingHead->index - 1;
        }
        struct tpdb_fsm_db_state st = {db->name, written, db->lastSeen,
                                       db->nQueued, db->fetching};
        fn(arg, &st);
    }
    pthread_mutex_unlock(&s->mutex);
}

unsigned tpdbFsmFetching(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    unsigned n = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        n += db->fetching ? 1 : 0;
    }
    pthread_mutex_unlock(&s->mutex);
    return n;
}

int tpdbFsmFetchNeeded(struct raft_fsm *fsm,
                       const char *name,
                       uint64_t *min_index)
{
    struct fsmState *s = fsm->data;
    struct fsmDb *db = fsmDbFind(s, name);
    int needed = 0;
    if (db != NULL) {
        pthread_mutex_lock(&s->mutex);
        needed = db->fetching;
        *min_index = db->fetchMin;
        pthread_mutex_unlock(&s->mutex);
    }
    return needed;
}

void tpdbFsmSetQueueLimit(struct raft_fsm *fsm,
                          unsigned entries,
                          uint64_t bytes)
{
    struct fsmState *s = fsm->data;
    s->queueMax = entries;
    s->queueBytesMax = bytes;
}

void tpdbFsmSetFetcher(struct raft_fsm *fsm, const struct tpdb_fsm_fetcher *f)
{
    struct fsmState *s = fsm->data;
    s->fetcher = *f;
}

static void stateFree(struct fsmState *s)
{
    struct fsmDb *db;
    while ((db = s->dbs) != NULL) {
        s->dbs = db->next;
        fsmPendingClear(s, db);
        ownCopyDrop(db);
        sqlite3_close(db->conn);
        tpdbPeekClose(db->openedFile);
        tpdb_free(db->name);
        tpdb_free(db->path);
        tpdb_free(db);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mutex);
    pthread_mutex_destroy(&s->durableMutex);
    tpdb_free(s->dataDir);
    tpdb_free(s->metaDir);
    tpdb_free(s);
}

int tpdbFsmInit(struct raft_fsm *fsm,
                const char *data_dir,
                const char *meta_dir,
                uint64_t origin,
                int async,
                char *errmsg)
{
    struct fsmState *s = tpdb_calloc(1, sizeof *s);
    if (s == NULL) {
        tpdbErrf(errmsg, "fsm: out of memory");
        return TPDB_NOMEM;
    }
    pthread_mutex_init(&s->mutex, NULL);
    pthread_mutex_init(&s->durableMutex, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->dataDir = tpdb_strdup(data_dir);
    s->metaDir = tpdb_strdup(meta_dir);
    s->origin = origin;
    s->async = async;
    s->queueMax = 4096;
    s->queueBytesMax = 64u << 20;
    int rc = s->dataDir != NULL && s->metaDir != NULL ? TPDB_OK : TPDB_NOMEM;
    if (rc == TPDB_OK) {
        rc = manifestLoad(s, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = fsmDurableLoad(s, errmsg);
    }
    if (rc == TPDB_OK && async) {
        rc = fsmCheckpointerStart(s, errmsg);
    }
    if (rc != TPDB_OK) {
        stateFree(s);
        tpdbErrWrap(errmsg, "fsm");
        return rc;
    }
    memset(fsm, 0, sizeof *fsm);
    fsm->version = async ? 3 : 2;
    fsm->data = s;
    fsm->apply = fsmApply;
    fsm->snapshot = fsmSnapshot;
    fsm->restore = fsmRestore;
    fsm->snapshot_finalize = fsmSnapshotFinalize;
    fsm->snapshot_async = async ? fsmSnapshotAsync : NULL;
    return TPDB_OK;
}

void tpdbFsmClose(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    if (s == NULL) {
        return;
    }
    fsmCheckpointerStop(s);
    fsmStagesAbort(s);
    fsmSnapshotRelease(s);
    stateFree(s);
    fsm->data = NULL;
}

void tpdbFsmBecameLeader(struct raft_fsm *fsm)
{
    fsmStagesAbort(fsm->data);
}

void tpdbFsmSetRaft(struct raft_fsm *fsm, struct raft *raft)
{
    struct fsmState *s = fsm->data;
    s->raft = raft;
}

void tpdbFsmProposalAdd(struct raft_fsm *fsm, struct tpdb_proposal *p)
{
    struct fsmState *s = fsm->data;
    p->state = TPDB_BUSY;
    p->errmsg[0] = '\0';
    pthread_mutex_lock(&s->mutex);
    p->next = s->proposals;
    s->proposals = p;
    pthread_mutex_unlock(&s->mutex);
}

void tpdbFsmProposalFinish(struct raft_fsm *fsm,
                           uint64_t seq,
                           int rc,
                           const char *msg)
{
    struct fsmState *s = fsm->data;
    pthread_mutex_lock(&s->mutex);
    for (struct tpdb_proposal *p = s->proposals; p != NULL; p = p->next) {
        if (p->seq == seq && p->state == TPDB_BUSY) {
            p->state = rc;
            snprintf(p->errmsg, sizeof p->errmsg, "%s", msg ? msg : "");
            pthread_cond_broadcast(&s->cond);
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
}

static void proposalUnlink(struct fsmState *s, struct tpdb_proposal *p)
{
    struct tpdb_proposal **pp = &s->proposals;
    while (*pp != NULL && *pp != p) {
        pp = &(*pp)->next;
    }
    if (*pp == p) {
        *pp = p->next;
    }
}

int tpdbFsmProposalWait(struct raft_fsm *fsm,
                        struct tpdb_proposal *p,
                        unsigned timeout_ms)
{
    struct fsmState *s = fsm->data;
    struct timespec ts;
    int rc;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mutex);
    while (p->state == TPDB_BUSY) {
        if (pthread_cond_timedwait(&s->cond, &s->mutex, &ts) == ETIMEDOUT) {
            break;
        }
    }
    if (p->state == TPDB_BUSY) {
        p->state = TPDB_UNKNOWN;
        snprintf(p->errmsg, sizeof p->errmsg,
                 "no outcome within %u ms: outcome unknown", timeout_ms);
    }
    rc = p->state;
    proposalUnlink(s, p);
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

/* Queues own entry raw (taken; len bytes, at index) of db for the drain
 * to write, the way an entry that found the write lock held is written.
 * An entry that cannot even be decoded sends db to a fetch, as in a
 * cluster. */
static void ownRedo(struct fsmState *s,
                    struct fsmDb *db,
                    void *raw,
                    size_t len,
                    uint64_t index)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_entry e;
    memset(&e, 0, sizeof e);
    int rc = tpdbEntryDecode(raw, len, &e, errmsg);
    tpdb_free(raw);
    if (rc == TPDB_OK) {
        rc = pendingPush(s, db, &e, index);
        tpdbEntryRelease(&e);
    }
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR,
                "%s: committed entry %llu could not be written locally nor "
                "queued again (%s); the database waits for a fetch",
                db->name, (unsigned long long)index,
                errmsg[0] ? errmsg : tpdb_strerror(rc));
        fetchFrom(s, db, index);
        return;
    }
    tpdbLog(TPDB_LOG_WARN,
            "%s: committed entry %llu could not be written locally; it is "
            "written again from the log entry, and the database takes no "
            "writes until then",
            db->name, (unsigned long long)index);
}

void tpdbFsmOwnWriteDone(struct raft_fsm *fsm, const char *name, int written)
{
    struct fsmState *s = fsm->data;
    struct fsmDb *found = NULL;
    uint64_t index = 0;
    uint64_t durable = 0;
    void *redo = NULL;
    size_t redoLen = 0;
    uint64_t redoIndex = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (strcmp(db->name, name) == 0 && db->done < db->acked) {
            db->done++;
            found = db;
            if (written && db->lastAckIndex > db->written) {
                db->written = db->lastAckIndex;
            }
            if (written && db->lastAckEnd != 0 &&
                db->lastAckEnd == db->lastAckIndex) {
                /* As on followers (fsm_chunk.c): the snapshots taken while
                 * its parts were proposed record the database only as of
                 * before them, so without this a restart would fetch it. */
                durable = db->lastAckEnd;
            }
            if (!written && !db->fetching &&
                db->ownCopyIndex == db->lastAckIndex && db->ownCopy != NULL) {
                /* The only voter failed to write its own committed
                 * transaction: it is written again from the entry, as a
                 * follower writes one (queued, so the database takes no
                 * write until it is). */
                redo = db->ownCopy;
                redoLen = db->ownCopyLen;
                redoIndex = db->ownCopyIndex;
                db->ownCopy = NULL;
            } else if (!written && !db->fetching) {
                /* The cluster committed a transaction this node failed to
                 * write locally: later transactions here would be computed
                 * over a state that lacks it. The database takes no write
                 * until a peer's copy, which has it, replaces it. */
                db->fetching = 1;
                db->fetchMin = db->lastAckIndex;
                index = db->fetchMin;
            }
            ownCopyDrop(db);
            pthread_cond_broadcast(&s->cond);
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    if (found != NULL && durable != 0) {
        fsmDurableRequest(s, found, durable);
    }
    if (redo != NULL) {
        ownRedo(s, found, redo, redoLen, redoIndex);
    }
    if (found != NULL && index != 0) {
        tpdbLog(TPDB_LOG_ERROR,
                "%s: committed entry %llu could not be written locally; the "
                "database takes no writes until it is fetched from a peer",
                name, (unsigned long long)index);
        if (s->fetcher.start != NULL) {
            s->fetcher.start(s->fetcher.arg, name, index);
        }
    }
}

int tpdbFsmFileReplaced(struct raft_fsm *fsm, const char *name)
{
    struct fsmState *s = fsm->data;
    int replaced = 0;
    struct fsmDb *db = fsmDbFind(s, name);
    if (db == NULL) {
        return 0;
    }
    pthread_mutex_lock(&s->mutex);
    uint64_t id = fsmFileId(db->path);
    replaced = db->openedId != 0 && id != db->openedId;
    if (id != db->openedId) {
        /* Held open so that a deleted file's inode number cannot be reused
         * by its replacement; through filepeek, so closing it drops no
         * lock of this process. */
        tpdbPeekClose(db->openedFile);
        db->openedFile = NULL;
        if (id != 0 &&
            tpdbPeekOpen(db->path, &db->openedFile, NULL) != TPDB_OK) {
            id = 0;
        }
        db->openedId = id;
    }
    pthread_mutex_unlock(&s->mutex);
    return replaced;
}

int tpdbFsmKnows(struct raft_fsm *fsm, const char *name)
{
    struct fsmState *s = fsm->data;
    int found = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL && !found; db = db->next) {
        found = strcmp(db->name, name) == 0;
    }
    pthread_mutex_unlock(&s->mutex);
    return found;
}

unsigned tpdbFsmDbCount(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    unsigned n = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        n++;
    }
    pthread_mutex_unlock(&s->mutex);
    return n;
}

void tpdbFsmCheckpointAll(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (db->conn != NULL) {
            db->framesSinceCheckpoint = FSM_CHECKPOINT_FRAMES;
            maybeCheckpoint(s, db);
        }
    }
}

void tpdbFsmStats(struct raft_fsm *fsm, struct tpdb_fsm_stats *out)
{
    struct fsmState *s = fsm->data;
    pthread_mutex_lock(&s->mutex);
    *out = s->stats;
    pthread_mutex_unlock(&s->mutex);
}
