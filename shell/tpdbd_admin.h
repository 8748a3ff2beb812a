/*
 * tpdbd's cluster and file actions (README "tpdbd"): remove and transfer
 * (on the leader; tpdbd_api.c forwards them there), checkpoint and backup
 * (of one database on the node that gets the request). They go through
 * libtpdbraft's SQL functions and SQLite's own checkpoint and backup APIs.
 * Thread-safe: client threads call them concurrently.
 */
#ifndef TPDBD_ADMIN_H
#define TPDBD_ADMIN_H

#include "shell/tpdbd.h"

/* Removes the member whose string id is node_id from the cluster, run on
 * database db's connection. Returns TPDB_ERR_NOTLEADER (nothing done,
 * *reply unset) on a follower, else an SQLite code with *reply set:
 * {"ok":true} or the error (not a member, the leader itself, raft's
 * reason). Strings are borrowed. */
int tpdbdAdminRemove(struct tpdbd *d,
                     const char *db,
                     const char *node_id,
                     char **reply);

/* Gives the member node_id the role ("voter", "standby" or "spare"):
 * promotes or demotes it. Returns TPDB_ERR_NOTLEADER (*reply unset) on a
 * follower, else an SQLite code with *reply set: {"ok":true} or the error
 * (not a member, the leader demoting itself, raft's reason). */
int tpdbdAdminAssign(struct tpdbd *d,
                     const char *db,
                     const char *node_id,
                     const char *role,
                     char **reply);

/* Transfers leadership to node_id (NULL: any voter raft picks) and waits
 * until this node sees the new leader. Returns TPDB_ERR_NOTLEADER (*reply
 * unset) on a follower, else an SQLite code with *reply set:
 * {"ok":true,"leader_id":ID} ("" if no leader was seen within 10 s) or
 * the error. */
int tpdbdAdminTransfer(struct tpdbd *d,
                       const char *db,
                       const char *node_id,
                       char **reply);

/* A TRUNCATE checkpoint of database db (which must exist) on this node.
 * Returns {"ok":true,"db":db,"busy":B,"log_frames":N,
 * "checkpointed_frames":N,"wal_bytes":N} or an error, malloc'ed (NULL
 * only when out of memory). */
char *tpdbdAdminCheckpoint(struct tpdbd *d, const char *db);

/* Writes a consistent copy of database db (which must exist) as this node
 * has applied it to path: an absolute path outside the node directory,
 * not existing yet, in an existing directory. The copy is a plain SQLite
 * file in rollback-journal mode, fsynced before it is renamed into place.
 * Returns {"ok":true,"db":db,"path":path,"pages":N,"bytes":N} or an
 * error, malloc'ed (NULL only when out of memory). */
char *tpdbdAdminBackup(struct tpdbd *d, const char *db, const char *path);

#endif /* TPDBD_ADMIN_H */
