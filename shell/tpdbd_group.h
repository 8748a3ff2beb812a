/*
 * Group commit for tpdbd's propose: concurrent proposes to one database
 * (from clients of this node and forwarded by followers) share one SQLite
 * transaction, hence one Raft entry. Each request runs in its own
 * SAVEPOINT inside the batch, so a failing statement is undone alone and
 * every client gets its own result and error; the batch commits once and
 * every client in it gets the commit's outcome. No timer: a batch is what
 * queued while the previous one was committing, so a lone writer commits
 * at once. Thread-safe; client threads block in tpdbdGroupPropose.
 */
#ifndef TPDBD_GROUP_H
#define TPDBD_GROUP_H

#include <stddef.h>

#include <jansson.h>

#include "shell/tpdbd_sql.h"

struct tpdbd;
struct tpdbd_group;

/* Most requests, and most bytes of SQL and params, in one batch; a single
 * request larger than the byte bound still commits (alone). */
#define TPDBD_GROUP_MAX_REQUESTS 256
#define TPDBD_GROUP_MAX_BYTES (4u * 1024 * 1024)

/* Makes the (empty) set of per-database queues. Returns 0, or -1 (out of
 * memory). */
int tpdbdGroupInit(struct tpdbd_group **out);

/* Frees it; no thread may be inside tpdbdGroupPropose. */
void tpdbdGroupClose(struct tpdbd_group *g);

/* Runs one propose (sql with params, a JSON array or NULL; both borrowed
 * until return) on database db of d's pool, batched with concurrent ones
 * that have the same foreign_keys (1: SQLite enforces foreign keys for
 * it; a batch is one transaction, and the setting cannot change inside
 * one). out->blobs says how BLOBs of RETURNING rows are written; out is
 * filled as by tpdbdSqlPropose (caller clears it).
 * SQL that cannot run inside a savepoint (tpdbdSqlExecGrouped) runs on
 * its own transaction instead, as does every request of a batch whose
 * COMMIT failed for a reason other than replication (a deferred foreign
 * key, say: nothing was written). Returns as tpdbdSqlPropose: SQLITE_OK
 * with *out filled once a quorum holds the batch; the request's own
 * statement error; or the batch's: TPDB_ERR_UNKNOWN (may have committed),
 * TPDB_ERR_NOTLEADER or TPDB_ERR_REPLFAIL (nothing written), SQLITE_BUSY
 * (the write lock was not free in time); err (size bytes) says why.
 * Updates d's group counters (group_reruns counts batches whose COMMIT
 * failed so that each request ran alone). */
int tpdbdGroupPropose(struct tpdbd *d,
                      const char *db,
                      const char *sql,
                      json_t *params,
                      int foreign_keys,
                      struct tpdbd_write *out,
                      char *err,
                      size_t size);

#endif /* TPDBD_GROUP_H */
