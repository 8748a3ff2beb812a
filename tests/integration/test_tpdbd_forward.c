/*
 * Followers forward proposes on kept connections to the leader, a bounded
 * pool of them (shell/tpdbd_forward.h), on three real tpdbd processes
 * with --max-clients=8: each follower keeps at most 8 / (2 * 2) = 2, so
 * that the two together hold at most half of the leader's client slots.
 * An open transaction on the leader holds the write lock while 16 clients
 * propose at the followers: at most 4 proposes reach the leader's queue,
 * the leader still answers two new clients of its own held open at once
 * (with the transaction's and the 4 forwards, 7 of its 8 slots: one is
 * left for a connection just closed whose thread has not ended yet), and
 * once the lock is free every one of the 16 writes commits. Without the
 * pool (a new connection to the leader per forwarded request) the leader
 * refuses the forwards past its 8 slots with "too many connections", and
 * its own new clients with them.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define CLIENTS 16
#define KEPT_PER_FOLLOWER 2
#define WAIT_MS 30000

static struct tpdbds c;

static const char *const flags[] = {"--commit-ms=5000", "--max-clients=8",
                                    NULL};

static void okReply(json_t *o, const char *what)
{
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("%s -> %s", what, tpdbdsText(o));
    }
}

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    tpdbdsStartAll(&c, flags);
    int l = tpdbdsFindLeader(&c, TPDBDS_READY_MS);
    json_t *o = tpdbdsCall(&c, l,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(id INTEGER PRIMARY KEY, v TEXT)\"}");
    okReply(o, "create");
    json_decref(o);
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

static long long queued(int i)
{
    json_t *o = tpdbdsCall(&c, i, "{\"action\":\"metrics\"}");
    json_t *v = json_object_get(json_object_get(o, "group_commit"), "queued");
    if (!json_is_integer(v)) {
        fail_msg("metrics on n%d: %s", i + 1, tpdbdsText(o));
    }
    long long n = json_integer_value(v);
    json_decref(o);
    return n;
}

struct client {
    pthread_t tid;
    int node, id;
    json_t *reply;
};

static void *clientMain(void *arg)
{
    struct client *cl = arg;
    char line[160];
    snprintf(line, sizeof line,
             "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(v) "
             "VALUES('held_%d')\"}",
             cl->id);
    cl->reply = tpdbdsRequest(c.client[cl->node], line);
    return NULL;
}

static long long countOn(int i)
{
    json_t *o = tpdbdsCall(&c, i,
                           "{\"action\":\"local_query\",\"sql\":\"SELECT "
                           "count(*) FROM t\"}");
    json_t *rows = json_object_get(o, "rows");
    if (!json_is_array(rows)) {
        fail_msg("count on n%d: %s", i + 1, tpdbdsText(o));
    }
    long long n =
        json_integer_value(json_array_get(json_array_get(rows, 0), 0));
    json_decref(o);
    return n;
}

static void testHeldLeader(void **state)
{
    (void)state;
    struct client cl[CLIENTS];
    struct timespec pause = {0, 20 * 1000 * 1000};
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f[2] = {(l + 1) % N, (l + 2) % N};
    long long before = countOn(l);
    int holder = tpdbdsConnect(c.client[l]);
    assert_true(holder >= 0);
    json_t *o = tpdbdsOnConn(holder, "{\"action\":\"begin\"}");
    okReply(o, "begin");
    json_decref(o);
    memset(cl, 0, sizeof cl);
    for (int k = 0; k < CLIENTS; k++) {
        cl[k].node = f[k % 2];
        cl[k].id = k;
        assert_int_equal(pthread_create(&cl[k].tid, NULL, clientMain, &cl[k]),
                         0);
    }
    /* Both followers' kept connections are in use, each with a propose
     * waiting for the write lock. */
    long long q;
    for (int waited = 0; (q = queued(l)) < 2 * KEPT_PER_FOLLOWER;
         waited += 20) {
        if (waited >= WAIT_MS) {
            fail_msg("n%d: %lld proposes queued", l + 1, q);
        }
        nanosleep(&pause, NULL);
    }
    /* The leader's own clients are not starved: two new connections
     * held open each get an answer while the forwards wait. */
    int own[2];
    for (int k = 0; k < 2; k++) {
        own[k] = tpdbdsConnect(c.client[l]);
        assert_true(own[k] >= 0);
        o = tpdbdsOnConn(own[k], "{\"action\":\"status\"}");
        okReply(o, "status on the leader while forwards wait");
        json_decref(o);
    }
    for (int k = 0; k < 2; k++) {
        close(own[k]);
    }
    assert_int_equal(queued(l), 2 * KEPT_PER_FOLLOWER);
    o = tpdbdsOnConn(holder, "{\"action\":\"rollback\"}");
    okReply(o, "rollback");
    json_decref(o);
    close(holder);
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(cl[k].tid, NULL);
        okReply(cl[k].reply, "propose at a follower");
        json_decref(cl[k].reply);
    }
    tpdbdsWaitCount(&c, "t", before + CLIENTS, WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testHeldLeader),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
