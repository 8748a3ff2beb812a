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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/harness.h"
#include "vfs/base.h"

#define N_NODES 4
#define N_ROWS 300
#define IO_MS 30000
#define WAIT_MS 60000

struct cluster {
    char dir[HARNESS_PATH_MAX];
    char prog[HARNESS_PATH_MAX];
    unsigned ports[N_NODES];
    char peers[512];
    struct harness_proc *procs[N_NODES];
};

static char errmsg[TPDB_ERRMSG_SIZE];

/* Nodes 1-3 start from the peers list; node 4 joins through `via`. */
static void nodeStart(struct cluster *c, int i, int via)
{
    char uri[HARNESS_PATH_MAX + 1024];
    char sub[HARNESS_PATH_MAX + 16];
    char how[600];
    if (i < 3) {
        snprintf(how, sizeof how, "peers=%s", c->peers);
    } else {
        snprintf(how, sizeof how, "join=127.0.0.1:%u", c->ports[via]);
    }
    snprintf(uri, sizeof uri,
             "file:%s/n%d/app.db?node=%d&bind=127.0.0.1:%u&%s&"
             "election_ms=400&heartbeat_ms=40&ready_ms=60000&"
             "snapshot_threshold=128&snapshot_trailing=32",
             c->dir, i + 1, i + 1, c->ports[i], how);
    snprintf(sub, sizeof sub, "%s/n%d", c->dir, i + 1);
    mkdir(sub, 0755);
    const char *argv[] = {c->prog, uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &c->procs[i], errmsg),
                     TPDB_OK);
}

static void nodeWaitReady(struct cluster *c, int i)
{
    int rc =
        harnessProcExpect(c->procs[i], HARNESS_STDOUT, harnessMatchContains,
                          "ready", WAIT_MS, NULL, errmsg);
    if (rc != TPDB_OK) {
        char *err = NULL;
        harnessProcReadAll(c->procs[i], HARNESS_STDERR, 1000, &err, errmsg);
        fail_msg("node %d not ready: %s", i + 1, err ? err : "");
    }
}

/* Sends a command and returns its first reply line (caller frees), or NULL
 * if the node is gone. */
static char *command(struct cluster *c, int i, const char *cmd)
{
    char *line = NULL;
    if (c->procs[i] == NULL ||
        harnessProcWriteLine(c->procs[i], cmd, IO_MS, errmsg) != TPDB_OK ||
        harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS, &line,
                            errmsg) != TPDB_OK) {
        tpdb_free(line);
        return NULL;
    }
    return line;
}

/* Runs a one-row query on node i; returns "row ..." or the error line and
 * consumes the trailing "end". Caller frees; NULL if the node is gone. */
static char *queryOne(struct cluster *c, int i, const char *sql)
{
    char cmd[512];
    char *end = NULL;
    snprintf(cmd, sizeof cmd, "query %s", sql);
    char *line = command(c, i, cmd);
    if (line != NULL && strncmp(line, "row ", 4) == 0) {
        harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS, &end, errmsg);
        tpdb_free(end);
    }
    return line;
}

/* Node i's status as JSON, or NULL. Caller json_decrefs. */
static json_t *status(struct cluster *c, int i)
{
    char *line = command(c, i, "status");
    json_t *o = NULL;
    if (line != NULL && strncmp(line, "status ", 7) == 0) {
        o = json_loads(line + 7, 0, NULL);
    }
    tpdb_free(line);
    return o;
}

/* Role of member `id` in node i's view of the configuration, or "". */
static void memberRole(struct cluster *c, int i, int id, char *buf, size_t n)
{
    json_t *o = status(c, i);
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

struct leaderWait {
    struct cluster *c;
    int leader;
};

static int hasLeader(void *arg)
{
    struct leaderWait *w = arg;
    for (int i = 0; i < N_NODES; i++) {
        json_t *o = w->c->procs[i] != NULL ? status(w->c, i) : NULL;
        const char *role = json_string_value(json_object_get(o, "role"));
        int lead = role != NULL && strcmp(role, "leader") == 0;
        json_decref(o);
        if (lead) {
            w->leader = i;
            return 1;
        }
    }
    return 0;
}

static int findLeader(struct cluster *c)
{
    struct leaderWait w = {c, -1};
    assert_int_equal(harnessPollUntil(hasLeader, &w, WAIT_MS, 50), TPDB_OK);
    return w.leader;
}

/* Runs a write on the leader, following leadership changes, until it is
 * acknowledged. Idempotent statements only (INSERT OR REPLACE). */
static void write(struct cluster *c, int *leader, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    for (int attempt = 0; attempt < 100; attempt++) {
        char *line = command(c, *leader, cmd);
        int ok = line != NULL && strncmp(line, "ok", 2) == 0;
        tpdb_free(line);
        if (ok) {
            return;
        }
        *leader = findLeader(c);
    }
    fail_msg("write '%s' never acknowledged", sql);
}

static void writeRows(struct cluster *c, int *leader, int from, int to)
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
    struct cluster *c;
    int node;
    const char *want;
};

static int hasRows(void *arg)
{
    struct rowsWait *w = arg;
    char *line = queryOne(w->c, w->node,
                          "SELECT count(*), sum(id), sum(length(v)) FROM t");
    int ok = line != NULL && strcmp(line, w->want) == 0;
    tpdb_free(line);
    return ok;
}

/* Waits until node i holds the same rows as node `ref`. */
static void waitSameRows(struct cluster *c, int i, int ref)
{
    char *want =
        queryOne(c, ref, "SELECT count(*), sum(id), sum(length(v)) FROM t");
    assert_non_null(want);
    assert_true(strncmp(want, "row ", 4) == 0);
    struct rowsWait w = {c, i, want};
    if (harnessPollUntil(hasRows, &w, WAIT_MS, 50) != TPDB_OK) {
        char *got = queryOne(c, i, "SELECT count(*) FROM t");
        fail_msg("node %d: want %s, got %s", i + 1, want, got ? got : "?");
    }
    tpdb_free(want);
}

struct roleWait {
    struct cluster *c;
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
    struct cluster *c = tpdb_calloc(1, sizeof *c);
    int leader;
    int follower;
    (void)state;
    assert_non_null(c);
    assert_int_equal(harnessTmpDir(c->dir, sizeof c->dir, errmsg), TPDB_OK);
    const char *build = getenv("TPDB_BUILD_ROOT");
    assert_non_null(build);
    snprintf(c->prog, sizeof c->prog, "%s/tests/integration/tpdb-testnode",
             build);
    assert_int_equal(harnessFreePorts(c->ports, N_NODES, errmsg), TPDB_OK);
    snprintf(c->peers, sizeof c->peers,
             "1@127.0.0.1:%u,2@127.0.0.1:%u,3@127.0.0.1:%u", c->ports[0],
             c->ports[1], c->ports[2]);
    for (int i = 0; i < 3; i++) {
        nodeStart(c, i, 0);
    }
    for (int i = 0; i < 3; i++) {
        nodeWaitReady(c, i);
    }
    leader = findLeader(c);
    write(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    writeRows(c, &leader, 0, N_ROWS);

    /* Node 4 joins through a follower, which redirects it to the leader. */
    follower = (leader + 1) % 3;
    nodeStart(c, 3, follower);
    nodeWaitReady(c, 3);
    waitSameRows(c, 3, leader);
    struct roleWait rw = {c, leader, 4};
    assert_int_equal(harnessPollUntil(isVoter, &rw, WAIT_MS, 50), TPDB_OK);
    rw.node = 3;
    assert_int_equal(harnessPollUntil(isVoter, &rw, WAIT_MS, 50), TPDB_OK);

    /* Re-opening the joined node with the same parameter is harmless. */
    char *line = command(c, 3, "quit");
    tpdb_free(line);
    assert_int_equal(harnessProcWait(c->procs[3], IO_MS, NULL, errmsg),
                     TPDB_OK);
    harnessProcFree(c->procs[3]);
    c->procs[3] = NULL;
    nodeStart(c, 3, follower);
    nodeWaitReady(c, 3);
    rw.node = leader;
    assert_int_equal(harnessPollUntil(isVoter, &rw, WAIT_MS, 50), TPDB_OK);
    waitSameRows(c, 3, leader);

    /* Kill the original leader: 3 of 4 voters still commit. */
    assert_int_equal(harnessProcKill(c->procs[leader], NULL, errmsg), TPDB_OK);
    harnessProcFree(c->procs[leader]);
    c->procs[leader] = NULL;
    int old = leader;
    leader = findLeader(c);
    assert_int_not_equal(leader, old);
    writeRows(c, &leader, N_ROWS, N_ROWS + 100);
    for (int i = 0; i < N_NODES; i++) {
        if (c->procs[i] != NULL) {
            waitSameRows(c, i, leader);
        }
    }
    char *count = queryOne(c, 3, "SELECT count(*) FROM t");
    assert_non_null(count);
    assert_string_equal(count, "row 400");
    tpdb_free(count);

    harnessCleanup();
    harnessRmTree(c->dir, errmsg);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testJoinThroughFollower, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
