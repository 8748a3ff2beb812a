/*
 * A deterministic 3-server cluster for FSM tests: raft_fixture servers, each
 * with the real FSM (raftfsm/fsm.c) over its own temp directory, and the
 * real tpdb VFS registered with test hooks that replicate commits through
 * the fixture. Everything runs on the calling thread: a commit steps the
 * fixture until its entry has an outcome. No sleeps, no threads.
 */
#ifndef TPDB_TEST_FSM_CLUSTER_H
#define TPDB_TEST_FSM_CLUSTER_H

#include <raft.h>
#include <raft/fixture.h>
#include <sqlite3.h>
#include <stdint.h>

#include "raftfsm/fsm.h"

#define CLUSTER_N 3   /* servers bootstrapped as voters */
#define CLUSTER_MAX 4 /* servers, counting those added by clusterGrow */
/* clusterLeaderReady: no leader. clusterStepUntilApplied: every server. */
#define CLUSTER_NONE CLUSTER_MAX
#define CLUSTER_ALL CLUSTER_MAX
#define CLUSTER_PATH_MAX 512

struct cluster;

/* A database a server's FSM waits for (tpdb_fsm_fetcher), served by the
 * cluster between fixture steps from another server's FSM, through the
 * same tpdbFsmServe* / tpdbFsmFetch* calls the node's network fetcher
 * uses. */
struct clusterFetch {
    int used;
    unsigned server;
    char db[256];
    uint64_t min;
    struct tpdb_fsm_fetch *ff; /* staged, waiting for entries */
    uint32_t pages;
};
#define CLUSTER_FETCHES 8

struct clusterServer {
    struct cluster *c; /* back pointer, for the fetcher */
    unsigned index;
    char dir[CLUSTER_PATH_MAX];  /* data directory: databases live here */
    char meta[CLUSTER_PATH_MAX]; /* dir/.tpdb: the FSM's manifest */
    struct raft_fsm fsm;         /* the real FSM (tpdbFsmInit) */
    struct raft_fsm adapter;     /* what the fixture drives: see cluster.c */
    uint64_t origin;
    raft_term readyTerm; /* term in which a barrier made it ready to write */
    /* The commit hook's proposal while it steps the fixture, or NULL. */
    struct tpdb_proposal *pending;
};

struct cluster {
    char root[256];
    struct raft_fixture f;
    unsigned n; /* servers in use */
    struct clusterServer s[CLUSTER_MAX];
    uint64_t nextSeq;
    /* Called right after raft_apply accepted a proposal of server i, before
     * the commit hook steps the fixture; lets a test break the network at
     * the worst moment. NULL for none. */
    void (*onPropose)(struct cluster *c, unsigned i);
    struct clusterFetch fetches[CLUSTER_FETCHES];
    int servicing; /* serviceFetches is running */
    /* 1: the next acknowledged commit's own local write fails (pwrite64
     * of the unix VFS fails with ENOSPC until the transaction ends). */
    int failCommitWrite;
    sqlite3_syscall_ptr realPwrite;
    unsigned commits; /* commit hook calls (entries proposed) */
    unsigned parts;   /* of which parts of large transactions */
    int lastCommitRc; /* TPDB_* outcome of the last commit hook call */
};

/* Creates a temp root with one directory per server, the FSMs, a
 * bootstrapped and started fixture, and registers the "tpdb" VFS with hooks
 * bound to the new cluster. Returns NULL (with a message on stderr) on
 * failure. Free with clusterFree. */
struct cluster *clusterNew(void);

/* Closes the fixture, then the FSMs, and removes the temp root. */
void clusterFree(struct cluster *c);

/* Adds an empty, started server (not yet in the configuration: add it with
 * raft_add/raft_assign on the leader). Returns its index, or CLUSTER_NONE
 * on failure. */
unsigned clusterGrow(struct cluster *c);

/* Steps until there is a live leader, then runs a barrier on it so that it
 * has applied every committed entry and accepts writes (as the real node
 * does). Returns the leader's index, or CLUSTER_NONE if none within the
 * limits
 * (the servers' state is then printed on stderr). */
unsigned clusterLeaderReady(struct cluster *c);

/* Writes the path of database `name` in server i's directory to `out`,
 * which must hold CLUSTER_PATH_MAX bytes. */
void clusterDbPath(struct cluster *c, unsigned i, const char *name, char *out);

/* Opens `name` on server i through the "tpdb" VFS as an application
 * connection (hooks apply). The caller closes it with sqlite3_close before
 * clusterFree. Returns NULL on failure. */
sqlite3 *clusterOpen(struct cluster *c, unsigned i, const char *name);

/* Steps until server i (CLUSTER_ALL: every server) has applied `index`.
 * Returns 1 on success, 0 if the fixture's time limit passed. */
int clusterStepUntilApplied(struct cluster *c, unsigned i, raft_index index);

/* Every server takes a snapshot each `threshold` applied entries and keeps
 * `trailing` entries behind it. */
void clusterSnapshotEvery(struct cluster *c,
                          unsigned threshold,
                          unsigned trailing);

/* Isolates server i from (disconnect = 1) or reconnects it to (0) every
 * other server, both directions. */
void clusterIsolate(struct cluster *c, unsigned i, int disconnect);

/* Checkpoints (TRUNCATE) database `name` on server i through a fresh
 * internal connection, stepping the fixture while a snapshot holds a read
 * transaction. Returns an SQLITE_* code; SQLITE_ERROR if frames were left
 * in the WAL. */
int clusterCheckpoint(struct cluster *c, unsigned i, const char *name);

/* Serves the databases the FSMs wait for, as far as possible now; the
 * adapter calls it around every apply. */
void clusterServiceFetches(struct cluster *c);

/* Reads the whole file at `path` into a tpdb_malloc'd buffer (caller
 * frees). Returns NULL if it cannot be read. */
uint8_t *clusterReadFile(const char *path, size_t *len);

#endif /* TPDB_TEST_FSM_CLUSTER_H */
