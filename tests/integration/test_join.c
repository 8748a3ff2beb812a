/*
 * Integration test of join=HOST:PORT: a 3-node cluster of real
 * tpdb-testnode processes takes writes; a 4th node opened with
 * join=<a follower's address> is redirected to the leader, added as a
 * voter, catches up (same rows) and shows as a voter in tpdb_status();
 * re-opening it with the same join parameter is harmless; then the original
 * leader is SIGKILLed and the cluster (4 voters, 3 alive) still commits,
 * the new node included.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define N_NODES 4
#define N_ROWS 300
#define WAIT_MS 60000
#define PARAMS                                        \
    "election_ms=400&heartbeat_ms=40&ready_ms=60000&" \
    "snapshot_threshold=128&snapshot_trailing=32"

static char errmsg[TPDB_ERRMSG_SIZE];

/* Role of member `id` in node i's view of the configuration, or "". */
static void memberRole(struct nodes *c, int i, int id, char *buf, size_t n)
{
    json_t *o = nodesStatus(c, i);
    json_t *m;
    size_t k;
    snprintf(buf, n, "%s", "");
    json_array_foreach(json_object_get(o, "members"), k, m)
    {
        if (json_integer_value(json_object_get(m, "id")) == id) {
            snprintf(buf, n, "%s",
                     json_string_value(json_object_get(m, "role")));
        }
    }
    json_decref(o);
}

static int findLeader(struct nodes *c)
{
    return nodesFindLeader(c, WAIT_MS);
}

/* Runs a write on the leader, following leadership changes, until it is
 * acknowledged. Idempotent statements only (INSERT OR REPLACE). */
static void write(struct nodes *c, int *leader, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    for (int attempt = 0; attempt < 100; attempt++) {
        char *line = nodesCommand(c, *leader, cmd);
        int ok = line != NULL && strncmp(line, "ok", 2) == 0;
        tpdb_free(line);
        if (ok) {
            return;
        }
        *leader = findLeader(c);
    }
    fail_msg("write '%s' never acknowledged", sql);
}

static void writeRows(struct nodes *c, int *leader, int from, int to)
{
    char sql[256];
    for (int i = from; i < to; i += 10) {
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE s(x) AS (SELECT %d UNION ALL SELECT x+1 "
                 "FROM s WHERE x<%d) INSERT OR REPLACE INTO t(id, v) "
                 "SELECT x, printf('row-%%d-%%s', x, hex(zeroblob(40))) "
                 "FROM s",
                 i + 1, i + 10 < to ? i + 10 : to);
        write(c, leader, sql);
    }
}

struct rowsWait {
    struct nodes *c;
    int node;
    const char *want;
};

static int hasRows(void *arg)
{
    struct rowsWait *w = arg;
    char *line = nodesQueryFirst(
        w->c, w->node, "SELECT count(*), sum(id), sum(length(v)) FROM t");
    int ok = line != NULL && strcmp(line, w->want) == 0;
    tpdb_free(line);
    return ok;
}

/* Waits until node i holds the same rows as node `ref`. */
static void waitSameRows(struct nodes *c, int i, int ref)
{
    char *want = nodesQueryFirst(
        c, ref, "SELECT count(*), sum(id), sum(length(v)) FROM t");
    assert_non_null(want);
    assert_true(strncmp(want, "row ", 4) == 0);
    struct rowsWait w = {c, i, want};
    if (harnessPollUntil(hasRows, &w, WAIT_MS, 50) != TPDB_OK) {
        char *got = nodesQueryFirst(c, i, "SELECT count(*) FROM t");
        fail_msg("node %d: want %s, got %s", i + 1, want, got ? got : "?");
    }
    tpdb_free(want);
}

struct roleWait {
    struct nodes *c;
    int node;
    int id;
};

static int isVoter(void *arg)
{
    struct roleWait *w = arg;
    char role[32];
    memberRole(w->c, w->node, w->id, role, sizeof role);
    return strcmp(role, "voter") == 0;
}

static void testJoinThroughFollower(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    int leader;
    int follower;
    (void)state;
    assert_non_null(c);
    nodesInit(c, N_NODES, 3, PARAMS);
    for (int i = 0; i < 3; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < 3; i++) {
        nodesWaitReady(c, i);
    }
    leader = findLeader(c);
    write(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    writeRows(c, &leader, 0, N_ROWS);

    /* Node 4 joins through a follower, which redirects it to the leader. */
    follower = (leader + 1) % 3;
    nodesStart(c, 3, follower);
    nodesWaitReady(c, 3);
    waitSameRows(c, 3, leader);
    struct roleWait rw = {c, leader, 4};
    assert_int_equal(harnessPollUntil(isVoter, &rw, WAIT_MS, 50), TPDB_OK);
    rw.node = 3;
    assert_int_equal(harnessPollUntil(isVoter, &rw, WAIT_MS, 50), TPDB_OK);

    /* Re-opening the joined node with the same parameter is harmless. */
    char *line = nodesCommand(c, 3, "quit");
    tpdb_free(line);
    assert_int_equal(harnessProcWait(c->procs[3], NODES_IO_MS, NULL, errmsg),
                     TPDB_OK);
    harnessProcFree(c->procs[3]);
    c->procs[3] = NULL;
    nodesStart(c, 3, follower);
    nodesWaitReady(c, 3);
    rw.node = leader;
    assert_int_equal(harnessPollUntil(isVoter, &rw, WAIT_MS, 50), TPDB_OK);
    waitSameRows(c, 3, leader);

    /* A first member restarted with its peers list corrected for node 4
     * (as an operator would after the join) comes back: only a node's
     * first start compares its list with the others'. */
    int other = (leader + 2) % 3;
    nodesKill(c, other);
    size_t used = strlen(c->peers);
    snprintf(c->peers + used, sizeof c->peers - used, ",4@127.0.0.1:%u",
             c->ports[3]);
    nodesStart(c, other, -1);
    nodesWaitReady(c, other);
    writeRows(c, &leader, N_ROWS, N_ROWS + 10);
    waitSameRows(c, other, leader);

    /* Kill the original leader: 3 of 4 voters still commit. */
    nodesKill(c, leader);
    int old = leader;
    leader = findLeader(c);
    assert_int_not_equal(leader, old);
    writeRows(c, &leader, N_ROWS, N_ROWS + 100);
    for (int i = 0; i < N_NODES; i++) {
        if (c->procs[i] != NULL) {
            waitSameRows(c, i, leader);
        }
    }
    char *count = nodesQueryFirst(c, 3, "SELECT count(*) FROM t");
    assert_non_null(count);
    assert_string_equal(count, "row 400");
    tpdb_free(count);

    nodesClose(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testJoinThroughFollower, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
