/*
 * Deterministic cluster tests: 3 raft_fixture servers with the real FSM and
 * the real tpdb VFS over temp directories (tests/fsm/cluster.c). Real SQL
 * runs on the leader's application connection; followers get the pages
 * through FSM apply. Covers replication, leader change, disconnect and
 * rejoin, snapshot install, a follower's busy write lock and commits whose
 * outcome is unknown. TPDB_TEST_FILTER=<glob> runs some tests only;
 * TPDB_TEST_KNOWN_BUGS=1 runs the tests skipped for known bugs. Every test
 * ends with all servers at the same applied index, checkpointed, with
 * byte-identical database files that pass PRAGMA integrity_check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "tests/fsm/cluster.h"
#include "vfs/vfs.h"

#define APP_DB "app.db"

/* Runs sql on db and fails the test with SQLite's message on error. */
static void execOk(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fail_msg("%s: %s (extended code %d, vfs: %s)", sql, err ? err : "?",
                 sqlite3_extended_errcode(db), tpdbVfsLastError());
    }
}

/* Every row of every column of `sql`, as one sqlite3_malloc'd string. */
static char *queryAll(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    sqlite3_str *out = sqlite3_str_new(NULL);
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int k = 0; k < sqlite3_column_count(st); k++) {
            const unsigned char *v = sqlite3_column_text(st, k);
            sqlite3_str_appendf(out, "%s|", v ? (const char *)v : "NULL");
        }
        sqlite3_str_appendchar(out, 1, '\n');
    }
    if (rc != SQLITE_DONE) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return sqlite3_str_finish(out);
}

/* What a server's copy of app.db holds, read through a fresh connection. */
static char *digest(struct cluster *c, unsigned i)
{
    sqlite3 *db = clusterOpen(c, i, APP_DB);
    assert_non_null(db);
    char *d = queryAll(
        db, "SELECT type, name, sql FROM sqlite_schema ORDER BY name;");
    char *rows = queryAll(
        db,
        "SELECT count(*), total(id), total(length(b)), "
        "group_concat(v || ':' || length(b) || ':' || "
        "hex(substr(b, 1, 8)), ',') FROM (SELECT * FROM t ORDER BY id)");
    char *both = sqlite3_mprintf("%s%s", d, rows);
    sqlite3_free(d);
    sqlite3_free(rows);
    sqlite3_close(db);
    return both;
}

static long long countRows(sqlite3 *db, const char *where)
{
    char *sql = sqlite3_mprintf("SELECT count(*) FROM t WHERE %s", where);
    char *v = queryAll(db, sql);
    long long n = atoll(v);
    sqlite3_free(v);
    sqlite3_free(sql);
    return n;
}

static long long countOn(struct cluster *c, unsigned i, const char *where)
{
    sqlite3 *db = clusterOpen(c, i, APP_DB);
    assert_non_null(db);
    long long n = countRows(db, where);
    sqlite3_close(db);
    return n;
}

static void assertIntegrity(struct cluster *c, unsigned i, const char *name)
{
    sqlite3 *db = clusterOpen(c, i, name);
    assert_non_null(db);
    char *v = queryAll(db, "PRAGMA integrity_check");
    assert_string_equal(v, "ok|\n");
    sqlite3_free(v);
    sqlite3_close(db);
}

/* Checkpoints database `name` on every server and asserts that each copy
 * passes integrity_check and that the files are byte-identical. */
static void assertFilesIdentical(struct cluster *c, const char *name)
{
    char path[CLUSTER_PATH_MAX];
    uint8_t *ref = NULL;
    size_t refLen = 0;
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(clusterCheckpoint(c, i, name), SQLITE_OK);
        assertIntegrity(c, i, name);
    }
    for (unsigned i = 0; i < c->n; i++) {
        size_t len = 0;
        clusterDbPath(c, i, name, path);
        uint8_t *img = clusterReadFile(path, &len);
        assert_non_null(img);
        assert_true(len > 0);
        if (ref == NULL) {
            ref = img;
            refLen = len;
            continue;
        }
        assert_int_equal(len, refLen);
        assert_memory_equal(img, ref, refLen);
        tpdb_free(img);
    }
    tpdb_free(ref);
}

/* Brings every server to the leader's applied index and asserts that they
 * hold the same rows in app.db and byte-identical files. */
static void assertConverged(struct cluster *c)
{
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));

    char *d0 = digest(c, l);
    for (unsigned i = 0; i < c->n; i++) {
        char *d = digest(c, i);
        assert_string_equal(d, d0);
        sqlite3_free(d);
    }
    sqlite3_free(d0);
    assertFilesIdentical(c, APP_DB);
}

/* Opens app.db on the leader, in WAL mode, with table t. */
static sqlite3 *openApp(struct cluster *c, unsigned l, int create)
{
    sqlite3 *db = clusterOpen(c, l, APP_DB);
    assert_non_null(db);
    execOk(db, "PRAGMA journal_mode=WAL");
    if (create) {
        execOk(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)");
    }
    return db;
}

static void insertRows(sqlite3 *db, int n, const char *tag, int blobSize)
{
    for (int k = 0; k < n; k++) {
        char *sql = sqlite3_mprintf(
            "INSERT INTO t(v, b) VALUES('%q-%d', randomblob(%d))", tag, k,
            blobSize);
        execOk(db, sql);
        sqlite3_free(sql);
    }
}

static int setup(void **state)
{
    struct cluster *c = clusterNew();
    *state = c;
    return c == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    clusterFree(*state);
    return 0;
}

/* A small page cache makes SQLite spill frames before COMMIT; a rolled
 * back spill and a ROLLBACK TO must never reach the followers. Leaves 2
 * 'kept' rows. */
static void writeRolledBack(sqlite3 *db)
{
    execOk(db, "PRAGMA cache_size=20");
    execOk(db, "BEGIN");
    insertRows(db, 8, "spilled", 64 * 1024);
    execOk(db, "ROLLBACK");
    execOk(db, "BEGIN");
    insertRows(db, 2, "kept", 64 * 1024);
    execOk(db, "SAVEPOINT sp");
    insertRows(db, 8, "undone", 64 * 1024);
    execOk(db, "ROLLBACK TO sp");
    execOk(db, "RELEASE sp");
    execOk(db, "COMMIT");
}

/* Rows written on the leader reach both followers, whose readers see them
 * at once; a write on a follower is refused naming the leader. */
static void testReplication(void **state)
{
    struct cluster *c = *state;
    struct tpdb_fsm_stats st;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 50, "row", 100);
    execOk(db, "UPDATE t SET v = v || '-u' WHERE id % 3 = 0");
    execOk(db, "DELETE FROM t WHERE id % 5 = 0");
    execOk(db, "BEGIN");
    insertRows(db, 12, "big", 256 * 1024);
    execOk(db, "INSERT INTO t(v, b) VALUES('zero', zeroblob(1048576))");
    execOk(db, "COMMIT");
    execOk(db, "CREATE INDEX t_v ON t(v)");
    writeRolledBack(db);
    execOk(db, "CREATE TABLE scratch AS SELECT * FROM t");
    execOk(db, "DROP TABLE scratch");
    execOk(db, "VACUUM");
    assert_int_equal(c->lastCommitRc, TPDB_OK);
    sqlite3_close(db);

    unsigned f = (l + 1) % CLUSTER_N;
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    assert_int_equal(countOn(c, f, "1"), 40 + 13 + 2);
    assert_int_equal(countOn(c, f, "v LIKE 'spilled%' OR v LIKE 'undone%'"), 0);
    assert_int_equal(countOn(c, f, "v LIKE '%-u'"), 13);
    tpdbFsmStats(&c->s[f].fsm, &st);
    /* The 4 MB transaction went as parts (staged, then one commit). */
    assert_true(c->parts >= 2);
    assert_true(st.applied_entries + c->parts >= c->commits);
    tpdbFsmStats(&c->s[l].fsm, &st);
    assert_int_equal(st.own_entries, c->commits);
    assert_int_equal(st.applied_entries, 0);

    sqlite3 *fdb = clusterOpen(c, f, APP_DB);
    assert_non_null(fdb);
    assert_int_not_equal(
        sqlite3_exec(fdb, "INSERT INTO t(v) VALUES('no')", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_extended_errcode(fdb), TPDB_SQLITE_NOTLEADER);
    sqlite3_close(fdb);

    assertConverged(c);
}

/* A database whose file name holds URI characters ('%41', '#', '?') is
 * written under that very name on the followers, never under the decoded
 * one ("A.db"), and a name the FSM would refuse is never proposed. */
static void testUriCharactersInName(void **state)
{
    static const char name[] = "%41 #1?.db";
    struct cluster *c = *state;
    char path[CLUSTER_PATH_MAX];
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    sqlite3 *db = clusterOpen(c, l, name);
    assert_non_null(db);
    execOk(db, "PRAGMA journal_mode=WAL");
    execOk(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    execOk(db, "INSERT INTO t(v) VALUES('x'), ('y')");
    sqlite3_close(db);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    for (unsigned i = 0; i < CLUSTER_N; i++) {
        clusterDbPath(c, i, "A.db", path);
        assert_int_not_equal(access(path, F_OK), 0);
        clusterDbPath(c, i, "%41 #1", path);
        assert_int_not_equal(access(path, F_OK), 0);
        sqlite3 *r = clusterOpen(c, i, name);
        assert_non_null(r);
        assert_int_equal(countRows(r, "1"), 2);
        sqlite3_close(r);
    }
    struct tpdb_txn txn = {0};
    struct tpdb_page page = {1, NULL};
    uint8_t data[512] = {0};
    void *buf = NULL;
    size_t len = 0;
    char errmsg[TPDB_ERRMSG_SIZE];
    page.data = data;
    txn.page_size = sizeof data;
    txn.n_pages = 1;
    txn.db_pages = 1;
    txn.pages = &page;
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, ".hidden", 0, 0, &txn,
                                     &buf, &len, errmsg),
                     TPDB_INVALID);
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "a/b.db", 0, 0, &txn, &buf,
                                     &len, errmsg),
                     TPDB_INVALID);
    assert_null(buf);
}

/* The leader dies; a new leader takes writes on its own app.db; the old
 * leader comes back, catches up and ends identical. */
static void testLeaderChange(void **state)
{
    struct cluster *c = *state;
    sqlite3 *conns[CLUSTER_N];
    unsigned l0 = clusterLeaderReady(c);
    assert_int_not_equal(l0, CLUSTER_NONE);
    sqlite3 *db = openApp(c, l0, 1);
    insertRows(db, 20, "first", 300);
    sqlite3_close(db);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l0));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    /* One warm connection per server, kept open across the change. */
    for (unsigned i = 0; i < CLUSTER_N; i++) {
        conns[i] = clusterOpen(c, i, APP_DB);
        assert_non_null(conns[i]);
        assert_int_equal(countRows(conns[i], "1"), 20);
    }

    raft_fixture_kill(&c->f, l0);
    unsigned l1 = clusterLeaderReady(c);
    assert_int_not_equal(l1, CLUSTER_NONE);
    assert_int_not_equal(l1, l0);
    insertRows(conns[l1], 20, "second", 300);
    execOk(conns[l1], "UPDATE t SET v = upper(v) WHERE v LIKE 'first-1%'");
    execOk(conns[l1], "DELETE FROM t WHERE v = 'first-2'");
    assert_int_equal(c->lastCommitRc, TPDB_OK);
    assert_int_equal(countRows(conns[l0], "1"), 20);

    raft_fixture_revive(&c->f, l0);
    assertConverged(c);
    for (unsigned i = 0; i < CLUSTER_N; i++) {
        assert_int_equal(countRows(conns[i], "1"), 39);
        assert_int_equal(countRows(conns[i], "v LIKE 'FIRST-1%'"), 11);
    }

    /* The old leader, back as a follower, refuses writes on the
     * connection it wrote through before. */
    if (raft_fixture_leader_index(&c->f) != l0) {
        assert_int_not_equal(
            sqlite3_exec(conns[l0], "DELETE FROM t", NULL, NULL, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_extended_errcode(conns[l0]),
                         TPDB_SQLITE_NOTLEADER);
        assert_int_equal(countRows(conns[l0], "1"), 39);
    }
    for (unsigned i = 0; i < CLUSTER_N; i++) {
        sqlite3_close(conns[i]);
    }
}

/* A follower cut off while many transactions commit catches up from the
 * log once it is reconnected. */
static void testDisconnectRejoin(void **state)
{
    struct cluster *c = *state;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 1) % CLUSTER_N;
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 5, "before", 200);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));

    clusterIsolate(c, f, 1);
    for (int k = 0; k < 20; k++) {
        insertRows(db, 2, "during", 500);
        execOk(db, "UPDATE t SET b = randomblob(700) WHERE id % 4 = 1");
        execOk(db, "DELETE FROM t WHERE id % 7 = 3");
    }
    assert_int_equal(c->lastCommitRc, TPDB_OK);
    assert_int_equal(countOn(c, f, "1"), 5);
    assert_int_equal(countOn(c, f, "v LIKE 'during%'"), 0);

    clusterIsolate(c, f, 0);
    sqlite3_close(db);
    assertConverged(c);
    assert_true(countOn(c, f, "v LIKE 'during%'") > 0);
}

/* Inserts `rounds` batches of 5 rows on leader l, each followed by a
 * barrier: the leader's own entries are acknowledged, not applied, and
 * under the fixture its snapshots are taken at entries like the barrier
 * (see the adapter in cluster.c). */
static void insertWithBarriers(struct cluster *c,
                               unsigned l,
                               sqlite3 *db,
                               int rounds,
                               const char *tag,
                               int blobSize)
{
    for (int k = 0; k < rounds; k++) {
        insertRows(db, 5, tag, blobSize);
        assert_int_equal(clusterLeaderReady(c), l);
    }
}

/* With a small snapshot threshold, a follower cut off long enough that the
 * leader compacted its log past it is brought up to date by snapshot
 * install. */
static void testSnapshotInstall(void **state)
{
    struct cluster *c = *state;
    struct tpdb_fsm_stats st;
    clusterSnapshotEvery(c, 8, 2);
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 2) % CLUSTER_N;
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 3, "before", 100);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));

    sqlite3 *db2 = clusterOpen(c, l, "second.db");
    assert_non_null(db2);
    execOk(db2, "PRAGMA journal_mode=WAL");
    execOk(db2, "CREATE TABLE big(x)");
    execOk(db2, "INSERT INTO big VALUES(randomblob(400000))");
    index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));

    clusterIsolate(c, f, 1);
    insertWithBarriers(c, l, db, 8, "during", 3000);
    execOk(db, "CREATE INDEX t_v ON t(v)");
    /* The snapshot's copy of second.db is smaller than the follower's. */
    execOk(db2, "DELETE FROM big");
    execOk(db2, "INSERT INTO big VALUES('small')");
    execOk(db2, "VACUUM");
    sqlite3_close(db2);
    insertWithBarriers(c, l, db, 2, "after", 100);
    struct raft *lr = raft_fixture_get(&c->f, l);
    struct raft *fr = raft_fixture_get(&c->f, f);
    tpdbFsmStats(&c->s[l].fsm, &st);
    assert_true(st.snapshots > 0);
    /* The follower's next entry is gone from the leader's log. */
    assert_true(lr->log.offset > raft_last_index(fr));

    clusterIsolate(c, f, 0);
    sqlite3_close(db);
    assertConverged(c);
    tpdbFsmStats(&c->s[f].fsm, &st);
    assert_true(st.restores > 0);
    /* The snapshot is a record: both databases came as streams. */
    assert_int_equal(st.fetches, 2);
    assert_int_equal(tpdbFsmFetching(&c->s[f].fsm), 0);
    assert_int_equal(tpdbFsmDbCount(&c->s[f].fsm), 2);
    assert_int_equal(countOn(c, f, "v LIKE 'during%'"), 40);
    assertFilesIdentical(c, "second.db");
}

struct changeWait {
    struct raft_change req;
    int done;
    int status;
};

static void changeCb(struct raft_change *req, int status)
{
    struct changeWait *w = req->data;
    w->done = 1;
    w->status = status;
}

/* Steps until a membership change finished; asserts it succeeded. */
static void waitChange(struct cluster *c, struct changeWait *w)
{
    for (unsigned n = 0; !w->done && n < 200000; n++) {
        raft_fixture_step(&c->f);
    }
    assert_true(w->done);
    assert_int_equal(w->status, 0);
}

/* A server added after the leader compacted its log starts with no
 * database at all and is brought up to date by snapshot install, then
 * becomes a voter and ends identical. */
static void testNewServerBySnapshot(void **state)
{
    struct cluster *c = *state;
    struct tpdb_fsm_stats st;
    struct changeWait w;
    clusterSnapshotEvery(c, 8, 2);
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    sqlite3 *db = openApp(c, l, 1);
    insertWithBarriers(c, l, db, 6, "old", 2000);
    assert_true(raft_fixture_get(&c->f, l)->log.offset > 1);

    unsigned n = clusterGrow(c);
    assert_int_not_equal(n, CLUSTER_NONE);
    struct raft *lr = raft_fixture_get(&c->f, l);
    raft_id id = raft_fixture_get(&c->f, n)->id;
    char address[16];
    snprintf(address, sizeof address, "%llu", (unsigned long long)id);
    memset(&w, 0, sizeof w);
    w.req.data = &w;
    assert_int_equal(raft_add(lr, &w.req, id, address, changeCb), 0);
    waitChange(c, &w);
    memset(&w, 0, sizeof w);
    w.req.data = &w;
    assert_int_equal(raft_assign(lr, &w.req, id, RAFT_VOTER, changeCb), 0);
    waitChange(c, &w);

    insertRows(db, 3, "new", 100);
    sqlite3_close(db);
    assertConverged(c);
    tpdbFsmStats(&c->s[n].fsm, &st);
    assert_true(st.restores > 0);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(countOn(c, n, "1"), 33);
}

/* A follower's connection holding the WAL write lock (BEGIN IMMEDIATE)
 * keeps apply from writing; the follower stays up, a reader with an
 * open read transaction keeps its view, and once the lock is released the
 * follower applies the entries it held back, in order.
 * The FSM queues those entries (raft 0.15 stops applying for good when
 * apply fails): raft's applied index moves on, the queue holds them, and
 * the follower stays a healthy follower. */
static void testFollowerBusyLock(void **state)
{
    struct cluster *c = *state;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 1) % CLUSTER_N;
    unsigned g = (l + 2) % CLUSTER_N;
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 4, "before", 100);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));

    sqlite3 *locker = clusterOpen(c, f, APP_DB);
    sqlite3 *reader = clusterOpen(c, g, APP_DB);
    assert_non_null(locker);
    assert_non_null(reader);
    execOk(locker, "BEGIN IMMEDIATE");
    execOk(reader, "BEGIN");
    assert_int_equal(countRows(reader, "1"), 4);

    insertRows(db, 6, "held", 100);
    struct raft *fr = raft_fixture_get(&c->f, f);
    index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, g, index));
    raft_fixture_step_until_elapsed(&c->f, 500);
    assert_int_equal(raft_state(fr), RAFT_FOLLOWER);
    assert_int_equal(tpdbFsmPending(&c->s[f].fsm), 6);
    assert_int_equal(tpdbFsmWrittenIndex(&c->s[f].fsm, raft_last_applied(fr)),
                     raft_last_applied(fr) - 6);
    tpdbFsmDrain(&c->s[f].fsm);
    assert_int_equal(tpdbFsmPending(&c->s[f].fsm), 6);
    /* The reader on g still sees its snapshot; a new read sees all. */
    assert_int_equal(countRows(reader, "1"), 4);
    execOk(reader, "COMMIT");
    assert_int_equal(countRows(reader, "1"), 10);

    execOk(locker, "ROLLBACK");
    tpdbFsmDrain(&c->s[f].fsm);
    assert_int_equal(tpdbFsmPending(&c->s[f].fsm), 0);
    assert_true(clusterStepUntilApplied(c, f, index));
    assert_int_equal(countRows(locker, "1"), 10);
    sqlite3_close(locker);
    sqlite3_close(reader);
    sqlite3_close(db);
    assertConverged(c);
}

/* The same lock held while more entries come than the follower's queue may
 * hold: the queue is dropped, snapshots go on, and once the lock is free
 * the follower gets the database as a stream and ends identical. */
static void testFollowerBusyLockBounded(void **state)
{
    struct cluster *c = *state;
    struct tpdb_fsm_stats st;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 1) % CLUSTER_N;
    clusterSnapshotEvery(c, 8, 4);
    tpdbFsmSetQueueLimit(&c->s[f].fsm, 5, 1u << 30);
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 4, "before", 100);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    tpdbFsmStats(&c->s[f].fsm, &st);
    uint64_t snapshots = st.snapshots;

    sqlite3 *locker = clusterOpen(c, f, APP_DB);
    assert_non_null(locker);
    execOk(locker, "BEGIN IMMEDIATE");
    insertWithBarriers(c, l, db, 6, "held", 100);
    index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, f, index));
    assert_int_equal(tpdbFsmFetching(&c->s[f].fsm), 1);
    assert_true(tpdbFsmPending(&c->s[f].fsm) <= 5);
    tpdbFsmStats(&c->s[f].fsm, &st);
    assert_true(st.snapshots > snapshots);

    execOk(locker, "ROLLBACK");
    sqlite3_close(locker);
    insertRows(db, 1, "after", 100);
    index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    clusterServiceFetches(c);
    assert_int_equal(tpdbFsmFetching(&c->s[f].fsm), 0);
    tpdbFsmStats(&c->s[f].fsm, &st);
    assert_int_equal(st.fetches, 1);
    sqlite3_close(db);
    assertConverged(c);
    assert_int_equal(countOn(c, f, "1"), 4 + 30 + 1);
}

/* onPropose: isolate the leader before anyone got its entry. */
static void isolateAtOnce(struct cluster *c, unsigned i)
{
    c->onPropose = NULL;
    clusterIsolate(c, i, 1);
}

/* onPropose: let the entry reach both followers, then cut the leader off
 * before their acknowledgements come back. */
static void isolateAfterDelivery(struct cluster *c, unsigned i)
{
    c->onPropose = NULL;
    for (unsigned j = 0; j < c->n; j++) {
        if (j != i) {
            assert_true(raft_fixture_step_until_delivered(&c->f, i, j, 5000));
        }
    }
    clusterIsolate(c, i, 1);
}

/* Commits one row with the leader losing its followers at `hook`; the
 * commit must fail with "outcome unknown" and leave the row out of the
 * leader's copy. Returns the leader's index and its still-open db. */
static unsigned commitUnknown(struct cluster *c,
                              void (*hook)(struct cluster *, unsigned),
                              sqlite3 **out)
{
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 3, "ok", 100);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));

    c->onPropose = hook;
    int rc =
        sqlite3_exec(db, "INSERT INTO t(v) VALUES('maybe')", NULL, NULL, NULL);
    assert_int_not_equal(rc, SQLITE_OK);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_UNKNOWN);
    assert_int_equal(c->lastCommitRc, TPDB_UNKNOWN);
    /* SQLite rolled back; the connection works at once. */
    assert_int_equal(countRows(db, "1"), 3);
    *out = db;
    return l;
}

/* The entry never left the leader: the majority elects a new leader whose
 * log overwrites it, and no server ends with the row. */
static void testUnknownNotCommitted(void **state)
{
    struct cluster *c = *state;
    sqlite3 *db;
    unsigned l = commitUnknown(c, isolateAtOnce, &db);
    unsigned l1 = clusterLeaderReady(c);
    assert_int_not_equal(l1, CLUSTER_NONE);
    assert_int_not_equal(l1, l);
    clusterIsolate(c, l, 0);
    assertConverged(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(countOn(c, i, "v = 'maybe'"), 0);
    }
    assert_int_equal(countRows(db, "1"), 3);
    sqlite3_close(db);
}

/* The entry reached the followers but not their acknowledgements: the new
 * leader commits it, and the old leader applies its own entry as a
 * replicated one, so every server ends with the row. */
static void testUnknownCommittedLater(void **state)
{
    struct cluster *c = *state;
    sqlite3 *db;
    unsigned l = commitUnknown(c, isolateAfterDelivery, &db);
    unsigned l1 = clusterLeaderReady(c);
    assert_int_not_equal(l1, CLUSTER_NONE);
    assert_int_not_equal(l1, l);
    clusterIsolate(c, l, 0);
    assertConverged(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(countOn(c, i, "v = 'maybe'"), 1);
    }
    /* The old leader's open connection sees it without reopening. */
    assert_int_equal(countRows(db, "1"), 4);
    sqlite3_close(db);
}

/* Isolates the proposer right after the second (middle) part of a large
 * transaction is appended: the first part is committed everywhere (and
 * staged by the followers), the rest never comes. */
static unsigned proposals;

static void isolateAtSecondPart(struct cluster *c, unsigned i)
{
    if (++proposals == 2) {
        c->onPropose = NULL;
        clusterIsolate(c, i, 1);
    }
}

/* A leader change in the middle of a large transaction: the client hears
 * a definite failure (never "committed"), no node keeps any of its parts,
 * and the cluster goes on and ends byte-identical. */
static void testLargeTransactionLeaderChange(void **state)
{
    struct cluster *c = *state;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 3, "ok", 100);
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    proposals = 0;
    c->onPropose = isolateAtSecondPart;
    execOk(db, "BEGIN");
    insertRows(db, 40, "big", 256 * 1024); /* about 2,600 pages: 3 parts */
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    assert_int_not_equal(rc, SQLITE_OK);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_REPLFAIL);
    assert_true(c->parts >= 2);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    unsigned l1 = clusterLeaderReady(c);
    assert_int_not_equal(l1, CLUSTER_NONE);
    assert_int_not_equal(l1, l);
    clusterIsolate(c, l, 0);
    sqlite3 *db1 = openApp(c, l1, 0);
    insertRows(db1, 2, "after", 100);
    sqlite3_close(db1);
    assertConverged(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(countOn(c, i, "v LIKE 'big%'"), 0);
        assert_int_equal(countOn(c, i, "1"), 5);
    }
}

/* The cluster committed a transaction whose frame the leader then failed
 * to write locally (disk full after the quorum held it): the leader takes
 * no write on that database until a follower's copy, which has the
 * transaction, replaced its own; then it writes again and every node ends
 * identical. */
static void testCommittedNotWrittenLocally(void **state)
{
    struct cluster *c = *state;
    struct tpdb_fsm_stats st;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    sqlite3 *db = openApp(c, l, 1);
    insertRows(db, 3, "before", 100);
    c->failCommitWrite = 1;
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO t(v) VALUES('lost-here')", NULL, NULL,
                     NULL),
        SQLITE_OK);
    assert_null(c->realPwrite);
    assert_int_equal(tpdbFsmFetching(&c->s[l].fsm), 1);
    /* Refused while the database waits for its stream. */
    int rc = sqlite3_exec(db, "INSERT INTO t(v) VALUES('refused')", NULL, NULL,
                          NULL);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_REPLFAIL);
    assert_int_not_equal(rc, SQLITE_OK);
    /* Once a follower has written it, the leader can fetch from it (the
     * fixture serves fetches around every apply, and here). */
    raft_index index = raft_last_applied(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    clusterServiceFetches(c);
    assert_int_equal(tpdbFsmFetching(&c->s[l].fsm), 0);
    tpdbFsmStats(&c->s[l].fsm, &st);
    assert_int_equal(st.fetches, 1);
    insertRows(db, 2, "after", 100);
    sqlite3_close(db);
    assertConverged(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(countOn(c, i, "v = 'lost-here'"), 1);
        assert_int_equal(countOn(c, i, "v = 'refused'"), 0);
        assert_int_equal(countOn(c, i, "1"), 6);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testReplication, setup, teardown),
        cmocka_unit_test_setup_teardown(testCommittedNotWrittenLocally, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testLargeTransactionLeaderChange, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testUriCharactersInName, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testLeaderChange, setup, teardown),
        cmocka_unit_test_setup_teardown(testDisconnectRejoin, setup, teardown),
        cmocka_unit_test_setup_teardown(testSnapshotInstall, setup, teardown),
        cmocka_unit_test_setup_teardown(testNewServerBySnapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testFollowerBusyLock, setup, teardown),
        cmocka_unit_test_setup_teardown(testFollowerBusyLockBounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testUnknownNotCommitted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testUnknownCommittedLater, setup,
                                        teardown),
    };
    /* TPDB_TEST_FILTER=testName runs one test (a cmocka glob). */
    const char *filter = getenv("TPDB_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
