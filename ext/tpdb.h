/*
 * tpdb public C API: SQLite with Raft replication through the "tpdb" VFS.
 *
 * Link with -ltpdbraft (libtpdbraft.so), call tpdb_register() once, then
 * open databases with sqlite3_open_v2(path, &db, flags, "tpdb") or a URI
 * "file:app.db?vfs=tpdb&node=1&bind=...&peers=..." (SQLITE_OPEN_URI). The
 * same library is a loadable extension for the sqlite3 shell:
 * `.load ./libtpdbraft`. The URI parameters and SQL functions are listed in
 * README.md.
 */
#ifndef TPDB_H
#define TPDB_H

#include <stddef.h>

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TPDB_PUBLIC __attribute__((visibility("default")))

/* Extended result codes of a failed write or COMMIT, as returned by
 * sqlite3_extended_errcode(). They belong to the SQLITE_IOERR class: the
 * transaction was rolled back locally and the connection stays usable. */
#define TPDB_ERR_NOTLEADER (SQLITE_IOERR | (200 << 8)) /* write elsewhere */
#define TPDB_ERR_UNKNOWN (SQLITE_IOERR | (201 << 8))   /* may have committed */
#define TPDB_ERR_REPLFAIL (SQLITE_IOERR | (202 << 8))  /* did not commit */
/* A write of a replicated database outside WAL mode (an ATTACHed database
 * or a connection through a VFS layered over tpdb that was not switched
 * with PRAGMA journal_mode=WAL, or locking_mode=EXCLUSIVE reaching it):
 * SQLITE_READONLY class, refused before anything was written. */
#define TPDB_ERR_NOTWAL (SQLITE_READONLY | (200 << 8))

/* Registers the "tpdb" VFS (not as the default) and makes every connection
 * opened afterwards get tpdb's SQL functions and WAL mode. Idempotent and
 * thread-safe; call it again after sqlite3_shutdown(), which forgets
 * auto-extensions. Returns an SQLITE_* code. */
TPDB_PUBLIC int tpdb_register(void);

/* The reason behind the last TPDB_ERR_* failure, or the last failed open
 * through tpdb (SQLITE_CANTOPEN), on the calling thread, e.g. "not the
 * leader: node 2 is, at 127.0.0.1:7002" or "open /d/app.db: peers: 'x' is
 * not id@host:port"; "" if none. The same text as SELECT
 * tpdb_last_error(). Valid until the next failure on this thread. */
TPDB_PUBLIC const char *tpdb_errmsg(void);

/* The node's status as JSON (see README), for the node replicating the
 * database open on db; *json is allocated with sqlite3_malloc (free with
 * sqlite3_free). Returns SQLITE_OK, SQLITE_NOTFOUND if db is not
 * replicated by a node in this process, or SQLITE_NOMEM. */
TPDB_PUBLIC int tpdb_status(sqlite3 *db, char **json);

/* The leader as the node replicating the database open on db knows it, as
 * SELECT tpdb_leader() gives it: "ID@HOST:PORT" into buf (size bytes,
 * truncated if short), "" if none is known. Cheap (a copy under the
 * node's lock, no call into its loop, no JSON), unlike tpdb_status():
 * made to be asked on every request. Returns SQLITE_OK, or
 * SQLITE_NOTFOUND (buf "") if db is not replicated by a node in this
 * process. */
TPDB_PUBLIC int tpdb_leader(sqlite3 *db, char *buf, size_t size);

/* Stops every node of this process cleanly. Connections opened through tpdb
 * must be closed first. */
TPDB_PUBLIC void tpdb_shutdown(void);

/* The extension entry point used by `.load libtpdbraft`; it calls
 * tpdb_register() and keeps the library loaded. */
TPDB_PUBLIC int sqlite3_tpdbraft_init(sqlite3 *db,
                                      char **pzErrMsg,
                                      const struct sqlite3_api_routines *api);

#ifdef __cplusplus
}
#endif

#endif /* TPDB_H */
