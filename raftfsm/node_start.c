/*
 * Node lifecycle (see node.h): the saved identity, the raft setup over the
 * uv backend and our transport, bootstrap, joining through a member,
 * waiting until a restarted node has applied its log again, the process's
 * registry of running nodes, and shutdown.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>
#include <sqlite3.h>
#include <uv.h>

#include "raftfsm/fetch.h"
#include "raftfsm/fsm.h"
#include "raftfsm/local.h"
#include "raftfsm/nodeint.h"

static pthread_mutex_t registryMutex = PTHREAD_MUTEX_INITIALIZER;
static struct tpdb_node *registry;

static void defaults(struct tpdb_node_config *cfg)
{
    if (cfg->election_ms == 0) {
        cfg->election_ms = 1000;
    }
    if (cfg->heartbeat_ms == 0) {
        cfg->heartbeat_ms = cfg->election_ms / 10 ? cfg->election_ms / 10 : 1;
    }
    if (cfg->snapshot_threshold == 0) {
        cfg->snapshot_threshold = 1024;
    }
    if (cfg->snapshot_trailing == 0) {
        cfg->snapshot_trailing = cfg->snapshot_threshold / 2;
    }
    if (cfg->log_mb == 0) {
        cfg->log_mb = 16;
    }
    if (cfg->ready_ms == 0) {
        cfg->ready_ms = 15000;
    }
    if (cfg->commit_ms == 0) {
        cfg->commit_ms = 60000;
    }
    if (cfg->min_free_mb == 0) {
        cfg->min_free_mb = 64;
    }
}

/* Refuses a log that could hold more entries than the wire check lets
 * through in one AppendEntries: a follower that far behind would never
 * catch up. */
static int checkLogBounds(const struct tpdb_node_config *cfg, char *errmsg)
{
    uint64_t most = (uint64_t)cfg->snapshot_threshold + cfg->snapshot_trailing;
    if (most > TPDB_WIRE_ENTRIES_MAX / 2) {
        tpdbErrf(errmsg,
                 "snapshot_threshold + snapshot_trailing = %llu: at most %u "
                 "(raft sends a lagging follower all it lacks at once)",
                 (unsigned long long)most, TPDB_WIRE_ENTRIES_MAX / 2);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

/* Finds this node's address in the peers list. */
static int addressFromPeers(const char *peers,
                            uint64_t id,
                            char *address,
                            size_t size,
                            char *errmsg)
{
    struct raft_configuration conf;
    int rc;
    raft_configuration_init(&conf);
    rc = tpdbPeersParse(peers, &conf, errmsg);
    if (rc == TPDB_OK) {
        rc = TPDB_INVALID;
        for (unsigned i = 0; i < conf.n; i++) {
            if (conf.servers[i].id == id) {
                snprintf(address, size, "%s", conf.servers[i].address);
                rc = TPDB_OK;
            }
        }
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "peers: this node's id %llu is not listed",
                     (unsigned long long)id);
        }
    }
    raft_configuration_close(&conf);
    return rc;
}

/* Settles id and address from the saved identity and the configuration;
 * *fresh is 1 when nothing was saved yet. */
static int identity(struct tpdb_node *n, int *fresh, char *errmsg)
{
    const struct tpdb_node_config *cfg = &n->cfg;
    int rc = tpdbNodeConfLoad(n->metaDir, &n->id, n->address, sizeof n->address,
                              errmsg);
    if (rc == TPDB_OK) {
        *fresh = 0;
        if (cfg->id != 0 && cfg->id != n->id) {
            tpdbErrf(errmsg, "this directory is node %llu, not node %llu",
                     (unsigned long long)n->id, (unsigned long long)cfg->id);
            return TPDB_INVALID;
        }
        if (cfg->bind != NULL && strcmp(cfg->bind, n->address) != 0) {
            tpdbErrf(errmsg, "node %llu was created with address %s, not %s",
                     (unsigned long long)n->id, n->address, cfg->bind);
            return TPDB_INVALID;
        }
        return TPDB_OK;
    }
    if (rc != TPDB_NOTFOUND) {
        return rc;
    }
    *fresh = 1;
    n->id = cfg->id != 0 ? cfg->id : 1;
    if (cfg->bind != NULL) {
        if (!tpdbAddressValid(cfg->bind)) {
            tpdbErrf(errmsg, "bad bind address '%s' (want host:port)",
                     cfg->bind);
            return TPDB_INVALID;
        }
        snprintf(n->address, sizeof n->address, "%s", cfg->bind);
    } else if (cfg->peers != NULL) {
        rc = addressFromPeers(cfg->peers, n->id, n->address, sizeof n->address,
                              errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    } else {
        snprintf(n->address, sizeof n->address, "127.0.0.1:0");
    }
    return tpdbNodeConfSave(n->metaDir, n->id, n->address, errmsg);
}

static int bootstrap(struct tpdb_node *n, char *errmsg)
{
    struct raft_configuration conf;
    int rc = TPDB_OK;
    int rv;
    raft_configuration_init(&conf);
    if (n->cfg.peers != NULL) {
        rc = tpdbPeersParse(n->cfg.peers, &conf, errmsg);
    } else {
        rv = raft_configuration_add(&conf, n->id, n->address, RAFT_VOTER);
        rc = rv == 0 ? TPDB_OK : TPDB_NOMEM;
    }
    if (rc == TPDB_OK) {
        rv = raft_bootstrap(&n->raft, &conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            tpdbErrf(errmsg, "bootstrap: %s", raft_errmsg(&n->raft));
            rc = TPDB_RAFT;
        }
    }
    raft_configuration_close(&conf);
    return rc;
}

/* Undoes raftSetup for a raft that was initialised but whose loop thread
 * never ran (raft_close needs the loop to run, here on this thread). */
static void raftTeardown(struct tpdb_node *n)
{
    raft_close(&n->raft, NULL);
    uv_run(&n->loop, UV_RUN_NOWAIT);
    tpdbFetchClose(n->fetch);
    n->fetch = NULL;
    tpdbFsmClose(&n->fsm);
    raft_uv_close(&n->hold.io);
    tpdbTransportClose(&n->transport);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    uv_loop_close(&n->loop);
}

/* Whether address ("IPv4:port") is on 127.0.0.0/8. */
static int isLoopback(const char *address)
{
    struct sockaddr_in sa;
    return tpdbTransportParseAddress(address, &sa) == TPDB_OK &&
           (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
}

/* Loads the cluster key into the transport and sets where it listens;
 * without a key, refuses to listen beyond loopback unless told it is
 * insecure. */
static int keysSetup(struct tpdb_node *n, char *errmsg)
{
    struct tpdb_seal_keys keys;
    int rc = tpdbSealInit(errmsg);
    if (rc == TPDB_OK) {
        rc = tpdbSealKeysLoad(&keys, n->cfg.key_file, n->cfg.key_file_next,
                              errmsg);
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "node %llu: cluster key",
                    (unsigned long long)n->id);
        return rc;
    }
    tpdbTransportSetKeys(&n->transport, &keys);
    sodium_memzero(&keys, sizeof keys);
    if (n->cfg.listen != NULL) {
        rc = tpdbTransportSetBindAddress(&n->transport, n->cfg.listen, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    const char *where = n->cfg.listen != NULL ? n->cfg.listen : n->address;
    if (n->transport.keys.n > 0 || isLoopback(where)) {
        return TPDB_OK;
    }
    if (!n->cfg.insecure) {
        tpdbErrf(errmsg,
                 "node %llu: refusing to listen on %s without a cluster key "
                 "(set key_file=PATH or %s, or insecure=1 to accept that "
                 "anyone who reaches the port can join, vote and read)",
                 (unsigned long long)n->id, where, TPDB_SEAL_ENV);
        return TPDB_INVALID;
    }
    tpdbLog(TPDB_LOG_WARN,
            "node %llu: listening on %s WITHOUT a cluster key (insecure=1): "
            "anyone who reaches it can join, vote and read",
            (unsigned long long)n->id, where);
    return TPDB_OK;
}

/* The wire check's view of our term (loop thread, like raft). */
static uint64_t currentTerm(void *arg)
{
    const struct raft *r = arg;
    return r->current_term;
}

/* A peer was started with another peers list. Loop thread. */
static void mismatchCb(void *arg, const char *why)
{
    struct tpdb_node *n = arg;
    pthread_mutex_lock(&n->mutex);
    int first = n->mismatch[0] == '\0';
    snprintf(n->mismatch, sizeof n->mismatch, "%s", why);
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mutex);
    if (first) {
        tpdbLog(TPDB_LOG_ERROR, "%s", why);
    }
}

/* With a peers list, a node that has no saved state yet (it is about to
 * bootstrap) sends its hash in every RAFT handshake and refuses a peer that
 * sends another one (transport.h), so that nodes first started with
 * different lists say so instead of forming no cluster, or two. Once a
 * node has state, its Raft configuration is what counts (members added
 * with join, or a list corrected for a restart, differ from the first
 * peers=), so it sends and checks nothing: 0 is never checked. */
static int clusterSetup(struct tpdb_node *n, char *errmsg)
{
    struct raft_configuration conf;
    int rc = TPDB_OK;
    if (n->cfg.peers == NULL) {
        return TPDB_OK;
    }
    raft_configuration_init(&conf);
    rc = tpdbPeersParse(n->cfg.peers, &conf, errmsg);
    if (rc == TPDB_OK) {
        tpdbTransportSetCluster(&n->transport, tpdbClusterHash(&conf),
                                mismatchCb, n);
    }
    raft_configuration_close(&conf);
    return rc;
}

/* Configures the initialised transport: key, limits, callbacks. */
static int transportSetup(struct tpdb_node *n, int fresh, char *errmsg)
{
    int rc = keysSetup(n, errmsg);
    if (rc == TPDB_OK) {
        rc = checkLogBounds(&n->cfg, errmsg);
    }
    if (rc == TPDB_OK && fresh) {
        rc = clusterSetup(n, errmsg);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    tpdbTransportSetJoinCb(&n->transport, tpdbJoinServe, &n->raft);
    tpdbTransportSetTermFn(&n->transport, currentTerm, &n->raft);
    /* A stream that carried nothing for a few election timeouts is dead
     * or a stranger's; raft reconnects when it needs one. */
    n->transport.idle_ms = n->cfg.election_ms * 5;
    /* The log holds at most threshold + trailing entries, more while a
     * snapshot runs: twice that (at least 8192) bounds what raft sends in
     * one AppendEntries, and so the header a stream can make us hold (128
     * KiB by default). */
    unsigned most = 2 * (n->cfg.snapshot_threshold + n->cfg.snapshot_trailing);
    n->transport.entries_max = most > 8192 ? most : 8192;
    return TPDB_OK;
}

/* Sets up raft over the loop; nothing runs yet. */
static int raftSetup(struct tpdb_node *n, int fresh, char *errmsg)
{
    int rv;
    int rc;
    if (uv_loop_init(&n->loop) != 0) {
        tpdbErrf(errmsg, "uv_loop_init failed");
        return TPDB_NOMEM;
    }
    rc = tpdbTransportInit(&n->transport, &n->loop, errmsg);
    if (rc != TPDB_OK) {
        goto err_after_loop;
    }
    rc = transportSetup(n, fresh, errmsg);
    if (rc != TPDB_OK) {
        goto err_after_transport;
    }
    rv = raft_uv_init(&n->hold.io, &n->loop, n->raftDir, &n->transport.base);
    if (rv != 0) {
        tpdbErrf(errmsg, "raft_uv_init %s: %s", n->raftDir, raft_strerror(rv));
        rc = TPDB_RAFT;
        goto err_after_transport;
    }
    /* raft_uv in raft 0.15 offers no async_work; ours runs the FSM's
     * snapshot_async on libuv's thread pool, so the loop never waits for a
     * snapshot's fsyncs. */
    n->hold.io.version = 2;
    n->hold.io.async_work = nodeAsyncWork;
    /* raft_uv retries a failed connection after 1 s by default: a follower
     * that restarts in 100 ms then waits up to a second before the leader
     * reaches it (measured: most of a SIGKILLed follower's restart). One
     * heartbeat is what the leader would wait anyway; a down peer costs a
     * refused connect per heartbeat. */
    raft_uv_set_connect_retry_delay(&n->hold.io, n->cfg.heartbeat_ms);
    rc = tpdbFsmInit(&n->fsm, n->dataDir, n->metaDir, n->origin, 1, errmsg);
    if (rc != TPDB_OK) {
        goto err_after_io;
    }
    rc = tpdbFetchInit(&n->fetch, &n->fsm, n->id, n->address, nodeFetchPeers,
                       nodeFetchIndex, n, errmsg);
    if (rc != TPDB_OK) {
        goto err_after_fsm;
    }
    struct tpdb_fsm_fetcher fetcher = {n->fetch, tpdbFetchStart};
    tpdbFsmSetFetcher(&n->fsm, &fetcher);
    tpdbFetchSetKeys(n->fetch, &n->transport.keys);
    tpdbTransportSetFetchCb(&n->transport, tpdbFetchServe, n->fetch);
    rv = raft_init(&n->raft, &n->hold.io, &n->fsm, n->id, n->address);
    if (rv != 0) {
        tpdbErrf(errmsg, "raft_init: %s (%d)", raft_errmsg(&n->raft), rv);
        rc = TPDB_RAFT;
        goto err_after_fsm;
    }
    n->raft.data = n;
    /* Held while the disk is nearly full, at most a log budget of
     * entries (log_mb) in memory. */
    rc = tpdbIoHoldInstall(&n->hold, &n->loop, n->raftDir, TPDB_IOHOLD_RESERVE,
                           (uint64_t)n->cfg.log_mb << 20, errmsg);
    if (rc != TPDB_OK) {
        goto err_after_raft;
    }
    tpdbIoHoldSetSpaceCb(&n->hold, nodeSpaceCb, n);
    tpdbFsmSetRaft(&n->fsm, &n->raft);
    raft_set_election_timeout(&n->raft, n->cfg.election_ms);
    raft_set_heartbeat_timeout(&n->raft, n->cfg.heartbeat_ms);
    raft_set_snapshot_threshold(&n->raft, n->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, n->cfg.snapshot_trailing);
    tpdbFsmSetLogBudget(&n->fsm, (uint64_t)n->cfg.log_mb << 20,
                        n->cfg.snapshot_threshold, n->cfg.snapshot_trailing);
    /* raft 0.15 waits this long before resending a snapshot a follower
     * dropped (it drops one while taking its own), and also after a
     * successful install whenever the leader's match index for that
     * follower is above the snapshot (a follower that lost its log: raft
     * never lowers a match index, so it ignores the install's reply and
     * waits for this timeout before probing). A snapshot is a small record
     * whose install returns at once (streams run afterwards) and a resent
     * one is a no-op for a follower that has it, so two election timeouts
     * are plenty; raft's 30 s default left such a node behind for half a
     * minute. */
    raft_set_install_snapshot_timeout(&n->raft, n->cfg.election_ms * 2);
    raft_set_pre_vote(&n->raft, true);
    if (fresh && !n->cfg.join && n->cfg.join_address == NULL) {
        rc = bootstrap(n, errmsg);
        if (rc != TPDB_OK) {
            goto err_after_raft;
        }
    }
    return TPDB_OK;
err_after_raft:
    raftTeardown(n);
    return rc;
err_after_fsm:
    tpdbFetchClose(n->fetch);
    n->fetch = NULL;
    tpdbFsmClose(&n->fsm);
err_after_io:
    raft_uv_close(&n->hold.io);
err_after_transport:
    tpdbTransportClose(&n->transport);
    uv_run(&n->loop, UV_RUN_DEFAULT);
err_after_loop:
    uv_loop_close(&n->loop);
    return rc;
}

/* Why raft_start failed: it loads the Raft state and then listens, and
 * raft 0.15 keeps a failed listen's reason in the transport only. */
static void raftStartError(struct tpdb_node *n, int rv, char *errmsg)
{
    const char *listen = n->transport.base.errmsg;
    const char *why = raft_errmsg(&n->raft);
    if (n->transport.listen_rc == UV_EADDRINUSE) {
        tpdbErrf(errmsg,
                 "node %llu cannot listen on %s: address already in use "
                 "(is node %llu, or another program, already running with "
                 "this address?)",
                 (unsigned long long)n->id, n->transport.listen_where,
                 (unsigned long long)n->id);
    } else if (listen[0] != '\0') {
        tpdbErrf(errmsg, "node %llu: %s", (unsigned long long)n->id, listen);
    } else {
        tpdbErrf(errmsg, "node %llu: cannot load the Raft state in %s: %s",
                 (unsigned long long)n->id, n->raftDir,
                 why[0] != '\0' ? why : raft_strerror(rv));
    }
}

static int raftRun(struct tpdb_node *n, char *errmsg)
{
    uint64_t t0 = tpdbNowMs();
    int rv = raft_start(&n->raft);
    if (rv != 0) {
        raftStartError(n, rv, errmsg);
        raftTeardown(n);
        return TPDB_RAFT;
    }
    n->startLastIndex = raft_last_index(&n->raft);
    tpdbLog(TPDB_LOG_DEBUG,
            "node %llu: raft state loaded in %llu ms: snapshot at %llu, log "
            "up to %llu",
            (unsigned long long)n->id, (unsigned long long)(tpdbNowMs() - t0),
            (unsigned long long)n->raft.log.snapshot.last_index,
            (unsigned long long)n->startLastIndex);
    return nodeRuntimeStart(n, errmsg);
}

/* Waits until the entries of the local log at start are applied again. */
static int waitReady(struct tpdb_node *n, uint64_t deadline, char *errmsg)
{
    int rc = TPDB_OK;
    pthread_mutex_lock(&n->mutex);
    while (n->appliedIndex < n->startLastIndex) {
        if (n->mismatch[0] != '\0') {
            tpdbErrf(errmsg, "%s", n->mismatch);
            rc = TPDB_INVALID;
            break;
        }
        if (tpdbNowMs() >= deadline) {
            tpdbErrf(errmsg,
                     "node %llu has applied %llu of %llu entries after %u "
                     "ms: is a quorum of the cluster up?",
                     (unsigned long long)n->id,
                     (unsigned long long)n->appliedIndex,
                     (unsigned long long)n->startLastIndex, n->cfg.ready_ms);
            rc = TPDB_TIMEOUT;
            break;
        }
        tpdbCondWaitMs(&n->cond, &n->mutex, 20);
    }
    pthread_mutex_unlock(&n->mutex);
    return rc;
}

/* The leader's commit index as of now: this node's own if it leads, else
 * asked of the peers. 0 with TPDB_OK for a node that has no peers. */
static int leaderCommit(struct tpdb_node *n,
                        uint64_t deadline,
                        uint64_t *target,
                        char *errmsg)
{
    for (;;) {
        pthread_mutex_lock(&n->mutex);
        int leads = n->role == RAFT_LEADER && n->readyTerm == n->term;
        unsigned peers = n->nPeerAddrs;
        int published = n->published;
        *target = n->commitIndex;
        pthread_mutex_unlock(&n->mutex);
        if (published && (leads || peers == 0)) {
            *target = peers == 0 && !leads ? 0 : *target;
            return TPDB_OK;
        }
        if (published &&
            tpdbFetchLeaderIndex(n->fetch, target, errmsg) == TPDB_OK) {
            return TPDB_OK;
        }
        pthread_mutex_lock(&n->mutex);
        int mismatch = n->mismatch[0] != '\0';
        if (mismatch) {
            tpdbErrf(errmsg, "%s", n->mismatch);
        }
        pthread_mutex_unlock(&n->mutex);
        if (mismatch) {
            return TPDB_INVALID;
        }
        if (tpdbNowMs() >= deadline) {
            tpdbErrWrap(errmsg, "no leader told its commit index within %u ms",
                        n->cfg.ready_ms);
            return TPDB_TIMEOUT;
        }
        pthread_mutex_lock(&n->mutex);
        tpdbCondWaitMs(&n->cond, &n->mutex, 50);
        pthread_mutex_unlock(&n->mutex);
    }
}

/* Honest readiness: waits until this node has written everything the
 * leader had committed when the open began (a new, wiped or lagging node
 * never answers from an empty or stale database as if caught up). */
static int waitCaughtUp(struct tpdb_node *n, uint64_t deadline, char *errmsg)
{
    uint64_t target = 0;
    int rc = leaderCommit(n, deadline, &target, errmsg);
    pthread_mutex_lock(&n->mutex);
    while (rc == TPDB_OK && n->appliedIndex < target) {
        if (tpdbNowMs() >= deadline) {
            tpdbErrf(errmsg,
                     "node %llu has written %llu of the leader's %llu "
                     "entries after %u ms (%u database(s) still fetched from "
                     "a peer)",
                     (unsigned long long)n->id,
                     (unsigned long long)n->appliedIndex,
                     (unsigned long long)target, n->cfg.ready_ms,
                     tpdbFsmFetching(&n->fsm));
            rc = TPDB_TIMEOUT;
            break;
        }
        tpdbCondWaitMs(&n->cond, &n->mutex, 20);
    }
    pthread_mutex_unlock(&n->mutex);
    return rc;
}

static void nodeFree(struct tpdb_node *n)
{
    while (n->holds != NULL) {
        struct nodeHold *h = n->holds;
        n->holds = h->next;
        tpdb_free(h);
    }
    if (n->lockFd >= 0) {
        close(n->lockFd);
    }
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->mutex);
    tpdb_free(n->dataDir);
    tpdb_free(n);
}

/* Serves other processes' writes (local.h); without it they only read. */
static void localStart(struct tpdb_node *n)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    if (tpdbLocalServerStart(n, n->metaDir, n->dataDir, &n->local, errmsg) !=
        TPDB_OK) {
        n->local = NULL;
        tpdbLog(TPDB_LOG_WARN,
                "node %llu: other processes can only read %s: %s",
                (unsigned long long)n->id, n->dataDir, errmsg);
    }
}

/* Refuses to start with less free space than raft's log needs to start
 * and take entries (TPDB_IOHOLD_RESERVE): raft_uv would fail, or prepare
 * no further segment, and a log write it failed is never retried. Checked
 * after the identity is read (saved only for a new node) and before raft
 * starts, so the node's files stay as they were. */
static int startSpaceCheck(struct tpdb_node *n, char *errmsg)
{
    struct statvfs vfs;
    if (statvfs(n->dataDir, &vfs) != 0) {
        return TPDB_OK; /* the mkdir and raft's start say what is wrong */
    }
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (avail >= TPDB_IOHOLD_RESERVE) {
        return TPDB_OK;
    }
    tpdbErrf(errmsg,
             "node %llu cannot start: no space left for its Raft log: %llu "
             "KiB free on the file system of %s, %llu KiB needed (two 8 MiB "
             "log segments and 1 MiB for metadata); its files are kept: "
             "free space and start it again",
             (unsigned long long)n->id, (unsigned long long)(avail >> 10),
             n->dataDir, (unsigned long long)(TPDB_IOHOLD_RESERVE >> 10));
    return TPDB_FULL;
}

static struct tpdb_node *registryFind(const char *dataDir)
{
    for (struct tpdb_node *n = registry; n != NULL; n = n->next) {
        if (strcmp(n->dataDir, dataDir) == 0) {
            return n;
        }
    }
    return NULL;
}

static int nodeCreate(const struct tpdb_node_config *cfg,
                      const char *real,
                      struct tpdb_node **out,
                      char *errmsg)
{
    struct tpdb_node *n = tpdb_calloc(1, sizeof *n);
    int fresh = 0;
    int rc;
    if (n == NULL || (n->dataDir = tpdb_strdup(real)) == NULL) {
        tpdb_free(n);
        return TPDB_NOMEM;
    }
    n->lockFd = -1;
    n->cfg = *cfg;
    n->cfg.data_dir = n->dataDir;
    defaults(&n->cfg);
    pthread_mutex_init(&n->mutex, NULL);
    pthread_cond_init(&n->cond, NULL);
    /* From the kernel, not SQLite's PRNG: a node started inside an
     * application must not change the random() and randomblob() stream
     * its connections see (SQLite's trans.test checks data built from it). */
    if (getrandom(&n->origin, sizeof n->origin, 0) !=
        (ssize_t)sizeof n->origin) {
        sqlite3_randomness(sizeof n->origin, &n->origin);
    }
    snprintf(n->metaDir, sizeof n->metaDir, "%s/.tpdb", real);
    snprintf(n->raftDir, sizeof n->raftDir, "%s/raft", n->metaDir);
    rc = tpdbMkdir(n->metaDir, errmsg);
    if (rc == TPDB_OK) {
        rc = tpdbMkdir(n->raftDir, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdbNodeLock(n->metaDir, &n->lockFd, errmsg);
    }
    if (rc == TPDB_IOERR) {
        tpdbErrWrap(errmsg,
                    "the node keeps its Raft state in %s, so the data "
                    "directory must be writable",
                    n->metaDir);
    }
    if (rc == TPDB_OK) {
        rc = identity(n, &fresh, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = startSpaceCheck(n, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = raftSetup(n, fresh, errmsg);
    }
    int threadFailed = 0;
    if (rc == TPDB_OK) {
        rc = raftRun(n, errmsg);
        threadFailed = rc == TPDB_NOMEM;
    }
    if (rc == TPDB_OK) {
        localStart(n);
    }
    if (rc != TPDB_OK) {
        if (threadFailed) {
            /* Raft runs on a loop no thread serves: it cannot be closed
             * safely. Keep its memory, but let the lock go. */
            close(n->lockFd);
            n->lockFd = -1;
            return rc;
        }
        nodeFree(n);
        return rc;
    }
    *out = n;
    return TPDB_OK;
}

/* The join client's outcome. Loop thread. */
static void joinDoneCb(void *arg, int rc, const char *msg)
{
    struct tpdb_node *n = arg;
    pthread_mutex_lock(&n->mutex);
    n->joinState = rc == TPDB_OK ? JOIN_DONE : JOIN_FAILED;
    n->joinRc = rc;
    snprintf(n->joinMsg, sizeof n->joinMsg, "%s", msg);
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mutex);
}

/* Starts the join client unless this node already is a voter. */
static void joinStartFn(struct tpdb_node *n, struct nodeCall *c)
{
    const struct raft_configuration *conf = &n->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == n->id &&
            conf->servers[i].role == RAFT_VOTER) {
            joinDoneCb(n, TPDB_OK, "already a voter");
            nodeCallDone(n, c, TPDB_OK);
            return;
        }
    }
    int rc = tpdbJoinClientStart(&n->join, &n->loop, n->id, n->address,
                                 c->address, &n->transport.keys,
                                 n->cfg.ready_ms, joinDoneCb, n, c->errmsg);
    if (rc != TPDB_OK) {
        joinDoneCb(n, rc, c->errmsg);
    }
    nodeCallDone(n, c, rc);
}

/* Makes this node a voter through the member at `target` (see
 * tpdb_node_config.join_address) and waits for the outcome. */
static int nodeJoin(struct tpdb_node *n, const char *target, char *errmsg)
{
    struct nodeCall c;
    uint64_t deadline = tpdbNowMs() + n->cfg.ready_ms + 5000;
    int start;
    int rc;
    pthread_mutex_lock(&n->mutex);
    start = n->joinState == JOIN_NONE || n->joinState == JOIN_FAILED;
    if (start) {
        n->joinState = JOIN_PENDING;
    }
    pthread_mutex_unlock(&n->mutex);
    if (start) {
        memset(&c, 0, sizeof c);
        c.fn = joinStartFn;
        c.address = target;
        rc = nodeCallRun(n, &c, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    pthread_mutex_lock(&n->mutex);
    while (n->joinState == JOIN_PENDING && !n->stopping &&
           tpdbNowMs() < deadline) {
        tpdbCondWaitMs(&n->cond, &n->mutex, 20);
    }
    rc = n->joinState == JOIN_DONE      ? TPDB_OK
         : n->joinState == JOIN_PENDING ? TPDB_TIMEOUT
                                        : n->joinRc;
    if (rc != TPDB_OK) {
        tpdbErrf(
            errmsg, "join via %s: %s", target,
            n->joinState == JOIN_PENDING ? "no outcome in time" : n->joinMsg);
    }
    pthread_mutex_unlock(&n->mutex);
    return rc;
}

int tpdbNodeAcquire(const struct tpdb_node_config *cfg,
                    struct tpdb_node **out,
                    char *errmsg)
{
    char real[PATH_MAX];
    struct tpdb_node *n;
    int rc = TPDB_OK;
    if (cfg->data_dir == NULL || realpath(cfg->data_dir, real) == NULL) {
        tpdbErrf(errmsg, "data directory %s: %s",
                 cfg->data_dir ? cfg->data_dir : "(none)", strerror(errno));
        return TPDB_INVALID;
    }
    uint64_t t0 = tpdbNowMs();
    int created = 0;
    pthread_mutex_lock(&registryMutex);
    n = registryFind(real);
    if (n == NULL) {
        created = 1;
        rc = nodeCreate(cfg, real, &n, errmsg);
        if (rc == TPDB_OK) {
            n->next = registry;
            registry = n;
        }
    }
    if (rc == TPDB_OK) {
        n->refs++;
    }
    pthread_mutex_unlock(&registryMutex);
    if (rc != TPDB_OK) {
        return rc;
    }
    /* One bound for the whole wait (a join has its own). */
    uint64_t deadline = tpdbNowMs() + n->cfg.ready_ms;
    uint64_t t1 = tpdbNowMs();
    rc = waitReady(n, deadline, errmsg);
    uint64_t t2 = tpdbNowMs();
    if (rc == TPDB_OK && cfg->join_address != NULL) {
        rc = nodeJoin(n, cfg->join_address, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = waitCaughtUp(n,
                          cfg->join_address != NULL
                              ? tpdbNowMs() + n->cfg.ready_ms
                              : deadline,
                          errmsg);
    }
    if (created && rc == TPDB_OK) {
        /* Where a start spends its time (TPDB_TRACE=1). */
        tpdbLog(TPDB_LOG_DEBUG,
                "node %llu: started in %llu ms: %llu ms to load and start, "
                "%llu ms to apply the local log again (up to %llu), %llu ms "
                "to catch up with the leader",
                (unsigned long long)n->id,
                (unsigned long long)(tpdbNowMs() - t0),
                (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
                (unsigned long long)n->startLastIndex,
                (unsigned long long)(tpdbNowMs() - t2));
    }
    if (rc != TPDB_OK) {
        tpdbNodeRelease(n);
        return rc;
    }
    *out = n;
    return TPDB_OK;
}

void tpdbNodeRelease(struct tpdb_node *n)
{
    pthread_mutex_lock(&registryMutex);
    if (n->refs > 0) {
        n->refs--;
    }
    pthread_mutex_unlock(&registryMutex);
}

struct tpdb_node *tpdbNodeFind(const char *db_path)
{
    char dir[PATH_MAX];
    char real[PATH_MAX];
    struct tpdb_node *n;
    snprintf(dir, sizeof dir, "%s", db_path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    if (realpath(dir, real) == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&registryMutex);
    n = registryFind(real);
    pthread_mutex_unlock(&registryMutex);
    return n;
}

static void nodeStop(struct tpdb_node *n)
{
    tpdbLocalServerShutdown(n->local);
    nodeRuntimeStop(n);
    /* Before the FSM closes: a request being served may still wait on
     * it. */
    tpdbLocalServerFree(n->local);
    n->local = NULL;
    tpdbTransportClose(&n->transport);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    tpdbFetchClose(n->fetch);
    n->fetch = NULL;
    tpdbFsmClose(&n->fsm);
    if (uv_loop_close(&n->loop) != 0) {
        tpdbLog(TPDB_LOG_WARN, "node %llu: loop still has handles",
                (unsigned long long)n->id);
    }
}

void tpdbNodeShutdownAll(void)
{
    struct tpdb_node *n;
    pthread_mutex_lock(&registryMutex);
    while ((n = registry) != NULL) {
        registry = n->next;
        nodeStop(n);
        nodeFree(n);
    }
    pthread_mutex_unlock(&registryMutex);
}
