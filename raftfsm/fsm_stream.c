/*
 * A database streamed to or from a peer (see fsm.h): the state machine's
 * side of a catch-up. The network is the node's (fetch.c); the page work is
 * the VFS's (reader and staged apply in vfs.h). TPDB page files take the
 * same calls; what differs for them is in fsm_tpdbfile.c.
 *
 * Serving: a reader pinned on a connection of its own. The pin's hook runs
 * while the WAL write lock is held, so nothing can commit to the database
 * in between: there it checks that every entry of the database up to the
 * asked index is written, and takes the FSM's applied index as the served
 * index (no entry past it can be in the pinned state).
 *
 * Receiving: the pages are staged into the database's WAL (invisible until
 * the commit), then every entry queued for it since the restore, up to at
 * least the served index; then one commit. Page images are absolute, so the
 * pinned state followed by those entries ends exactly at the state of the
 * last one, a state of the cluster's history, and that is what readers see
 * at once. For a TPDB page file the queued parts of a chunk sequence are
 * staged apart and applied to the temp file at their END; a sequence still
 * open at the switch goes back to the queue unapplied, and an END whose
 * first part came before the restore is in the stream if it is at or
 * before the fetch's minimum index, else the fetch is redone for a state
 * that holds it.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "raftfsm/fsmint.h"
#include "vfs/filepeek.h"
#include "vfs/tpdbfile/tpdbfile.h"
#include "vfs/vfs.h"

struct tpdb_fsm_serve {
    struct fsmState *s;
    struct fsmDb *db;
    uint64_t min;
    uint64_t served;
    sqlite3 *conn;
    struct tpdb_vfs_reader *r;
    struct tpdb_file *tf; /* TPDB page files: the pinning handle */
};

struct tpdb_fsm_fetch {
    struct fsmState *s;
    struct fsmDb *db;
    uint32_t pageSize;
    uint64_t served;
    uint32_t dbPages; /* size after the last queued entry staged, or 0 */
    sqlite3 *conn;
    struct tpdb_vfs_stage *st;
    struct fsmTfFetch *tf; /* TPDB page files, in place of conn and st */
    unsigned lockMs;
    uint32_t streamPages; /* TPDB page files: the stream's size */
    struct tpdb_page *batch;
    uint32_t batchCap;
    /* Queued entries staged so far: freed after the commit, given back to
     * the queue (in front, in order) if the fetch is aborted. */
    struct fsmPending *takenHead;
    struct fsmPending *takenTail;
    /* TPDB page files: a chunk sequence among the taken entries, staged
     * apart and applied at its END; seqFirst is its first taken entry. At
     * the commit an open one is given back to the queue, unapplied. */
    uint64_t min; /* the stream holds every entry up to this */
    struct tpdb_file_stage *seq;
    uint64_t seqOrigin;
    struct fsmPending *seqFirst;
};

/* Pin hook: the write lock is held. */
static int servePinned(void *arg, char *errmsg)
{
    struct tpdb_fsm_serve *sv = arg;
    struct fsmState *s = sv->s;
    struct fsmDb *db = sv->db;
    int rc = TPDB_OK;
    pthread_mutex_lock(&s->mutex);
    int holds = !db->fetching && s->lastApplied >= sv->min &&
                (db->written >= sv->min || db->written == db->lastSeen);
    if (holds) {
        sv->served = s->lastApplied;
    } else {
        tpdbErrf(errmsg,
                 "%s is not written up to %llu here yet (written %llu, "
                 "applied %llu%s)",
                 db->name, (unsigned long long)sv->min,
                 (unsigned long long)db->written,
                 (unsigned long long)s->lastApplied,
                 db->fetching ? ", itself fetching" : "");
        rc = TPDB_BUSY;
    }
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

static void pause20ms(void)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int tpdbFsmServeOpen(struct raft_fsm *fsm,
                     const char *name,
                     uint64_t min_index,
                     unsigned timeout_ms,
                     struct tpdb_fsm_serve **out,
                     char *errmsg)
{
    struct fsmState *s = fsm->data;
    uint64_t deadline = tpdbNowMs() + timeout_ms;
    struct tpdb_fsm_serve *sv;
    *out = NULL;
    struct fsmDb *db = fsmDbFind(s, name);
    if (db == NULL) {
        tpdbErrf(errmsg, "no database '%s' here", name);
        return TPDB_NOTFOUND;
    }
    sv = tpdb_calloc(1, sizeof *sv);
    if (sv == NULL) {
        tpdbErrf(errmsg, "serve: out of memory");
        return TPDB_NOMEM;
    }
    sv->s = s;
    sv->db = db;
    sv->min = min_index;
    int rc =
        db->tpdbFile ? TPDB_OK : fsmOpenInternal(db->path, &sv->conn, errmsg);
    while (rc == TPDB_OK) {
        rc = db->tpdbFile ? fsmTfServeOpen(s, db, min_index, &sv->tf,
                                           &sv->served, errmsg)
                          : tpdbVfsReaderOpen(sv->conn, timeout_ms, servePinned,
                                              sv, &sv->r, errmsg);
        if (rc != TPDB_BUSY || tpdbNowMs() >= deadline) {
            break;
        }
        rc = TPDB_OK;
        pause20ms();
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "serve %s", name);
        tpdbFsmServeClose(sv);
        return rc;
    }
    pthread_mutex_lock(&s->mutex);
    s->stats.served++;
    pthread_mutex_unlock(&s->mutex);
    *out = sv;
    return TPDB_OK;
}

void tpdbFsmServeInfo(const struct tpdb_fsm_serve *sv,
                      uint32_t *page_size,
                      uint32_t *db_pages,
                      uint64_t *served)
{
    if (sv->tf != NULL) {
        *page_size = TPDB_FILE_PAGE_SIZE;
        *db_pages = tpdb_file_mapped_pages(sv->tf);
    } else {
        *page_size = tpdbVfsReaderPageSize(sv->r);
        *db_pages = tpdbVfsReaderPages(sv->r);
    }
    *served = sv->served;
}

int tpdbFsmServeRead(struct tpdb_fsm_serve *sv,
                     uint32_t first,
                     uint32_t n,
                     uint8_t *buf,
                     char *errmsg)
{
    if (sv->tf == NULL) {
        return tpdbVfsReaderRead(sv->r, first, n, buf, errmsg);
    }
    int rc = tpdb_file_read_mapped(sv->tf, first, n, buf);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", tpdb_file_errmsg(sv->tf));
    }
    return rc;
}

void tpdbFsmServeClose(struct tpdb_fsm_serve *sv)
{
    if (sv != NULL) {
        tpdbVfsReaderClose(sv->r);
        tpdb_file_close(sv->tf);
        sqlite3_close(sv->conn);
        tpdb_free(sv);
    }
}

/* Header bytes 16-17: the page size of a SQLite file; 0 if not one. */
static uint32_t filePageSize(const char *path)
{
    uint8_t h[18];
    size_t got = tpdbPeekHead(path, h, sizeof h);
    if (got != sizeof h || memcmp(h, "SQLite format 3", 16) != 0) {
        return 0;
    }
    uint32_t ps = (uint32_t)(h[16] << 8 | h[17]);
    return ps == 1 ? 65536 : ps;
}

/* Moves an unusable local file aside (never deleted) and tells the applier
 * to reopen. */
static int moveCorruptAside(struct fsmState *s, struct fsmDb *db, char *errmsg)
{
    int rc = fsmMoveAside(db, "corrupt", errmsg);
    if (rc == TPDB_OK) {
        pthread_mutex_lock(&s->mutex);
        db->reopen = 1;
        db->ckptReopen = 1;
        pthread_mutex_unlock(&s->mutex);
    }
    return rc;
}

/* Makes the local file a SQLite database in WAL mode of page_size that can
 * take the staged stream, on a connection of the fetch's own. */
static int prepareFile(struct tpdb_fsm_fetch *ff, char *errmsg)
{
    struct fsmDb *db = ff->db;
    struct stat st;
    int exists = stat(db->path, &st) == 0 && st.st_size > 0;
    int rc = TPDB_OK;
    if (exists && filePageSize(db->path) != ff->pageSize) {
        rc = moveCorruptAside(ff->s, db, errmsg);
        exists = 0;
    }
    if (rc == TPDB_OK) {
        rc = fsmOpenInternal(db->path, &ff->conn, errmsg);
    }
    if (rc == TPDB_OK && !exists) {
        rc = fsmCreateWalDb(ff->conn, db->path, ff->pageSize, errmsg);
    }
    return rc;
}

int tpdbFsmFetchBegin(struct raft_fsm *fsm,
                      const char *name,
                      uint32_t page_size,
                      uint64_t served,
                      unsigned lock_ms,
                      struct tpdb_fsm_fetch **out,
                      char *errmsg)
{
    struct fsmState *s = fsm->data;
    struct fsmDb *db = fsmDbFind(s, name);
    uint64_t min = 0;
    *out = NULL;
    if (db == NULL || !tpdbFsmFetchNeeded(fsm, name, &min) || served < min) {
        tpdbErrf(errmsg, "fetch %s: not awaited, or served at %llu < %llu",
                 name, (unsigned long long)served, (unsigned long long)min);
        return TPDB_INVALID;
    }
    struct tpdb_fsm_fetch *ff = tpdb_calloc(1, sizeof *ff);
    if (ff == NULL) {
        tpdbErrf(errmsg, "fetch: out of memory");
        return TPDB_NOMEM;
    }
    ff->s = s;
    ff->db = db;
    ff->pageSize = page_size;
    ff->served = served;
    ff->min = min;
    ff->lockMs = lock_ms;
    pthread_mutex_lock(&s->mutex);
    db->fetchActive = 1; /* the queue is now the stream's to take */
    pthread_mutex_unlock(&s->mutex);
    int rc;
    if (db->tpdbFile) {
        rc = page_size == TPDB_FILE_PAGE_SIZE ? TPDB_OK : TPDB_PROTO;
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "a TPDB file in pages of %u bytes", page_size);
        } else {
            rc = fsmTfFetchBegin(s, db, &ff->tf, errmsg);
        }
    } else {
        rc = prepareFile(ff, errmsg);
        if (rc == TPDB_OK) {
            rc = tpdbVfsStageBegin(ff->conn, page_size, lock_ms, &ff->st,
                                   errmsg);
        }
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "fetch %s", name);
        tpdbFsmFetchAbort(ff);
        return rc;
    }
    *out = ff;
    return TPDB_OK;
}

/* The batch array holding n page descriptors. */
static int batchReserve(struct tpdb_fsm_fetch *ff, uint32_t n, char *errmsg)
{
    if (n <= ff->batchCap) {
        return TPDB_OK;
    }
    struct tpdb_page *b = tpdb_realloc(ff->batch, sizeof *b * n);
    if (b == NULL) {
        tpdbErrf(errmsg, "fetch: out of memory");
        return TPDB_NOMEM;
    }
    ff->batch = b;
    ff->batchCap = n;
    return TPDB_OK;
}

int tpdbFsmFetchPages(struct tpdb_fsm_fetch *ff,
                      uint32_t first,
                      uint32_t n,
                      const uint8_t *data,
                      char *errmsg)
{
    if (ff->tf != NULL) {
        return fsmTfFetchPages(ff->tf, first, n, data, errmsg);
    }
    int rc = batchReserve(ff, n, errmsg);
    for (uint32_t i = 0; rc == TPDB_OK && i < n; i++) {
        ff->batch[i].pgno = first + i;
        ff->batch[i].data = data + (size_t)i * ff->pageSize;
    }
    return rc == TPDB_OK ? tpdbVfsStageAppend(ff->st, ff->batch, n, errmsg)
                         : rc;
}

/* Takes db's whole queue; *last: the applied index when it was taken. */
static struct fsmPending *takeQueue(struct fsmState *s,
                                    struct fsmDb *db,
                                    uint64_t *last)
{
    pthread_mutex_lock(&s->mutex);
    while (db->tfWriting) {
        /* The checkpointer thread is writing the head of a TPDB file's
         * queue (it started before the fetch): let it finish. */
        pthread_cond_wait(&s->cond, &s->mutex);
    }
    struct fsmPending *head = db->pendingHead;
    for (struct fsmPending *p = head; p != NULL; p = p->next) {
        s->nPending--;
    }
    db->nQueued = 0;
    db->queuedBytes = 0;
    db->pendingHead = NULL;
    db->pendingTail = NULL;
    *last = s->lastApplied;
    pthread_mutex_unlock(&s->mutex);
    return head;
}

static void seqDrop(struct tpdb_fsm_fetch *ff)
{
    tpdb_file_stage_close(ff->seq);
    ff->seq = NULL;
    ff->seqFirst = NULL;
}

/* The END of a sequence whose first part came before this node's state:
 * the stream holds it if it is at or before the fetch's minimum; if not,
 * this attempt fails and the next asks for a state that holds it. */
static int seqLost(struct tpdb_fsm_fetch *ff, uint64_t index, char *errmsg)
{
    if (index <= ff->min) {
        return TPDB_OK;
    }
    pthread_mutex_lock(&ff->s->mutex);
    if (ff->db->fetchMin < index) {
        ff->db->fetchMin = index;
    }
    pthread_mutex_unlock(&ff->s->mutex);
    tpdbErrf(errmsg,
             "the large transaction ending at entry %llu began before this "
             "node's state: fetching a state that holds it",
             (unsigned long long)index);
    return TPDB_PROTO;
}

/* Applies a queued entry of a TPDB page file to the temp file; the parts
 * of a chunk sequence are staged and applied at its END, as fsm_chunk.c
 * does for the file itself. */
static int tfQueued(struct tpdb_fsm_fetch *ff,
                    struct fsmPending *p,
                    char *errmsg)
{
    const struct tpdb_entry *e = &p->entry;
    int ours = ff->seq != NULL && ff->seqOrigin == e->origin;
    int rc;
    switch (e->type) {
        case TPDB_ENTRY_TPDBFILE_BEGIN:
        case TPDB_ENTRY_TPDBFILE_DELTA:
            seqDrop(ff);
            rc = fsmTfFetchPartsOpen(ff->tf, &ff->seq, errmsg);
            if (rc == TPDB_OK) {
                ff->seqOrigin = e->origin;
                ff->seqFirst = p;
                rc = tpdb_file_stage_add(ff->seq, &e->txn, errmsg);
            }
            return rc;
        case TPDB_ENTRY_CHUNK:
            return ours ? tpdb_file_stage_add(ff->seq, &e->txn, errmsg)
                        : TPDB_OK;
        case TPDB_ENTRY_CHUNK_END:
            if (!ours) {
                return seqLost(ff, p->index, errmsg);
            }
            rc = tpdb_file_stage_add(ff->seq, &e->txn, errmsg);
            if (rc == TPDB_OK) {
                rc = fsmTfFetchStageParts(ff->tf, ff->streamPages, ff->seq,
                                          errmsg);
            }
            seqDrop(ff);
            return rc;
        default:
            seqDrop(ff);
            return fsmTfFetchStage(ff->tf, ff->streamPages, &e->txn, errmsg);
    }
}

/* Stages the queued entries in order, keeping them in ff->taken. */
static int stageQueue(struct tpdb_fsm_fetch *ff,
                      struct fsmPending *p,
                      char *errmsg)
{
    int rc = TPDB_OK;
    if (p == NULL) {
        return TPDB_OK;
    }
    if (ff->takenTail != NULL) {
        ff->takenTail->next = p;
    } else {
        ff->takenHead = p;
    }
    for (; p != NULL; p = p->next) {
        if (rc == TPDB_OK && ff->tf != NULL) {
            rc = tfQueued(ff, p, errmsg);
        } else if (rc == TPDB_OK) {
            rc = tpdbVfsStageAppend(ff->st, p->entry.txn.pages,
                                    p->entry.txn.n_pages, errmsg);
            ff->dbPages = p->entry.txn.db_pages;
        }
        ff->takenTail = p;
    }
    return rc;
}

/* Gives the taken entries back to the front of the queue. */
static void giveBack(struct tpdb_fsm_fetch *ff)
{
    struct fsmState *s = ff->s;
    struct fsmDb *db = ff->db;
    if (ff->takenHead == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mutex);
    for (struct fsmPending *p = ff->takenHead; p != NULL; p = p->next) {
        s->nPending++;
        db->nQueued++;
        db->queuedBytes +=
            (uint64_t)p->entry.txn.n_pages * p->entry.txn.page_size;
    }
    ff->takenTail->next = db->pendingHead;
    if (db->pendingTail == NULL) {
        db->pendingTail = ff->takenTail;
    }
    db->pendingHead = ff->takenHead;
    pthread_mutex_unlock(&s->mutex);
    ff->takenHead = NULL;
    ff->takenTail = NULL;
}

static void freeTaken(struct tpdb_fsm_fetch *ff)
{
    while (ff->takenHead != NULL) {
        struct fsmPending *p = ff->takenHead;
        ff->takenHead = p->next;
        tpdbEntryRelease(&p->entry);
        tpdb_free(p);
    }
    ff->takenTail = NULL;
}

/* Frees the taken entries before `first` (all of them if NULL); the
 * rest stay taken. */
static void freeTakenBefore(struct tpdb_fsm_fetch *ff, struct fsmPending *first)
{
    while (ff->takenHead != NULL && ff->takenHead != first) {
        struct fsmPending *p = ff->takenHead;
        ff->takenHead = p->next;
        tpdbEntryRelease(&p->entry);
        tpdb_free(p);
    }
    if (ff->takenHead == NULL) {
        ff->takenTail = NULL;
    }
    ff->seqFirst = NULL;
}

/* After the commit: the database is back to normal apply. */
static void fetchDone(struct tpdb_fsm_fetch *ff, uint64_t last)
{
    struct fsmState *s = ff->s;
    struct fsmDb *db = ff->db;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    /* Copy the streamed WAL into the main file now, off the loop. */
    if (ff->conn != NULL) {
        sqlite3_wal_checkpoint_v2(ff->conn, "main", SQLITE_CHECKPOINT_PASSIVE,
                                  NULL, NULL);
    }
    pthread_mutex_lock(&s->mutex);
    db->fetching = 0;
    db->durable = last > db->durable ? last : db->durable;
    db->written = last > db->written ? last : db->written;
    s->stats.fetches++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mutex);
    if (fsmDurableSave(s, errmsg) != TPDB_OK) {
        tpdbLog(TPDB_LOG_WARN, "fetch %s: %s", db->name, errmsg);
    }
    tpdbLog(TPDB_LOG_INFO, "%s: received from a peer, as of index %llu",
            db->name, (unsigned long long)last);
}

/* Finish for a TPDB page file: the queued entries are applied to the temp
 * file as they are taken; the commit is the switch, which may have to wait
 * for local readers (TPDB_BUSY, ff kept). */
static int finishTpdbFile(struct tpdb_fsm_fetch *ff,
                          uint32_t db_pages,
                          char *errmsg)
{
    uint64_t last = 0;
    ff->streamPages = db_pages;
    int rc = fsmTfFetchStage(ff->tf, db_pages, NULL, errmsg);
    if (rc == TPDB_OK) {
        rc = stageQueue(ff, takeQueue(ff->s, ff->db, &last), errmsg);
    }
    if (rc == TPDB_OK && last < ff->served) {
        return TPDB_BUSY;
    }
    if (rc == TPDB_OK) {
        rc = fsmTfFetchCommit(ff->tf, ff->lockMs, errmsg);
        if (rc == TPDB_BUSY) {
            return rc;
        }
    }
    if (rc == TPDB_OK) {
        freeTakenBefore(ff, ff->seqFirst);
        giveBack(ff); /* an open sequence: written after the switch */
        fetchDone(ff, last);
    } else {
        tpdbErrWrap(errmsg, "fetch %s: commit", ff->db->name);
    }
    tpdbFsmFetchAbort(ff);
    return rc;
}

int tpdbFsmFetchFinish(struct tpdb_fsm_fetch *ff,
                       uint32_t db_pages,
                       char *errmsg)
{
    uint64_t last = 0;
    if (ff->tf != NULL) {
        return finishTpdbFile(ff, db_pages, errmsg);
    }
    struct fsmPending *q = takeQueue(ff->s, ff->db, &last);
    int rc = stageQueue(ff, q, errmsg);
    if (rc == TPDB_OK && last < ff->served) {
        return TPDB_BUSY;
    }
    if (rc == TPDB_OK) {
        rc = tpdbVfsStageCommit(ff->st, ff->dbPages ? ff->dbPages : db_pages, 1,
                                errmsg);
        ff->st = NULL;
    }
    if (rc == TPDB_OK) {
        freeTaken(ff);
        fetchDone(ff, last);
    } else {
        tpdbErrWrap(errmsg, "fetch %s: commit", ff->db->name);
    }
    tpdbFsmFetchAbort(ff);
    return rc;
}

void tpdbFsmFetchAbort(struct tpdb_fsm_fetch *ff)
{
    if (ff != NULL) {
        pthread_mutex_lock(&ff->s->mutex);
        ff->db->fetchActive = 0;
        pthread_mutex_unlock(&ff->s->mutex);
        giveBack(ff);
        tpdb_file_stage_close(ff->seq);
        fsmTfFetchAbort(ff->tf);
        tpdbVfsStageAbort(ff->st);
        sqlite3_close(ff->conn);
        tpdb_free(ff->batch);
        tpdb_free(ff);
    }
}
