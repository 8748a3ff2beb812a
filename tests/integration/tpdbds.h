/*
 * Clusters of real tpdbd processes for the integration tests: a temp dir,
 * kernel-chosen loopback ports (Raft and client per member), members
 * started with TrashPandaDB-style flags, and a client for the JSON-lines
 * API over TCP with deadlines. Test code only, built on harness.h:
 * single-threaded unless a test starts threads of its own (the client
 * functions are thread-safe), and failures are cmocka assertion failures.
 */
#ifndef TPDB_TPDBDS_H
#define TPDB_TPDBDS_H

#include <stddef.h>

#include <jansson.h>

#include "base/base.h"
#include "tests/integration/harness.h"

#define TPDBDS_MAX 8

/* Bound on one request's reply. */
#define TPDBDS_IO_MS 30000

/* Bound on a member's start until it logs "ready:". */
#define TPDBDS_READY_MS 60000

/* A cluster. Member i (0-based) has node id "n<i+1>", data directory
 * "<dir>/n<i+1>", Raft port raft[i] and client port client[i]. */
struct tpdbds {
    char dir[HARNESS_PATH_MAX];
    char prog[HARNESS_PATH_MAX]; /* the tpdbd program */
    unsigned n;
    unsigned raft[TPDBDS_MAX], client[TPDBDS_MAX];
    unsigned voters;  /* members bootstrapped from --peer (default n) */
    int client_peers; /* pass --client-peer for every other member */
    struct harness_proc *procs[TPDBDS_MAX];
    /* A client token tpdbdsCall (and what uses it) adds as "token" to a
     * request that has none; NULL (the default): none. Borrowed. */
    const char *token;
    char errmsg[TPDB_ERRMSG_SIZE];
};

/* Makes the temp dir, finds tpdbd under $TPDB_BUILD_ROOT and picks 2n
 * free ports. Starts nothing. */
void tpdbdsInit(struct tpdbds *c, unsigned n, int client_peers);

/* Starts member i with --node-id, --raft, --client, --data-dir,
 * --election-ms 400, --ready-ms 60000, and, if i < voters, a --peer (and
 * with client_peers a --client-peer) for every other of the first voters
 * members; then extra (NULL-terminated, may be NULL). Does not wait. */
void tpdbdsStart(struct tpdbds *c, int i, const char *const *extra);

/* Waits for member i's "ready:" log line; fails with its stderr if not. */
void tpdbdsWaitReady(struct tpdbds *c, int i);

/* Starts every member with extra (tpdbdsStart), then waits until each is
 * ready. */
void tpdbdsStartAll(struct tpdbds *c, const char *const *extra);

/* Connects to 127.0.0.1:port; returns the fd, or -1. */
int tpdbdsConnect(unsigned port);

/* Sends len bytes of buf on fd; returns 0 or -1. */
int tpdbdsSend(int fd, const void *buf, size_t len);

/* Reads one line from fd (without '\n') within timeout_ms into *line
 * (malloc'ed, caller frees). Returns TPDB_OK, TPDB_SHUTDOWN at end of
 * file before a whole line, TPDB_TIMEOUT or TPDB_IOERR. Bytes after the
 * line are kept per fd only within one call: use one line per reply. */
int tpdbdsReadLine(int fd, int timeout_ms, char **line);

/* A reply as compact JSON text for a failure message ("no reply" for
 * NULL), in a buffer of the calling thread reused by the next call. Does
 * not take o. */
const char *tpdbdsText(json_t *o);

/* One request on a new connection, TrashPandaDB's way: connect, send line
 * and '\n', read the reply line, close. Returns the parsed reply (caller
 * json_decrefs) or NULL if there was none. */
json_t *tpdbdsRequest(unsigned port, const char *line);

/* One request on the kept connection fd: sends line and '\n', reads the
 * reply line. Returns the parsed reply (caller json_decrefs) or NULL if
 * there was none. */
json_t *tpdbdsOnConn(int fd, const char *line);

/* tpdbdsRequest() to ip (an IPv4 address string) instead of 127.0.0.1. */
json_t *tpdbdsRequestAt(const char *ip, unsigned port, const char *line);

/* tpdbdsRequest() on member i's client port with a printf-style line,
 * with c->token added (see struct tpdbds). */
json_t *tpdbdsCall(struct tpdbds *c, int i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Member i's status "role", e.g. "Leader"; "" if it does not answer. */
void tpdbdsRole(struct tpdbds *c, int i, char *role, size_t size);

/* Polls (every 50 ms, at most timeout_ms) until a running member says it
 * is the leader and every other running member names it; returns its
 * index. Fails the test at the deadline. */
int tpdbdsFindLeader(struct tpdbds *c, int timeout_ms);

/* Polls (every 50 ms) until `SELECT count(*) FROM <table>` by local_query
 * is count on every running member; fails at the deadline. */
void tpdbdsWaitCount(struct tpdbds *c,
                     const char *table,
                     long long count,
                     int timeout_ms);

/* SIGKILLs member i and reaps it; procs[i] becomes NULL. */
void tpdbdsKill(struct tpdbds *c, int i);

/* SIGTERMs member i and waits up to timeout_ms; returns its exit status
 * (waitpid form); fails the test if it needed SIGKILL. procs[i] becomes
 * NULL. */
int tpdbdsStop(struct tpdbds *c, int i, int timeout_ms);

/* Kills every process and removes dir. */
void tpdbdsClose(struct tpdbds *c);

#endif /* TPDB_TPDBDS_H */
