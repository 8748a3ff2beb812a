/*
 * Integration test: a follower's WAL stays bounded under a steady stream
 * of small transactions. A 3-node cluster of real tpdb-testnode processes
 * takes one-row INSERTs (each touching a few index pages) on the leader
 * until every follower has applied WALK_PAGES pages, many times what the
 * bound allows; every follower's -wal file, sampled between the writes and
 * at the end, must stay under WAL_BOUND_FRAMES frames. Apply restarts a
 * follower's WAL only after a checkpoint copied all of it, and under such
 * a stream a PASSIVE checkpoint never catches up with apply: before the
 * checkpointer held apply for a last round, the WAL grew without end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define N_NODES 3
#define PARAMS "election_ms=1000&heartbeat_ms=100&ready_ms=60000"
#define PAGE_SIZE 4096
/* Pages every follower applies before the test ends. */
#define WALK_PAGES 40000
/* One-row transactions sent in one command line. */
#define TXNS_PER_LINE 50
/* The bound: the checkpointer holds apply once the WAL passes 4,000
 * frames (4 x FSM_CHECKPOINT_FRAMES); this leaves room for the frames
 * applied while a checkpoint runs. */
#define WAL_BOUND_FRAMES 12000
#define DEADLINE_MS 240000

static void exec(struct nodes *c, int i, const char *sql)
{
    char *cmd = tpdb_malloc(strlen(sql) + 8);
    assert_non_null(cmd);
    snprintf(cmd, strlen(sql) + 8, "exec %s", sql);
    char *line = nodesCommand(c, i, cmd);
    tpdb_free(cmd);
    assert_non_null(line);
    if (strncmp(line, "ok", 2) != 0) {
        fail_msg("node %d: %s", i + 1, line);
    }
    tpdb_free(line);
}

/* TXNS_PER_LINE one-row INSERTs, each its own transaction (sqlite3_exec
 * runs them one by one in autocommit mode). */
static char *batchSql(void)
{
    static const char one[] =
        "INSERT INTO t(a, b, c) VALUES(randomblob(16), randomblob(16), "
        "randomblob(16));";
    size_t len = sizeof one - 1;
    char *sql = tpdb_malloc(len * TXNS_PER_LINE + 1);
    assert_non_null(sql);
    for (int i = 0; i < TXNS_PER_LINE; i++) {
        memcpy(sql + len * i, one, len);
    }
    sql[len * TXNS_PER_LINE] = '\0';
    return sql;
}

static long long walFrames(struct nodes *c, int i)
{
    char path[HARNESS_PATH_MAX + 16];
    struct stat st;
    nodesPath(c, i, "app.db-wal", path, sizeof path);
    if (stat(path, &st) != 0 || st.st_size < 32) {
        return 0;
    }
    return (st.st_size - 32) / (PAGE_SIZE + 24);
}

static void testFollowerWalBounded(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    long long most[N_NODES] = {0};
    (void)state;
    assert_non_null(c);
    nodesInit(c, N_NODES, N_NODES, PARAMS);
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(c, i);
    }
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader,
         "CREATE TABLE t(k INTEGER PRIMARY KEY, a BLOB, b BLOB, c BLOB); "
         "CREATE INDEX ta ON t(a); CREATE INDEX tb ON t(b); "
         "CREATE INDEX tc ON t(c)");
    char *sql = batchSql();
    uint64_t deadline = tpdbNowMs() + DEADLINE_MS;
    long long least = 0;
    while (least < WALK_PAGES) {
        if (tpdbNowMs() > deadline) {
            fail_msg("followers applied only %lld pages in %d ms", least,
                     DEADLINE_MS);
        }
        exec(c, leader, sql);
        least = -1;
        for (int i = 0; i < N_NODES; i++) {
            if (i == leader) {
                continue;
            }
            long long frames = walFrames(c, i);
            most[i] = frames > most[i] ? frames : most[i];
            long long pages = nodesStat(c, i, "applied_pages");
            if (pages < 0) {
                fail_msg("node %d does not answer", i + 1);
            }
            least = least < 0 || pages < least ? pages : least;
        }
    }
    tpdb_free(sql);
    nodesWaitApplied(c, 60000);
    for (int i = 0; i < N_NODES; i++) {
        if (i == leader) {
            continue;
        }
        long long frames = walFrames(c, i);
        most[i] = frames > most[i] ? frames : most[i];
        print_message(
            "node %d (follower): %lld pages applied, WAL at most "
            "%lld frames, %lld at the end\n",
            i + 1, nodesStat(c, i, "applied_pages"), most[i], frames);
    }
    for (int i = 0; i < N_NODES; i++) {
        if (most[i] >= WAL_BOUND_FRAMES) {
            fail_msg("node %d's WAL reached %lld frames (bound %d)", i + 1,
                     most[i], WAL_BOUND_FRAMES);
        }
    }
    nodesClose(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testFollowerWalBounded, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
