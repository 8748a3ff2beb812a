/*
 * Integration test: a full disk, with real tpdb-testnode processes whose
 * data directories are small tmpfs file systems (needs root for mount; the
 * test is skipped, and says so, where it cannot mount).
 * - The leader's disk fills: a write that would leave less than
 *   min_free_mb is refused with SQLITE_FULL and a reason before anything
 *   is proposed, no node ever holds a row of a refused transaction, and
 *   writes resume as soon as space is freed, without a restart.
 * - A follower's disk fills to the last byte while the others commit: once
 *   SIGKILLed it refuses to start with a reason naming the space, and
 *   after space is freed it starts, catches up and ends byte-identical.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define N_NODES 3
/* Each node's file system: raft preallocates two 8 MiB segments. */
#define FS_MB 64
#define MIN_FREE_MB 8
#define PARAMS                                        \
    "election_ms=600&heartbeat_ms=60&ready_ms=60000&" \
    "snapshot_threshold=64&snapshot_trailing=16&min_free_mb=8"

static char errmsg[TPDB_ERRMSG_SIZE];
/* Mounted data directories, unmounted by teardown whatever happened. */
static char mounted[N_NODES][HARNESS_PATH_MAX + 16];

static void unmountAll(void)
{
    for (int i = 0; i < N_NODES; i++) {
        if (mounted[i][0] != '\0') {
            umount2(mounted[i], MNT_DETACH);
            mounted[i][0] = '\0';
        }
    }
}

static int teardown(void **state)
{
    harnessCleanup();
    unmountAll();
    return harnessTeardown(state);
}

/* Mounts a FS_MB tmpfs on each member's data directory; skips the test if
 * this process may not mount. */
static void mountAll(struct nodes *c)
{
    char opts[32];
    snprintf(opts, sizeof opts, "size=%dm", FS_MB);
    for (int i = 0; i < N_NODES; i++) {
        char dir[HARNESS_PATH_MAX + 16];
        snprintf(dir, sizeof dir, "%s/n%d", c->dir, i + 1);
        assert_int_equal(mkdir(dir, 0755), 0);
        if (mount("tpdb-test", dir, "tmpfs", 0, opts) != 0) {
            print_message(
                "cannot mount a tmpfs (%s): the disk-full test "
                "needs root\n",
                strerror(errno));
            skip();
        }
        snprintf(mounted[i], sizeof mounted[i], "%s", dir);
    }
}

static unsigned long long freeBytes(struct nodes *c, int i)
{
    char dir[HARNESS_PATH_MAX + 16];
    struct statvfs vfs;
    snprintf(dir, sizeof dir, "%s/n%d", c->dir, i + 1);
    assert_int_equal(statvfs(dir, &vfs), 0);
    return (unsigned long long)vfs.f_bavail * vfs.f_frsize;
}

/* Grows member i's filler file until at most `leave` bytes are free (0:
 * until the file system refuses another byte). */
static void fill(struct nodes *c, int i, unsigned long long leave)
{
    static char block[1 << 16];
    char path[HARNESS_PATH_MAX + 16];
    nodesPath(c, i, "filler", path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    while (freeBytes(c, i) > leave) {
        size_t want = sizeof block;
        if (leave > 0 && freeBytes(c, i) - leave < want) {
            want = (size_t)(freeBytes(c, i) - leave);
        }
        ssize_t n = write(fd, block, want);
        if (n < 0 && errno == ENOSPC) {
            break;
        }
        assert_true(n > 0);
    }
    if (leave == 0) {
        /* tmpfs may still take a few bytes into a partly used page. */
        while (write(fd, block, 1) == 1) {
        }
        assert_int_equal(errno, ENOSPC);
    }
    assert_int_equal(close(fd), 0);
}

static void unfill(struct nodes *c, int i)
{
    char path[HARNESS_PATH_MAX + 16];
    nodesPath(c, i, "filler", path, sizeof path);
    assert_int_equal(unlink(path), 0);
}

/* Stops every process, unmounts, removes the cluster's directory. */
static void closeAll(struct nodes *c)
{
    harnessCleanup();
    unmountAll();
    nodesClose(c);
}

static void startAll(struct nodes *c)
{
    nodesInit(c, N_NODES, N_NODES, PARAMS);
    mountAll(c);
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(c, i);
    }
}

/* Inserts row k with a 256 KB blob on member i; returns the reply line
 * (caller tpdb_frees). */
static char *insert(struct nodes *c, int i, int k)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd,
             "exec INSERT INTO t(k, v) VALUES(%d, randomblob(262144))", k);
    char *line = nodesCommand(c, i, cmd);
    assert_non_null(line);
    return line;
}

static void insertOk(struct nodes *c, int i, int k)
{
    char *line = insert(c, i, k);
    if (strncmp(line, "ok", 2) != 0) {
        fail_msg("node %d: insert %d: %s", i + 1, k, line);
    }
    tpdb_free(line);
}

/* Every member holds exactly `rows` rows, and after a TRUNCATE checkpoint
 * the same main file. */
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
}

/* The leader's disk fills: refused with SQLITE_FULL and a reason, nothing
 * of a refused write anywhere, writes resume once space is freed. */
static void testLeaderDiskFull(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    startAll(c);
    int leader = nodesFindLeader(c, 30000);
    char *line = nodesCommand(
        c, leader, "exec CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    assert_non_null(line);
    assert_string_equal(line, "ok 0");
    tpdb_free(line);
    fill(c, leader, (unsigned long long)(MIN_FREE_MB + 6) << 20);
    int rows = 0;
    char *refused = NULL;
    for (int k = 0; k < 200 && refused == NULL; k++) {
        line = insert(c, leader, k);
        if (strncmp(line, "ok", 2) == 0) {
            rows++;
            tpdb_free(line);
        } else {
            refused = line;
        }
    }
    assert_non_null(refused);
    /* SQLITE_FULL itself, and tpdb's reason after SQLite's message. */
    assert_true(strncmp(refused, "err 13 ", 7) == 0);
    assert_non_null(strstr(refused, "disk full"));
    assert_non_null(strstr(refused, "min_free_mb"));
    tpdb_free(refused);
    assertConverged(c, rows);
    unfill(c, leader);
    leader = nodesFindLeader(c, 30000);
    insertOk(c, leader, 1000);
    insertOk(c, leader, 1001);
    assertConverged(c, rows + 2);
    closeAll(c);
    tpdb_free(c);
}

/* Member i must not start: it exits with a reason that names the space. */
static void assertStartRefused(struct nodes *c, int i)
{
    int status = 0;
    char *err = NULL;
    nodesStart(c, i, -1);
    assert_int_equal(
        harnessProcWait(c->procs[i], NODES_READY_MS, &status, errmsg), TPDB_OK);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    assert_int_equal(
        harnessProcReadAll(c->procs[i], HARNESS_STDERR, 5000, &err, errmsg),
        TPDB_OK);
    if (strstr(err, "space") == NULL) {
        fail_msg("node %d refused to start without naming the space: %s", i + 1,
                 err);
    }
    tpdb_free(err);
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
}

/* A follower's disk fills to the last byte: the others keep committing;
 * killed, it refuses to start and says why; with space again it starts
 * and catches up. */
static void testFollowerDiskFullRestart(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    startAll(c);
    int leader = nodesFindLeader(c, 30000);
    int f = (leader + 1) % N_NODES;
    char *line = nodesCommand(
        c, leader, "exec CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    assert_non_null(line);
    tpdb_free(line);
    for (int k = 0; k < 8; k++) {
        insertOk(c, leader, k);
    }
    nodesWaitApplied(c, 30000);
    fill(c, f, 0);
    for (int k = 8; k < 40; k++) {
        insertOk(c, nodesFindLeader(c, 30000), k);
    }
    nodesKill(c, f);
    assertStartRefused(c, f);
    unfill(c, f);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    assertConverged(c, 40);
    closeAll(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testLeaderDiskFull, teardown),
        cmocka_unit_test_teardown(testFollowerDiskFullRestart, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
