/*
 * Integration test: a full disk, with real tpdb-testnode processes whose
 * data directories are small tmpfs file systems (needs root for mount; the
 * test is skipped, and says so, where it cannot mount; `unshare -m` keeps
 * the mounts private).
 * - The leader's disk fills: a write that would leave less than
 *   min_free_mb is refused with SQLITE_FULL and a reason before anything
 *   is proposed, no node ever holds a row of a refused transaction, the
 *   leader then hands leadership to another voter where writes go on, and
 *   they resume everywhere once space is freed, without a restart.
 * - The leader's disk fills below what raft's log needs, no write asked:
 *   leadership moves on its own and writes go on at the new leader.
 * - A follower's disk fills to the last byte while the others commit: it
 *   holds its log writes (raft_uv would fail them for good), and once
 *   space is freed writes them and catches up without a restart.
 * - Killed on a full disk, a node refuses to start with a reason that says
 *   how much is free and how much is needed, keeps its files, and starts
 *   and catches up once space is freed.
 */
#include <dirent.h>
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
/* Each node's file system. */
#define FS_MB 192
/* Above what raft's log needs (17 MiB, raftfsm/iohold.h) by more than a
 * log segment, so that refused writes come before held log writes. */
#define MIN_FREE_MB 32
#define PARAMS                                                   \
    "election_ms=600&heartbeat_ms=60&ready_ms=60000&"            \
    "snapshot_threshold=64&snapshot_trailing=16&min_free_mb=32&" \
    "log_level=warn"

/* Rows of 256 KiB written while a follower's disk is full: more than the
 * log segments raft had prepared (8 MiB each), and more than the 16 MiB
 * (log_mb) a node holds in memory. */
#define HELD_ROWS 110

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

/* Member i quits cleanly (its node shuts down, cancelling whatever log
 * writes it still holds) and exits 0: under the sanitizers, a leak or a
 * fault makes the exit status non-zero and the report is shown. */
static void quitCleanErr(struct nodes *c, int i, char **stderrOut)
{
    int status = -1;
    char *err = NULL;
    assert_int_equal(
        harnessProcWriteLine(c->procs[i], "quit", NODES_IO_MS, errmsg),
        TPDB_OK);
    assert_int_equal(
        harnessProcWait(c->procs[i], NODES_READY_MS, &status, errmsg), TPDB_OK);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        harnessProcReadAll(c->procs[i], HARNESS_STDERR, 5000, &err, errmsg);
        fail_msg("node %d did not exit cleanly (status %d): %s", i + 1, status,
                 err != NULL ? err : "");
    }
    if (stderrOut != NULL) {
        assert_int_equal(harnessProcReadAll(c->procs[i], HARNESS_STDERR, 5000,
                                            stderrOut, errmsg),
                         TPDB_OK);
    }
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
}

static void quitClean(struct nodes *c, int i)
{
    quitCleanErr(c, i, NULL);
}

/* Lines of text containing needle. */
static unsigned linesWith(const char *text, const char *needle)
{
    unsigned n = 0;
    for (const char *l = text; l != NULL && *l != '\0';) {
        const char *end = strchr(l, '\n');
        size_t len = end != NULL ? (size_t)(end - l) : strlen(l);
        const char *hit = strstr(l, needle);
        n += hit != NULL && (size_t)(hit - l) < len;
        l = end != NULL ? end + 1 : NULL;
    }
    return n;
}

static void quitAll(struct nodes *c)
{
    for (int i = 0; i < N_NODES; i++) {
        if (c->procs[i] != NULL) {
            quitClean(c, i);
        }
    }
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

struct leaderWait {
    struct nodes *c;
    int old;
    int found;
};

static int otherLeads(void *arg)
{
    struct leaderWait *w = arg;
    for (int i = 0; i < N_NODES; i++) {
        char role[32];
        long long applied = 0;
        if (i == w->old || w->c->procs[i] == NULL) {
            continue;
        }
        nodesRole(w->c, i, role, sizeof role, &applied);
        if (strcmp(role, "leader") == 0) {
            w->found = i;
            return 1;
        }
    }
    return 0;
}

/* Waits until a member other than `old` leads; returns it. */
static int waitOtherLeader(struct nodes *c, int old)
{
    struct leaderWait w = {c, old, -1};
    if (harnessPollUntil(otherLeads, &w, 30000, 50) != TPDB_OK) {
        fail_msg("node %d still leads: leadership did not move", old + 1);
    }
    return w.found;
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

/* Starts every member, creates t on the leader and commits `rows` rows
 * there, applied everywhere; returns the leader. */
static int startWithRows(struct nodes *c, int rows)
{
    startAll(c);
    int leader = nodesFindLeader(c, 30000);
    char *line = nodesCommand(
        c, leader, "exec CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    assert_non_null(line);
    assert_string_equal(line, "ok 0");
    tpdb_free(line);
    for (int k = 0; k < rows; k++) {
        insertOk(c, leader, k);
    }
    nodesWaitApplied(c, 30000);
    return leader;
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
    /* The refusal hands leadership on: writes go on at the new leader. */
    int next = waitOtherLeader(c, leader);
    insertOk(c, next, 500);
    rows++;
    assertConverged(c, rows);
    unfill(c, leader);
    leader = nodesFindLeader(c, 30000);
    insertOk(c, leader, 1000);
    insertOk(c, leader, 1001);
    assertConverged(c, rows + 2);
    quitAll(c);
    closeAll(c);
    tpdb_free(c);
}

/* Every member's app.db passes PRAGMA integrity_check (through its node). */
static void assertIntegrity(struct nodes *c)
{
    for (int i = 0; i < N_NODES; i++) {
        char *line = nodesQueryFirst(c, i, "PRAGMA integrity_check");
        assert_non_null(line);
        assert_string_equal(line, "row ok");
        tpdb_free(line);
    }
}

/* A follower's disk fills to the last byte while the others commit: it
 * keeps running, holds its log writes, and once space is freed writes them
 * and catches up without a restart. */
static void testFollowerDiskFullHeld(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    int leader = startWithRows(c, 8);
    int f = (leader + 1) % N_NODES;
    uint64_t fullSince = tpdbNowMs();
    fill(c, f, 0);
    for (int k = 8; k < HELD_ROWS; k++) {
        insertOk(c, nodesFindLeader(c, 30000), k);
    }
    /* It held its log writes instead of failing them, and still runs. */
    nodesWaitStat(c, f, "log_holds", 1, 30000);
    assert_true(nodesStat(c, f, "log_held") > 0);
    print_message(
        "follower held %lld log writes, dropped the entries of %lld "
        "messages\n",
        nodesStat(c, f, "log_held"), nodesStat(c, f, "log_stripped"));
    unfill(c, f);
    assertConverged(c, HELD_ROWS);
    assertIntegrity(c);
    /* And it goes on taking entries. */
    leader = nodesFindLeader(c, 30000);
    insertOk(c, leader, 1000);
    assertConverged(c, HELD_ROWS + 1);
    assert_non_null(c->procs[f]);
    /* Its warnings came at most once per 5 s each (the hold's and a queued
     * entry's; both are retried every few ms while the disk is full), not
     * once per retry. */
    char *err = NULL;
    quitCleanErr(c, f, &err);
    unsigned most = 2 + (unsigned)((tpdbNowMs() - fullSince) / 5000);
    unsigned holds = linesWith(err, "holding them until space is freed");
    unsigned applies = linesWith(err, "apply entry");
    print_message(
        "follower logged %u hold and %u apply warnings (at most %u "
        "each)\n",
        holds, applies, most);
    assert_true(holds >= 1);
    assert_true(holds <= most);
    assert_true(applies <= most);
    tpdb_free(err);
    quitAll(c);
    closeAll(c);
    tpdb_free(c);
}

/* The leader's disk fills below what its Raft log needs, no write asked:
 * it hands leadership to a follower, where writes go on; with space again
 * the old leader catches up. */
static void testLeaderDiskFullTransfer(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    int leader = startWithRows(c, 4);
    fill(c, leader, 4ULL << 20);
    int next = waitOtherLeader(c, leader);
    for (int k = 4; k < 14; k++) {
        insertOk(c, next, k);
    }
    assert_non_null(c->procs[leader]);
    unfill(c, leader);
    assertConverged(c, 14);
    assertIntegrity(c);
    quitAll(c);
    closeAll(c);
    tpdb_free(c);
}

/* FNV-1a over member i's app.db and its Raft directory (names and
 * contents, in name order): what a refused start must leave as it was. */
static unsigned long long filesDigest(struct nodes *c, int i)
{
    char dir[HARNESS_PATH_MAX + 32];
    char path[2 * HARNESS_PATH_MAX + 64];
    struct dirent **names = NULL;
    unsigned long long h = 14695981039346656037ULL;
    size_t len = 0;
    nodesPath(c, i, "app.db", path, sizeof path);
    char *data = nodesReadFile(path, &len);
    for (size_t k = 0; k < len; k++) {
        h = (h ^ (unsigned char)data[k]) * 1099511628211ULL;
    }
    tpdb_free(data);
    nodesPath(c, i, ".tpdb/raft", dir, sizeof dir);
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    for (int e = 0; e < n; e++) {
        const char *name = names[e]->d_name;
        if (name[0] != '.') {
            for (const char *p = name; *p != '\0'; p++) {
                h = (h ^ (unsigned char)*p) * 1099511628211ULL;
            }
            snprintf(path, sizeof path, "%s/%s", dir, name);
            data = nodesReadFile(path, &len);
            for (size_t k = 0; k < len; k++) {
                h = (h ^ (unsigned char)data[k]) * 1099511628211ULL;
            }
            tpdb_free(data);
        }
        free(names[e]);
    }
    free(names);
    return h;
}

/* Member i must not start: it exits with a reason that says how much
 * space is free and how much it needs. */
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
    if (strstr(err, "KiB free") == NULL || strstr(err, "KiB needed") == NULL ||
        strstr(err, "files are kept") == NULL) {
        fail_msg(
            "node %d refused to start without saying how much space is "
            "free and needed: %s",
            i + 1, err);
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
    int leader = startWithRows(c, 8);
    int f = (leader + 1) % N_NODES;
    fill(c, f, 0);
    for (int k = 8; k < 40; k++) {
        insertOk(c, nodesFindLeader(c, 30000), k);
    }
    /* Stopped while it holds log writes: they are cancelled, nothing
     * leaks. */
    nodesWaitStat(c, f, "log_holds", 1, 30000);
    quitClean(c, f);
    /* Its shutdown trimmed the preallocated log segments: full again. */
    fill(c, f, 0);
    assertStartRefused(c, f);
    unfill(c, f);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    assertConverged(c, 40);
    quitAll(c);
    closeAll(c);
    tpdb_free(c);
}

/* A node stopped while the others commit finds its disk full at start: it
 * refuses to start, says how much is free and needed, leaves its files as
 * they were, and once space is freed starts and catches up. */
static void testStartDiskFull(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    int leader = startWithRows(c, 8);
    int f = (leader + 1) % N_NODES;
    nodesKill(c, f);
    for (int k = 8; k < 16; k++) {
        insertOk(c, nodesFindLeader(c, 30000), k);
    }
    fill(c, f, 0);
    unsigned long long before = filesDigest(c, f);
    assertStartRefused(c, f);
    assert_true(filesDigest(c, f) == before);
    unfill(c, f);
    nodesStart(c, f, -1);
    nodesWaitReady(c, f);
    assertConverged(c, 16);
    assertIntegrity(c);
    quitAll(c);
    closeAll(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testLeaderDiskFull, teardown),
        cmocka_unit_test_teardown(testFollowerDiskFullRestart, teardown),
        cmocka_unit_test_teardown(testFollowerDiskFullHeld, teardown),
        cmocka_unit_test_teardown(testLeaderDiskFullTransfer, teardown),
        cmocka_unit_test_teardown(testStartDiskFull, teardown),
    };
    /* TPDB_TEST_FILTER=testFollowerDiskFullHeld runs one case (a glob). */
    const char *filter = getenv("TPDB_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
