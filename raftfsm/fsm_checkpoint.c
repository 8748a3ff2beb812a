/*
 * Checkpoints of the databases the state machine writes (see fsmint.h).
 * Apply never runs SQLite's autocheckpoint (it writes frames itself), so
 * the FSM checkpoints every FSM_CHECKPOINT_FRAMES applied frames. A
 * checkpoint copies frames into the main file and syncs it: on the Raft
 * loop thread that is disk work growing with the data, so a node's FSM
 * hands it to a thread of its own, with a connection of its own per
 * database. PASSIVE never waits for readers or writers and never takes the
 * write lock, so it cannot hold apply back; only once the WAL is large, a
 * last FULL round holds it for a few ms, so that the WAL can restart.
 * These connections skip SQLite's sync of the WAL before a checkpoint
 * while the local log on disk holds every applied entry (ckptSyncSkip).
 *
 * The same thread writes the queued entries of TPDB page files: each is a
 * commit through the format's WAL protocol, with its fdatasync and fsyncs,
 * which would stall the loop thread (and, in a cluster of two live nodes,
 * cost the leader its leadership). A file a handle holds is retried every
 * 5 ms.
 *
 * And it makes a database durable after the END of a large transaction
 * (fsmDurableRequest): an fsync of up to the whole transaction's WAL
 * frames, which must not stall the loop either.
 */
#include <string.h>

#include "raftfsm/fsmint.h"
#include "vfs/vfs.h"

/* PASSIVE checkpoints run in a row at most, while each ends short. */
#define CKPT_ROUNDS 3

/* Frames in the WAL past which the PASSIVE rounds are followed by one that
 * holds apply back (see checkpointOne). */
#define CKPT_HOLD_FRAMES (4 * FSM_CHECKPOINT_FRAMES)

/* The longest that held round waits for locks, in all: for the write lock
 * (apply holds it for one entry, a staged large transaction from its
 * BEGIN to its END), then, holding it, for readers of older frames. */
#define CKPT_HOLD_BUSY_MS 20

/* One checkpoint of conn in mode; *complete says whether it copied every
 * frame, *frames how many the WAL holds (-1: not known). A connection
 * opens the WAL at its first read transaction; until then SQLite's
 * checkpoint does nothing and reports the database as not in WAL mode (-1
 * frames). Internal connections never read before they checkpoint, so
 * without this read no follower ever checkpointed: its WAL held the whole
 * database, and every restart read all of it again (WAL recovery). */
static int checkpointMode(sqlite3 *conn, int mode, int *complete, int *frames)
{
    int nLog = -1;
    int nCkpt = -1;
    int rc = sqlite3_wal_checkpoint_v2(conn, "main", mode, &nLog, &nCkpt);
    if (rc == SQLITE_OK && nLog < 0) {
        rc = sqlite3_exec(conn, "SELECT count(*) FROM sqlite_schema", NULL,
                          NULL, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_wal_checkpoint_v2(conn, "main", mode, &nLog, &nCkpt);
        }
    }
    *complete = rc == SQLITE_OK && nLog >= 0 && nCkpt == nLog;
    *frames = nLog;
    return rc;
}

/* The held round: a FULL checkpoint takes the WAL write lock (so apply,
 * which never waits for it, queues its entries meanwhile), copies what
 * the PASSIVE rounds left and syncs the main file; apply restarts the WAL
 * at its next entry. Locks are waited for CKPT_HOLD_BUSY_MS at most; if
 * the write lock is not free by then, SQLite runs the round as PASSIVE. */
static int checkpointHeld(sqlite3 *conn, int *complete, int *frames)
{
    uint64_t t0 = tpdbNowMs();
    sqlite3_busy_timeout(conn, CKPT_HOLD_BUSY_MS);
    int rc = checkpointMode(conn, SQLITE_CHECKPOINT_FULL, complete, frames);
    sqlite3_busy_timeout(conn, FSM_INTERNAL_BUSY_MS);
    tpdbLog(TPDB_LOG_DEBUG, "checkpoint held apply up to %llu ms: %s",
            (unsigned long long)(tpdbNowMs() - t0),
            *complete ? "complete" : "short");
    return rc == SQLITE_BUSY ? SQLITE_OK : rc;
}

/* Apply restarts the WAL (vfs/apply.c) only once a checkpoint has copied
 * all of it, and a PASSIVE checkpoint, which takes no lock, ends short of
 * the end whenever apply appended meanwhile: a short one is followed by
 * another (it copies only what came meanwhile), CKPT_ROUNDS in all. Even
 * one that reports every frame copied counted only the frames of the
 * WAL-index header it read, and apply may have appended since. So under a
 * steady stream of entries the WAL seldom restarts, and grew without bound
 * (109 MB in 20 s of one-row INSERTs at 4 GB): once it holds
 * CKPT_HOLD_FRAMES, a last round holds apply back (hold set: on the
 * checkpointer thread only, never on the loop thread). That hold is short,
 * since the rounds before it copied and synced nearly everything, and it
 * must be: a node that becomes leader while entries are queued refuses its
 * first writes (tpdbNodeWriteCheck). */
static void checkpointOne(struct fsmDb *db, sqlite3 *conn, int hold)
{
    int complete = 0;
    int frames = -1;
    int rc = SQLITE_OK;
    for (int i = 0; i < CKPT_ROUNDS && rc == SQLITE_OK && !complete; i++) {
        rc =
            checkpointMode(conn, SQLITE_CHECKPOINT_PASSIVE, &complete, &frames);
    }
    if (hold && rc == SQLITE_OK && frames >= CKPT_HOLD_FRAMES) {
        rc = checkpointHeld(conn, &complete, &frames);
    }
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        tpdbLog(TPDB_LOG_WARN, "checkpoint %s: %s", db->name,
                sqlite3_errmsg(conn));
    }
    tpdbLog(TPDB_LOG_DEBUG, "checkpoint %s: %s (%d frames)", db->name,
            complete ? "complete" : "short", frames);
}

/* The WAL sync filter of the checkpointer's connections: the sync SQLite
 * runs before a checkpoint copies frames is skipped while every entry
 * applied so far is in the local log on disk, the log replayed after a
 * power loss (docs/design.md, "Durability of the local copy"). Asked at
 * the sync itself, so it covers every frame the checkpoint may copy. */
static int ckptSyncSkip(void *arg)
{
    struct fsmState *s = arg;
    pthread_mutex_lock(&s->mutex);
    int skip = s->lastApplied <= s->lastStored;
    pthread_mutex_unlock(&s->mutex);
    return skip;
}

/* What the checkpointer thread does for the database nextWanted picks. */
enum { WANT_CHECKPOINT, WANT_TPDB_QUEUE, WANT_DURABLE };

/* The next database that wants a checkpoint (its flag cleared), whose TPDB
 * queue can be written (tfWriting set), or that must be made durable
 * (*sync_index set, syncWanted cleared); *what says which. NULL when
 * stopping. Mutex held; waits. */
static struct fsmDb *nextWanted(struct fsmState *s,
                                int *what,
                                uint64_t *sync_index)
{
    for (;;) {
        uint64_t now = tpdbNowMs();
        int later = 0;
        if (s->ckptStop) {
            return NULL;
        }
        for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
            if (fsmTfReady(db, now)) {
                db->tfWriting = 1;
                *what = WANT_TPDB_QUEUE;
                return db;
            }
            if (db->syncWanted != 0 && !db->fetching) {
                *sync_index = db->syncWanted;
                db->syncWanted = 0;
                *what = WANT_DURABLE;
                return db;
            }
            later |= db->tpdbFile && db->pendingHead != NULL && !db->fetching;
            if (db->ckptWanted && !db->fetching && !db->tpdbFile) {
                db->ckptWanted = 0;
                *what = WANT_CHECKPOINT;
                return db;
            }
        }
        if (later) {
            tpdbCondWaitMs(&s->ckptCond, &s->mutex, 5);
        } else {
            pthread_cond_wait(&s->ckptCond, &s->mutex);
        }
    }
}

static void *checkpointerMain(void *arg)
{
    struct fsmState *s = arg;
    char errmsg[TPDB_ERRMSG_SIZE];
    pthread_mutex_lock(&s->mutex);
    struct fsmDb *db;
    int what = WANT_CHECKPOINT;
    uint64_t syncIndex = 0;
    while ((db = nextWanted(s, &what, &syncIndex)) != NULL) {
        if (what == WANT_TPDB_QUEUE) {
            pthread_mutex_unlock(&s->mutex);
            fsmTfWriteHead(s, db);
            pthread_mutex_lock(&s->mutex);
            continue;
        }
        if (what == WANT_DURABLE) {
            pthread_mutex_unlock(&s->mutex);
            if (fsmMakeDbDurable(s, db, syncIndex, errmsg) != TPDB_OK) {
                tpdbLog(TPDB_LOG_WARN, "%s: durable at %llu: %s", db->name,
                        (unsigned long long)syncIndex, errmsg);
            }
            pthread_mutex_lock(&s->mutex);
            continue;
        }
        int reopen = db->ckptReopen;
        db->ckptReopen = 0;
        pthread_mutex_unlock(&s->mutex);
        /* A file deleted or replaced while the node ran: checkpointing
         * through the old connection would write the old file with the
         * WAL-index of the new one. A missing file is not recreated. */
        uint64_t id = fsmFileId(db->path);
        if (db->ckptConn != NULL && id != db->ckptId) {
            reopen = 1;
        }
        if (reopen && db->ckptConn != NULL) {
            sqlite3_close(db->ckptConn);
            db->ckptConn = NULL;
        }
        if (db->ckptConn == NULL && id != 0 &&
            fsmOpenInternal(db->path, &db->ckptConn, errmsg) != TPDB_OK) {
            tpdbLog(TPDB_LOG_WARN, "checkpoint %s: %s", db->name, errmsg);
        }
        db->ckptId = db->ckptConn != NULL ? fsmFileId(db->path) : 0;
        /* Set at every checkpoint: SQLite may have reopened the WAL. */
        if (db->ckptConn != NULL &&
            tpdbVfsWalSyncFilter(db->ckptConn, ckptSyncSkip, s, errmsg) !=
                TPDB_OK) {
            tpdbLog(TPDB_LOG_DEBUG, "checkpoint %s: %s", db->name, errmsg);
        }
        if (db->ckptConn != NULL) {
            checkpointOne(db, db->ckptConn, 1);
        }
        pthread_mutex_lock(&s->mutex);
    }
    pthread_mutex_unlock(&s->mutex);
    return NULL;
}

int fsmCheckpointerStart(struct fsmState *s, char *errmsg)
{
    pthread_cond_init(&s->ckptCond, NULL);
    if (pthread_create(&s->ckptThread, NULL, checkpointerMain, s) != 0) {
        pthread_cond_destroy(&s->ckptCond);
        tpdbErrf(errmsg, "cannot start the checkpoint thread");
        return TPDB_NOMEM;
    }
    s->ckptRunning = 1;
    return TPDB_OK;
}

void fsmCheckpointRequest(struct fsmState *s, struct fsmDb *db)
{
    if (!s->ckptRunning) {
        if (db->conn != NULL) {
            checkpointOne(db, db->conn, 0);
        }
        return;
    }
    pthread_mutex_lock(&s->mutex);
    db->ckptWanted = 1;
    pthread_cond_signal(&s->ckptCond);
    pthread_mutex_unlock(&s->mutex);
}

void fsmDurableRequest(struct fsmState *s, struct fsmDb *db, uint64_t index)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    if (!s->ckptRunning) {
        if (fsmMakeDbDurable(s, db, index, errmsg) != TPDB_OK) {
            tpdbLog(TPDB_LOG_WARN, "%s: durable at %llu: %s", db->name,
                    (unsigned long long)index, errmsg);
        }
        return;
    }
    pthread_mutex_lock(&s->mutex);
    if (db->syncWanted < index) {
        db->syncWanted = index;
    }
    pthread_cond_signal(&s->ckptCond);
    pthread_mutex_unlock(&s->mutex);
}

void fsmCheckpointWake(struct fsmState *s)
{
    if (s->ckptRunning) {
        pthread_mutex_lock(&s->mutex);
        pthread_cond_signal(&s->ckptCond);
        pthread_mutex_unlock(&s->mutex);
    }
}

void fsmCheckpointerStop(struct fsmState *s)
{
    if (!s->ckptRunning) {
        return;
    }
    pthread_mutex_lock(&s->mutex);
    s->ckptStop = 1;
    pthread_cond_signal(&s->ckptCond);
    pthread_mutex_unlock(&s->mutex);
    pthread_join(s->ckptThread, NULL);
    s->ckptRunning = 0;
    pthread_cond_destroy(&s->ckptCond);
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
        sqlite3_close(db->ckptConn);
        db->ckptConn = NULL;
    }
}
