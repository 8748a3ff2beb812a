/* Unit tests for raftfsm/transport.c over real loopback sockets: TCP_NODELAY
 * on accepted and connected streams, connect errors, cancellation on close,
 * the bind address, the handshake codec, malformed and truncated handshakes
 * (closed, never handed on), bytes after a handshake left for raft, JOIN
 * requests and their replies, and two raft_uv nodes electing a leader and
 * applying an entry through the transport. Every loop runs under a hard
 * deadline. */
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "raftfsm/transport.h"

#define DEADLINE_MS 10000

/* A port the kernel reports free right now on 127.0.0.1. */
static unsigned freePort(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static int hasNodelay(struct uv_stream_s *stream)
{
    uv_os_fd_t fd;
    int v = 0;
    socklen_t vl = sizeof v;
    assert_int_equal(uv_fileno((uv_handle_t *)stream, &fd), 0);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    return v != 0;
}

/* Counts streams the transport hands out and whether the option is on. */
struct streamStats {
    unsigned seen;
    unsigned nodelay;
};

static void statsCb(void *arg, struct uv_stream_s *stream)
{
    struct streamStats *s = arg;
    s->seen++;
    s->nodelay += (unsigned)hasNodelay(stream);
}

/* State of the single-transport tests. */
struct solo {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct tpdb_transport t;
    struct raft_uv_connect req;
    char address[32];
    struct uv_stream_s *accepted;
    struct uv_stream_s *connected;
    raft_id accepted_id;
    int connect_status;
    int connect_done;
    int closed;
    int timed_out;
};

static void deadlineCb(uv_timer_t *timer)
{
    struct solo *s = timer->data;
    s->timed_out = 1;
    uv_stop(&s->loop);
}

static void soloSetup(struct solo *s)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    memset(s, 0, sizeof *s);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    assert_int_equal(uv_timer_init(&s->loop, &s->deadline), 0);
    s->deadline.data = s;
    uv_timer_start(&s->deadline, deadlineCb, DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&s->deadline);
    assert_int_equal(tpdbTransportInit(&s->t, &s->loop, errmsg), TPDB_OK);
    /* raft_uv_init would set data; these tests stand in for raft. */
    s->t.base.data = s;
    snprintf(s->address, sizeof s->address, "127.0.0.1:%u", freePort());
    assert_int_equal(s->t.base.init(&s->t.base, 1, s->address), 0);
}

static void freeStreamCb(uv_handle_t *handle)
{
    raft_free(handle);
}

static void transportClosedCb(struct raft_uv_transport *base)
{
    struct solo *s = base->data;
    s->closed = 1;
}

/* Closes the transport and the loop, checking nothing is left behind. */
static void soloTeardown(struct solo *s)
{
    if (s->accepted != NULL) {
        uv_close((uv_handle_t *)s->accepted, freeStreamCb);
    }
    if (s->connected != NULL) {
        uv_close((uv_handle_t *)s->connected, freeStreamCb);
    }
    s->t.base.close(&s->t.base, transportClosedCb);
    uv_close((uv_handle_t *)&s->deadline, NULL);
    assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
    assert_true(s->closed);
    tpdbTransportClose(&s->t);
    assert_int_equal(uv_loop_close(&s->loop), 0);
}

static void soloAcceptCb(struct raft_uv_transport *base,
                         raft_id id,
                         const char *address,
                         struct uv_stream_s *stream)
{
    struct solo *s = base->data;
    (void)address;
    s->accepted = stream;
    s->accepted_id = id;
}

static void soloConnectCb(struct raft_uv_connect *req,
                          struct uv_stream_s *stream,
                          int status)
{
    struct solo *s = req->data;
    s->connect_done = 1;
    s->connect_status = status;
    s->connected = stream;
}

/* Runs the loop until the accept and the connect have both happened. */
static void runUntilConnected(struct solo *s)
{
    while (!s->timed_out && (s->accepted == NULL || !s->connect_done)) {
        uv_run(&s->loop, UV_RUN_ONCE);
    }
    assert_false(s->timed_out);
}

static void testLoopbackNodelay(void **state)
{
    struct solo s;
    struct streamStats stats = {0, 0};
    (void)state;
    soloSetup(&s);
    tpdbTransportSetStreamCb(&s.t, statsCb, &stats);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    s.req.data = &s;
    assert_int_equal(
        s.t.base.connect(&s.t.base, &s.req, 1, s.address, soloConnectCb), 0);
    runUntilConnected(&s);
    assert_int_equal(s.connect_status, 0);
    assert_non_null(s.connected);
    assert_int_equal(s.accepted_id, 1);
    /* raft gets relay ends; the TCP streams behind them were observed. */
    assert_int_equal(tpdbTransportNodelayCount(&s.t), 2);
    assert_int_equal(stats.seen, 2);
    assert_int_equal(stats.nodelay, 2);
    soloTeardown(&s);
}

static void testConnectRefused(void **state)
{
    struct solo s;
    char other[32];
    (void)state;
    soloSetup(&s);
    snprintf(other, sizeof other, "127.0.0.1:%u", freePort());
    s.req.data = &s;
    assert_int_equal(
        s.t.base.connect(&s.t.base, &s.req, 2, other, soloConnectCb), 0);
    while (!s.timed_out && !s.connect_done) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_false(s.timed_out);
    assert_int_not_equal(s.connect_status, 0);
    assert_null(s.connected);
    assert_int_equal(tpdbTransportNodelayCount(&s.t), 0);
    soloTeardown(&s);
}

static void testConnectBadAddress(void **state)
{
    struct solo s;
    (void)state;
    soloSetup(&s);
    s.req.data = &s;
    assert_int_not_equal(
        s.t.base.connect(&s.t.base, &s.req, 2, "not-an-address", soloConnectCb),
        0);
    assert_false(s.connect_done);
    soloTeardown(&s);
}

/* A connect still in flight when the transport closes reports
 * RAFT_CANCELED, before the transport's close callback. */
static void testCancelOnClose(void **state)
{
    struct solo s;
    (void)state;
    soloSetup(&s);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    s.req.data = &s;
    assert_int_equal(
        s.t.base.connect(&s.t.base, &s.req, 1, s.address, soloConnectCb), 0);
    soloTeardown(&s);
    assert_true(s.connect_done);
    assert_int_equal(s.connect_status, RAFT_CANCELED);
    assert_null(s.connected);
}

static void testConnectOom(void **state)
{
    struct solo s;
    (void)state;
    soloSetup(&s);
    s.req.data = &s;
    tpdbAllocFailAfter(0);
    assert_int_equal(
        s.t.base.connect(&s.t.base, &s.req, 1, s.address, soloConnectCb),
        RAFT_NOMEM);
    tpdbAllocFailAfter(-1);
    soloTeardown(&s);
}

static void testBindAddress(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    char bind_to[32];
    struct solo s;
    (void)state;
    soloSetup(&s);
    assert_int_equal(
        tpdbTransportSetBindAddress(&s.t, "no:such:address", errmsg),
        TPDB_INVALID);
    /* Same port as the advertised address, on every interface. */
    snprintf(bind_to, sizeof bind_to, "0.0.0.0:%s", strchr(s.address, ':') + 1);
    assert_int_equal(tpdbTransportSetBindAddress(&s.t, bind_to, errmsg),
                     TPDB_OK);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    s.req.data = &s;
    assert_int_equal(
        s.t.base.connect(&s.t.base, &s.req, 1, s.address, soloConnectCb), 0);
    runUntilConnected(&s);
    assert_int_equal(s.connect_status, 0);
    soloTeardown(&s);
}

/* ---- Handshakes from a raw client ------------------------------------- */

/* A plain libuv client that sends bytes and collects everything the server
 * sends back until end of file. */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uint8_t out[1024];
    size_t out_len;
    int close_after_write; /* shut the connection after sending */
    char in[1024];
    size_t in_len;
    int eof;
    int closed;
};

static void rawClosedCb(uv_handle_t *handle)
{
    struct raw *r = handle->data;
    r->closed = 1;
}

static void rawAllocCb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct raw *r = handle->data;
    (void)suggested;
    buf->base = r->in + r->in_len;
    buf->len = sizeof r->in - r->in_len;
}

static void rawReadCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct raw *r = stream->data;
    (void)buf;
    if (nread < 0) {
        r->eof = 1;
        uv_close((uv_handle_t *)&r->tcp, rawClosedCb);
        return;
    }
    r->in_len += (size_t)nread;
}

static void rawWriteCb(uv_write_t *w, int status)
{
    struct raw *r = w->data;
    /* The server may have closed first (it drops bad handshakes). */
    if (r->close_after_write || status != 0) {
        r->eof = 1;
        uv_close((uv_handle_t *)&r->tcp, rawClosedCb);
        return;
    }
    assert_int_equal(
        uv_read_start((uv_stream_t *)&r->tcp, rawAllocCb, rawReadCb), 0);
}

static void rawConnectCb(uv_connect_t *req, int status)
{
    struct raw *r = req->data;
    uv_buf_t b = uv_buf_init((char *)r->out, (unsigned)r->out_len);
    assert_int_equal(status, 0);
    r->write.data = r;
    assert_int_equal(
        uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, rawWriteCb), 0);
}

static void rawStart(struct raw *r, uv_loop_t *loop, const char *address)
{
    struct sockaddr_in sa;
    assert_int_equal(tpdbTransportParseAddress(address, &sa), TPDB_OK);
    assert_int_equal(uv_tcp_init(loop, &r->tcp), 0);
    r->tcp.data = r;
    r->connect.data = r;
    assert_int_equal(uv_tcp_connect(&r->connect, &r->tcp,
                                    (const struct sockaddr *)&sa, rawConnectCb),
                     0);
}

static void runUntil(struct solo *s, const int *flag)
{
    while (!s->timed_out && !*flag) {
        uv_run(&s->loop, UV_RUN_ONCE);
    }
    assert_false(s->timed_out);
}

static void testHandshakeCodec(void **state)
{
    uint8_t buf[TPDB_HANDSHAKE_MAX];
    char errmsg[TPDB_ERRMSG_SIZE];
    char long_address[TPDB_ADDRESS_MAX + 1];
    int type;
    uint64_t id;
    size_t len;
    (void)state;
    size_t n = tpdbHandshakeEncode(buf, TPDB_HANDSHAKE_JOIN, 7, "1.2.3.4:5");
    assert_int_equal(n, TPDB_HANDSHAKE_HDR + 9);
    assert_int_equal(tpdbHandshakeDecode(buf, &type, &id, &len, errmsg),
                     TPDB_OK);
    assert_int_equal(type, TPDB_HANDSHAKE_JOIN);
    assert_int_equal(id, 7);
    assert_int_equal(len, 9);
    assert_memory_equal(buf + TPDB_HANDSHAKE_HDR, "1.2.3.4:5", 9);

    /* Encode errors. */
    assert_int_equal(tpdbHandshakeEncode(buf, 1, 0, "1.2.3.4:5"), 0);
    assert_int_equal(tpdbHandshakeEncode(buf, 1, 1, ""), 0);
    memset(long_address, 'a', sizeof long_address - 1);
    long_address[sizeof long_address - 1] = '\0';
    assert_int_equal(tpdbHandshakeEncode(buf, 1, 1, long_address), 0);

    /* Every field checked on decode. */
    static const struct {
        size_t offset;
        uint8_t value;
    } corrupt[] = {
        {0, 'X'}, /* magic */
        {4, 2},   /* version */
        {6, 9},   /* type */
        {8, 0},   /* id (low byte of 7) */
        {16, 0},  /* address length 0 */
        {17, 1},  /* address length 265 */
        {20, 2},  /* reserved flag bits */
    };
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        tpdbHandshakeEncode(buf, TPDB_HANDSHAKE_JOIN, 7, "1.2.3.4:5");
        buf[corrupt[i].offset] = corrupt[i].value;
        errmsg[0] = '\0';
        assert_int_equal(tpdbHandshakeDecode(buf, &type, &id, &len, errmsg),
                         TPDB_PROTO);
        assert_true(strlen(errmsg) > 0);
    }
}

/* The cluster identity rides in the flags' top 24 bits beside the sealed
 * bit; the hash of a peers list ignores the order of its items. */
static void testHandshakeCluster(void **state)
{
    uint8_t buf[TPDB_HANDSHAKE_MAX];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct raft_configuration a, b;
    int type;
    uint64_t id;
    size_t len;
    (void)state;
    tpdbHandshakeEncode(buf, TPDB_HANDSHAKE_RAFT, 3, "1.2.3.4:5");
    assert_int_equal(tpdbHandshakeCluster(buf), 0);
    tpdbHandshakeSetCluster(buf, 0xabcdef);
    tpdbHandshakeSetSealed(buf);
    assert_int_equal(tpdbHandshakeDecode(buf, &type, &id, &len, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdbHandshakeCluster(buf), 0xabcdef);
    assert_true(tpdbHandshakeSealed(buf));

    raft_configuration_init(&a);
    raft_configuration_init(&b);
    assert_int_equal(tpdbPeersParse("1@h:1,2@h:2,3@h:3", &a, errmsg), TPDB_OK);
    assert_int_equal(tpdbPeersParse("3@h:3,1@h:1,2@h:2", &b, errmsg), TPDB_OK);
    uint32_t h = tpdbClusterHash(&a);
    assert_true(h != 0 && h <= 0xffffff);
    assert_int_equal(h, tpdbClusterHash(&b));
    raft_configuration_close(&b);
    raft_configuration_init(&b);
    assert_int_equal(tpdbPeersParse("1@h:1,2@h:2", &b, errmsg), TPDB_OK);
    assert_int_not_equal(h, tpdbClusterHash(&b));
    raft_configuration_close(&b);
    raft_configuration_init(&b);
    assert_int_equal(tpdbPeersParse("1@h:1,2@h:2,3@h:4", &b, errmsg), TPDB_OK);
    assert_int_not_equal(h, tpdbClusterHash(&b));
    raft_configuration_close(&b);
    raft_configuration_close(&a);
}

static void testParseAddress(void **state)
{
    struct sockaddr_in sa;
    (void)state;
    assert_int_equal(tpdbTransportParseAddress("10.1.2.3:9001", &sa), TPDB_OK);
    assert_int_equal(ntohs(sa.sin_port), 9001);
    assert_int_equal(ntohl(sa.sin_addr.s_addr), 0x0a010203);
    assert_int_equal(tpdbTransportParseAddress("0.0.0.0:0", &sa), TPDB_OK);
    static const char *const bad[] = {
        "",           "10.1.2.3",       ":80",         "10.1.2.3:",
        "10.1.2.3:x", "10.1.2.3:65536", "10.1.2.3:-1", "10.1.2.3:80x",
        "host:80",    "10.1.2.300:80",  "1:2:3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tpdbTransportParseAddress(bad[i], &sa), TPDB_INVALID);
    }
    assert_int_equal(tpdbTransportParseAddress(NULL, &sa), TPDB_INVALID);
}

/* Bytes that must make the transport close the connection without handing
 * it to raft or to the join callback. */
static size_t badHandshake(unsigned which, uint8_t *buf)
{
    size_t n = tpdbHandshakeEncode(buf, TPDB_HANDSHAKE_RAFT, 3, "10.0.0.1:7");
    switch (which) {
        case 0:
            memcpy(buf, "GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxx", 34);
            return 34;
        case 1:
            buf[4] = 99; /* version */
            return n;
        case 2:
            buf[6] = 3; /* type */
            return n;
        case 3:
            memset(buf + 8, 0, 8); /* id 0 */
            return n;
        case 4:
            tpdbPut32(buf + 16, 100000); /* address length */
            return n;
        case 5:
            buf[TPDB_HANDSHAKE_HDR + 2] = '\n'; /* unprintable address */
            return n;
        case 6:
            return 10; /* truncated header, then the peer goes away */
        case 7:
            return n - 3; /* truncated address */
        default:
            for (size_t i = 0; i < 200; i++) {
                buf[i] = (uint8_t)(i * 37 + 11);
            }
            return 200;
    }
}

static void testGarbageHandshake(void **state)
{
    struct solo s;
    (void)state;
    soloSetup(&s);
    tpdbLogSetLevel(TPDB_LOG_NONE);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    for (unsigned i = 0; i < 9; i++) {
        struct raw r;
        memset(&r, 0, sizeof r);
        r.out_len = badHandshake(i, r.out);
        r.close_after_write = i == 6 || i == 7;
        rawStart(&r, &s.loop, s.address);
        runUntil(&s, &r.closed);
        assert_int_equal(r.in_len, 0);
    }
    /* Let the server side see the truncated ones end. */
    while (!s.timed_out && s.t.conns != NULL) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_null(s.t.conns);
    assert_null(s.accepted);
    assert_int_equal(tpdbTransportNodelayCount(&s.t), 0);
    soloTeardown(&s);
}

/* A peer that sends part of a handshake and then nothing is closed after
 * the handshake timeout. */
static void testHandshakeTimeout(void **state)
{
    struct solo s;
    struct raw r;
    (void)state;
    soloSetup(&s);
    s.t.handshake_timeout_ms = 100;
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    memcpy(r.out, "TPDB\x01", 5);
    r.out_len = 5;
    uint64_t start = tpdbNowMs();
    rawStart(&r, &s.loop, s.address);
    runUntil(&s, &r.closed);
    assert_true(tpdbNowMs() - start >= 100);
    assert_int_equal(r.in_len, 0);
    while (!s.timed_out && s.t.conns != NULL) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_null(s.t.conns);
    assert_null(s.accepted);
    soloTeardown(&s);
}

/* Out of memory at accept: the connection is dropped and the listener keeps
 * accepting afterwards. */
static void testAcceptOom(void **state)
{
    struct solo s;
    struct raw r;
    (void)state;
    soloSetup(&s);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    r.out_len = tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_RAFT, 4, "1.2.3.4:5");
    tpdbAllocFailAfter(0);
    rawStart(&r, &s.loop, s.address);
    runUntil(&s, &r.closed);
    tpdbAllocFailAfter(-1);
    assert_null(s.accepted);
    memset(&r, 0, sizeof r);
    r.out_len = tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_RAFT, 4, "1.2.3.4:5");
    rawStart(&r, &s.loop, s.address);
    while (!s.timed_out && s.accepted == NULL) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_int_equal(s.accepted_id, 4);
    uv_close((uv_handle_t *)&r.tcp, rawClosedCb);
    runUntil(&s, &r.closed);
    soloTeardown(&s);
}

/* Raft's first message may arrive in the same segment as the handshake: the
 * transport must leave it in the socket, and it reaches raft through the
 * relay once checked. */
static uint8_t leftover[64];
static size_t leftover_len;

static void leftoverAllocCb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = (char *)leftover + leftover_len;
    buf->len = sizeof leftover - leftover_len;
}

static void leftoverReadCb(uv_stream_t *stream, ssize_t n, const uv_buf_t *b)
{
    (void)stream;
    (void)b;
    if (n > 0) {
        leftover_len += (size_t)n;
    }
}

static void testBytesAfterHandshake(void **state)
{
    struct solo s;
    struct raw r;
    (void)state;
    soloSetup(&s);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    uint8_t *vote;
    r.out_len =
        tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_RAFT, 42, "127.0.0.1:1");
    /* A RequestVote: type 3, header 40 bytes: term 2, candidate 42, last
     * index 1, last term 1, flags 0. */
    vote = r.out + r.out_len;
    memset(vote, 0, 56);
    tpdbPut64(vote, 3);
    tpdbPut64(vote + 8, 40);
    tpdbPut64(vote + 16, 2);
    tpdbPut64(vote + 24, 42);
    tpdbPut64(vote + 32, 1);
    tpdbPut64(vote + 40, 1);
    r.out_len += 56;
    rawStart(&r, &s.loop, s.address);
    while (!s.timed_out && s.accepted == NULL) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_non_null(s.accepted);
    assert_int_equal(s.accepted_id, 42);
    leftover_len = 0;
    assert_int_equal(uv_read_start(s.accepted, leftoverAllocCb, leftoverReadCb),
                     0);
    while (!s.timed_out && leftover_len < 56) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_int_equal(leftover_len, 56);
    assert_memory_equal(leftover, vote, 56);
    uv_close((uv_handle_t *)&r.tcp, rawClosedCb);
    runUntil(&s, &r.closed);
    soloTeardown(&s);
}

/* A message raft's decoder could not take (an AppendEntries whose header
 * says 1 byte) never reaches raft: its stream ends with no byte. */
static int refused_eof;

static void refusedReadCb(uv_stream_t *stream, ssize_t n, const uv_buf_t *b)
{
    (void)stream;
    (void)b;
    if (n > 0) {
        leftover_len += (size_t)n;
    } else if (n < 0) {
        refused_eof = 1;
    }
}

static void testCrashFrameRefused(void **state)
{
    struct solo s;
    struct raw r;
    uint8_t *msg;
    (void)state;
    soloSetup(&s);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    r.out_len =
        tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_RAFT, 42, "127.0.0.1:1");
    msg = r.out + r.out_len;
    tpdbPut64(msg, 1); /* AppendEntries */
    tpdbPut64(msg + 8, 1);
    msg[16] = 0xff;
    r.out_len += 17;
    rawStart(&r, &s.loop, s.address);
    while (!s.timed_out && s.accepted == NULL) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_non_null(s.accepted);
    leftover_len = 0;
    refused_eof = 0;
    assert_int_equal(uv_read_start(s.accepted, leftoverAllocCb, refusedReadCb),
                     0);
    while (!s.timed_out && !refused_eof) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_true(refused_eof);
    assert_int_equal(leftover_len, 0);
    assert_true(tpdbTransportRefusedCount(&s.t) >= 1);
    if (!uv_is_closing((uv_handle_t *)&r.tcp)) {
        uv_close((uv_handle_t *)&r.tcp, rawClosedCb);
    }
    runUntil(&s, &r.closed);
    soloTeardown(&s);
}

/* JOIN requests reach the join callback with the claimed identity. */
struct joinSeen {
    int calls;
    uint64_t id;
    char address[64];
    struct tpdb_join_req *req;
    int answer; /* reply at once */
};

static void joinCb(void *arg,
                   struct tpdb_join_req *req,
                   uint64_t id,
                   const char *address)
{
    struct joinSeen *j = arg;
    j->calls++;
    j->id = id;
    snprintf(j->address, sizeof j->address, "%s", address);
    j->req = req;
    if (j->answer) {
        tpdbTransportJoinReply(req, "welcome", 7);
        j->req = NULL;
    }
}

static void testJoinRequest(void **state)
{
    struct solo s;
    struct raw r;
    struct joinSeen j;
    (void)state;
    soloSetup(&s);
    memset(&j, 0, sizeof j);
    j.answer = 1;
    tpdbTransportSetJoinCb(&s.t, joinCb, &j);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    r.out_len =
        tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_JOIN, 9, "127.0.0.1:4242");
    rawStart(&r, &s.loop, s.address);
    runUntil(&s, &r.closed);
    assert_int_equal(j.calls, 1);
    assert_int_equal(j.id, 9);
    assert_string_equal(j.address, "127.0.0.1:4242");
    assert_int_equal(r.in_len, 7);
    assert_memory_equal(r.in, "welcome", 7);
    assert_null(s.accepted);
    soloTeardown(&s);
}

static void testJoinWithoutHandler(void **state)
{
    struct solo s;
    struct raw r;
    (void)state;
    soloSetup(&s);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    r.out_len =
        tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_JOIN, 9, "127.0.0.1:4242");
    rawStart(&r, &s.loop, s.address);
    runUntil(&s, &r.closed);
    assert_int_equal(r.in_len, 0);
    assert_null(s.accepted);
    soloTeardown(&s);
}

/* A request still held when the transport closes: the reply only frees
 * it (checked leak-free under ASan/valgrind). */
static void testJoinReplyAfterClose(void **state)
{
    struct solo s;
    struct raw r;
    struct joinSeen j;
    (void)state;
    soloSetup(&s);
    memset(&j, 0, sizeof j);
    tpdbTransportSetJoinCb(&s.t, joinCb, &j);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    memset(&r, 0, sizeof r);
    r.out_len =
        tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_JOIN, 5, "127.0.0.1:4243");
    rawStart(&r, &s.loop, s.address);
    while (!s.timed_out && j.calls == 0) {
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    assert_non_null(j.req);
    soloTeardown(&s);
    assert_true(r.closed);
    tpdbTransportJoinReply(j.req, "late", 4);
}

/* Two raft_uv nodes over the transport. */
struct node {
    struct tpdb_transport t;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    struct streamStats stats;
    char dir[64];
    char address[32];
    unsigned applied;
    int closed;
};

struct pair {
    uv_loop_t loop;
    uv_timer_t tick;
    uv_timer_t deadline;
    struct node nodes[2];
    struct raft_apply req;
    int submitted;
    int apply_status;
    int apply_ok;
    int stopping;
    int timed_out;
};

static int fsmApplyCb(struct raft_fsm *fsm,
                      const struct raft_buffer *buf,
                      void **result)
{
    struct node *n = fsm->data;
    if (buf->len == 8 && memcmp(buf->base, "tpdbtest", 8) == 0) {
        n->applied++;
    }
    *result = NULL;
    return 0;
}

static int fsmSnapshotCb(struct raft_fsm *fsm,
                         struct raft_buffer *bufs[],
                         unsigned *n_bufs)
{
    (void)fsm;
    (void)bufs;
    (void)n_bufs;
    return RAFT_NOTFOUND;
}

static int fsmRestoreCb(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    raft_free(buf->base);
    return 0;
}

static void raftClosedCb(struct raft *r)
{
    struct node *n = r->data;
    raft_uv_close(&n->io);
    tpdbTransportClose(&n->t);
    n->closed = 1;
}

static void pairStop(struct pair *p)
{
    if (p->stopping) {
        return;
    }
    p->stopping = 1;
    uv_close((uv_handle_t *)&p->tick, NULL);
    uv_close((uv_handle_t *)&p->deadline, NULL);
    for (int i = 0; i < 2; i++) {
        raft_close(&p->nodes[i].raft, raftClosedCb);
    }
}

static void pairDeadlineCb(uv_timer_t *timer)
{
    struct pair *p = timer->data;
    p->timed_out = 1;
    pairStop(p);
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct pair *p = req->data;
    (void)result;
    p->apply_status = status;
    p->apply_ok = status == 0;
    if (status != 0) {
        /* Leadership moved (a slow run, e.g. under valgrind): the entry may
         * or may not commit, so submit another and accept either. */
        p->submitted = 0;
    }
}

/* Submits one entry on whichever node leads, then waits for both FSMs. */
static void tickCb(uv_timer_t *timer)
{
    struct pair *p = timer->data;
    if (p->apply_ok && p->nodes[0].applied > 0 && p->nodes[1].applied > 0) {
        pairStop(p);
        return;
    }
    for (int i = 0; i < 2 && !p->submitted; i++) {
        struct node *n = &p->nodes[i];
        struct raft_buffer buf;
        if (raft_state(&n->raft) != RAFT_LEADER) {
            continue;
        }
        buf.len = 8;
        buf.base = raft_malloc(8);
        assert_non_null(buf.base);
        memcpy(buf.base, "tpdbtest", 8);
        p->req.data = p;
        if (raft_apply(&n->raft, &p->req, &buf, 1, applyCb) == 0) {
            p->submitted = 1;
        } else {
            raft_free(buf.base);
        }
    }
}

static void nodeStart(struct node *n,
                      unsigned id,
                      const struct raft_configuration *conf,
                      uv_loop_t *loop,
                      const struct tpdb_seal_keys *keys)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    assert_int_equal(tpdbTransportInit(&n->t, loop, errmsg), TPDB_OK);
    if (keys != NULL) {
        tpdbTransportSetKeys(&n->t, keys);
    }
    tpdbTransportSetStreamCb(&n->t, statsCb, &n->stats);
    assert_int_equal(raft_uv_init(&n->io, loop, n->dir, &n->t.base), 0);
    raft_uv_set_connect_retry_delay(&n->io, 20);
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsmApplyCb;
    n->fsm.snapshot = fsmSnapshotCb;
    n->fsm.restore = fsmRestoreCb;
    assert_int_equal(raft_init(&n->raft, &n->io, &n->fsm, id, n->address), 0);
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, 150);
    raft_set_heartbeat_timeout(&n->raft, 30);
    assert_int_equal(raft_bootstrap(&n->raft, conf), 0);
    assert_int_equal(raft_start(&n->raft), 0);
}

static int removeEntryCb(const char *path,
                         const struct stat *st,
                         int flag,
                         struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void removeDir(const char *dir)
{
    assert_int_equal(nftw(dir, removeEntryCb, 8, FTW_DEPTH | FTW_PHYS), 0);
}

/* Two raft nodes commit an entry over our transport (sealed if keys). */
static void twoRaftNodes(const struct tpdb_seal_keys *keys)
{
    struct raft_configuration conf;
    struct pair *p = calloc(1, sizeof *p);
    assert_non_null(p);
    assert_int_equal(uv_loop_init(&p->loop), 0);
    raft_configuration_init(&conf);
    for (unsigned i = 0; i < 2; i++) {
        struct node *n = &p->nodes[i];
        snprintf(n->dir, sizeof n->dir, "/tmp/tpdb-test-transport-XXXXXX");
        assert_non_null(mkdtemp(n->dir));
        snprintf(n->address, sizeof n->address, "127.0.0.1:%u", freePort());
        assert_int_equal(
            raft_configuration_add(&conf, i + 1, n->address, RAFT_VOTER), 0);
    }
    for (unsigned i = 0; i < 2; i++) {
        nodeStart(&p->nodes[i], i + 1, &conf, &p->loop, keys);
    }
    raft_configuration_close(&conf);
    uv_timer_init(&p->loop, &p->tick);
    uv_timer_init(&p->loop, &p->deadline);
    p->tick.data = p->deadline.data = p;
    uv_timer_start(&p->tick, tickCb, 5, 5);
    uv_timer_start(&p->deadline, pairDeadlineCb, DEADLINE_MS, 0);
    assert_int_equal(uv_run(&p->loop, UV_RUN_DEFAULT), 0);

    assert_false(p->timed_out);
    assert_int_equal(p->apply_status, 0);
    for (int i = 0; i < 2; i++) {
        struct node *n = &p->nodes[i];
        assert_true(n->closed);
        assert_true(n->applied >= 1);
        /* At least one stream each way: connected and accepted. */
        assert_true(n->stats.seen >= 2);
        assert_int_equal(n->stats.nodelay, n->stats.seen);
        assert_int_equal(tpdbTransportNodelayCount(&n->t), n->stats.seen);
        print_message("[ info ] node %d: TCP_NODELAY on %u streams%s\n", i + 1,
                      n->stats.seen, keys != NULL ? ", sealed" : "");
        assert_int_equal(tpdbTransportRefusedCount(&n->t), 0);
        removeDir(n->dir);
    }
    assert_int_equal(uv_loop_close(&p->loop), 0);
    free(p);
}

static void testTwoRaftNodes(void **state)
{
    (void)state;
    twoRaftNodes(NULL);
}

static void testTwoSealedRaftNodes(void **state)
{
    struct tpdb_seal_keys keys = {1, {{0}}};
    (void)state;
    assert_int_equal(tpdbSealInit(NULL), TPDB_OK);
    randombytes_buf(keys.key[0], sizeof keys.key[0]);
    twoRaftNodes(&keys);
}

/* A keyed transport refuses a plain handshake, and a sealed one made with
 * another key, without handing anything to raft. */
static void testSealedRefusesStrangers(void **state)
{
    struct solo s;
    struct raw r;
    struct tpdb_seal_keys keys = {1, {{0}}};
    struct tpdb_seal_keys other = {1, {{0}}};
    struct tpdb_seal_hs hs;
    (void)state;
    assert_int_equal(tpdbSealInit(NULL), TPDB_OK);
    randombytes_buf(keys.key[0], sizeof keys.key[0]);
    randombytes_buf(other.key[0], sizeof other.key[0]);
    soloSetup(&s);
    tpdbTransportSetKeys(&s.t, &keys);
    assert_int_equal(s.t.base.listen(&s.t.base, soloAcceptCb), 0);
    for (int k = 0; k < 2; k++) {
        memset(&r, 0, sizeof r);
        r.out_len =
            tpdbHandshakeEncode(r.out, TPDB_HANDSHAKE_RAFT, 5, "127.0.0.1:1");
        if (k == 1) {
            tpdbHandshakeSetSealed(r.out);
            tpdbSealClientHello(&hs, &other, r.out, r.out_len,
                                r.out + r.out_len);
            r.out_len += TPDB_SEAL_HELLO;
        }
        rawStart(&r, &s.loop, s.address);
        runUntil(&s, &r.closed);
        assert_int_equal(r.in_len, 0); /* not even a server hello */
    }
    assert_null(s.accepted);
    assert_int_equal(tpdbTransportRefusedCount(&s.t), 2);
    soloTeardown(&s);
}

int main(void)
{
    /* A write to a connection the server closed must fail, not kill. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testHandshakeCluster),
        cmocka_unit_test(testLoopbackNodelay),
        cmocka_unit_test(testConnectRefused),
        cmocka_unit_test(testConnectBadAddress),
        cmocka_unit_test(testCancelOnClose),
        cmocka_unit_test(testConnectOom),
        cmocka_unit_test(testBindAddress),
        cmocka_unit_test(testHandshakeCodec),
        cmocka_unit_test(testParseAddress),
        cmocka_unit_test(testGarbageHandshake),
        cmocka_unit_test(testHandshakeTimeout),
        cmocka_unit_test(testAcceptOom),
        cmocka_unit_test(testBytesAfterHandshake),
        cmocka_unit_test(testCrashFrameRefused),
        cmocka_unit_test(testJoinRequest),
        cmocka_unit_test(testJoinWithoutHandler),
        cmocka_unit_test(testJoinReplyAfterClose),
        cmocka_unit_test(testTwoRaftNodes),
        cmocka_unit_test(testTwoSealedRaftNodes),
        cmocka_unit_test(testSealedRefusesStrangers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
