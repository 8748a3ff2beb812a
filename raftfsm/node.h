/*
 * A tpdb node: one Raft server replicating every database of one data
 * directory. It runs canonical/raft over libuv on a thread of its own; the
 * functions below may be called from any thread and hand work to that
 * thread.
 *
 * Files, under <data_dir>/.tpdb/: `raft/` (Raft log, metadata, snapshots),
 * `node.conf` (this node's id and address), `databases` (names of the
 * replicated databases), `lock` (held while a process runs the node).
 */
#ifndef TPDB_NODE_H
#define TPDB_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "vfs/txn.h"

struct tpdb_node;

struct tpdb_node_config {
    uint64_t id;           /* this node's id; 0: saved one, else 1 */
    const char *data_dir;  /* directory holding the databases (required) */
    const char *bind;      /* host:port to listen on; NULL: saved one, else
                              127.0.0.1:0 (a single node needs no peers) */
    const char *peers;     /* initial voters "1@host:port,2@host:port,...";
                              NULL: a single-node cluster of this node */
    int join;              /* 1: start empty and wait to be added by a member
                              (SELECT tpdb_add(...) on the leader) */
    unsigned election_ms;  /* default 1000 */
    unsigned heartbeat_ms; /* default 100 */
    unsigned snapshot_threshold; /* entries between snapshots, default 1024 */
    unsigned snapshot_trailing;  /* entries kept after one, default 512 */
    unsigned log_mb;      /* snapshot once the entries since the last one pass
                             this many MiB, and keep at most half of it as
                             trailing entries; default 16 */
    unsigned ready_ms;    /* how long acquire waits to catch up, default
                             15000 */
    unsigned commit_ms;   /* longest wait for a commit, default 60000 */
    unsigned min_free_mb; /* writes are refused (TPDB_FULL) while the data
                             directory's file system has less than this
                             many MiB free, so the Raft log, the WAL and a
                             restart always have room; default 64 */
    const char *join_address;  /* "IPv4:port" of any member: ask it to add
                                  this node as a voter (implies join = 1);
                                  acquire waits up to ready_ms for it.
                                  Borrowed during tpdbNodeAcquire only. */
    const char *key_file;      /* the cluster key (seal.h); NULL: the
                                  TPDB_REPLICATION_KEY variable, if set.
                                  Borrowed during tpdbNodeAcquire only. */
    const char *key_file_next; /* a rotation's other key, also accepted */
    int insecure;       /* 1: allow a non-loopback address without a key */
    const char *listen; /* "IPv4:port" to listen on if not the node's
                           address (e.g. 0.0.0.0:9001, or behind a proxy);
                           borrowed during tpdbNodeAcquire only */
};

/* Returns the node of cfg->data_dir in this process, starting it if needed
 * (a reference is taken; release it with tpdbNodeRelease). Starting
 * rebuilds the replicated databases from the last snapshot and the log and
 * waits until everything the local log held is applied again. With
 * cfg->join_address it then waits until the member there had this node
 * added as a voter (at once if the node already is one); a failed join
 * fails the acquire (TPDB_TIMEOUT, or TPDB_INVALID when refused) and the
 * next acquire with a join address tries again.
 * Errors: TPDB_READONLY when another process runs the node of that
 * directory (errmsg names its pid), TPDB_INVALID for a bad configuration or
 * one that contradicts the saved identity, TPDB_TIMEOUT if it could not
 * catch up within cfg->ready_ms, TPDB_IOERR, TPDB_RAFT, TPDB_NOMEM. */
int tpdbNodeAcquire(const struct tpdb_node_config *cfg,
                    struct tpdb_node **out,
                    char *errmsg);

/* Drops a reference. The node keeps running until tpdbNodeShutdownAll. */
void tpdbNodeRelease(struct tpdb_node *n);

/* Stops every node of this process (clean Raft shutdown). */
void tpdbNodeShutdownAll(void);

/* Finds the running node whose data directory holds `db_path` (a database
 * file path); NULL if none. No reference is taken: valid until shutdown. */
struct tpdb_node *tpdbNodeFind(const char *db_path);

/* Whether a write to database `db` may start (the caller holds its WAL
 * write lock): TPDB_OK on a leader that has applied every entry of earlier
 * terms and written every entry of `db`; TPDB_BUSY at once when entries of
 * `db` are still queued (roll back and retry); TPDB_NOTLEADER with errmsg
 * naming the leader. May wait briefly for a new leader's barrier. */
int tpdbNodeWriteCheck(struct tpdb_node *n, const char *db, char *errmsg);

/* Holds (hold = 1) or releases (0) the write checks of database `db`:
 * while a hold is in place tpdbNodeWriteCheck(db) waits (up to 2 election
 * timeouts, then TPDB_BUSY). Holds nest. For the write sessions of other
 * processes (local.h), from their write check until their transaction is
 * written. Errors (hold only): TPDB_NOMEM. */
int tpdbNodeHoldWrites(struct tpdb_node *n, const char *db, int hold);

/* The real path of the node's data directory; valid until shutdown. */
const char *tpdbNodeDataDir(const struct tpdb_node *n);

/* Called before a local connection takes the write lock of `db`: on a
 * leader, waits (up to 2 election timeouts) while entries of `db` are
 * queued, since they need that lock to be written. Returns at once on
 * followers. */
void tpdbNodeWaitWritable(struct tpdb_node *n, const char *db);

/* Replicates txn of database `db` (a file name in the data directory) and
 * blocks until a quorum holds it and the FSM acknowledged it (TPDB_OK),
 * it definitely failed (TPDB_NOTLEADER, TPDB_SHUTDOWN, TPDB_TOOBIG, ...),
 * or its outcome is unknown (TPDB_UNKNOWN). After TPDB_OK the caller must
 * write the transaction locally and then call tpdbNodeOwnWriteDone. */
int tpdbNodeCommit(struct tpdb_node *n,
                   const char *db,
                   const struct tpdb_txn *txn,
                   char *errmsg);

/* One part of a transaction the VFS hands over in parts (commit_part):
 * part `index` (0 first), `final` on the last. Each part is replicated as a
 * chunk entry (entry.h) and waits for the quorum; only the final one's
 * outcome makes the transaction committed, so a failure before it is
 * definite (TPDB_RAFT with the reason), never TPDB_UNKNOWN. After TPDB_OK
 * on the final part the caller writes the transaction and calls
 * tpdbNodeOwnWriteDone, as after tpdbNodeCommit. */
int tpdbNodeCommitPart(struct tpdb_node *n,
                       const char *db,
                       const struct tpdb_txn *part,
                       unsigned index,
                       int final,
                       char *errmsg);

/* The same for a whole TPDB page file handed over in parts (tpdbfile.h's
 * commit_part): part 0 is a TPDB_ENTRY_TPDBFILE_BEGIN entry. */
int tpdbNodeCommitFilePart(struct tpdb_node *n,
                           const char *db,
                           const struct tpdb_txn *part,
                           unsigned index,
                           int final,
                           char *errmsg);

/* The same for a commit of changes to a TPDB page file handed over in
 * parts (tpdbfile.h's commit_delta_part): part 0 is a
 * TPDB_ENTRY_TPDBFILE_DELTA entry. */
int tpdbNodeCommitDeltaPart(struct tpdb_node *n,
                            const char *db,
                            const struct tpdb_txn *part,
                            unsigned index,
                            int final,
                            char *errmsg);

/* Like tpdbNodeCommit, for an entry of type TPDB_ENTRY_* (entry.h). */
int tpdbNodePropose(struct tpdb_node *n,
                    int type,
                    const char *db,
                    const struct tpdb_txn *txn,
                    char *errmsg);

/* Makes an existing database file at `path` (file name `name` in the data
 * directory) part of the cluster (adopt.c): if it holds data the cluster
 * does not know, its committed image (main file and WAL, as a reader sees
 * it) is replicated in bounded parts, as one TPDB_ENTRY_IMAGE entry or a
 * CHUNK_BEGIN..CHUNK_END sequence. The file is not changed, and no SQLite
 * connection is opened (this runs inside xOpen). A no-op for known or
 * empty files; a known database whose file was deleted or replaced while
 * the node ran is imported again from the new file on the leader. Errors:
 * TPDB_NOTLEADER on a follower (errmsg says to open it on the leader),
 * TPDB_CORRUPT (not a SQLite database), TPDB_BUSY (a hot rollback journal),
 * TPDB_IOERR, TPDB_NOMEM, and the errors of tpdbNodePropose. */
int tpdbNodeAdopt(struct tpdb_node *n,
                  const char *name,
                  const char *path,
                  char *errmsg);

/* Whether the cluster's log or snapshot has carried database or file
 * `name` (every replica then holds its state as of this node's applied
 * index). */
int tpdbNodeKnows(struct tpdb_node *n, const char *name);

/* The caller finished writing a transaction tpdbNodeCommit acknowledged. */
void tpdbNodeOwnWriteDone(struct tpdb_node *n, const char *db, int written);

/* Status as a JSON object, allocated with tpdb_malloc (caller frees):
 * {"id","address","role","leader_id","leader_address","term",
 *  "commit_index","applied_index" (written locally),"last_index",
 *  "members":[{"id","address","role"}],"databases","stats":{
 *  "applied_entries","own_entries","applied_pages","snapshots","restores",
 *  "pending",...,"log_held","log_holds","log_stripped" (iohold.h)}}.
 * Errors: TPDB_NOMEM, TPDB_SHUTDOWN. */
int tpdbNodeStatusJson(struct tpdb_node *n, char **json, char *errmsg);

/* Current leader as "id@address" into buf; "" if none known. */
void tpdbNodeLeader(struct tpdb_node *n, char *buf, size_t size);

/* Membership changes, run on the leader; block until raft reports the
 * outcome. role: "voter", "standby" or "spare". */
int tpdbNodeAdd(struct tpdb_node *n,
                uint64_t id,
                const char *address,
                char *errmsg);
int tpdbNodeAssign(struct tpdb_node *n,
                   uint64_t id,
                   const char *role,
                   char *errmsg);
int tpdbNodeRemove(struct tpdb_node *n, uint64_t id, char *errmsg);
/* Transfers leadership to id (0: any voter) and waits for the attempt. */
int tpdbNodeTransfer(struct tpdb_node *n, uint64_t id, char *errmsg);

/* Runs a PASSIVE checkpoint of every database the node's FSM holds. */
int tpdbNodeCheckpoint(struct tpdb_node *n, char *errmsg);

#endif /* TPDB_NODE_H */
