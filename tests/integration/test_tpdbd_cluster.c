/*
 * Three real tpdbd processes bootstrapped from --peer on loopback, without
 * --client-peer (followers learn the leader's client address from tpdbd's
 * replicated metadata): writes on the leader and on followers (forwarded),
 * query on the leader and its refusal on followers, local_query
 * everywhere; SIGKILL of the leader during writes, writes through the new
 * leader, and every acknowledged row on every node, the killed node
 * included once restarted; SIGTERM of a leader hands leadership over and
 * exits 0; a propose on a node left alone ends with an error in bounded
 * time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define MAX_IDS 400
#define WAIT_MS 30000

enum { ABSENT = 0, ACKED, UNKNOWN };

struct state {
    struct tpdbds c;
    int ids[MAX_IDS + 1]; /* per row id: ABSENT, ACKED or UNKNOWN */
    int next;             /* next id to write */
};

static struct state s;

static const char *const flags[] = {"--commit-ms=5000", NULL};

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&s.c, N, 0);
    tpdbdsStartAll(&s.c, flags);
    s.next = 1;
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    tpdbdsClose(&s.c);
    return 0;
}

static const char *errorOf(json_t *o)
{
    const char *e = json_string_value(json_object_get(o, "error"));
    return e != NULL ? e : "";
}

/* One INSERT of the next id through member i. Returns its outcome; fails
 * the test on any error other than a leadership one. */
static int writeVia(int i)
{
    int id = s.next++;
    assert_true(id <= MAX_IDS);
    json_t *o = tpdbdsCall(&s.c, i,
                           "{\"action\":\"propose\",\"sql\":\"INSERT INTO "
                           "t(id, via) VALUES(?, ?)\",\"params\":[%d,%d]}",
                           id, i + 1);
    const char *e = errorOf(o);
    if (json_is_true(json_object_get(o, "ok"))) {
        s.ids[id] = ACKED;
    } else if (o == NULL || strncmp(e, "outcome unknown", 15) == 0 ||
               strncmp(e, "no reply from leader", 20) == 0) {
        s.ids[id] = UNKNOWN;
    } else if (strncmp(e, "not the leader", 14) != 0 &&
               strncmp(e, "forward failed", 14) != 0) {
        fail_msg("write %d via n%d: %s", id, i + 1, e);
    }
    json_decref(o);
    return s.ids[id];
}

static long long firstInt(json_t *o)
{
    return json_integer_value(
        json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0));
}

/* Fills present[] with the ids member i holds; returns 0, or -1 if it
 * does not answer. */
static int idsOn(int i, char *present)
{
    json_t *o = tpdbdsCall(&s.c, i,
                           "{\"action\":\"local_query\",\"sql\":\"SELECT id "
                           "FROM t ORDER BY id\"}");
    json_t *row;
    size_t k;
    if (!json_is_true(json_object_get(o, "ok"))) {
        json_decref(o);
        return -1;
    }
    memset(present, 0, MAX_IDS + 1);
    json_array_foreach(json_object_get(o, "rows"), k, row)
    {
        long long id = json_integer_value(json_array_get(row, 0));
        assert_true(id >= 1 && id <= MAX_IDS);
        present[id] = 1;
    }
    json_decref(o);
    return 0;
}

struct agreement {
    char why[256];
};

/* Every running member holds the same ids: all acknowledged ones, none
 * that was refused. */
static int membersAgree(void *arg)
{
    struct agreement *a = arg;
    static char first[MAX_IDS + 1], other[MAX_IDS + 1];
    int have = 0;
    for (int i = 0; i < N; i++) {
        if (s.c.procs[i] == NULL) {
            continue;
        }
        char *dst = have ? other : first;
        if (idsOn(i, dst) != 0) {
            snprintf(a->why, sizeof a->why, "n%d does not answer", i + 1);
            return 0;
        }
        for (int id = 1; id < s.next; id++) {
            if ((s.ids[id] == ACKED && !dst[id]) ||
                (s.ids[id] == ABSENT && dst[id]) ||
                (have && first[id] != dst[id])) {
                snprintf(a->why, sizeof a->why,
                         "n%d: id %d (state %d) present=%d", i + 1, id,
                         s.ids[id], dst[id]);
                return 0;
            }
        }
        have = 1;
    }
    return 1;
}

static void waitAgreement(void)
{
    struct agreement a = {""};
    if (harnessPollUntil(membersAgree, &a, WAIT_MS, 50) != TPDB_OK) {
        fail_msg("members disagree: %s", a.why);
    }
}

/* Every node's status lists each other member with its client address. */
static int clientsKnown(void *arg)
{
    struct agreement *a = arg;
    for (int i = 0; i < N; i++) {
        json_t *o = tpdbdsCall(&s.c, i, "{\"action\":\"status\"}");
        json_t *members = json_object_get(o, "members");
        int ok = json_object_size(members) == N - 1;
        for (int j = 0; ok && j < N; j++) {
            char name[16], client[32];
            if (j == i) {
                continue;
            }
            snprintf(name, sizeof name, "n%d", j + 1);
            snprintf(client, sizeof client, "127.0.0.1:%u", s.c.client[j]);
            const char *have = json_string_value(
                json_object_get(json_object_get(members, name), "client"));
            if (have == NULL || strcmp(have, client) != 0) {
                snprintf(a->why, sizeof a->why, "n%d has %s for %s", i + 1,
                         have != NULL ? have : "nothing", name);
                ok = 0;
            }
        }
        json_decref(o);
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static void testWritesLeaderAndFollowers(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&s.c, WAIT_MS);
    json_t *o = tpdbdsCall(&s.c, leader,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(id INTEGER PRIMARY KEY, via INTEGER)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    /* Followers forward to the leader: every write is acknowledged. */
    for (int k = 0; k < 30; k++) {
        assert_int_equal(writeVia(k % N), ACKED);
    }
    o = tpdbdsCall(&s.c, leader,
                   "{\"action\":\"query\",\"sql\":\"SELECT count(*) FROM "
                   "t\"}");
    assert_int_equal(firstInt(o), 30);
    json_decref(o);
    for (int i = 0; i < N; i++) {
        if (i == leader) {
            continue;
        }
        o = tpdbdsCall(&s.c, i, "{\"action\":\"query\",\"sql\":\"SELECT 1\"}");
        char want[64];
        snprintf(want, sizeof want, "not the leader (leader=n%d)", leader + 1);
        assert_string_equal(errorOf(o), want);
        json_decref(o);
    }
    waitAgreement();
    /* Started with --peer only (no --client-peer), every node names every
     * other member with its client address, followers included: each node
     * announces itself to the cluster. */
    struct agreement a = {""};
    if (harnessPollUntil(clientsKnown, &a, WAIT_MS, 50) != TPDB_OK) {
        fail_msg("client addresses not learned: %s", a.why);
    }
}

/* Writes round robin over the running members until `acked` more writes
 * are acknowledged. */
static void writeUntilAcked(int acked)
{
    int attempts = 0;
    for (int k = 0; acked > 0; k++) {
        int i = k % N;
        if (s.c.procs[i] == NULL) {
            continue;
        }
        assert_true(++attempts < 4 * MAX_IDS / 5);
        acked -= writeVia(i) == ACKED;
    }
}

static void testLeaderKilled(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&s.c, WAIT_MS);
    writeUntilAcked(20);
    /* A write in flight when the leader dies: its outcome is unknown. */
    int fd = tpdbdsConnect(s.c.client[leader]);
    char line[256];
    int n = snprintf(line, sizeof line,
                     "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id, "
                     "via) VALUES(%d, 0)\"}\n",
                     s.next);
    assert_int_equal(tpdbdsSend(fd, line, (size_t)n), 0);
    s.ids[s.next++] = UNKNOWN;
    tpdbdsKill(&s.c, leader);
    close(fd);
    int next = tpdbdsFindLeader(&s.c, WAIT_MS);
    assert_int_not_equal(next, leader);
    writeUntilAcked(40);
    waitAgreement();
    /* The killed node comes back with every acknowledged row. */
    tpdbdsStart(&s.c, leader, flags);
    tpdbdsWaitReady(&s.c, leader);
    waitAgreement();
}

static void testSigtermLeaderHandsOver(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&s.c, WAIT_MS);
    int status = tpdbdsStop(&s.c, leader, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    int next = tpdbdsFindLeader(&s.c, WAIT_MS);
    assert_int_not_equal(next, leader);
    writeUntilAcked(10);
    waitAgreement();
}

/* The last member standing: a propose must end with an error (unknown
 * outcome or no leader), never hang and never be acknowledged. */
static void testLostQuorumNeverHangs(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&s.c, WAIT_MS);
    for (int i = 0; i < N; i++) {
        if (i != leader && s.c.procs[i] != NULL) {
            tpdbdsKill(&s.c, i);
        }
    }
    uint64_t start = tpdbNowMs();
    json_t *o = tpdbdsCall(&s.c, leader,
                           "{\"action\":\"propose\",\"sql\":\"INSERT INTO "
                           "t(id, via) VALUES(%d, 0)\"}",
                           s.next++);
    const char *e = errorOf(o);
    assert_non_null(o);
    assert_true(json_is_false(json_object_get(o, "ok")));
    if (strncmp(e, "outcome unknown", 15) != 0 &&
        strncmp(e, "not the leader", 14) != 0) {
        fail_msg("unexpected error: %s", e);
    }
    /* --commit-ms 5000 bounds the wait for an outcome; a lost leadership
     * ends it sooner; 10 s more are allowed for waiting for a leader. */
    print_message("alone: '%s' after %llu ms\n", e,
                  (unsigned long long)(tpdbNowMs() - start));
    assert_true(tpdbNowMs() - start < 20000);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testWritesLeaderAndFollowers),
        cmocka_unit_test(testLeaderKilled),
        cmocka_unit_test(testSigtermLeaderHandsOver),
        cmocka_unit_test(testLostQuorumNeverHangs),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
