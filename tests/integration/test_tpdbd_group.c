/*
 * Group commit of tpdbd's propose on three real tpdbd processes. An
 * interactive transaction on the leader holds the write lock while 20
 * clients (on every node: followers forward) queue their proposes, one
 * of them a UNIQUE violation in the middle; once it rolls back, all 20
 * share one batch: the 19 others are committed on every node, the failing
 * one gets its own error, and each last_id is the client's own row. Then
 * 20 free-running clients: every write acknowledged with its own last_id,
 * and the leader committed fewer batches than writes. SQL that cannot
 * share a transaction (BEGIN...COMMIT, PRAGMA, VACUUM, SAVEPOINT) queued
 * in a batch runs on its own, and INSERT OR ROLLBACK of a duplicate, which
 * rolls the batch's transaction back, fails alone while the others
 * commit. A batch of 20 (foreign keys on) whose COMMIT fails for a
 * deferred foreign key of one of them runs each request alone: the 19
 * others commit on every node with their own last_id, the failing one
 * gets its own error. Batches are bounded (256 requests, 4 MiB). Last, a
 * batch of 20
 * whose commit finds both followers stopped (SIGSTOP): every client hears
 * "outcome unknown", and afterwards every node holds all 20 rows or none.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define CLIENTS 20
#define FREE_WRITES 25
#define WAIT_MS 30000
/* tpdbd's bound on requests per batch (TPDBD_GROUP_MAX_REQUESTS). */
#define TPDBD_BOUND_REQUESTS 256

static struct tpdbds c;

static const char *const flags[] = {"--commit-ms=5000", "--max-clients=400",
                                    NULL};

static void okCall(int i, const char *line)
{
    json_t *o = tpdbdsCall(&c, i, "%s", line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("%s -> %s", line, tpdbdsText(o));
    }
    json_decref(o);
}

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    tpdbdsStartAll(&c, flags);
    int l = tpdbdsFindLeader(&c, TPDBDS_READY_MS);
    okCall(l,
           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE t(id INTEGER "
           "PRIMARY KEY, v TEXT UNIQUE)\"}");
    okCall(l,
           "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id, v) "
           "VALUES(1000000, 'taken')\"}");
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

static void okOn(int fd, const char *line)
{
    json_t *o = tpdbdsOnConn(fd, line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("%s -> %s", line, tpdbdsText(o));
    }
    json_decref(o);
}

/* Member i's group_commit counter key (metrics action). */
static long long groupCounter(int i, const char *key)
{
    json_t *o = tpdbdsCall(&c, i, "{\"action\":\"metrics\"}");
    json_t *v = json_object_get(json_object_get(o, "group_commit"), key);
    if (!json_is_integer(v)) {
        fail_msg("metrics on n%d: no group_commit.%s: %s", i + 1, key,
                 tpdbdsText(o));
    }
    long long n = json_integer_value(v);
    json_decref(o);
    return n;
}

/* Polls until member i has want proposes queued. */
static void waitQueued(int i, long long want)
{
    struct timespec pause = {0, 20 * 1000 * 1000};
    for (int waited = 0; groupCounter(i, "queued") != want; waited += 20) {
        if (waited >= WAIT_MS) {
            fail_msg("n%d: %lld proposes queued, not %lld", i + 1,
                     groupCounter(i, "queued"), want);
        }
        nanosleep(&pause, NULL);
    }
}

/* The id of the row with v = 'v' on member i, -1 if none. */
static long long idOf(int i, const char *v)
{
    json_t *o = tpdbdsCall(&c, i,
                           "{\"action\":\"local_query\",\"sql\":\"SELECT id "
                           "FROM t WHERE v = ?\",\"params\":[\"%s\"]}",
                           v);
    json_t *rows = json_object_get(o, "rows");
    if (!json_is_array(rows)) {
        fail_msg("id of %s on n%d: %s", v, i + 1, tpdbdsText(o));
    }
    long long id =
        json_array_size(rows) == 1
            ? json_integer_value(json_array_get(json_array_get(rows, 0), 0))
            : -1;
    json_decref(o);
    return id;
}

struct client {
    pthread_t tid;
    int node;
    int id;          /* its value is 'b<batch>_<id>' */
    int batch;       /* test number, for distinct values */
    int failing;     /* inserts 'taken' instead */
    const char *sql; /* sent instead of its own insert, if not NULL */
    char *line;      /* the whole request instead, if not NULL (freed) */
    int writes;      /* requests to send, one after the other */
    json_t *reply[FREE_WRITES];
};

static void *clientMain(void *arg)
{
    struct client *cl = arg;
    char line[256];
    for (int k = 0; k < cl->writes; k++) {
        if (cl->sql != NULL) {
            snprintf(line, sizeof line,
                     "{\"action\":\"propose\",\"sql\":\"%s\"}", cl->sql);
        } else if (cl->failing) {
            snprintf(line, sizeof line, "%s",
                     "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(v) "
                     "VALUES('taken')\"}");
        } else {
            snprintf(line, sizeof line,
                     "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(v) "
                     "VALUES(?)\",\"params\":[\"b%d_%d_%d\"]}",
                     cl->batch, cl->id, k);
        }
        cl->reply[k] = tpdbdsRequest(c.client[cl->node],
                                     cl->line != NULL ? cl->line : line);
    }
    return NULL;
}

static void startClient(struct client *cl)
{
    assert_int_equal(pthread_create(&cl->tid, NULL, clientMain, cl), 0);
}

/* Asserts the reply of client cl's write k: ok with rows_affected 1 and
 * last_id the id of its own row on member l. */
static void checkOwnRow(struct client *cl, int k, int l)
{
    char v[64];
    json_t *o = cl->reply[k];
    snprintf(v, sizeof v, "b%d_%d_%d", cl->batch, cl->id, k);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("client %d write %d: %s", cl->id, k, tpdbdsText(o));
    }
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     1);
    assert_int_equal(json_integer_value(json_object_get(o, "last_id")),
                     idOf(l, v));
}

static long long countAll(int i)
{
    json_t *o = tpdbdsCall(&c, i,
                           "{\"action\":\"local_query\",\"sql\":\"SELECT "
                           "count(*) FROM t\"}");
    json_t *rows = json_object_get(o, "rows");
    if (!json_is_array(rows)) {
        fail_msg("count on n%d: %s", i + 1, tpdbdsText(o));
    }
    long long n =
        json_integer_value(json_array_get(json_array_get(rows, 0), 0));
    json_decref(o);
    return n;
}

/* Starts CLIENTS clients of batch b (client f failing, -1: none) one
 * after the other, each once the previous one queued on leader l (held
 * by an open transaction), so that their order in the batch is theirs. */
static void queueClients(struct client *cl, int b, int f, int l, int spread)
{
    for (int k = 0; k < CLIENTS; k++) {
        cl[k].id = k;
        cl[k].batch = b;
        cl[k].failing = k == f;
        cl[k].writes = 1;
        cl[k].node = spread ? k % N : l;
        startClient(&cl[k]);
        waitQueued(l, k + 1);
    }
}

static void testOneBatchOneFailure(void **state)
{
    (void)state;
    struct client cl[CLIENTS];
    memset(cl, 0, sizeof cl);
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    long long commits = groupCounter(l, "commits");
    long long writes = groupCounter(l, "writes");
    long long before = countAll(l);
    int holder = tpdbdsConnect(c.client[l]);
    assert_true(holder >= 0);
    okOn(holder, "{\"action\":\"begin\"}");
    queueClients(cl, 1, CLIENTS / 2, l, 1);
    okOn(holder, "{\"action\":\"rollback\"}");
    close(holder);
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(cl[k].tid, NULL);
    }
    json_t *bad = cl[CLIENTS / 2].reply[0];
    const char *e = json_string_value(json_object_get(bad, "error"));
    if (!json_is_false(json_object_get(bad, "ok")) || e == NULL ||
        strstr(e, "UNIQUE constraint failed") == NULL) {
        fail_msg("the failing client: %s", tpdbdsText(bad));
    }
    for (int k = 0; k < CLIENTS; k++) {
        if (k != CLIENTS / 2) {
            checkOwnRow(&cl[k], 0, l);
        }
        json_decref(cl[k].reply[0]);
    }
    /* One commit held all of them. */
    assert_int_equal(groupCounter(l, "commits"), commits + 1);
    assert_int_equal(groupCounter(l, "writes"), writes + CLIENTS - 1);
    assert_true(groupCounter(l, "largest") >= CLIENTS);
    tpdbdsWaitCount(&c, "t", before + CLIENTS - 1, WAIT_MS);
}

static void testFreeRunning(void **state)
{
    (void)state;
    struct client cl[CLIENTS];
    memset(cl, 0, sizeof cl);
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    long long commits = groupCounter(l, "commits");
    long long writes = groupCounter(l, "writes");
    long long before = countAll(l);
    for (int k = 0; k < CLIENTS; k++) {
        cl[k].id = k;
        cl[k].batch = 2;
        cl[k].writes = FREE_WRITES;
        cl[k].node = k % N;
        startClient(&cl[k]);
    }
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(cl[k].tid, NULL);
    }
    for (int k = 0; k < CLIENTS; k++) {
        for (int w = 0; w < FREE_WRITES; w++) {
            checkOwnRow(&cl[k], w, l);
            json_decref(cl[k].reply[w]);
        }
    }
    long long batches = groupCounter(l, "commits") - commits;
    long long grouped = groupCounter(l, "writes") - writes;
    print_message("%d writes by %d clients in %lld group commits\n",
                  CLIENTS * FREE_WRITES, CLIENTS, batches);
    assert_int_equal(grouped, CLIENTS * FREE_WRITES);
    assert_true(batches < grouped);
    tpdbdsWaitCount(&c, "t", before + CLIENTS * FREE_WRITES, WAIT_MS);
}

/* SQL that cannot share the batch's transaction, queued amid plain
 * inserts: a whole BEGIN...COMMIT, a PRAGMA, a VACUUM and a
 * SAVEPOINT...RELEASE run on their own; INSERT OR ROLLBACK of a duplicate
 * rolls the whole batch transaction back, fails alone, and the others
 * run again. */
static void testAloneAndRollback(void **state)
{
    (void)state;
    struct client cl[CLIENTS];
    static const struct {
        int k;
        const char *sql;
    } odd[] = {
        {2, "BEGIN; INSERT INTO t(v) VALUES('whole'); COMMIT"},
        {5, "PRAGMA user_version = 7"},
        {8, "INSERT OR ROLLBACK INTO t(v) VALUES('taken')"},
        {11, "VACUUM"},
        {14, "SAVEPOINT s; INSERT INTO t(v) VALUES('sp'); RELEASE s"},
    };
    memset(cl, 0, sizeof cl);
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        cl[odd[i].k].sql = odd[i].sql;
    }
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    long long writes = groupCounter(l, "writes");
    long long before = countAll(l);
    int holder = tpdbdsConnect(c.client[l]);
    assert_true(holder >= 0);
    okOn(holder, "{\"action\":\"begin\"}");
    queueClients(cl, 4, -1, l, 1);
    okOn(holder, "{\"action\":\"rollback\"}");
    close(holder);
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(cl[k].tid, NULL);
    }
    const char *e = json_string_value(json_object_get(cl[8].reply[0], "error"));
    if (e == NULL || strstr(e, "UNIQUE constraint failed") == NULL) {
        fail_msg("INSERT OR ROLLBACK of a duplicate: %s",
                 tpdbdsText(cl[8].reply[0]));
    }
    for (int k = 0; k < CLIENTS; k++) {
        if (cl[k].sql == NULL) {
            checkOwnRow(&cl[k], 0, l);
        } else if (k != 8 &&
                   !json_is_true(json_object_get(cl[k].reply[0], "ok"))) {
            fail_msg("%s: %s", cl[k].sql, tpdbdsText(cl[k].reply[0]));
        }
        json_decref(cl[k].reply[0]);
    }
    assert_int_equal(
        groupCounter(l, "writes"),
        writes + CLIENTS - (long long)(sizeof odd / sizeof odd[0]));
    assert_true(idOf(l, "whole") > 0);
    assert_true(idOf(l, "sp") > 0);
    json_t *o = tpdbdsCall(&c, l,
                           "{\"action\":\"query\",\"sql\":\"PRAGMA "
                           "user_version\"}");
    assert_int_equal(json_integer_value(json_array_get(
                         json_array_get(json_object_get(o, "rows"), 0), 0)),
                     7);
    json_decref(o);
    /* 15 plain inserts, 'whole' and 'sp'. */
    tpdbdsWaitCount(&c, "t", before + CLIENTS - 5 + 2, WAIT_MS);
}

/* A batch whose COMMIT fails for another reason than replication: one
 * client's row breaks a DEFERRABLE INITIALLY DEFERRED foreign key, which
 * SQLite checks only at COMMIT, so nothing of the batch is written; each
 * request then runs alone. */
static void testDeferredForeignKey(void **state)
{
    (void)state;
    struct client cl[CLIENTS];
    enum { BAD = CLIENTS / 2 };
    memset(cl, 0, sizeof cl);
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    okCall(l,
           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE fp(id INTEGER "
           "PRIMARY KEY); INSERT INTO fp VALUES(1); CREATE TABLE fc(id "
           "INTEGER PRIMARY KEY, p INTEGER REFERENCES fp(id) DEFERRABLE "
           "INITIALLY DEFERRED, v TEXT)\"}");
    long long reruns = groupCounter(l, "reruns");
    for (int k = 0; k < CLIENTS; k++) {
        char *line = NULL;
        assert_true(asprintf(&line,
                             "{\"action\":\"propose\",\"foreign_keys\":true,"
                             "\"sql\":\"INSERT INTO fc(p, v) VALUES(?, "
                             "?)\",\"params\":[%d,\"fk_%d\"]}",
                             k == BAD ? 999 : 1, k) > 0);
        cl[k].line = line;
    }
    int holder = tpdbdsConnect(c.client[l]);
    assert_true(holder >= 0);
    okOn(holder, "{\"action\":\"begin\"}");
    queueClients(cl, 8, -1, l, 1);
    okOn(holder, "{\"action\":\"rollback\"}");
    close(holder);
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(cl[k].tid, NULL);
    }
    assert_int_equal(groupCounter(l, "reruns"), reruns + 1);
    for (int k = 0; k < CLIENTS; k++) {
        json_t *o = cl[k].reply[0];
        if (k == BAD) {
            const char *e = json_string_value(json_object_get(o, "error"));
            if (e == NULL ||
                strstr(e, "FOREIGN KEY constraint failed") == NULL) {
                fail_msg("the client breaking the key: %s", tpdbdsText(o));
            }
        } else {
            char v[32];
            snprintf(v, sizeof v, "fk_%d", k);
            json_t *r = tpdbdsCall(&c, l,
                                   "{\"action\":\"local_query\",\"sql\":"
                                   "\"SELECT id FROM fc WHERE v = ?\","
                                   "\"params\":[\"%s\"]}",
                                   v);
            json_t *row = json_array_get(json_object_get(r, "rows"), 0);
            if (!json_is_true(json_object_get(o, "ok")) || row == NULL) {
                fail_msg("client %d: %s (row: %s)", k, tpdbdsText(o),
                         tpdbdsText(r));
            }
            assert_int_equal(json_integer_value(json_object_get(o, "last_id")),
                             json_integer_value(json_array_get(row, 0)));
            json_decref(r);
        }
        json_decref(o);
        free(cl[k].line);
    }
    tpdbdsWaitCount(&c, "fc", CLIENTS - 1, WAIT_MS);
}

/* Starts n one-write clients of batch b on leader l (held by an open
 * transaction) at once and waits until all are queued; each client's
 * line is its own insert unless line(k) gives one. */
static struct client *queueMany(int n, int b, int l, char *(*line)(int k))
{
    struct client *cl = calloc((size_t)n, sizeof *cl);
    assert_non_null(cl);
    for (int k = 0; k < n; k++) {
        cl[k].id = k;
        cl[k].batch = b;
        cl[k].writes = 1;
        cl[k].node = l;
        cl[k].line = line != NULL ? line(k) : NULL;
        startClient(&cl[k]);
    }
    waitQueued(l, n);
    return cl;
}

static void joinMany(struct client *cl, int n)
{
    for (int k = 0; k < n; k++) {
        pthread_join(cl[k].tid, NULL);
        if (!json_is_true(json_object_get(cl[k].reply[0], "ok"))) {
            fail_msg("client %d: %s", k, tpdbdsText(cl[k].reply[0]));
        }
        json_decref(cl[k].reply[0]);
        free(cl[k].line);
    }
    free(cl);
}

/* A propose of a 1,000,000-byte string: four fit in the 4 MiB bound. */
static char *bigLine(int k)
{
    size_t len = 1000000;
    char *line = malloc(len + 256);
    assert_non_null(line);
    int n = snprintf(line, 256,
                     "{\"action\":\"propose\",\"sql\":\"INSERT INTO "
                     "t(v) VALUES(? || '%d')\",\"params\":[\"",
                     k);
    memset(line + n, 'x', len);
    snprintf(line + n + len, 256 - 1, "\"]}");
    return line;
}

/* Batches are bounded: 6 requests of 1 MB make two batches (4 MiB of
 * SQL and params at most), 300 small ones two (256 requests at most). */
static void testBounds(void **state)
{
    (void)state;
    static const struct {
        int n;
        char *(*line)(int k);
    } cases[] = {{6, bigLine}, {300, NULL}};
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    for (int i = 0; i < 2; i++) {
        long long commits = groupCounter(l, "commits");
        long long writes = groupCounter(l, "writes");
        int holder = tpdbdsConnect(c.client[l]);
        assert_true(holder >= 0);
        okOn(holder, "{\"action\":\"begin\"}");
        struct client *cl = queueMany(cases[i].n, 5 + i, l, cases[i].line);
        okOn(holder, "{\"action\":\"rollback\"}");
        close(holder);
        joinMany(cl, cases[i].n);
        assert_int_equal(groupCounter(l, "commits"), commits + 2);
        assert_int_equal(groupCounter(l, "writes"), writes + cases[i].n);
    }
    assert_int_equal(groupCounter(l, "largest"), TPDBD_BOUND_REQUESTS);
}

static void signalFollowers(int l, int sig)
{
    char err[TPDB_ERRMSG_SIZE];
    for (int i = 0; i < N; i++) {
        if (i != l) {
            assert_int_equal(harnessProcSignal(c.procs[i], sig, err), TPDB_OK);
        }
    }
}

static void testBatchWithoutQuorum(void **state)
{
    (void)state;
    struct client cl[CLIENTS];
    memset(cl, 0, sizeof cl);
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    long long before = countAll(l);
    int holder = tpdbdsConnect(c.client[l]);
    assert_true(holder >= 0);
    okOn(holder, "{\"action\":\"begin\"}");
    queueClients(cl, 3, -1, l, 0);
    signalFollowers(l, SIGSTOP);
    okOn(holder, "{\"action\":\"rollback\"}");
    close(holder);
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(cl[k].tid, NULL);
    }
    signalFollowers(l, SIGCONT);
    print_message("batch without quorum: %s\n", tpdbdsText(cl[0].reply[0]));
    for (int k = 0; k < CLIENTS; k++) {
        const char *e =
            json_string_value(json_object_get(cl[k].reply[0], "error"));
        if (e == NULL || strncmp(e, "outcome unknown", 15) != 0) {
            fail_msg("client %d: %s", k, tpdbdsText(cl[k].reply[0]));
        }
        json_decref(cl[k].reply[0]);
    }
    /* A later write through the leader, then every node agrees: the
     * batch is on all of them or on none. */
    l = tpdbdsFindLeader(&c, WAIT_MS);
    okCall(l,
           "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(v) "
           "VALUES('after')\"}");
    long long present = countAll(l) - before - 1;
    print_message("rows of the unknown batch present: %lld\n", present);
    assert_true(present == 0 || present == CLIENTS);
    tpdbdsWaitCount(&c, "t", before + 1 + present, WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testOneBatchOneFailure),
        cmocka_unit_test(testFreeRunning),
        cmocka_unit_test(testAloneAndRollback),
        cmocka_unit_test(testDeferredForeignKey),
        cmocka_unit_test(testBounds),
        cmocka_unit_test(testBatchWithoutQuorum),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
