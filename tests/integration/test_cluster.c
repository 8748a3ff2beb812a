/*
 * Integration test: a 3-node cluster of real tpdb-testnode processes on
 * loopback. Mixed INSERT/UPDATE/DELETE load through whichever node leads,
 * SIGKILL of the leader in the middle of it, a transaction over 10 MB, the
 * killed node restarted; then every acknowledged transaction must be on
 * every node, all nodes at the same applied index, the main database files
 * byte-identical after a checkpoint and passing integrity_check in the
 * stock sqlite3 shell.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define N_NODES 3
#define N_TXNS 1000
#define KILL_AT 400
#define PARAMS                                        \
    "election_ms=400&heartbeat_ms=40&ready_ms=60000&" \
    "snapshot_threshold=256&snapshot_trailing=64"

/* Model of one row: 0 absent, 1 present with value v, 2 unknown. */
struct row {
    int state;
    long v;
};

struct cluster {
    struct nodes nodes;
    struct row rows[N_TXNS + 1];
    unsigned unknown;
};

static char errmsg[TPDB_ERRMSG_SIZE];

static int findLeader(struct cluster *c)
{
    return nodesFindLeader(&c->nodes, 30000);
}

/* Runs one write on the leader, following leadership changes. Returns 1 if
 * acknowledged, 0 if definitely not applied, 2 if the outcome is unknown.
 * A new leader refuses a write at once while entries it must write first
 * are still queued (REPLFAIL, "roll back and retry": definitely not
 * applied); that write is sent again, for at most 60 s. */
static int write(struct cluster *c, int *leader, const char *sql)
{
    char cmd[HARNESS_PATH_MAX];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    uint64_t deadline = tpdbNowMs() + 60000;
    for (int attempt = 0; attempt < 50;) {
        char *line = nodesCommand(&c->nodes, *leader, cmd);
        if (line == NULL) {
            /* The node died with the command in flight. */
            *leader = findLeader(c);
            return 2;
        }
        int ok = strncmp(line, "ok", 2) == 0;
        /* Extended codes TPDB_ERR_NOTLEADER, TPDB_ERR_UNKNOWN and
         * TPDB_ERR_REPLFAIL. */
        int notLeader = strstr(line, "err 51210 ") == line;
        int unknown = strstr(line, "err 51466 ") == line;
        int retry = strstr(line, "err 51722 ") == line &&
                    strstr(line, "roll back and retry") != NULL &&
                    tpdbNowMs() < deadline;
        if (!ok && !notLeader && !unknown && !retry) {
            fail_msg("write '%s' failed: %s", sql, line);
        }
        tpdb_free(line);
        if (retry) {
            continue;
        }
        attempt++;
        if (ok) {
            return 1;
        }
        if (unknown) {
            *leader = findLeader(c);
            return 2;
        }
        *leader = findLeader(c);
    }
    fail_msg("write '%s' found no leader", sql);
    return 0;
}

static void applyLoad(struct cluster *c, int *leader, int from, int to)
{
    char sql[256];
    for (int i = from; i < to; i++) {
        int id = i + 1;
        long v = (long)i * 7919 % 100003;
        int op = i % 10;
        int target = id;
        if (op == 7 && i > 10) {
            target = id - 5;
            snprintf(sql, sizeof sql, "UPDATE t SET v=%ld WHERE id=%d", v,
                     target);
        } else if (op == 9 && i > 10) {
            target = id - 3;
            snprintf(sql, sizeof sql, "DELETE FROM t WHERE id=%d", target);
        } else {
            snprintf(sql, sizeof sql, "INSERT INTO t(id, v) VALUES(%d, %ld)",
                     id, v);
        }
        if (i + 1 == KILL_AT && to > KILL_AT) {
            /* SIGKILL the leader with this write in flight: its outcome
             * is unknown to the client. */
            char cmd[300];
            snprintf(cmd, sizeof cmd, "exec %s", sql);
            assert_int_equal(harnessProcWriteLine(c->nodes.procs[*leader], cmd,
                                                  NODES_IO_MS, errmsg),
                             TPDB_OK);
            nodesKill(&c->nodes, *leader);
            c->rows[target].state = 2;
            c->unknown++;
            return;
        }
        int outcome = write(c, leader, sql);
        struct row *r = &c->rows[target];
        if (outcome == 2) {
            r->state = 2;
            c->unknown++;
        } else if (outcome == 1 && r->state != 2) {
            if (op == 9 && i > 10) {
                r->state = 0;
            } else if (op != 7 || i <= 10 || r->state == 1) {
                r->state = 1;
                r->v = v;
            }
        }
    }
}

/* Checks node i's rows against the model; returns its row text. */
static char *checkRows(struct cluster *c, int i)
{
    char *all = tpdb_calloc(1, 1);
    size_t len = 0;
    assert_int_equal(harnessProcWriteLine(c->nodes.procs[i],
                                          "query SELECT id, v FROM t ORDER "
                                          "BY id",
                                          NODES_IO_MS, errmsg),
                     TPDB_OK);
    int seen[N_TXNS + 1] = {0};
    for (;;) {
        char *line = NULL;
        assert_int_equal(harnessProcReadLine(c->nodes.procs[i], HARNESS_STDOUT,
                                             NODES_IO_MS, &line, errmsg),
                         TPDB_OK);
        if (strcmp(line, "end") == 0) {
            tpdb_free(line);
            break;
        }
        int id;
        long v;
        assert_int_equal(sscanf(line, "row %d|%ld", &id, &v), 2);
        assert_true(id >= 1 && id <= N_TXNS);
        seen[id] = 1;
        if (c->rows[id].state == 1) {
            assert_int_equal(v, c->rows[id].v);
        }
        assert_int_not_equal(c->rows[id].state, 0);
        size_t n = strlen(line);
        all = tpdb_realloc(all, len + n + 2);
        memcpy(all + len, line, n);
        all[len + n] = '\n';
        len += n + 1;
        all[len] = '\0';
        tpdb_free(line);
    }
    for (int id = 1; id <= N_TXNS; id++) {
        if (c->rows[id].state == 1 && !seen[id]) {
            fail_msg("node %d lost acknowledged row %d", i + 1, id);
        }
    }
    return all;
}

static void testFailover(void **state)
{
    struct cluster *c = tpdb_calloc(1, sizeof *c);
    char *line;
    (void)state;
    assert_non_null(c);
    nodesInit(&c->nodes, N_NODES, N_NODES, PARAMS);
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(&c->nodes, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(&c->nodes, i);
    }
    int leader = findLeader(c);
    assert_int_equal(write(c, &leader,
                           "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT); "
                           "CREATE TABLE big(b BLOB)"),
                     1);
    applyLoad(c, &leader, 0, N_TXNS);
    int killed = -1;
    for (int i = 0; i < N_NODES; i++) {
        if (c->nodes.procs[i] == NULL) {
            killed = i;
        }
    }
    assert_int_not_equal(killed, -1);
    leader = findLeader(c);
    applyLoad(c, &leader, KILL_AT, N_TXNS);
    assert_int_equal(
        write(c, &leader, "INSERT INTO big VALUES(randomblob(11000000))"), 1);
    nodesStart(&c->nodes, killed, -1);
    nodesWaitReady(&c->nodes, killed);

    long long applied = nodesWaitApplied(&c->nodes, 60000);
    char *rows[N_NODES];
    for (int i = 0; i < N_NODES; i++) {
        rows[i] = checkRows(c, i);
        if (i > 0) {
            assert_string_equal(rows[i], rows[0]);
        }
        line = nodesQueryFirst(&c->nodes, i, "SELECT length(b) FROM big");
        assert_string_equal(line, "row 11000000");
        tpdb_free(line);
        nodesCheckpoint(&c->nodes, i, 20000);
    }
    printf("# applied index %lld on all nodes, %u unknown outcomes\n", applied,
           c->unknown);
    /* The restarted node loaded its own last snapshot record (taken every
     * 256 entries): it kept its file, or fetched it from a peer if the
     * leader had compacted its log past it meanwhile. */
    assert_true(nodesStat(&c->nodes, killed, "restores") >= 1);
    size_t len0 = 0;
    char path[HARNESS_PATH_MAX + 16];
    nodesPath(&c->nodes, 0, "app.db", path, sizeof path);
    char *file0 = nodesReadFile(path, &len0);
    for (int i = 1; i < N_NODES; i++) {
        size_t len = 0;
        nodesPath(&c->nodes, i, "app.db", path, sizeof path);
        char *file = nodesReadFile(path, &len);
        assert_int_equal(len, len0);
        assert_memory_equal(file, file0, len0);
        tpdb_free(file);
    }
    tpdb_free(file0);
    for (int i = 0; i < N_NODES; i++) {
        char *out = NULL;
        char uri[HARNESS_PATH_MAX + 64];
        snprintf(uri, sizeof uri, "file:%s/n%d/app.db?mode=ro", c->nodes.dir,
                 i + 1);
        assert_int_equal(harnessSqlite3(NULL, uri, "PRAGMA integrity_check",
                                        30000, &out, errmsg),
                         TPDB_OK);
        assert_string_equal(out, "ok\n");
        tpdb_free(out);
        tpdb_free(rows[i]);
    }
    nodesClose(&c->nodes);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testFailover, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
