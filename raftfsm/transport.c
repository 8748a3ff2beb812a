/*
 * Raft transport over libuv TCP with a handshake of our own (see
 * transport.h). Every connection starts with, from the connecting side:
 *
 *   offset size  field
 *        0    4  magic "TPDB"
 *        4    2  version (1)
 *        6    2  type: 1 RAFT (then raft's own messages), 2 JOIN, 3 FETCH
 *        8    8  sender's raft id (> 0)
 *       16    4  length L of the sender's raft address (1..255)
 *       20    4  flags: bit 0 sealed (the sender has a cluster key), bits
 *                1-7 zero, bits 8-31 the sender's cluster identity (a hash
 *                of its configured peers list, 0: none, not checked)
 *       24    L  the address, printable ASCII, no terminator
 *
 * then, if sealed, the rest of seal.h's handshake, and every later byte in
 * either direction is in sealed records. Integers are little-endian.
 * Incoming bytes are read exactly as far as the handshake goes, so what
 * follows stays in the socket for its reader. Anything malformed closes the
 * connection with a log line (at most one per address and minute). raft
 * never gets a TCP stream: it gets a relay's socketpair end (relay.h).
 */
#include "raftfsm/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raftfsm/relay.h"

#define HANDSHAKE_MAGIC 0x42445054u /* "TPDB" little-endian */
#define HANDSHAKE_VERSION 1
#define HANDSHAKE_SEALED 1u
#define HANDSHAKE_RESERVED 0xfeu
#define HANDSHAKE_CLUSTER_SHIFT 8

enum { CONN_IN = 1, CONN_OUT, CONN_JOIN };

/* Handshake states: incoming, then outgoing. */
enum { IN_HDR = 1, IN_ADDR, IN_EXT, IN_FIN, OUT_CONNECT, OUT_HELLO, OUT_FIN };

/* The most a handshake buffer holds: our hello and the server's answer, or
 * a sealed JOIN reply. */
#define CONN_BUF                                               \
    (TPDB_HANDSHAKE_MAX + TPDB_SEAL_HELLO + TPDB_SEAL_SERVER + \
     TPDB_SEAL_FINISH + TPDB_SEAL_OVERHEAD)

/* A connection not (yet) handed to raft. */
struct tpdb_conn {
    struct tpdb_transport *t; /* NULL once unlinked from the transport */
    struct uv_tcp_s *tcp;     /* NULL once closed */
    int kind;
    int state;        /* IN_* or OUT_* */
    int status;       /* CONN_OUT: what to report if it closes */
    int owned;        /* CONN_JOIN: the join callback still holds it */
    uint64_t started; /* CONN_IN: when accepted (ms) */
    uint32_t ip;      /* the peer's IPv4 address, network order */
    int type;         /* CONN_IN: the handshake's type */
    size_t addr_len;  /* CONN_IN: its address length */
    int sealed;
    int writing; /* CONN_IN: the server hello is being written */
    int fin_in;  /* CONN_IN: the proof came before that write ended */
    struct tpdb_seal_hs hs;
    struct tpdb_seal_session session;
    uint8_t srv[TPDB_SEAL_SERVER]; /* the server hello, or our proof */
    uint8_t buf[CONN_BUF];
    size_t have;
    size_t want;
    raft_id peer;
    struct raft_uv_connect *req; /* CONN_OUT: raft's request */
    uv_connect_t connect;
    uv_write_t write;
    struct tpdb_conn *prev;
    struct tpdb_conn *next;
};

/* The public name of a JOIN connection. */
struct tpdb_join_req {
    struct tpdb_conn conn;
};

size_t tpdbHandshakeEncode(uint8_t *buf,
                           int type,
                           uint64_t id,
                           const char *address)
{
    size_t len = address != NULL ? strlen(address) : 0;
    if (id == 0 || len == 0 || len >= TPDB_ADDRESS_MAX) {
        return 0;
    }
    tpdbPut32(buf, HANDSHAKE_MAGIC);
    tpdbPut16(buf + 4, HANDSHAKE_VERSION);
    tpdbPut16(buf + 6, (uint16_t)type);
    tpdbPut64(buf + 8, id);
    tpdbPut32(buf + 16, (uint32_t)len);
    tpdbPut32(buf + 20, 0);
    memcpy(buf + TPDB_HANDSHAKE_HDR, address, len);
    return TPDB_HANDSHAKE_HDR + len;
}

int tpdbHandshakeDecode(const uint8_t *hdr,
                        int *type,
                        uint64_t *id,
                        size_t *address_len,
                        char *errmsg)
{
    uint32_t magic = tpdbGet32(hdr);
    unsigned version = tpdbGet16(hdr + 4);
    unsigned kind = tpdbGet16(hdr + 6);
    uint32_t len = tpdbGet32(hdr + 16);
    if (magic != HANDSHAKE_MAGIC) {
        tpdbErrf(errmsg, "handshake: bad magic 0x%08x", (unsigned)magic);
        return TPDB_PROTO;
    }
    if (version != HANDSHAKE_VERSION) {
        tpdbErrf(errmsg, "handshake: unsupported version %u", version);
        return TPDB_PROTO;
    }
    if (kind != TPDB_HANDSHAKE_RAFT && kind != TPDB_HANDSHAKE_JOIN &&
        kind != TPDB_HANDSHAKE_FETCH) {
        tpdbErrf(errmsg, "handshake: unknown type %u", kind);
        return TPDB_PROTO;
    }
    if (tpdbGet64(hdr + 8) == 0) {
        tpdbErrf(errmsg, "handshake: node id 0");
        return TPDB_PROTO;
    }
    if (len == 0 || len >= TPDB_ADDRESS_MAX ||
        (tpdbGet32(hdr + 20) & HANDSHAKE_RESERVED) != 0) {
        tpdbErrf(errmsg, "handshake: bad address length %u or reserved field",
                 (unsigned)len);
        return TPDB_PROTO;
    }
    *type = (int)kind;
    *id = tpdbGet64(hdr + 8);
    *address_len = len;
    return TPDB_OK;
}

void tpdbHandshakeSetSealed(uint8_t *buf)
{
    tpdbPut32(buf + 20, tpdbGet32(buf + 20) | HANDSHAKE_SEALED);
}

void tpdbHandshakeSetCluster(uint8_t *buf, uint32_t cluster)
{
    uint32_t flags = tpdbGet32(buf + 20) & 0xffu;
    tpdbPut32(buf + 20, flags | (cluster << HANDSHAKE_CLUSTER_SHIFT));
}

uint32_t tpdbHandshakeCluster(const uint8_t *hdr)
{
    return tpdbGet32(hdr + 20) >> HANDSHAKE_CLUSTER_SHIFT;
}

uint32_t tpdbClusterHash(const struct raft_configuration *conf)
{
    /* Order-independent: the CRC of each "id@address" item, summed. */
    uint32_t sum = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        char item[TPDB_ADDRESS_MAX + 32];
        int len = snprintf(item, sizeof item, "%llu@%s",
                           (unsigned long long)conf->servers[i].id,
                           conf->servers[i].address);
        sum += tpdbCrc32c(0, item, (size_t)len);
    }
    uint8_t n[4];
    tpdbPut32(n, conf->n);
    sum = tpdbCrc32c(sum, n, sizeof n) & 0xffffffu;
    return sum != 0 ? sum : 1;
}

int tpdbHandshakeSealed(const uint8_t *hdr)
{
    return (tpdbGet32(hdr + 20) & HANDSHAKE_SEALED) != 0;
}

int tpdbTransportParseAddress(const char *address, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = address != NULL ? strrchr(address, ':') : NULL;
    char *end = NULL;
    unsigned long port;
    if (colon == NULL || colon == address ||
        (size_t)(colon - address) >= sizeof host || colon[1] == '\0') {
        return TPDB_INVALID;
    }
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port > 65535 || colon[1] < '0' || colon[1] > '9') {
        return TPDB_INVALID;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    if (uv_ip4_addr(host, (int)port, sa) != 0) {
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

static void connLink(struct tpdb_transport *t, struct tpdb_conn *c)
{
    c->t = t;
    c->prev = NULL;
    c->next = t->conns;
    if (t->conns != NULL) {
        t->conns->prev = c;
    }
    t->conns = c;
}

static void connUnlink(struct tpdb_conn *c)
{
    struct tpdb_transport *t = c->t;
    if (t == NULL) {
        return;
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        t->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->t = NULL;
}

/* Calls raft's close callback once nothing of ours is open any more. */
static void maybeClosed(struct tpdb_transport *t)
{
    raft_uv_transport_close_cb cb = t->close_cb;
    if (t->closing && !t->listener_open && !t->sweep_open && !t->reject_busy &&
        t->conns == NULL && tpdbGuardRelays(&t->guard) == 0 && cb != NULL) {
        t->close_cb = NULL;
        cb(&t->base);
    }
}

static void connClosedCb(uv_handle_t *handle)
{
    struct tpdb_conn *c = handle->data;
    struct tpdb_transport *t = c->t;
    raft_free(c->tcp);
    c->tcp = NULL;
    sodium_memzero(&c->hs, sizeof c->hs);
    sodium_memzero(&c->session, sizeof c->session);
    if (c->kind == CONN_OUT && c->req != NULL) {
        c->req->cb(c->req, NULL, c->status);
    }
    connUnlink(c);
    if (!c->owned) {
        tpdb_free(c);
    }
    if (t != NULL) {
        maybeClosed(t);
    }
}

static void connClose(struct tpdb_conn *c)
{
    if (c->tcp != NULL && !uv_is_closing((uv_handle_t *)c->tcp)) {
        uv_close((uv_handle_t *)c->tcp, connClosedCb);
    }
}

/* Sets TCP_NODELAY on a stream about to be relayed to raft. A failure only
 * costs latency, so the stream is used anyway. */
static void setNodelay(struct tpdb_transport *t,
                       struct uv_tcp_s *tcp,
                       const char *what,
                       raft_id id)
{
    int rv = uv_tcp_nodelay(tcp, 1);
    if (rv != 0) {
        tpdbLog(TPDB_LOG_WARN, "transport: %s stream of node %llu: %s", what,
                (unsigned long long)id, uv_strerror(rv));
        return;
    }
    t->n_nodelay++;
    if (t->stream_cb != NULL) {
        t->stream_cb(t->stream_cb_arg, (struct uv_stream_s *)tcp);
    }
}

static void relayClosedCb(void *arg, struct tpdb_relay *r)
{
    struct tpdb_transport *t = arg;
    tpdbGuardRemove(&t->guard, r);
    maybeClosed(t);
}

static void relayRefusedCb(void *arg, struct tpdb_relay *r, const char *why)
{
    struct tpdb_transport *t = arg;
    tpdbGuardRefused(&t->guard, tpdbRelayPeerIp(r), why);
}

/* Moves c's socket into a relay and returns raft's end of it, or NULL (c
 * is closed then). c is freed either way. */
static struct uv_stream_s *relayOf(struct tpdb_conn *c, int inbound)
{
    struct tpdb_transport *t = c->t;
    struct tpdb_relay_config cfg;
    struct uv_stream_s *raft_side = NULL;
    struct tpdb_relay *r = NULL;
    char errmsg[TPDB_ERRMSG_SIZE];
    memset(&cfg, 0, sizeof cfg);
    cfg.peer = c->peer;
    cfg.idle_ms = inbound ? t->idle_ms : 0;
    cfg.limits.entries_max = t->entries_max;
    cfg.limits.term_fn = t->term_fn;
    cfg.limits.term_arg = t->term_arg;
    cfg.closed_cb = relayClosedCb;
    cfg.refused_cb = relayRefusedCb;
    cfg.arg = t;
    if (tpdbGuardReserve(&t->guard) != TPDB_OK ||
        tpdbRelayStart(t->loop, c->tcp, &cfg, c->sealed ? &c->session : NULL,
                       &r, &raft_side, errmsg) != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "transport: node %llu: %s",
                (unsigned long long)c->peer, "cannot start a relay");
        sodium_memzero(&c->session, sizeof c->session);
        connClose(c);
        return NULL;
    }
    tpdbGuardAdd(&t->guard, r, inbound);
    sodium_memzero(&c->session, sizeof c->session);
    c->tcp = NULL; /* the relay's now */
    connUnlink(c);
    tpdb_free(c);
    return raft_side;
}

/* A FETCH stream leaves libuv: its socket (duplicated, so that closing the
 * handle leaves it open) goes to the fetch callback, which serves it with
 * blocking I/O on a thread of its own. */
static void handOverFetch(struct tpdb_conn *c, uint64_t id)
{
    struct tpdb_transport *t = c->t;
    uv_os_fd_t fd = -1;
    int dup_fd = -1;
    struct tpdb_seal_session session = c->session;
    int sealed = c->sealed;
    if (t->fetch_cb != NULL && uv_fileno((uv_handle_t *)c->tcp, &fd) == 0) {
        dup_fd = dup(fd);
    }
    sodium_memzero(&c->session, sizeof c->session);
    connClose(c);
    if (dup_fd < 0) {
        tpdbLog(TPDB_LOG_INFO, "transport: FETCH from node %llu ignored",
                (unsigned long long)id);
    } else {
        t->fetch_cb(t->fetch_cb_arg, dup_fd, id, sealed ? &session : NULL);
    }
    sodium_memzero(&session, sizeof session);
}

/* Whether a RAFT stream comes from a node started with another peers list:
 * raft would otherwise run with two different views of the cluster. */
static int clusterMismatch(struct tpdb_conn *c,
                           uint64_t id,
                           const char *address)
{
    struct tpdb_transport *t = c->t;
    uint32_t theirs = tpdbHandshakeCluster(c->buf);
    if (t->cluster == 0 || theirs == 0 || theirs == t->cluster) {
        return 0;
    }
    char why[TPDB_ERRMSG_SIZE];
    tpdbErrf(why,
             "node %llu (%s) was started with a different peers list than "
             "this node %llu (cluster hash %06x, ours %06x): every node "
             "must be given the same peers=",
             (unsigned long long)id, address, (unsigned long long)t->id,
             (unsigned)theirs, (unsigned)t->cluster);
    tpdbGuardRefused(&t->guard, c->ip, why);
    if (t->mismatch_cb != NULL) {
        t->mismatch_cb(t->mismatch_arg, why);
    }
    return 1;
}

/* A complete, valid incoming handshake: give the stream to its user. */
static void handshakeDone(struct tpdb_conn *c)
{
    struct tpdb_transport *t = c->t;
    char address[TPDB_ADDRESS_MAX];
    uint64_t id = c->peer;
    struct uv_stream_s *stream;
    memcpy(address, c->buf + TPDB_HANDSHAKE_HDR, c->addr_len);
    address[c->addr_len] = '\0';
    uv_read_stop((uv_stream_t *)c->tcp);
    if (c->type == TPDB_HANDSHAKE_FETCH) {
        handOverFetch(c, id);
        return;
    }
    if (c->type == TPDB_HANDSHAKE_JOIN) {
        if (t->join_cb == NULL) {
            tpdbLog(TPDB_LOG_INFO, "transport: JOIN from node %llu ignored",
                    (unsigned long long)id);
            connClose(c);
            return;
        }
        c->kind = CONN_JOIN;
        c->owned = 1;
        t->join_cb(t->join_cb_arg, (struct tpdb_join_req *)(void *)c, id,
                   address);
        return;
    }
    if (t->accept_cb == NULL || clusterMismatch(c, id, address)) {
        connClose(c);
        return;
    }
    setNodelay(t, c->tcp, "accepted", id);
    stream = relayOf(c, 1);
    if (stream != NULL) {
        t->accept_cb(&t->base, id, address, stream);
    }
}

/* Refuses an incoming connection: a log line (at most one per address and
 * minute) and close. */
static void refuse(struct tpdb_conn *c, const char *why)
{
    tpdbGuardRefused(&c->t->guard, c->ip, why);
    connClose(c);
}

static void serverHelloWrittenCb(uv_write_t *w, int status)
{
    struct tpdb_conn *c = w->data;
    c->writing = 0;
    if (status != 0 || c->t == NULL) {
        connClose(c);
    } else if (c->fin_in) {
        handshakeDone(c); /* c's write request is free now */
    }
}

/* The client's sealed hello is in: answer it, then wait for its proof. */
static void sealedHello(struct tpdb_conn *c)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    size_t h_len = TPDB_HANDSHAKE_HDR + c->addr_len;
    uv_buf_t b;
    if (tpdbSealServerHello(&c->hs, &c->t->keys, c->buf, h_len, c->buf + h_len,
                            c->t->id, c->srv, errmsg) != TPDB_OK) {
        refuse(c, errmsg);
        return;
    }
    c->state = IN_FIN;
    c->want += TPDB_SEAL_FINISH;
    c->writing = 1;
    b = uv_buf_init((char *)c->srv, sizeof c->srv);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)c->tcp, &b, 1,
                 serverHelloWrittenCb) != 0) {
        connClose(c);
    }
}

/* The address is in: checks it and what the peer's sealing says. */
static int addressIn(struct tpdb_conn *c)
{
    for (size_t i = 0; i < c->addr_len; i++) {
        uint8_t ch = c->buf[TPDB_HANDSHAKE_HDR + i];
        if (ch < 0x21 || ch > 0x7e) {
            refuse(c, "handshake: address not printable");
            return 1;
        }
    }
    if (c->sealed != (c->t->keys.n > 0)) {
        refuse(c, c->sealed ? "handshake: the peer seals, we have no key"
                            : "handshake: the peer has no cluster key");
        return 1;
    }
    if (!c->sealed) {
        handshakeDone(c);
        return 1;
    }
    c->state = IN_EXT;
    c->want += TPDB_SEAL_HELLO;
    return 0;
}

/* Checks the bytes read so far; returns 0 to go on reading. */
static int handshakeCheck(struct tpdb_conn *c)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    size_t h_len = TPDB_HANDSHAKE_HDR + c->addr_len;
    uint64_t id;
    switch (c->state) {
        case IN_HDR:
            if (tpdbHandshakeDecode(c->buf, &c->type, &id, &c->addr_len,
                                    errmsg) != TPDB_OK) {
                refuse(c, errmsg);
                return 1;
            }
            c->peer = id;
            c->sealed = tpdbHandshakeSealed(c->buf);
            c->state = IN_ADDR;
            c->want += c->addr_len;
            return 0;
        case IN_ADDR:
            return addressIn(c);
        case IN_EXT:
            sealedHello(c);
            return 1;
        default: /* IN_FIN */
            if (tpdbSealServerFinish(&c->hs, c->buf + h_len + TPDB_SEAL_HELLO,
                                     &c->session, errmsg) != TPDB_OK) {
                refuse(c, errmsg);
                return 1;
            }
            uv_read_stop((uv_stream_t *)c->tcp);
            if (c->writing) {
                c->fin_in = 1;
            } else {
                handshakeDone(c);
            }
            return 1;
    }
}

/* Reads exactly what the handshake still lacks, never beyond. */
static void allocCb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct tpdb_conn *c = handle->data;
    (void)suggested;
    buf->base = (char *)c->buf + c->have;
    buf->len = c->want - c->have;
}

static void readCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tpdb_conn *c = stream->data;
    (void)buf;
    if (nread < 0) {
        tpdbLog(TPDB_LOG_DEBUG, "transport: connection closed in handshake: %s",
                uv_strerror((int)nread));
        connClose(c);
        return;
    }
    c->have += (size_t)nread;
    while (c->have == c->want && c->t != NULL &&
           !uv_is_closing((uv_handle_t *)c->tcp)) {
        size_t before = c->want;
        if (handshakeCheck(c) != 0 || c->want == before) {
            break;
        }
    }
}

static void rejectConnection(struct tpdb_transport *t, const char *why);

static void rejectClosedCb(uv_handle_t *handle)
{
    struct tpdb_transport *t = handle->data;
    t->reject_busy = 0;
    if (t->reject_pending && !t->closing) {
        t->reject_pending = 0;
        rejectConnection(t, NULL);
    }
    maybeClosed(t);
}

/* Out of memory or over a limit: accept the connection into the spare
 * handle and close it, since one left unaccepted would stop the listener.
 */
static void rejectConnection(struct tpdb_transport *t, const char *why)
{
    if (why != NULL) {
        tpdbLog(TPDB_LOG_ERROR, "transport: accept: %s", why);
    }
    if (t->reject_busy) {
        t->reject_pending = 1; /* libuv holds it until we accept */
        return;
    }
    uv_tcp_init(t->loop, &t->reject);
    t->reject.data = t;
    t->reject_busy = 1;
    uv_accept((uv_stream_t *)&t->listener, (uv_stream_t *)&t->reject);
    uv_close((uv_handle_t *)&t->reject, rejectClosedCb);
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

/* Whether one more connection from ip is over the per-address cap. */
static int overCap(struct tpdb_transport *t, uint32_t ip)
{
    unsigned n = tpdbGuardCount(&t->guard, ip);
    for (struct tpdb_conn *c = t->conns; c != NULL; c = c->next) {
        n += c->kind == CONN_IN && c->ip == ip;
    }
    return n >= t->per_address_max;
}

static void connectionCb(uv_stream_t *server, int status)
{
    struct tpdb_transport *t = server->data;
    struct tpdb_conn *c;
    if (status != 0 || t->closing) {
        return;
    }
    c = tpdb_calloc(1, sizeof *c);
    struct uv_tcp_s *tcp = raft_malloc(sizeof *tcp);
    if (c == NULL || tcp == NULL) {
        tpdb_free(c);
        raft_free(tcp);
        rejectConnection(t, "out of memory");
        return;
    }
    uv_tcp_init(t->loop, tcp);
    tcp->data = c;
    c->tcp = tcp;
    c->kind = CONN_IN;
    c->state = IN_HDR;
    c->started = tpdbNowMs();
    c->want = TPDB_HANDSHAKE_HDR;
    connLink(t, c);
    if (uv_accept(server, (uv_stream_t *)tcp) != 0) {
        connClose(c);
        return;
    }
    c->ip = peerIp(tcp);
    if (overCap(t, c->ip)) {
        refuse(c, "too many connections from this address");
        return;
    }
    if (uv_read_start((uv_stream_t *)tcp, allocCb, readCb) != 0) {
        connClose(c);
    }
}

/* A peer that connects and never completes its handshake must not hold a
 * connection forever, and neither may one we connected to that never
 * answers our sealed hello. */
static void sweepCb(uv_timer_t *timer)
{
    struct tpdb_transport *t = timer->data;
    uint64_t now = tpdbNowMs();
    for (struct tpdb_conn *c = t->conns; c != NULL; c = c->next) {
        if ((c->kind == CONN_IN || c->state == OUT_HELLO) &&
            now - c->started >= t->handshake_timeout_ms) {
            tpdbLog(TPDB_LOG_WARN,
                    "transport: closing connection: no handshake in %u ms",
                    t->handshake_timeout_ms);
            connClose(c);
        }
    }
}

static int transportInit(struct raft_uv_transport *base,
                         raft_id id,
                         const char *address)
{
    struct tpdb_transport *t = base->impl;
    if (id == 0 || strlen(address) >= sizeof t->address) {
        snprintf(base->errmsg, sizeof base->errmsg, "bad id or address");
        return RAFT_INVALID;
    }
    t->id = id;
    snprintf(t->address, sizeof t->address, "%s", address);
    return 0;
}

static int transportListen(struct raft_uv_transport *base, raft_uv_accept_cb cb)
{
    struct tpdb_transport *t = base->impl;
    const char *where = t->bind[0] != '\0' ? t->bind : t->address;
    struct sockaddr_in sa;
    int rv;
    if (tpdbTransportParseAddress(where, &sa) != TPDB_OK) {
        snprintf(base->errmsg, sizeof base->errmsg,
                 "listen: bad address %.128s (want IPv4:port)", where);
        return RAFT_INVALID;
    }
    t->accept_cb = cb;
    rv = uv_tcp_bind(&t->listener, (const struct sockaddr *)&sa, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&t->listener, 128, connectionCb);
    }
    if (rv == 0) {
        unsigned every = t->handshake_timeout_ms / 4 + 1;
        uv_timer_start(&t->sweep, sweepCb, every, every);
    }
    if (rv != 0) {
        t->listen_rc = rv;
        snprintf(t->listen_where, sizeof t->listen_where, "%s", where);
        snprintf(base->errmsg, sizeof base->errmsg, "listen on %.128s: %s",
                 where, uv_strerror(rv));
        return RAFT_IOERR;
    }
    return 0;
}

/* Our handshake is done: the stream goes to raft through a relay. */
static void connectDone(struct tpdb_conn *c)
{
    struct raft_uv_connect *req = c->req;
    struct uv_stream_s *stream;
    setNodelay(c->t, c->tcp, "connected", c->peer);
    stream = relayOf(c, 0);
    if (stream != NULL) {
        req->cb(req, stream, 0);
    }
}

static void finWrittenCb(uv_write_t *w, int status)
{
    struct tpdb_conn *c = w->data;
    if (status != 0 || c->t == NULL) {
        connClose(c);
        return;
    }
    connectDone(c);
}

/* Reads the server's sealed hello, then proves we hold the key. */
static void outReadCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tpdb_conn *c = stream->data;
    char errmsg[TPDB_ERRMSG_SIZE];
    uv_buf_t b;
    (void)buf;
    if (nread < 0) {
        tpdbLog(TPDB_LOG_INFO,
                "transport: node %llu closed our sealed "
                "handshake (does it hold our key?)",
                (unsigned long long)c->peer);
        connClose(c);
        return;
    }
    c->have += (size_t)nread;
    if (c->have < c->want) {
        return;
    }
    uv_read_stop(stream);
    if (tpdbSealClientFinish(&c->hs, c->buf + c->want - TPDB_SEAL_SERVER,
                             c->peer, c->srv, &c->session, errmsg) != TPDB_OK) {
        tpdbGuardRefused(&c->t->guard, c->ip, errmsg);
        connClose(c);
        return;
    }
    c->state = OUT_FIN;
    b = uv_buf_init((char *)c->srv, TPDB_SEAL_FINISH);
    if (uv_write(&c->write, stream, &b, 1, finWrittenCb) != 0) {
        connClose(c);
    }
}

static void handshakeWrittenCb(uv_write_t *w, int status)
{
    struct tpdb_conn *c = w->data;
    if (status != 0 || c->t == NULL) {
        connClose(c);
        return;
    }
    if (!c->sealed) {
        connectDone(c);
        return;
    }
    c->state = OUT_HELLO;
    c->started = tpdbNowMs();
    c->have = c->want;
    c->want += TPDB_SEAL_SERVER;
    if (uv_read_start((uv_stream_t *)c->tcp, allocCb, outReadCb) != 0) {
        connClose(c);
    }
}

static void connectCb(uv_connect_t *cr, int status)
{
    struct tpdb_conn *c = cr->data;
    uv_buf_t b = uv_buf_init((char *)c->buf, (unsigned)c->want);
    if (status == 0) {
        c->ip = peerIp(c->tcp);
    }
    if (status != 0 || uv_write(&c->write, (uv_stream_t *)c->tcp, &b, 1,
                                handshakeWrittenCb) != 0) {
        connClose(c);
    }
}

/* Encodes our hello for c into c->buf; sets c->want. */
static void helloEncode(struct tpdb_transport *t, struct tpdb_conn *c)
{
    c->want =
        tpdbHandshakeEncode(c->buf, TPDB_HANDSHAKE_RAFT, t->id, t->address);
    if (c->want == 0) {
        return;
    }
    tpdbHandshakeSetCluster(c->buf, t->cluster);
    if (t->keys.n == 0) {
        return;
    }
    tpdbHandshakeSetSealed(c->buf);
    c->sealed = 1;
    tpdbSealClientHello(&c->hs, &t->keys, c->buf, c->want, c->buf + c->want);
    c->want += TPDB_SEAL_HELLO;
}

static int transportConnect(struct raft_uv_transport *base,
                            struct raft_uv_connect *req,
                            raft_id id,
                            const char *address,
                            raft_uv_connect_cb cb)
{
    struct tpdb_transport *t = base->impl;
    struct sockaddr_in sa;
    struct tpdb_conn *c;
    if (tpdbTransportParseAddress(address, &sa) != TPDB_OK) {
        snprintf(base->errmsg, sizeof base->errmsg,
                 "connect: bad address %.128s (want IPv4:port)", address);
        return RAFT_NOCONNECTION;
    }
    c = tpdb_calloc(1, sizeof *c);
    if (c == NULL || (c->tcp = raft_malloc(sizeof *c->tcp)) == NULL) {
        tpdb_free(c);
        snprintf(base->errmsg, sizeof base->errmsg, "out of memory");
        return RAFT_NOMEM;
    }
    uv_tcp_init(t->loop, c->tcp);
    c->tcp->data = c;
    c->kind = CONN_OUT;
    c->state = OUT_CONNECT;
    c->peer = id;
    c->status = RAFT_NOCONNECTION;
    helloEncode(t, c);
    c->connect.data = c;
    c->write.data = c;
    connLink(t, c);
    if (c->want == 0 ||
        uv_tcp_connect(&c->connect, c->tcp, (const struct sockaddr *)&sa,
                       connectCb) != 0) {
        /* Fails at once: raft expects no callback then. */
        connClose(c);
        snprintf(base->errmsg, sizeof base->errmsg, "connect to %.128s failed",
                 address);
        return RAFT_NOCONNECTION;
    }
    req->cb = cb;
    c->req = req;
    return 0;
}

static void listenerClosedCb(uv_handle_t *handle)
{
    struct tpdb_transport *t = handle->data;
    t->listener_open = 0;
    maybeClosed(t);
}

static void sweepClosedCb(uv_handle_t *handle)
{
    struct tpdb_transport *t = handle->data;
    t->sweep_open = 0;
    maybeClosed(t);
}

/* Closes the listener and the sweep timer if still open. */
static void closeHandles(struct tpdb_transport *t)
{
    if (t->listener_open && !uv_is_closing((uv_handle_t *)&t->listener)) {
        uv_close((uv_handle_t *)&t->listener, listenerClosedCb);
    }
    if (t->sweep_open && !uv_is_closing((uv_handle_t *)&t->sweep)) {
        uv_close((uv_handle_t *)&t->sweep, sweepClosedCb);
    }
}

static void transportClose(struct raft_uv_transport *base,
                           raft_uv_transport_close_cb cb)
{
    struct tpdb_transport *t = base->impl;
    t->closing = 1;
    t->close_cb = cb;
    for (struct tpdb_conn *c = t->conns; c != NULL; c = c->next) {
        c->status = RAFT_CANCELED;
        connClose(c);
    }
    tpdbGuardCloseAll(&t->guard);
    closeHandles(t);
    maybeClosed(t);
}

int tpdbTransportInit(struct tpdb_transport *t,
                      struct uv_loop_s *loop,
                      char *errmsg)
{
    memset(t, 0, sizeof *t);
    t->loop = loop;
    if (uv_tcp_init(loop, &t->listener) != 0) {
        tpdbErrf(errmsg, "transport: cannot create the listening socket");
        return TPDB_NOMEM;
    }
    t->listener.data = t;
    t->listener_open = 1;
    uv_timer_init(loop, &t->sweep);
    uv_unref((uv_handle_t *)&t->sweep);
    t->sweep.data = t;
    t->sweep_open = 1;
    t->handshake_timeout_ms = 5000;
    t->idle_ms = 10000;
    t->per_address_max = 64;
    t->base.impl = t;
    t->base.init = transportInit;
    t->base.listen = transportListen;
    t->base.connect = transportConnect;
    t->base.close = transportClose;
    return TPDB_OK;
}

void tpdbTransportSetCluster(struct tpdb_transport *t,
                             uint32_t cluster,
                             void (*mismatch_cb)(void *arg, const char *why),
                             void *arg)
{
    t->cluster = cluster & 0xffffffu;
    t->mismatch_cb = mismatch_cb;
    t->mismatch_arg = arg;
}

int tpdbTransportSetBindAddress(struct tpdb_transport *t,
                                const char *address,
                                char *errmsg)
{
    struct sockaddr_in sa;
    if (tpdbTransportParseAddress(address, &sa) != TPDB_OK ||
        strlen(address) >= sizeof t->bind) {
        tpdbErrf(errmsg, "transport bind address %s: want IPv4:port",
                 address != NULL ? address : "(null)");
        return TPDB_INVALID;
    }
    snprintf(t->bind, sizeof t->bind, "%s", address);
    return TPDB_OK;
}

void tpdbTransportSetStreamCb(struct tpdb_transport *t,
                              tpdb_transport_stream_cb cb,
                              void *arg)
{
    t->stream_cb = cb;
    t->stream_cb_arg = arg;
}

void tpdbTransportSetFetchCb(struct tpdb_transport *t,
                             tpdb_transport_fetch_cb cb,
                             void *arg)
{
    t->fetch_cb = cb;
    t->fetch_cb_arg = arg;
}

void tpdbTransportSetJoinCb(struct tpdb_transport *t,
                            tpdb_transport_join_cb cb,
                            void *arg)
{
    t->join_cb = cb;
    t->join_cb_arg = arg;
}

static void replyWrittenCb(uv_write_t *w, int status)
{
    struct tpdb_conn *c = w->data;
    (void)status;
    connClose(c);
}

void tpdbTransportJoinReply(struct tpdb_join_req *req,
                            const void *buf,
                            size_t len)
{
    struct tpdb_conn *c = &req->conn;
    uv_buf_t b;
    c->owned = 0;
    if (c->tcp == NULL) {
        tpdb_free(c); /* closed with the transport */
        return;
    }
    if (uv_is_closing((uv_handle_t *)c->tcp)) {
        return; /* connClosedCb frees it */
    }
    if (len > TPDB_HANDSHAKE_MAX) {
        len = TPDB_HANDSHAKE_MAX;
    }
    if (c->sealed) {
        memcpy(c->buf + TPDB_SEAL_LEN, buf, len);
        len = tpdbSealRecord(&c->session, c->buf, len);
    } else {
        memcpy(c->buf, buf, len);
    }
    b = uv_buf_init((char *)c->buf, (unsigned)len);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)c->tcp, &b, 1, replyWrittenCb) !=
        0) {
        connClose(c);
    }
}

unsigned long tpdbTransportNodelayCount(const struct tpdb_transport *t)
{
    return t->n_nodelay;
}

void tpdbTransportSetKeys(struct tpdb_transport *t,
                          const struct tpdb_seal_keys *keys)
{
    t->keys = *keys;
}

void tpdbTransportSetTermFn(struct tpdb_transport *t,
                            tpdb_wire_term_fn fn,
                            void *arg)
{
    t->term_fn = fn;
    t->term_arg = arg;
}

unsigned long tpdbTransportRefusedCount(const struct tpdb_transport *t)
{
    return tpdbGuardRefusedCount(&t->guard);
}

void tpdbTransportClose(struct tpdb_transport *t)
{
    closeHandles(t);
    tpdbGuardCloseAll(&t->guard);
    sodium_memzero(&t->keys, sizeof t->keys);
}
