/*
 * The replicated state machine: applies committed entries to the databases
 * of one data directory through the tpdb VFS, takes and restores snapshots,
 * and recognises the entries this node proposed itself (their frames are
 * written by the proposing SQLite connection, not by the FSM).
 *
 * Threads: apply/snapshot/restore run on the Raft loop thread. The proposal
 * table and the in-flight counters are shared with application threads and
 * guarded by the FSM's mutex.
 */
#ifndef TPDB_FSM_H
#define TPDB_FSM_H

#include <pthread.h>
#include <raft.h>
#include <stdint.h>

#include "vfs/base.h"

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
 * of replicated database names (both copied). `origin` identifies this node
 * instance in entries it proposes. On success fills *fsm (version 2,
 * fsm->data = the state) and returns TPDB_OK. Errors: TPDB_NOMEM. */
int tpdbFsmInit(struct raft_fsm *fsm,
                const char *data_dir,
                const char *meta_dir,
                uint64_t origin,
                char *errmsg);

/* Closes every database connection and frees the state. */
void tpdbFsmClose(struct raft_fsm *fsm);

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

/* Whether the cluster's log or snapshot has mentioned database `name` (any
 * thread). */
int tpdbFsmKnows(struct raft_fsm *fsm, const char *name);

/* Whether the SQLite database file at path holds no data: absent, 0 bytes,
 * or one page with an empty schema (what PRAGMA journal_mode=WAL leaves in
 * a new file). */
int tpdbFsmFileHoldsNoData(const char *path);

/* Number of databases the FSM has applied to or knows (for status). */
unsigned tpdbFsmDbCount(struct raft_fsm *fsm);

/* Empties every replicated database listed in the data directory's
 * manifest (main file and WAL truncated in place, WAL-index removed), so
 * that snapshot restore and log replay rebuild them. Called before
 * raft_start. Errors: TPDB_IOERR. */
int tpdbFsmResetDatabases(const char *data_dir,
                          const char *meta_dir,
                          char *errmsg);

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

/* Counters for status and benchmarks. */
struct tpdb_fsm_stats {
    uint64_t applied_entries; /* entries whose frames the FSM wrote */
    uint64_t own_entries;     /* own entries acknowledged */
    uint64_t applied_pages;
    uint64_t snapshots;
    uint64_t restores;
};
void tpdbFsmStats(struct raft_fsm *fsm, struct tpdb_fsm_stats *out);

#endif /* TPDB_FSM_H */
