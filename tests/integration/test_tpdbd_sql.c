/*
 * What SQL a client may send through tpdbd, on three real tpdbd
 * processes. VACUUM proposed on the leader runs (its own temporary
 * ATTACH is allowed), shrinks the file, and afterwards, once every node
 * has checkpointed, the three files are byte-identical and pass
 * integrity_check; a client's ATTACH and VACUUM INTO are refused. A
 * PRAGMA that would change one pooled connection (foreign_keys,
 * synchronous, journal_mode, ...) is refused with a clear error in
 * propose and query, while reading it works; foreign keys are turned on
 * per request ("foreign_keys":true on propose, forwarded ones and begin)
 * and never leak to later requests of other clients. propose returns the
 * rows of RETURNING (on the leader, forwarded, in a transaction, BLOBs as
 * base64 on request; a value JSON cannot carry is reported, the write
 * stands) and keeps TrashPandaDB's reply without them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/nodes.h"
#include "tests/integration/tpdbds.h"

#define N 3
#define WAIT_MS 30000

static struct tpdbds c;

static const char *const flags[] = {"--commit-ms=5000", NULL};

/* The reply of member i to the line, asserted ok:true. */
static json_t *ok(int i, const char *line)
{
    json_t *o = tpdbdsRequest(c.client[i], line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("n%d: %s -> %s", i + 1, line, tpdbdsText(o));
    }
    return o;
}

/* Asserts that member i refuses line with an error containing part. */
static void refused(int i, const char *line, const char *part)
{
    json_t *o = tpdbdsRequest(c.client[i], line);
    const char *e = json_string_value(json_object_get(o, "error"));
    if (!json_is_false(json_object_get(o, "ok")) || e == NULL ||
        strstr(e, part) == NULL) {
        fail_msg("n%d: %s -> %s, not an error with '%s'", i + 1, line,
                 tpdbdsText(o), part);
    }
    json_decref(o);
}

/* The first column of the first row of local_query sql on member i. */
static json_t *scalar(int i, const char *sql)
{
    char line[1024];
    snprintf(line, sizeof line, "{\"action\":\"local_query\",\"sql\":\"%s\"}",
             sql);
    json_t *o = ok(i, line);
    json_t *v = json_incref(
        json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0));
    json_decref(o);
    return v;
}

static long long intOf(int i, const char *sql)
{
    json_t *v = scalar(i, sql);
    long long n = json_integer_value(v);
    json_decref(v);
    return n;
}

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    tpdbdsStartAll(&c, flags);
    tpdbdsFindLeader(&c, TPDBDS_READY_MS);
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

struct vacuumed {
    long long pages; /* the leader's page count after VACUUM */
};

/* Every node has applied the VACUUM: no free page, the leader's size. */
static int allVacuumed(void *arg)
{
    struct vacuumed *v = arg;
    for (int i = 0; i < N; i++) {
        if (intOf(i, "PRAGMA freelist_count") != 0 ||
            intOf(i, "PRAGMA page_count") != v->pages) {
            return 0;
        }
    }
    return 1;
}

/* A TRUNCATE checkpoint of member i that emptied the WAL. */
static int checkpointed(void *arg)
{
    int i = *(int *)arg;
    json_t *o = ok(i, "{\"action\":\"checkpoint\"}");
    int done = json_is_false(json_object_get(o, "busy")) &&
               json_integer_value(json_object_get(o, "wal_bytes")) == 0;
    json_decref(o);
    return done;
}

static void testVacuum(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 32];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"CREATE TABLE vt(id "
                   "INTEGER PRIMARY KEY, v BLOB); WITH RECURSIVE n(x) AS "
                   "(SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2000) "
                   "INSERT INTO vt SELECT x, randomblob(600) FROM n; DELETE "
                   "FROM vt WHERE id % 4 != 0\"}"));
    long long before = intOf(l, "PRAGMA page_count");
    assert_true(intOf(l, "PRAGMA freelist_count") > 100);
    json_t *o = ok(l, "{\"action\":\"propose\",\"sql\":\"VACUUM\"}");
    assert_null(json_object_get(o, "cols"));
    json_decref(o);
    struct vacuumed v = {intOf(l, "PRAGMA page_count")};
    print_message("VACUUM: %lld pages -> %lld\n", before, v.pages);
    assert_true(v.pages < before / 2);
    assert_int_equal(harnessPollUntil(allVacuumed, &v, WAIT_MS, 50), TPDB_OK);
    unsigned char *first = NULL;
    size_t firstLen = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(harnessPollUntil(checkpointed, &i, WAIT_MS, 50),
                         TPDB_OK);
        json_t *r = scalar(i, "PRAGMA integrity_check");
        assert_string_equal(json_string_value(r), "ok");
        json_decref(r);
        assert_int_equal(intOf(i, "SELECT count(*) FROM vt"), 500);
        snprintf(path, sizeof path, "%s/n%d/data.db", c.dir, i + 1);
        size_t len;
        unsigned char *img = (unsigned char *)nodesReadFile(path, &len);
        assert_int_equal(len, (size_t)v.pages * 4096);
        if (first == NULL) {
            first = img;
            firstLen = len;
            continue;
        }
        assert_int_equal(len, firstLen);
        assert_memory_equal(img, first, len);
        tpdb_free(img);
    }
    tpdb_free(first);
    /* Through a follower too; and what stays refused. */
    json_decref(ok((l + 1) % N, "{\"action\":\"propose\",\"sql\":\"VACUUM\"}"));
    refused(l, "{\"action\":\"propose\",\"sql\":\"ATTACH 'x.db' AS x\"}",
            "ATTACH and DETACH are refused: an attached file would bypass "
            "replication");
    refused(l, "{\"action\":\"propose\",\"sql\":\"ATTACH '' AS x\"}",
            "ATTACH and DETACH are refused");
    refused(l, "{\"action\":\"query\",\"sql\":\"ATTACH '' AS x\"}",
            "ATTACH and DETACH are refused");
    snprintf(path, sizeof path, "%s/into.db", c.dir);
    char line[HARNESS_PATH_MAX + 128];
    snprintf(line, sizeof line,
             "{\"action\":\"propose\",\"sql\":\"VACUUM INTO '%s'\"}", path);
    refused(l, line, "VACUUM INTO writes a file on this node");
    assert_int_not_equal(access(path, F_OK), 0);
}

static void testConnectionPragmas(void **state)
{
    (void)state;
    static const char *const set[] = {
        "foreign_keys=ON",     "recursive_triggers=1", "synchronous=OFF",
        "journal_mode=DELETE", "cache_size=10",        "query_only=1",
        "main.busy_timeout=1"};
    char line[256];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    for (size_t k = 0; k < sizeof set / sizeof set[0]; k++) {
        for (int i = 0; i < N; i++) {
            snprintf(line, sizeof line,
                     "{\"action\":\"propose\",\"sql\":\"PRAGMA %s\"}", set[k]);
            refused(i, line, "cannot be set through tpdbd: it");
            snprintf(line, sizeof line,
                     "{\"action\":\"%s\",\"sql\":\"PRAGMA %s\"}",
                     i == l ? "query" : "local_query", set[k]);
            refused(i, line, "cannot be set through tpdbd");
        }
    }
    refused(l, "{\"action\":\"propose\",\"sql\":\"PRAGMA foreign_keys=ON\"}",
            "Send \"foreign_keys\":true with a propose or begin request");
    /* Reading is fine, and the connection kept SQLite's defaults. */
    assert_int_equal(intOf(l, "PRAGMA foreign_keys"), 0);
    assert_int_equal(intOf(l, "PRAGMA recursive_triggers"), 0);
    json_t *m = scalar(l, "PRAGMA synchronous");
    assert_true(json_is_integer(m));
    json_decref(m);
    /* Database PRAGMAs and per-transaction ones stay allowed. */
    json_decref(
        ok(l, "{\"action\":\"propose\",\"sql\":\"PRAGMA application_id=7\"}"));
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"PRAGMA "
                   "defer_foreign_keys=ON\"}"));
    assert_int_equal(intOf(l, "PRAGMA application_id"), 7);
}

static void testForeignKeysPerRequest(void **state)
{
    (void)state;
    static const char bad[] =
        "{\"action\":\"propose\",\"foreign_keys\":true,\"sql\":\"INSERT "
        "INTO cc(p) VALUES(99)\"}";
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f = (l + 1) % N;
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"CREATE TABLE pp(id "
                   "INTEGER PRIMARY KEY); INSERT INTO pp VALUES(1); CREATE "
                   "TABLE cc(id INTEGER PRIMARY KEY, p INTEGER REFERENCES "
                   "pp(id))\"}"));
    refused(l, bad, "FOREIGN KEY constraint failed");
    refused(f, bad, "FOREIGN KEY constraint failed");
    refused(l,
            "{\"action\":\"propose\",\"foreign_keys\":\"yes\",\"sql\":"
            "\"SELECT 1\"}",
            "foreign_keys must be true or false");
    for (int k = 0; k < 5; k++) {
        json_decref(ok(l,
                       "{\"action\":\"propose\",\"foreign_keys\":true,"
                       "\"sql\":\"INSERT INTO cc(p) VALUES(1)\"}"));
    }
    /* Later requests of other clients: SQLite's default, off. */
    assert_int_equal(intOf(l, "PRAGMA foreign_keys"), 0);
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"INSERT INTO cc(p) "
                   "VALUES(98)\"}"));
    /* An interactive transaction with foreign keys on. */
    int fd = tpdbdsConnect(c.client[f]);
    assert_true(fd >= 0);
    static const char *const txn[] = {
        "{\"action\":\"begin\",\"foreign_keys\":true}",
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO cc(p) VALUES(97)\"}",
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO cc(p) VALUES(1)\"}",
        "{\"action\":\"commit\"}"};
    for (int k = 0; k < 4; k++) {
        char *reply = NULL;
        assert_int_equal(tpdbdsSend(fd, txn[k], strlen(txn[k])), 0);
        assert_int_equal(tpdbdsSend(fd, "\n", 1), 0);
        assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &reply), TPDB_OK);
        json_t *o = json_loads(reply, 0, NULL);
        if (json_is_true(json_object_get(o, "ok")) != (k != 1)) {
            fail_msg("%s -> %s", txn[k], reply);
        }
        if (k == 1) {
            assert_non_null(strstr(reply, "FOREIGN KEY constraint failed"));
        }
        json_decref(o);
        free(reply);
    }
    close(fd);
    assert_int_equal(intOf(l, "PRAGMA foreign_keys"), 0);
    /* 5 + the unchecked one + the transaction's. */
    tpdbdsWaitCount(&c, "cc", 7, WAIT_MS);
}

/* The rows of reply o, asserted to be those of RETURNING id, v. */
static void checkReturned(json_t *o, const char *rowsJson)
{
    json_t *want = json_loads(rowsJson, 0, NULL);
    assert_non_null(want);
    if (!json_equal(json_object_get(o, "rows"), want) ||
        json_array_size(json_object_get(o, "cols")) != 2) {
        fail_msg("RETURNING: %s, want rows %s", tpdbdsText(o), rowsJson);
    }
    json_decref(want);
}

static void testReturning(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f = (l + 1) % N;
    json_t *o = ok(l,
                   "{\"action\":\"propose\",\"sql\":\"CREATE TABLE rt(id "
                   "INTEGER PRIMARY KEY, v)\"}");
    /* TrashPandaDB's reply, exactly, when nothing is returned. */
    assert_int_equal(json_object_size(o), 3);
    json_decref(o);
    o = ok(l,
           "{\"action\":\"propose\",\"sql\":\"INSERT INTO rt(v) "
           "VALUES('a'), ('b') RETURNING id, v\"}");
    checkReturned(o, "[[1,\"a\"],[2,\"b\"]]");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(o, "cols"), 1)), "v");
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(o, "last_id")), 2);
    json_decref(o);
    o = ok(f,
           "{\"action\":\"propose\",\"sql\":\"UPDATE rt SET v = v || '!' "
           "WHERE id = ? RETURNING id, v\",\"params\":[2]}");
    checkReturned(o, "[[2,\"b!\"]]");
    json_decref(o);
    o = ok(l,
           "{\"action\":\"propose\",\"blobs\":\"base64\",\"sql\":\"INSERT "
           "INTO rt(v) VALUES(x'00ff') RETURNING id, v\"}");
    checkReturned(o, "[[3,{\"$blob\":\"AP8=\"}]]");
    json_decref(o);
    /* A SELECT's rows are dropped, as in TrashPandaDB. */
    o = ok(l, "{\"action\":\"propose\",\"sql\":\"SELECT * FROM rt\"}");
    assert_null(json_object_get(o, "rows"));
    json_decref(o);
    /* The last RETURNING statement of several. */
    o = ok(l,
           "{\"action\":\"propose\",\"sql\":\"DELETE FROM rt WHERE id = 1 "
           "RETURNING id, v; INSERT INTO rt(v) VALUES('c'); SELECT 1\"}");
    checkReturned(o, "[[1,\"a\"]]");
    json_decref(o);
    int fd = tpdbdsConnect(c.client[f]);
    assert_true(fd >= 0);
    static const char *const txn[] = {
        "{\"action\":\"begin\"}",
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO rt(v) VALUES('t') "
        "RETURNING id, v\"}",
        "{\"action\":\"commit\"}"};
    for (int k = 0; k < 3; k++) {
        char *reply = NULL;
        assert_int_equal(tpdbdsSend(fd, txn[k], strlen(txn[k])), 0);
        assert_int_equal(tpdbdsSend(fd, "\n", 1), 0);
        assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &reply), TPDB_OK);
        o = json_loads(reply, 0, NULL);
        if (!json_is_true(json_object_get(o, "ok"))) {
            fail_msg("%s -> %s", txn[k], reply);
        }
        if (k == 1) {
            checkReturned(o, "[[5,\"t\"]]");
        }
        json_decref(o);
        free(reply);
    }
    close(fd);
    /* A value JSON cannot carry: the write stands, and the reply says
     * why it has no rows. */
    o = ok(l,
           "{\"action\":\"propose\",\"sql\":\"INSERT INTO rt(v) "
           "VALUES(CAST(x'ff' AS TEXT)) RETURNING id, v\"}");
    assert_null(json_object_get(o, "rows"));
    const char *why = json_string_value(json_object_get(o, "rows_error"));
    if (why == NULL || strstr(why, "not representable in JSON") == NULL) {
        fail_msg("non-UTF-8 RETURNING: %s", tpdbdsText(o));
    }
    assert_int_equal(json_integer_value(json_object_get(o, "rows_affected")),
                     1);
    json_decref(o);
    tpdbdsWaitCount(&c, "rt", 5, WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testVacuum),
        cmocka_unit_test(testConnectionPragmas),
        cmocka_unit_test(testForeignKeysPerRequest),
        cmocka_unit_test(testReturning),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
