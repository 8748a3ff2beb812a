/*
 * tpdbd, the standalone replica daemon: the state its modules share. One
 * struct tpdbd lives for the whole process (made by main in tpdbd.c); the
 * client threads read it and update only its atomic counters.
 *
 *   tpdbd.c          start-up, housekeeping thread, signals, shutdown
 *   tpdbd_flags.c    command line, node ids, addresses
 *   tpdbd_pool.c     pooled SQLite connections through the tpdb VFS
 *   tpdbd_server.c   client listener, a thread per connection, line reading
 *   tpdbd_api.c      the JSON actions
 *   tpdbd_sql.c      params binding, statement execution, result rows
 *   tpdbd_group.c    group commit: concurrent proposes share a transaction
 *   tpdbd_meta.c     tpdbd's own replicated database: members, read barrier
 *   tpdbd_forward.c  requests forwarded to the leader's client port, kept
 *                    connections to it
 *   tpdbd_txn.c      interactive transactions (begin/commit/rollback)
 *   tpdbd_admin.c    remove, transfer, checkpoint, backup
 *   tpdbd_dns.c      --dns-peers discovery, before anything starts
 *   tpdbd_metrics.c  --metrics: Prometheus text over HTTP
 *   tpdbd_tokens.c   --client-tokens: the tokens file, hashes, new tokens
 *   tpdbd_auth.c     which requests a client token allows
 */
#ifndef TPDBD_H
#define TPDBD_H

#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>
#include <sqlite3.h>

#include "shell/tpdbd_flags.h"
#include "shell/tpdbd_metrics.h"
#include "shell/tpdbd_pool.h"
#include "shell/tpdbd_tokens.h"

/* The main database of a node directory, as in TrashPandaDB. */
#define TPDBD_MAIN_DB "data.db"

/* tpdbd's own replicated database in the node directory (tpdbd_meta.c);
 * clients cannot name it in "db". */
#define TPDBD_META_DB "tpdbd-meta.db"

/* Longest request line a client may send, without its newline. */
#define TPDBD_LINE_MAX (1024 * 1024)

struct tpdbd_fwd_pool;

struct tpdbd {
    struct tpdbd_config cfg;
    char dir[PATH_MAX];               /* node directory in use */
    char client_addr[TPDBD_ADDR_MAX]; /* client address other nodes use */
    struct tpdbd_pool *pool;
    sqlite3 *control; /* data.db, opened first: keeps the node up */
    unsigned slow_ms; /* TPDB_SLOW_QUERY_MS */
    atomic_ullong queries_total, writes_total, slow_queries_total;
    /* Request latency histogram (tpdbdMetricsObserve). */
    atomic_ullong latency[TPDBD_LATENCY_BUCKETS + 1], latency_sum_ms;
    struct tpdbd_metrics *metrics;   /* NULL without --metrics */
    struct tpdbd_group *group;       /* group commit of propose */
    struct tpdbd_fwd_pool *forwards; /* kept connections to the leader */
    /* Group commit: batches committed with at least one write, the writes
     * they held, the most requests in one, batches whose COMMIT failed
     * (not for replication) so that each request ran alone, and proposes
     * queued now. */
    atomic_ullong group_commits, group_writes, group_largest, group_reruns;
    atomic_llong group_queued;
    /* --client-tokens (NULL: no check), replaced by a reload under
     * tokens_lock (tpdbd_auth.c). */
    struct tpdbd_tokens *tokens;
    pthread_rwlock_t tokens_lock;
    char node_token[TPDBD_TOKEN_LEN + 1]; /* --node-token-file; "" if none */
};

/* The node's status (tpdb_status() parsed), or NULL if it is unavailable.
 * Caller json_decrefs. */
json_t *tpdbdStatus(struct tpdbd *d);

#endif /* TPDBD_H */
