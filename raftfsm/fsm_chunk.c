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
 */
#include "raftfsm/fsmint.h"
#include "vfs/vfs.h"

static void stageDrop(struct fsmDb *db)
{
    tpdbVfsStageAbort(db->stage);
    db->stage = NULL;
    db->stageOrigin = 0;
    db->stageFirst = 0;
}

void fsmStagesAbort(struct fsmState *s)
{
    for (struct fsmDb *db = s->dbs; db != NULL; db = db->next) {
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
                pthread_mutex_lock(&s->mutex);
                int held = db->durable >= index;
                pthread_mutex_unlock(&s->mutex);
                if (held) {
                    tpdbLog(TPDB_LOG_INFO,
                            "%s: the large transaction committed at entry "
                            "%llu is in the local files already",
                            db->name, (unsigned long long)index);
                    fsmMarkWritten(s, db, index);
                } else {
                    endLost(s, db, index);
                }
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
