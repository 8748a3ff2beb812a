/*
 * tpdbd's own replicated database, TPDBD_META_DB in the node directory,
 * replicated like every database there:
 *
 *   nodes(raft_id INTEGER PRIMARY KEY, node_id TEXT, raft_addr TEXT,
 *         client_addr TEXT)   a leader writes its own row, so followers
 *                             learn the leader's client address and its
 *                             string id without --client-peer
 *   barrier(id INTEGER PRIMARY KEY, n INTEGER)
 *                             one row; `query` commits an increment before
 *                             reading (a Raft round that proves leadership)
 */
#ifndef TPDBD_META_H
#define TPDBD_META_H

#include <stddef.h>
#include <stdint.h>

#include "shell/tpdbd.h"

/* One row of nodes; the strings are borrowed. */
struct tpdbd_node_row {
    uint64_t raft_id;
    const char *node_id, *raft_addr, *client_addr;
};

/* On the leader: creates the tables if needed and writes row unless the
 * table already says the same. Returns an SQLite extended code
 * (TPDB_ERR_NOTLEADER on a follower) with err (size bytes) set. */
int tpdbdMetaRecord(struct tpdbd *d,
                    const struct tpdbd_node_row *row,
                    char *err,
                    size_t size);

/* tpdbdMetaRecord() of this node's own row. Returns an SQLite extended code
 * (TPDB_ERR_NOTLEADER on a follower) with err (size bytes) set. */
int tpdbdMetaRegister(struct tpdbd *d, char *err, size_t size);

/* Commits one write through Raft on the leader. SQLITE_OK means this node
 * was the leader when the write committed after the call began, and every
 * entry before it has been applied here. Otherwise an extended code
 * (TPDB_ERR_NOTLEADER, TPDB_ERR_UNKNOWN, ...) with err set. */
int tpdbdMetaBarrier(struct tpdbd *d, char *err, size_t size);

/* Looks up raft_id in the local copy of nodes: fills node_id
 * (TPDBD_ID_MAX + 1 bytes) and client (TPDBD_ADDR_MAX bytes) and returns 0,
 * or returns -1 if the row is not there. */
int tpdbdMetaLookup(struct tpdbd *d,
                    uint64_t raft_id,
                    char *node_id,
                    char *client);

#endif /* TPDBD_META_H */
