/*
 * The replicated state machine (see fsm.h).
 *
 * Apply: an entry this node instance proposed is only acknowledged (its
 * frames are written by the proposing SQLite connection once the commit
 * hook returns); any other entry is decoded and appended to the database's
 * WAL through tpdbVfsApply on an internal, idle connection. An entry that
 * cannot be written within a few milliseconds (a local connection holds the
 * write lock) is queued in order and written by tpdbFsmDrain, so the loop
 * thread never blocks for long and raft never sees a failed apply.
 *
 * Snapshot (raft_fsm version 2): on the loop thread, wait until no own
 * transaction is between acknowledgement and its WAL write, open a read
 * transaction on a second internal connection per database, serialize and
 * compress those read snapshots; finalize ends the read transactions. The
 * serialize step is written to run on a worker (raft_fsm version 3), but
 * raft_uv in raft 0.15 offers no async_work, so today it runs on the loop
 * thread and stalls it for the time of one compression of every database.
 *
 * TPDB page files (TPDB_ENTRY_TPDBFILE, entry.h) are applied with
 * tpdb_file_apply, which needs the file's exclusive flock: while a local
 * handle holds the file, entries are queued as for a busy SQLite write
 * lock. Snapshots carry them in the entry mapping (tpdb_file_image); restore
 * recognises them by the TPDB magic at the start of their first page.
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
#include "raftfsm/snapshot.h"
#include "vfs/tpdbfile.h"
#include "vfs/vfs.h"

/* How long apply waits for a busy write lock before letting raft retry. */
#define FSM_APPLY_LOCK_MS 10
/* How long snapshot waits for own transactions to reach the WAL. */
#define FSM_INFLIGHT_WAIT_MS 5000
/* WAL frames applied between two PASSIVE checkpoints. */
#define FSM_CHECKPOINT_FRAMES 1000

/* A committed entry waiting to be written (see fsmApply). */
struct fsmPending {
    struct tpdb_entry entry; /* owns its payload */
    uint64_t index;
    struct fsmPending *next;
};

struct fsmDb {
    char *name;
    char *path;
    sqlite3 *conn;     /* apply and checkpoints; idle between calls */
    sqlite3 *snapConn; /* holds the read transaction of a snapshot */
    unsigned inflight; /* own txns acknowledged, not yet written */
    unsigned framesSinceCheckpoint;
    int inSnapshot;
    int tpdbFile; /* a TPDB page file (TPDB_ENTRY_TPDBFILE), not SQLite */
    struct fsmPending *pendingHead; /* loop thread; count under mutex */
    struct fsmPending *pendingTail;
    struct fsmDb *next;
};

struct fsmState {
    char *dataDir;
    char *metaDir;
    uint64_t origin;
    struct raft *raft;
    pthread_mutex_t mutex; /* proposals, inflight counters, stats */
    pthread_cond_t cond;
    struct tpdb_proposal *proposals;
    struct fsmDb *dbs;
    unsigned nPending; /* entries queued in every database */
    struct tpdb_fsm_stats stats;
    /* Snapshot in progress (loop thread and worker). */
    struct tpdb_snapshot_db *snapDbs;
    struct fsmDb **snapSources; /* the databases pinned, in snapDbs order */
    uint8_t **snapImages;
    unsigned nSnapDbs;
    uint64_t snapIndex;
};

static int nameIsSafe(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TPDB_DBNAME_MAX || name[0] == '.') {
        return 0;
    }
    return strchr(name, '/') == NULL;
}

static char *joinPath(const char *dir, const char *name)
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
    char *path = joinPath(s->metaDir, "databases");
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

/* Finds or creates the state of database `name` (*created says which);
 * loop thread only for creation (other threads only look up under the
 * mutex). */
static int dbGet(struct fsmState *s,
                 const char *name,
                 struct fsmDb **out,
                 int *created,
                 char *errmsg)
{
    struct fsmDb *db;
    *created = 0;
    for (db = s->dbs; db != NULL; db = db->next) {
        if (strcmp(db->name, name) == 0) {
            *out = db;
            return TPDB_OK;
        }
    }
    if (!nameIsSafe(name)) {
        tpdbErrf(errmsg, "unsafe database name '%s'", name);
        return TPDB_CORRUPT;
    }
    db = tpdb_calloc(1, sizeof *db);
    if (db == NULL) {
        return TPDB_NOMEM;
    }
    db->name = tpdb_strdup(name);
    db->path = joinPath(s->dataDir, name);
    if (db->name == NULL || db->path == NULL) {
        tpdb_free(db->name);
        tpdb_free(db->path);
        tpdb_free(db);
        return TPDB_NOMEM;
    }
    int rc = manifestAdd(s, name, errmsg);
    if (rc != TPDB_OK) {
        tpdb_free(db->name);
        tpdb_free(db->path);
        tpdb_free(db);
        return rc;
    }
    pthread_mutex_lock(&s->mutex);
    db->next = s->dbs;
    s->dbs = db;
    pthread_mutex_unlock(&s->mutex);
    *created = 1;
    *out = db;
    return TPDB_OK;
}

/* A database the cluster has never mentioned is about to be written by
 * another node's entry, but a file of that name already holds data here:
 * it is not the cluster's, so it is moved aside (never overwritten). */
int tpdbFsmFileHoldsNoData(const char *path)
{
    uint8_t h[108];
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size == 0) {
        return 1;
    }
    FILE *f = fopen(path, "rb");
    size_t got = f != NULL ? fread(h, 1, sizeof h, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    if (got != sizeof h || memcmp(h, "SQLite format 3", 16) != 0) {
        return 0;
    }
    long pageSize = h[16] == 0 && h[17] == 1 ? 65536 : (h[16] << 8) | h[17];
    return st.st_size == pageSize && h[100] == 0x0D && h[103] == 0 &&
           h[104] == 0;
}

static int moveAsideIfData(struct fsmDb *db, char *errmsg)
{
    char aside[4096 + 64];
    if (tpdbFsmFileHoldsNoData(db->path)) {
        return TPDB_OK;
    }
    snprintf(aside, sizeof aside, "%s.orphan-%lld", db->path,
             (long long)time(NULL));
    if (rename(db->path, aside) != 0) {
        tpdbErrf(errmsg, "move %s aside: %s", db->path, strerror(errno));
        return TPDB_IOERR;
    }
    for (const char *sfx = "-wal"; sfx != NULL;
         sfx = strcmp(sfx, "-wal") == 0 ? "-shm" : NULL) {
        char from[4096 + 8];
        char to[4096 + 80];
        snprintf(from, sizeof from, "%s%s", db->path, sfx);
        snprintf(to, sizeof to, "%s%s", aside, sfx);
        rename(from, to);
    }
    tpdbLog(TPDB_LOG_WARN, "%s held data unknown to the cluster: moved to %s",
            db->path, aside);
    return TPDB_OK;
}

/* Opens an internal connection to the database through the tpdb VFS. */
static int openInternal(const char *path, sqlite3 **out, char *errmsg)
{
    char *uri = sqlite3_mprintf("file:%s?%s=1", path, TPDB_URI_INTERNAL);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI |
                SQLITE_OPEN_FULLMUTEX;
    int rc;
    if (uri == NULL) {
        return TPDB_NOMEM;
    }
    rc = sqlite3_open_v2(uri, out, flags, "tpdb");
    sqlite3_free(uri);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "open %s: %s", path,
                 *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));
        sqlite3_close(*out);
        *out = NULL;
        return TPDB_IOERR;
    }
    sqlite3_busy_timeout(*out, 1000);
    /* The applier never runs SQLite's own autocheckpoint: it has no
     * SQLite-level writes. Checkpoints are explicit. */
    sqlite3_wal_autocheckpoint(*out, 0);
    return TPDB_OK;
}

static void maybeCheckpoint(struct fsmDb *db)
{
    int logFrames = 0;
    int ckptFrames = 0;
    if (db->conn == NULL || db->framesSinceCheckpoint < FSM_CHECKPOINT_FRAMES) {
        return;
    }
    db->framesSinceCheckpoint = 0;
    int rc = sqlite3_wal_checkpoint_v2(
        db->conn, "main", SQLITE_CHECKPOINT_PASSIVE, &logFrames, &ckptFrames);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        tpdbLog(TPDB_LOG_WARN, "checkpoint %s: %s", db->name,
                sqlite3_errmsg(db->conn));
    }
}

/* Writes txn into database db through the applier connection. */
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
        pthread_mutex_lock(&s->mutex);
        s->stats.applied_entries++;
        s->stats.applied_pages += txn->n_pages;
        pthread_mutex_unlock(&s->mutex);
    }
    return rc;
}

static int applyTxn(struct fsmState *s,
                    struct fsmDb *db,
                    const struct tpdb_txn *txn,
                    int sync,
                    unsigned lock_ms,
                    char *errmsg)
{
    int rc;
    if (db->tpdbFile) {
        return applyTpdbFile(s, db, txn, lock_ms, errmsg);
    }
    if (db->conn == NULL) {
        rc = openInternal(db->path, &db->conn, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    rc = tpdbVfsApply(db->conn, txn, sync, lock_ms, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    db->framesSinceCheckpoint += txn->n_pages;
    pthread_mutex_lock(&s->mutex);
    s->stats.applied_entries++;
    s->stats.applied_pages += txn->n_pages;
    pthread_mutex_unlock(&s->mutex);
    if (!db->inSnapshot) {
        maybeCheckpoint(db);
    }
    return TPDB_OK;
}

/* Acknowledges an own entry: returns 1 if `seq` was a registered proposal. */
static int ackOwn(struct fsmState *s, struct fsmDb *db, uint64_t seq)
{
    struct tpdb_proposal *p;
    int found = 0;
    pthread_mutex_lock(&s->mutex);
    for (p = s->proposals; p != NULL; p = p->next) {
        if (p->seq == seq && p->state == TPDB_BUSY) {
            p->state = TPDB_OK;
            db->inflight++;
            s->stats.own_entries++;
            found = 1;
            pthread_cond_broadcast(&s->cond);
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return found;
}

static uint64_t appliedIndex(struct fsmState *s)
{
    return s->raft != NULL ? raft_last_applied(s->raft) + 1 : 0;
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
    pthread_mutex_unlock(&s->mutex);
    return TPDB_OK;
}

static void pendingPop(struct fsmState *s, struct fsmDb *db)
{
    struct fsmPending *p = db->pendingHead;
    pthread_mutex_lock(&s->mutex);
    db->pendingHead = p->next;
    if (db->pendingHead == NULL) {
        db->pendingTail = NULL;
    }
    s->nPending--;
    pthread_mutex_unlock(&s->mutex);
    tpdbEntryRelease(&p->entry);
    tpdb_free(p);
}

/* Writes db's queued entries in order until one cannot be written yet. */
static void pendingDrain(struct fsmState *s, struct fsmDb *db, unsigned lock_ms)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    while (db->pendingHead != NULL) {
        struct fsmPending *p = db->pendingHead;
        int rc = applyTxn(s, db, &p->entry.txn, 0, lock_ms, errmsg);
        if (rc != TPDB_OK) {
            if (rc != TPDB_BUSY) {
                tpdbLog(TPDB_LOG_ERROR, "apply entry %llu to %s: %s",
                        (unsigned long long)p->index, db->name, errmsg);
            }
            return;
        }
        pendingPop(s, db);
    }
}

/* Raft 0.15 stops applying for good when apply fails, so apply never
 * fails for a condition that passes: an entry that cannot be written yet
 * (write lock held by a local connection, disk full) is queued in order and
 * written later by tpdbFsmDrain. Only an entry that can never be read stops
 * the node, since skipping it would diverge. */
static int fsmApply(struct raft_fsm *fsm,
                    const struct raft_buffer *buf,
                    void **result)
{
    struct fsmState *s = fsm->data;
    struct tpdb_entry e;
    struct fsmDb *db;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    int rc;

    int created = 0;
    *result = NULL;
    rc = tpdbEntryPeek(buf->base, buf->len, &e, errmsg);
    if (rc == TPDB_OK) {
        rc = dbGet(s, e.db, &db, &created, errmsg);
    }
    if (rc == TPDB_OK && e.type == TPDB_ENTRY_TPDBFILE) {
        db->tpdbFile = 1;
    }
    if (rc == TPDB_OK && e.origin == s->origin && ackOwn(s, db, e.seq)) {
        return 0;
    }
    if (rc == TPDB_OK && created) {
        rc = moveAsideIfData(db, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdbEntryDecode(buf->base, buf->len, &e, errmsg);
    }
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "apply entry %llu: %s",
                (unsigned long long)appliedIndex(s), errmsg);
        return rc == TPDB_NOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    if (db->pendingHead == NULL) {
        rc = applyTxn(s, db, &e.txn, 0, FSM_APPLY_LOCK_MS, errmsg);
        if (rc == TPDB_OK) {
            tpdbEntryRelease(&e);
            return 0;
        }
        tpdbLog(rc == TPDB_BUSY ? TPDB_LOG_DEBUG : TPDB_LOG_ERROR,
                "apply entry %llu to %s: %s; queued",
                (unsigned long long)appliedIndex(s), db->name, errmsg);
    }
    rc = pendingPush(s, db, &e, appliedIndex(s));
    tpdbEntryRelease(&e);
    return rc == TPDB_OK ? 0 : RAFT_NOMEM;
}

void tpdbFsmDrain(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
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
        if (strcmp(db->name, name) == 0) {
            for (struct fsmPending *p = db->pendingHead; p != NULL;
                 p = p->next) {
                n++;
            }
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
        if (db->pendingHead != NULL && db->pendingHead->index <= written) {
            written = db->pendingHead->index - 1;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return written;
}

/* Waits until no own transaction of db sits between acknowledgement and
 * its WAL write. */
static int waitInflight(struct fsmState *s, struct fsmDb *db)
{
    uint64_t deadline = tpdbNowMs() + FSM_INFLIGHT_WAIT_MS;
    int rc = TPDB_OK;
    pthread_mutex_lock(&s->mutex);
    while (db->inflight > 0) {
        if (tpdbNowMs() >= deadline) {
            rc = TPDB_TIMEOUT;
            break;
        }
        tpdbCondWaitMs(&s->cond, &s->mutex, 10);
    }
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

static void snapshotRelease(struct fsmState *s)
{
    for (unsigned i = 0; i < s->nSnapDbs; i++) {
        if (s->snapSources[i] != NULL && s->snapSources[i]->tpdbFile) {
            tpdb_free(s->snapImages[i]);
        } else {
            sqlite3_free(s->snapImages[i]);
        }
    }
    for (unsigned i = 0; i < s->nSnapDbs; i++) {
        struct fsmDb *db = s->snapSources[i];
        if (db->inSnapshot && db->snapConn != NULL) {
            sqlite3_exec(db->snapConn, "COMMIT", NULL, NULL, NULL);
        }
        db->inSnapshot = 0;
    }
    tpdb_free(s->snapDbs);
    tpdb_free(s->snapSources);
    tpdb_free(s->snapImages);
    s->snapDbs = NULL;
    s->snapSources = NULL;
    s->snapImages = NULL;
    s->nSnapDbs = 0;
}

/* Pins a read transaction on db's snapshot connection. */
static int snapshotPin(struct fsmDb *db, char *errmsg)
{
    int rc;
    if (db->snapConn == NULL) {
        rc = openInternal(db->path, &db->snapConn, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    rc =
        sqlite3_exec(db->snapConn, "BEGIN; SELECT count(*) FROM sqlite_schema;",
                     NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "snapshot read of %s: %s", db->name,
                 sqlite3_errmsg(db->snapConn));
        sqlite3_exec(db->snapConn, "ROLLBACK", NULL, NULL, NULL);
        return TPDB_IOERR;
    }
    db->inSnapshot = 1;
    return TPDB_OK;
}

static int fsmSnapshotAsync(struct raft_fsm *fsm,
                            struct raft_buffer *bufs[],
                            unsigned *n_bufs);

static int fsmSnapshot(struct raft_fsm *fsm,
                       struct raft_buffer *bufs[],
                       unsigned *n_bufs)
{
    struct fsmState *s = fsm->data;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    unsigned n = 0;
    int rc = TPDB_OK;

    if (tpdbFsmPending(fsm) > 0) {
        /* Queued entries are applied for raft but not yet written. */
        return RAFT_BUSY;
    }
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        n++;
    }
    s->snapDbs = tpdb_calloc(n, sizeof *s->snapDbs);
    s->snapSources = tpdb_calloc(n, sizeof *s->snapSources);
    s->snapImages = tpdb_calloc(n, sizeof *s->snapImages);
    if (s->snapDbs == NULL || s->snapSources == NULL || s->snapImages == NULL) {
        snapshotRelease(s);
        return RAFT_NOMEM;
    }
    s->snapIndex = s->raft != NULL ? raft_last_applied(s->raft) : 0;
    for (struct fsmDb *db = s->dbs; db != NULL && rc == TPDB_OK;
         db = db->next) {
        rc = waitInflight(s, db);
        if (rc == TPDB_OK && !db->tpdbFile) {
            rc = snapshotPin(db, errmsg);
        }
        s->snapSources[s->nSnapDbs] = db;
        s->snapDbs[s->nSnapDbs++].name = db->name;
    }
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_WARN, "snapshot: %s", errmsg);
        snapshotRelease(s);
        return RAFT_BUSY;
    }
    *bufs = NULL;
    *n_bufs = 0;
    if (fsm->snapshot_async == NULL) {
        /* raft_uv in raft 0.15 has no async_work: serialize here. */
        int rv = fsmSnapshotAsync(fsm, bufs, n_bufs);
        if (rv != 0) {
            snapshotRelease(s);
        }
        return rv;
    }
    return 0;
}

/* A TPDB file's committed state in the entry mapping (entry.h). No own
 * commit is between acknowledgement and write (waitInflight) and none can
 * be acknowledged before the snapshot is taken, so the file is stable. */
static int snapshotTpdbFile(struct fsmState *s, unsigned i, char *errmsg)
{
    uint8_t *img = NULL;
    uint32_t pages = 0;
    int rc = tpdb_file_image(s->snapSources[i]->path, &img, &pages, errmsg);
    if (rc == TPDB_NOTFOUND) {
        rc = TPDB_OK; /* not written yet: an empty database */
    }
    s->snapImages[i] = img;
    s->snapDbs[i].page_size = TPDB_FILE_PAGE_SIZE;
    s->snapDbs[i].db_pages = pages;
    s->snapDbs[i].image = img;
    return rc;
}

/* Worker thread: serializes the pinned read snapshots and encodes them. */
static int fsmSnapshotAsync(struct raft_fsm *fsm,
                            struct raft_buffer *bufs[],
                            unsigned *n_bufs)
{
    struct fsmState *s = fsm->data;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    void *out = NULL;
    size_t outLen = 0;
    int rc;

    for (unsigned i = 0; i < s->nSnapDbs; i++) {
        struct fsmDb *db = s->snapSources[i];
        if (db->tpdbFile) {
            rc = snapshotTpdbFile(s, i, errmsg);
            if (rc != TPDB_OK) {
                tpdbLog(TPDB_LOG_ERROR, "snapshot %s: %s", db->name, errmsg);
                return rc == TPDB_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
            }
            continue;
        }
        sqlite3_int64 size = 0;
        int pageSize = 4096;
        uint8_t *img = sqlite3_serialize(db->snapConn, "main", &size, 0);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db->snapConn, "PRAGMA page_size", -1, &st,
                               NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            pageSize = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
        if (img == NULL && size != 0) {
            return RAFT_NOMEM;
        }
        s->snapImages[i] = img;
        s->snapDbs[i].page_size = (uint32_t)pageSize;
        s->snapDbs[i].db_pages = (uint32_t)(size / pageSize);
        s->snapDbs[i].image = img;
    }
    rc = tpdbSnapshotEncode(s->snapIndex, s->snapDbs, s->nSnapDbs, &out,
                            &outLen, errmsg);
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "snapshot encode: %s", errmsg);
        return rc == TPDB_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        raft_free(out);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = out;
    (*bufs)[0].len = outLen;
    *n_bufs = 1;
    pthread_mutex_lock(&s->mutex);
    s->stats.snapshots++;
    pthread_mutex_unlock(&s->mutex);
    return 0;
}

static int fsmSnapshotFinalize(struct raft_fsm *fsm,
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
    snapshotRelease(s);
    return 0;
}

/* Replaces one database with a snapshot image, as one applied transaction,
 * so readers switch atomically from the old state to the new one. */
static int restoreDb(void *arg,
                     const struct tpdb_snapshot_db *sdb,
                     char *errmsg)
{
    struct fsmState *s = arg;
    struct fsmDb *db;
    struct tpdb_txn txn;
    int created = 0;
    int rc = dbGet(s, sdb->name, &db, &created, errmsg);
    if (rc == TPDB_OK && created) {
        rc = moveAsideIfData(db, errmsg);
    }
    if (rc != TPDB_OK || sdb->db_pages == 0) {
        return rc;
    }
    /* A TPDB file travels in the entry mapping: its page 1 starts with the
     * TPDB magic, which no SQLite database starts with. */
    if (sdb->page_size == TPDB_FILE_PAGE_SIZE &&
        memcmp(sdb->image, "TPANDADB", 8) == 0) {
        db->tpdbFile = 1;
    }
    txn.page_size = sdb->page_size;
    txn.db_pages = sdb->db_pages;
    txn.n_pages = sdb->db_pages;
    txn.pages = tpdb_malloc(sizeof *txn.pages * sdb->db_pages);
    if (txn.pages == NULL) {
        return TPDB_NOMEM;
    }
    for (uint32_t i = 0; i < sdb->db_pages; i++) {
        txn.pages[i].pgno = i + 1;
        txn.pages[i].data = sdb->image + (size_t)i * sdb->page_size;
    }
    rc = applyTxn(s, db, &txn, 1, 10000, errmsg);
    tpdb_free(txn.pages);
    if (rc == TPDB_OK && db->conn != NULL) {
        sqlite3_wal_checkpoint_v2(db->conn, "main", SQLITE_CHECKPOINT_PASSIVE,
                                  NULL, NULL);
        db->framesSinceCheckpoint = 0;
    }
    return rc;
}

static int fsmRestore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct fsmState *s = fsm->data;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    uint64_t applied = 0;
    /* Entries still queued are older than the snapshot, which replaces
     * them. */
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        while (db->pendingHead != NULL) {
            pendingPop(s, db);
        }
    }
    int rc =
        tpdbSnapshotDecode(buf->base, buf->len, &applied, restoreDb, s, errmsg);
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "restore snapshot: %s", errmsg);
        return RAFT_CORRUPT;
    }
    raft_free(buf->base);
    pthread_mutex_lock(&s->mutex);
    s->stats.restores++;
    pthread_mutex_unlock(&s->mutex);
    return 0;
}

int tpdbFsmInit(struct raft_fsm *fsm,
                const char *data_dir,
                const char *meta_dir,
                uint64_t origin,
                char *errmsg)
{
    struct fsmState *s = tpdb_calloc(1, sizeof *s);
    if (s == NULL) {
        tpdbErrf(errmsg, "fsm: out of memory");
        return TPDB_NOMEM;
    }
    s->dataDir = tpdb_strdup(data_dir);
    s->metaDir = tpdb_strdup(meta_dir);
    if (s->dataDir == NULL || s->metaDir == NULL) {
        tpdb_free(s->dataDir);
        tpdb_free(s->metaDir);
        tpdb_free(s);
        tpdbErrf(errmsg, "fsm: out of memory");
        return TPDB_NOMEM;
    }
    s->origin = origin;
    pthread_mutex_init(&s->mutex, NULL);
    pthread_cond_init(&s->cond, NULL);
    memset(fsm, 0, sizeof *fsm);
    /* Version 2: raft_uv of raft 0.15 has no async_work, which version 3
     * (snapshot_async) requires. */
    fsm->version = 2;
    fsm->data = s;
    fsm->apply = fsmApply;
    fsm->snapshot = fsmSnapshot;
    fsm->restore = fsmRestore;
    fsm->snapshot_finalize = fsmSnapshotFinalize;
    return TPDB_OK;
}

void tpdbFsmClose(struct raft_fsm *fsm)
{
    struct fsmState *s = fsm->data;
    struct fsmDb *db;
    if (s == NULL) {
        return;
    }
    snapshotRelease(s);
    while ((db = s->dbs) != NULL) {
        s->dbs = db->next;
        while (db->pendingHead != NULL) {
            pendingPop(s, db);
        }
        sqlite3_close(db->conn);
        sqlite3_close(db->snapConn);
        tpdb_free(db->name);
        tpdb_free(db->path);
        tpdb_free(db);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mutex);
    tpdb_free(s->dataDir);
    tpdb_free(s->metaDir);
    tpdb_free(s);
    fsm->data = NULL;
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

void tpdbFsmOwnWriteDone(struct raft_fsm *fsm, const char *name, int written)
{
    struct fsmState *s = fsm->data;
    pthread_mutex_lock(&s->mutex);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (strcmp(db->name, name) == 0 && db->inflight > 0) {
            db->inflight--;
            pthread_cond_broadcast(&s->cond);
            break;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    if (!written) {
        /* The cluster committed a transaction this node failed to write
         * locally: the local copy is behind. A restart rebuilds it from the
         * snapshot and the log. */
        tpdbLog(TPDB_LOG_ERROR,
                "%s: committed transaction not written locally; restart the "
                "node to rebuild this database",
                name);
    }
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
        if (db->conn != NULL && !db->inSnapshot) {
            db->framesSinceCheckpoint = FSM_CHECKPOINT_FRAMES;
            maybeCheckpoint(db);
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

static int unlinkIfPresent(const char *path, char *errmsg)
{
    if (unlink(path) != 0 && errno != ENOENT) {
        tpdbErrf(errmsg, "remove %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

/* Empties one database: the main file and WAL are truncated in place
 * (a connection that is being opened may already hold them) and the
 * WAL-index is removed so the next reader rebuilds it. */
static int resetOne(const char *data_dir, const char *name, char *errmsg)
{
    static const char *const truncated[] = {"", "-wal"};
    char path[4096];
    int rc = TPDB_OK;
    if (!nameIsSafe(name)) {
        return TPDB_OK;
    }
    for (unsigned i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s%s", data_dir, name, truncated[i]);
        if (truncate(path, 0) != 0 && errno != ENOENT) {
            tpdbErrf(errmsg, "truncate %s: %s", path, strerror(errno));
            return TPDB_IOERR;
        }
    }
    snprintf(path, sizeof path, "%s/%s-shm", data_dir, name);
    rc = unlinkIfPresent(path, errmsg);
    return rc;
}

int tpdbFsmResetDatabases(const char *data_dir,
                          const char *meta_dir,
                          char *errmsg)
{
    char path[4096];
    char line[TPDB_DBNAME_MAX + 2];
    int rc = TPDB_OK;
    snprintf(path, sizeof path, "%s/databases", meta_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT ? TPDB_OK : TPDB_IOERR;
    }
    while (rc == TPDB_OK && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        rc = resetOne(data_dir, line, errmsg);
    }
    fclose(f);
    if (rc == TPDB_OK) {
        rc = unlinkIfPresent(path, errmsg);
    }
    return rc;
}
