/*
 * The deterministic FSM test cluster (see cluster.h): VFS test hooks that
 * route each commit of a server's application connection through that
 * server's raft instance in the fixture, and helpers to step, isolate and
 * checkpoint servers.
 */
#include "tests/fsm/cluster.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "raftfsm/entry.h"
#include "vfs/vfs.h"

/* Fixture steps a commit may take before its outcome counts as unknown;
 * far more than an election and a catch-up need. */
#define COMMIT_STEP_LIMIT 200000
/* Fixture (virtual) milliseconds the helpers wait for progress. */
#define CLUSTER_WAIT_MS 120000

/* One application connection's main database file. */
struct clusterHandle {
    struct cluster *c;
    unsigned server;
    char name[256];
    int acked;      /* the FSM acknowledged a commit not yet written */
    unsigned parts; /* parts of a large transaction sent so far */
};

/* One proposal handed to raft_apply. */
struct clusterApply {
    struct raft_apply req;
    struct raft_fsm *fsm;
    uint64_t seq;
};

struct clusterBarrier {
    struct raft_barrier req;
    int done;
    int status;
    int abandoned; /* the waiter returned; the callback frees it */
};

static int hookDbOpen(void *arg,
                      const char *path,
                      const char *uri,
                      void **handle,
                      char *errmsg)
{
    struct cluster *c = arg;
    (void)uri;
    for (unsigned i = 0; i < c->n; i++) {
        size_t n = strlen(c->s[i].dir);
        if (strncmp(path, c->s[i].dir, n) != 0 || path[n] != '/' ||
            strchr(path + n + 1, '/') != NULL) {
            continue;
        }
        struct clusterHandle *h = tpdb_calloc(1, sizeof *h);
        if (h == NULL) {
            return TPDB_NOMEM;
        }
        h->c = c;
        h->server = i;
        snprintf(h->name, sizeof h->name, "%s", path + n + 1);
        *handle = h;
        return TPDB_OK;
    }
    tpdbErrf(errmsg, "test cluster: %s is in no server's directory", path);
    return TPDB_INVALID;
}

static void hookDbClose(void *arg, void *handle)
{
    (void)arg;
    tpdb_free(handle);
}

static int hookWriteCheck(void *arg, void *handle, char *errmsg)
{
    struct cluster *c = arg;
    struct clusterHandle *h = handle;
    struct raft *r = raft_fixture_get(&c->f, h->server);
    if (raft_state(r) != RAFT_LEADER ||
        c->s[h->server].readyTerm != r->current_term) {
        tpdbErrf(errmsg, "not the leader: server %u (raft state %d)", h->server,
                 raft_state(r));
        return TPDB_NOTLEADER;
    }
    /* As the node does: entries of the database still queued, or a stream
     * awaited, refuse the write. */
    if (tpdbFsmPendingFor(&c->s[h->server].fsm, h->name) > 0) {
        tpdbErrf(errmsg, "earlier entries of %s are not written yet", h->name);
        return TPDB_BUSY;
    }
    return TPDB_OK;
}

/* A pwrite64 that fails as on a full disk (failCommitWrite). */
static ssize_t failingPwrite(int fd, const void *buf, size_t n, off_t off)
{
    (void)fd;
    (void)buf;
    (void)n;
    (void)off;
    errno = ENOSPC;
    return -1;
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct clusterApply *a = req->data;
    (void)result;
    if (status != 0) {
        char msg[TPDB_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "leadership lost before commit (%s)",
                 raft_strerror(status));
        tpdbFsmProposalFinish(a->fsm, a->seq, TPDB_UNKNOWN, msg);
    }
    tpdb_free(a);
}

/* Hands the encoded entry to server i's raft; on failure the proposal is
 * finished with a definite error. Takes ownership of buf. */
static void propose(struct cluster *c,
                    unsigned i,
                    uint64_t seq,
                    struct raft_buffer buf)
{
    struct raft_fsm *fsm = &c->s[i].fsm;
    struct clusterApply *a = tpdb_malloc(sizeof *a);
    int rv;
    if (a == NULL) {
        raft_free(buf.base);
        tpdbFsmProposalFinish(fsm, seq, TPDB_NOMEM, "out of memory");
        return;
    }
    a->fsm = fsm;
    a->seq = seq;
    a->req.data = a;
    rv = raft_apply(raft_fixture_get(&c->f, i), &a->req, &buf, 1, applyCb);
    if (rv != 0) {
        raft_free(buf.base);
        tpdb_free(a);
        tpdbFsmProposalFinish(fsm, seq,
                              rv == RAFT_NOTLEADER ? TPDB_NOTLEADER : TPDB_RAFT,
                              raft_strerror(rv));
        return;
    }
    if (c->onPropose != NULL) {
        c->onPropose(c, i);
    }
}

/* Replicates one entry of `type` for h's server and steps the fixture until
 * its outcome. `last`: the transaction is complete with it (the local write
 * follows; failCommitWrite applies). */
static int commitEntry(struct cluster *c,
                       struct clusterHandle *h,
                       int type,
                       int last,
                       const struct tpdb_txn *txn,
                       char *errmsg)
{
    struct raft_fsm *fsm = &c->s[h->server].fsm;
    struct tpdb_proposal p;
    struct raft_buffer buf;
    int rc;

    memset(&p, 0, sizeof p);
    p.seq = ++c->nextSeq;
    p.db = h->name;
    c->commits++;
    rc = tpdbEntryEncode(type, h->name, c->s[h->server].origin, p.seq, txn,
                         &buf.base, &buf.len, errmsg);
    if (rc != TPDB_OK) {
        c->lastCommitRc = rc;
        return rc;
    }
    tpdbFsmProposalAdd(fsm, &p);
    c->s[h->server].pending = last ? &p : NULL;
    propose(c, h->server, p.seq, buf);
    /* Single-threaded: the FSM sets p.state from inside the steps. */
    for (unsigned n = 0; p.state == TPDB_BUSY && n < COMMIT_STEP_LIMIT; n++) {
        raft_fixture_step(&c->f);
    }
    c->s[h->server].pending = NULL;
    rc = tpdbFsmProposalWait(fsm, &p, 0);
    if (rc == TPDB_OK && last && c->failCommitWrite) {
        /* The quorum holds it; the local write of its frame now fails. */
        sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
        c->realPwrite = unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
        unix_vfs->xSetSystemCall(unix_vfs, "pwrite64",
                                 (sqlite3_syscall_ptr)failingPwrite);
        c->failCommitWrite = 0;
    }
    if (rc == TPDB_OK && last) {
        h->acked = 1;
    } else if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", p.errmsg[0] ? p.errmsg : tpdb_strerror(rc));
    }
    c->lastCommitRc = rc;
    return rc;
}

static int hookCommit(void *arg,
                      void *handle,
                      const struct tpdb_txn *txn,
                      char *errmsg)
{
    return commitEntry(arg, handle, TPDB_ENTRY_TXN, 1, txn, errmsg);
}

/* A part of a large transaction, as the node replicates it. */
static int hookCommitPart(void *arg,
                          void *handle,
                          const struct tpdb_txn *part,
                          int final,
                          char *errmsg)
{
    struct cluster *c = arg;
    struct clusterHandle *h = handle;
    int type = final           ? TPDB_ENTRY_CHUNK_END
               : h->parts == 0 ? TPDB_ENTRY_CHUNK_BEGIN
                               : TPDB_ENTRY_CHUNK;
    int rc = commitEntry(c, h, type, final, part, errmsg);
    h->parts = final || rc != TPDB_OK ? 0 : h->parts + 1;
    c->parts++;
    if (!final && rc == TPDB_UNKNOWN) {
        rc = TPDB_RAFT; /* not committed without its last part */
        c->lastCommitRc = rc;
    }
    return rc;
}

static void hookTxnEnd(void *arg, void *handle, int committed)
{
    struct cluster *c = arg;
    struct clusterHandle *h = handle;
    h->parts = 0;
    if (c->realPwrite != NULL) {
        sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
        unix_vfs->xSetSystemCall(unix_vfs, "pwrite64", c->realPwrite);
        c->realPwrite = NULL;
    }
    if (h->acked) {
        h->acked = 0;
        tpdbFsmOwnWriteDone(&c->s[h->server].fsm, h->name, committed);
    }
}

static int removeCb(const char *path,
                    const struct stat *st,
                    int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* The fixture drives each FSM through an adapter, for two reasons.
 *
 * raft 0.15's I/O backends (the fixture's too) have no async_work, so raft
 * refuses an FSM with snapshot_async. Should the FSM offer one, the adapter
 * presents it as version 2 and runs snapshot_async inline, right after
 * snapshot: the same calls in the same order, minus the worker thread.
 *
 * The FSM's snapshot waits (up to 5 s) until every acknowledged own
 * transaction is in the WAL. On one thread that write can only happen after
 * the step returns, so while the commit hook holds an acknowledged proposal
 * the adapter answers RAFT_BUSY at once, as the FSM would after its wait;
 * raft tries again at a later apply. */
static int adapterApply(struct raft_fsm *fsm,
                        const struct raft_buffer *buf,
                        void **result)
{
    struct clusterServer *s = fsm->data;
    clusterServiceFetches(s->c);
    int rv = s->fsm.apply(&s->fsm, buf, result);
    clusterServiceFetches(s->c);
    return rv;
}

static void fetcherStart(void *arg, const char *db, uint64_t min)
{
    struct clusterServer *s = arg;
    struct cluster *c = s->c;
    for (unsigned i = 0; i < CLUSTER_FETCHES; i++) {
        struct clusterFetch *j = &c->fetches[i];
        if (!j->used || (j->server == s->index && strcmp(j->db, db) == 0)) {
            if (j->used) {
                tpdbFsmFetchAbort(j->ff);
            }
            memset(j, 0, sizeof *j);
            j->used = 1;
            j->server = s->index;
            snprintf(j->db, sizeof j->db, "%s", db);
            j->min = min;
            return;
        }
    }
    fprintf(stderr, "test cluster: too many fetches\n");
}

/* Copies the database of job j from server `from` into its staged fetch. */
static int fetchFrom(struct cluster *c, struct clusterFetch *j, unsigned from)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_fsm_serve *sv = NULL;
    uint32_t ps = 0;
    uint64_t served = 0;
    int rc = tpdbFsmServeOpen(&c->s[from].fsm, j->db, j->min, 0, &sv, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    tpdbFsmServeInfo(sv, &ps, &j->pages, &served);
    rc = tpdbFsmFetchBegin(&c->s[j->server].fsm, j->db, ps, served, 0, &j->ff,
                           errmsg);
    uint8_t *buf = rc == TPDB_OK ? tpdb_malloc((size_t)ps * 16) : NULL;
    for (uint32_t p = 1; rc == TPDB_OK && p <= j->pages; p += 16) {
        uint32_t n = j->pages - p + 1 < 16 ? j->pages - p + 1 : 16;
        rc = buf == NULL ? TPDB_NOMEM : tpdbFsmServeRead(sv, p, n, buf, errmsg);
        if (rc == TPDB_OK) {
            rc = tpdbFsmFetchPages(j->ff, p, n, buf, errmsg);
        }
    }
    tpdb_free(buf);
    tpdbFsmServeClose(sv);
    if (rc != TPDB_OK && j->ff != NULL) {
        tpdbFsmFetchAbort(j->ff);
        j->ff = NULL;
    }
    if (rc != TPDB_OK) {
        fprintf(stderr, "test cluster: fetch %s: %s\n", j->db, errmsg);
    }
    return rc;
}

/* One step of job j: stream it from a live server that has it, or finish
 * it once the entries it needs have arrived. */
static void serviceOne(struct cluster *c, struct clusterFetch *j)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    uint64_t min = 0;
    if (!tpdbFsmFetchNeeded(&c->s[j->server].fsm, j->db, &min)) {
        tpdbFsmFetchAbort(j->ff);
        j->used = 0;
        return;
    }
    for (unsigned k = 0; j->ff == NULL && k < c->n; k++) {
        if (k != j->server && c->f.servers[k].alive) {
            fetchFrom(c, j, k);
        }
    }
    if (j->ff == NULL) {
        return;
    }
    int rc = tpdbFsmFetchFinish(j->ff, j->pages, errmsg);
    if (rc != TPDB_BUSY) {
        j->ff = NULL;
        if (rc != TPDB_OK) {
            fprintf(stderr, "test cluster: finish %s: %s\n", j->db, errmsg);
        }
    }
}

void clusterServiceFetches(struct cluster *c)
{
    if (c->servicing) {
        return;
    }
    c->servicing = 1;
    for (unsigned i = 0; i < CLUSTER_FETCHES; i++) {
        if (c->fetches[i].used) {
            serviceOne(c, &c->fetches[i]);
        }
    }
    c->servicing = 0;
}

static int adapterSnapshot(struct raft_fsm *fsm,
                           struct raft_buffer *bufs[],
                           unsigned *n_bufs)
{
    struct clusterServer *s = fsm->data;
    struct raft_fsm *real = &s->fsm;
    if (s->pending != NULL && s->pending->state == TPDB_OK) {
        return RAFT_BUSY;
    }
    int rv = real->snapshot(real, bufs, n_bufs);
    if (rv != 0) {
        return rv;
    }
    if (real->version >= 3 && real->snapshot_async != NULL) {
        rv = real->snapshot_async(real, bufs, n_bufs);
        if (rv != 0) {
            real->snapshot_finalize(real, bufs, n_bufs);
        }
    }
    return rv;
}

static int adapterFinalize(struct raft_fsm *fsm,
                           struct raft_buffer *bufs[],
                           unsigned *n_bufs)
{
    struct clusterServer *s = fsm->data;
    return s->fsm.snapshot_finalize(&s->fsm, bufs, n_bufs);
}

static int adapterRestore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct clusterServer *s = fsm->data;
    return s->fsm.restore(&s->fsm, buf);
}

static void adapterInit(struct clusterServer *s)
{
    memset(&s->adapter, 0, sizeof s->adapter);
    s->adapter.version = 2;
    s->adapter.data = s;
    s->adapter.apply = adapterApply;
    s->adapter.snapshot = adapterSnapshot;
    s->adapter.snapshot_finalize = adapterFinalize;
    s->adapter.restore = adapterRestore;
}

static int serverInit(struct cluster *c, unsigned i)
{
    struct clusterServer *s = &c->s[i];
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    char root[sizeof c->root];
    memcpy(root, c->root, sizeof root);
    snprintf(s->dir, sizeof s->dir, "%s/node%u", root, i + 1);
    snprintf(s->meta, sizeof s->meta, "%s/node%u/.tpdb", root, i + 1);
    if (mkdir(s->dir, 0755) != 0 || mkdir(s->meta, 0755) != 0) {
        fprintf(stderr, "mkdir %s: %s\n", s->dir, strerror(errno));
        return -1;
    }
    s->origin = 0x7e570000u + i + 1;
    if (tpdbFsmInit(&s->fsm, s->dir, s->meta, s->origin, 0, errmsg) !=
        TPDB_OK) {
        fprintf(stderr, "fsm init: %s\n", errmsg);
        return -1;
    }
    s->c = c;
    s->index = i;
    struct tpdb_fsm_fetcher fetcher = {s, fetcherStart};
    tpdbFsmSetFetcher(&s->fsm, &fetcher);
    adapterInit(s);
    int rv = raft_fixture_grow(&c->f, &s->adapter);
    if (rv != 0) {
        fprintf(stderr, "fixture grow: %d %s\n", rv, raft_strerror(rv));
        tpdbFsmClose(&s->fsm);
        return -1;
    }
    return 0;
}

static int registerVfs(struct cluster *c)
{
    struct tpdb_vfs_hooks hooks = {
        .version = 3,
        .arg = c,
        .db_open = hookDbOpen,
        .db_close = hookDbClose,
        .write_check = hookWriteCheck,
        .commit = hookCommit,
        .txn_end = hookTxnEnd,
        .commit_part = hookCommitPart,
    };
    return tpdbVfsRegister("tpdb", &hooks, 0);
}

static int clusterStart(struct cluster *c)
{
    struct raft_configuration conf;
    int rv = raft_fixture_configuration(&c->f, CLUSTER_N, &conf);
    if (rv != 0) {
        return rv;
    }
    rv = raft_fixture_bootstrap(&c->f, &conf);
    raft_configuration_close(&conf);
    for (unsigned i = 0; i < c->n && rv == 0; i++) {
        /* An isolated server must not depose the leader when it returns. */
        raft_set_pre_vote(raft_fixture_get(&c->f, i), true);
    }
    if (rv == 0) {
        rv = raft_fixture_start(&c->f);
    }
    for (unsigned i = 0; i < c->n && rv == 0; i++) {
        tpdbFsmSetRaft(&c->s[i].fsm, raft_fixture_get(&c->f, i));
    }
    return rv;
}

struct cluster *clusterNew(void)
{
    char tmpl[] = "/tmp/tpdb-fsm-XXXXXX";
    struct cluster *c = tpdb_calloc(1, sizeof *c);
    char real[PATH_MAX];
    if (c == NULL || mkdtemp(tmpl) == NULL || realpath(tmpl, real) == NULL ||
        strlen(real) >= sizeof c->root) {
        goto err_after_alloc;
    }
    snprintf(c->root, sizeof c->root, "%s", real);
    if (raft_fixture_initialize(&c->f) != 0) {
        goto err_after_root;
    }
    for (; c->n < CLUSTER_N; c->n++) {
        if (serverInit(c, c->n) != 0) {
            goto err_after_fixture;
        }
    }
    int rv = clusterStart(c);
    if (rv != 0) {
        fprintf(stderr, "fixture start: %s\n", raft_strerror(rv));
        goto err_after_fixture;
    }
    rv = registerVfs(c);
    if (rv != SQLITE_OK) {
        fprintf(stderr, "register vfs: %s\n", sqlite3_errstr(rv));
        goto err_after_fixture;
    }
    return c;

err_after_fixture:
    raft_fixture_close(&c->f);
    for (unsigned i = 0; i < CLUSTER_FETCHES; i++) {
        if (c->fetches[i].used) {
            tpdbFsmFetchAbort(c->fetches[i].ff);
        }
    }
    for (unsigned i = 0; i < c->n; i++) {
        tpdbFsmClose(&c->s[i].fsm);
    }
err_after_root:
    nftw(tmpl, removeCb, 16, FTW_DEPTH | FTW_PHYS);
err_after_alloc:
    fprintf(stderr, "cluster setup failed\n");
    tpdb_free(c);
    return NULL;
}

void clusterFree(struct cluster *c)
{
    if (c == NULL) {
        return;
    }
    /* The fixture first: closing raft fails pending proposals, which
     * reaches the FSMs. */
    raft_fixture_close(&c->f);
    for (unsigned i = 0; i < CLUSTER_FETCHES; i++) {
        if (c->fetches[i].used) {
            tpdbFsmFetchAbort(c->fetches[i].ff);
        }
    }
    for (unsigned i = 0; i < c->n; i++) {
        tpdbFsmClose(&c->s[i].fsm);
    }
    tpdbVfsRegister("tpdb", NULL, 0);
    nftw(c->root, removeCb, 16, FTW_DEPTH | FTW_PHYS);
    tpdb_free(c);
}

/* Frees the request if its waiter gave up on it. */
unsigned clusterGrow(struct cluster *c)
{
    unsigned i = c->n;
    if (i >= CLUSTER_MAX || serverInit(c, i) != 0) {
        return CLUSTER_NONE;
    }
    c->n++;
    struct raft *r = raft_fixture_get(&c->f, i);
    raft_set_pre_vote(r, true);
    tpdbFsmSetRaft(&c->s[i].fsm, r);
    if (raft_start(r) != 0) {
        return CLUSTER_NONE;
    }
    return i;
}

static void barrierCb(struct raft_barrier *req, int status)
{
    struct clusterBarrier *b = req->data;
    b->done = 1;
    b->status = status;
    if (b->abandoned) {
        tpdb_free(b);
    }
}

/* The fixture's leader, if it is alive and still in the leader state: right
 * after a kill the fixture still names the dead server until its next
 * step. */
static bool hasLiveLeader(struct raft_fixture *f, void *arg)
{
    (void)arg;
    unsigned l = raft_fixture_leader_index(f);
    return l < raft_fixture_n(f) && raft_fixture_alive(f, l) &&
           raft_state(raft_fixture_get(f, l)) == RAFT_LEADER;
}

/* Prints every server's raft state, for a test that failed to make
 * progress. */
static void clusterDump(struct cluster *c, const char *why)
{
    fprintf(stderr, "cluster at %llu ms: %s\n",
            (unsigned long long)raft_fixture_time(&c->f), why);
    for (unsigned i = 0; i < c->n; i++) {
        struct raft *r = raft_fixture_get(&c->f, i);
        fprintf(stderr,
                "  server %u: alive %d state %d term %llu last %llu "
                "commit %llu applied %llu\n",
                i, raft_fixture_alive(&c->f, i), raft_state(r),
                (unsigned long long)r->current_term,
                (unsigned long long)raft_last_index(r),
                (unsigned long long)r->commit_index,
                (unsigned long long)raft_last_applied(r));
    }
}

/* Runs one barrier on leader l; returns 1 once it is applied while l is
 * still leader. */
static int barrierOn(struct cluster *c, unsigned l)
{
    struct raft *r = raft_fixture_get(&c->f, l);
    struct clusterBarrier *b = tpdb_calloc(1, sizeof *b);
    int ok;
    if (b == NULL) {
        return 0;
    }
    b->req.data = b;
    if (raft_barrier(r, &b->req, barrierCb) != 0) {
        tpdb_free(b);
        return 0;
    }
    for (unsigned n = 0; !b->done && n < COMMIT_STEP_LIMIT; n++) {
        raft_fixture_step(&c->f);
    }
    ok = b->done && b->status == 0 && raft_state(r) == RAFT_LEADER;
    if (b->done) {
        tpdb_free(b);
    } else {
        b->abandoned = 1;
    }
    return ok;
}

unsigned clusterLeaderReady(struct cluster *c)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (!raft_fixture_step_until(&c->f, hasLiveLeader, NULL,
                                     CLUSTER_WAIT_MS)) {
            clusterDump(c, "no leader");
            return CLUSTER_NONE;
        }
        unsigned l = raft_fixture_leader_index(&c->f);
        struct raft *r = raft_fixture_get(&c->f, l);
        if (c->s[l].readyTerm != r->current_term) {
            /* As the node does when it becomes leader. */
            tpdbFsmBecameLeader(&c->s[l].fsm);
        }
        if (barrierOn(c, l)) {
            c->s[l].readyTerm = raft_fixture_get(&c->f, l)->current_term;
            return l;
        }
        clusterDump(c, "barrier failed");
    }
    return CLUSTER_NONE;
}

void clusterDbPath(struct cluster *c, unsigned i, const char *name, char *out)
{
    snprintf(out, CLUSTER_PATH_MAX, "%s/%s", c->s[i].dir, name);
}

sqlite3 *clusterOpen(struct cluster *c, unsigned i, const char *name)
{
    char path[CLUSTER_PATH_MAX];
    sqlite3 *db = NULL;
    clusterDbPath(c, i, name, path);
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "tpdb");
    if (rc != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", path,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

int clusterStepUntilApplied(struct cluster *c, unsigned i, raft_index index)
{
    if (i == CLUSTER_ALL) {
        i = raft_fixture_n(&c->f);
    }
    return raft_fixture_step_until_applied(&c->f, i, index, CLUSTER_WAIT_MS);
}

void clusterSnapshotEvery(struct cluster *c,
                          unsigned threshold,
                          unsigned trailing)
{
    for (unsigned i = 0; i < raft_fixture_n(&c->f); i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&c->f, i), threshold);
        raft_set_snapshot_trailing(raft_fixture_get(&c->f, i), trailing);
    }
}

void clusterIsolate(struct cluster *c, unsigned i, int disconnect)
{
    for (unsigned j = 0; j < c->n; j++) {
        if (j == i) {
            continue;
        }
        /* Saturated too: the fixture then leaves the server out when it
         * decides whether the other side has a stable leader. */
        if (disconnect) {
            raft_fixture_disconnect(&c->f, i, j);
            raft_fixture_disconnect(&c->f, j, i);
            raft_fixture_saturate(&c->f, i, j);
            raft_fixture_saturate(&c->f, j, i);
        } else {
            raft_fixture_desaturate(&c->f, i, j);
            raft_fixture_desaturate(&c->f, j, i);
            raft_fixture_reconnect(&c->f, i, j);
            raft_fixture_reconnect(&c->f, j, i);
        }
    }
}

int clusterCheckpoint(struct cluster *c, unsigned i, const char *name)
{
    char path[CLUSTER_PATH_MAX];
    char *uri;
    sqlite3 *db = NULL;
    int rc;
    clusterDbPath(c, i, name, path);
    uri = sqlite3_mprintf("file:%s?%s=1", path, TPDB_URI_INTERNAL);
    if (uri == NULL) {
        return SQLITE_NOMEM;
    }
    rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI,
                         "tpdb");
    sqlite3_free(uri);
    if (rc == SQLITE_OK) {
        /* A connection opens the WAL at its first read; before that a
         * checkpoint is a silent no-op. */
        rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", NULL, NULL,
                          NULL);
    }
    for (unsigned n = 0; rc == SQLITE_OK; n++) {
        int nLog = -1, nCkpt = -1;
        rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_TRUNCATE,
                                       &nLog, &nCkpt);
        if (rc == SQLITE_OK && (nLog != 0 || nCkpt != 0)) {
            fprintf(stderr, "checkpoint server %u: %d of %d frames\n", i, nCkpt,
                    nLog);
            rc = SQLITE_ERROR;
        }
        if (rc != SQLITE_BUSY || n >= 1000) {
            break;
        }
        /* A snapshot in progress pins a read transaction: let it end. */
        raft_fixture_step(&c->f);
        rc = SQLITE_OK;
    }
    sqlite3_close(db);
    return rc;
}

uint8_t *clusterReadFile(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long size;
    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        goto out;
    }
    buf = tpdb_malloc((size_t)size + 1);
    if (buf != NULL && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        tpdb_free(buf);
        buf = NULL;
    }
    *len = (size_t)size;
out:
    fclose(f);
    return buf;
}
