/*
 * tpdbd with a cluster key: three tpdbd processes started with --key-file
 * form a cluster and replicate writes; a fourth started with another key
 * and --join cannot join (its start fails), and the cluster is unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/poke.h"
#include "tests/integration/tpdbds.h"

#define WAIT_MS 30000

static void testKeyedCluster(void **state)
{
    static struct tpdbds c;
    char a[HARNESS_PATH_MAX + 16], b[HARNESS_PATH_MAX + 16];
    char fa[HARNESS_PATH_MAX + 32], fb[HARNESS_PATH_MAX + 32];
    char join[64];
    char *err = NULL;
    (void)state;
    tpdbdsInit(&c, 4, 0);
    c.voters = 3;
    snprintf(a, sizeof a, "%s/a.key", c.dir);
    snprintf(b, sizeof b, "%s/b.key", c.dir);
    pokeKeyFile(a, 1, NULL);
    pokeKeyFile(b, 2, NULL);
    snprintf(fa, sizeof fa, "--key-file=%s", a);
    snprintf(fb, sizeof fb, "--key-file=%s", b);
    const char *const keyed[] = {fa, "--commit-ms=5000", NULL};
    for (int i = 0; i < 3; i++) {
        tpdbdsStart(&c, i, keyed);
    }
    for (int i = 0; i < 3; i++) {
        tpdbdsWaitReady(&c, i);
    }
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    json_t *o = tpdbdsCall(&c, leader,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(id INTEGER PRIMARY KEY)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    o = tpdbdsCall(&c, leader,
                   "{\"action\":\"propose\",\"sql\":\"INSERT INTO t "
                   "VALUES (1)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    tpdbdsWaitCount(&c, "t", 1, WAIT_MS);

    /* Another key: the join is refused until ready-ms, and it says so. */
    snprintf(join, sizeof join, "--join=127.0.0.1:%u", c.client[leader]);
    const char *const wrong[] = {fb, join, "--ready-ms=3000", NULL};
    tpdbdsStart(&c, 3, wrong);
    assert_int_equal(
        harnessProcReadAll(c.procs[3], HARNESS_STDERR, WAIT_MS, &err, c.errmsg),
        TPDB_OK);
    assert_non_null(strstr(err, "error start node"));
    tpdb_free(err);
    assert_int_equal(harnessProcWait(c.procs[3], WAIT_MS, NULL, c.errmsg),
                     TPDB_OK);
    harnessProcFree(c.procs[3]);
    c.procs[3] = NULL;
    tpdbdsWaitCount(&c, "t", 1, WAIT_MS);
    tpdbdsClose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testKeyedCluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
