/*
 * Raft transport wrapping raft_uv_tcp to set TCP_NODELAY. Every method of
 * t->base forwards to t->tcp; the accept and connect callbacks are
 * intercepted to set the option before raft sees the stream. t->tcp.data
 * points back at the wrapper (raft_uv_tcp keeps `data` across its init),
 * while t->base.data belongs to raft's uv backend.
 */
#include "raftfsm/transport.h"

#include <stdio.h>
#include <string.h>

/* One connect request in flight: raft's request plus the one we give to
 * raft_uv_tcp. */
struct connectReq {
    struct raft_uv_connect inner;  /* handed to raft_uv_tcp */
    struct raft_uv_connect *outer; /* raft's request */
    struct tpdb_transport *t;
    raft_id id;
};

static void copyErr(struct tpdb_transport *t)
{
    memcpy(t->base.errmsg, t->tcp.errmsg, sizeof t->base.errmsg);
}

/* Sets TCP_NODELAY on a stream about to be handed to raft. A failure only
 * costs latency, so the stream is handed over anyway. */
static void setNodelay(struct tpdb_transport *t,
                       struct uv_stream_s *stream,
                       const char *what,
                       raft_id id)
{
    int rv = UV_EINVAL;
    if (stream->type == UV_TCP) {
        rv = uv_tcp_nodelay((struct uv_tcp_s *)stream, 1);
    }
    if (rv != 0) {
        tpdbLog(TPDB_LOG_WARN,
                "transport: %s stream of server %llu: "
                "TCP_NODELAY: %s",
                what, (unsigned long long)id, uv_strerror(rv));
        return;
    }
    t->n_nodelay++;
    if (t->stream_cb != NULL) {
        t->stream_cb(t->stream_cb_arg, stream);
    }
}

static int transportInit(struct raft_uv_transport *base,
                         raft_id id,
                         const char *address)
{
    struct tpdb_transport *t = base->impl;
    int rv = t->tcp.init(&t->tcp, id, address);
    if (rv != 0) {
        copyErr(t);
    }
    return rv;
}

static void acceptCb(struct raft_uv_transport *tcp,
                     raft_id id,
                     const char *address,
                     struct uv_stream_s *stream)
{
    struct tpdb_transport *t = tcp->data;
    /* Peer authentication (e.g. a TLS handshake or a shared-secret challenge
     * on the stream, before raft reads from it) would go here and in
     * connectCb; raft_uv_tcp's handshake only carries the claimed id. */
    setNodelay(t, stream, "accepted", id);
    t->accept_cb(&t->base, id, address, stream);
}

static int transportListen(struct raft_uv_transport *base, raft_uv_accept_cb cb)
{
    struct tpdb_transport *t = base->impl;
    int rv;
    t->accept_cb = cb;
    rv = t->tcp.listen(&t->tcp, acceptCb);
    if (rv != 0) {
        copyErr(t);
    }
    return rv;
}

/* raft_uv_tcp finished a connect: on success set the option, then pass the
 * outcome (including RAFT_CANCELED when the transport closes) to raft. On
 * failure the transport may already be closing, so `t` is not touched. */
static void connectCb(struct raft_uv_connect *inner,
                      struct uv_stream_s *stream,
                      int status)
{
    struct connectReq *r = inner->data;
    struct raft_uv_connect *outer = r->outer;
    if (status == 0) {
        setNodelay(r->t, stream, "connected", r->id);
    }
    tpdb_free(r);
    outer->cb(outer, stream, status);
}

static int transportConnect(struct raft_uv_transport *base,
                            struct raft_uv_connect *req,
                            raft_id id,
                            const char *address,
                            raft_uv_connect_cb cb)
{
    struct tpdb_transport *t = base->impl;
    struct connectReq *r = tpdb_malloc(sizeof *r);
    int rv;
    if (r == NULL) {
        snprintf(base->errmsg, sizeof base->errmsg, "out of memory");
        return RAFT_NOMEM;
    }
    req->cb = cb;
    r->inner.data = r;
    r->outer = req;
    r->t = t;
    r->id = id;
    rv = t->tcp.connect(&t->tcp, &r->inner, id, address, connectCb);
    if (rv != 0) {
        /* raft_uv_tcp does not call back when connect fails at once. */
        copyErr(t);
        tpdb_free(r);
    }
    return rv;
}

static void closeCb(struct raft_uv_transport *tcp)
{
    struct tpdb_transport *t = tcp->data;
    if (t->close_cb != NULL) {
        t->close_cb(&t->base);
    }
}

static void transportClose(struct raft_uv_transport *base,
                           raft_uv_transport_close_cb cb)
{
    struct tpdb_transport *t = base->impl;
    t->close_cb = cb;
    t->tcp.close(&t->tcp, closeCb);
}

int tpdbTransportInit(struct tpdb_transport *t,
                      struct uv_loop_s *loop,
                      char *errmsg)
{
    int rv;
    memset(t, 0, sizeof *t);
    t->tcp.data = t;
    rv = raft_uv_tcp_init(&t->tcp, loop);
    if (rv != 0) {
        tpdbErrf(errmsg, "init raft TCP transport: %s (%s)", t->tcp.errmsg,
                 raft_strerror(rv));
        return rv == RAFT_NOMEM ? TPDB_NOMEM : TPDB_RAFT;
    }
    t->tcp.data = t;
    t->base.impl = t;
    t->base.init = transportInit;
    t->base.listen = transportListen;
    t->base.connect = transportConnect;
    t->base.close = transportClose;
    return TPDB_OK;
}

int tpdbTransportSetBindAddress(struct tpdb_transport *t,
                                const char *address,
                                char *errmsg)
{
    int rv = raft_uv_tcp_set_bind_address(&t->tcp, address);
    if (rv != 0) {
        tpdbErrf(errmsg, "transport bind address %s: %s", address,
                 raft_strerror(rv));
        return rv == RAFT_NOMEM ? TPDB_NOMEM : TPDB_INVALID;
    }
    return TPDB_OK;
}

void tpdbTransportSetStreamCb(struct tpdb_transport *t,
                              tpdb_transport_stream_cb cb,
                              void *arg)
{
    t->stream_cb = cb;
    t->stream_cb_arg = arg;
}

unsigned long tpdbTransportNodelayCount(const struct tpdb_transport *t)
{
    return t->n_nodelay;
}

void tpdbTransportClose(struct tpdb_transport *t)
{
    raft_uv_tcp_close(&t->tcp);
}
