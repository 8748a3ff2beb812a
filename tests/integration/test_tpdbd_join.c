/*
 * --join through any member: three tpdbd processes bootstrapped from
 * --peer take writes; a fourth started with --join <a follower's client
 * address> becomes a voter (through raft's join protocol on the Raft port
 * the member's status names), catches up, is known to the others by its
 * string id and client address (action join), and takes writes
 * (forwarded). Then the original leader is SIGKILLed: four voters, three
 * alive, and writes through the new node still commit everywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define WAIT_MS 30000

static struct tpdbds c;

/* INSERT OR IGNORE of id through member i, repeated until acknowledged
 * (the statement is idempotent, so an unknown outcome is retried). */
static void writeAcked(int i, int id)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        json_t *o = tpdbdsCall(&c, i,
                               "{\"action\":\"propose\",\"sql\":\"INSERT OR "
                               "IGNORE INTO t VALUES(?)\",\"params\":[%d]}",
                               id);
        int ok = json_is_true(json_object_get(o, "ok"));
        json_decref(o);
        if (ok) {
            return;
        }
    }
    fail_msg("write %d through n%d never acknowledged", id, i + 1);
}

struct memberPoll {
    int i;            /* whose status */
    const char *id;   /* member to find */
    char client[32];  /* its expected client address */
    const char *role; /* its expected role; NULL: voter */
};

static int knowsMember(void *arg)
{
    struct memberPoll *p = arg;
    json_t *o = tpdbdsCall(&c, p->i, "{\"action\":\"status\"}");
    json_t *m = json_object_get(json_object_get(o, "members"), p->id);
    const char *client = json_string_value(json_object_get(m, "client"));
    int known = client != NULL && strcmp(client, p->client) == 0 &&
                strcmp(json_string_value(json_object_get(m, "role")),
                       p->role != NULL ? p->role : "voter") == 0;
    json_decref(o);
    return known;
}

static void testJoinThroughFollower(void **state)
{
    char join[64];
    (void)state;
    tpdbdsInit(&c, 4, 0);
    c.voters = 3;
    for (int i = 0; i < 3; i++) {
        tpdbdsStart(&c, i, NULL);
    }
    for (int i = 0; i < 3; i++) {
        tpdbdsWaitReady(&c, i);
    }
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    json_decref(tpdbdsCall(&c, leader,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(id INTEGER PRIMARY KEY)\"}"));
    for (int id = 1; id <= 50; id++) {
        writeAcked(id % 3, id);
    }
    int follower = (leader + 1) % 3;
    snprintf(join, sizeof join, "--join=127.0.0.1:%u", c.client[follower]);
    const char *extra[] = {join, NULL};
    tpdbdsStart(&c, 3, extra);
    tpdbdsWaitReady(&c, 3);
    tpdbdsWaitCount(&c, "t", 50, WAIT_MS);
    /* Every node, the leader first, names n4 a voter at its client port. */
    struct memberPoll p = {leader, "n4", "", NULL};
    snprintf(p.client, sizeof p.client, "127.0.0.1:%u", c.client[3]);
    for (int k = 0; k < 3; k++) {
        p.i = (leader + k) % 3;
        assert_int_equal(harnessPollUntil(knowsMember, &p, WAIT_MS, 50),
                         TPDB_OK);
    }
    for (int id = 51; id <= 80; id++) {
        writeAcked(3, id);
    }
    tpdbdsWaitCount(&c, "t", 80, WAIT_MS);
    /* Four voters, three alive: still a quorum, through the new node. */
    tpdbdsKill(&c, leader);
    tpdbdsFindLeader(&c, WAIT_MS);
    for (int id = 81; id <= 100; id++) {
        writeAcked(3, id);
    }
    tpdbdsWaitCount(&c, "t", 100, WAIT_MS);
    tpdbdsClose(&c);
}

/* A node started with --join and --role standby becomes a standby (it
 * gets the log, does not vote) and still receives every write. */
static void testJoinAsStandby(void **state)
{
    char join[64];
    (void)state;
    tpdbdsInit(&c, 4, 0);
    c.voters = 3;
    for (int i = 0; i < 3; i++) {
        tpdbdsStart(&c, i, NULL);
    }
    for (int i = 0; i < 3; i++) {
        tpdbdsWaitReady(&c, i);
    }
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    json_decref(tpdbdsCall(&c, leader,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(id INTEGER PRIMARY KEY)\"}"));
    snprintf(join, sizeof join, "--join=127.0.0.1:%u", c.client[leader]);
    const char *extra[] = {join, "--role=standby", NULL};
    tpdbdsStart(&c, 3, extra);
    tpdbdsWaitReady(&c, 3);
    struct memberPoll p = {leader, "n4", "", "standby"};
    snprintf(p.client, sizeof p.client, "127.0.0.1:%u", c.client[3]);
    assert_int_equal(harnessPollUntil(knowsMember, &p, WAIT_MS, 50), TPDB_OK);
    for (int id = 1; id <= 20; id++) {
        writeAcked(id % 4, id);
    }
    tpdbdsWaitCount(&c, "t", 20, WAIT_MS);
    tpdbdsClose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testJoinThroughFollower),
        cmocka_unit_test(testJoinAsStandby),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
