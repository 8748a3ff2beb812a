/*
 * Recovery from a lost quorum with `tpdb recover`: a 3-node cluster of
 * real tpdb-testnode processes takes writes; two members are SIGKILLed and
 * their data directories destroyed, so the survivor cannot commit (shown);
 * the survivor is stopped, `tpdb recover` on its directory refuses while it
 * runs and refuses members without it, then makes it the only member;
 * restarted, it leads and commits alone, and two fresh nodes join it,
 * get every row and commit with it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define WAIT_MS 60000
#define PARAMS "election_ms=400&heartbeat_ms=40&ready_ms=60000&commit_ms=3000"

static char errmsg[TPDB_ERRMSG_SIZE];

static void commit(struct nodes *c, int *leader, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    for (int attempt = 0; attempt < 100; attempt++) {
        char *line = nodesCommand(c, *leader, cmd);
        int ok = line != NULL && strncmp(line, "ok", 2) == 0;
        tpdb_free(line);
        if (ok) {
            return;
        }
        *leader = nodesFindLeader(c, WAIT_MS);
    }
    fail_msg("write '%s' never acknowledged", sql);
}

/* Runs `tpdb recover <member i's dir> --members members`; its exit code. */
static int recover(struct nodes *c, int i, const char *members)
{
    char prog[HARNESS_PATH_MAX + 32];
    char dir[HARNESS_PATH_MAX + 16];
    struct harness_proc *p = NULL;
    int status = 0;
    snprintf(prog, sizeof prog, "%s/shell/tpdb", getenv("TPDB_BUILD_ROOT"));
    nodesPath(c, i, "", dir, sizeof dir);
    const char *argv[] = {prog, "recover", dir, "--members", members, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    assert_int_equal(harnessProcWait(p, WAIT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void rmDir(struct nodes *c, int i)
{
    char dir[HARNESS_PATH_MAX + 16];
    nodesPath(c, i, "", dir, sizeof dir);
    assert_int_equal(harnessRmTree(dir, errmsg), TPDB_OK);
}

static void testRecoverFromOneSurvivor(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char members[64];
    char bad[64];
    int leader;
    (void)state;
    assert_non_null(c);
    nodesInit(c, 3, 3, PARAMS);
    for (int i = 0; i < 3; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < 3; i++) {
        nodesWaitReady(c, i);
    }
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    for (int i = 0; i < 20; i++) {
        commit(c, &leader, "INSERT INTO t(v) VALUES ('before')");
    }
    nodesWaitApplied(c, WAIT_MS);

    /* Two members are gone for good: the survivor cannot commit. */
    nodesKill(c, 1);
    nodesKill(c, 2);
    rmDir(c, 1);
    rmDir(c, 2);
    char *line = nodesCommand(c, 0, "exec INSERT INTO t(v) VALUES ('lost')");
    assert_non_null(line);
    assert_true(strncmp(line, "err", 3) == 0);
    tpdb_free(line);

    snprintf(members, sizeof members, "1@127.0.0.1:%u", c->ports[0]);
    snprintf(bad, sizeof bad, "2@127.0.0.1:%u", c->ports[1]);
    assert_int_equal(recover(c, 0, members), 1); /* it still runs */
    line = nodesCommand(c, 0, "quit");
    tpdb_free(line);
    assert_int_equal(harnessProcWait(c->procs[0], NODES_IO_MS, NULL, errmsg),
                     TPDB_OK);
    harnessProcFree(c->procs[0]);
    c->procs[0] = NULL;
    assert_int_equal(recover(c, 0, bad), 1); /* without itself */
    assert_int_equal(recover(c, 0, members), 0);

    nodesStart(c, 0, -1);
    nodesWaitReady(c, 0);
    leader = nodesFindLeader(c, WAIT_MS);
    assert_int_equal(leader, 0);
    commit(c, &leader, "INSERT INTO t(v) VALUES ('after')");
    nodesStart(c, 1, 0);
    nodesWaitReady(c, 1);
    nodesStart(c, 2, 0);
    nodesWaitReady(c, 2);
    commit(c, &leader, "INSERT INTO t(v) VALUES ('all three')");
    nodesWaitApplied(c, WAIT_MS);
    for (int i = 0; i < 3; i++) {
        char *row = nodesQueryFirst(c, i, "SELECT count(*) FROM t");
        assert_non_null(row);
        /* 20 before, 'after', 'all three'; 'lost' may or may not have
         * committed on the survivor's log. */
        assert_true(strcmp(row, "row 22") == 0 || strcmp(row, "row 23") == 0);
        tpdb_free(row);
    }
    nodesClose(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testRecoverFromOneSurvivor, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
