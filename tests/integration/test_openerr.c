/*
 * Integration test: a failed open says why, on stderr by default and from
 * tpdb_last_error() (SQL, in the stock sqlite3 shell with the extension
 * loaded) or tpdb_errmsg() (C, in tpdb-testnode) on the thread that tried.
 * Cases: a bad peers list, a corrupt Raft log, a read-only directory, a
 * second node with the id and port of a running one, peers lists that
 * disagree between nodes, no quorum within ready_ms; and the log level
 * (TPDB_LOG_LEVEL, the log_level URI parameter).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base.h"
#include "tests/integration/harness.h"

#define SHELL_MS 60000

static char errmsg[TPDB_ERRMSG_SIZE];
static char dir[HARNESS_PATH_MAX];

static int setup(void **state)
{
    (void)state;
    assert_int_equal(harnessTmpDir(dir, sizeof dir, errmsg), TPDB_OK);
    return 0;
}

static int teardown(void **state)
{
    harnessCleanup();
    harnessRmTree(dir, errmsg);
    return harnessTeardown(state);
}

/* What one sqlite3 run printed. */
struct shellRun {
    char *out;
    char *err;
};

static void shellRunFree(struct shellRun *r)
{
    tpdb_free(r->out);
    tpdb_free(r->err);
}

/* Runs the stock sqlite3 shell: `.load` the extension, `.open` uri (which
 * may fail), then `SELECT 'why:' || tpdb_last_error()` on the shell's
 * fallback in-memory database. env as harnessSpawn's. */
static void shellOpen(const char *uri,
                      const char *const *env,
                      struct shellRun *r)
{
    char ext[HARNESS_PATH_MAX];
    char load[HARNESS_PATH_MAX + 16];
    char open[2048];
    const char *bin = getenv("TPDB_SQLITE3");
    struct harness_proc *p = NULL;
    assert_int_equal(harnessExtPath(ext, sizeof ext, errmsg), TPDB_OK);
    snprintf(load, sizeof load, ".load '%s'", ext);
    snprintf(open, sizeof open, ".open '%s'", uri);
    const char *argv[] = {bin != NULL && bin[0] ? bin : "/usr/bin/sqlite3",
                          "-batch",
                          "-cmd",
                          load,
                          "-cmd",
                          open,
                          ":memory:",
                          "SELECT 'why:' || tpdb_last_error();",
                          NULL};
    if (harnessSpawn(argv, env, NULL, &p, errmsg) != TPDB_OK) {
        fail_msg("spawn sqlite3: %s", errmsg);
    }
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, SHELL_MS, &r->out, errmsg),
        TPDB_OK);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, SHELL_MS, &r->err, errmsg),
        TPDB_OK);
    harnessProcWait(p, SHELL_MS, NULL, errmsg);
    harnessProcFree(p);
}

/* Asserts that the open failed and that both tpdb_last_error() and the
 * ERROR line on stderr contain every one of the NULL-terminated strings. */
static void assertOpenFailed(const struct shellRun *r, ...)
{
    va_list ap;
    const char *want;
    if (strstr(r->err, "unable to open database") == NULL) {
        fail_msg("the open did not fail: stdout %s stderr %s", r->out, r->err);
    }
    const char *why = strstr(r->out, "why:");
    if (why == NULL || why[4] == '\n' || why[4] == '\0') {
        fail_msg("tpdb_last_error() is empty: stdout %s", r->out);
    }
    if (strstr(r->err, " ERROR tpdb: open ") == NULL) {
        fail_msg("no ERROR line on stderr: %s", r->err);
    }
    va_start(ap, r);
    while ((want = va_arg(ap, const char *)) != NULL) {
        if (strstr(why, want) == NULL) {
            fail_msg("tpdb_last_error() lacks '%s': %s", want, why);
        }
        if (strstr(r->err, want) == NULL) {
            fail_msg("stderr lacks '%s': %s", want, r->err);
        }
    }
    va_end(ap);
}

static void pathIn(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
}

static void makeDir(const char *name)
{
    char path[HARNESS_PATH_MAX + 64];
    pathIn(path, sizeof path, name);
    assert_int_equal(mkdir(path, 0755), 0);
}

static void test_bad_peers(void **state)
{
    char uri[HARNESS_PATH_MAX + 256];
    struct shellRun r = {0};
    (void)state;
    makeDir("a");
    snprintf(uri, sizeof uri, "file:%s/a/app.db?vfs=tpdb&node=1&peers=garbage",
             dir);
    shellOpen(uri, NULL, &r);
    assertOpenFailed(&r, "app.db", "peers: 'garbage' is not id@host:port",
                     NULL);
    shellRunFree(&r);
}

/* TPDB_LOG_LEVEL=none silences the line; the reason stays available. A
 * bad log_level parameter is itself a clear error. */
static void test_log_level(void **state)
{
    char uri[HARNESS_PATH_MAX + 256];
    struct shellRun r = {0};
    const char *const none[] = {"TPDB_LOG_LEVEL=none", NULL};
    (void)state;
    makeDir("a");
    snprintf(uri, sizeof uri, "file:%s/a/app.db?vfs=tpdb&peers=1@nowhere", dir);
    shellOpen(uri, none, &r);
    assert_non_null(strstr(r.out, "peers: bad address 'nowhere'"));
    assert_null(strstr(r.err, "ERROR"));
    shellRunFree(&r);

    snprintf(uri, sizeof uri, "file:%s/a/app.db?vfs=tpdb&log_level=loud", dir);
    shellOpen(uri, none, &r);
    assert_non_null(strstr(
        r.out, "log_level 'loud': want error, warn, info, debug or none"));
    shellRunFree(&r);

    /* The parameter overrides the environment. */
    snprintf(uri, sizeof uri,
             "file:%s/a/app.db?vfs=tpdb&log_level=error&peers=x", dir);
    shellOpen(uri, none, &r);
    assertOpenFailed(&r, "peers: 'x' is not id@host:port", NULL);
    shellRunFree(&r);
}

/* Finds the closed segment ("<16 digits>-<16 digits>") of a raft directory
 * that starts at index 2: raft 0.15 moves a damaged last closed segment
 * aside and goes on without it, so the damage must be before the last. */
static void secondSegment(const char *raftDir, char *out, size_t size)
{
    DIR *d = opendir(raftDir);
    struct dirent *e;
    int closed = 0;
    out[0] = '\0';
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != 33 || e->d_name[16] != '-') {
            continue;
        }
        closed++;
        if (strncmp(e->d_name, "0000000000000002-", 17) == 0) {
            snprintf(out, size, "%s/%s", raftDir, e->d_name);
        }
    }
    closedir(d);
    if (out[0] == '\0' || closed < 3) {
        fail_msg("want 3 closed segments, one from index 2, in %s", raftDir);
    }
}

static void test_corrupt_log(void **state)
{
    char uri[HARNESS_PATH_MAX + 256];
    char raftDir[HARNESS_PATH_MAX + 64];
    char seg[HARNESS_PATH_MAX + 300];
    char *out = NULL;
    char ext[HARNESS_PATH_MAX];
    struct shellRun r = {0};
    (void)state;
    makeDir("a");
    assert_int_equal(harnessExtPath(ext, sizeof ext, errmsg), TPDB_OK);
    snprintf(uri, sizeof uri, "file:%s/a/app.db?vfs=tpdb", dir);
    if (harnessSqlite3(ext, uri,
                       "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);",
                       SHELL_MS, &out, errmsg) != TPDB_OK) {
        fail_msg("%s", errmsg);
    }
    tpdb_free(out);
    /* Each start closes the last run's open segment. */
    for (int i = 0; i < 2; i++) {
        if (harnessSqlite3(ext, uri, "INSERT INTO t VALUES (3);", SHELL_MS,
                           &out, errmsg) != TPDB_OK) {
            fail_msg("%s", errmsg);
        }
        tpdb_free(out);
    }
    pathIn(raftDir, sizeof raftDir, "a/.tpdb/raft");
    secondSegment(raftDir, seg, sizeof seg);
    FILE *f = fopen(seg, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 100, SEEK_SET), 0);
    assert_int_equal(fwrite("CORRUPTCORRUPT!!", 1, 16, f), 16);
    assert_int_equal(fclose(f), 0);
    shellOpen(uri, NULL, &r);
    assertOpenFailed(&r, "cannot load the Raft state in", "checksum", NULL);
    shellRunFree(&r);
}

/* Root may write anywhere: it gets a read-only tmpfs (skipped where it may
 * not mount); anyone else a directory without write permission. */
static void test_readonly_dir(void **state)
{
    char path[HARNESS_PATH_MAX + 64];
    char uri[HARNESS_PATH_MAX + 256];
    struct shellRun r = {0};
    int mounted = 0;
    (void)state;
    makeDir("ro");
    pathIn(path, sizeof path, "ro");
    if (geteuid() == 0) {
        if (mount("tpdb-test", path, "tmpfs", MS_RDONLY, "size=1m") != 0) {
            print_message("cannot mount a read-only tmpfs: skipped\n");
            skip();
        }
        mounted = 1;
    } else {
        assert_int_equal(chmod(path, 0555), 0);
    }
    snprintf(uri, sizeof uri, "file:%s/app.db?vfs=tpdb", path);
    shellOpen(uri, NULL, &r);
    if (mounted) {
        umount2(path, MNT_DETACH);
    } else {
        chmod(path, 0755);
    }
    assertOpenFailed(&r, "the data directory must be writable",
                     mounted ? "Read-only file system" : "Permission denied",
                     NULL);
    shellRunFree(&r);
}

/* Starts tpdb-testnode on uri; returns it once it printed "ready". */
static struct harness_proc *startNode(const char *uri)
{
    char prog[HARNESS_PATH_MAX];
    const char *root = getenv("TPDB_BUILD_ROOT");
    struct harness_proc *p = NULL;
    char *line = NULL;
    assert_non_null(root);
    snprintf(prog, sizeof prog, "%s/tests/integration/tpdb-testnode", root);
    const char *argv[] = {prog, uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    if (harnessProcReadLine(p, HARNESS_STDOUT, SHELL_MS, &line, errmsg) !=
            TPDB_OK ||
        strcmp(line, "ready") != 0) {
        char *err = NULL;
        harnessProcReadAll(p, HARNESS_STDERR, 5000, &err, errmsg);
        fail_msg("node %s did not start: %s", uri, err ? err : "");
    }
    tpdb_free(line);
    return p;
}

static void test_same_id_and_port(void **state)
{
    char uri[HARNESS_PATH_MAX + 256];
    unsigned port;
    struct shellRun r = {0};
    (void)state;
    makeDir("a");
    makeDir("b");
    assert_int_equal(harnessFreePorts(&port, 1, errmsg), TPDB_OK);
    snprintf(uri, sizeof uri,
             "file:%s/a/app.db?vfs=tpdb&node=1&bind=127.0.0.1:%u", dir, port);
    struct harness_proc *a = startNode(uri);
    snprintf(uri, sizeof uri,
             "file:%s/b/app.db?vfs=tpdb&node=1&bind=127.0.0.1:%u", dir, port);
    shellOpen(uri, NULL, &r);
    char where[64];
    snprintf(where, sizeof where, "node 1 cannot listen on 127.0.0.1:%u", port);
    assertOpenFailed(&r, where, "address already in use",
                     "is node 1, or another program, already running", NULL);
    shellRunFree(&r);
    harnessProcFree(a);
}

/* Reads a stopped node's stderr; returns it if it holds the mismatch
 * reason (caller frees), else NULL. */
static char *mismatchReason(struct harness_proc *p, const char *other)
{
    char *err = NULL;
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, SHELL_MS, &err, errmsg), TPDB_OK);
    if (strstr(err, "unable to open database file: open ") != NULL &&
        strstr(err, other) != NULL &&
        strstr(err, "was started with a different peers list") != NULL &&
        strstr(err, "every node must be given the same peers=") != NULL) {
        return err;
    }
    tpdb_free(err);
    return NULL;
}

/* Node 1 is told of two voters, node 2 of three. The first to receive a
 * stream of the other refuses it and its open fails with the reason, from
 * tpdb_errmsg() in tpdb-testnode, well before ready_ms; the other may
 * then only see a peer that went away. */
static void test_disagreeing_peers(void **state)
{
    char prog[HARNESS_PATH_MAX];
    char uri[2][HARNESS_PATH_MAX + 256];
    unsigned ports[3];
    struct harness_proc *p[2] = {NULL, NULL};
    char *why = NULL;
    (void)state;
    makeDir("a");
    makeDir("b");
    assert_int_equal(harnessFreePorts(ports, 3, errmsg), TPDB_OK);
    snprintf(prog, sizeof prog, "%s/tests/integration/tpdb-testnode",
             getenv("TPDB_BUILD_ROOT"));
    snprintf(uri[0], sizeof uri[0],
             "file:%s/a/app.db?vfs=tpdb&node=1&ready_ms=600000&"
             "peers=1@127.0.0.1:%u,2@127.0.0.1:%u",
             dir, ports[0], ports[1]);
    snprintf(uri[1], sizeof uri[1],
             "file:%s/b/app.db?vfs=tpdb&node=2&ready_ms=600000&"
             "peers=1@127.0.0.1:%u,2@127.0.0.1:%u,3@127.0.0.1:%u",
             dir, ports[0], ports[1], ports[2]);
    for (int i = 0; i < 2; i++) {
        const char *argv[] = {prog, uri[i], NULL};
        assert_int_equal(harnessSpawn(argv, NULL, NULL, &p[i], errmsg),
                         TPDB_OK);
    }
    /* A bound far below ready_ms: only the mismatch ends an open here. */
    uint64_t deadline = tpdbNowMs() + 120000;
    while (why == NULL && tpdbNowMs() < deadline) {
        for (int i = 0; i < 2 && why == NULL; i++) {
            if (harnessProcWait(p[i], 50, NULL, errmsg) == TPDB_OK) {
                why = mismatchReason(
                    p[i], i == 0 ? "node 2 (127.0.0.1:" : "node 1 (127.0.0.1:");
                if (why == NULL) {
                    fail_msg("node %d stopped without the reason", i + 1);
                }
            }
        }
    }
    if (why == NULL) {
        fail_msg("neither node's open failed within 120 s");
    }
    tpdb_free(why);
    harnessProcFree(p[0]);
    harnessProcFree(p[1]);
}

/* The same from the stock shell: tpdb_last_error() and stderr. */
static void test_disagreeing_peers_shell(void **state)
{
    char prog[HARNESS_PATH_MAX];
    char uri[HARNESS_PATH_MAX + 256];
    unsigned ports[3];
    struct shellRun r = {0};
    struct harness_proc *p = NULL;
    (void)state;
    makeDir("a");
    makeDir("b");
    assert_int_equal(harnessFreePorts(ports, 3, errmsg), TPDB_OK);
    snprintf(prog, sizeof prog, "%s/tests/integration/tpdb-testnode",
             getenv("TPDB_BUILD_ROOT"));
    /* Node 1 campaigns to node 2 until it gets an answer. */
    snprintf(uri, sizeof uri,
             "file:%s/a/app.db?vfs=tpdb&node=1&ready_ms=600000&"
             "election_ms=300&peers=1@127.0.0.1:%u,2@127.0.0.1:%u",
             dir, ports[0], ports[1]);
    const char *argv[] = {prog, uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    snprintf(uri, sizeof uri,
             "file:%s/b/app.db?vfs=tpdb&node=2&ready_ms=600000&"
             "election_ms=60000&"
             "peers=1@127.0.0.1:%u,2@127.0.0.1:%u,3@127.0.0.1:%u",
             dir, ports[0], ports[1], ports[2]);
    shellOpen(uri, NULL, &r);
    assertOpenFailed(&r, "node 1 (127.0.0.1:", "different peers list",
                     "every node must be given the same peers=", NULL);
    shellRunFree(&r);
    harnessProcFree(p);
}

static void test_ready_timeout(void **state)
{
    char uri[HARNESS_PATH_MAX + 256];
    unsigned ports[2];
    struct shellRun r = {0};
    (void)state;
    makeDir("a");
    assert_int_equal(harnessFreePorts(ports, 2, errmsg), TPDB_OK);
    snprintf(uri, sizeof uri,
             "file:%s/a/app.db?vfs=tpdb&node=1&ready_ms=1500&"
             "peers=1@127.0.0.1:%u,2@127.0.0.1:%u",
             dir, ports[0], ports[1]);
    shellOpen(uri, NULL, &r);
    char peer[64];
    snprintf(peer, sizeof peer, "connect 127.0.0.1:%u", ports[1]);
    assertOpenFailed(&r, "no leader told its commit index within 1500 ms", peer,
                     NULL);
    shellRunFree(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_peers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_id_and_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disagreeing_peers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_disagreeing_peers_shell, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ready_timeout, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
