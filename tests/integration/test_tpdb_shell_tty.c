/*
 * The tpdb shell typed at through a terminal (tmux), against three real
 * tpdbd processes: a statement over several lines and a write typed at a
 * follower (forwarded, then on every node), .mode box output identical to
 * the stock sqlite3's for the same rows, history recall with the up arrow
 * and the history file, Ctrl-C dropping a half-typed statement and
 * cancelling one being waited for (a read; a write, whose outcome is then
 * unknown and said to be), Ctrl-D leaving, BEGIN ... COMMIT typed
 * by hand (skipped while tpdbd answers "unknown action: begin"), a node
 * restarted under the shell, .bail on ending the shell, and
 * .status after the leader was SIGKILLed, the shell moving to another
 * member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/integration/tpdbds.h"
#include "tests/integration/tty.h"

#define N 3
#define WAIT_MS 30000

static struct tpdbds c;
static struct tty t;
static char home[HARNESS_PATH_MAX + 16];
static char shellProg[HARNESS_PATH_MAX];

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 1);
    tpdbdsStartAll(&c, NULL);
    snprintf(shellProg, sizeof shellProg, "%s/shell/tpdb",
             getenv("TPDB_BUILD_ROOT"));
    snprintf(home, sizeof home, "HOME=%s", c.dir);
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    ttyClose(&t);
    tpdbdsClose(&c);
    return 0;
}

static int closeTty(void **state)
{
    (void)state;
    ttyClose(&t);
    return 0;
}

/* Opens the shell on member i and waits for its banner. */
static void shellAt(int i)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", c.client[i]);
    const char *argv[] = {shellProg, addr, NULL};
    const char *env[] = {home, NULL};
    ttyStart(&t, c.dir, argv, env);
    ttyWaitCount(&t, "Enter \".help\" for usage hints.", 1, WAIT_MS);
    ttyWaitCount(&t, "tpdb> ", 1, WAIT_MS);
}

/* Types line and waits for the (n)th main prompt after it. */
static void typeWait(const char *line, int prompts)
{
    ttyType(&t, line);
    ttyWaitCount(&t, "tpdb> ", prompts, WAIT_MS);
}

static int follower(void)
{
    return (tpdbdsFindLeader(&c, WAIT_MS) + 1) % N;
}

/* What the stock sqlite3 prints for script. */
static char *sqlite3Output(const char *script)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    const char *argv[] = {"sqlite3", NULL};
    struct harness_proc *p;
    char *out = NULL;
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    assert_int_equal(harnessProcWriteLine(p, script, WAIT_MS, errmsg), TPDB_OK);
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, WAIT_MS, &out, errmsg), TPDB_OK);
    harnessProcFree(p);
    return out;
}

static void assertScreenHas(const char *text)
{
    char *s = ttyScreen(&t);
    if (strstr(s, text) == NULL) {
        fail_msg("screen lacks:\n%s\nscreen:\n%s", text, s);
    }
    tpdb_free(s);
}

static void testTypingAtFollower(void **state)
{
    (void)state;
    shellAt(follower());
    typeWait("CREATE TABLE t(a INTEGER, b TEXT);", 2);
    ttyType(&t, "INSERT INTO t VALUES (1, 'one'),");
    ttyWaitCount(&t, "   ...> ", 1, WAIT_MS);
    typeWait("  (2, 'two, \"quoted\"');", 3);
    tpdbdsWaitCount(&c, "t", 2, WAIT_MS);

    typeWait(".mode box", 4);
    typeWait("SELECT a, b FROM t ORDER BY a;", 5);
    char *want = sqlite3Output(
        "CREATE TABLE t(a INTEGER, b TEXT);"
        "INSERT INTO t VALUES (1, 'one'), (2, 'two, \"quoted\"');\n"
        ".mode box\nSELECT a, b FROM t ORDER BY a;");
    assert_non_null(strstr(want, "\u2502 2 \u2502"));
    assertScreenHas(want);
    tpdb_free(want);

    typeWait("SELECT count(*) AS n FROM t;", 6);
    assert_int_equal(ttyCount(&t, "\u2502 n \u2502"), 1);
    ttyKey(&t, "Up");
    ttyKey(&t, "Enter");
    ttyWaitCount(&t, "\u2502 n \u2502", 2, WAIT_MS);
    assert_int_equal(ttyCount(&t, "Error"), 0);

    char path[HARNESS_PATH_MAX + 32], line[512];
    snprintf(path, sizeof path, "%s/.tpdb_history", c.dir);
    FILE *f = fopen(path, "r");
    int found = 0;
    assert_non_null(f);
    while (fgets(line, sizeof line, f) != NULL) {
        found |= strstr(line, "count(*)") != NULL;
    }
    fclose(f);
    assert_true(found);
}

/* BEGIN answered: the transaction prompt, or tpdbd's refusal. */
static int begun(void *arg)
{
    (void)arg;
    return ttyCount(&t, "tpdb*> ") > 0 ||
           ttyCount(&t, "unknown action: begin") > 0;
}

static void testTransactionByHand(void **state)
{
    (void)state;
    shellAt(follower());
    ttyType(&t, "BEGIN;");
    assert_int_equal(harnessPollUntil(begun, NULL, WAIT_MS, 50), TPDB_OK);
    if (ttyCount(&t, "unknown action: begin") > 0) {
        print_message(
            "skipped: this tpdbd has no interactive transactions "
            "(unknown action: begin)\n");
        skip();
    }
    assert_int_equal(ttyCount(&t, "Error"), 0);
    ttyType(&t, "INSERT INTO t VALUES (3, 'three');");
    ttyWaitCount(&t, "tpdb*> ", 2, WAIT_MS);
    ttyType(&t, "SELECT count(*) FROM t;");
    ttyWaitCount(&t, "tpdb*> ", 3, WAIT_MS);
    assertScreenHas("\n3\n");
    /* Nobody else sees the open transaction's row. */
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    json_t *o = tpdbdsCall(&c, leader,
                           "{\"action\":\"local_query\",\"sql\":"
                           "\"SELECT count(*) FROM t\"}");
    assert_int_equal(json_integer_value(json_array_get(
                         json_array_get(json_object_get(o, "rows"), 0), 0)),
                     2);
    json_decref(o);
    typeWait("ROLLBACK;", 2);
    tpdbdsWaitCount(&c, "t", 2, WAIT_MS);
    ttyType(&t, "BEGIN;");
    ttyWaitCount(&t, "tpdb*> ", 4, WAIT_MS);
    ttyType(&t, "INSERT INTO t VALUES (3, 'three');");
    ttyWaitCount(&t, "tpdb*> ", 5, WAIT_MS);
    typeWait("COMMIT;", 3);
    assert_int_equal(ttyCount(&t, "Error"), 0);
    tpdbdsWaitCount(&c, "t", 3, WAIT_MS);
    typeWait("DELETE FROM t WHERE a = 3;", 4);
    tpdbdsWaitCount(&c, "t", 2, WAIT_MS);
}

/* How many "Error: interrupted" the screen had before the Ctrl-C. */
static int interruptsBefore;

static int interrupted(void *arg)
{
    (void)arg;
    return ttyCount(&t, "Error: interrupted") > interruptsBefore;
}

static int exited(void *arg)
{
    (void)arg;
    return ttyExited(&t);
}

/* Enter was taken: the cursor went to the start of the next line, where
 * no prompt is shown while the statement runs. */
static int entered(void *arg)
{
    (void)arg;
    return ttyCursorX(&t) == 0;
}

/* Presses Ctrl-C, once the typed statement was entered, until it is
 * cancelled (pressed again if it landed before the statement started). */
static void interruptWait(void)
{
    interruptsBefore = ttyCount(&t, "Error: interrupted");
    assert_int_equal(harnessPollUntil(entered, NULL, WAIT_MS, 20), TPDB_OK);
    for (int k = 0; k < 30; k++) {
        ttyKey(&t, "C-c");
        if (harnessPollUntil(interrupted, NULL, 1000, 50) == TPDB_OK) {
            return;
        }
    }
    ttyWaitCount(&t, "Error: interrupted", interruptsBefore + 1, WAIT_MS);
}

static void testCtrlC(void **state)
{
    (void)state;
    shellAt(follower());
    ttyType(&t, "SELECT 1 AS x,");
    ttyWaitCount(&t, "   ...> ", 1, WAIT_MS);
    ttyKey(&t, "C-c");
    ttyWaitCount(&t, "^C", 1, WAIT_MS);
    typeWait("SELECT 6 * 7;", 3);
    assertScreenHas("\n42\n");
    assert_int_equal(ttyCount(&t, "Error"), 0);

    /* A read of a minute or more on this node, cancelled while waited for;
     * the shell answers at once and goes on. */
    typeWait(".consistency local", 4);
    ttyType(&t,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
            "FROM c WHERE x < 100000000) SELECT count(*) FROM c;");
    interruptWait();
    int prompts = ttyCount(&t, "tpdb> ");
    typeWait("SELECT 'still here';", prompts + 1);
    assertScreenHas("\nstill here\n");

    /* A slow write cancelled while waited for: its outcome is unknown,
     * and the shell says so. */
    typeWait("CREATE TABLE slow(n);", prompts + 2);
    ttyType(&t,
            "INSERT INTO slow SELECT count(*) FROM (WITH RECURSIVE c(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) "
            "SELECT x FROM c);");
    interruptWait();
    assertScreenHas(
        "Error: interrupted\nThe outcome is unknown: the write may or "
        "may not have committed. Check (SELECT) before retrying.");
    typeWait("SELECT 'and on';", prompts + 4);

    ttyKey(&t, "C-d");
    assert_int_equal(harnessPollUntil(exited, NULL, WAIT_MS, 50), TPDB_OK);
}

/* A node restarted under the shell: the closed connection is reopened to
 * the same node before the next statement. */
static void testNodeRestarted(void **state)
{
    (void)state;
    int f = follower();
    shellAt(f);
    typeWait("SELECT 'before';", 2);
    assert_int_equal(tpdbdsStop(&c, f, WAIT_MS), 0);
    tpdbdsStart(&c, f, NULL);
    tpdbdsWaitReady(&c, f);
    typeWait("SELECT 'after ' || count(*) FROM t;", 3);
    assertScreenHas("\nafter 2\n");
    assert_int_equal(ttyCount(&t, "trying"), 0);
    assert_int_equal(ttyCount(&t, "Error"), 0);
}

/* .bail on: the first error ends the shell. */
static void testBail(void **state)
{
    (void)state;
    shellAt(0);
    typeWait(".bail on", 2);
    ttyType(&t, "SELECT * FROM nope;");
    assert_int_equal(harnessPollUntil(exited, NULL, WAIT_MS, 50), TPDB_OK);
    assertScreenHas("Error: no such table: nope");
}

static void testStatusAfterLeaderKilled(void **state)
{
    (void)state;
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    char killed[64];
    snprintf(killed, sizeof killed, "\u2502 n%d \u2502 unreachable",
             leader + 1);
    shellAt(leader);
    typeWait(".status", 2);
    assert_int_equal(ttyCount(&t, "\u2502 Leader"), 1);
    assert_int_equal(ttyCount(&t, "unreachable"), 0);

    tpdbdsKill(&c, leader);
    /* A read typed now is not lost: the shell moves to another member
     * and waits there for the new leader. */
    typeWait("SELECT count(*) AS rows_now FROM t;", 3);
    assertScreenHas("trying n"); /* the shell moved to another member */
    assertScreenHas("\n2\n");
    assert_int_equal(ttyCount(&t, "Error"), 0);
    /* Typed again until a new leader is elected and shown, as a person
     * would. */
    int prompts = 3;
    for (int k = 0; k < 60; k++) {
        typeWait(".status", ++prompts);
        if (ttyCount(&t, killed) > 0 && ttyCount(&t, "\u2502 Leader") >= 2) {
            break;
        }
        tpdbdsFindLeader(&c, WAIT_MS); /* waits for an election */
    }
    assertScreenHas(killed);
    assert_true(ttyCount(&t, "\u2502 Leader") >= 2);
    typeWait("INSERT INTO t VALUES (4, 'after the kill');", ++prompts);
    tpdbdsWaitCount(&c, "t", 3, WAIT_MS);
    assert_int_equal(ttyCount(&t, "Error"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testTypingAtFollower, closeTty),
        cmocka_unit_test_teardown(testTransactionByHand, closeTty),
        /* Before testCtrlC: the statements it cancels keep their nodes
         * busy, and SIGTERM waits for a running request. */
        cmocka_unit_test_teardown(testNodeRestarted, closeTty),
        cmocka_unit_test_teardown(testBail, closeTty),
        cmocka_unit_test_teardown(testCtrlC, closeTty),
        cmocka_unit_test_teardown(testStatusAfterLeaderKilled, closeTty),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
