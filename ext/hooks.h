/*
 * Registration of the "tpdb" VFS with the hooks that replicate through the
 * Raft node of each database's directory.
 */
#ifndef TPDB_EXT_HOOKS_H
#define TPDB_EXT_HOOKS_H

/* Registers (or re-registers) the "tpdb" VFS with the replication hooks.
 * Returns an SQLITE_* code. */
int extHooksRegister(void);

#endif /* TPDB_EXT_HOOKS_H */
