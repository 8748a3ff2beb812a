/*
 * Large transactions on followers (entry.h's CHUNK_BEGIN, CHUNK,
 * CHUNK_END): the parts are appended to the database's WAL as uncommitted
 * frames through a staged apply (vfs.h) on the applier connection, which
 * holds the write lock from BEGIN to END, and committed as one transaction
 * at END. Readers see nothing before. Any other entry of the database, a
 * new BEGIN, or this node becoming leader ends a sequence without END: its
 * frames are dropped (they were never committed anywhere).
 *
 * A part whose BEGIN this node never staged (it restarted, or fetched the
 * database, in the middle of the sequence) is skipped, and its END makes
 * the database wait for a stream from a peer that holds the committed
 * transaction, unless the files are durable at the END already. A
 * snapshot taken while a sequence is staged records the database as
 * durable only up to before its BEGIN (staged frames vanish with the
 * process), so once END is committed the files are synced and recorded as
 * durable at END (fsmDurableRequest): a node restarted after that replays
 * the log from its snapshot, skips the parts and the END its files hold,
 * and fetches nothing.
 *
 * A TPDB page file the cluster never carried, too large for one entry,
 * arrives the same way: TPDB_ENTRY_TPDBFILE_BEGIN, then CHUNK and
 * CHUNK_END entries holding its mapped pages in order. Followers write
 * them into a file aside (fsm_tpdbfile.c's .stage file, never in memory)
 * and at END switch readers to it as a stream's fetch does. These entries
 * are written by the thread that writes the file's queue; this node
 * becoming leader only marks the stage to be dropped there.
 *
 * A commit of changes to a TPDB page file the cluster already carries,
 * too large for one entry, arrives as TPDB_ENTRY_TPDBFILE_DELTA, CHUNK...,
 * CHUNK_END: the parts go to a stage file (.tpdb/NAME.delta, the
 * library's tpdb_file_stage_*, on the same thread) and END applies them
 * all as one commit of the format's WAL protocol. Such a sequence ends
 * without END as a SQLite one does, and its END, if this node did not
 * stage it, makes the file be fetched.
 */
#include <stdio.h>
#include <time.h>

#include "raftfsm/fsmint.h"
#include "vfs/tpdbfile/tpdbfile.h"
#include "vfs/vfs.h"

static void stageDrop(struct fsmDb *db)
{
    tpdbVfsStageAbort(db->stage);
    db->stage = NULL;
    db->stageOrigin = 0;
    db->stageFirst = 0;
}

static void tfStageDrop(struct fsmState *s, struct fsmDb *db)
{
    fsmTfFetchAbort(db->tfStage);
    db->tfStage = NULL;
    tpdb_file_stage_close(db->tfDelta);
    db->tfDelta = NULL;
    db->tfStageDone = 0;
    db->stageOrigin = 0;
    pthread_mutex_lock(&s->mutex);
    db->tfStageFirst = 0;
    db->tfStageAbort = 0;
    pthread_mutex_unlock(&s->mutex);
}

void fsmStagesAbort(struct fsmState *s)
{
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        if (db->tpdbFile && s->ckptRunning) {
            /* The checkpointer thread owns it. */
            pthread_mutex_lock(&s->mutex);
            db->tfStageAbort = db->tfStageFirst != 0;
            pthread_mutex_unlock(&s->mutex);
        } else if (db->tfStage != NULL || db->tfDelta != NULL) {
            tfStageDrop(s, db);
        }
        if (db->stage != NULL) {
            tpdbLog(TPDB_LOG_INFO,
                    "%s: large transaction from entry %llu dropped: it never "
                    "ended",
                    db->name, (unsigned long long)db->stageFirst);
            stageDrop(db);
        }
    }
}

static int stageBegin(struct fsmState *s,
                      struct fsmDb *db,
                      const struct tpdb_entry *e,
                      uint64_t index,
                      unsigned lock_ms,
                      char *errmsg)
{
    int rc = fsmApplierConn(s, db, errmsg);
    if (rc == TPDB_OK) {
        rc = fsmCreateWalDb(db->conn, db->path, e->txn.page_size, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdbVfsStageBegin(db->conn, e->txn.page_size, lock_ms, &db->stage,
                               errmsg);
    }
    if (rc == TPDB_OK) {
        db->stageOrigin = e->origin;
        db->stageFirst = index;
    }
    return rc;
}

/* The END of a sequence this node did not stage: wait for a stream. */
static void endLost(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    pthread_mutex_lock(&s->mutex);
    db->fetching = 1;
    db->fetchMin = index;
    pthread_mutex_unlock(&s->mutex);
    tpdbLog(TPDB_LOG_WARN,
            "%s: the large transaction committed at entry %llu began before "
            "this node's state; fetching the database",
            db->name, (unsigned long long)index);
    if (s->fetcher.start != NULL) {
        s->fetcher.start(s->fetcher.arg, db->name, index);
    }
}

/* The END of a sequence this node did not stage: nothing to do if the
 * files are durable past it (a restart replaying the log), else a stream. */
static void endNotStaged(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    pthread_mutex_lock(&s->mutex);
    int held = db->durable >= index;
    pthread_mutex_unlock(&s->mutex);
    if (!held) {
        endLost(s, db, index);
        return;
    }
    tpdbLog(TPDB_LOG_INFO,
            "%s: the large transaction committed at entry %llu is in the "
            "local files already",
            db->name, (unsigned long long)index);
    fsmMarkWritten(s, db, index);
}

/* Writes a part's pages to the stage: the file being built (consecutive
 * pages, after those in already), or the commit of changes staged. */
static int tfStageAppend(struct fsmDb *db,
                         const struct tpdb_txn *txn,
                         char *errmsg)
{
    if (db->tfDelta != NULL) {
        return tpdb_file_stage_add(db->tfDelta, txn, errmsg);
    }
    int rc = TPDB_OK;
    for (uint32_t i = 0; i < txn->n_pages && rc == TPDB_OK; i++) {
        rc = fsmTfFetchPages(db->tfStage, txn->pages[i].pgno, 1,
                             txn->pages[i].data, errmsg);
    }
    return rc;
}

/* A part that cannot be written: the stage (a file being built, or a
 * commit of changes) is dropped, and its END (not staged then) fetches
 * the file from a peer. */
static int tfStageFailed(struct fsmState *s,
                         struct fsmDb *db,
                         uint64_t index,
                         const char *errmsg)
{
    tpdbLog(TPDB_LOG_WARN,
            "%s: commit sent in parts, entry %llu: %s; the file will be "
            "fetched from a peer at its end",
            db->name, (unsigned long long)index, errmsg);
    tfStageDrop(s, db);
    return TPDB_OK;
}

/* Applies the staged commit of changes to the file, waiting up to
 * lock_ms while a handle holds it (then TPDB_BUSY). */
static int tfDeltaApply(struct fsmDb *db, unsigned lock_ms, char *errmsg)
{
    uint64_t deadline = tpdbNowMs() + lock_ms;
    int rc;
    while ((rc = tpdb_file_stage_apply(db->tfDelta, db->path, errmsg)) ==
               TPDB_BUSY &&
           tpdbNowMs() < deadline) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return rc;
}

/* END of a staged sequence: its last pages (and, for a file built aside,
 * the file synced), then the switch to the new file or the commit of the
 * staged changes (TPDB_BUSY while a local handle holds the current file:
 * the END stays queued and is retried, without staging its pages
 * again). */
static int tfStageEnd(struct fsmState *s,
                      struct fsmDb *db,
                      const struct tpdb_entry *e,
                      uint64_t index,
                      unsigned lock_ms,
                      char *errmsg)
{
    int rc = TPDB_OK;
    if (!db->tfStageDone) {
        rc = tfStageAppend(db, &e->txn, errmsg);
        if (rc == TPDB_OK && db->tfStage != NULL) {
            rc = fsmTfFetchStage(db->tfStage, e->txn.db_pages, NULL, errmsg);
        }
        db->tfStageDone = rc == TPDB_OK;
    }
    if (rc == TPDB_OK) {
        rc = db->tfDelta != NULL
                 ? tfDeltaApply(db, lock_ms, errmsg)
                 : fsmTfFetchCommit(db->tfStage, lock_ms, errmsg);
    }
    if (rc == TPDB_BUSY) {
        return rc;
    }
    if (rc != TPDB_OK) {
        tfStageFailed(s, db, index, errmsg);
        endLost(s, db, index);
        return TPDB_OK;
    }
    tfStageDrop(s, db); /* committed: the temp file is the file now */
    fsmMarkWritten(s, db, index);
    fsmDurableRequest(s, db, index);
    return TPDB_OK;
}

/* Begins staging a commit of changes in .tpdb/NAME.delta. */
static int tfDeltaBegin(struct fsmState *s,
                        struct fsmDb *db,
                        const struct tpdb_entry *e,
                        uint64_t index,
                        char *errmsg)
{
    char path[4096 + 64];
    snprintf(path, sizeof path, "%s/%s.delta", s->metaDir, db->name);
    int rc = tpdb_file_stage_open(path, &db->tfDelta, errmsg);
    if (rc == TPDB_OK) {
        db->stageOrigin = e->origin;
        pthread_mutex_lock(&s->mutex);
        db->tfStageFirst = index;
        pthread_mutex_unlock(&s->mutex);
    }
    return rc;
}

/* Entries of a TPDB page file. */
static int tfApplyEntry(struct fsmState *s,
                        struct fsmDb *db,
                        const struct tpdb_entry *e,
                        uint64_t index,
                        unsigned lock_ms,
                        char *errmsg)
{
    pthread_mutex_lock(&s->mutex);
    int abort = db->tfStageAbort;
    pthread_mutex_unlock(&s->mutex);
    if (abort) {
        tfStageDrop(s, db);
    }
    int staged = db->tfStage != NULL || db->tfDelta != NULL;
    int ours = staged && db->stageOrigin == e->origin;
    int rc;
    switch (e->type) {
        case TPDB_ENTRY_TPDBFILE_DELTA:
            if (staged) {
                tfStageDrop(s, db);
            }
            rc = tfDeltaBegin(s, db, e, index, errmsg);
            if (rc == TPDB_OK) {
                rc = tfStageAppend(db, &e->txn, errmsg);
            }
            return rc == TPDB_OK ? rc : tfStageFailed(s, db, index, errmsg);
        case TPDB_ENTRY_TPDBFILE_BEGIN:
            if (staged) {
                tfStageDrop(s, db);
            }
            rc = fsmTfStageBegin(s, db, &db->tfStage, errmsg);
            if (rc != TPDB_OK) {
                return tfStageFailed(s, db, index, errmsg);
            }
            db->stageOrigin = e->origin;
            pthread_mutex_lock(&s->mutex);
            db->tfStageFirst = index;
            pthread_mutex_unlock(&s->mutex);
            rc = tfStageAppend(db, &e->txn, errmsg);
            return rc == TPDB_OK ? rc : tfStageFailed(s, db, index, errmsg);
        case TPDB_ENTRY_CHUNK:
            if (!ours) {
                return TPDB_OK;
            }
            rc = tfStageAppend(db, &e->txn, errmsg);
            return rc == TPDB_OK ? rc : tfStageFailed(s, db, index, errmsg);
        case TPDB_ENTRY_CHUNK_END:
            if (!ours) {
                endNotStaged(s, db, index);
                return TPDB_OK;
            }
            return tfStageEnd(s, db, e, index, lock_ms, errmsg);
        default:
            if (staged) {
                tfStageDrop(s, db);
            }
            return fsmApplyTxn(s, db, &e->txn, index, lock_ms, errmsg);
    }
}

static int stageEnd(struct fsmState *s,
                    struct fsmDb *db,
                    const struct tpdb_entry *e,
                    char *errmsg)
{
    int rc =
        tpdbVfsStageAppend(db->stage, e->txn.pages, e->txn.n_pages, errmsg);
    if (rc == TPDB_OK) {
        /* Not synced, as any apply: the Raft log is the durable copy. */
        rc = tpdbVfsStageCommit(db->stage, e->txn.db_pages, 0, errmsg);
        db->stage = NULL;
    }
    if (rc != TPDB_OK) {
        stageDrop(db);
    }
    return rc;
}

int fsmApplyEntry(struct fsmState *s,
                  struct fsmDb *db,
                  const struct tpdb_entry *e,
                  uint64_t index,
                  unsigned lock_ms,
                  char *errmsg)
{
    if (db->tpdbFile) {
        return tfApplyEntry(s, db, e, index, lock_ms, errmsg);
    }
    int ours = db->stage != NULL && db->stageOrigin == e->origin;
    int rc;
    switch (e->type) {
        case TPDB_ENTRY_CHUNK_BEGIN:
            if (db->stage != NULL) {
                stageDrop(db);
            }
            rc = stageBegin(s, db, e, index, lock_ms, errmsg);
            if (rc == TPDB_OK) {
                rc = tpdbVfsStageAppend(db->stage, e->txn.pages, e->txn.n_pages,
                                        errmsg);
            }
            if (rc != TPDB_OK && db->stage != NULL) {
                stageDrop(db);
            }
            return rc;
        case TPDB_ENTRY_CHUNK:
            return ours ? tpdbVfsStageAppend(db->stage, e->txn.pages,
                                             e->txn.n_pages, errmsg)
                        : TPDB_OK;
        case TPDB_ENTRY_CHUNK_END:
            if (!ours) {
                endNotStaged(s, db, index);
                return TPDB_OK;
            }
            rc = stageEnd(s, db, e, errmsg);
            if (rc == TPDB_OK) {
                fsmAfterWrite(s, db, &e->txn, index);
                fsmDurableRequest(s, db, index);
            }
            return rc;
        default:
            if (db->stage != NULL) {
                stageDrop(db);
            }
            return fsmApplyTxn(s, db, &e->txn, index, lock_ms, errmsg);
    }
}
