/*
 * Recovery from a lost quorum: rewrites a stopped node's raft
 * configuration from the survivors, with raft 0.15's raft_recover (which
 * appends a configuration entry to the log on disk). Run it on exactly one
 * surviving node, the one with the longest log (highest applied_index in
 * tpdb_status), with the members that are to form the cluster; start that
 * node, then let every other survivor and every replacement rejoin it with
 * join=HOST:PORT (a survivor with an old log first gets its data
 * directory's .tpdb removed, so that it joins afresh).
 */
#ifndef TPDB_RECOVER_H
#define TPDB_RECOVER_H

#include "base/base.h"

/* Rewrites the configuration of the node whose data directory is data_dir
 * to `members` ("ID@HOST:PORT,...", all voters; this node's own id and
 * address must be among them). The node must not be running: its lock is
 * taken for the duration. Errors: TPDB_READONLY (the node runs; errmsg
 * names its pid), TPDB_NOTFOUND (no node in data_dir), TPDB_INVALID (bad
 * members, or this node not among them), TPDB_RAFT, TPDB_IOERR,
 * TPDB_NOMEM. */
int tpdbNodeRecover(const char *data_dir, const char *members, char *errmsg);

#endif /* TPDB_RECOVER_H */
