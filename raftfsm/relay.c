/*
 * Relay between a peer's TCP stream and the socketpair end raft reads and
 * writes (see relay.h). Peer bytes: TCP read -> (open records) -> wire
 * check -> write to our socketpair end. Raft bytes: read from our end ->
 * (seal records) -> write to TCP. Everything runs on the loop thread.
 */
#include "raftfsm/relay.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <raft.h>

#define RELAY_READ_MAX 65536 /* one read from either side */

/* A write in flight with its bytes. */
struct relayWrite {
    uv_write_t req;
    struct tpdb_relay *r;
    size_t len;
    uint8_t data[];
};

struct tpdb_relay {
    struct tpdb_relay_config cfg;
    struct uv_tcp_s *tcp; /* raft_malloc'ed, ours */
    uv_pipe_t pipe;       /* our end of the socketpair */
    uv_timer_t idle;
    int handles; /* still open */
    int closing;
    uint32_t peer_ip;
    uint64_t last_rx; /* ms of the last byte from the peer */
    size_t to_raft_q; /* bytes queued on pipe */
    size_t to_peer_q; /* bytes queued on tcp */
    int tcp_paused;   /* peer not read: raft's side is full */
    int pipe_paused;  /* raft not read: the peer's side is full */
    uint64_t to_raft;
    uint64_t to_peer;
    struct tpdb_wire wire;
    int sealed;
    struct tpdb_seal_session session;
    uint8_t *rec; /* sealed: the record being read */
    size_t rec_have;
    size_t rec_want;
    struct relayWrite *out; /* checked bytes gathered for one pipe write */
    size_t out_cap;
    uint8_t rbuf[RELAY_READ_MAX];
};

/* One of the relay's handles has closed; the last one frees it. */
static void relayHandleGone(struct tpdb_relay *r)
{
    if (--r->handles > 0) {
        return;
    }
    tpdbWireClose(&r->wire);
    tpdb_free(r->rec);
    tpdb_free(r->out);
    sodium_memzero(&r->session, sizeof r->session);
    if (r->cfg.closed_cb != NULL) {
        r->cfg.closed_cb(r->cfg.arg, r);
    }
    tpdb_free(r);
}

static void handleClosedCb(uv_handle_t *handle)
{
    relayHandleGone(handle->data);
}

static void tcpClosedCb(uv_handle_t *handle)
{
    struct tpdb_relay *r = handle->data;
    raft_free(handle);
    r->tcp = NULL;
    relayHandleGone(r);
}

void tpdbRelayClose(struct tpdb_relay *r)
{
    if (r->closing) {
        return;
    }
    r->closing = 1;
    uv_close((uv_handle_t *)&r->pipe, handleClosedCb);
    uv_close((uv_handle_t *)&r->idle, handleClosedCb);
    uv_close((uv_handle_t *)r->tcp, tcpClosedCb);
}

/* The peer sent what we refuse: report it, then close. */
static void relayRefuse(struct tpdb_relay *r, const char *why)
{
    if (r->cfg.refused_cb != NULL) {
        r->cfg.refused_cb(r->cfg.arg, r, why);
    } else {
        tpdbLog(TPDB_LOG_WARN, "transport: node %llu: refused: %s",
                (unsigned long long)r->cfg.peer, why);
    }
    tpdbRelayClose(r);
}

static void relayFail(struct tpdb_relay *r, const char *why)
{
    tpdbLog(TPDB_LOG_DEBUG, "relay: node %llu: closing: %s",
            (unsigned long long)r->cfg.peer, why);
    tpdbRelayClose(r);
}

static struct relayWrite *writeNew(struct tpdb_relay *r, size_t cap)
{
    struct relayWrite *w = tpdb_malloc(sizeof *w + cap);
    if (w != NULL) {
        w->r = r;
        w->len = 0;
        w->req.data = w;
    }
    return w;
}

static int tcpReadStart(struct tpdb_relay *r);
static int pipeReadStart(struct tpdb_relay *r);

static void pipeWrittenCb(uv_write_t *req, int status)
{
    struct relayWrite *w = req->data;
    struct tpdb_relay *r = w->r;
    r->to_raft_q -= w->len;
    tpdb_free(w);
    if (status != 0) {
        relayFail(r, "raft's side closed");
        return;
    }
    if (r->tcp_paused && !r->closing &&
        r->to_raft_q < TPDB_RELAY_QUEUE_MAX / 2) {
        r->tcp_paused = 0;
        if (tcpReadStart(r) != 0) {
            relayFail(r, "cannot read the peer");
        }
    }
}

static void tcpWrittenCb(uv_write_t *req, int status)
{
    struct relayWrite *w = req->data;
    struct tpdb_relay *r = w->r;
    r->to_peer_q -= w->len;
    tpdb_free(w);
    if (status != 0) {
        relayFail(r, "write to the peer failed");
        return;
    }
    if (r->pipe_paused && !r->closing &&
        r->to_peer_q < TPDB_RELAY_QUEUE_MAX / 2) {
        r->pipe_paused = 0;
        if (pipeReadStart(r) != 0) {
            relayFail(r, "cannot read raft's side");
        }
    }
}

/* Sends w (ownership passes) to `to`. Returns 0 or a libuv error. */
static int writeTo(struct tpdb_relay *r,
                   uv_stream_t *to,
                   struct relayWrite *w,
                   uv_write_cb cb,
                   size_t *queued)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rv = uv_write(&w->req, to, &b, 1, cb);
    if (rv != 0) {
        tpdb_free(w);
        return rv;
    }
    *queued += w->len;
    return 0;
}

/* The wire check's output: gathered into r->out. */
static int emitCb(void *arg, const uint8_t *p, size_t n)
{
    struct tpdb_relay *r = arg;
    if (r->out == NULL || r->out->len + n > r->out_cap) {
        size_t len = r->out != NULL ? r->out->len : 0;
        size_t cap = len + n > RELAY_READ_MAX ? len + n : RELAY_READ_MAX;
        struct relayWrite *w = tpdb_realloc(r->out, sizeof *w + cap);
        if (w == NULL) {
            return TPDB_NOMEM;
        }
        if (r->out == NULL) {
            w->r = r;
            w->len = 0;
        }
        w->req.data = w;
        r->out = w;
        r->out_cap = cap;
    }
    memcpy(r->out->data + r->out->len, p, n);
    r->out->len += n;
    return TPDB_OK;
}

/* Checks plain peer bytes; what passed gathers in r->out (wireFlush). */
static int wireCheck(struct tpdb_relay *r, const uint8_t *p, size_t n)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    int rc = tpdbWireFeed(&r->wire, p, n, emitCb, r, errmsg);
    if (rc != TPDB_OK) {
        relayRefuse(r, errmsg);
        return -1;
    }
    return 0;
}

/* Queues what passed the wire check for raft, in one write. */
static int wireFlush(struct tpdb_relay *r)
{
    if (r->out != NULL && r->out->len > 0) {
        struct relayWrite *w = r->out;
        r->out = NULL;
        r->to_raft += w->len;
        if (writeTo(r, (uv_stream_t *)&r->pipe, w, pipeWrittenCb,
                    &r->to_raft_q) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Opens the records that lie whole at the start of p, in place (p is the
 * relay's own read buffer), and checks their bytes. Returns how many bytes
 * they took, or -1 once the relay refused the peer. */
static ptrdiff_t wholeRecords(struct tpdb_relay *r, uint8_t *p, size_t n)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    size_t used = 0;
    size_t len;
    while (n - used >= TPDB_SEAL_LEN) {
        if (tpdbSealRecordLen(p + used, &len, errmsg) != TPDB_OK) {
            relayRefuse(r, errmsg);
            return -1;
        }
        if (n - used < TPDB_SEAL_LEN + len + TPDB_SEAL_TAG) {
            break;
        }
        if (tpdbSealOpen(&r->session, p + used, len, errmsg) != TPDB_OK) {
            relayRefuse(r, errmsg);
            return -1;
        }
        if (wireCheck(r, p + used + TPDB_SEAL_LEN, len) != 0) {
            return -1;
        }
        used += TPDB_SEAL_LEN + len + TPDB_SEAL_TAG;
    }
    return (ptrdiff_t)used;
}

/* Sealed: opens each whole record and checks its bytes, copying into
 * r->rec only a record split across reads; the records of one TCP read go
 * to raft in one write, as plain bytes do. */
static int recordsToRaft(struct tpdb_relay *r, uint8_t *p, size_t n)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    while (n > 0) {
        size_t take = r->rec_want - r->rec_have;
        size_t len;
        if (r->rec_have == 0) {
            ptrdiff_t used = wholeRecords(r, p, n);
            if (used < 0) {
                return -1;
            }
            p += used;
            n -= (size_t)used;
            if (n == 0) {
                break;
            }
        }
        take = take < n ? take : n;
        memcpy(r->rec + r->rec_have, p, take);
        r->rec_have += take;
        p += take;
        n -= take;
        if (r->rec_have < r->rec_want) {
            break;
        }
        if (r->rec_want == TPDB_SEAL_LEN) {
            if (tpdbSealRecordLen(r->rec, &len, errmsg) != TPDB_OK) {
                goto refuse;
            }
            r->rec_want = TPDB_SEAL_LEN + len + TPDB_SEAL_TAG;
            continue;
        }
        len = r->rec_want - TPDB_SEAL_LEN - TPDB_SEAL_TAG;
        if (tpdbSealOpen(&r->session, r->rec, len, errmsg) != TPDB_OK) {
            goto refuse;
        }
        r->rec_have = 0;
        r->rec_want = TPDB_SEAL_LEN;
        if (wireCheck(r, r->rec + TPDB_SEAL_LEN, len) != 0) {
            return -1;
        }
    }
    return wireFlush(r);
refuse:
    relayRefuse(r, errmsg);
    return -1;
}

static void tcpAllocCb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct tpdb_relay *r = handle->data;
    (void)suggested;
    buf->base = (char *)r->rbuf;
    buf->len = sizeof r->rbuf;
}

static void tcpReadCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tpdb_relay *r = stream->data;
    int rv;
    if (nread < 0) {
        relayFail(r, uv_strerror((int)nread));
        return;
    }
    if (nread == 0 || r->closing) {
        return;
    }
    r->last_rx = tpdbNowMs();
    if (r->sealed) {
        rv = recordsToRaft(r, (uint8_t *)buf->base, (size_t)nread);
    } else {
        rv = wireCheck(r, (const uint8_t *)buf->base, (size_t)nread);
        rv = rv == 0 ? wireFlush(r) : rv;
    }
    if (rv != 0) {
        tpdbRelayClose(r);
        return;
    }
    if (r->to_raft_q >= TPDB_RELAY_QUEUE_MAX && !r->closing) {
        uv_read_stop(stream);
        r->tcp_paused = 1;
    }
}

static int tcpReadStart(struct tpdb_relay *r)
{
    return uv_read_start((uv_stream_t *)r->tcp, tcpAllocCb, tcpReadCb);
}

static void pipeAllocCb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct tpdb_relay *r = handle->data;
    size_t cap = RELAY_READ_MAX + (r->sealed ? TPDB_SEAL_OVERHEAD : 0);
    struct relayWrite *w = writeNew(r, cap);
    (void)suggested;
    buf->base = NULL;
    buf->len = 0;
    if (w != NULL) {
        /* The data starts after room for the record's length. */
        size_t skip = r->sealed ? TPDB_SEAL_LEN : 0;
        buf->base = (char *)w->data + skip;
        buf->len = RELAY_READ_MAX;
    }
}

static struct relayWrite *writeOf(struct tpdb_relay *r, const uv_buf_t *buf)
{
    size_t skip = r->sealed ? TPDB_SEAL_LEN : 0;
    if (buf->base == NULL) {
        return NULL;
    }
    return (struct relayWrite *)(void *)((uint8_t *)buf->base - skip -
                                         offsetof(struct relayWrite, data));
}

static void pipeReadCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tpdb_relay *r = stream->data;
    struct relayWrite *w = writeOf(r, buf);
    if (nread <= 0 || r->closing) {
        tpdb_free(w);
        if (nread < 0) {
            relayFail(r, "raft closed the stream");
        }
        return;
    }
    w->len = (size_t)nread;
    if (r->sealed) {
        w->len = tpdbSealRecord(&r->session, w->data, (size_t)nread);
    }
    r->to_peer += (size_t)nread;
    if (writeTo(r, (uv_stream_t *)r->tcp, w, tcpWrittenCb, &r->to_peer_q) !=
        0) {
        relayFail(r, "cannot write to the peer");
        return;
    }
    if (r->to_peer_q >= TPDB_RELAY_QUEUE_MAX) {
        uv_read_stop(stream);
        r->pipe_paused = 1;
    }
}

static int pipeReadStart(struct tpdb_relay *r)
{
    return uv_read_start((uv_stream_t *)&r->pipe, pipeAllocCb, pipeReadCb);
}

static void idleCb(uv_timer_t *timer)
{
    struct tpdb_relay *r = timer->data;
    if (tpdbNowMs() - r->last_rx >= r->cfg.idle_ms) {
        tpdbLog(TPDB_LOG_INFO, "transport: node %llu: idle for %u ms, closing",
                (unsigned long long)r->cfg.peer, r->cfg.idle_ms);
        tpdbRelayClose(r);
    }
}

static uint32_t peerIp(struct uv_tcp_s *tcp)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0 ||
        ss.ss_family != AF_INET) {
        return 0;
    }
    return ((struct sockaddr_in *)&ss)->sin_addr.s_addr;
}

/* Makes the socketpair: our end becomes r->pipe, raft's end *raft_side
 * (raft_malloc'ed). On error nothing is left open. */
static int pairOpen(struct tpdb_relay *r,
                    struct uv_loop_s *loop,
                    uv_pipe_t **raft_side,
                    char *errmsg)
{
    int sv[2];
    uv_pipe_t *p = raft_malloc(sizeof *p);
    if (p == NULL) {
        tpdbErrf(errmsg, "relay: out of memory");
        return TPDB_NOMEM;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0,
                   sv) != 0) {
        tpdbErrf(errmsg, "relay: socketpair: %s", strerror(errno));
        raft_free(p);
        return TPDB_IOERR;
    }
    /* uv_pipe_init and uv_pipe_open on a fresh socket do not fail on
     * Linux; the handles are closed with the relay. */
    uv_pipe_init(loop, &r->pipe, 0);
    uv_pipe_init(loop, p, 0);
    r->pipe.data = r;
    uv_pipe_open(&r->pipe, sv[0]);
    uv_pipe_open(p, sv[1]);
    *raft_side = p;
    return TPDB_OK;
}

static struct tpdb_relay *relayNew(const struct tpdb_relay_config *cfg,
                                   const struct tpdb_seal_session *session)
{
    struct tpdb_relay *r = tpdb_calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->cfg = *cfg;
    tpdbWireInit(&r->wire, &cfg->limits);
    if (session != NULL) {
        r->sealed = 1;
        r->session = *session;
        r->rec_want = TPDB_SEAL_LEN;
        r->rec =
            tpdb_malloc(TPDB_SEAL_LEN + TPDB_SEAL_RECORD_MAX + TPDB_SEAL_TAG);
        if (r->rec == NULL) {
            sodium_memzero(&r->session, sizeof r->session);
            tpdb_free(r);
            return NULL;
        }
    }
    return r;
}

int tpdbRelayStart(struct uv_loop_s *loop,
                   struct uv_tcp_s *tcp,
                   const struct tpdb_relay_config *cfg,
                   const struct tpdb_seal_session *session,
                   struct tpdb_relay **out,
                   struct uv_stream_s **raft_side,
                   char *errmsg)
{
    struct tpdb_relay *r = relayNew(cfg, session);
    uv_pipe_t *p = NULL;
    int rc;
    if (r == NULL) {
        tpdbErrf(errmsg, "relay: out of memory");
        return TPDB_NOMEM;
    }
    rc = pairOpen(r, loop, &p, errmsg);
    if (rc != TPDB_OK) {
        tpdbWireClose(&r->wire);
        tpdb_free(r->rec);
        tpdb_free(r);
        return rc;
    }
    r->tcp = tcp;
    tcp->data = r;
    r->peer_ip = peerIp(tcp);
    r->last_rx = tpdbNowMs();
    r->handles = 3;
    uv_timer_init(loop, &r->idle);
    r->idle.data = r;
    if (cfg->idle_ms > 0) {
        unsigned every = cfg->idle_ms / 4 + 1;
        uv_timer_start(&r->idle, idleCb, every, every);
    }
    if (tcpReadStart(r) != 0 || pipeReadStart(r) != 0) {
        tpdbRelayClose(r); /* raft sees its end close */
    }
    *out = r;
    *raft_side = (struct uv_stream_s *)p;
    return TPDB_OK;
}

uint32_t tpdbRelayPeerIp(const struct tpdb_relay *r)
{
    return r->peer_ip;
}

void tpdbRelayCounts(const struct tpdb_relay *r,
                     uint64_t *to_raft,
                     uint64_t *to_peer)
{
    *to_raft = r->to_raft;
    *to_peer = r->to_peer;
}
