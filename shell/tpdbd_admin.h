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
#include "shell/tpdbd_api.h"

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

/* Bytes of the database file in one line of a streamed backup. */
#define TPDBD_STREAM_CHUNK (64 * 1024)

/* Sends a consistent copy of database db (which must exist) back on the
 * client connection of out (borrowed), in bounded memory whatever its
 * size: the copy is written by SQLite's online backup (one read
 * transaction) to a temporary file in the node directory's .tpdb/, which
 * is unlinked at once and streamed from. Lines sent through out:
 *   {"ok":true,"stream":"backup","db":db,"pages":N,"bytes":N}
 *   {"offset":N,"data":"<base64 of at most TPDBD_STREAM_CHUNK bytes>"}...
 * and the return value is the last line: {"ok":true,"done":true,"db":db,
 * "bytes":N,"sha256":"<hex of the whole file>"}, or an error (also when
 * nothing was sent yet); out->failed is set when the client went away.
 * The file is a plain SQLite file in rollback-journal mode, as for
 * tpdbdAdminBackup. Malloc'ed; NULL only when out of memory. */
char *tpdbdAdminBackupStream(struct tpdbd *d,
                             const char *db,
                             struct tpdbd_sink *out);

/* Removes temporary files a streamed backup left in DIR/.tpdb/ when the
 * process died during it; called once at start, before any client. */
void tpdbdAdminCleanup(const char *dir);

#endif /* TPDBD_ADMIN_H */
