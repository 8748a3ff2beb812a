/*
 * The replicated state machine: applies committed entries to the databases
 * of one data directory through the tpdb VFS, and recognises the entries
 * this node proposed itself (their frames are written by the proposing
 * SQLite connection, not by the FSM).
 *
 * The database files are the state. A snapshot is a small record
 * (snaprec.h) taken once every database is durable on disk up to its index;
 * a restart keeps the files and replays the log after the snapshot (page
 * images are absolute, so replaying entries the files already hold is
 * harmless). A node that installs a snapshot it is behind, or whose files
 * are missing or unreadable, marks those databases as fetching: the node's
 * fetcher streams each from a peer (tpdbFsmServe* there, tpdbFsmFetch*
 * here) while the entries that arrive meanwhile wait in the queue; the
 * stream and the queued entries are committed as one transaction, so local
 * readers go from the old state to a state of the cluster's history at
 * once.
 *
 * Threads: apply, snapshot, restore and drain run on the Raft loop thread;
 * the durable part of a snapshot on a worker (version 3, or inline in
 * snapshot on version 2); serve and fetch on the caller's thread. Shared
 * state is guarded by the FSM's mutex.
 */
#ifndef TPDB_FSM_H
#define TPDB_FSM_H

#include <pthread.h>
#include <raft.h>
#include <stdint.h>

#include "base/base.h"

struct tpdb_fsm;

/* A proposal made by this node instance, waiting for its outcome. Owned by
 * the proposing thread; registered in the FSM while it waits. */
struct tpdb_proposal {
    uint64_t seq;
    int state;      /* TPDB_BUSY while pending, then the outcome code */
    const char *db; /* database name, for the in-flight count */
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_proposal *next;
};

/* Creates the FSM for databases under data_dir; meta_dir holds its manifest
 * of replicated database names and the durable file (both copied): the
 * databases of the manifest are known at once. `origin` identifies this
 * node instance in entries it proposes. With `async` the FSM is version 3
 * (the durable part of a snapshot runs in snapshot_async, for an io with
 * async_work); else version 2 and snapshot does it inline. On success fills
 * *fsm (fsm->data = the state) and returns TPDB_OK. Errors: TPDB_NOMEM,
 * TPDB_IOERR (manifest or durable file unreadable). */
int tpdbFsmInit(struct raft_fsm *fsm,
                const char *data_dir,
                const char *meta_dir,
                uint64_t origin,
                int async,
                char *errmsg);

/* Who streams databases in for a restore. start() is called on the loop
 * thread for each database that must be fetched, with the index its new
 * state must include; it must not block, and the fetch runs on another
 * thread through tpdbFsmFetch*, retried until it succeeds. */
struct tpdb_fsm_fetcher {
    void *arg;
    void (*start)(void *arg, const char *db, uint64_t min_index);
};

/* Bounds raft's in-memory log by bytes, not only entries: once the entries
 * applied since the last snapshot pass `bytes`, the FSM lowers raft's
 * snapshot threshold so that a snapshot is taken at the next apply, and
 * each snapshot keeps no more trailing entries than fit in bytes / 2 (at
 * most `trailing`). `threshold` and `trailing` are the configured values,
 * restored after each snapshot. 0 bytes: no bound. Loop thread, after
 * tpdbFsmSetRaft. */
void tpdbFsmSetLogBudget(struct raft_fsm *fsm,
                         uint64_t bytes,
                         unsigned threshold,
                         unsigned trailing);

/* Bounds each database's queue of entries that cannot be written yet (a
 * local connection holding the write lock on a follower): past `entries`
 * or `bytes`, the queue is dropped and the database waits for a stream
 * from a peer instead, so neither memory nor the log grows without bound.
 * Defaults 4096 entries, 64 MiB. */
void tpdbFsmSetQueueLimit(struct raft_fsm *fsm,
                          unsigned entries,
                          uint64_t bytes);

/* Sets the fetcher (copied). Call before raft starts. */
void tpdbFsmSetFetcher(struct raft_fsm *fsm, const struct tpdb_fsm_fetcher *f);

/* Number of databases waiting for a stream (any thread). */
unsigned tpdbFsmFetching(struct raft_fsm *fsm);

/* Whether database `name` waits for a stream, and from which index (any
 * thread). Returns 1 and sets *min_index if so. */
int tpdbFsmFetchNeeded(struct raft_fsm *fsm,
                       const char *name,
                       uint64_t *min_index);

/* Serving a database to a peer: a pinned read of its last committed state
 * (vfs.h's reader) on a connection of its own; for a TPDB page file, a
 * read-only handle whose shared flock keeps every writer out meanwhile
 * (pages in the replication mapping of tpdbfile.h). Owned by the caller;
 * one thread. */
struct tpdb_fsm_serve;

/* Pins database `name` once its written state includes min_index, waiting
 * up to timeout_ms for that and for the write lock. *served is an index the
 * pinned state does not go beyond: the receiver must apply every entry up
 * to it on top. Errors: TPDB_NOTFOUND (unknown, or no file), TPDB_BUSY
 * (still behind min_index, or locks busy, after timeout_ms), TPDB_IOERR,
 * TPDB_NOMEM. */
int tpdbFsmServeOpen(struct raft_fsm *fsm,
                     const char *name,
                     uint64_t min_index,
                     unsigned timeout_ms,
                     struct tpdb_fsm_serve **out,
                     char *errmsg);

/* Page size, size in pages and served index of the pinned state. */
void tpdbFsmServeInfo(const struct tpdb_fsm_serve *sv,
                      uint32_t *page_size,
                      uint32_t *db_pages,
                      uint64_t *served);

/* Reads pages first..first+n-1 into buf (n * page size bytes). */
int tpdbFsmServeRead(struct tpdb_fsm_serve *sv,
                     uint32_t first,
                     uint32_t n,
                     uint8_t *buf,
                     char *errmsg);

/* Releases the pin and the connection; NULL is a no-op. */
void tpdbFsmServeClose(struct tpdb_fsm_serve *sv);

/* Receiving a database that waits for a stream. Owned by the caller from
 * Begin until Finish returns other than TPDB_BUSY, or Abort. */
struct tpdb_fsm_fetch;

/* Starts receiving database `name` (which must be fetching) in pages of
 * page_size, from a state served at index `served` (tpdbFsmServeInfo).
 * The local file is created if missing or empty, and moved aside
 * (NAME.corrupt-TIME) if it is not a SQLite database of that page size.
 * Waits up to lock_ms for the database's write lock. A TPDB page file is
 * received into .tpdb/NAME.fetch instead and renamed over the local file
 * at the commit (a local file that does not open is moved aside then).
 * Errors: TPDB_INVALID (not fetching), TPDB_BUSY (write lock), TPDB_IOERR,
 * TPDB_NOMEM. */
int tpdbFsmFetchBegin(struct raft_fsm *fsm,
                      const char *name,
                      uint32_t page_size,
                      uint64_t served,
                      unsigned lock_ms,
                      struct tpdb_fsm_fetch **out,
                      char *errmsg);

/* Stages n pages from `first` on (data: n * page size bytes, copied). */
int tpdbFsmFetchPages(struct tpdb_fsm_fetch *ff,
                      uint32_t first,
                      uint32_t n,
                      const uint8_t *data,
                      char *errmsg);

/* Stages the entries queued for the database since the restore and, once
 * every entry up to the served index has arrived, commits the stream and
 * them as one transaction (db_pages: the streamed size), makes it durable,
 * and lets apply go on; ff is then freed. TPDB_BUSY: entries up to the
 * served index have not all arrived yet, or (TPDB page files) a local
 * handle still holds the file: call again later (ff stays).
 * Other errors abort (ff freed): the database still waits for a stream. */
int tpdbFsmFetchFinish(struct tpdb_fsm_fetch *ff,
                       uint32_t db_pages,
                       char *errmsg);

/* Drops what was staged; frees ff. NULL is a no-op. */
void tpdbFsmFetchAbort(struct tpdb_fsm_fetch *ff);

/* Closes every database connection and frees the state. */
void tpdbFsmClose(struct raft_fsm *fsm);

/* This node just became leader: large transactions staged from other
 * origins can no longer end and are dropped. Loop thread. */
void tpdbFsmBecameLeader(struct raft_fsm *fsm);

/* The raft instance using this FSM, for the applied index (optional). */
void tpdbFsmSetRaft(struct raft_fsm *fsm, struct raft *raft);

/* Registers a proposal before it is handed to raft. */
void tpdbFsmProposalAdd(struct raft_fsm *fsm, struct tpdb_proposal *p);

/* Sets the outcome of a still-registered proposal and wakes its waiter
 * (no-op if it is no longer registered). Any thread. */
void tpdbFsmProposalFinish(struct raft_fsm *fsm,
                           uint64_t seq,
                           int rc,
                           const char *msg);

/* Waits until p leaves TPDB_BUSY or timeout_ms passes, then unregisters it.
 * Returns p->state, or TPDB_UNKNOWN on timeout. */
int tpdbFsmProposalWait(struct raft_fsm *fsm,
                        struct tpdb_proposal *p,
                        unsigned timeout_ms);

/* The proposing connection finished writing (or failed to write) a
 * transaction the FSM acknowledged for database `db`. */
void tpdbFsmOwnWriteDone(struct raft_fsm *fsm, const char *db, int written);

/* Whether the file of database `name` is another file (another inode, or
 * none) than when this function last saw it: deleted, or replaced, while
 * the node ran. Records the current one. 0 for a database the FSM does not
 * know and on the first call. Any thread. */
int tpdbFsmFileReplaced(struct raft_fsm *fsm, const char *name);

/* Whether the cluster's log or snapshot has mentioned database `name` (any
 * thread). */
int tpdbFsmKnows(struct raft_fsm *fsm, const char *name);

/* Whether the SQLite database file at path holds no data: absent, 0 bytes,
 * or one page with an empty schema (what PRAGMA journal_mode=WAL leaves in
 * a new file). */
int tpdbFsmFileHoldsNoData(const char *path);

/* Number of databases the FSM has applied to or knows (for status). */
unsigned tpdbFsmDbCount(struct raft_fsm *fsm);

/* Runs a PASSIVE checkpoint on every database the FSM holds open. */
void tpdbFsmCheckpointAll(struct raft_fsm *fsm);

/* Writes entries that were committed and applied for raft but queued
 * because their database's write lock was busy. Loop thread; call
 * periodically while tpdbFsmPending() > 0. */
void tpdbFsmDrain(struct raft_fsm *fsm);

/* Number of queued entries (any thread). */
unsigned tpdbFsmPending(struct raft_fsm *fsm);

/* Number of queued entries of database `name` (any thread). */
unsigned tpdbFsmPendingFor(struct raft_fsm *fsm, const char *name);

/* The highest index whose effects are written locally, given raft's last
 * applied index (any thread). */
uint64_t tpdbFsmWrittenIndex(struct raft_fsm *fsm, uint64_t applied);

/* One database's apply state, for status and metrics. */
struct tpdb_fsm_db_state {
    const char *name;       /* borrowed: valid during the callback only */
    uint64_t applied_index; /* its effects are written up to this index */
    uint64_t last_entry;    /* index of the last entry of it seen */
    unsigned queued;        /* its entries waiting to be written */
    int fetching;           /* it waits for a stream from a peer */
};

/* Calls fn(arg, state) for each database, under the FSM's mutex (fn must
 * not call back into the FSM), given raft's last applied index (any
 * thread). */
void tpdbFsmDbStates(struct raft_fsm *fsm,
                     uint64_t applied,
                     void (*fn)(void *arg,
                                const struct tpdb_fsm_db_state *state),
                     void *arg);

/* Counters for status and benchmarks. */
struct tpdb_fsm_stats {
    uint64_t applied_entries; /* entries whose frames the FSM wrote */
    uint64_t own_entries;     /* own entries acknowledged */
    uint64_t applied_pages;
    uint64_t snapshots;
    uint64_t restores;
    uint64_t fetches;        /* databases received as a stream */
    uint64_t served;         /* databases streamed to peers */
    uint64_t durable_points; /* large transactions made durable at END */
};
void tpdbFsmStats(struct raft_fsm *fsm, struct tpdb_fsm_stats *out);

#endif /* TPDB_FSM_H */
