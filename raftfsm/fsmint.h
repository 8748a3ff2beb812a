/*
 * Internals of the state machine shared by fsm.c (databases, apply, the
 * queue of entries not yet written, proposals), fsm_snapshot.c (snapshot
 * records, durability, restore), fsm_stream.c (a database streamed to or
 * from a peer) and fsm_tpdbfile.c (the TPDB page file side of a stream).
 * Nothing outside raftfsm/fsm*.c includes it.
 *
 * Threads: apply, snapshot, restore and drain run on the Raft loop thread
 * (but TPDB page files' queued entries are written on the checkpointer
 * thread of an async FSM); snapshot_async on a worker; serving and fetching on
 * the node's stream threads; proposals on application threads. Fields marked
 * (mutex) are read and written under fsmState.mutex; (loop) only on the loop
 * thread; the rest are fixed once the database is created. Databases are never
 * freed before tpdbFsmClose.
 */
#ifndef TPDB_FSMINT_H
#define TPDB_FSMINT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "vfs/filepeek.h"

/* How long apply waits for a busy write lock before queueing: not at all,
 * the loop thread must not wait on locks; the drain timer retries. */
#define FSM_APPLY_LOCK_MS 0
/* The busy timeout of internal connections (fsmOpenInternal), in ms. */
#define FSM_INTERNAL_BUSY_MS 1000
/* WAL frames applied between two PASSIVE checkpoints. */
#define FSM_CHECKPOINT_FRAMES 1000
/* A queued entry that keeps failing (disk full, a damaged file) is retried
 * every few ms; its error is logged once per this many ms. */
#define FSM_ERRLOG_MS 5000

/* A committed entry waiting to be written (see fsmApply). */
struct fsmPending {
    struct tpdb_entry entry; /* owns its payload */
    uint64_t index;
    struct fsmPending *next;
};

struct fsmDb {
    char *name;
    char *path;
    sqlite3 *conn;  /* (loop) apply and checkpoints; idle between calls */
    int reopen;     /* (mutex) conn must be reopened: the file changed */
    uint64_t acked; /* (mutex) own transactions acknowledged */
    uint64_t done;  /* (mutex) ... and written (or given up) since */
    uint64_t lastAckIndex; /* (mutex) index of the last own entry acked */
    uint64_t lastAckEnd;   /* (mutex) ... if it ended a large transaction */
    /* (mutex) The last own whole-transaction entry as raft applied it, kept
     * on a node that is the only voter until its client wrote it: there is
     * no peer to fetch from should that local write fail, so the entry is
     * written again from this copy instead (tpdbFsmOwnWriteDone). */
    void *ownCopy;
    size_t ownCopyLen;
    uint64_t ownCopyIndex;
    uint64_t lastSeen; /* (mutex) index of the last entry of db applied */
    uint64_t written;  /* (mutex) every entry of db up to this is written */
    unsigned framesSinceCheckpoint; /* (loop) */
    int ckptWanted;    /* (mutex) the checkpointer should run one */
    sqlite3 *ckptConn; /* the checkpointer thread's own connection */
    int ckptReopen;    /* (mutex) ckptConn must be reopened */
    /* Identities (fsmFileId) of the file at `path` when conn and ckptConn
     * were opened, and when a local connection last opened it (the
     * database may be deleted or replaced while the node runs). */
    uint64_t connId;              /* (loop) */
    uint64_t ckptId;              /* checkpointer thread */
    uint64_t openedId;            /* (mutex) */
    struct tpdb_peek *openedFile; /* (mutex) the file of openedId, held */
    /* A large transaction being staged (fsm_chunk.c); loop thread. */
    struct tpdb_vfs_stage *stage;
    uint64_t stageOrigin;
    uint64_t stageFirst;     /* index of its CHUNK_BEGIN */
    uint64_t snapStageFirst; /* stageFirst when the snapshot began */
    /* A whole TPDB page file being built aside from the parts of a
     * TPDB_ENTRY_TPDBFILE_BEGIN sequence (fsm_chunk.c; stageOrigin is its
     * origin), owned by the thread that writes the file's entries (the
     * checkpointer thread of an async FSM, else the loop thread). */
    struct fsmTfFetch *tfStage;
    /* A commit of changes to a TPDB page file being staged from the parts
     * of a TPDB_ENTRY_TPDBFILE_DELTA sequence (.tpdb/NAME.delta), owned
     * as tfStage is; tfStageFirst, tfStageAbort and stageOrigin serve both
     * kinds (only one is staged at a time). */
    struct tpdb_file_stage *tfDelta;
    int tfStageDone;       /* every page is in (and synced): END switches */
    uint64_t tfStageFirst; /* (mutex) index of its BEGIN; 0: none */
    int tfStageAbort;      /* (mutex) drop it: this node became leader */
    /* (mutex) The END of a large transaction applied at this index: the
     * checkpointer thread makes the files durable and records it (0:
     * nothing asked). */
    uint64_t syncWanted;
    /* A TPDB page file (TPDB_ENTRY_TPDBFILE), not SQLite: set once, on the
     * loop thread, before any other thread looks at the database's queue
     * (fsmMarkTpdbFile). */
    int tpdbFile;
    /* TPDB page files of an async FSM: the checkpointer thread writes their
     * queue (fsmTfWriteHead), never the loop thread. */
    int tfWriting;      /* (mutex) the thread is writing the queue's head */
    int tfDropHead;     /* (mutex) the queue was cleared meanwhile */
    uint64_t tfRetryAt; /* (mutex) a handle held the file: not before */
    /* (mutex) the last apply failure logged (fsmLogApplyError): which
     * entry, when, and how often it failed again since, unlogged */
    uint64_t errIndex;
    uint64_t errLoggedAt;
    unsigned errRepeats;
    int fetching;         /* (mutex) waits for a stream from a peer (restore) */
    uint64_t fetchMin;    /* (mutex) the stream must hold this index */
    uint64_t durable;     /* (mutex) on disk at least as of this index */
    int inSnapshot;       /* (loop) listed in the snapshot being taken */
    uint64_t snapAcked;   /* (loop) acked when the snapshot was started */
    unsigned nQueued;     /* (mutex) entries in the queue */
    uint64_t queuedBytes; /* (mutex) their page bytes */
    int fetchActive;      /* (mutex) a stream is being received */
    int snapSkip;         /* (loop) fetching when the snapshot began */
    struct fsmPending *pendingHead; /* (mutex) */
    struct fsmPending *pendingTail; /* (mutex) */
    struct fsmDb *next;
};

struct fsmState {
    char *dataDir;
    char *metaDir;
    uint64_t origin;
    int async; /* snapshots run in snapshot_async on a worker */
    struct raft *raft;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    pthread_mutex_t durableMutex;    /* orders writers of the durable file */
    struct tpdb_proposal *proposals; /* (mutex) */
    struct fsmDb *dbs;               /* (mutex) for lookups off the loop */
    unsigned nPending;               /* (mutex) queued in every database */
    uint64_t lastApplied; /* (mutex) index of the last entry applied */
    /* (mutex) raft's last_stored when the last entry was applied: the
     * local log on disk holds every entry up to it. */
    uint64_t lastStored;
    struct tpdb_fsm_stats stats; /* (mutex) */
    struct tpdb_fsm_fetcher fetcher;
    /* Bound of each database's queue (tpdbFsmSetQueueLimit). */
    unsigned queueMax;
    uint64_t queueBytesMax;
    /* The log's byte budget (tpdbFsmSetLogBudget); loop thread. */
    uint64_t budget;
    uint64_t logBytes; /* applied since the last snapshot */
    unsigned threshold;
    unsigned trailing;
    /* The checkpointer thread (async FSMs only, fsm_checkpoint.c). */
    pthread_t ckptThread;
    int ckptRunning;
    int ckptStop;            /* (mutex) */
    pthread_cond_t ckptCond; /* with mutex: work or stop */
    /* The snapshot being taken (loop thread, then the worker). */
    uint64_t snapIndex;
    unsigned nSnapDbs;
};

/* Joins dir and name into a tpdb_malloc'd string; NULL when out of
 * memory. */
char *fsmJoinPath(const char *dir, const char *name);

/* Whether the file at path starts with the n (<= 32) bytes of magic. */
int fsmFileStartsWith(const char *path, const char *magic, size_t n);

/* Fills txn with every page of a whole-database image (pages pages of
 * page_size bytes, borrowed); txn->pages is tpdb_malloc'd (caller frees).
 * Errors: TPDB_NOMEM. */
int fsmImageTxn(struct tpdb_txn *txn,
                const uint8_t *image,
                uint32_t page_size,
                uint32_t pages);

/* Finds database `name` (any thread, takes the mutex); NULL if unknown. */
struct fsmDb *fsmDbFind(struct fsmState *s, const char *name);

/* Finds or creates (loop thread) the state of database `name`; *created
 * says whether it is new to this node. Errors: TPDB_CORRUPT (unsafe
 * name), TPDB_NOMEM, TPDB_IOERR (manifest). */
int fsmDbGet(struct fsmState *s,
             const char *name,
             struct fsmDb **out,
             int *created,
             char *errmsg);

/* A database new to this node whose file holds data the cluster does not
 * know is moved aside (NAME.orphan-TIME), never overwritten. */
int fsmMoveAsideIfData(struct fsmDb *db, char *errmsg);

/* Renames db's main file, WAL and WAL-index to NAME.<why>-TIME (never
 * deletes them) and logs it. Errors: TPDB_IOERR. */
int fsmMoveAside(struct fsmDb *db, const char *why, char *errmsg);

/* Opens an internal connection to path through the tpdb VFS. */
int fsmOpenInternal(const char *path, sqlite3 **out, char *errmsg);

/* Makes the empty or missing file behind conn (an internal connection) a
 * WAL-mode SQLite database of page_size. Errors: TPDB_IOERR. */
int fsmCreateWalDb(sqlite3 *conn,
                   const char *path,
                   uint32_t page_size,
                   char *errmsg);

/* Writes a decoded entry of db: a transaction, an image, a TPDB file
 * commit, or a part of a large transaction (staged until its end). TPDB_BUSY
 * and other errors: not written, queue it. Loop thread. */
int fsmApplyEntry(struct fsmState *s,
                  struct fsmDb *db,
                  const struct tpdb_entry *e,
                  uint64_t index,
                  unsigned lock_ms,
                  char *errmsg);

/* Drops every staged large transaction (this node became leader, or
 * closes): they can no longer end. Loop thread. */
void fsmStagesAbort(struct fsmState *s);

/* The applier connection of db (loop thread), opened or reopened (after a
 * stream replaced the file) as needed. */
int fsmApplierConn(struct fsmState *s, struct fsmDb *db, char *errmsg);

/* The identity of the file at path (device and inode mixed into one
 * number), 0 if there is none. A connection whose file's identity changed
 * holds a deleted or replaced file and must be reopened. */
uint64_t fsmFileId(const char *path);

/* Bookkeeping after an entry of db was written: counters, the written
 * index, a checkpoint every FSM_CHECKPOINT_FRAMES frames. Loop thread. */
void fsmAfterWrite(struct fsmState *s,
                   struct fsmDb *db,
                   const struct tpdb_txn *txn,
                   uint64_t index);

/* Writes txn to db through its applier connection (or the TPDB file
 * library), waiting up to lock_ms for the write lock; `index` is the
 * entry's (0: none). Loop thread. */
int fsmApplyTxn(struct fsmState *s,
                struct fsmDb *db,
                const struct tpdb_txn *txn,
                uint64_t index,
                unsigned lock_ms,
                char *errmsg);

/* Drops every queued entry of db (mutex taken inside); an entry the
 * checkpointer thread is writing is dropped by that thread when done. */
void fsmPendingClear(struct fsmState *s, struct fsmDb *db);

/* Marks db as a TPDB page file (a no-op if it is one already). Loop
 * thread. */
void fsmMarkTpdbFile(struct fsmState *s, struct fsmDb *db);

/* Whether the checkpointer thread can write db's queue now: a TPDB page
 * file with entries, not waiting for a stream, not held by a handle
 * recently (now: tpdbNowMs()). Mutex held. */
int fsmTfReady(const struct fsmDb *db, uint64_t now);

/* Writes the head of db's queue (a TPDB page file; db->tfWriting set by
 * the caller, under the mutex) on the checkpointer thread, then pops it,
 * or on TPDB_BUSY sets a retry time. Called without the mutex. */
void fsmTfWriteHead(struct fsmState *s, struct fsmDb *db);

/* Records that db's entries up to index are written (any thread). */
void fsmMarkWritten(struct fsmState *s, struct fsmDb *db, uint64_t index);

/* fsyncs the data directory and db's WAL and main file, then records db as
 * durable at index (unless it waits for a stream) in the durable file.
 * Used after the END of a large transaction, whose snapshots during the
 * sequence could only record the database as durable before its BEGIN.
 * Not on the loop thread of an async FSM (it syncs). */
int fsmMakeDbDurable(struct fsmState *s,
                     struct fsmDb *db,
                     uint64_t index,
                     char *errmsg);

/* Asks for fsmMakeDbDurable(db, index): on the checkpointer thread if it
 * runs, else here. Loop thread. */
void fsmDurableRequest(struct fsmState *s, struct fsmDb *db, uint64_t index);

/* Writes the durable file from every database's `durable` index. */
int fsmDurableSave(struct fsmState *s, char *errmsg);

/* Loads the durable file into the databases (at init). */
int fsmDurableLoad(struct fsmState *s, char *errmsg);

/* Checkpoints (fsm_checkpoint.c). Start: a thread that runs the PASSIVE
 * checkpoints of followers' databases off the loop (its errors are only
 * logged). Request (loop thread): one checkpoint of db, on that thread if
 * it runs, else here. Stop: joins the thread and closes its connections. */
int fsmCheckpointerStart(struct fsmState *s, char *errmsg);
void fsmCheckpointRequest(struct fsmState *s, struct fsmDb *db);
void fsmCheckpointerStop(struct fsmState *s);
/* Wakes the checkpointer thread: a TPDB page file's queue has work. */
void fsmCheckpointWake(struct fsmState *s);

/* The snapshot and restore callbacks (fsm_snapshot.c). */
int fsmSnapshot(struct raft_fsm *fsm,
                struct raft_buffer *bufs[],
                unsigned *n_bufs);
int fsmSnapshotAsync(struct raft_fsm *fsm,
                     struct raft_buffer *bufs[],
                     unsigned *n_bufs);
int fsmSnapshotFinalize(struct raft_fsm *fsm,
                        struct raft_buffer *bufs[],
                        unsigned *n_bufs);
int fsmRestore(struct raft_fsm *fsm, struct raft_buffer *buf);

/* Counts an applied entry of len bytes against the log's budget and, past
 * it, makes raft take a snapshot at once (loop thread). */
void fsmLogCharge(struct fsmState *s, size_t len);

/* Frees what a snapshot in progress holds (loop thread). */
void fsmSnapshotRelease(struct fsmState *s);

/* TPDB page files in a stream (fsm_tpdbfile.c). */
struct tpdb_file;
struct fsmTfFetch;

/* Serving: opens db's file read-only (its shared flock pins the state) and
 * checks, as the SQLite pin does, that every entry of db up to min is in
 * it; *served is the applied index. On TPDB_OK the caller owns *out (close
 * with tpdb_file_close). TPDB_BUSY: a writer holds the file, or it is not
 * written up to min yet (retry); TPDB_NOTFOUND, TPDB_CORRUPT, TPDB_IOERR. */
int fsmTfServeOpen(struct fsmState *s,
                   struct fsmDb *db,
                   uint64_t min,
                   struct tpdb_file **out,
                   uint64_t *served,
                   char *errmsg);

/* Receiving: begins a temp file for db in the meta directory (owned by
 * *out until fsmTfFetchAbort). Errors: TPDB_IOERR, TPDB_NOMEM. */
int fsmTfFetchBegin(struct fsmState *s,
                    struct fsmDb *db,
                    struct fsmTfFetch **out,
                    char *errmsg);

/* The same for the file a TPDB_ENTRY_TPDBFILE_BEGIN sequence builds
 * (.tpdb/NAME.stage, apart from a stream's). */
int fsmTfStageBegin(struct fsmState *s,
                    struct fsmDb *db,
                    struct fsmTfFetch **out,
                    char *errmsg);

/* Writes n mapped pages from `first` (in order, from 1) to the temp file.
 * Errors: TPDB_PROTO (order), TPDB_CORRUPT (page 1 not a TPDB header),
 * TPDB_IOERR, TPDB_FULL. */
int fsmTfFetchPages(struct fsmTfFetch *tf,
                    uint32_t first,
                    uint32_t n,
                    const uint8_t *data,
                    char *errmsg);

/* Once the stream of db_pages pages is in: checks and syncs the temp file,
 * then applies txn (a queued entry; NULL: none) to it. Errors: TPDB_PROTO
 * (stream incomplete), tpdb_file_apply's. */
int fsmTfFetchStage(struct fsmTfFetch *tf,
                    uint32_t db_pages,
                    const struct tpdb_txn *txn,
                    char *errmsg);

/* A queued chunk sequence (a whole file, or a commit of changes, in
 * parts) is staged apart from the temp file, in .tpdb/NAME.fetch.parts
 * (tpdb_file_stage_*; *out the caller's), and applied to it at its END by
 * fsmTfFetchStageParts, once the stream of db_pages pages is in. Errors:
 * those of tpdb_file_stage_open, of fsmTfFetchStage and of
 * tpdb_file_stage_apply. */
struct tpdb_file_stage;
int fsmTfFetchPartsOpen(struct fsmTfFetch *tf,
                        struct tpdb_file_stage **out,
                        char *errmsg);
int fsmTfFetchStageParts(struct fsmTfFetch *tf,
                         uint32_t db_pages,
                         struct tpdb_file_stage *st,
                         char *errmsg);

/* Switches readers to the temp file: checks it, takes the current file's
 * exclusive flock (waiting up to lock_ms; a corrupt file is moved aside)
 * and renames the temp file over it. TPDB_BUSY: still held, retry; other
 * errors leave the current file as it was. */
int fsmTfFetchCommit(struct fsmTfFetch *tf, unsigned lock_ms, char *errmsg);

/* Drops the temp file (unless committed) and frees tf; NULL is a no-op. */
void fsmTfFetchAbort(struct fsmTfFetch *tf);

/* Pages of the TPDB file at path in the replication mapping, from its
 * header alone (0: no file, or not a TPDB file). */
uint32_t fsmTfMappedPages(const char *path);

/* Whether the TPDB file at path opens (header, WAL and catalog readable). */
int fsmTfUsable(const char *path);

#endif /* TPDB_FSMINT_H */
