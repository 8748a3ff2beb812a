/*
 * Raft transport: raft's own libuv TCP transport (raft_uv_tcp), wrapped so
 * that TCP_NODELAY is set on every stream handed to raft, accepted or
 * connected. raft_uv_tcp never sets it, and Nagle's algorithm then holds
 * small AppendEntries messages back for tens of milliseconds.
 *
 * Usage: tpdbTransportInit(&t, loop), raft_uv_init(&io, loop, dir, &t.base),
 * raft_init(...). Shutdown: raft_close, then in its callback raft_uv_close,
 * then tpdbTransportClose. Every function runs on the loop's thread.
 */
#ifndef TPDB_TRANSPORT_H
#define TPDB_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>

#include "vfs/base.h"

/* Called with every stream right after TCP_NODELAY was set on it and before
 * raft gets it. The stream belongs to raft: only inspect it. */
typedef void (*tpdb_transport_stream_cb)(void *arg, struct uv_stream_s *stream);

/* A transport. The caller owns the memory and keeps it alive, unmoved, from
 * tpdbTransportInit until tpdbTransportClose. Fields after `base` are
 * private. */
struct tpdb_transport {
    /* The interface to give raft_uv_init. raft_uv_init sets base.data and
     * raft owns it from then on; the other fields are ours. */
    struct raft_uv_transport base;
    struct raft_uv_transport tcp;        /* the wrapped raft_uv_tcp */
    raft_uv_accept_cb accept_cb;         /* raft's, from listen */
    raft_uv_transport_close_cb close_cb; /* raft's, from close */
    unsigned long n_nodelay;             /* streams given TCP_NODELAY */
    tpdb_transport_stream_cb stream_cb;  /* optional observer */
    void *stream_cb_arg;
};

/* Initialises `t` over `loop` (which must outlive it). On TPDB_OK t->base is
 * ready for raft_uv_init and tpdbTransportClose must be called eventually.
 * Errors: TPDB_NOMEM, TPDB_RAFT (raft's message in errmsg). */
int tpdbTransportInit(struct tpdb_transport *t,
                      struct uv_loop_s *loop,
                      char *errmsg);

/* Makes the listening socket bind to `address` ("IPv4:port", the port equal
 * to the one given to raft_init) instead of the node's advertised address,
 * e.g. "0.0.0.0:9001". `address` is copied. Call after tpdbTransportInit and
 * before raft_init. Errors: TPDB_INVALID (unparsable), TPDB_NOMEM. */
int tpdbTransportSetBindAddress(struct tpdb_transport *t,
                                const char *address,
                                char *errmsg);

/* Registers an observer called with every stream handed to raft (for tests
 * and diagnostics); cb NULL removes it. */
void tpdbTransportSetStreamCb(struct tpdb_transport *t,
                              tpdb_transport_stream_cb cb,
                              void *arg);

/* Number of streams on which TCP_NODELAY was set so far. */
unsigned long tpdbTransportNodelayCount(const struct tpdb_transport *t);

/* Releases what tpdbTransportInit allocated. Call only once raft has closed
 * the transport: after raft_close's callback and raft_uv_close (or, if raft
 * never used it, at any time). Mirrors raft_uv_tcp_close. */
void tpdbTransportClose(struct tpdb_transport *t);

#endif /* TPDB_TRANSPORT_H */
