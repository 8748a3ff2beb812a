/* Unit tests for raftfsm/join.c: the reply codec (round trip, corrupt
 * fields), the joining client against scripted members built on the real
 * transport (OK, redirect, retry with backoff, refusal, garbage replies,
 * nothing listening, start errors, close mid-run), and the member's side
 * on two real raft_uv nodes in one loop: a node started empty joins a
 * one-node cluster and becomes a voter; joining again is "already a
 * member"; the same id at another address is refused. Every loop runs under
 * a hard deadline. */
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
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "raftfsm/join.h"
#include "raftfsm/transport.h"

#define DEADLINE_MS 10000

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

static void testReplyCodec(void **state)
{
    uint8_t buf[TPDB_HANDSHAKE_MAX];
    char errmsg[TPDB_ERRMSG_SIZE];
    char text[400];
    int status;
    size_t len;
    (void)state;
    assert_int_equal(tpdbJoinReplyEncode(buf, TPDB_JOIN_REDIRECT, "1.2.3.4:5"),
                     TPDB_JOIN_REPLY_HDR + 9);
    assert_int_equal(tpdbJoinReplyDecode(buf, &status, &len, errmsg), TPDB_OK);
    assert_int_equal(status, TPDB_JOIN_REDIRECT);
    assert_int_equal(len, 9);
    assert_memory_equal(buf + TPDB_JOIN_REPLY_HDR, "1.2.3.4:5", 9);

    /* Long texts are cut; an empty one is fine. */
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    assert_int_equal(tpdbJoinReplyEncode(buf, TPDB_JOIN_RETRY, text),
                     TPDB_JOIN_REPLY_HDR + TPDB_JOIN_TEXT_MAX);
    assert_int_equal(tpdbJoinReplyEncode(buf, TPDB_JOIN_OK, NULL),
                     TPDB_JOIN_REPLY_HDR);
    assert_int_equal(tpdbJoinReplyDecode(buf, &status, &len, errmsg), TPDB_OK);
    assert_int_equal(len, 0);

    static const struct {
        size_t offset;
        uint8_t value;
    } corrupt[] = {
        {0, 'X'}, /* magic */
        {4, 7},   /* version */
        {6, 4},   /* status */
        {9, 1},   /* text length 256 */
        {12, 1},  /* reserved */
    };
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        tpdbJoinReplyEncode(buf, TPDB_JOIN_OK, "ok");
        buf[corrupt[i].offset] = corrupt[i].value;
        assert_int_equal(tpdbJoinReplyDecode(buf, &status, &len, errmsg),
                         TPDB_PROTO);
    }
}

/* ---- The client against scripted members ------------------------------ */

/* A member that answers JOIN requests from a script. */
struct member {
    struct tpdb_transport t;
    char address[32];
    const int *script; /* statuses in turn; the last repeats */
    unsigned n_script;
    const char *text; /* reply text (REDIRECT: the target) */
    int garbage;      /* reply junk instead */
    unsigned requests;
    uint64_t last_id;
    char last_address[64];
    int closed;
};

struct world {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct member members[2];
    struct tpdb_join_client client;
    int done;
    int rc;
    char msg[TPDB_ERRMSG_SIZE];
    int timed_out;
};

static void deadlineCb(uv_timer_t *timer)
{
    struct world *w = timer->data;
    w->timed_out = 1;
    uv_stop(&w->loop);
}

static void memberJoinCb(void *arg,
                         struct tpdb_join_req *req,
                         uint64_t id,
                         const char *address)
{
    struct member *m = arg;
    uint8_t buf[TPDB_HANDSHAKE_MAX];
    unsigned k = m->requests < m->n_script ? m->requests : m->n_script - 1;
    m->requests++;
    m->last_id = id;
    snprintf(m->last_address, sizeof m->last_address, "%s", address);
    if (m->garbage) {
        tpdbTransportJoinReply(req, "HTTP/1.0 400 Bad Request\r\n", 26);
        return;
    }
    tpdbTransportJoinReply(req, buf,
                           tpdbJoinReplyEncode(buf, m->script[k], m->text));
}

static void memberAcceptCb(struct raft_uv_transport *t,
                           raft_id id,
                           const char *address,
                           struct uv_stream_s *stream)
{
    (void)t;
    (void)id;
    (void)address;
    (void)stream;
    fail_msg("a JOIN connection was handed to raft");
}

static void memberStart(struct world *w, int i)
{
    struct member *m = &w->members[i];
    char errmsg[TPDB_ERRMSG_SIZE];
    assert_int_equal(tpdbTransportInit(&m->t, &w->loop, errmsg), TPDB_OK);
    m->t.base.data = m;
    snprintf(m->address, sizeof m->address, "127.0.0.1:%u", freePort());
    assert_int_equal(m->t.base.init(&m->t.base, (raft_id)(i + 1), m->address),
                     0);
    tpdbTransportSetJoinCb(&m->t, memberJoinCb, m);
    assert_int_equal(m->t.base.listen(&m->t.base, memberAcceptCb), 0);
}

static void worldSetup(struct world *w, int n_members)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    uv_timer_init(&w->loop, &w->deadline);
    w->deadline.data = w;
    uv_timer_start(&w->deadline, deadlineCb, DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&w->deadline);
    for (int i = 0; i < n_members; i++) {
        memberStart(w, i);
    }
}

static void memberClosedCb(struct raft_uv_transport *t)
{
    struct member *m = t->data;
    m->closed = 1;
}

static void worldTeardown(struct world *w, int n_members)
{
    tpdbJoinClientClose(&w->client);
    for (int i = 0; i < n_members; i++) {
        w->members[i].t.base.close(&w->members[i].t.base, memberClosedCb);
    }
    uv_close((uv_handle_t *)&w->deadline, NULL);
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < n_members; i++) {
        assert_true(w->members[i].closed);
        tpdbTransportClose(&w->members[i].t);
    }
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&w->loop), 0);
}

static void doneCb(void *arg, int rc, const char *msg)
{
    struct world *w = arg;
    w->done++;
    w->rc = rc;
    snprintf(w->msg, sizeof w->msg, "%s", msg);
}

static void clientRun(struct world *w, const char *target, unsigned ms)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    assert_int_equal(tpdbJoinClientStart(&w->client, &w->loop, 9, "127.0.0.1:1",
                                         target, NULL, ms, doneCb, w, errmsg),
                     TPDB_OK);
    while (!w->timed_out && !w->done) {
        uv_run(&w->loop, UV_RUN_ONCE);
    }
    assert_false(w->timed_out);
    assert_int_equal(w->done, 1);
}

static const int scriptOk[] = {TPDB_JOIN_OK};
static const int scriptRetryOk[] = {TPDB_JOIN_RETRY, TPDB_JOIN_RETRY,
                                    TPDB_JOIN_OK};
static const int scriptRefused[] = {TPDB_JOIN_REFUSED};
static const int scriptRedirect[] = {TPDB_JOIN_REDIRECT};
static const int scriptRetry[] = {TPDB_JOIN_RETRY};

static void testClientOk(void **state)
{
    struct world w;
    (void)state;
    worldSetup(&w, 1);
    w.members[0].script = scriptOk;
    w.members[0].n_script = 1;
    w.members[0].text = "added";
    clientRun(&w, w.members[0].address, 5000);
    assert_int_equal(w.rc, TPDB_OK);
    assert_string_equal(w.msg, "added");
    assert_int_equal(w.members[0].requests, 1);
    assert_int_equal(w.members[0].last_id, 9);
    assert_string_equal(w.members[0].last_address, "127.0.0.1:1");
    worldTeardown(&w, 1);
}

static void testClientRedirect(void **state)
{
    struct world w;
    (void)state;
    worldSetup(&w, 2);
    w.members[0].script = scriptRedirect;
    w.members[0].n_script = 1;
    w.members[0].text = w.members[1].address;
    w.members[1].script = scriptOk;
    w.members[1].n_script = 1;
    w.members[1].text = "added";
    clientRun(&w, w.members[0].address, 5000);
    assert_int_equal(w.rc, TPDB_OK);
    assert_int_equal(w.members[0].requests, 1);
    assert_int_equal(w.members[1].requests, 1);
    worldTeardown(&w, 2);
}

static void testClientRetryThenOk(void **state)
{
    struct world w;
    (void)state;
    worldSetup(&w, 1);
    w.members[0].script = scriptRetryOk;
    w.members[0].n_script = 3;
    w.members[0].text = "busy";
    clientRun(&w, w.members[0].address, 5000);
    assert_int_equal(w.rc, TPDB_OK);
    assert_int_equal(w.members[0].requests, 3);
    worldTeardown(&w, 1);
}

static void testClientRefused(void **state)
{
    struct world w;
    (void)state;
    worldSetup(&w, 1);
    w.members[0].script = scriptRefused;
    w.members[0].n_script = 1;
    w.members[0].text = "id taken";
    clientRun(&w, w.members[0].address, 5000);
    assert_int_equal(w.rc, TPDB_INVALID);
    assert_string_equal(w.msg, "id taken");
    worldTeardown(&w, 1);
}

/* Transient answers until the deadline: TPDB_TIMEOUT with the last reason. */
static void testClientRetryTimeout(void **state)
{
    struct world w;
    (void)state;
    worldSetup(&w, 1);
    w.members[0].script = scriptRetry;
    w.members[0].n_script = 1;
    w.members[0].text = "no leader known";
    clientRun(&w, w.members[0].address, 400);
    assert_int_equal(w.rc, TPDB_TIMEOUT);
    assert_non_null(strstr(w.msg, "no leader known"));
    assert_true(w.members[0].requests >= 2);
    worldTeardown(&w, 1);
}

static void testClientGarbageReply(void **state)
{
    struct world w;
    (void)state;
    worldSetup(&w, 1);
    w.members[0].garbage = 1;
    clientRun(&w, w.members[0].address, 300);
    assert_int_equal(w.rc, TPDB_TIMEOUT);
    assert_non_null(strstr(w.msg, "bad magic"));
    worldTeardown(&w, 1);
}

static void testClientNothingListening(void **state)
{
    struct world w;
    char target[32];
    (void)state;
    worldSetup(&w, 0);
    snprintf(target, sizeof target, "127.0.0.1:%u", freePort());
    clientRun(&w, target, 300);
    assert_int_equal(w.rc, TPDB_TIMEOUT);
    assert_non_null(strstr(w.msg, "connect to"));
    worldTeardown(&w, 0);
}

static void testClientStartErrors(void **state)
{
    struct world w;
    char errmsg[TPDB_ERRMSG_SIZE];
    (void)state;
    worldSetup(&w, 1);
    w.members[0].script = scriptOk;
    w.members[0].n_script = 1;
    assert_int_equal(
        tpdbJoinClientStart(&w.client, &w.loop, 9, "127.0.0.1:1",
                            "localhost:80", NULL, 1000, doneCb, &w, errmsg),
        TPDB_INVALID);
    assert_int_equal(tpdbJoinClientStart(&w.client, &w.loop, 9, "127.0.0.1:1",
                                         NULL, NULL, 1000, doneCb, &w, errmsg),
                     TPDB_INVALID);
    assert_int_equal(
        tpdbJoinClientStart(&w.client, &w.loop, 9, "127.0.0.1:1", "127.0.0.1:1",
                            NULL, 1000, doneCb, &w, errmsg),
        TPDB_INVALID);
    assert_int_equal(tpdbJoinClientStart(&w.client, &w.loop, 9, "127.0.0.1:1",
                                         w.members[0].address, NULL, 1000,
                                         doneCb, &w, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdbJoinClientStart(&w.client, &w.loop, 9, "127.0.0.1:1",
                                         w.members[0].address, NULL, 1000,
                                         doneCb, &w, errmsg),
                     TPDB_BUSY);
    /* Closed mid-run: no callback, nothing left open. */
    uv_run(&w.loop, UV_RUN_NOWAIT);
    worldTeardown(&w, 1);
    assert_int_equal(w.done, 0);
}

/* ---- The member's side on real raft nodes ----------------------------- */

struct node {
    struct tpdb_transport t;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    char dir[64];
    char address[32];
    int closed;
};

struct duo {
    uv_loop_t loop;
    uv_timer_t deadline;
    struct node nodes[2];
    struct tpdb_join_client client;
    int done;
    int rc;
    char msg[TPDB_ERRMSG_SIZE];
    int timed_out;
};

static int fsmApplyCb(struct raft_fsm *fsm,
                      const struct raft_buffer *buf,
                      void **result)
{
    (void)fsm;
    (void)buf;
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

static void nodeStart(struct node *n, unsigned id, int bootstrap, uv_loop_t *l)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    snprintf(n->dir, sizeof n->dir, "/tmp/tpdb-test-join-XXXXXX");
    assert_non_null(mkdtemp(n->dir));
    snprintf(n->address, sizeof n->address, "127.0.0.1:%u", freePort());
    assert_int_equal(tpdbTransportInit(&n->t, l, errmsg), TPDB_OK);
    tpdbTransportSetJoinCb(&n->t, tpdbJoinServe, &n->raft);
    assert_int_equal(raft_uv_init(&n->io, l, n->dir, &n->t.base), 0);
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
    if (bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        assert_int_equal(
            raft_configuration_add(&conf, id, n->address, RAFT_VOTER), 0);
        assert_int_equal(raft_bootstrap(&n->raft, &conf), 0);
        raft_configuration_close(&conf);
    }
    assert_int_equal(raft_start(&n->raft), 0);
}

static void duoDeadlineCb(uv_timer_t *timer)
{
    struct duo *d = timer->data;
    d->timed_out = 1;
    uv_stop(&d->loop);
}

static void duoDoneCb(void *arg, int rc, const char *msg)
{
    struct duo *d = arg;
    d->done++;
    d->rc = rc;
    snprintf(d->msg, sizeof d->msg, "%s", msg);
}

/* Runs the client from node `from` (id and address as given) against
 * `target` until it reports. */
static void duoJoin(struct duo *d,
                    uint64_t id,
                    const char *address,
                    const char *target,
                    unsigned ms)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    d->done = 0;
    assert_int_equal(
        tpdbJoinClientStart(&d->client, &d->loop, id, address, target, NULL, ms,
                            duoDoneCb, d, errmsg),
        TPDB_OK);
    while (!d->timed_out && !d->done) {
        uv_run(&d->loop, UV_RUN_ONCE);
    }
    assert_false(d->timed_out);
}

static void raftClosedCb(struct raft *r)
{
    struct node *n = r->data;
    raft_uv_close(&n->io);
    tpdbTransportClose(&n->t);
    n->closed = 1;
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

static const char *roleOf(struct raft *r, uint64_t id)
{
    for (unsigned i = 0; i < r->configuration.n; i++) {
        if (r->configuration.servers[i].id == id) {
            return r->configuration.servers[i].role == RAFT_VOTER ? "voter"
                                                                  : "other";
        }
    }
    return "absent";
}

static void testServeOnRaft(void **state)
{
    struct duo *d = calloc(1, sizeof *d);
    (void)state;
    assert_non_null(d);
    assert_int_equal(uv_loop_init(&d->loop), 0);
    uv_timer_init(&d->loop, &d->deadline);
    d->deadline.data = d;
    uv_timer_start(&d->deadline, duoDeadlineCb, DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&d->deadline);
    nodeStart(&d->nodes[0], 1, 1, &d->loop);
    nodeStart(&d->nodes[1], 2, 0, &d->loop);

    /* Node 2, started empty, knows no leader: transient until timeout. */
    duoJoin(d, 3, "127.0.0.1:9", d->nodes[1].address, 200);
    assert_int_equal(d->rc, TPDB_TIMEOUT);
    assert_non_null(strstr(d->msg, "no leader known"));

    /* Node 2 joins the one-node cluster of node 1 and becomes a voter. */
    duoJoin(d, 2, d->nodes[1].address, d->nodes[0].address, 8000);
    assert_int_equal(d->rc, TPDB_OK);
    assert_string_equal(roleOf(&d->nodes[0].raft, 2), "voter");

    /* Again: already a member. */
    duoJoin(d, 2, d->nodes[1].address, d->nodes[0].address, 8000);
    assert_int_equal(d->rc, TPDB_OK);
    assert_string_equal(d->msg, "already a member");

    /* The same id at another address is refused. */
    duoJoin(d, 2, "127.0.0.1:9", d->nodes[0].address, 8000);
    assert_int_equal(d->rc, TPDB_INVALID);
    assert_non_null(strstr(d->msg, "is a member at"));

    tpdbJoinClientClose(&d->client);
    uv_close((uv_handle_t *)&d->deadline, NULL);
    for (int i = 0; i < 2; i++) {
        raft_close(&d->nodes[i].raft, raftClosedCb);
    }
    assert_int_equal(uv_run(&d->loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < 2; i++) {
        assert_true(d->nodes[i].closed);
        nftw(d->nodes[i].dir, removeEntryCb, 8, FTW_DEPTH | FTW_PHYS);
    }
    assert_int_equal(uv_loop_close(&d->loop), 0);
    free(d);
}

int main(void)
{
    /* A reply to a client that went away must fail, not kill. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testReplyCodec),
        cmocka_unit_test(testClientOk),
        cmocka_unit_test(testClientRedirect),
        cmocka_unit_test(testClientRetryThenOk),
        cmocka_unit_test(testClientRefused),
        cmocka_unit_test(testClientRetryTimeout),
        cmocka_unit_test(testClientGarbageReply),
        cmocka_unit_test(testClientNothingListening),
        cmocka_unit_test(testClientStartErrors),
        cmocka_unit_test(testServeOnRaft),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
