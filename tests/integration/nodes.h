/*
 * Clusters of tpdb-testnode processes for the integration tests: a temp
 * dir, kernel-chosen loopback ports, one node process per member started
 * with a tpdb URI, and the line protocol of tests/integration/nodeprog.c
 * (commands, query rows, the status JSON) with waits bounded by deadlines.
 * Test code only, built on harness.h: single-threaded, and failures are
 * cmocka assertion failures, so every function here may end the test.
 */
#ifndef TPDB_NODES_H
#define TPDB_NODES_H

#include <stddef.h>

#include <jansson.h>

#include "base/base.h"
#include "tests/integration/harness.h"

/* Most members a cluster may have. */
#define NODES_MAX 8

/* Bound on one command's write and on each reply line. */
#define NODES_IO_MS 30000

/* Bound on a node's start until it prints "ready". */
#define NODES_READY_MS 60000

/* A cluster. Member i (0-based) is node id i + 1, with its data directory
 * "<dir>/n<i+1>" and database "<dir>/n<i+1>/app.db". procs[i] is NULL while
 * member i is not running. Owned by the test; usually inside a
 * tpdb_calloc'ed struct because it is large. */
struct nodes {
    char dir[HARNESS_PATH_MAX];            /* temp dir of the whole cluster */
    char prog[HARNESS_PATH_MAX];           /* the tpdb-testnode program */
    unsigned n;                            /* members */
    unsigned ports[NODES_MAX];             /* raft port of each member */
    char peers[512];                       /* "1@127.0.0.1:P,..." */
    char params[512];                      /* extra URI parameters */
    struct harness_proc *procs[NODES_MAX]; /* running processes */
    char errmsg[TPDB_ERRMSG_SIZE];         /* the last harness error */
};

/* Creates the temp dir, finds tpdb-testnode under $TPDB_BUILD_ROOT, picks n
 * (1-NODES_MAX) free ports and writes the peers list of the first nvoters
 * members. params ("" or NULL for none; at most 511 bytes) is appended to
 * every member's URI, e.g. "election_ms=400&heartbeat_ms=40". Starts no
 * process. */
void nodesInit(struct nodes *c,
               unsigned n,
               unsigned nvoters,
               const char *params);

/* Starts member i with the URI
 * "file:<dir>/n<i+1>/app.db?node=<i+1>&bind=127.0.0.1:<port>&<how>&<params>"
 * where how is "peers=<peers>" if via < 0, else "join=127.0.0.1:<port of
 * member via>". Creates the data directory if needed. procs[i] must be NULL;
 * it is the new process afterwards. Does not wait for it. */
void nodesStart(struct nodes *c, int i, int via);

/* Waits NODES_READY_MS for member i to print "ready"; fails the test with
 * the node's stderr if it does not. */
void nodesWaitReady(struct nodes *c, int i);

/* Sends the command line cmd to member i and returns the first reply line
 * (tpdb_malloc'ed, caller tpdb_frees), or NULL if member i is not running
 * or does not answer within NODES_IO_MS. Later reply lines stay unread. */
char *nodesCommand(struct nodes *c, int i, const char *cmd);

/* nodesCommand with a reply deadline of ms instead of NODES_IO_MS, for a
 * command whose work grows with its data (a statement writing hundreds of
 * MB). */
char *nodesCommandWithin(struct nodes *c, int i, const char *cmd, int ms);

/* Runs "query <sql>" on member i and reads the whole reply. Returns its
 * first "row ..." line, or "end" if there was no row, or the "err ..." line
 * if the query failed (even after rows); NULL if the node is gone. Caller
 * tpdb_frees. */
char *nodesQueryFirst(struct nodes *c, int i, const char *sql);

/* Member i's status object (json_decref it), or NULL if the node does not
 * answer with a parseable "status {...}" line. */
json_t *nodesStatus(struct nodes *c, int i);

/* Writes member i's role ("leader", "follower", ...) into role (size
 * bytes) and its applied index into *applied; "" and -1 if it does not
 * answer. */
void nodesRole(struct nodes *c,
               int i,
               char *role,
               size_t size,
               long long *applied);

/* The integer counter key of member i's status "stats" object, or -1 if
 * absent or the node does not answer. */
long long nodesStat(struct nodes *c, int i, const char *key);

/* Polls (every 20 ms, at most timeout_ms) until member i's stats.<key> is
 * at least at_least; fails the test at the deadline. */
void nodesWaitStat(struct nodes *c,
                   int i,
                   const char *key,
                   long long at_least,
                   int timeout_ms);

/* Polls (every 50 ms, at most timeout_ms) until some running member says it
 * is the leader and returns its index; fails the test at the deadline. */
int nodesFindLeader(struct nodes *c, int timeout_ms);

/* Polls (every 100 ms, at most timeout_ms) until every member answers with
 * the same applied index and returns it; fails the test at the deadline. */
long long nodesWaitApplied(struct nodes *c, int timeout_ms);

/* Runs PRAGMA wal_checkpoint(TRUNCATE) on member i every 50 ms until it
 * completes (result "0|0|0": no reader held it back); fails the test if it
 * has not within timeout_ms. */
void nodesCheckpoint(struct nodes *c, int i, int timeout_ms);

/* SIGKILLs member i, reaps and frees its process; procs[i] becomes NULL.
 * Fails the test if the kill fails. */
void nodesKill(struct nodes *c, int i);

/* Writes "<dir>/n<i+1>/<name>" into buf (size bytes). */
void nodesPath(const struct nodes *c,
               int i,
               const char *name,
               char *buf,
               size_t size);

/* Returns the whole file at path (tpdb_malloc'ed, caller tpdb_frees) and
 * its length in *len; fails the test if it cannot be read. */
char *nodesReadFile(const char *path, size_t *len);

/* Kills every process of the harness (harnessCleanup) and removes dir.
 * c may be freed afterwards. */
void nodesClose(struct nodes *c);

#endif /* TPDB_NODES_H */
