/*
 * Pooled SQLite connections to the databases of the node directory, each
 * opened through the tpdb VFS with the node's cluster URI parameters (the
 * first open in the process starts the node; later ones share it). A
 * client thread takes one connection per request and gives it back; idle
 * connections are kept for reuse, up to a bound. Thread-safe.
 */
#ifndef TPDBD_POOL_H
#define TPDBD_POOL_H

#include <stddef.h>

#include <sqlite3.h>

struct tpdbd_pool;

/* A connection taken from the pool: db is valid until tpdbdPoolPut. */
struct tpdbd_conn {
    char name[72]; /* database file name in the directory */
    sqlite3 *db;
    struct tpdbd_conn *next; /* pool's list, internal */
};

/* Makes a pool for directory dir whose URIs carry query (the part after
 * '?', e.g. "vfs=tpdb&node=1&..."); both are copied. Keeps at most
 * max_idle idle connections. Returns 0, or -1 (out of memory). */
int tpdbdPoolInit(struct tpdbd_pool **out,
                  const char *dir,
                  const char *query,
                  unsigned max_idle);

/* Closes every idle connection and frees the pool. Connections still taken
 * must have been put back. */
void tpdbdPoolClose(struct tpdbd_pool *pool);

/* Opens (or reuses) a connection to database name. The URI for it is
 * written by tpdbdPoolUri. Returns the connection, or NULL with the reason
 * in err (size bytes). */
struct tpdbd_conn *tpdbdPoolGet(struct tpdbd_pool *pool,
                                const char *name,
                                char *err,
                                size_t size);

/* Gives a connection back: an open transaction is rolled back first and
 * foreign key enforcement turned off (SQLite's default). */
void tpdbdPoolPut(struct tpdbd_pool *pool, struct tpdbd_conn *conn);

/* Opens a new connection to database name outside the pool (the caller
 * sqlite3_closes it). Returns an SQLITE_* code; on error *db is NULL and
 * err says why. */
int tpdbdPoolOpen(struct tpdbd_pool *pool,
                  const char *name,
                  sqlite3 **db,
                  char *err,
                  size_t size);

#endif /* TPDBD_POOL_H */
