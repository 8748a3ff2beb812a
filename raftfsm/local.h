/*
 * Writes from other processes of the same machine (multi-process SQLite).
 * The process that holds a data directory's lock runs its node and serves
 * a unix socket, <data_dir>/.tpdb/sock; a connection in another process
 * hands its write checks and commits to that node through it and writes
 * its own WAL frames as a local connection of the node would, since both
 * processes share the database files and the WAL-index.
 *
 * Requests and replies are length-prefixed frames (layout in local.c), one
 * request at a time per client. A commit is answered only with the node's
 * outcome (so once a quorum holds it); a client that loses the socket
 * after sending a whole commit reports TPDB_UNKNOWN. A client that dies
 * between a commit's acknowledgement and its "written" message leaves the
 * server to finish the transaction: it writes the acknowledged pages
 * itself (page images are absolute, so it converges whether the client's
 * frame reached the WAL or not) while other writers wait.
 */
#ifndef TPDB_LOCAL_H
#define TPDB_LOCAL_H

#include <stdint.h>

#include "base/base.h"
#include "vfs/txn.h"

struct tpdb_node;

/* The file name of the socket in a node's meta directory. */
#define TPDB_LOCAL_SOCK "sock"

/* A node's socket server. Owned by the node (node_start.c). */
struct tpdb_local_server;

/* Starts serving node n over <meta_dir>/sock (a stale socket file is
 * replaced: the caller holds the directory lock). data_dir is the real
 * path of the databases' directory. Both strings are copied. Errors:
 * TPDB_IOERR (socket, bind: errmsg says why; a path longer than a unix
 * socket address allows), TPDB_NOMEM. */
int tpdbLocalServerStart(struct tpdb_node *n,
                         const char *meta_dir,
                         const char *data_dir,
                         struct tpdb_local_server **out,
                         char *errmsg);

/* Stops accepting, removes the socket file and shuts every client stream
 * down; requests being served finish (or fail, once the node stops). Call
 * before the node stops, then tpdbLocalServerFree after. NULL: no-op. */
void tpdbLocalServerShutdown(struct tpdb_local_server *s);

/* Waits for the server's threads and frees it. NULL: no-op. */
void tpdbLocalServerFree(struct tpdb_local_server *s);

/* One connection's link to the node of another process. Owned by the
 * caller from tpdbLocalConnect to tpdbLocalClose; one thread at a time. */
struct tpdb_local_client;

/* Connects to the node serving <meta_dir>/sock. Errors: TPDB_NOTFOUND (no
 * node serves it: no socket, or nobody listening), TPDB_IOERR, TPDB_NOMEM. */
int tpdbLocalConnect(const char *meta_dir,
                     struct tpdb_local_client **out,
                     char *errmsg);

/* Closes and frees c. NULL: no-op. */
void tpdbLocalClose(struct tpdb_local_client *c);

/* Whether c lost its stream (every request then fails at once). */
int tpdbLocalBroken(const struct tpdb_local_client *c);

/* tpdbNodeAdopt on the serving node for database `db` of its directory
 * (call when opening it, holding no lock on it): a file that holds data
 * the cluster does not know is replicated whole first. A lost stream:
 * TPDB_READONLY. */
int tpdbLocalAdopt(struct tpdb_local_client *c, const char *db, char *errmsg);

/* tpdbNodeWriteCheck on the serving node. A lost stream: TPDB_READONLY
 * with errmsg saying the node's process went away. */
int tpdbLocalWriteCheck(struct tpdb_local_client *c,
                        const char *db,
                        char *errmsg);

/* tpdbNodeWaitWritable on the serving node; errors are ignored. */
void tpdbLocalWaitWritable(struct tpdb_local_client *c, const char *db);

/* tpdbNodeCommit (index 0, final 1, whole) or tpdbNodeCommitPart on the
 * serving node, with its outcome. A stream lost after the whole request
 * was sent: TPDB_UNKNOWN (the node may have proposed it); before: TPDB_RAFT
 * (definitely not committed). */
int tpdbLocalCommit(struct tpdb_local_client *c,
                    const char *db,
                    const struct tpdb_txn *txn,
                    int whole,
                    unsigned index,
                    int final,
                    char *errmsg);

/* tpdbNodeOwnWriteDone on the serving node, once the client wrote (or
 * failed to write) an acknowledged transaction. */
void tpdbLocalWriteDone(struct tpdb_local_client *c,
                        const char *db,
                        int written);

#endif /* TPDB_LOCAL_H */
