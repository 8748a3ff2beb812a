/* Tests of the integration-test harness itself, on plain processes (/bin/cat,
 * /bin/sh, /usr/bin/sqlite3 on a plain database), so that it is proven before
 * any tpdb node runs under it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "tests/integration/harness.h"

/* Generous bound for things that should take milliseconds. */
#define WAIT_MS 10000

struct fixture {
    char dir[HARNESS_PATH_MAX];
    char errmsg[TPDB_ERRMSG_SIZE];
};

static int setUp(void **state)
{
    struct fixture *f = tpdb_calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(harnessTmpDir(f->dir, sizeof f->dir, f->errmsg), TPDB_OK);
    *state = f;
    return 0;
}

static int tearDown(void **state)
{
    struct fixture *f = *state;
    harnessTeardown(state);
    assert_int_equal(harnessRmTree(f->dir, f->errmsg), TPDB_OK);
    tpdb_free(f);
    return 0;
}

static struct harness_proc *spawnOk(struct fixture *f,
                                    const char *const *argv,
                                    const char *const *env,
                                    const char *cwd)
{
    struct harness_proc *p = NULL;
    int rv = harnessSpawn(argv, env, cwd, &p, f->errmsg);
    if (rv != TPDB_OK) {
        print_error("spawn: %s\n", f->errmsg);
    }
    assert_int_equal(rv, TPDB_OK);
    return p;
}

static void expectLine(struct fixture *f,
                       struct harness_proc *p,
                       int stream,
                       const char *want)
{
    char *line = NULL;
    int rv = harnessProcReadLine(p, stream, WAIT_MS, &line, f->errmsg);
    if (rv != TPDB_OK) {
        print_error("read line: %s\n", f->errmsg);
    }
    assert_int_equal(rv, TPDB_OK);
    assert_string_equal(line, want);
    tpdb_free(line);
}

static void writeFile(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

/* ---- Temp dirs and ports ---------------------------------------------- */

static void testTmpDir(void **state)
{
    struct fixture *f = *state;
    char sub[HARNESS_PATH_MAX + 16];
    char file[HARNESS_PATH_MAX + 32];
    struct stat st;
    assert_int_equal(stat(f->dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_non_null(strstr(f->dir, "tpdb-it-"));
    snprintf(sub, sizeof sub, "%s/a", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(file, sizeof file, "%s/a/file", f->dir);
    writeFile(file, "x");
    snprintf(file, sizeof file, "%s/link", f->dir);
    assert_int_equal(symlink("/", file), 0);
    assert_int_equal(harnessRmTree(f->dir, f->errmsg), TPDB_OK);
    assert_int_equal(stat(f->dir, &st), -1);
    /* Missing is fine; the fixture's teardown relies on it. */
    assert_int_equal(harnessRmTree(f->dir, f->errmsg), TPDB_OK);
}

static void testTmpDirErrors(void **state)
{
    struct fixture *f = *state;
    char small[8];
    char path[HARNESS_PATH_MAX];
    char *old = getenv("TMPDIR") ? tpdb_strdup(getenv("TMPDIR")) : NULL;
    assert_int_equal(harnessTmpDir(small, sizeof small, f->errmsg),
                     TPDB_TOOBIG);
    setenv("TMPDIR", "/nonexistent-tpdb-dir", 1);
    assert_int_equal(harnessTmpDir(path, sizeof path, f->errmsg), TPDB_IOERR);
    assert_non_null(strstr(f->errmsg, "mkdtemp"));
    if (old != NULL) {
        setenv("TMPDIR", old, 1);
    } else {
        unsetenv("TMPDIR");
    }
    tpdb_free(old);
}

static void testFreePorts(void **state)
{
    struct fixture *f = *state;
    unsigned ports[5];
    assert_int_equal(harnessFreePorts(ports, 5, f->errmsg), TPDB_OK);
    for (int i = 0; i < 5; i++) {
        assert_true(ports[i] > 0 && ports[i] < 65536);
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(ports[i], ports[j]);
        }
        /* The port is really free: we can listen on it. */
        struct sockaddr_in addr = {.sin_family = AF_INET};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons((uint16_t)ports[i]);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
        assert_int_equal(listen(fd, 1), 0);
        close(fd);
    }
    assert_int_equal(harnessFreePorts(ports, 0, f->errmsg), TPDB_INVALID);
    assert_int_equal(harnessFreePorts(ports, 65, f->errmsg), TPDB_INVALID);
}

/* ---- Spawning and lines ------------------------------------------------- */

static void testCatEcho(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"/bin/cat", NULL};
    struct harness_proc *p = spawnOk(f, argv, NULL, NULL);
    char *line = NULL;
    int status = -1;
    assert_true(harnessProcPid(p) > 0);
    assert_int_equal(harnessProcWriteLine(p, "hello", WAIT_MS, f->errmsg),
                     TPDB_OK);
    assert_int_equal(harnessProcWriteLine(p, "", WAIT_MS, f->errmsg), TPDB_OK);
    expectLine(f, p, HARNESS_STDOUT, "hello");
    expectLine(f, p, HARNESS_STDOUT, "");
    harnessProcCloseStdin(p);
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadLine(p, HARNESS_STDOUT, WAIT_MS, &line, f->errmsg),
        TPDB_SHUTDOWN);
    assert_int_equal(harnessProcWriteLine(p, "late", WAIT_MS, f->errmsg),
                     TPDB_SHUTDOWN);
    assert_int_equal(harnessProcWait(p, WAIT_MS, &status, f->errmsg), TPDB_OK);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    harnessProcFree(p);
    harnessProcFree(NULL);
}

static void testEnvCwdStderr(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"sh", "-c",
                          "echo \"$TPDB_H_FOO $HOME\"; pwd; echo oops >&2; "
                          "printf tail",
                          NULL};
    const char *env[] = {"TPDB_H_FOO=bar", "HOME=/nowhere", NULL};
    char want[HARNESS_PATH_MAX];
    char *real = realpath(f->dir, NULL);
    assert_non_null(real);
    struct harness_proc *p = spawnOk(f, argv, env, f->dir);
    expectLine(f, p, HARNESS_STDOUT, "bar /nowhere");
    snprintf(want, sizeof want, "%s", real);
    expectLine(f, p, HARNESS_STDOUT, want);
    expectLine(f, p, HARNESS_STDERR, "oops");
    /* A last line without a newline comes out at end of file. */
    expectLine(f, p, HARNESS_STDOUT, "tail");
    free(real);
}

static void testSpawnErrors(void **state)
{
    struct fixture *f = *state;
    const char *missing[] = {"/nonexistent/tpdb-program", NULL};
    const char *cat[] = {"/bin/cat", NULL};
    const char *empty[] = {NULL};
    struct harness_proc *p = NULL;
    assert_int_equal(harnessSpawn(missing, NULL, NULL, &p, f->errmsg),
                     TPDB_IOERR);
    assert_non_null(strstr(f->errmsg, "No such file"));
    assert_int_equal(harnessSpawn(cat, NULL, "/nonexistent/dir", &p, f->errmsg),
                     TPDB_IOERR);
    assert_non_null(strstr(f->errmsg, "/nonexistent/dir"));
    assert_int_equal(harnessSpawn(empty, NULL, NULL, &p, f->errmsg),
                     TPDB_INVALID);
    assert_null(p);
}

static void testExpectAndTimeout(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"sh", "-c",
                          "i=0; while [ $i -lt 100 ]; do echo line $i; "
                          "i=$((i+1)); done; exec cat",
                          NULL};
    struct harness_proc *p = spawnOk(f, argv, NULL, NULL);
    char *line = NULL;
    assert_int_equal(harnessProcExpect(p, HARNESS_STDOUT, harnessMatchContains,
                                       "line 50", WAIT_MS, &line, f->errmsg),
                     TPDB_OK);
    assert_string_equal(line, "line 50");
    tpdb_free(line);
    expectLine(f, p, HARNESS_STDOUT, "line 51");
    assert_int_equal(harnessProcExpect(p, HARNESS_STDOUT, harnessMatchContains,
                                       "line 99", WAIT_MS, NULL, f->errmsg),
                     TPDB_OK);
    /* Nothing more comes: a short wait times out, and so does zero. */
    uint64_t start = tpdbNowMs();
    assert_int_equal(
        harnessProcReadLine(p, HARNESS_STDOUT, 100, &line, f->errmsg),
        TPDB_TIMEOUT);
    assert_true(tpdbNowMs() - start >= 100);
    assert_int_equal(
        harnessProcReadLine(p, HARNESS_STDOUT, 0, &line, f->errmsg),
        TPDB_TIMEOUT);
    assert_int_equal(harnessProcExpect(p, HARNESS_STDOUT, harnessMatchContains,
                                       "never", 50, NULL, f->errmsg),
                     TPDB_TIMEOUT);
    /* End of file ends an expectation that never matched. */
    harnessProcCloseStdin(p);
    assert_int_equal(harnessProcExpect(p, HARNESS_STDOUT, harnessMatchContains,
                                       "never", WAIT_MS, NULL, f->errmsg),
                     TPDB_SHUTDOWN);
}

static void testChattyStderr(void **state)
{
    struct fixture *f = *state;
    /* 1 MB on stderr would block the child on a full pipe if the harness
     * read only stdout. */
    const char *argv[] = {
        "sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x >&2; echo done",
        NULL};
    struct harness_proc *p = spawnOk(f, argv, NULL, NULL);
    char *err = NULL;
    expectLine(f, p, HARNESS_STDOUT, "done");
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, WAIT_MS, &err, f->errmsg),
        TPDB_OK);
    assert_int_equal(strlen(err), 1000000);
    tpdb_free(err);
}

static void testReadAll(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"sh", "-c", "echo a; echo b; exec cat", NULL};
    struct harness_proc *p = spawnOk(f, argv, NULL, NULL);
    char *out = NULL;
    expectLine(f, p, HARNESS_STDOUT, "a");
    assert_int_equal(harnessProcReadAll(p, HARNESS_STDOUT, 50, &out, f->errmsg),
                     TPDB_TIMEOUT);
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, WAIT_MS, &out, f->errmsg),
        TPDB_OK);
    assert_string_equal(out, "b\n");
    tpdb_free(out);
    /* Again at end of file: empty, not an error. */
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, WAIT_MS, &out, f->errmsg),
        TPDB_OK);
    assert_string_equal(out, "");
    tpdb_free(out);
}

static void testWriteErrors(void **state)
{
    struct fixture *f = *state;
    const char *sleeper[] = {"sleep", "100", NULL};
    const char *quitter[] = {"true", NULL};
    size_t big = 1 << 20;
    char *line = tpdb_malloc(big + 1);
    assert_non_null(line);
    memset(line, 'y', big);
    line[big] = '\0';
    /* A child that never reads: the pipe fills and the write times out. */
    struct harness_proc *p = spawnOk(f, sleeper, NULL, NULL);
    assert_int_equal(harnessProcWriteLine(p, line, 100, f->errmsg),
                     TPDB_TIMEOUT);
    /* A child that exited: EPIPE, reported as shutdown, not SIGPIPE. */
    struct harness_proc *q = spawnOk(f, quitter, NULL, NULL);
    assert_int_equal(harnessProcWait(q, WAIT_MS, NULL, f->errmsg), TPDB_OK);
    assert_int_equal(harnessProcWriteLine(q, line, WAIT_MS, f->errmsg),
                     TPDB_SHUTDOWN);
    tpdb_free(line);
}

static void testOutOfMemory(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"/bin/cat", NULL};
    struct harness_proc *p = NULL;
    char *line = NULL;
    char *out = NULL;
    tpdbAllocFailAfter(0);
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, f->errmsg), TPDB_NOMEM);
    assert_int_equal(harnessSqlite3(NULL, "file:x.db", "SELECT 1;", WAIT_MS,
                                    &out, f->errmsg),
                     TPDB_NOMEM);
    tpdbAllocFailAfter(-1);
    p = spawnOk(f, argv, NULL, NULL);
    assert_int_equal(harnessProcWriteLine(p, "x", WAIT_MS, f->errmsg), TPDB_OK);
    tpdbAllocFailAfter(0);
    assert_int_equal(
        harnessProcReadLine(p, HARNESS_STDOUT, WAIT_MS, &line, f->errmsg),
        TPDB_NOMEM);
    tpdbAllocFailAfter(-1);
    assert_null(line);
    assert_null(out);
}

/* ---- Signals --------------------------------------------------------------
 */

/* True once the process with pid *arg is gone or a zombie. */
static int procGone(void *arg)
{
    char path[64];
    char buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", *(int *)arg);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        return 1;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && rp[2] == 'Z';
}

static void testKillGroup(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"sh", "-c", "sleep 100 & echo $!; wait", NULL};
    struct harness_proc *p = spawnOk(f, argv, NULL, NULL);
    char *line = NULL;
    int status = 0;
    assert_int_equal(
        harnessProcReadLine(p, HARNESS_STDOUT, WAIT_MS, &line, f->errmsg),
        TPDB_OK);
    int grandchild = atoi(line);
    tpdb_free(line);
    assert_true(grandchild > 0);
    assert_int_equal(harnessProcWait(p, 50, NULL, f->errmsg), TPDB_TIMEOUT);
    assert_int_equal(harnessProcKill(p, &status, f->errmsg), TPDB_OK);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* The whole process group died, the background sleep included. */
    assert_int_equal(harnessPollUntil(procGone, &grandchild, WAIT_MS, 5),
                     TPDB_OK);
    /* Reaped: signals are refused, waits and kills are no-ops. */
    assert_int_equal(harnessProcSignal(p, SIGTERM, f->errmsg), TPDB_SHUTDOWN);
    assert_int_equal(harnessProcWait(p, 0, &status, f->errmsg), TPDB_OK);
    assert_int_equal(harnessProcKill(p, NULL, f->errmsg), TPDB_OK);
}

static void testStop(void **state)
{
    struct fixture *f = *state;
    const char *polite[] = {"/bin/cat", NULL};
    const char *stubborn[] = {"sh", "-c",
                              "trap '' TERM; echo ready; "
                              "while :; do sleep 1; done",
                              NULL};
    struct harness_proc *p = spawnOk(f, polite, NULL, NULL);
    int status = 0;
    assert_int_equal(harnessProcStop(p, WAIT_MS, &status, f->errmsg), TPDB_OK);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    assert_int_equal(harnessProcStop(p, WAIT_MS, &status, f->errmsg), TPDB_OK);
    struct harness_proc *q = spawnOk(f, stubborn, NULL, NULL);
    expectLine(f, q, HARNESS_STDOUT, "ready");
    assert_int_equal(harnessProcStop(q, 100, &status, f->errmsg), TPDB_TIMEOUT);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void testCleanup(void **state)
{
    struct fixture *f = *state;
    const char *argv[] = {"sleep", "100", NULL};
    int pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = harnessProcPid(spawnOk(f, argv, NULL, NULL));
    }
    harnessCleanup();
    for (int i = 0; i < 3; i++) {
        /* Reaped by the harness, so not even a zombie is left. */
        assert_int_equal(kill(pids[i], 0), -1);
        assert_int_equal(errno, ESRCH);
    }
    harnessCleanup();
}

/* ---- Polling and paths ----------------------------------------------------
 */

static int countTo3(void *arg)
{
    int *n = arg;
    return ++*n >= 3;
}

static int never(void *arg)
{
    int *n = arg;
    ++*n;
    return 0;
}

static void testPollUntil(void **state)
{
    (void)state;
    int n = 0;
    assert_int_equal(harnessPollUntil(countTo3, &n, WAIT_MS, 1), TPDB_OK);
    assert_int_equal(n, 3);
    n = 0;
    uint64_t start = tpdbNowMs();
    assert_int_equal(harnessPollUntil(never, &n, 100, 10), TPDB_TIMEOUT);
    assert_true(tpdbNowMs() - start >= 100);
    assert_true(n >= 2);
    /* A zero timeout still tries once; a zero interval is clamped. */
    n = 2;
    assert_int_equal(harnessPollUntil(countTo3, &n, 0, 0), TPDB_OK);
}

/* Timer parameters are scaled by harnessTimerScale(), the rest kept. */
static void testScaleParams(void **state)
{
    char out[256], want[256];
    unsigned k = harnessTimerScale();
    (void)state;
    harnessScaleParams("ready_ms=60000&election_ms=400&heartbeat_ms=40&x=y",
                       out, sizeof out);
    snprintf(want, sizeof want,
             "ready_ms=60000&election_ms=%u&heartbeat_ms=%u&x=y", 400 * k,
             40 * k);
    assert_string_equal(out, want);
    harnessScaleParams("", out, sizeof out);
    assert_string_equal(out, "");
    harnessScaleParams("election_ms=7", out, sizeof out);
    snprintf(want, sizeof want, "election_ms=%u", 7 * k);
    assert_string_equal(out, want);
}

static void testExtPath(void **state)
{
    struct fixture *f = *state;
    char path[HARNESS_PATH_MAX];
    char small[8];
    char *old = getenv("TPDB_BUILD_ROOT")
                    ? tpdb_strdup(getenv("TPDB_BUILD_ROOT"))
                    : NULL;
    setenv("TPDB_BUILD_ROOT", "/b", 1);
    assert_int_equal(harnessExtPath(path, sizeof path, f->errmsg), TPDB_OK);
    assert_string_equal(path, "/b/ext/libtpdbraft");
    assert_int_equal(harnessExtPath(small, sizeof small, f->errmsg),
                     TPDB_TOOBIG);
    unsetenv("TPDB_BUILD_ROOT");
    assert_int_equal(harnessExtPath(path, sizeof path, f->errmsg),
                     TPDB_NOTFOUND);
    if (old != NULL) {
        setenv("TPDB_BUILD_ROOT", old, 1);
    }
    tpdb_free(old);
}

/* ---- The sqlite3 shell ----------------------------------------------------
 */

static char *sqliteOk(struct fixture *f, const char *uri, const char *sql)
{
    char *out = NULL;
    int rv = harnessSqlite3(NULL, uri, sql, WAIT_MS, &out, f->errmsg);
    if (rv != TPDB_OK) {
        print_error("sqlite3: %s\n", f->errmsg);
    }
    assert_int_equal(rv, TPDB_OK);
    return out;
}

static void testSqlite3Plain(void **state)
{
    struct fixture *f = *state;
    char uri[HARNESS_PATH_MAX + 64];
    char *out;
    snprintf(uri, sizeof uri, "file:%s/plain.db?mode=rwc", f->dir);
    out = sqliteOk(f, uri,
                   "PRAGMA journal_mode=WAL; CREATE TABLE t(a, b); "
                   "INSERT INTO t VALUES (1, 'x'), (2, 'y');");
    assert_string_equal(out, "wal\n");
    tpdb_free(out);
    /* A second process sees the committed rows. */
    out = sqliteOk(f, uri, "SELECT a, b FROM t ORDER BY a;");
    assert_string_equal(out, "1|x\n2|y\n");
    tpdb_free(out);
}

static void testSqlite3Errors(void **state)
{
    struct fixture *f = *state;
    char uri[HARNESS_PATH_MAX + 64];
    char *out = NULL;
    snprintf(uri, sizeof uri, "file:%s/e.db?mode=rwc", f->dir);
    assert_int_equal(harnessSqlite3(NULL, uri, "SELECT * FROM nosuch;", WAIT_MS,
                                    &out, f->errmsg),
                     TPDB_IOERR);
    assert_non_null(strstr(f->errmsg, "no such table"));
    /* A failed .open only prints; it must still fail the call. */
    snprintf(uri, sizeof uri, "file:%s/e.db?vfs=nosuchvfs", f->dir);
    assert_int_equal(
        harnessSqlite3(NULL, uri, "SELECT 1;", WAIT_MS, &out, f->errmsg),
        TPDB_IOERR);
    assert_non_null(strstr(f->errmsg, "no such vfs"));
    snprintf(uri, sizeof uri, "file:%s/e.db", f->dir);
    assert_int_equal(harnessSqlite3("/nonexistent/libnothing", uri, "SELECT 1;",
                                    WAIT_MS, &out, f->errmsg),
                     TPDB_IOERR);
    assert_int_equal(harnessSqlite3(NULL, "file:x'y.db", "SELECT 1;", WAIT_MS,
                                    &out, f->errmsg),
                     TPDB_INVALID);
    /* A query that never ends is killed at the deadline. */
    assert_int_equal(harnessSqlite3(NULL, uri,
                                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION "
                                    "ALL SELECT x + 1 FROM c) "
                                    "SELECT count(*) FROM c;",
                                    200, &out, f->errmsg),
                     TPDB_TIMEOUT);
    setenv("TPDB_SQLITE3", "/nonexistent/sqlite3", 1);
    assert_int_equal(
        harnessSqlite3(NULL, uri, "SELECT 1;", WAIT_MS, &out, f->errmsg),
        TPDB_IOERR);
    unsetenv("TPDB_SQLITE3");
    assert_null(out);
}

/* Once the extension is built, it loads into the stock shell. */
static void testSqlite3Extension(void **state)
{
    struct fixture *f = *state;
    char ext[HARNESS_PATH_MAX];
    char so[HARNESS_PATH_MAX + 8];
    char uri[HARNESS_PATH_MAX + 64];
    char *out = NULL;
    if (harnessExtPath(ext, sizeof ext, f->errmsg) != TPDB_OK) {
        skip();
    }
    snprintf(so, sizeof so, "%s.so", ext);
    if (access(so, R_OK) != 0) {
        skip();
    }
    snprintf(uri, sizeof uri, "file:%s/x.db?mode=rwc", f->dir);
    int rv = harnessSqlite3(ext, uri, "SELECT 42;", WAIT_MS, &out, f->errmsg);
    if (rv != TPDB_OK) {
        print_error("sqlite3 with extension: %s\n", f->errmsg);
    }
    assert_int_equal(rv, TPDB_OK);
    assert_string_equal(out, "42\n");
    tpdb_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testTmpDir, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testTmpDirErrors, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testFreePorts, setUp, tearDown),
        cmocka_unit_test(testScaleParams),
        cmocka_unit_test_setup_teardown(testCatEcho, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testEnvCwdStderr, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testSpawnErrors, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testExpectAndTimeout, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testChattyStderr, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testReadAll, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testWriteErrors, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testOutOfMemory, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testKillGroup, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testStop, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testCleanup, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testPollUntil, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testExtPath, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testSqlite3Plain, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testSqlite3Errors, setUp, tearDown),
        cmocka_unit_test_setup_teardown(testSqlite3Extension, setUp, tearDown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
