/*
 * Holds a node's Raft log writes while its file system is nearly full.
 *
 * raft 0.15's raft_uv does not survive running out of space: a segment it
 * cannot preallocate fails the appends waiting for it and marks the backend
 * errored, and raft keeps the failed entries in its in-memory log without
 * ever writing them again, so a follower's stored log (and so its commit
 * index) stays short until it is restarted. This wraps the append, truncate
 * and snapshot_put of a raft_uv io: while the free space, less what was
 * passed on since it was measured, is below `reserve`, they wait in one
 * FIFO queue (in order, so raft_uv still sees them as raft issued them)
 * and go on, oldest first, as space allows. Raft sees a slow disk: the
 * entries are acknowledged once written, and the cluster commits
 * meanwhile with the other members.
 *
 * The free space is measured every TPDB_IOHOLD_POLL_MS with uv_fs_statfs
 * on libuv's thread pool, so the loop never waits for the file system.
 * Memory stays bounded: while more than `max_bytes` of entries wait, an
 * AppendEntries message that carries entries loses them on receipt (raft
 * sees a heartbeat, still learns the commit index and still hears from its
 * leader); the leader sends them again once this node asks for them.
 *
 * Usage: raft_uv_init(&h->io, ...), raft_init(r, &h->io, ...), then
 * tpdbIoHoldInstall. raft_close closes it (through io->close). Loop thread
 * only, except install.
 */
#ifndef TPDB_IOHOLD_H
#define TPDB_IOHOLD_H

#include <limits.h>
#include <stdint.h>

#include <raft.h>
#include <uv.h>

#include "base/base.h"

/* What raft_uv may need at once: two preallocated log segments (8 MiB
 * each, raft_uv's default; it prepares the next ones whenever the open one
 * fills) and 1 MiB for metadata, snapshots and renames. */
#define TPDB_IOHOLD_RESERVE ((uint64_t)17 << 20)

#define TPDB_IOHOLD_POLL_MS 100

/* Called on the loop thread after every measurement, with the bytes free
 * to unprivileged users. */
typedef void (*tpdb_iohold_space_cb)(void *arg, uint64_t free_bytes);

struct tpdb_iohold_op;

/* Embedded in its owner, whose raft uses &io. Fields other than io are
 * private. */
/* Least time between two warnings that writes wait or resume. */
#define TPDB_IOHOLD_WARN_MS 5000

struct tpdb_iohold {
    struct raft_io io;
    uv_loop_t *loop;
    char dir[PATH_MAX + 16];
    uint64_t reserve;
    uint64_t max_bytes;
    /* raft_uv's own functions and raft's receive callback. */
    void (*close)(struct raft_io *io, raft_io_close_cb cb);
    int (*start)(struct raft_io *io,
                 unsigned msecs,
                 raft_io_tick_cb tick,
                 raft_io_recv_cb recv);
    int (*append)(struct raft_io *io,
                  struct raft_io_append *req,
                  const struct raft_entry entries[],
                  unsigned n,
                  raft_io_append_cb cb);
    int (*truncate)(struct raft_io *io, raft_index index);
    int (*snapshot_put)(struct raft_io *io,
                        unsigned trailing,
                        struct raft_io_snapshot_put *req,
                        const struct raft_snapshot *snapshot,
                        raft_io_snapshot_put_cb cb);
    raft_io_recv_cb recv;
    tpdb_iohold_space_cb space_cb;
    void *space_arg;
    uv_timer_t timer;
    uv_fs_t statfs;
    int statfs_busy;
    int closing;
    uint64_t free_bytes;   /* as last measured */
    uint64_t passed;       /* bytes passed on since (or while) measured */
    uint64_t passed_total; /* ever passed on */
    uint64_t passed_mark;  /* passed_total when the measurement began */
    struct tpdb_iohold_op *head;
    struct tpdb_iohold_op *tail;
    uint64_t held_ops;
    uint64_t held_bytes;
    uint64_t holds;    /* times writes began to wait */
    uint64_t stripped; /* AppendEntries messages whose entries were dropped */
    /* The hold's warnings: when the last was logged and `holds` then, so
     * a disk hovering at the reserve logs once per TPDB_IOHOLD_WARN_MS. */
    uint64_t warned_at;
    uint64_t warned_holds;
};

struct tpdb_iohold_stats {
    uint64_t free_bytes; /* as last measured */
    uint64_t held_ops;   /* log writes waiting now */
    uint64_t held_bytes; /* their entries' bytes */
    uint64_t holds;      /* times writes began to wait */
    uint64_t stripped;   /* AppendEntries messages whose entries were dropped */
};

/* Wraps h->io (raft_uv, already given to raft_init) and measures dir's
 * free space once, synchronously (the loop does not run yet). max_bytes
 * bounds the entries held. Errors: TPDB_IOERR (dir cannot be measured). */
int tpdbIoHoldInstall(struct tpdb_iohold *h,
                      uv_loop_t *loop,
                      const char *dir,
                      uint64_t reserve,
                      uint64_t max_bytes,
                      char *errmsg);

/* Calls cb(arg, free) after every measurement (NULL: none). */
void tpdbIoHoldSetSpaceCb(struct tpdb_iohold *h,
                          tpdb_iohold_space_cb cb,
                          void *arg);

void tpdbIoHoldStats(const struct tpdb_iohold *h,
                     struct tpdb_iohold_stats *out);

#endif /* TPDB_IOHOLD_H */
