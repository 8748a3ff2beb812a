/*
 * Raft log writes held while the disk is nearly full (see iohold.h).
 */
#include "raftfsm/iohold.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

enum { OP_APPEND = 1, OP_TRUNCATE, OP_SNAPSHOT };

/* One held call, in the order raft made it. */
struct tpdb_iohold_op {
    int kind;
    uint64_t bytes;
    /* OP_APPEND */
    struct raft_io_append *req;
    const struct raft_entry *entries;
    unsigned n;
    raft_io_append_cb cb;
    /* OP_TRUNCATE */
    raft_index index;
    /* OP_SNAPSHOT */
    unsigned trailing;
    struct raft_io_snapshot_put *put;
    const struct raft_snapshot *snapshot;
    raft_io_snapshot_put_cb put_cb;
    struct tpdb_iohold_op *next;
};

static struct tpdb_iohold *holdOf(struct raft_io *io)
{
    return (struct tpdb_iohold *)((char *)io -
                                  offsetof(struct tpdb_iohold, io));
}

/* Bytes on disk for n entries: data plus raft_uv's per-entry header. */
static uint64_t entriesBytes(const struct raft_entry *entries, unsigned n)
{
    uint64_t bytes = 0;
    for (unsigned i = 0; i < n; i++) {
        bytes += entries[i].buf.len + 64;
    }
    return bytes;
}

static uint64_t snapshotBytes(const struct raft_snapshot *snapshot)
{
    uint64_t bytes = 4096;
    for (unsigned i = 0; i < snapshot->n_bufs; i++) {
        bytes += snapshot->bufs[i].len;
    }
    return bytes;
}

/* Whether `bytes` more may go to raft_uv and still leave the reserve. */
static int roomFor(const struct tpdb_iohold *h, uint64_t bytes)
{
    uint64_t used = h->passed + h->reserve;
    return h->free_bytes >= used && h->free_bytes - used >= bytes;
}

static void counted(struct tpdb_iohold *h, uint64_t bytes)
{
    h->passed += bytes;
    h->passed_total += bytes;
}

/* Hands a held call to raft_uv; returns its result. */
static int passOp(struct tpdb_iohold *h, struct tpdb_iohold_op *op)
{
    counted(h, op->bytes);
    switch (op->kind) {
        case OP_APPEND:
            return h->append(&h->io, op->req, op->entries, op->n, op->cb);
        case OP_TRUNCATE:
            return h->truncate(&h->io, op->index);
        default:
            return h->snapshot_put(&h->io, op->trailing, op->put, op->snapshot,
                                   op->put_cb);
    }
}

/* Reports a held call that cannot be made (rv: raft's error code). */
static void failOp(struct tpdb_iohold *h, struct tpdb_iohold_op *op, int rv)
{
    switch (op->kind) {
        case OP_APPEND:
            op->cb(op->req, rv);
            break;
        case OP_TRUNCATE:
            if (rv != RAFT_CANCELED) {
                tpdbLog(TPDB_LOG_ERROR,
                        "raft log in %s: held truncate at %llu failed: %s",
                        h->dir, (unsigned long long)op->index,
                        raft_strerror(rv));
            }
            break;
        default:
            op->put_cb(op->put, rv);
            break;
    }
}

static struct tpdb_iohold_op *popOp(struct tpdb_iohold *h)
{
    struct tpdb_iohold_op *op = h->head;
    h->head = op->next;
    if (h->head == NULL) {
        h->tail = NULL;
    }
    h->held_ops--;
    h->held_bytes -= op->kind == OP_APPEND ? op->bytes : 0;
    return op;
}

static void pushOp(struct tpdb_iohold *h, struct tpdb_iohold_op *op)
{
    if (h->head == NULL) {
        h->holds++;
        uint64_t now = uv_now(h->loop);
        if (h->warned_at == 0 || now >= h->warned_at + TPDB_IOHOLD_WARN_MS) {
            tpdbLog(TPDB_LOG_WARN,
                    "raft log in %s: %llu MiB free, less than the %llu MiB "
                    "its writes need: holding them until space is freed "
                    "(hold %llu, %llu since the last report)",
                    h->dir, (unsigned long long)(h->free_bytes >> 20),
                    (unsigned long long)(h->reserve >> 20),
                    (unsigned long long)h->holds,
                    (unsigned long long)(h->holds - h->warned_holds));
            h->warned_at = now;
            h->warned_holds = h->holds;
        }
        h->head = op;
    } else {
        h->tail->next = op;
    }
    h->tail = op;
    h->held_ops++;
    h->held_bytes += op->kind == OP_APPEND ? op->bytes : 0;
}

/* Passes on held calls, oldest first, while the space allows. */
static void release(struct tpdb_iohold *h)
{
    int had = h->head != NULL;
    while (h->head != NULL && !h->closing && roomFor(h, h->head->bytes)) {
        struct tpdb_iohold_op *op = popOp(h);
        int rv = passOp(h, op);
        if (rv != 0) {
            failOp(h, op, rv);
        }
        tpdb_free(op);
    }
    if (had && h->head == NULL && !h->closing && h->warned_holds == h->holds) {
        tpdbLog(TPDB_LOG_WARN,
                "raft log in %s: %llu MiB free again: held writes resumed",
                h->dir, (unsigned long long)(h->free_bytes >> 20));
    }
}

/* A held call of kind over bytes of raft log, the rest left zero. */
static struct tpdb_iohold_op *newOp(int kind, uint64_t bytes)
{
    struct tpdb_iohold_op *op = tpdb_calloc(1, sizeof *op);
    if (op != NULL) {
        op->kind = kind;
        op->bytes = bytes;
    }
    return op;
}

static int appendHold(struct raft_io *io,
                      struct raft_io_append *req,
                      const struct raft_entry entries[],
                      unsigned n,
                      raft_io_append_cb cb)
{
    struct tpdb_iohold *h = holdOf(io);
    uint64_t bytes = entriesBytes(entries, n);
    if (h->head == NULL && roomFor(h, bytes)) {
        counted(h, bytes);
        return h->append(io, req, entries, n, cb);
    }
    struct tpdb_iohold_op *op = newOp(OP_APPEND, bytes);
    if (op == NULL) {
        return RAFT_NOMEM;
    }
    op->req = req;
    op->entries = entries;
    op->n = n;
    op->cb = cb;
    req->cb = cb;
    pushOp(h, op);
    return 0;
}

static int truncateHold(struct raft_io *io, raft_index index)
{
    struct tpdb_iohold *h = holdOf(io);
    if (h->head == NULL && roomFor(h, 0)) {
        return h->truncate(io, index);
    }
    struct tpdb_iohold_op *op = newOp(OP_TRUNCATE, 0);
    if (op == NULL) {
        return RAFT_NOMEM;
    }
    op->index = index;
    pushOp(h, op);
    return 0;
}

static int snapshotPutHold(struct raft_io *io,
                           unsigned trailing,
                           struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot,
                           raft_io_snapshot_put_cb cb)
{
    struct tpdb_iohold *h = holdOf(io);
    uint64_t bytes = snapshotBytes(snapshot);
    if (h->head == NULL && roomFor(h, bytes)) {
        counted(h, bytes);
        return h->snapshot_put(io, trailing, req, snapshot, cb);
    }
    struct tpdb_iohold_op *op = newOp(OP_SNAPSHOT, bytes);
    if (op == NULL) {
        return RAFT_NOMEM;
    }
    op->trailing = trailing;
    op->put = req;
    op->snapshot = snapshot;
    op->put_cb = cb;
    req->cb = cb;
    pushOp(h, op);
    return 0;
}

/* Frees the entries of a received AppendEntries as raft would. */
static void dropEntries(struct raft_append_entries *ae)
{
    void *batch = NULL;
    for (unsigned i = 0; i < ae->n_entries; i++) {
        void *b = ae->entries[i].batch;
        if (b == NULL) {
            raft_free(ae->entries[i].buf.base);
        } else if (b != batch) {
            raft_free(b);
            batch = b;
        }
    }
    raft_free(ae->entries);
    ae->entries = NULL;
    ae->n_entries = 0;
}

static void recvHold(struct raft_io *io, struct raft_message *msg)
{
    struct tpdb_iohold *h = holdOf(io);
    if (msg->type == RAFT_IO_APPEND_ENTRIES &&
        msg->append_entries.n_entries > 0 && h->held_bytes > h->max_bytes) {
        dropEntries(&msg->append_entries);
        h->stripped++;
    }
    h->recv(io, msg);
}

static void statfsCb(uv_fs_t *req)
{
    struct tpdb_iohold *h = req->data;
    h->statfs_busy = 0;
    if (req->result == 0) {
        const uv_statfs_t *st = req->ptr;
        h->free_bytes = (uint64_t)st->f_bavail * st->f_bsize;
        h->passed = h->passed_total - h->passed_mark;
    }
    uv_fs_req_cleanup(req);
    if (h->closing) {
        return;
    }
    release(h);
    if (h->space_cb != NULL) {
        h->space_cb(h->space_arg, h->free_bytes);
    }
}

static void timerCb(uv_timer_t *timer)
{
    struct tpdb_iohold *h = timer->data;
    if (h->statfs_busy || h->closing) {
        return;
    }
    h->statfs.data = h;
    if (uv_fs_statfs(h->loop, &h->statfs, h->dir, statfsCb) == 0) {
        h->statfs_busy = 1;
        h->passed_mark = h->passed_total;
    }
}

static int startHold(struct raft_io *io,
                     unsigned msecs,
                     raft_io_tick_cb tick,
                     raft_io_recv_cb recv)
{
    struct tpdb_iohold *h = holdOf(io);
    h->recv = recv;
    int rv = h->start(io, msecs, tick, recvHold);
    if (rv == 0) {
        uv_timer_start(&h->timer, timerCb, TPDB_IOHOLD_POLL_MS,
                       TPDB_IOHOLD_POLL_MS);
    }
    return rv;
}

/* Raft closes its io: held calls are cancelled as raft_uv cancels its
 * pending ones, then raft_uv closes. A measurement under way finishes on
 * the thread pool and its callback only marks it done. */
static void closeHold(struct raft_io *io, raft_io_close_cb cb)
{
    struct tpdb_iohold *h = holdOf(io);
    h->closing = 1;
    while (h->head != NULL) {
        struct tpdb_iohold_op *op = popOp(h);
        failOp(h, op, RAFT_CANCELED);
        tpdb_free(op);
    }
    uv_close((uv_handle_t *)&h->timer, NULL);
    h->close(io, cb);
}

int tpdbIoHoldInstall(struct tpdb_iohold *h,
                      uv_loop_t *loop,
                      const char *dir,
                      uint64_t reserve,
                      uint64_t max_bytes,
                      char *errmsg)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) {
        tpdbErrf(errmsg, "free space of %s: %s", dir, strerror(errno));
        return TPDB_IOERR;
    }
    h->loop = loop;
    snprintf(h->dir, sizeof h->dir, "%s", dir);
    h->reserve = reserve;
    h->max_bytes = max_bytes;
    h->free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    h->passed = h->passed_total = h->passed_mark = 0;
    h->head = h->tail = NULL;
    h->held_ops = h->held_bytes = h->holds = h->stripped = 0;
    h->statfs_busy = 0;
    h->closing = 0;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->close = h->io.close;
    h->start = h->io.start;
    h->append = h->io.append;
    h->truncate = h->io.truncate;
    h->snapshot_put = h->io.snapshot_put;
    h->io.close = closeHold;
    h->io.start = startHold;
    h->io.append = appendHold;
    h->io.truncate = truncateHold;
    h->io.snapshot_put = snapshotPutHold;
    return TPDB_OK;
}

void tpdbIoHoldSetSpaceCb(struct tpdb_iohold *h,
                          tpdb_iohold_space_cb cb,
                          void *arg)
{
    h->space_cb = cb;
    h->space_arg = arg;
}

void tpdbIoHoldStats(const struct tpdb_iohold *h, struct tpdb_iohold_stats *out)
{
    out->free_bytes = h->free_bytes;
    out->held_ops = h->held_ops;
    out->held_bytes = h->held_bytes;
    out->holds = h->holds;
    out->stripped = h->stripped;
}
