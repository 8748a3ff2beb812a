/*
 * Integration test: restarts and catch-up of real tpdb-testnode processes
 * on loopback, with snapshots every few dozen entries.
 * - A follower SIGKILLed in the middle of a load and restarted keeps its
 *   database file (same inode, no stream fetched, only the entries after
 *   its snapshot written again) and ends byte-identical. Before the kill
 *   its own checkpoints have copied the WAL into the main file (which
 *   lets apply restart the WAL, so that a restart reads less of it).
 * - A follower whose database files were deleted, or overwritten with
 *   garbage, while it was down gets the database streamed from a peer (the
 *   garbage is moved aside, not deleted) and ends byte-identical.
 * - A follower that was down while the leader compacted its log past it
 *   installs the snapshot record and fetches the stream; so does one whose
 *   whole directory was wiped, restarted with the same id.
 * - Opening on such a follower returns only once it holds everything the
 *   leader had committed.
 * - One 200 MB transaction commits with a plain OK and no election.
 * - A follower SIGKILLed right after a 40 MB transaction (chunk entries,
 *   with a snapshot taken while it was staged), before any later snapshot,
 *   restarts with its file: nothing fetched.
 * - A new leader whose own connection holds the write lock that its
 *   queued entries wait for refuses that connection's write at once
 *   (REPLFAIL, roll back and retry) and writes again once it has.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define N_NODES 3
#define PARAMS_KEEP                                   \
    "election_ms=400&heartbeat_ms=40&ready_ms=60000&" \
    "snapshot_threshold=32&snapshot_trailing=2000"
#define PARAMS_COMPACT                                \
    "election_ms=400&heartbeat_ms=40&ready_ms=60000&" \
    "snapshot_threshold=16&snapshot_trailing=4"

static char errmsg[TPDB_ERRMSG_SIZE];

static void exec(struct nodes *c, int i, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    char *line = nodesCommand(c, i, cmd);
    assert_non_null(line);
    if (strncmp(line, "ok", 2) != 0) {
        fail_msg("node %d: %s: %s", i + 1, sql, line);
    }
    tpdb_free(line);
}

/* n transactions of 4 rows of 1 KB each, on the leader. */
static void load(struct nodes *c, int leader, int from, int n)
{
    char sql[256];
    for (int i = from; i < from + n; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO t(k, v) VALUES(%d, randomblob(1000)), "
                 "(%d, randomblob(1000)), (%d, randomblob(1000)), "
                 "(%d, randomblob(1000))",
                 4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3);
        exec(c, leader, sql);
    }
}

static void startAll(struct nodes *c, const char *params)
{
    nodesInit(c, N_NODES, N_NODES, params);
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(c, i);
    }
}

static ino_t inodeOf(struct nodes *c, int i)
{
    char path[HARNESS_PATH_MAX + 16];
    struct stat st;
    nodesPath(c, i, "app.db", path, sizeof path);
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* Every node at the same applied index with the same rows, then every main
 * file byte-identical after a TRUNCATE checkpoint and passing
 * integrity_check in the stock sqlite3 shell. */
static void assertConverged(struct nodes *c, int rows)
{
    char want[64];
    nodesWaitApplied(c, 60000);
    snprintf(want, sizeof want, "row %d", rows);
    for (int i = 0; i < N_NODES; i++) {
        char *line = nodesQueryFirst(c, i, "SELECT count(*) FROM t");
        assert_non_null(line);
        assert_string_equal(line, want);
        tpdb_free(line);
        nodesCheckpoint(c, i, 20000);
    }
    char path[HARNESS_PATH_MAX + 16];
    size_t len0 = 0;
    nodesPath(c, 0, "app.db", path, sizeof path);
    char *file0 = nodesReadFile(path, &len0);
    for (int i = 1; i < N_NODES; i++) {
        size_t len = 0;
        nodesPath(c, i, "app.db", path, sizeof path);
        char *file = nodesReadFile(path, &len);
        assert_int_equal(len, len0);
        assert_memory_equal(file, file0, len0);
        tpdb_free(file);
    }
    tpdb_free(file0);
    for (int i = 0; i < N_NODES; i++) {
        char *out = NULL;
        char uri[HARNESS_PATH_MAX + 64];
        snprintf(uri, sizeof uri, "file:%s/n%d/app.db?mode=ro", c->dir, i + 1);
        assert_int_equal(harnessSqlite3(NULL, uri, "PRAGMA integrity_check",
                                        30000, &out, errmsg),
                         TPDB_OK);
        assert_string_equal(out, "ok\n");
        tpdb_free(out);
    }
}

/* Node i holds `rows` rows now, without waiting. */
static void assertCount(struct nodes *c, int i, int rows)
{
    char want[64];
    snprintf(want, sizeof want, "row %d", rows);
    char *line = nodesQueryFirst(c, i, "SELECT count(*) FROM t");
    assert_non_null(line);
    assert_string_equal(line, want);
    tpdb_free(line);
}

/* Node i's main file size, and its WAL's checkpoint sequence (the
 * header's bytes 12-15: 0 until the WAL first restarts; -1 if none),
 * printed only: a WAL restarts once a checkpoint ends between two applies,
 * which a steady load can put off for thousands of transactions. */
static long long mainSize(struct nodes *c, int i)
{
    char path[HARNESS_PATH_MAX + 16];
    struct stat st;
    nodesPath(c, i, "app.db", path, sizeof path);
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static long long walSequence(struct nodes *c, int i)
{
    char path[HARNESS_PATH_MAX + 16];
    unsigned char h[16];
    nodesPath(c, i, "app.db-wal", path, sizeof path);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return -1;
    }
    size_t got = fread(h, 1, sizeof h, fp);
    fclose(fp);
    if (got != sizeof h) {
        return -1;
    }
    return (long long)h[12] << 24 | h[13] << 16 | h[14] << 8 | h[15];
}

static int followerOf(int leader)
{
    return (leader + 1) % N_NODES;
}

/* SIGKILL of a follower mid-load: restarted, it keeps its file and only
 * writes again what came after its own snapshot. */
static void testKilledFollowerKeepsDatabase(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    startAll(c, PARAMS_KEEP);
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    load(c, leader, 0, 400);
    int f = followerOf(leader);
    nodesWaitApplied(c, 30000);
    assert_true(nodesStat(c, f, "snapshots") >= 2);
    /* The follower checkpoints its WAL into its main file (every 1000
     * frames, about 400 of these transactions): more transactions until it
     * has. */
    int n = 400;
    uint64_t deadline = tpdbNowMs() + 60000;
    while (mainSize(c, f) < 4LL * n * 1000 / 2 && tpdbNowMs() < deadline) {
        load(c, leader, n, 10);
        n += 10;
        nodesWaitApplied(c, 30000);
    }
    printf(
        "# after %d transactions: follower's main file %lld bytes, WAL "
        "sequence %lld\n",
        n, mainSize(c, f), walSequence(c, f));
    assert_true(mainSize(c, f) >= 4LL * n * 1000 / 2);
    ino_t before = inodeOf(c, f);
    long long pagesBefore = nodesStat(c, f, "applied_pages");
    nodesKill(c, f);
    load(c, leader, n, 40);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    load(c, leader, n + 40, 10);
    assertConverged(c, 4 * (n + 50));
    /* The same file, never fetched, never rebuilt: the restarted process
     * wrote only the entries after its last snapshot (at most 32, plus the
     * 50 it missed or that came after), far fewer pages than the 400
     * transactions before the kill. */
    assert_true(inodeOf(c, f) == before);
    assert_int_equal(nodesStat(c, f, "fetches"), 0);
    long long pagesAfter = nodesStat(c, f, "applied_pages");
    printf(
        "# follower wrote %lld pages before the kill, %lld after the "
        "restart\n",
        pagesBefore, pagesAfter);
    assert_true(pagesAfter > 0 && pagesAfter < pagesBefore / 2);
    nodesClose(c);
    tpdb_free(c);
}

/* Removes (garbage = 0) or overwrites with garbage (1) a node's database
 * files. */
static void damage(struct nodes *c, int i, int garbage)
{
    char path[HARNESS_PATH_MAX + 16];
    static const char *const sfx[] = {"app.db", "app.db-wal", "app.db-shm"};
    for (int k = 0; k < 3; k++) {
        nodesPath(c, i, sfx[k], path, sizeof path);
        if (!garbage) {
            unlink(path);
            continue;
        }
        if (k > 0) {
            unlink(path);
            continue;
        }
        FILE *fp = fopen(path, "r+b");
        assert_non_null(fp);
        for (int b = 0; b < 8192; b++) {
            fputc(b * 31 % 251, fp);
        }
        fclose(fp);
    }
}

static int asideExists(struct nodes *c, int i)
{
    char cmd[HARNESS_PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls %s/n%d/app.db.corrupt-* >/dev/null 2>&1",
             c->dir, i + 1);
    return system(cmd) == 0;
}

static void damagedFollower(int garbage)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    assert_non_null(c);
    startAll(c, PARAMS_KEEP);
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    load(c, leader, 0, 100);
    int f = followerOf(leader);
    nodesWaitApplied(c, 30000);
    nodesKill(c, f);
    damage(c, f, garbage);
    load(c, leader, 100, 20);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    /* Open returned only once the stream and the log were in. */
    assertCount(c, f, 4 * 120);
    load(c, leader, 120, 5);
    assertConverged(c, 4 * 125);
    assert_true(nodesStat(c, f, "fetches") >= 1);
    assert_int_equal(nodesStat(c, f, "fetching"), 0);
    assert_int_equal(asideExists(c, f), garbage);
    nodesClose(c);
    tpdb_free(c);
}

static void testDeletedFilesFetched(void **state)
{
    (void)state;
    damagedFollower(0);
}

static void testGarbageFileFetched(void **state)
{
    (void)state;
    damagedFollower(1);
}

/* The leader compacts its log past a follower that is down: the follower
 * installs the snapshot record and fetches the database. */
static void testBehindSnapshotFetches(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    startAll(c, PARAMS_COMPACT);
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    load(c, leader, 0, 30);
    int f = followerOf(leader);
    nodesWaitApplied(c, 30000);
    nodesKill(c, f);
    load(c, leader, 30, 80);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    assertCount(c, f, 4 * 110);
    assertConverged(c, 4 * 110);
    assert_true(nodesStat(c, f, "fetches") >= 1);
    assert_true(nodesStat(c, leader, "served") >= 1);
    nodesClose(c);
    tpdb_free(c);
}

/* A follower whose whole directory (databases and Raft state) is gone
 * comes back with the same id and address: it gets the log or the
 * snapshot record from the leader, fetches the database, and its open
 * returns only once it holds everything. */
static void testWipedFollowerRejoins(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char cmd[HARNESS_PATH_MAX + 64];
    (void)state;
    assert_non_null(c);
    startAll(c, PARAMS_COMPACT);
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    load(c, leader, 0, 60);
    int f = followerOf(leader);
    nodesWaitApplied(c, 30000);
    nodesKill(c, f);
    snprintf(cmd, sizeof cmd, "rm -rf %s/n%d", c->dir, f + 1);
    assert_int_equal(system(cmd), 0);
    load(c, leader, 60, 20);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    assertCount(c, f, 4 * 80);
    assertConverged(c, 4 * 80);
    assert_true(nodesStat(c, f, "fetches") >= 1);
    nodesClose(c);
    tpdb_free(c);
}

static long long term(struct nodes *c, int i)
{
    json_t *st = nodesStatus(c, i);
    assert_non_null(st);
    long long t = json_integer_value(json_object_get(st, "term"));
    json_decref(st);
    return t;
}

/* One 200 MB transaction: a plain OK and no election, on every node, with
 * the default election timeout: it travels as 4 MiB parts (chunk
 * entries), staged by the followers and committed at once. */
static void testBigTransaction(void **state)
{
#if defined(__SANITIZE_THREAD__)
    /* Ten times slower under ThreadSanitizer: the 200 MB statement outlasts
     * the harness's bound on one command. */
    skip();
#endif
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    startAll(c, "ready_ms=60000&commit_ms=120000");
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    nodesWaitApplied(c, 30000);
    long long before[N_NODES];
    for (int i = 0; i < N_NODES; i++) {
        before[i] = term(c, i);
    }
    /* The reply waits as long as the commit may (commit_ms): on a loaded
     * machine writing 200 MB on three nodes sharing one disk took longer
     * than the harness's usual bound on one command. */
    char *line = nodesCommandWithin(c, leader,
                                    "exec WITH RECURSIVE n(i) AS (SELECT 1 "
                                    "UNION ALL SELECT i + 1 FROM n WHERE i < "
                                    "200) INSERT INTO t(v) SELECT "
                                    "randomblob(1000000) FROM n",
                                    120000);
    assert_non_null(line);
    assert_string_equal(line, "ok 200");
    tpdb_free(line);
    assertConverged(c, 200);
    for (int i = 0; i < N_NODES; i++) {
        assert_int_equal(term(c, i), before[i]);
    }
    nodesClose(c);
    tpdb_free(c);
}

/* A transaction of 40 parts of 1 MB travels as chunk entries; log_mb=24
 * makes every node take a snapshot while the sequence is staged, and none
 * at its end (the budget is charged again from that snapshot on). Once the
 * end is applied and made durable (durable_points), a node SIGKILLed
 * before any later snapshot restarts from its own files: it replays the
 * entries after its snapshot and fetches nothing. The victim is a follower
 * (which staged the parts) or the leader (which wrote the transaction
 * itself, as its client's commit). */
static void killedAfterBigTransaction(int killLeader)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    assert_non_null(c);
    startAll(c,
             "ready_ms=60000&commit_ms=120000&log_mb=24&"
             "snapshot_threshold=100000");
    int leader = nodesFindLeader(c, 30000);
    int v = killLeader ? leader : followerOf(leader);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    nodesWaitApplied(c, 30000);
    long long snapsBefore = nodesStat(c, v, "snapshots");
    long long pointsBefore = nodesStat(c, v, "durable_points");
    char *line = nodesCommand(c, leader,
                              "exec WITH RECURSIVE n(i) AS (SELECT 1 UNION "
                              "ALL SELECT i + 1 FROM n WHERE i < 40) INSERT "
                              "INTO t(v) SELECT randomblob(1000000) FROM n");
    assert_non_null(line);
    assert_string_equal(line, "ok 40");
    tpdb_free(line);
    nodesWaitApplied(c, 60000);
    nodesWaitStat(c, v, "durable_points", pointsBefore + 1, 60000);
    long long snaps = nodesStat(c, v, "snapshots");
    printf("# node %d took %lld snapshots during the transaction\n", v + 1,
           snaps - snapsBefore);
    assert_true(snaps > snapsBefore);
    ino_t before = inodeOf(c, v);
    nodesKill(c, v);
    nodesStart(c, v, -1);
    nodesWaitReady(c, v);
    assertConverged(c, 40);
    assert_true(inodeOf(c, v) == before);
    assert_int_equal(nodesStat(c, v, "fetches"), 0);
    nodesClose(c);
    tpdb_free(c);
}

static void testKilledAfterBigTransaction(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    (void)state;
    killedAfterBigTransaction(0);
}

static void testLeaderKilledAfterBigTransaction(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    (void)state;
    killedAfterBigTransaction(1);
}

static char *command(struct nodes *c, int i, const char *cmd)
{
    char *line = nodesCommand(c, i, cmd);
    assert_non_null(line);
    return line;
}

static void testNewLeaderWithQueuedEntries(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char cmd[128];
    (void)state;
    assert_non_null(c);
    startAll(c, PARAMS_KEEP);
    int leader = nodesFindLeader(c, 30000);
    exec(c, leader, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    int f = followerOf(leader);
    nodesWaitApplied(c, 30000);
    /* The follower's connection holds the write lock: entries queue. */
    exec(c, f, "BEGIN IMMEDIATE");
    load(c, leader, 0, 5);
    nodesWaitStat(c, f, "pending", 5, 10000);
    snprintf(cmd, sizeof cmd, "exec SELECT tpdb_transfer(%d)", f + 1);
    char *line = command(c, leader, cmd);
    assert_int_equal(strncmp(line, "ok", 2), 0);
    tpdb_free(line);
    assert_int_equal(nodesFindLeader(c, 30000), f);
    /* The transaction that holds the lock commits a write: refused at once
     * as definitely not committed (SQLite rolls it back), not after
     * timeouts as "not the leader". */
    line = command(c, f, "exec INSERT INTO t(k) VALUES(-1); COMMIT");
    if (strncmp(line, "err 51722 ", 10) != 0 ||
        strstr(line, "roll back and retry") == NULL) {
        fail_msg("write on the new leader: %s", line);
    }
    tpdb_free(line);
    /* Released: the queue drains, the same write goes through. */
    exec(c, f, "INSERT INTO t(k) VALUES(-1)");
    assertConverged(c, 4 * 5 + 1);
    nodesClose(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testKilledFollowerKeepsDatabase,
                                  harnessTeardown),
        cmocka_unit_test_teardown(testDeletedFilesFetched, harnessTeardown),
        cmocka_unit_test_teardown(testGarbageFileFetched, harnessTeardown),
        cmocka_unit_test_teardown(testBehindSnapshotFetches, harnessTeardown),
        cmocka_unit_test_teardown(testNewLeaderWithQueuedEntries,
                                  harnessTeardown),
        cmocka_unit_test_teardown(testBigTransaction, harnessTeardown),
        cmocka_unit_test_teardown(testKilledAfterBigTransaction,
                                  harnessTeardown),
        cmocka_unit_test_teardown(testLeaderKilledAfterBigTransaction,
                                  harnessTeardown),
        cmocka_unit_test_teardown(testWipedFollowerRejoins, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
