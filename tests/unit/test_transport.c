/* Unit tests for raftfsm/transport.c over real loopback sockets: TCP_NODELAY
 * on accepted and connected streams, connect errors, cancellation on close,
 * the bind address, and two raft_uv nodes electing a leader and applying an
 * entry through the transport. Every loop runs under a hard deadline. */
#include <ftw.h>
#include <setjmp.h>
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
    assert_true(hasNodelay(s.accepted));
    assert_true(hasNodelay(s.connected));
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
                      uv_loop_t *loop)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    assert_int_equal(tpdbTransportInit(&n->t, loop, errmsg), TPDB_OK);
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

static void testTwoRaftNodes(void **state)
{
    struct raft_configuration conf;
    struct pair *p = calloc(1, sizeof *p);
    (void)state;
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
        nodeStart(&p->nodes[i], i + 1, &conf, &p->loop);
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
        print_message("[ info ] node %d: TCP_NODELAY on %u streams\n", i + 1,
                      n->stats.seen);
        removeDir(n->dir);
    }
    assert_int_equal(uv_loop_close(&p->loop), 0);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testLoopbackNodelay),
        cmocka_unit_test(testConnectRefused),
        cmocka_unit_test(testConnectBadAddress),
        cmocka_unit_test(testCancelOnClose),
        cmocka_unit_test(testConnectOom),
        cmocka_unit_test(testBindAddress),
        cmocka_unit_test(testTwoRaftNodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
