/*
 * Integration test: the stock Debian sqlite3 shell with the extension
 * loaded. `.load`, `.open` with vfs=tpdb, CREATE/INSERT/SELECT, the status
 * function; a second shell on the same database while another process
 * keeps the node reads the data and writes through that node; the
 * database stays in WAL mode; and a
 * database reopened later (node restart) still holds every row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/base.h"
#include "tests/integration/harness.h"

static char errmsg[TPDB_ERRMSG_SIZE];

struct fixture {
    char dir[HARNESS_PATH_MAX];
    char ext[HARNESS_PATH_MAX];
    char uri[HARNESS_PATH_MAX + 64];
};

static int setup(void **state)
{
    struct fixture *f = tpdb_calloc(1, sizeof *f);
    assert_int_equal(harnessTmpDir(f->dir, sizeof f->dir, errmsg), TPDB_OK);
    assert_int_equal(harnessExtPath(f->ext, sizeof f->ext, errmsg), TPDB_OK);
    snprintf(f->uri, sizeof f->uri, "file:%s/app.db?vfs=tpdb", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    harnessCleanup();
    harnessRmTree(f->dir, errmsg);
    tpdb_free(f);
    return 0;
}

static char *shell(struct fixture *f,
                   const char *ext,
                   const char *uri,
                   const char *sql)
{
    char *out = NULL;
    int rc = harnessSqlite3(ext, uri, sql, 60000, &out, errmsg);
    if (rc != TPDB_OK) {
        fail_msg("sqlite3 on %s: %s", uri, errmsg);
    }
    return out;
}

static void testCreateInsertSelect(void **state)
{
    struct fixture *f = *state;
    char *out = shell(f, f->ext, f->uri,
                      "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);"
                      "INSERT INTO t(name) VALUES('alice'),('bob');"
                      "SELECT group_concat(name, ',') FROM t;"
                      "SELECT json_extract(tpdb_status(), '$.role');"
                      "SELECT json_extract(tpdb_status(), '$.id');"
                      "SELECT json_extract(tpdb_status(), '$.applied_index')"
                      " >= 2;"
                      "PRAGMA journal_mode;");
    assert_string_equal(out, "alice,bob\nleader\n1\n1\nwal\n");
    tpdb_free(out);

    /* A second shell restarts the node from its log and sees both rows. */
    out = shell(f, f->ext, f->uri,
                "INSERT INTO t(name) VALUES('carol');"
                "SELECT count(*) FROM t; SELECT tpdb_leader() IS NOT NULL;");
    assert_string_equal(out, "3\n1\n");
    tpdb_free(out);

    /* The stock shell without the extension reads the same file. */
    char plain[HARNESS_PATH_MAX + 32];
    snprintf(plain, sizeof plain, "file:%s/app.db", f->dir);
    out = shell(f, NULL, plain,
                "SELECT group_concat(name, ',') FROM t; PRAGMA "
                "integrity_check;");
    assert_string_equal(out, "alice,bob,carol\nok\n");
    tpdb_free(out);
}

static void testLeavingWalIsRefused(void **state)
{
    struct fixture *f = *state;
    char *out = NULL;
    char sql[] = "CREATE TABLE t(x); PRAGMA journal_mode=DELETE;";
    int rc = harnessSqlite3(f->ext, f->uri, sql, 60000, &out, errmsg);
    assert_int_not_equal(rc, TPDB_OK);
    assert_non_null(strstr(errmsg, "WAL"));
    tpdb_free(out);
}

/* While one process runs the node, a second process (the stock shell)
 * opening the same database reads the node's applied state and writes
 * through that node (raftfsm/local.h), never starting a second node. */
static void testSecondProcessWritesThrough(void **state)
{
    struct fixture *f = *state;
    struct harness_proc *node = NULL;
    char prog[HARNESS_PATH_MAX + 64];
    const char *build = getenv("TPDB_BUILD_ROOT");
    assert_non_null(build);
    snprintf(prog, sizeof prog, "%s/tests/integration/tpdb-testnode", build);
    const char *argv[] = {prog, f->uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &node, errmsg), TPDB_OK);
    assert_int_equal(
        harnessProcExpect(node, HARNESS_STDOUT, harnessMatchContains, "ready",
                          30000, NULL, errmsg),
        TPDB_OK);
    assert_int_equal(harnessProcWriteLine(node,
                                          "exec CREATE TABLE t(x); INSERT "
                                          "INTO t VALUES(1),(2)",
                                          5000, errmsg),
                     TPDB_OK);
    assert_int_equal(
        harnessProcExpect(node, HARNESS_STDOUT, harnessMatchContains, "ok",
                          30000, NULL, errmsg),
        TPDB_OK);

    char *out = shell(f, f->ext, f->uri, "SELECT sum(x) FROM t;");
    assert_string_equal(out, "3\n");
    tpdb_free(out);
    /* Closing it did not find itself the last connection (the node's
     * process keeps its SHARED lock: raftfsm/dbfile.h), so the WAL the
     * node's process uses is still there. */
    char wal[HARNESS_PATH_MAX + 16];
    struct stat st;
    snprintf(wal, sizeof wal, "%s/app.db-wal", f->dir);
    assert_int_equal(stat(wal, &st), 0);

    out = NULL;
    int rc = harnessSqlite3(f->ext, f->uri, "INSERT INTO t VALUES(3);", 30000,
                            &out, errmsg);
    if (rc != TPDB_OK) {
        fail_msg("the second process's write: %s", errmsg);
    }
    tpdb_free(out);

    /* The node's process reads the row the other process committed. */
    assert_int_equal(
        harnessProcWriteLine(node, "query SELECT sum(x) FROM t", 5000, errmsg),
        TPDB_OK);
    char *line = NULL;
    assert_int_equal(
        harnessProcReadLine(node, HARNESS_STDOUT, 30000, &line, errmsg),
        TPDB_OK);
    assert_string_equal(line, "row 6");
    tpdb_free(line);
}

/* An existing plain SQLite database (rollback journal, with data) opened
 * through tpdb becomes part of the cluster: its image is replicated first,
 * so a restart, which rebuilds the database from the Raft log, keeps it. */
static void testExistingDatabaseIsAdopted(void **state)
{
    struct fixture *f = *state;
    char plain[HARNESS_PATH_MAX + 32];
    snprintf(plain, sizeof plain, "file:%s/app.db", f->dir);
    char *out = shell(f, NULL, plain,
                      "CREATE TABLE old(x); INSERT INTO old "
                      "SELECT value FROM generate_series(1, 5000);"
                      "PRAGMA journal_mode;");
    assert_string_equal(out, "delete\n");
    tpdb_free(out);

    out = shell(f, f->ext, f->uri,
                "INSERT INTO old VALUES(-1);"
                "SELECT count(*), sum(x) FROM old; PRAGMA journal_mode;");
    assert_string_equal(out, "5001|12502499\nwal\n");
    tpdb_free(out);

    /* Restarted: rebuilt from the log (image entry + the insert). */
    out = shell(f, f->ext, f->uri,
                "SELECT count(*), sum(x) FROM old;"
                "SELECT json_extract(tpdb_status(), '$.databases');");
    assert_string_equal(out, "5001|12502499\n1\n");
    tpdb_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testCreateInsertSelect, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testLeavingWalIsRefused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testSecondProcessWritesThrough, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testExistingDatabaseIsAdopted, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
