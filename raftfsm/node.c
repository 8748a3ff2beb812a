/*
 * The node runtime (see node.h): a libuv loop on its own thread running
 * canonical/raft with the uv storage backend and the TCP_NODELAY transport,
 * the FSM of fsm.c, and a queue through which other threads hand it work.
 *
 * Thread model: every raft call happens on the loop thread. Application
 * threads enqueue a nodeCall and wake the loop with uv_async_send; they wait
 * on the node's condition variable (or on their proposal in the FSM). A
 * uv_check handle publishes a status copy after every loop iteration and,
 * when this node has just become leader, appends a barrier: writes are
 * allowed only once that barrier is applied, so a new leader never accepts a
 * transaction over a database that lacks entries of earlier terms.
 * Starting, joining, the registry and stopping live in node_start.c.
 */
#include "raftfsm/node.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>
#include <raft.h>
#include <raft/uv.h>
#include <sqlite3.h>
#include <uv.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "raftfsm/nodeint.h"

static const char *roleName(int state)
{
    switch (state) {
        case RAFT_FOLLOWER:
            return "follower";
        case RAFT_CANDIDATE:
            return "candidate";
        case RAFT_LEADER:
            return "leader";
        default:
            return "unavailable";
    }
}

static const char *memberRoleName(int role)
{
    switch (role) {
        case RAFT_VOTER:
            return "voter";
        case RAFT_STANDBY:
            return "standby";
        default:
            return "spare";
    }
}

static void barrierCb(struct raft_barrier *req, int status)
{
    struct tpdb_node *n = req->data;
    n->barrierPending = 0;
    if (status == 0) {
        pthread_mutex_lock(&n->mutex);
        n->readyTerm = n->raft.current_term;
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->mutex);
    }
}

/* Publishes the raft addresses of the other members, the leader first.
 * Mutex held. */
static void publishPeers(struct tpdb_node *n, raft_id leaderId)
{
    const struct raft_configuration *conf = &n->raft.configuration;
    unsigned k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < conf->n && k < NODE_PEERS_MAX; i++) {
            const struct raft_server *srv = &conf->servers[i];
            int isLeader = srv->id == leaderId;
            if (srv->id == n->id || isLeader != (pass == 0)) {
                continue;
            }
            snprintf(n->peerAddrs[k++], TPDB_ADDRESS_MAX, "%s", srv->address);
        }
    }
    n->nPeerAddrs = k;
}

unsigned nodeFetchPeers(void *arg,
                        char (*addrs)[TPDB_ADDRESS_MAX],
                        unsigned max)
{
    struct tpdb_node *n = arg;
    unsigned k = 0;
    pthread_mutex_lock(&n->mutex);
    for (; k < n->nPeerAddrs && k < max; k++) {
        memcpy(addrs[k], n->peerAddrs[k], TPDB_ADDRESS_MAX);
    }
    pthread_mutex_unlock(&n->mutex);
    return k;
}

void nodeFetchIndex(void *arg, int *leads, uint64_t *commit)
{
    struct tpdb_node *n = arg;
    pthread_mutex_lock(&n->mutex);
    *leads = n->role == RAFT_LEADER && n->readyTerm == n->term;
    *commit = n->commitIndex;
    pthread_mutex_unlock(&n->mutex);
}

/* One job of raft's async_work on libuv's thread pool. */
struct nodeWork {
    uv_work_t work;
    struct raft_io_async_work *req;
    int status;
};

static void workRunCb(uv_work_t *w)
{
    struct nodeWork *nw = w->data;
    nw->status = nw->req->work(nw->req);
}

static void workDoneCb(uv_work_t *w, int status)
{
    struct nodeWork *nw = w->data;
    struct raft_io_async_work *req = nw->req;
    int rv = status == UV_ECANCELED ? RAFT_CANCELED : nw->status;
    tpdb_free(nw);
    req->cb(req, rv);
}

int nodeAsyncWork(struct raft_io *io,
                  struct raft_io_async_work *req,
                  raft_io_async_work_cb cb)
{
    struct raft *r = io->data;
    struct tpdb_node *n = r->data;
    struct nodeWork *nw = tpdb_malloc(sizeof *nw);
    if (nw == NULL) {
        return RAFT_NOMEM;
    }
    nw->req = req;
    nw->work.data = nw;
    req->cb = cb;
    int rv = uv_queue_work(&n->loop, &nw->work, workRunCb, workDoneCb);
    if (rv != 0) {
        tpdb_free(nw);
        return RAFT_IOERR;
    }
    return 0;
}

static void spaceTransferCb(struct raft_transfer *req)
{
    struct tpdb_node *n = req->data;
    raft_id leaderId = 0;
    const char *leaderAddress = NULL;
    n->spaceTransferPending = 0;
    raft_leader(&n->raft, &leaderId, &leaderAddress);
    if (leaderId != n->id && leaderId != 0) {
        tpdbLog(TPDB_LOG_WARN, "node %llu: node %llu leads now",
                (unsigned long long)n->id, (unsigned long long)leaderId);
    }
}

/* Whether another voter could lead. */
static int otherVoter(const struct tpdb_node *n)
{
    const struct raft_configuration *conf = &n->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id != n->id &&
            conf->servers[i].role == RAFT_VOTER) {
            return 1;
        }
    }
    return 0;
}

/* Hands leadership to another voter because this leader's disk is full
 * (why: what shows it), at most once every few election timeouts. Raft
 * picks a voter whose log is up to date, so not one whose own log writes
 * are held. Loop thread. */
static void spaceTransfer(struct tpdb_node *n, const char *why)
{
    uint64_t now = tpdbNowMs();
    if (raft_state(&n->raft) != RAFT_LEADER || n->spaceTransferPending ||
        now < n->spaceTransferAt || !otherVoter(n)) {
        return;
    }
    n->spaceTransferAt = now + 4 * (uint64_t)n->cfg.election_ms;
    n->spaceTransfer.data = n;
    int rv = raft_transfer(&n->raft, &n->spaceTransfer, 0, spaceTransferCb);
    if (rv != 0) {
        tpdbLog(TPDB_LOG_WARN, "node %llu: %s, transfer: %s",
                (unsigned long long)n->id, why, raft_strerror(rv));
        return;
    }
    n->spaceTransferPending = 1;
    tpdbLog(TPDB_LOG_WARN,
            "node %llu: %s (%llu MiB free on the file system of %s): "
            "transferring leadership to another voter",
            (unsigned long long)n->id, why,
            (unsigned long long)(n->hold.free_bytes >> 20), n->dataDir);
}

void nodeSpaceCb(void *arg, uint64_t free_bytes)
{
    struct tpdb_node *n = arg;
    struct tpdb_iohold_stats hs;
    tpdbIoHoldStats(&n->hold, &hs);
    if (free_bytes < n->hold.reserve || hs.held_ops > 0) {
        spaceTransfer(n, "disk full, raft log writes held");
    }
}

/* After every loop iteration: publish status; new leaders append a
 * barrier. */
static void checkCb(uv_check_t *check)
{
    struct tpdb_node *n = check->data;
    struct raft *r = &n->raft;
    raft_id leaderId = 0;
    const char *leaderAddress = NULL;
    int state = raft_state(r);

    if (state == RAFT_LEADER && !n->barrierPending &&
        n->readyTerm != r->current_term) {
        tpdbFsmBecameLeader(&n->fsm);
        n->barrier.data = n;
        if (raft_barrier(r, &n->barrier, barrierCb) == 0) {
            n->barrierPending = 1;
        }
    }
    pthread_mutex_lock(&n->mutex);
    int refused = n->spaceRefused;
    n->spaceRefused = 0;
    pthread_mutex_unlock(&n->mutex);
    if (refused) {
        spaceTransfer(n, "disk full, a write refused");
    }
    raft_leader(r, &leaderId, &leaderAddress);
    pthread_mutex_lock(&n->mutex);
    int changed = n->role != state || n->term != r->current_term ||
                  n->appliedIndex != raft_last_applied(r) || n->pending > 0;
    n->role = state;
    n->term = r->current_term;
    n->leaderId = leaderId;
    snprintf(n->leaderAddress, sizeof n->leaderAddress, "%s",
             leaderAddress ? leaderAddress : "");
    n->commitIndex = r->commit_index;
    n->appliedIndex = tpdbFsmWrittenIndex(&n->fsm, raft_last_applied(r));
    n->pending = tpdbFsmPending(&n->fsm);
    n->lastIndex = raft_last_index(r);
    publishPeers(n, leaderId);
    n->published = 1;
    if (changed) {
        pthread_cond_broadcast(&n->cond);
    }
    pthread_mutex_unlock(&n->mutex);
}

static void runCalls(struct tpdb_node *n)
{
    struct nodeCall *c;
    pthread_mutex_lock(&n->mutex);
    c = n->calls;
    n->calls = NULL;
    pthread_mutex_unlock(&n->mutex);
    /* The queue is LIFO; reverse it to keep submission order. */
    struct nodeCall *ordered = NULL;
    while (c != NULL) {
        struct nodeCall *next = c->next;
        c->next = ordered;
        ordered = c;
        c = next;
    }
    while (ordered != NULL) {
        c = ordered;
        ordered = c->next;
        c->fn(n, c);
    }
}

/* Marks a waited-for call done. Loop thread. */
void nodeCallDone(struct tpdb_node *n, struct nodeCall *c, int rc)
{
    pthread_mutex_lock(&n->mutex);
    c->rc = rc;
    c->done = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mutex);
}

static void closeHandlesCb(struct raft *r)
{
    struct tpdb_node *n = r->data;
    raft_uv_close(&n->hold.io);
    tpdbJoinClientClose(&n->join);
    uv_close((uv_handle_t *)&n->async, NULL);
    uv_close((uv_handle_t *)&n->check, NULL);
    uv_close((uv_handle_t *)&n->drainTimer, NULL);
}

static void drainCb(uv_timer_t *timer)
{
    struct tpdb_node *n = timer->data;
    if (tpdbFsmPending(&n->fsm) > 0) {
        tpdbFsmDrain(&n->fsm);
    }
}

static void asyncCb(uv_async_t *async)
{
    struct tpdb_node *n = async->data;
    int stopping;
    runCalls(n);
    pthread_mutex_lock(&n->mutex);
    stopping = n->stopping;
    pthread_mutex_unlock(&n->mutex);
    if (stopping == 1) {
        pthread_mutex_lock(&n->mutex);
        n->stopping = 2;
        pthread_mutex_unlock(&n->mutex);
        uv_check_stop(&n->check);
        raft_close(&n->raft, closeHandlesCb);
    }
}

static void *loopThread(void *arg)
{
    struct tpdb_node *n = arg;
    sigset_t pipe;
    /* A peer that died makes socket writes raise SIGPIPE in this thread;
     * blocked, the write fails with EPIPE instead of killing the host
     * process. */
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    pthread_mutex_lock(&n->mutex);
    n->stopped = 1;
    /* Fail calls that arrived after the close began. */
    for (struct nodeCall *c = n->calls; c != NULL; c = c->next) {
        c->rc = TPDB_SHUTDOWN;
        c->done = 1;
    }
    n->calls = NULL;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mutex);
    return NULL;
}

/* Queues c for the loop thread. Returns TPDB_SHUTDOWN if it is gone. */
static int callSubmit(struct tpdb_node *n, struct nodeCall *c)
{
    pthread_mutex_lock(&n->mutex);
    if (n->stopping) {
        pthread_mutex_unlock(&n->mutex);
        return TPDB_SHUTDOWN;
    }
    c->next = n->calls;
    n->calls = c;
    pthread_mutex_unlock(&n->mutex);
    uv_async_send(&n->async);
    return TPDB_OK;
}

/* Queues c and waits for it. */
int nodeCallRun(struct tpdb_node *n, struct nodeCall *c, char *errmsg)
{
    c->done = 0;
    c->rc = TPDB_OK;
    c->errmsg[0] = '\0';
    int rc = callSubmit(n, c);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "node is shutting down");
        return rc;
    }
    pthread_mutex_lock(&n->mutex);
    while (!c->done) {
        pthread_cond_wait(&n->cond, &n->mutex);
    }
    pthread_mutex_unlock(&n->mutex);
    if (c->rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", c->errmsg[0] ? c->errmsg : tpdb_strerror(c->rc));
    }
    return c->rc;
}

static int fromRaft(int rv)
{
    switch (rv) {
        case 0:
            return TPDB_OK;
        case RAFT_NOMEM:
            return TPDB_NOMEM;
        case RAFT_NOTLEADER:
            return TPDB_NOTLEADER;
        case RAFT_LEADERSHIPLOST:
            return TPDB_UNKNOWN;
        case RAFT_SHUTDOWN:
            return TPDB_SHUTDOWN;
        case RAFT_TOOBIG:
            return TPDB_TOOBIG;
        case RAFT_IOERR:
            return TPDB_IOERR;
        case RAFT_NOSPACE:
            return TPDB_FULL;
        default:
            return TPDB_RAFT;
    }
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct nodeApply *a = req->data;
    (void)result;
    if (status != 0) {
        /* The entry was appended to our log; it may still be committed by
         * the next leader, so the outcome is unknown. */
        char msg[TPDB_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "leadership lost before commit (%s)",
                 raft_strerror(status));
        tpdbFsmProposalFinish(&a->node->fsm, a->seq, TPDB_UNKNOWN, msg);
    }
    tpdb_free(a);
}

static void notLeaderMsg(struct tpdb_node *n, char *msg)
{
    raft_id id = 0;
    const char *address = NULL;
    raft_leader(&n->raft, &id, &address);
    if (id != 0 && id != n->id) {
        snprintf(msg, TPDB_ERRMSG_SIZE, "not the leader: node %llu is, at %s",
                 (unsigned long long)id, address ? address : "?");
    } else {
        snprintf(msg, TPDB_ERRMSG_SIZE, "not the leader: no leader known");
    }
}

static void proposeFn(struct tpdb_node *n, struct nodeCall *c)
{
    struct raft *r = &n->raft;
    char msg[TPDB_ERRMSG_SIZE];
    struct raft_buffer buf = {c->buf, c->len};
    int rv;
    if (raft_state(r) != RAFT_LEADER || n->readyTerm != r->current_term) {
        notLeaderMsg(n, msg);
        tpdbFsmProposalFinish(&n->fsm, c->seq, TPDB_NOTLEADER, msg);
        goto out_free_buf;
    }
    struct nodeApply *a = tpdb_malloc(sizeof *a);
    if (a == NULL) {
        tpdbFsmProposalFinish(&n->fsm, c->seq, TPDB_NOMEM, "out of memory");
        goto out_free_buf;
    }
    a->node = n;
    a->seq = c->seq;
    a->req.data = a;
    rv = raft_apply(r, &a->req, &buf, 1, applyCb);
    if (rv != 0) {
        /* Not appended: a definite failure. */
        snprintf(msg, sizeof msg, "raft apply: %s", raft_strerror(rv));
        tpdbFsmProposalFinish(
            &n->fsm, c->seq,
            rv == RAFT_NOTLEADER ? TPDB_NOTLEADER : fromRaft(rv), msg);
        tpdb_free(a);
        goto out_free_buf;
    }
    tpdb_free(c);
    return;
out_free_buf:
    raft_free(c->buf);
    tpdb_free(c);
}

/* Refuses a write of about `need` bytes while the data directory's file
 * system would be left with less than min_free_mb: nothing is proposed, so
 * the failure is definite, and raft's log, the WAL's held commit frame and
 * a restart (raft probes its directory by writing) always find room. A
 * refusal also asks the loop to hand leadership to another voter, so that
 * the next writes go there. Returns TPDB_OK or TPDB_FULL with errmsg. */
static int spaceCheck(struct tpdb_node *n, uint64_t need, char *errmsg)
{
    struct statvfs vfs;
    if (statvfs(n->raftDir, &vfs) != 0) {
        return TPDB_OK; /* nothing to judge by; raft reports real errors */
    }
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    uint64_t keep = (uint64_t)n->cfg.min_free_mb << 20;
    if (avail >= keep && avail - keep >= need) {
        return TPDB_OK;
    }
    /* The loop hands leadership on, if another voter can take it. */
    pthread_mutex_lock(&n->mutex);
    n->spaceRefused = 1;
    pthread_mutex_unlock(&n->mutex);
    uv_async_send(&n->async);
    tpdbErrf(errmsg,
             "disk full: %llu MiB free on the file system of %s, a write "
             "needs %llu MiB kept free (min_free_mb) plus its own %llu KiB; "
             "free space to resume writes",
             (unsigned long long)(avail >> 20), n->dataDir,
             (unsigned long long)n->cfg.min_free_mb,
             (unsigned long long)((need + 1023) >> 10));
    return TPDB_FULL;
}

int tpdbNodePropose(struct tpdb_node *n,
                    int type,
                    const char *db,
                    const struct tpdb_txn *txn,
                    char *errmsg)
{
    struct tpdb_proposal p;
    struct nodeCall *c;
    int rc;

    /* The entry, then its frames in the WAL and the main file. */
    rc = spaceCheck(n, 3 * (uint64_t)txn->n_pages * txn->page_size, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    memset(&p, 0, sizeof p);
    pthread_mutex_lock(&n->mutex);
    p.seq = ++n->nextSeq;
    pthread_mutex_unlock(&n->mutex);
    p.db = db;
    c = tpdb_calloc(1, sizeof *c);
    if (c == NULL) {
        tpdbErrf(errmsg, "commit: out of memory");
        return TPDB_NOMEM;
    }
    rc = tpdbEntryEncode(type, db, n->origin, p.seq, txn, &c->buf, &c->len,
                         errmsg);
    if (rc != TPDB_OK) {
        tpdb_free(c);
        tpdbErrWrap(errmsg, "commit: encode entry");
        return rc;
    }
    c->fn = proposeFn;
    c->seq = p.seq;
    tpdbFsmProposalAdd(&n->fsm, &p);
    rc = callSubmit(n, c);
    if (rc != TPDB_OK) {
        raft_free(c->buf);
        tpdb_free(c);
        tpdbFsmProposalFinish(&n->fsm, p.seq, TPDB_SHUTDOWN,
                              "node is shutting down");
    }
    rc = tpdbFsmProposalWait(&n->fsm, &p, n->cfg.commit_ms);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", p.errmsg[0] ? p.errmsg : tpdb_strerror(rc));
    }
    return rc;
}

int tpdbNodeCommit(struct tpdb_node *n,
                   const char *db,
                   const struct tpdb_txn *txn,
                   char *errmsg)
{
    return tpdbNodePropose(n, TPDB_ENTRY_TXN, db, txn, errmsg);
}

/* Part `index` of a sequence whose first entry is of type `begin`. */
static int commitPart(struct tpdb_node *n,
                      int begin,
                      const char *db,
                      const struct tpdb_txn *part,
                      unsigned index,
                      int final,
                      char *errmsg)
{
    int type = final        ? TPDB_ENTRY_CHUNK_END
               : index == 0 ? begin
                            : TPDB_ENTRY_CHUNK;
    int rc = tpdbNodePropose(n, type, db, part, errmsg);
    if (!final && rc == TPDB_UNKNOWN) {
        /* Without its last part the transaction cannot commit. */
        tpdbErrWrap(errmsg, "part %u of a large transaction: not committed",
                    index);
        rc = TPDB_RAFT;
    }
    return rc;
}

int tpdbNodeCommitPart(struct tpdb_node *n,
                       const char *db,
                       const struct tpdb_txn *part,
                       unsigned index,
                       int final,
                       char *errmsg)
{
    return commitPart(n, TPDB_ENTRY_CHUNK_BEGIN, db, part, index, final,
                      errmsg);
}

int tpdbNodeCommitFilePart(struct tpdb_node *n,
                           const char *db,
                           const struct tpdb_txn *part,
                           unsigned index,
                           int final,
                           char *errmsg)
{
    return commitPart(n, TPDB_ENTRY_TPDBFILE_BEGIN, db, part, index, final,
                      errmsg);
}

int tpdbNodeCommitDeltaPart(struct tpdb_node *n,
                            const char *db,
                            const struct tpdb_txn *part,
                            unsigned index,
                            int final,
                            char *errmsg)
{
    return commitPart(n, TPDB_ENTRY_TPDBFILE_DELTA, db, part, index, final,
                      errmsg);
}

int tpdbNodeKnows(struct tpdb_node *n, const char *name)
{
    return tpdbFsmKnows(&n->fsm, name);
}

void tpdbNodeOwnWriteDone(struct tpdb_node *n, const char *db, int written)
{
    tpdbFsmOwnWriteDone(&n->fsm, db, written);
}

/* The hold on db, if any. Caller holds n->mutex. */
static struct nodeHold *holdFind(struct tpdb_node *n, const char *db)
{
    for (struct nodeHold *h = n->holds; h != NULL; h = h->next) {
        if (strcmp(h->db, db) == 0) {
            return h;
        }
    }
    return NULL;
}

int tpdbNodeHoldWrites(struct tpdb_node *n, const char *db, int hold)
{
    int rc = TPDB_OK;
    pthread_mutex_lock(&n->mutex);
    struct nodeHold *h = holdFind(n, db);
    if (hold && h == NULL) {
        h = tpdb_calloc(1, sizeof *h);
        if (h == NULL) {
            rc = TPDB_NOMEM;
        } else {
            snprintf(h->db, sizeof h->db, "%s", db);
            h->next = n->holds;
            n->holds = h;
        }
    }
    if (rc == TPDB_OK && hold) {
        h->count++;
    } else if (!hold && h != NULL && --h->count == 0) {
        struct nodeHold **pp = &n->holds;
        while (*pp != h) {
            pp = &(*pp)->next;
        }
        *pp = h->next;
        tpdb_free(h);
    }
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mutex);
    return rc;
}

int tpdbNodeWriteCheck(struct tpdb_node *n, const char *db, char *errmsg)
{
    uint64_t deadline = tpdbNowMs() + n->cfg.election_ms * 2;
    int rc = TPDB_OK;
    pthread_mutex_lock(&n->mutex);
    for (;;) {
        if (n->stopping) {
            rc = TPDB_SHUTDOWN;
            tpdbErrf(errmsg, "node is shutting down");
            break;
        }
        if (holdFind(n, db) != NULL) {
            /* A write session of another process on db is not over yet
             * (local.h): its transaction may be acknowledged and not yet
             * written, and a write now would be computed over a state
             * that lacks it. It ends microseconds after that process
             * released the write lock, or after one WAL append if it
             * died. */
            if (tpdbNowMs() >= deadline) {
                rc = TPDB_BUSY;
                tpdbErrf(errmsg,
                         "a write of another process through this node on "
                         "%s is not finished yet: roll back and retry",
                         db);
                break;
            }
            tpdbCondWaitMs(&n->cond, &n->mutex, 1);
            continue;
        }
        if (n->role == RAFT_LEADER && n->readyTerm == n->term) {
            /* The caller holds the database's write lock, which queued
             * entries wait for: waiting here could only time out. Its
             * transaction was read over a state that lacks them anyway. */
            if (tpdbFsmPendingFor(&n->fsm, db) > 0) {
                rc = TPDB_BUSY;
                tpdbErrf(errmsg,
                         "earlier entries of %s are not written here yet "
                         "(they wait for this transaction's write lock, or "
                         "for a stream from a peer): roll back and retry",
                         db);
            }
            break;
        }
        if (n->role == RAFT_FOLLOWER && n->leaderId != 0 &&
            n->leaderId != n->id) {
            rc = TPDB_NOTLEADER;
            tpdbErrf(errmsg, "not the leader: node %llu is, at %s",
                     (unsigned long long)n->leaderId, n->leaderAddress);
            break;
        }
        if (tpdbNowMs() >= deadline) {
            rc = TPDB_NOTLEADER;
            tpdbErrf(errmsg, "not the leader: no leader elected");
            break;
        }
        tpdbCondWaitMs(&n->cond, &n->mutex, 5);
    }
    pthread_mutex_unlock(&n->mutex);
    return rc;
}

const char *tpdbNodeDataDir(const struct tpdb_node *n)
{
    return n->dataDir;
}

void tpdbNodeWaitWritable(struct tpdb_node *n, const char *db)
{
    uint64_t deadline = tpdbNowMs() + n->cfg.election_ms * 2;
    pthread_mutex_lock(&n->mutex);
    while (!n->stopping && n->role == RAFT_LEADER &&
           tpdbFsmPendingFor(&n->fsm, db) > 0 && tpdbNowMs() < deadline) {
        tpdbCondWaitMs(&n->cond, &n->mutex, 5);
    }
    pthread_mutex_unlock(&n->mutex);
}

void tpdbNodeLeader(struct tpdb_node *n, char *buf, size_t size)
{
    pthread_mutex_lock(&n->mutex);
    if (n->leaderId != 0) {
        snprintf(buf, size, "%llu@%s", (unsigned long long)n->leaderId,
                 n->leaderAddress);
    } else {
        snprintf(buf, size, "%s", "");
    }
    pthread_mutex_unlock(&n->mutex);
}

/* Appends one database's state to the JSON array arg. */
static void dbStateCb(void *arg, const struct tpdb_fsm_db_state *st)
{
    json_array_append_new(
        arg, json_pack("{s:s,s:I,s:I,s:i,s:b}", "name", st->name,
                       "applied_index", (json_int_t)st->applied_index,
                       "last_entry", (json_int_t)st->last_entry, "queued",
                       (int)st->queued, "fetching", st->fetching));
}

static void statusFn(struct tpdb_node *n, struct nodeCall *c)
{
    struct raft *r = &n->raft;
    raft_id leaderId = 0;
    const char *leaderAddress = NULL;
    json_t *members = json_array();
    json_t *o;
    raft_leader(r, &leaderId, &leaderAddress);
    for (unsigned i = 0; members != NULL && i < r->configuration.n; i++) {
        const struct raft_server *s = &r->configuration.servers[i];
        json_array_append_new(
            members,
            json_pack("{s:I,s:s,s:s}", "id", (json_int_t)s->id, "address",
                      s->address, "role", memberRoleName(s->role)));
    }
    struct tpdb_fsm_stats st;
    tpdbFsmStats(&n->fsm, &st);
    uint64_t applied = tpdbFsmWrittenIndex(&n->fsm, raft_last_applied(r));
    struct tpdb_iohold_stats hs;
    tpdbIoHoldStats(&n->hold, &hs);
    json_t *stats = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
        "applied_entries", (json_int_t)st.applied_entries, "own_entries",
        (json_int_t)st.own_entries, "applied_pages",
        (json_int_t)st.applied_pages, "snapshots", (json_int_t)st.snapshots,
        "restores", (json_int_t)st.restores, "pending",
        (json_int_t)tpdbFsmPending(&n->fsm), "fetching",
        (json_int_t)tpdbFsmFetching(&n->fsm), "fetches", (json_int_t)st.fetches,
        "served", (json_int_t)st.served, "durable_points",
        (json_int_t)st.durable_points, "refused",
        (json_int_t)tpdbTransportRefusedCount(&n->transport), "log_held",
        (json_int_t)hs.held_ops, "log_holds", (json_int_t)hs.holds,
        "log_stripped", (json_int_t)hs.stripped);
    o = json_pack(
        "{s:I,s:s,s:s,s:I,s:s?,s:I,s:I,s:I,s:I,s:o,s:I,s:o}", "id",
        (json_int_t)n->id, "address", n->address, "role",
        roleName(raft_state(r)), "leader_id", (json_int_t)leaderId,
        "leader_address", leaderAddress, "term", (json_int_t)r->current_term,
        "commit_index", (json_int_t)r->commit_index, "applied_index",
        (json_int_t)applied, "last_index", (json_int_t)raft_last_index(r),
        "members", members, "databases", (json_int_t)tpdbFsmDbCount(&n->fsm),
        "stats", stats);
    json_t *dbs = json_array();
    if (o != NULL && dbs != NULL) {
        tpdbFsmDbStates(&n->fsm, raft_last_applied(r), dbStateCb, dbs);
    }
    json_object_set_new(o, "dbs", dbs);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        nodeCallDone(n, c, TPDB_NOMEM);
        return;
    }
    *c->json = tpdb_strdup(text);
    free(text);
    nodeCallDone(n, c, *c->json != NULL ? TPDB_OK : TPDB_NOMEM);
}

int tpdbNodeStatusJson(struct tpdb_node *n, char **json, char *errmsg)
{
    struct nodeCall c;
    memset(&c, 0, sizeof c);
    c.fn = statusFn;
    c.json = json;
    *json = NULL;
    return nodeCallRun(n, &c, errmsg);
}

static void changeCb(struct raft_change *req, int status)
{
    struct nodeCall *c = req->data;
    if (status != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "membership change: %s",
                 raft_strerror(status));
    }
    nodeCallDone(c->node, c, fromRaft(status));
}

static void changeFn(struct tpdb_node *n, struct nodeCall *c)
{
    struct raft *r = &n->raft;
    int rv;
    c->change.data = c;
    c->node = n;
    if (raft_state(r) != RAFT_LEADER) {
        notLeaderMsg(n, c->errmsg);
        nodeCallDone(n, c, TPDB_NOTLEADER);
        return;
    }
    switch (c->role) {
        case -1:
            rv = raft_add(r, &c->change, c->id, c->address, changeCb);
            break;
        case -2:
            rv = raft_remove(r, &c->change, c->id, changeCb);
            break;
        default:
            rv = raft_assign(r, &c->change, c->id, c->role, changeCb);
            break;
    }
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "membership change: %s",
                 raft_errmsg(r)[0] ? raft_errmsg(r) : raft_strerror(rv));
        nodeCallDone(n, c,
                     fromRaft(rv) == TPDB_RAFT ? TPDB_INVALID : fromRaft(rv));
    }
}

static int changeRun(struct tpdb_node *n,
                     uint64_t id,
                     const char *address,
                     int role,
                     char *errmsg)
{
    struct nodeCall c;
    memset(&c, 0, sizeof c);
    c.fn = changeFn;
    c.id = id;
    c.address = address;
    c.role = role;
    return nodeCallRun(n, &c, errmsg);
}

int tpdbNodeAdd(struct tpdb_node *n,
                uint64_t id,
                const char *address,
                char *errmsg)
{
    if (id == 0 || address == NULL || !tpdbAddressValid(address)) {
        tpdbErrf(errmsg, "add: need a node id > 0 and a host:port address");
        return TPDB_INVALID;
    }
    return changeRun(n, id, address, -1, errmsg);
}

int tpdbNodeAssign(struct tpdb_node *n,
                   uint64_t id,
                   const char *role,
                   char *errmsg)
{
    int r;
    if (role != NULL && strcmp(role, "voter") == 0) {
        r = RAFT_VOTER;
    } else if (role != NULL && strcmp(role, "standby") == 0) {
        r = RAFT_STANDBY;
    } else if (role != NULL && strcmp(role, "spare") == 0) {
        r = RAFT_SPARE;
    } else {
        tpdbErrf(errmsg, "assign: role must be voter, standby or spare");
        return TPDB_INVALID;
    }
    return changeRun(n, id, NULL, r, errmsg);
}

int tpdbNodeRemove(struct tpdb_node *n, uint64_t id, char *errmsg)
{
    return changeRun(n, id, NULL, -2, errmsg);
}

static void transferCb(struct raft_transfer *req)
{
    struct nodeCall *c = req->data;
    nodeCallDone(c->node, c, TPDB_OK);
}

static void transferFn(struct tpdb_node *n, struct nodeCall *c)
{
    c->transfer.data = c;
    c->node = n;
    if (raft_state(&n->raft) != RAFT_LEADER) {
        notLeaderMsg(n, c->errmsg);
        nodeCallDone(n, c, TPDB_NOTLEADER);
        return;
    }
    int rv = raft_transfer(&n->raft, &c->transfer, c->id, transferCb);
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "transfer: %s",
                 raft_strerror(rv));
        nodeCallDone(n, c, TPDB_INVALID);
    }
}

int tpdbNodeTransfer(struct tpdb_node *n, uint64_t id, char *errmsg)
{
    struct nodeCall c;
    memset(&c, 0, sizeof c);
    c.fn = transferFn;
    c.id = id;
    return nodeCallRun(n, &c, errmsg);
}

static void checkpointFn(struct tpdb_node *n, struct nodeCall *c)
{
    tpdbFsmCheckpointAll(&n->fsm);
    nodeCallDone(n, c, TPDB_OK);
}

int tpdbNodeCheckpoint(struct tpdb_node *n, char *errmsg)
{
    struct nodeCall c;
    memset(&c, 0, sizeof c);
    c.fn = checkpointFn;
    return nodeCallRun(n, &c, errmsg);
}

int nodeRuntimeStart(struct tpdb_node *n, char *errmsg)
{
    n->async.data = n;
    n->check.data = n;
    uv_async_init(&n->loop, &n->async, asyncCb);
    uv_check_init(&n->loop, &n->check);
    uv_check_start(&n->check, checkCb);
    uv_unref((uv_handle_t *)&n->check);
    n->drainTimer.data = n;
    uv_timer_init(&n->loop, &n->drainTimer);
    uv_timer_start(&n->drainTimer, drainCb, 10, 10);
    if (pthread_create(&n->thread, NULL, loopThread, n) != 0) {
        tpdbErrf(errmsg, "cannot start the node thread");
        return TPDB_NOMEM;
    }
    return TPDB_OK;
}

void nodeRuntimeStop(struct tpdb_node *n)
{
    pthread_mutex_lock(&n->mutex);
    n->stopping = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mutex);
    uv_async_send(&n->async);
    pthread_join(n->thread, NULL);
}
