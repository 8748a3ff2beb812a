/*
 * A node's identity and the files it keeps beside its databases: parsing of
 * the peers list, the saved identity (.tpdb/node.conf) and the lock that
 * makes one process the node of a data directory.
 */
#ifndef TPDB_NODECONF_H
#define TPDB_NODECONF_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define TPDB_ADDRESS_MAX 256

/* Parses "1@host:port,2@host:port" into conf (initialised by the caller,
 * voters). Errors: TPDB_INVALID with errmsg saying which item is wrong,
 * TPDB_NOMEM. */
int tpdbPeersParse(const char *peers,
                   struct raft_configuration *conf,
                   char *errmsg);

/* Checks "host:port" syntax (IPv4 or a name, port 0..65535). */
int tpdbAddressValid(const char *address);

/* Reads <meta_dir>/node.conf. Returns TPDB_NOTFOUND if absent. */
int tpdbNodeConfLoad(const char *meta_dir,
                     uint64_t *id,
                     char *address,
                     size_t size,
                     char *errmsg);

/* Writes <meta_dir>/node.conf durably (temp file, fsync, rename). */
int tpdbNodeConfSave(const char *meta_dir,
                     uint64_t id,
                     const char *address,
                     char *errmsg);

/* Takes the exclusive lock <meta_dir>/lock without waiting and writes this
 * pid into it. On TPDB_OK *fd holds the lock until closed. TPDB_READONLY if
 * another process holds it (errmsg names its pid). */
int tpdbNodeLock(const char *meta_dir, int *fd, char *errmsg);

/* Whether a process holds <meta_dir>/lock (probes it without keeping it;
 * 0 when there is no lock file). */
int tpdbNodeLockHeld(const char *meta_dir);

/* mkdir -p for one or two levels; TPDB_IOERR on failure. */
int tpdbMkdir(const char *path, char *errmsg);

#endif /* TPDB_NODECONF_H */
