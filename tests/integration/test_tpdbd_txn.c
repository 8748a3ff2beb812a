/*
 * Interactive transactions of tpdbd on three real tpdbd processes
 * (--txn-idle-ms 3000): a transaction held on the leader across requests,
 * invisible to other connections until its commit, then on every node; a
 * failing statement inside it undone alone; its rollback when the client
 * disconnects and when it sits idle (a plain propose waiting for the write
 * lock meanwhile goes through once it is released); plain proposes from
 * other clients during an open transaction (they wait for the lock, or go
 * on at once on another database); a transaction on another database
 * than data.db; a transaction begun on a follower and
 * relayed to the leader, committed and seen on every node, and rolled back
 * when its client disconnects; a commit while both followers are stopped
 * (SIGSTOP) never reports success and agrees with what every node holds
 * afterwards; a transaction on a leader that hands leadership over is
 * rolled back and frees the write lock the new leader's writes need;
 * malformed transaction requests; a relayed transaction whose leader is
 * SIGKILLed says so and is rolled back; SIGTERM of a leader with an open
 * transaction rolls it back and exits 0. On one more node (--txn-idle-ms
 * 60000): a transaction holding the write lock past the 10 s busy timeout makes
 * a plain propose and another begin fail with a clear busy error.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define WAIT_MS 30000

static struct tpdbds c;

static const char *const flags[] = {"--txn-idle-ms=3000", "--commit-ms=5000",
                                    NULL};

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    tpdbdsStartAll(&c, flags);
    int l = tpdbdsFindLeader(&c, TPDBDS_READY_MS);
    json_t *o = tpdbdsCall(&c, l,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(id INTEGER PRIMARY KEY, v TEXT)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

/* Asserts that line on fd gets ok:true; returns the reply. */
static json_t *ok(int fd, const char *line)
{
    json_t *o = tpdbdsOnConn(fd, line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("%s -> %s", line, tpdbdsText(o));
    }
    return o;
}

static void okDrop(int fd, const char *line)
{
    json_decref(ok(fd, line));
}

/* Asserts that line on fd gets ok:false with an error starting with
 * prefix. */
static void refused(int fd, const char *line, const char *prefix)
{
    json_t *o = tpdbdsOnConn(fd, line);
    const char *e = json_string_value(json_object_get(o, "error"));
    if (!json_is_false(json_object_get(o, "ok")) || e == NULL ||
        strncmp(e, prefix, strlen(prefix)) != 0) {
        fail_msg("%s -> %s, not an error '%s...'", line, tpdbdsText(o), prefix);
    }
    json_decref(o);
}

static int connectTo(int i)
{
    int fd = tpdbdsConnect(c.client[i]);
    assert_true(fd >= 0);
    return fd;
}

/* count(*) of t WHERE cond by local_query on member i (own connection). */
static long long countOn(int i, const char *cond)
{
    json_t *o = tpdbdsCall(&c, i,
                           "{\"action\":\"local_query\",\"sql\":\"SELECT "
                           "count(*) FROM t WHERE %s\"}",
                           cond);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("count on n%d: %s", i + 1, tpdbdsText(o));
    }
    long long n = json_integer_value(
        json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0));
    json_decref(o);
    return n;
}

static const char insert[] =
    "{\"action\":\"propose\",\"sql\":\"INSERT INTO "
    "t(id, v) VALUES(?, 'txn')\",\"params\":[%d]}";

static void insertOn(int fd, int id)
{
    char line[256];
    snprintf(line, sizeof line, insert, id);
    okDrop(fd, line);
}

static void testHeldOnLeader(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo(l);
    json_t *o = ok(fd, "{\"action\":\"begin\"}");
    assert_string_equal(json_string_value(json_object_get(o, "db")), "data.db");
    json_decref(o);
    insertOn(fd, 1);
    insertOn(fd, 2);
    /* A failing statement is undone alone; the transaction stays open. */
    refused(fd,
            "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id) "
            "VALUES(1)\"}",
            "UNIQUE constraint failed");
    o = ok(fd,
           "{\"action\":\"query\",\"sql\":\"SELECT count(*) FROM t "
           "WHERE id <= 2\"}");
    assert_int_equal(json_integer_value(json_array_get(
                         json_array_get(json_object_get(o, "rows"), 0), 0)),
                     2);
    json_decref(o);
    /* Other connections do not see it before the commit. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id <= 2"), 0);
    }
    o = ok(fd, "{\"action\":\"commit\"}");
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(o, "last_id")), 2);
    json_decref(o);
    close(fd);
    tpdbdsWaitCount(&c, "t", 2, WAIT_MS);
}

/* A plain propose on a new connection to member i; asserts ok. */
static void plainInsert(int i, int id)
{
    json_t *o = tpdbdsCall(&c, i, insert, id);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("plain insert %d via n%d: %s", id, i + 1, tpdbdsText(o));
    }
    json_decref(o);
}

static void testRollbackOnDisconnect(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo(l);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 10);
    insertOn(fd, 11);
    close(fd);
    /* The write lock is free again (else this waits out its busy timeout
     * and fails) and the transaction's rows never appear. */
    plainInsert(l, 12);
    tpdbdsWaitCount(&c, "t", 3, WAIT_MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id IN (10, 11)"), 0);
    }
}

static void testRollbackOnIdle(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo(l);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 20);
    /* Waits for the write lock until the idle transaction (3 s) is rolled
     * back, well within its 10 s busy timeout. */
    plainInsert(l, 21);
    refused(fd, "{\"action\":\"query\",\"sql\":\"SELECT 1\"}",
            "the transaction was rolled back (idle for more than 3000 ms");
    refused(fd, "{\"action\":\"commit\"}",
            "the transaction was rolled back (idle for more than 3000 ms");
    /* The commit ended it: the connection works as usual again. */
    refused(fd, "{\"action\":\"rollback\"}", "rollback: no transaction");
    okDrop(fd, "{\"action\":\"begin\"}");
    okDrop(fd, "{\"action\":\"rollback\"}");
    close(fd);
    tpdbdsWaitCount(&c, "t", 4, WAIT_MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id = 20"), 0);
        assert_int_equal(countOn(i, "id = 21"), 1);
    }
}

struct writer {
    int member, id;
    json_t *reply;
};

static void *writerThread(void *arg)
{
    struct writer *w = arg;
    w->reply = tpdbdsCall(&c, w->member, insert, w->id);
    return NULL;
}

static void testConcurrentProposes(void **state)
{
    (void)state;
    pthread_t tid[2];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    struct writer w[2] = {{l, 31, NULL}, {(l + 1) % N, 32, NULL}};
    int fd = connectTo(l);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 30);
    /* Another database has its own write lock: no wait. */
    json_t *o = tpdbdsCall(&c, l,
                           "{\"action\":\"propose\",\"db\":\"other.db\","
                           "\"sql\":\"CREATE TABLE u(x)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    /* Plain proposes to data.db, on the leader and through a follower,
     * wait for the write lock and go through after the commit. */
    for (int k = 0; k < 2; k++) {
        assert_int_equal(pthread_create(&tid[k], NULL, writerThread, &w[k]), 0);
    }
    okDrop(fd, "{\"action\":\"commit\"}");
    for (int k = 0; k < 2; k++) {
        pthread_join(tid[k], NULL);
        if (!json_is_true(json_object_get(w[k].reply, "ok"))) {
            fail_msg("concurrent insert %d: %s", w[k].id,
                     tpdbdsText(w[k].reply));
        }
        json_decref(w[k].reply);
    }
    close(fd);
    tpdbdsWaitCount(&c, "t", 7, WAIT_MS);
}

/* Whether every member's other.db holds 3 rows in u. */
static int otherDbDone(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i++) {
        json_t *o = tpdbdsCall(&c, i,
                               "{\"action\":\"local_query\",\"db\":"
                               "\"other.db\",\"sql\":\"SELECT count(*) "
                               "FROM u\"}");
        long long n = json_integer_value(
            json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0));
        json_decref(o);
        if (n != 3) {
            return 0;
        }
    }
    return 1;
}

/* A transaction on another database than data.db, begun on a follower. */
static void testOtherDb(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo((l + 1) % N);
    json_t *o = ok(fd, "{\"action\":\"begin\",\"db\":\"other.db\"}");
    assert_string_equal(json_string_value(json_object_get(o, "db")),
                        "other.db");
    json_decref(o);
    okDrop(fd,
           "{\"action\":\"propose\",\"sql\":\"INSERT INTO u "
           "VALUES(1), (2)\"}");
    okDrop(fd,
           "{\"action\":\"propose\",\"db\":\"other.db\",\"sql\":"
           "\"INSERT INTO u VALUES(3)\"}");
    refused(fd,
            "{\"action\":\"propose\",\"db\":\"data.db\",\"sql\":"
            "\"SELECT 1\"}",
            "the open transaction is on other.db");
    o = ok(fd, "{\"action\":\"commit\"}");
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     3);
    json_decref(o);
    close(fd);
    assert_int_equal(harnessPollUntil(otherDbDone, NULL, WAIT_MS, 50), TPDB_OK);
}

static void testBegunOnFollower(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f = (l + 1) % N;
    int fd = connectTo(f);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 40);
    insertOn(fd, 41);
    /* Reads in it run on the leader, in the transaction. */
    json_t *o = ok(fd,
                   "{\"action\":\"local_query\",\"sql\":\"SELECT "
                   "count(*) FROM t WHERE id IN (40, 41)\"}");
    assert_int_equal(json_integer_value(json_array_get(
                         json_array_get(json_object_get(o, "rows"), 0), 0)),
                     2);
    json_decref(o);
    assert_int_equal(countOn(l, "id IN (40, 41)"), 0);
    refused(fd, "{\"action\":\"begin\"}", "a transaction is already open");
    o = ok(fd, "{\"action\":\"commit\"}");
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     2);
    json_decref(o);
    tpdbdsWaitCount(&c, "t", 9, WAIT_MS);

    /* Disconnecting from the follower rolls it back on the leader. */
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 42);
    close(fd);
    plainInsert(f, 43);
    tpdbdsWaitCount(&c, "t", 10, WAIT_MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id = 42"), 0);
    }
}

static void testMalformed(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo((l + 1) % N);
    refused(fd, "{\"action\":\"commit\"}", "commit: no transaction is open");
    refused(fd, "{\"action\":\"rollback\"}",
            "rollback: no transaction is open");
    refused(fd, "{\"action\":\"begin\",\"db\":7}", "db must name a database");
    refused(fd, "{\"action\":\"begin\",\"db\":\"../x.db\"}",
            "db must name a database");
    refused(fd, "{\"action\":\"begin\",\"db\":\"tpdbd-meta.db\"}",
            "db must name a database");
    okDrop(fd, "{\"action\":\"begin\"}");
    refused(fd, "{\"action\":\"begin\"}", "a transaction is already open");
    refused(fd, "{\"action\":\"propose\",\"sql\":\"COMMIT\"}",
            "BEGIN, COMMIT and ROLLBACK cannot run inside a transaction");
    refused(fd, "{\"action\":\"propose\",\"sql\":\"BEGIN\"}",
            "BEGIN, COMMIT and ROLLBACK cannot run inside a transaction");
    refused(fd,
            "{\"action\":\"propose\",\"db\":\"other.db\",\"sql\":\"SELECT "
            "1\"}",
            "the open transaction is on data.db");
    refused(fd, "{\"action\":\"propose\"}", "Missing hash key: \"sql\"");
    refused(fd, "{\"action\":\"propose\",\"sql\":5}", "sql must be a string");
    refused(fd, "{\"action\":\"query\",\"sql\":\"DELETE FROM t\"}",
            "query and local_query take read-only");
    /* The transaction survived every refusal; it still commits. */
    insertOn(fd, 50);
    okDrop(fd, "{\"action\":\"commit\"}");
    close(fd);
    tpdbdsWaitCount(&c, "t", 11, WAIT_MS);
}

static void testCommitWithoutQuorum(void **state)
{
    (void)state;
    char err[TPDB_ERRMSG_SIZE];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo(l);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 60);
    for (int i = 0; i < N; i++) {
        if (i != l) {
            assert_int_equal(harnessProcSignal(c.procs[i], SIGSTOP, err),
                             TPDB_OK);
        }
    }
    json_t *o = tpdbdsOnConn(fd, "{\"action\":\"commit\"}");
    const char *e = json_string_value(json_object_get(o, "error"));
    int unknown = e != NULL && strncmp(e, "outcome unknown", 15) == 0;
    int failed = e != NULL && strncmp(e, "commit failed", 13) == 0;
    print_message("commit without quorum: %s\n", tpdbdsText(o));
    for (int i = 0; i < N; i++) {
        if (i != l) {
            assert_int_equal(harnessProcSignal(c.procs[i], SIGCONT, err),
                             TPDB_OK);
        }
    }
    if (!unknown && !failed) {
        fail_msg("commit without a quorum: %s", tpdbdsText(o));
    }
    json_decref(o);
    close(fd);
    /* A later write through the new leader, then every node agrees. */
    l = tpdbdsFindLeader(&c, WAIT_MS);
    plainInsert(l, 61);
    long long present = countOn(l, "id = 60");
    assert_true(present == 0 || unknown);
    tpdbdsWaitCount(&c, "t", 12 + present, WAIT_MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id = 60"), present);
    }
}

static void testLeadershipMoves(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo(l);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 70);
    json_t *o = tpdbdsCall(&c, (l + 1) % N, "{\"action\":\"transfer\"}");
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("transfer: %s", tpdbdsText(o));
    }
    json_decref(o);
    int now = tpdbdsFindLeader(&c, WAIT_MS);
    assert_int_not_equal(now, l);
    /* The old leader gave up the write lock: it applies the new leader's
     * writes. */
    plainInsert(now, 71);
    long long before = countOn(now, "1");
    tpdbdsWaitCount(&c, "t", before, WAIT_MS);
    refused(fd, "{\"action\":\"propose\",\"sql\":\"SELECT 1\"}",
            "the transaction was rolled back (this node lost leadership)");
    okDrop(fd, "{\"action\":\"rollback\"}");
    close(fd);
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id = 70"), 0);
    }
}

struct locked {
    struct tpdbds *single;
    const char *line;
    json_t *reply;
};

static void *lockedThread(void *arg)
{
    struct locked *k = arg;
    k->reply = tpdbdsRequest(k->single->client[0], k->line);
    return NULL;
}

/* A transaction that holds the write lock longer than the 10 s busy
 * timeout (one node, --txn-idle-ms 60000): a plain propose and another
 * begin give up with a clear busy error; the transaction still commits. */
static void testBusyError(void **state)
{
    static const char *const longIdle[] = {"--txn-idle-ms=60000", NULL};
    static struct tpdbds single;
    struct locked k[2] = {
        {&single,
         "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id) "
         "VALUES(2)\"}",
         NULL},
        {&single, "{\"action\":\"begin\"}", NULL},
    };
    static const char *const want[2] = {
        "database is locked: another "
        "transaction",
        "begin: database is locked: another "
        "transaction holds the write lock"};
    pthread_t tid[2];
    (void)state;
    tpdbdsInit(&single, 1, 0);
    tpdbdsStart(&single, 0, longIdle);
    tpdbdsWaitReady(&single, 0);
    tpdbdsFindLeader(&single, TPDBDS_READY_MS);
    int fd = tpdbdsConnect(single.client[0]);
    assert_true(fd >= 0);
    okDrop(fd,
           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE t(id "
           "INTEGER PRIMARY KEY)\"}");
    okDrop(fd, "{\"action\":\"begin\"}");
    okDrop(fd,
           "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id) "
           "VALUES(1)\"}");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&tid[i], NULL, lockedThread, &k[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(tid[i], NULL);
        const char *e = json_string_value(json_object_get(k[i].reply, "error"));
        if (e == NULL || strncmp(e, want[i], strlen(want[i])) != 0) {
            fail_msg("%s -> %s", k[i].line, tpdbdsText(k[i].reply));
        }
        json_decref(k[i].reply);
    }
    json_t *o = ok(fd, "{\"action\":\"commit\"}");
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     1);
    json_decref(o);
    refused(fd, "{\"action\":\"transfer\"}",
            "transfer: no other voter to take over");
    close(fd);
    tpdbdsWaitCount(&single, "t", 1, WAIT_MS);
    /* Not tpdbdsClose(): that would stop the three-node cluster too. */
    tpdbdsKill(&single, 0);
    assert_int_equal(harnessRmTree(single.dir, single.errmsg), TPDB_OK);
}

/* A follower's relayed transaction whose leader dies: the next request
 * says so, and rollback ends it; the killed node comes back. */
static void testRelayLeaderKilled(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f = (l + 1) % N;
    int fd = connectTo(f);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 80);
    tpdbdsKill(&c, l);
    refused(fd, "{\"action\":\"propose\",\"sql\":\"SELECT 1\"}",
            "connection to the leader lost");
    refused(fd, "{\"action\":\"query\",\"sql\":\"SELECT 1\"}",
            "the transaction was rolled back (connection to the leader lost");
    okDrop(fd, "{\"action\":\"rollback\"}");
    close(fd);
    tpdbdsStart(&c, l, flags);
    tpdbdsWaitReady(&c, l);
    int now = tpdbdsFindLeader(&c, WAIT_MS);
    plainInsert(now, 81);
    tpdbdsWaitCount(&c, "t", countOn(now, "1"), WAIT_MS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(countOn(i, "id = 80"), 0);
    }
}

/* SIGTERM of a leader with an open transaction: rolled back, exit 0. */
static void testSigtermWithOpenTxn(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int fd = connectTo(l);
    okDrop(fd, "{\"action\":\"begin\"}");
    insertOn(fd, 90);
    int status = tpdbdsStop(&c, l, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    close(fd);
    int now = tpdbdsFindLeader(&c, WAIT_MS);
    plainInsert(now, 91);
    for (int i = 0; i < N; i++) {
        if (c.procs[i] != NULL) {
            assert_int_equal(countOn(i, "id = 90"), 0);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testHeldOnLeader),
        cmocka_unit_test(testRollbackOnDisconnect),
        cmocka_unit_test(testRollbackOnIdle),
        cmocka_unit_test(testConcurrentProposes),
        cmocka_unit_test(testOtherDb),
        cmocka_unit_test(testBegunOnFollower),
        cmocka_unit_test(testMalformed),
        cmocka_unit_test(testCommitWithoutQuorum),
        cmocka_unit_test(testLeadershipMoves),
        cmocka_unit_test(testBusyError),
        cmocka_unit_test(testRelayLeaderKilled),
        cmocka_unit_test(testSigtermWithOpenTxn),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
