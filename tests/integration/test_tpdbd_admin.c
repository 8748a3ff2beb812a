/*
 * tpdbd's cluster and file actions on three real tpdbd processes:
 * checkpoint (TRUNCATE) of data.db and of another database on every node,
 * after which every node's file is byte-identical; backup from a follower
 * to a path, opened with plain SQLite: integrity_check ok, every row
 * there, one self-contained file; transfer to a named node through a
 * follower, and to any voter; remove of a follower through the other
 * follower, after which writes go on with two nodes; malformed and
 * refused requests for all four.
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
#include <sqlite3.h>

#include "tests/integration/nodes.h"
#include "tests/integration/tpdbds.h"

#define N 3
#define ROWS 200
#define WAIT_MS 30000

static struct tpdbds c;

static const char *const flags[] = {"--commit-ms=5000", NULL};

/* The reply of member i to the printf-style line, asserted ok:true. */
static json_t *ok(int i, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *ok(int i, const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    json_t *o = tpdbdsRequest(c.client[i], line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("n%d: %s -> %s", i + 1, line, tpdbdsText(o));
    }
    return o;
}

/* Asserts that member i refuses line with an error starting with
 * prefix. */
static void refused(int i, const char *line, const char *prefix)
{
    json_t *o = tpdbdsRequest(c.client[i], line);
    const char *e = json_string_value(json_object_get(o, "error"));
    if (!json_is_false(json_object_get(o, "ok")) || e == NULL ||
        strncmp(e, prefix, strlen(prefix)) != 0) {
        fail_msg("n%d: %s -> %s, not an error '%s...'", i + 1, line,
                 tpdbdsText(o), prefix);
    }
    json_decref(o);
}

static int startCluster(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    tpdbdsStartAll(&c, flags);
    int l = tpdbdsFindLeader(&c, TPDBDS_READY_MS);
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"CREATE TABLE t(id "
                   "INTEGER PRIMARY KEY, v TEXT); WITH RECURSIVE n(x) AS "
                   "(SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < %d) "
                   "INSERT INTO t SELECT x, printf('row %%d', x) FROM "
                   "n\"}",
                   ROWS));
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"db\":\"other.db\",\"sql\":"
                   "\"CREATE TABLE u(x); INSERT INTO u VALUES(1), (2), "
                   "(3)\"}"));
    tpdbdsWaitCount(&c, "t", ROWS, WAIT_MS);
    return 0;
}

static int stopCluster(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

static void testMalformed(void **state)
{
    (void)state;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f = (l + 1) % N;
    refused(f, "{\"action\":\"remove\"}", "Missing hash key: \"node_id\"");
    refused(f, "{\"action\":\"remove\",\"node_id\":5}",
            "node_id must be a string");
    refused(f, "{\"action\":\"remove\",\"node_id\":\"\"}",
            "node_id must be a string");
    refused(f, "{\"action\":\"remove\",\"node_id\":\"nosuch\"}",
            "remove: 'nosuch' is not a member");
    refused(f, "{\"action\":\"remove\",\"node_id\":\"n1\",\"db\":[]}",
            "db must name a database");
    refused(f, "{\"action\":\"transfer\",\"node_id\":[]}",
            "node_id must be a string");
    refused(f, "{\"action\":\"transfer\",\"node_id\":\"nosuch\"}",
            "transfer: 'nosuch' is not a member");
    refused(f, "{\"action\":\"checkpoint\",\"db\":5}",
            "db must name a database");
    refused(f, "{\"action\":\"checkpoint\",\"db\":\"nope.db\"}",
            "no database nope.db in the node directory");
    refused(f, "{\"action\":\"backup\"}", "Missing hash key: \"path\"");
    refused(f, "{\"action\":\"backup\",\"path\":5}", "path must be a string");
    refused(f, "{\"action\":\"backup\",\"path\":\"relative.db\"}",
            "backup: path must be absolute");
    refused(f, "{\"action\":\"backup\",\"path\":\"/nonexistent-dir/x.db\"}",
            "backup: directory of /nonexistent-dir/x.db");
    refused(f, "{\"action\":\"backup\",\"db\":\"nope.db\",\"path\":\"/tmp/x\"}",
            "no database nope.db in the node directory");
    char line[HARNESS_PATH_MAX + 64];
    snprintf(line, sizeof line,
             "{\"action\":\"backup\",\"path\":\"%s/n%d/copy.db\"}", c.dir,
             f + 1);
    refused(f, line, "backup:");
    json_t *o = tpdbdsRequest(c.client[f], line);
    assert_non_null(strstr(json_string_value(json_object_get(o, "error")),
                           "is inside the node "
                           "directory"));
    json_decref(o);
}

struct ckpt {
    int member;
    const char *db;
};

/* One checkpoint; true when it was not busy and emptied the WAL. */
static int checkpointDone(void *arg)
{
    struct ckpt *k = arg;
    json_t *o =
        ok(k->member, "{\"action\":\"checkpoint\",\"db\":\"%s\"}", k->db);
    assert_string_equal(json_string_value(json_object_get(o, "db")), k->db);
    int done = json_is_false(json_object_get(o, "busy")) &&
               json_integer_value(json_object_get(o, "wal_bytes")) == 0;
    json_decref(o);
    return done;
}

static void testCheckpoint(void **state)
{
    (void)state;
    static const char *const dbs[] = {"data.db", "other.db"};
    char path[HARNESS_PATH_MAX + 32];
    for (int d = 0; d < 2; d++) {
        unsigned char *first = NULL;
        size_t firstLen = 0;
        for (int i = 0; i < N; i++) {
            struct ckpt k = {i, dbs[d]};
            assert_int_equal(harnessPollUntil(checkpointDone, &k, WAIT_MS, 50),
                             TPDB_OK);
            size_t len;
            snprintf(path, sizeof path, "%s/n%d/%s", c.dir, i + 1, dbs[d]);
            unsigned char *img = (unsigned char *)nodesReadFile(path, &len);
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
    }
}

static sqlite3_int64 scalarOf(sqlite3 *db, const char *sql, char *textOut)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    sqlite3_int64 v = sqlite3_column_int64(st, 0);
    if (textOut != NULL) {
        snprintf(textOut, 64, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return v;
}

/* Checks the backup at path with plain SQLite: integrity, mode, rows. */
static void checkCopy(const char *path, const char *countSql, long long want)
{
    char result[64];
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    scalarOf(db, "PRAGMA integrity_check", result);
    assert_string_equal(result, "ok");
    scalarOf(db, "PRAGMA journal_mode", result);
    assert_string_equal(result, "delete");
    assert_int_equal(scalarOf(db, countSql, NULL), want);
    sqlite3_close(db);
    char wal[HARNESS_PATH_MAX + 64];
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_int_not_equal(access(wal, F_OK), 0);
}

static void testBackup(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 32], line[HARNESS_PATH_MAX + 128];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int f = (l + 1) % N;
    snprintf(path, sizeof path, "%s/backup-data.db", c.dir);
    json_t *o = ok(f, "{\"action\":\"backup\",\"path\":\"%s\"}", path);
    assert_string_equal(json_string_value(json_object_get(o, "path")), path);
    assert_string_equal(json_string_value(json_object_get(o, "db")), "data.db");
    assert_true(json_integer_value(json_object_get(o, "pages")) > 1);
    size_t len;
    tpdb_free(nodesReadFile(path, &len));
    assert_int_equal(json_integer_value(json_object_get(o, "bytes")),
                     (long long)len);
    json_decref(o);
    checkCopy(path, "SELECT count(*) FROM t WHERE v = printf('row %d', id)",
              ROWS);
    snprintf(line, sizeof line, "{\"action\":\"backup\",\"path\":\"%s\"}",
             path);
    refused(f, line, "backup: ");

    snprintf(path, sizeof path, "%s/backup-other.db", c.dir);
    json_decref(ok(l,
                   "{\"action\":\"backup\",\"db\":\"other.db\",\"path\":"
                   "\"%s\"}",
                   path));
    checkCopy(path, "SELECT sum(x) FROM u", 6);
}

/* The leader's name as member i's status says ("" if none). */
static void leaderSeenBy(int i, char *name, size_t size)
{
    json_t *o = tpdbdsCall(&c, i, "{\"action\":\"status\"}");
    const char *l = json_string_value(json_object_get(o, "leader_id"));
    snprintf(name, size, "%s", l != NULL ? l : "");
    json_decref(o);
}

static void testTransfer(void **state)
{
    (void)state;
    char want[16], seen[64];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int target = (l + 1) % N, via = (l + 2) % N;
    snprintf(want, sizeof want, "n%d", l + 1);
    char line[128];
    snprintf(line, sizeof line, "{\"action\":\"transfer\",\"node_id\":\"%s\"}",
             want);
    refused(via, line, "transfer: 'n");

    /* Named, sent to a follower that forwards it. */
    snprintf(want, sizeof want, "n%d", target + 1);
    json_t *o = ok(via, "{\"action\":\"transfer\",\"node_id\":\"%s\"}", want);
    assert_string_equal(json_string_value(json_object_get(o, "leader_id")),
                        want);
    json_decref(o);
    assert_int_equal(tpdbdsFindLeader(&c, WAIT_MS), target);

    /* Any voter. */
    o = ok(target, "{\"action\":\"transfer\",\"db\":\"other.db\"}");
    snprintf(seen, sizeof seen, "%s",
             json_string_value(json_object_get(o, "leader_id")));
    json_decref(o);
    assert_string_not_equal(seen, want);
    int now = tpdbdsFindLeader(&c, WAIT_MS);
    assert_int_not_equal(now, target);
    leaderSeenBy(now, seen, sizeof seen);
    snprintf(want, sizeof want, "n%d", now + 1);
    assert_string_equal(seen, want);
}

struct membership {
    int leader;
    char gone[16];
};

/* Whether the leader's status no longer lists m->gone. */
static int memberGone(void *arg)
{
    struct membership *m = arg;
    json_t *o = tpdbdsCall(&c, m->leader, "{\"action\":\"status\"}");
    json_t *members = json_object_get(o, "members");
    int gone = json_is_object(members) &&
               json_object_get(members, m->gone) == NULL &&
               json_object_size(members) == N - 2;
    json_decref(o);
    return gone;
}

struct roleWait {
    int leader;
    char node[16];
    const char *role;
};

/* Whether the leader's status gives r->node the role r->role. */
static int hasRole(void *arg)
{
    struct roleWait *r = arg;
    json_t *o = tpdbdsCall(&c, r->leader, "{\"action\":\"status\"}");
    json_t *m = json_object_get(json_object_get(o, "members"), r->node);
    const char *role = json_string_value(json_object_get(m, "role"));
    int same = role != NULL && strcmp(role, r->role) == 0;
    json_decref(o);
    return same;
}

/* A follower demoted to standby through another follower, and promoted
 * back; the leader cannot demote itself; writes go on meanwhile. */
static void testAssign(void **state)
{
    (void)state;
    char line[160];
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int target = (l + 1) % N, via = (l + 2) % N;
    struct roleWait r = {l, "", "standby"};
    snprintf(r.node, sizeof r.node, "n%d", target + 1);
    snprintf(line, sizeof line,
             "{\"action\":\"assign\",\"node_id\":\"n%d\",\"role\":\"boss\"}",
             target + 1);
    refused(via, line, "role must be voter, standby or spare");
    snprintf(line, sizeof line,
             "{\"action\":\"assign\",\"node_id\":\"n%d\",\"role\":\"spare\"}",
             l + 1);
    refused(via, line, "assign: 'n");
    json_decref(ok(via,
                   "{\"action\":\"assign\",\"node_id\":\"n%d\",\"role\":"
                   "\"standby\"}",
                   target + 1));
    assert_int_equal(harnessPollUntil(hasRole, &r, WAIT_MS, 50), TPDB_OK);
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id, "
                   "v) VALUES(%d, 'while standby')\"}",
                   ROWS + 100));
    json_decref(ok(l,
                   "{\"action\":\"assign\",\"node_id\":\"n%d\",\"role\":"
                   "\"voter\"}",
                   target + 1));
    r.role = "voter";
    assert_int_equal(harnessPollUntil(hasRole, &r, WAIT_MS, 50), TPDB_OK);
    json_decref(ok(l,
                   "{\"action\":\"propose\",\"sql\":\"DELETE FROM t WHERE "
                   "id = %d\"}",
                   ROWS + 100));
}

static void testRemove(void **state)
{
    (void)state;
    char line[128];
    struct membership m;
    int l = tpdbdsFindLeader(&c, WAIT_MS);
    int victim = (l + 1) % N, via = (l + 2) % N;
    snprintf(line, sizeof line, "{\"action\":\"remove\",\"node_id\":\"n%d\"}",
             l + 1);
    refused(via, line, "remove: 'n");
    json_decref(ok(
        via, "{\"action\":\"remove\",\"db\":\"other.db\",\"node_id\":\"n%d\"}",
        victim + 1));
    m.leader = l;
    snprintf(m.gone, sizeof m.gone, "n%d", victim + 1);
    assert_int_equal(harnessPollUntil(memberGone, &m, WAIT_MS, 50), TPDB_OK);
    snprintf(line, sizeof line, "{\"action\":\"remove\",\"node_id\":\"n%d\"}",
             victim + 1);
    refused(l, line, "remove: 'n");
    tpdbdsKill(&c, victim);
    /* Two voters of two: writes go on, through the follower too. */
    json_decref(ok(via,
                   "{\"action\":\"propose\",\"sql\":\"INSERT INTO t(id, "
                   "v) VALUES(%d, 'after remove')\"}",
                   ROWS + 1));
    tpdbdsWaitCount(&c, "t", ROWS + 1, WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testMalformed), cmocka_unit_test(testCheckpoint),
        cmocka_unit_test(testBackup),    cmocka_unit_test(testTransfer),
        cmocka_unit_test(testAssign),    cmocka_unit_test(testRemove),
    };
    return cmocka_run_group_tests(tests, startCluster, stopCluster);
}
