/*
 * The tpdb shell run non-interactively (SQL on stdin, -c, -cmd), against
 * a local database opened through the tpdb VFS and against three real
 * tpdbd processes: every output mode prints byte for byte what the stock
 * sqlite3 prints for the same rows (csv, json and box among them), exit
 * statuses (0, 1 at the first error with nothing after it run, 2 for a
 * usage error), .read, .tables/.indexes/.schema as sqlite3 prints them,
 * -db, .timer, .output, and the cluster commands, also on a local
 * database. Commands that need
 * tpdbd actions this tpdbd lacks are skipped with the reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define WAIT_MS 30000

static struct tpdbds c;
static char shellProg[HARNESS_PATH_MAX];
static char addr[N][64];

/* Rows that exercise quoting, UTF-8, tabs, newlines, REAL formatting,
 * BLOBs (raw bytes in text modes, a JSON string in json) and NULL. */
static const char rows[] =
    "CREATE TABLE t(a, b, c);\n"
    "INSERT INTO t VALUES (1, 'x y', NULL), (22.5, 'he said \"hi\"', "
    "x'41'), (-3, '', 1e300), ('a,b', 'multi\nline', '\xc3\xbcn\xc3\xaf'), "
    "(0.1, '\xe6\x97\xa5\xe6\x9c\xac', 'tab\tx'), (100.0, x'00ff41', -0.0), "
    "(9223372036854775807, 'back\\slash', 1e-300), ('''q''', 'end;', NULL);\n";

static const char *const modes[] = {"list", "column", "box", "table",
                                    "csv",  "json",   "line"};

struct run {
    char *out, *err;
    int status; /* exit code, or -1 if killed by a signal */
};

static void runFree(struct run *r)
{
    tpdb_free(r->out);
    tpdb_free(r->err);
}

/* Runs argv with input on stdin (may be NULL: empty). */
static void runProg(const char *const *argv, const char *input, struct run *r)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct harness_proc *p;
    int status = 0;
    assert_int_equal(harnessSpawn(argv, NULL, c.dir, &p, errmsg), TPDB_OK);
    if (input != NULL) {
        assert_int_equal(harnessProcWriteLine(p, input, WAIT_MS, errmsg),
                         TPDB_OK);
    }
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, WAIT_MS, &r->out, errmsg),
        TPDB_OK);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, WAIT_MS, &r->err, errmsg),
        TPDB_OK);
    assert_int_equal(harnessProcWait(p, WAIT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The shell on target with up to four more arguments (NULL-ended). */
static void shell4(const char *target,
                   const char *a1,
                   const char *a2,
                   const char *a3,
                   const char *a4,
                   const char *input,
                   struct run *r)
{
    const char *argv[] = {shellProg, target, a1, a2, a3, a4, NULL};
    runProg(argv, input, r);
}

static void shell(const char *target,
                  const char *a1,
                  const char *a2,
                  const char *a3,
                  const char *input,
                  struct run *r)
{
    shell4(target, a1, a2, a3, NULL, input, r);
}

static char *sqlite3Output(const char *script)
{
    struct run r;
    const char *argv[] = {"sqlite3", NULL};
    runProg(argv, script, &r);
    assert_int_equal(r.status, 0);
    tpdb_free(r.err);
    return r.out;
}

static int setup(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 1);
    for (int i = 0; i < N; i++) {
        tpdbdsStart(&c, i, NULL);
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%u", c.client[i]);
    }
    for (int i = 0; i < N; i++) {
        tpdbdsWaitReady(&c, i);
    }
    snprintf(shellProg, sizeof shellProg, "%s/shell/tpdb",
             getenv("TPDB_BUILD_ROOT"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

/* For each mode, with headers on and off: the shell on target prints
 * what sqlite3 prints for the same statements. */
static void compareModes(const char *target)
{
    char script[512], want[4096];
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        for (int h = 0; h < 2; h++) {
            struct run r;
            snprintf(script, sizeof script,
                     ".headers %s\n.mode %s\nSELECT * FROM t;\n"
                     "SELECT a FROM t WHERE 0;\nSELECT 1 AS one;\n",
                     h ? "on" : "off", modes[m]);
            snprintf(want, sizeof want, "%s%s", rows, script);
            char *expected = sqlite3Output(want);
            shell(target, NULL, NULL, NULL, script, &r);
            assert_int_equal(r.status, 0);
            if (strcmp(r.out, expected) != 0) {
                fail_msg(
                    "mode %s headers %d differs from sqlite3:\n%s\n"
                    "sqlite3:\n%s",
                    modes[m], h, r.out, expected);
            }
            tpdb_free(expected);
            runFree(&r);
        }
    }
}

static void testLocalModesMatchSqlite3(void **state)
{
    (void)state;
    char db[HARNESS_PATH_MAX + 16];
    struct run r;
    snprintf(db, sizeof db, "%s/local.db", c.dir);
    shell(db, NULL, NULL, NULL, rows, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    compareModes(db);
}

static void testRemoteModesMatchSqlite3(void **state)
{
    (void)state;
    struct run r;
    shell(addr[1], NULL, NULL, NULL, rows, &r); /* any member */
    assert_int_equal(r.status, 0);
    runFree(&r);
    tpdbdsWaitCount(&c, "t", 8, WAIT_MS);
    for (int i = 0; i < N; i++) {
        compareModes(addr[i]);
    }
    shell(addr[2], "-cmd", ".consistency local", NULL,
          ".mode csv\nSELECT count(*) FROM t;", &r);
    assert_string_equal(r.out, "8\r\n");
    runFree(&r);
}

static void testExitStatus(void **state)
{
    (void)state;
    struct run r;
    shell(addr[0], "-c", "SELECT 40 + 2", NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "42\n");
    runFree(&r);

    shell(addr[0], "-c", "SELECT * FROM nope", NULL, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "Error: no such table: nope"));
    runFree(&r);

    /* The first error ends the run: the INSERT after it never runs. */
    shell(addr[1], NULL, NULL, NULL,
          "CREATE TABLE e(x);\nINSERT INTO e VALUES (1);\n"
          "INSERT INTO nope VALUES (1);\nINSERT INTO e VALUES (2);\n",
          &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "no such table: nope"));
    runFree(&r);
    shell(addr[0], "-c", "SELECT group_concat(x) FROM e", NULL, NULL, &r);
    assert_string_equal(r.out, "1\n");
    runFree(&r);

    shell(addr[0], "-c", ".nosuchcommand", NULL, NULL, &r);
    assert_int_equal(r.status, 1);
    runFree(&r);
    shell(addr[0], "-nosuchoption", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 2);
    runFree(&r);
    /* A mistyped subcommand is no database name: nothing is created. */
    char typo[HARNESS_PATH_MAX + 16];
    struct stat sb;
    shell("imprt", NULL, NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown command 'imprt'"));
    runFree(&r);
    snprintf(typo, sizeof typo, "%s/imprt", c.dir);
    assert_int_not_equal(stat(typo, &sb), 0);

    unsigned port;
    assert_int_equal(harnessFreePorts(&port, 1, c.errmsg), TPDB_OK);
    char nobody[32];
    snprintf(nobody, sizeof nobody, "127.0.0.1:%u", port);
    shell(nobody, "-c", "SELECT 1", NULL, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "cannot reach tpdbd"));
    runFree(&r);
}

static void writeFile(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void testRead(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 16], cmd[HARNESS_PATH_MAX + 32];
    static const char script[] =
        ".mode json\nSELECT a, b\n  FROM t\n  ORDER BY rowid;\n"
        ".mode csv\n.headers on\nSELECT c FROM t;\n";
    struct run r;
    snprintf(path, sizeof path, "%s/script.sql", c.dir);
    writeFile(path, script);
    snprintf(cmd, sizeof cmd, ".read %s", path);
    shell(addr[0], "-c", cmd, NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    char *full = tpdb_malloc(sizeof rows + sizeof script);
    snprintf(full, sizeof rows + sizeof script, "%s%s", rows, script);
    char *want = sqlite3Output(full);
    assert_string_equal(r.out, want);
    tpdb_free(want);
    tpdb_free(full);
    runFree(&r);

    writeFile(path, "SELECT 1;\nSELECT * FROM nope;\nSELECT 2;\n");
    shell(addr[0], "-c", cmd, NULL, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "1\n");
    runFree(&r);
}

static const char schema[] =
    "CREATE TABLE b(x);\nCREATE TABLE a(y, z);\nCREATE INDEX a_z ON a(z);\n"
    "CREATE INDEX a_y ON a(y);\nCREATE VIEW v AS SELECT 1;\n";

/* .tables, .indexes and .schema (tables and indexes; sqlite3 adds a
 * comment to views) print what sqlite3 prints. */
static void compareSchema(const char *target)
{
    static const char *const cmds[] = {".tables",    ".tables a%", ".indexes",
                                       ".indexes a", ".schema a",  ".schema b"};
    char script[1024];
    struct run r;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(script, sizeof script, "%s%s\n", schema, cmds[i]);
        char *want = sqlite3Output(script);
        shell(target, "-c", cmds[i], NULL, NULL, &r);
        assert_int_equal(r.status, 0);
        if (strcmp(r.out, want) != 0) {
            fail_msg("%s differs from sqlite3:\n%s\nsqlite3:\n%s", cmds[i],
                     r.out, want);
        }
        tpdb_free(want);
        runFree(&r);
    }
}

static void testSchemaCommands(void **state)
{
    (void)state;
    char db[HARNESS_PATH_MAX + 16];
    struct run r;
    snprintf(db, sizeof db, "%s/schema.db", c.dir);
    shell(db, NULL, NULL, NULL, schema, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    compareSchema(db);
    shell(addr[0], "-db", "schema.db", NULL, schema, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    shell4(addr[1], "-db", "schema.db", "-c", ".tables", NULL, &r);
    assert_string_equal(r.out, "a  b  v\n");
    runFree(&r);
}

/* -db names another database of the node; .timer, .output, and a
 * PRAGMA that writes (refused by query, then sent as propose). */
static void testOptionsAndOutput(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 16], cmd[HARNESS_PATH_MAX + 128];
    struct run r;
    shell4(addr[0], "-db", "other.db", "-c",
           "CREATE TABLE o(x); INSERT INTO o VALUES (7);", NULL, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    shell4(addr[2], "-db", "other.db", "-c", "SELECT x FROM o", NULL, &r);
    assert_string_equal(r.out, "7\n");
    runFree(&r);
    shell(addr[2], "-c", "SELECT x FROM o", NULL, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "no such table: o"));
    runFree(&r);

    shell4(addr[1], "-cmd", ".timer on", "-c", "SELECT 5", NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "5\nRun Time: real "));
    runFree(&r);

    snprintf(path, sizeof path, "%s/out.txt", c.dir);
    snprintf(cmd, sizeof cmd,
             ".output %s\nSELECT 'to the file';\n.output\n"
             "SELECT 'to stdout';\n",
             path);
    shell(addr[1], NULL, NULL, NULL, cmd, &r);
    assert_string_equal(r.out, "to stdout\n");
    runFree(&r);
    FILE *f = fopen(path, "r");
    char line[64] = "";
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "to the file\n");

    shell(addr[0], "-c", "PRAGMA user_version = 7", NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    shell(addr[2], "-c", "PRAGMA user_version", NULL, NULL, &r);
    assert_string_equal(r.out, "7\n");
    runFree(&r);
}

/* On a local database the cluster commands use the library. */
static void testLocalClusterCommands(void **state)
{
    (void)state;
    char db[HARNESS_PATH_MAX + 16], path[HARNESS_PATH_MAX + 16];
    char cmd[HARNESS_PATH_MAX + 32];
    struct run r;
    snprintf(db, sizeof db, "%s/local.db", c.dir);
    shell(db, "-csv", "-c", ".status", NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "id,address,role,term,commit,applied\r\n"));
    assert_non_null(strstr(r.out, ",leader,"));
    runFree(&r);
    shell(db, "-c", ".leader", NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "1@"));
    runFree(&r);
    shell(db, "-c", ".checkpoint", NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    shell(db, "-c", ".join n2 127.0.0.1:1 127.0.0.1:2", NULL, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "tpdb_add"));
    runFree(&r);
    snprintf(path, sizeof path, "%s/local-backup.db", c.dir);
    snprintf(cmd, sizeof cmd, ".backup %s", path);
    shell(db, "-c", cmd, NULL, NULL, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    const char *argv[] = {"sqlite3", path, "SELECT count(*) FROM t", NULL};
    runProg(argv, NULL, &r);
    assert_string_equal(r.out, "8\n");
    runFree(&r);
}

/* Runs a cluster command at member i; returns 1 if tpdbd lacks the
 * action (after printing why the test is skipped), else 0 with *r. */
static int cluster(int i, const char *cmd, struct run *r)
{
    shell(addr[i], "-c", cmd, NULL, NULL, r);
    if (strstr(r->err, "unknown action") != NULL) {
        print_message("skipped: %s: %s", cmd, r->err);
        runFree(r);
        return 1;
    }
    return 0;
}

static void testStatusLeaderMembers(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    char want[64];
    struct run r;
    shell(addr[(leader + 1) % N], "-c", ".leader", NULL, NULL, &r);
    snprintf(want, sizeof want, "n%d at %s", leader + 1, addr[leader]);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, want));
    runFree(&r);
    shell(addr[0], "-csv", "-c", ".status", NULL, &r);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out,
                           "id,role,raft,client,term,commit,"
                           "applied,lag\r\n"));
    assert_int_equal(strstr(r.out, ",Leader,") != NULL, 1);
    assert_null(strstr(r.out, "unreachable"));
    runFree(&r);
    shell(addr[2], "-csv", "-c", ".members", NULL, &r);
    assert_int_equal(r.status, 0);
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "n%d,127.0.0.1:%u,%s,voter", i + 1,
                 c.raft[i], addr[i]);
        assert_non_null(strstr(r.out, want));
    }
    runFree(&r);
}

static void testCheckpointAndBackup(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 16], cmd[HARNESS_PATH_MAX + 32];
    struct run r;
    if (cluster(1, ".checkpoint", &r) == 0) {
        assert_int_equal(r.status, 0);
        runFree(&r);
    }
    snprintf(path, sizeof path, "%s/backup.db", c.dir);
    snprintf(cmd, sizeof cmd, ".backup %s", path);
    if (cluster(1, cmd, &r) != 0) {
        skip();
    }
    assert_int_equal(r.status, 0);
    runFree(&r);
    const char *argv[] = {"sqlite3", path, "SELECT count(*) FROM t", NULL};
    runProg(argv, NULL, &r);
    assert_string_equal(r.out, "8\n");
    runFree(&r);
}

static void testTransferAndRemove(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    int to = (leader + 1) % N, gone = (leader + 2) % N;
    char cmd[64];
    struct run r;
    snprintf(cmd, sizeof cmd, ".transfer n%d", to + 1);
    if (cluster(gone, cmd, &r) != 0) {
        skip();
    }
    assert_int_equal(r.status, 0);
    runFree(&r);
    assert_int_equal(tpdbdsFindLeader(&c, WAIT_MS), to);

    snprintf(cmd, sizeof cmd, ".remove n%d", gone + 1);
    if (cluster(to, cmd, &r) != 0) {
        skip();
    }
    assert_int_equal(r.status, 0);
    runFree(&r);
    shell(addr[to], "-csv", "-c", ".members", NULL, &r);
    snprintf(cmd, sizeof cmd, "n%d,", gone + 1);
    assert_null(strstr(r.out, cmd));
    runFree(&r);
}

static void testInteractiveTransactionAbsent(void **state)
{
    (void)state;
    struct run r;
    shell(addr[0], NULL, NULL, NULL,
          "BEGIN;\nINSERT INTO e VALUES (5);\nCOMMIT;\n", &r);
    if (strstr(r.err, "unknown action: begin") != NULL) {
        /* Nothing after the refused BEGIN ran. */
        assert_int_equal(r.status, 1);
        runFree(&r);
        shell(addr[0], "-c", "SELECT count(*) FROM e WHERE x = 5", NULL, NULL,
              &r);
        assert_string_equal(r.out, "0\n");
        runFree(&r);
        print_message("skipped: tpdbd has no interactive transactions\n");
        skip();
    }
    assert_int_equal(r.status, 0);
    runFree(&r);
    shell(addr[2], "-c", "SELECT count(*) FROM e WHERE x = 5", NULL, NULL, &r);
    assert_string_equal(r.out, "1\n");
    runFree(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testLocalModesMatchSqlite3),
        cmocka_unit_test(testRemoteModesMatchSqlite3),
        cmocka_unit_test(testExitStatus),
        cmocka_unit_test(testRead),
        cmocka_unit_test(testSchemaCommands),
        cmocka_unit_test(testOptionsAndOutput),
        cmocka_unit_test(testLocalClusterCommands),
        cmocka_unit_test(testStatusLeaderMembers),
        cmocka_unit_test(testInteractiveTransactionAbsent),
        cmocka_unit_test(testCheckpointAndBackup),
        cmocka_unit_test(testTransferAndRemove),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
