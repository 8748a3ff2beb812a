/*
 * Internals of the node shared by node.c (the runtime: loop thread, work
 * queue, commits, status, membership) and node_start.c (identity, start,
 * registry, join, stop). Nothing outside raftfsm/node*.c includes it.
 */
#ifndef TPDB_NODEINT_H
#define TPDB_NODEINT_H

#include <limits.h>
#include <pthread.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "raftfsm/iohold.h"
#include "raftfsm/join.h"
#include "raftfsm/node.h"
#include "raftfsm/nodeconf.h"
#include "raftfsm/transport.h"

#define NODE_PEERS_MAX 16

struct tpdb_fetch;
struct nodeCall;
typedef void (*nodeCallFn)(struct tpdb_node *n, struct nodeCall *c);

/* Work for the loop thread. Owned by the caller, who waits for `done`,
 * except proposals, which the loop thread frees. */
struct nodeCall {
    nodeCallFn fn;
    int done;
    int rc;
    char errmsg[TPDB_ERRMSG_SIZE];
    uint64_t id;
    const char *address;
    int role;
    char **json;
    struct tpdb_node *node; /* for raft callbacks */
    void *buf;              /* proposals: the encoded entry, raft_malloc'd */
    size_t len;
    uint64_t seq;
    struct raft_change change;
    struct raft_transfer transfer;
    struct nodeCall *next;
};

/* A database whose write checks wait (tpdbNodeHoldWrites). */
struct nodeHold {
    char db[256];
    unsigned count;
    struct nodeHold *next;
};

struct nodeApply {
    struct raft_apply req;
    struct tpdb_node *node;
    uint64_t seq;
};

struct tpdb_node {
    char *dataDir; /* real path */
    char metaDir[PATH_MAX + 8];
    char raftDir[PATH_MAX + 16];
    uint64_t id;
    char address[TPDB_ADDRESS_MAX];
    uint64_t origin;
    uint64_t nextSeq; /* guarded by mutex */
    int lockFd;
    unsigned refs;
    struct tpdb_node_config cfg;

    uv_loop_t loop;
    uv_async_t async;
    uv_check_t check;
    uv_timer_t drainTimer; /* writes entries the FSM had to queue */
    pthread_t thread;
    struct raft raft;
    struct tpdb_iohold hold; /* hold.io: raft_uv, its log writes held while
                                the disk is nearly full (iohold.h) */
    struct raft_fsm fsm;
    struct tpdb_transport transport;
    struct tpdb_fetch *fetch; /* catch-up streams (fetch.h) */
    struct raft_barrier barrier;
    int barrierPending;
    /* A leader whose disk is full hands leadership on (nodeSpaceCb). */
    struct raft_transfer spaceTransfer;
    int spaceTransferPending;
    uint64_t spaceTransferAt; /* not again before this (ms) */
    int spaceRefused;         /* a write was refused for space; mutex */

    pthread_mutex_t mutex; /* calls, status, stopping */
    pthread_cond_t cond;
    struct nodeCall *calls;
    int stopping;
    int stopped;
    /* Status published by the loop thread. */
    int role;
    uint64_t term;
    uint64_t readyTerm; /* term whose barrier was applied */
    uint64_t leaderId;
    char leaderAddress[TPDB_ADDRESS_MAX];
    uint64_t commitIndex;
    uint64_t appliedIndex;
    uint64_t lastIndex;
    unsigned pending; /* entries applied for raft, not yet written */
    /* Raft addresses of the other members, the leader first. */
    char peerAddrs[NODE_PEERS_MAX][TPDB_ADDRESS_MAX];
    unsigned nPeerAddrs;
    int published; /* the loop published the fields above at least once */
    uint64_t startLastIndex;
    /* join=HOST:PORT: the client runs on the loop thread; joinState and
     * joinMsg are guarded by mutex. */
    struct tpdb_join_client join;
    int joinState;
    int joinRc;
    char joinMsg[TPDB_ERRMSG_SIZE];
    /* A peer started with another peers list (transport.h); guarded by
     * mutex, "" while none was seen. */
    char mismatch[TPDB_ERRMSG_SIZE];
    struct nodeHold *holds;          /* tpdbNodeHoldWrites; guarded by mutex */
    struct tpdb_local_server *local; /* other processes' writes */
    struct tpdb_node *next;
};

/* States of a node's join through a member (tpdb_node.joinState). */
enum { JOIN_NONE = 0, JOIN_PENDING, JOIN_DONE, JOIN_FAILED };

/* Marks a waited-for call done with rc and wakes its waiter. Loop thread. */
void nodeCallDone(struct tpdb_node *n, struct nodeCall *c, int rc);

/* Queues c for the loop thread and waits until it is done. Returns c->rc
 * (with errmsg set), or TPDB_SHUTDOWN if the node is stopping. Any thread
 * but the loop thread. */
int nodeCallRun(struct tpdb_node *n, struct nodeCall *c, char *errmsg);

/* Starts the loop thread and its handles (work queue, status check, drain
 * timer) once raft is started. Errors: TPDB_NOMEM. */
int nodeRuntimeStart(struct tpdb_node *n, char *errmsg);

/* Asks the loop thread to close raft and its handles and joins it. */
void nodeRuntimeStop(struct tpdb_node *n);

/* raft_io.async_work over libuv's thread pool (io of a node). */
int nodeAsyncWork(struct raft_io *io,
                  struct raft_io_async_work *req,
                  raft_io_async_work_cb cb);

/* The free space of the raft directory, measured by the hold (iohold.h):
 * a leader whose log writes are held (less than TPDB_IOHOLD_RESERVE free)
 * transfers leadership to another voter, if there is one, as one that
 * refused a write for space does (checkCb). Loop thread. */
void nodeSpaceCb(void *arg, uint64_t free_bytes);

/* The fetcher's index callback (fetch.h): the published role and commit
 * index. */
void nodeFetchIndex(void *arg, int *leads, uint64_t *commit);

/* The fetcher's peers (fetch.h): the published member addresses. */
unsigned nodeFetchPeers(void *arg,
                        char (*addrs)[TPDB_ADDRESS_MAX],
                        unsigned max);

#endif /* TPDB_NODEINT_H */
