/*
 * Registration of the "tpdb" VFS with the hooks that replicate through the
 * Raft node of each database's directory.
 */
#ifndef TPDB_EXT_HOOKS_H
#define TPDB_EXT_HOOKS_H

#include <sqlite3.h>

/* Registers (or re-registers) the "tpdb" VFS with the replication hooks.
 * Returns an SQLITE_* code. */
int extHooksRegister(void);

/* Imports into the cluster the database of conn when its open left that
 * for later: a file in rollback-journal mode holding data, which
 * followers could not apply; call once the connection has switched it to
 * WAL. A no-op otherwise. On failure the database takes no writes from
 * this connection, with the reason. Returns a TPDB_* code. */
int extAdoptLater(sqlite3 *conn, char *errmsg);

#endif /* TPDB_EXT_HOOKS_H */
