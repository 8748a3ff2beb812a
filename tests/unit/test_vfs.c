/* Unit tests for the tpdb VFS shim and leader capture (vfs/vfs.c,
 * vfs/capture.c): registration, db_open/db_close, refused PRAGMAs, and the
 * transactions handed to hooks->commit, checked against the database file
 * itself through a shadow copy built only from captured pages. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfs/vfs.h"

#define VFS_HOOKED "tpdb-test"
#define VFS_PLAIN "tpdb-test-plain"

/* What the hooks saw, and what they answer next. */
struct recorder {
    int n_open, n_close, n_check, n_commit, n_end, n_end_committed;
    int open_rc, check_rc, commit_rc;
    struct tpdb_txn last; /* shape of the last committed txn */
    uint32_t last_max_pgno;
    int last_sorted;
    uint32_t page_size;
    uint32_t shadow_pages; /* database size per the last commit */
    uint8_t **shadow;      /* page images by pgno - 1 */
    uint32_t shadow_cap;
    sqlite3 *peek; /* if set, counted from inside commit */
    sqlite3_int64 peeked;
};

static struct recorder rec;
static char dir[64];
static char path_a[128];

static int hookOpen(void *arg,
                    const char *path,
                    const char *uri,
                    void **handle,
                    char *errmsg)
{
    (void)arg;
    (void)path;
    (void)uri;
    rec.n_open++;
    *handle = &rec;
    if (rec.open_rc != TPDB_OK) {
        tpdbErrf(errmsg, "open refused");
    }
    return rec.open_rc;
}

static void hookClose(void *arg, void *handle)
{
    (void)arg;
    assert_ptr_equal(handle, &rec);
    rec.n_close++;
}

static int hookCheck(void *arg, void *handle, char *errmsg)
{
    (void)arg;
    assert_ptr_equal(handle, &rec);
    rec.n_check++;
    if (rec.check_rc != TPDB_OK) {
        tpdbErrf(errmsg, "the leader is node 2");
    }
    return rec.check_rc;
}

static void shadowApply(const struct tpdb_txn *txn)
{
    if (txn->db_pages > rec.shadow_cap) {
        rec.shadow = realloc(rec.shadow, txn->db_pages * sizeof *rec.shadow);
        assert_non_null(rec.shadow);
        for (uint32_t i = rec.shadow_cap; i < txn->db_pages; i++) {
            rec.shadow[i] = NULL;
        }
        rec.shadow_cap = txn->db_pages;
    }
    for (uint32_t i = txn->db_pages; i < rec.shadow_cap; i++) {
        free(rec.shadow[i]);
        rec.shadow[i] = NULL;
    }
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        uint32_t pgno = txn->pages[i].pgno;
        if (rec.shadow[pgno - 1] == NULL) {
            rec.shadow[pgno - 1] = malloc(txn->page_size);
        }
        memcpy(rec.shadow[pgno - 1], txn->pages[i].data, txn->page_size);
    }
    rec.shadow_pages = txn->db_pages;
    rec.page_size = txn->page_size;
}

static int hookCommit(void *arg,
                      void *handle,
                      const struct tpdb_txn *txn,
                      char *errmsg)
{
    (void)arg;
    assert_ptr_equal(handle, &rec);
    rec.n_commit++;
    if (rec.peek != NULL) {
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(rec.peek, "SELECT count(*) FROM t",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        rec.peeked = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (rec.commit_rc != TPDB_OK) {
        tpdbErrf(errmsg, "lost leadership");
        return rec.commit_rc;
    }
    rec.last = *txn;
    rec.last.pages = NULL;
    rec.last_sorted = 1;
    rec.last_max_pgno = 0;
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        if (i > 0 && txn->pages[i].pgno <= txn->pages[i - 1].pgno) {
            rec.last_sorted = 0;
        }
        if (txn->pages[i].pgno > rec.last_max_pgno) {
            rec.last_max_pgno = txn->pages[i].pgno;
        }
    }
    shadowApply(txn);
    return TPDB_OK;
}

static void hookEnd(void *arg, void *handle, int committed)
{
    (void)arg;
    assert_ptr_equal(handle, &rec);
    rec.n_end++;
    rec.n_end_committed += committed;
}

static const struct tpdb_vfs_hooks testHooks = {
    .version = 1,
    .db_open = hookOpen,
    .db_close = hookClose,
    .write_check = hookCheck,
    .commit = hookCommit,
    .txn_end = hookEnd,
};

static int setup(void **state)
{
    (void)state;
    memset(&rec, 0, sizeof rec);
    snprintf(dir, sizeof dir, "/tmp/tpdb-vfs-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(path_a, sizeof path_a, "%s/a.db", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    for (uint32_t i = 0; i < rec.shadow_cap; i++) {
        free(rec.shadow[i]);
    }
    free(rec.shadow);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static sqlite3 *openDb(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
        vfs);
    assert_int_equal(rc, SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL),
        SQLITE_OK);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
}

static sqlite3_int64 queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    sqlite3_int64 v;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Checkpoints everything into the main file and checks that it equals the
 * shadow built from captured pages alone. */
static void assertShadowMatches(sqlite3 *db)
{
    FILE *f;
    uint8_t *page;
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    assert_true(rec.shadow_pages > 0);
    assert_int_equal(queryInt(db, "PRAGMA page_count"), rec.shadow_pages);
    f = fopen(path_a, "rb");
    assert_non_null(f);
    page = malloc(rec.page_size);
    for (uint32_t i = 0; i < rec.shadow_pages; i++) {
        assert_int_equal(fread(page, 1, rec.page_size, f), rec.page_size);
        assert_non_null(rec.shadow[i]);
        if (memcmp(page, rec.shadow[i], rec.page_size) != 0) {
            fail_msg("page %u differs from the captured image", i + 1);
        }
    }
    assert_int_equal(fread(page, 1, 1, f), 0);
    free(page);
    fclose(f);
}

static void testRegister(void **state)
{
    (void)state;
    assert_int_equal(tpdbVfsRegister(VFS_HOOKED, &testHooks, 0), SQLITE_OK);
    assert_int_equal(tpdbVfsRegister(VFS_PLAIN, NULL, 0), SQLITE_OK);
    assert_non_null(sqlite3_vfs_find(VFS_HOOKED));
    assert_non_null(sqlite3_vfs_find(VFS_PLAIN));
    /* Registering again replaces the hooks and keeps one instance. */
    sqlite3_vfs *v = sqlite3_vfs_find(VFS_HOOKED);
    assert_int_equal(tpdbVfsRegister(VFS_HOOKED, &testHooks, 0), SQLITE_OK);
    assert_ptr_equal(sqlite3_vfs_find(VFS_HOOKED), v);
    assert_int_equal(tpdbVfsRegister(NULL, NULL, 0), SQLITE_MISUSE);
    struct tpdb_vfs_hooks bad = {.version = 0};
    assert_int_equal(tpdbVfsRegister("tpdb-bad", &bad, 0), SQLITE_MISUSE);
    assert_string_equal(tpdbVfsLastError(), "");
}

static void testOpenClose(void **state)
{
    char uri[256];
    sqlite3 *a, *b, *c = NULL;
    (void)state;
    a = openDb(path_a, VFS_HOOKED);
    assert_int_equal(rec.n_open, 1);
    snprintf(uri, sizeof uri, "file:%s?%s=1", path_a, TPDB_URI_INTERNAL);
    b = openDb(uri, VFS_HOOKED);
    assert_int_equal(rec.n_open, 1);
    exec(a, "CREATE TABLE t(x)");
    assert_int_equal(queryInt(b, "SELECT count(*) FROM sqlite_schema"), 1);
    sqlite3_close(b);
    assert_int_equal(rec.n_close, 0);
    sqlite3_close(a);
    assert_int_equal(rec.n_close, 1);
    /* A refused db_open fails the open. */
    rec.open_rc = TPDB_NOTFOUND;
    assert_int_equal(
        sqlite3_open_v2(path_a, &c, SQLITE_OPEN_READWRITE, VFS_HOOKED),
        SQLITE_CANTOPEN);
    sqlite3_close(c);
    assert_non_null(strstr(tpdbVfsLastError(), "open refused"));
    assert_int_equal(rec.n_close, 1);
}

static void testPragmas(void **state)
{
    char *err = NULL;
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "CREATE TABLE t(x)");
    assert_int_equal(
        sqlite3_exec(db, "PRAGMA journal_mode=DELETE", NULL, NULL, &err),
        SQLITE_ERROR);
    assert_non_null(strstr(err, "must stay in WAL mode"));
    sqlite3_free(err);
    assert_int_equal(
        sqlite3_exec(db, "PRAGMA main.journal_mode=MEMORY", NULL, NULL, NULL),
        SQLITE_ERROR);
    assert_int_equal(
        sqlite3_exec(db, "PRAGMA locking_mode=EXCLUSIVE", NULL, NULL, &err),
        SQLITE_ERROR);
    assert_non_null(strstr(err, "locking_mode=EXCLUSIVE"));
    sqlite3_free(err);
    /* Reading them, and setting what keeps replication, still work. */
    exec(db, "PRAGMA journal_mode");
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA locking_mode");
    exec(db, "PRAGMA locking_mode=NORMAL");
    exec(db, "INSERT INTO t VALUES (1)");
    assert_int_equal(rec.n_commit, 2);
    sqlite3_close(db);
    /* Without hooks nothing is replicated and nothing is refused. */
    db = openDb(path_a, VFS_PLAIN);
    exec(db, "PRAGMA journal_mode=DELETE");
    exec(db, "PRAGMA journal_mode=WAL");
    sqlite3_close(db);
}

static void testCaptureSimple(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    assert_int_equal(rec.n_commit, 1);
    assert_int_equal(rec.last.page_size, 4096);
    assert_int_equal(rec.last.db_pages, 2);
    exec(db, "INSERT INTO t(v) VALUES ('a'), ('b'), ('c')");
    /* While the commit waits for replication, other connections do not see
     * the transaction. */
    sqlite3 *other = openDb(path_a, VFS_HOOKED);
    rec.peek = other;
    exec(db, "INSERT INTO t(v) VALUES ('d')");
    assert_int_equal(rec.peeked, 3);
    rec.peek = NULL;
    assert_int_equal(queryInt(other, "SELECT count(*) FROM t"), 4);
    sqlite3_close(other);
    exec(db, "DELETE FROM t WHERE v = 'd'");
    exec(db, "UPDATE t SET v = 'bb' WHERE id = 2");
    exec(db, "DELETE FROM t WHERE id = 1");
    assert_int_equal(rec.n_commit, 6);
    assert_int_equal(rec.n_check, 6);
    assert_int_equal(rec.n_end_committed, 6);
    assert_true(rec.n_end >= 6);
    assert_true(rec.last_sorted);
    assert_true(rec.last_max_pgno <= rec.last.db_pages);
    /* A read-only statement commits nothing. */
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 2);
    assert_int_equal(rec.n_commit, 6);
    assertShadowMatches(db);
    sqlite3_close(db);
}

/* Inserts n rows of `size` random bytes. */
static void insertBlobs(sqlite3 *db, int n, int size)
{
    char sql[128];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
             "WHERE i < %d) INSERT INTO t(v) SELECT randomblob(%d) FROM c",
             n, size);
    exec(db, sql);
}

static void testCaptureLarge(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "PRAGMA cache_size=50");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    exec(db, "BEGIN");
    insertBlobs(db, 3000, 3500); /* ~12 MB: spills long before COMMIT */
    assert_int_equal(rec.n_commit, 1);
    exec(db, "COMMIT");
    assert_int_equal(rec.n_commit, 2);
    assert_true(rec.last.n_pages > 2560);
    assert_true(rec.last_sorted);
    assertShadowMatches(db);
    sqlite3_close(db);
}

static void testInPlaceOverwrite(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "PRAGMA cache_size=20");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    exec(db, "BEGIN");
    insertBlobs(db, 400, 1500);
    /* Pages spilled to the WAL above are changed again: SQLite rewrites
     * their frames of this transaction in place. */
    exec(db, "UPDATE t SET v = randomblob(1400)");
    exec(db, "UPDATE t SET v = randomblob(1450) WHERE id % 3 = 0");
    exec(db, "COMMIT");
    assert_int_equal(rec.n_commit, 2);
    assertShadowMatches(db);
    sqlite3_close(db);
}

static void testRollback(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "PRAGMA cache_size=20");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    int ends = rec.n_end;
    exec(db, "BEGIN");
    insertBlobs(db, 500, 2000);
    exec(db, "ROLLBACK");
    assert_int_equal(rec.n_commit, 1);
    assert_int_equal(rec.n_end, ends + 1);
    assert_int_equal(rec.n_end_committed, 1);
    insertBlobs(db, 3, 100);
    assert_int_equal(rec.n_commit, 2);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 3);
    assertShadowMatches(db);
    sqlite3_close(db);
}

static void testRollbackTo(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "PRAGMA cache_size=20");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    exec(db, "BEGIN");
    insertBlobs(db, 300, 2000);
    exec(db, "SAVEPOINT s");
    insertBlobs(db, 500, 2000);
    exec(db, "ROLLBACK TO s");
    insertBlobs(db, 50, 3000); /* reuses the rolled back frame numbers */
    exec(db, "RELEASE s");
    exec(db, "COMMIT");
    assert_int_equal(rec.n_commit, 2);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 350);
    assertShadowMatches(db);
    sqlite3_close(db);
}

static void testVacuum(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(db, 300, 3000);
    uint32_t big = rec.last.db_pages;
    exec(db, "DELETE FROM t WHERE id > 10");
    exec(db, "VACUUM");
    assert_true(rec.last.db_pages < big / 4);
    assert_true(rec.last_max_pgno <= rec.last.db_pages);
    assertShadowMatches(db);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 10);
    sqlite3_close(db);
}

static void copyFile(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* Commit failure of a small and a spilled transaction: nothing of it is
 * visible anywhere, now or after crash recovery. */
static void testCommitUnknown(void **state)
{
    char wal[160], crash[160], crash_wal[170];
    sqlite3 *db, *other, *c;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    other = openDb(path_a, VFS_HOOKED);
    exec(db, "PRAGMA cache_size=20");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(db, 5, 100);
    assert_int_equal(queryInt(other, "SELECT count(*) FROM t"), 5);
    int commits = rec.n_commit;

    rec.commit_rc = TPDB_UNKNOWN;
    assert_int_equal(
        sqlite3_exec(db, "INSERT INTO t(v) VALUES ('lost')", NULL, NULL, NULL),
        SQLITE_IOERR);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_UNKNOWN);
    assert_non_null(strstr(tpdbVfsLastError(), "lost leadership"));
    exec(db, "BEGIN");
    insertBlobs(db, 400, 2000);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL),
                     SQLITE_IOERR);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_UNKNOWN);
    assert_int_equal(sqlite3_get_autocommit(db), 1);
    assert_int_equal(rec.n_commit, commits + 2);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 5);
    assert_int_equal(queryInt(other, "SELECT count(*) FROM t"), 5);

    /* The same connection writes again at once. */
    rec.commit_rc = TPDB_OK;
    exec(db, "INSERT INTO t(v) VALUES ('kept')");
    assert_int_equal(queryInt(other, "SELECT count(*) FROM t"), 6);

    /* Crash: copy the files as they are and recover the copy. */
    snprintf(wal, sizeof wal, "%s-wal", path_a);
    snprintf(crash, sizeof crash, "%s/crash.db", dir);
    snprintf(crash_wal, sizeof crash_wal, "%s-wal", crash);
    copyFile(path_a, crash);
    copyFile(wal, crash_wal);
    c = openDb(crash, VFS_PLAIN);
    assert_int_equal(queryInt(c, "SELECT count(*) FROM t"), 6);
    assert_int_equal(queryInt(c, "SELECT count(*) FROM t WHERE v = 'lost'"), 0);
    sqlite3_close(c);
    sqlite3_close(other);
    sqlite3_close(db);
    db = openDb(path_a, VFS_PLAIN);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 6);
    sqlite3_close(db);
}

static void testCommitRefusedCodes(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    rec.commit_rc = TPDB_NOTLEADER;
    assert_int_equal(
        sqlite3_exec(db, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL),
        SQLITE_IOERR);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_NOTLEADER);
    rec.commit_rc = TPDB_READONLY;
    sqlite3_exec(db, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_NOTLEADER);
    rec.commit_rc = TPDB_TIMEOUT;
    sqlite3_exec(db, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_REPLFAIL);
    rec.commit_rc = TPDB_OK;
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 0);
    exec(db, "INSERT INTO t(v) VALUES (1)");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 1);
    sqlite3_close(db);
}

static void testWriteCheckRefused(void **state)
{
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    int commits = rec.n_commit;
    rec.check_rc = TPDB_NOTLEADER;
    assert_int_equal(
        sqlite3_exec(db, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL),
        SQLITE_IOERR);
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_NOTLEADER);
    assert_non_null(strstr(tpdbVfsLastError(), "node 2"));
    assert_int_equal(rec.n_commit, commits);
    rec.check_rc = TPDB_OK;
    exec(db, "INSERT INTO t(v) VALUES (1)");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 1);
    assertShadowMatches(db);
    sqlite3_close(db);
}

/* Without powersafe overwrite, synchronous=FULL pads the WAL to a sector
 * boundary with copies of the commit frame after it: they pass through. */
static void testPaddingFrames(void **state)
{
    char uri[256];
    sqlite3 *db;
    (void)state;
    snprintf(uri, sizeof uri, "file:%s?psow=0", path_a);
    db = openDb(uri, VFS_HOOKED);
    exec(db, "PRAGMA synchronous=FULL");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    for (int i = 0; i < 10; i++) {
        insertBlobs(db, 1 + i, 50);
    }
    assert_int_equal(rec.n_commit, 11);
    assert_int_equal(rec.n_end_committed, 11);
    assertShadowMatches(db);
    sqlite3_close(db);
}

/* Hooks without commit: writes are checked but commit locally. */
static void testNoCommitHook(void **state)
{
    struct tpdb_vfs_hooks hooks = testHooks;
    sqlite3 *db;
    (void)state;
    hooks.commit = NULL;
    assert_int_equal(tpdbVfsRegister("tpdb-test-nocommit", &hooks, 0),
                     SQLITE_OK);
    db = openDb(path_a, "tpdb-test-nocommit");
    exec(db, "CREATE TABLE t(x)");
    exec(db, "INSERT INTO t VALUES (1)");
    assert_int_equal(rec.n_check, 2);
    assert_int_equal(rec.n_commit, 0);
    assert_int_equal(rec.n_end_committed, 2);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 1);
    sqlite3_close(db);
}

/* The statement `sql` on db is refused by the guard (TPDB_SQLITE_NOTWAL,
 * the reason in tpdbVfsLastError()) and hooks->commit never sees it. */
static void assertNotWal(sqlite3 *db, const char *sql, const char *why)
{
    int commits = rec.n_commit;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_READONLY) {
        fail_msg("%s: got %d (%s), want the refusal", sql, rc,
                 sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_NOTWAL);
    assert_non_null(strstr(tpdbVfsLastError(), why));
    assert_non_null(strstr(tpdbVfsLastError(), "journal_mode=WAL"));
    assert_int_equal(rec.n_commit, commits);
}

/* An ATTACHed database starts in rollback mode (no open switches it): its
 * writes are refused until PRAGMA schema.journal_mode=WAL, which works, and
 * they are captured after it. Nothing reached the file before. */
static void testGuardAttach(void **state)
{
    char sql[256];
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    snprintf(sql, sizeof sql, "ATTACH '%s/b.db' AS aux", dir);
    exec(db, sql);
    assertNotWal(db, "CREATE TABLE aux.t(x)", "rollback-journal write");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM aux.sqlite_schema"), 0);
    /* A rolled back write transaction, opened explicitly, too. */
    exec(db, "BEGIN");
    assertNotWal(db, "CREATE TABLE aux.t(x)", "rollback-journal write");
    exec(db, "ROLLBACK");
    exec(db, "PRAGMA aux.journal_mode=WAL");
    int commits = rec.n_commit;
    exec(db, "CREATE TABLE aux.t(x)");
    exec(db, "INSERT INTO aux.t VALUES (1)");
    assert_int_equal(rec.n_commit, commits + 2);
    sqlite3_close(db);
}

/* PRAGMA journal_mode=WAL with no schema switches every attached database
 * (SQLite's wal-25.WAL), though the file control reaches only the main
 * database: an empty attached database and one with rows written in
 * rollback mode (through the plain VFS) both switch, and their writes are
 * captured afterwards. A later rollback-journal write is still refused. */
static void testGuardAttachNoSchemaSwitch(void **state)
{
    char sql[256];
    sqlite3 *db;
    (void)state;
    snprintf(sql, sizeof sql, "%s/c.db", dir);
    assert_int_equal(
        sqlite3_open_v2(sql, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        VFS_PLAIN),
        SQLITE_OK);
    exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    sqlite3_close(db);
    db = openDb(path_a, VFS_HOOKED);
    snprintf(sql, sizeof sql, "ATTACH '%s/b.db' AS aux", dir);
    exec(db, sql);
    snprintf(sql, sizeof sql, "ATTACH '%s/c.db' AS aux2", dir);
    exec(db, sql);
    snprintf(sql, sizeof sql, "ATTACH '%s/d.db' AS aux3", dir);
    exec(db, sql);
    exec(db, "CREATE TABLE t(x)");
    exec(db, "PRAGMA journal_mode=WAL");
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db, "PRAGMA aux2.journal_mode", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    int commits = rec.n_commit;
    exec(db, "CREATE TABLE aux.t(x)");
    exec(db, "INSERT INTO aux2.t VALUES (2)");
    assert_int_equal(rec.n_commit, commits + 2);
    assert_int_equal(queryInt(db, "SELECT sum(x) FROM aux2.t"), 3);
    /* d.db switched too; one attached afterwards did not, and its
     * rollback-journal write is refused as ever. */
    snprintf(sql, sizeof sql, "ATTACH '%s/e.db' AS aux4", dir);
    exec(db, sql);
    assertNotWal(db, "CREATE TABLE aux4.t(x)", "rollback-journal write");
    exec(db, "CREATE TABLE aux3.t(x)");
    assert_int_equal(rec.n_commit, commits + 3);
    sqlite3_close(db);
}

/* A connection that never switched to WAL (as one through a VFS layered
 * over tpdb is: the extension switches connections on "tpdb" only) cannot
 * write; the file stays empty. */
static void testGuardNotSwitched(void **state)
{
    sqlite3 *db = NULL;
    (void)state;
    assert_int_equal(
        sqlite3_open_v2(path_a, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        VFS_HOOKED),
        SQLITE_OK);
    assertNotWal(db, "CREATE TABLE t(x)", "rollback-journal write");
    sqlite3_close(db);
    FILE *f = fopen(path_a, "rb");
    assert_non_null(f);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
    /* Without hooks nothing is replicated and nothing is refused. */
    assert_int_equal(
        sqlite3_open_v2(path_a, &db, SQLITE_OPEN_READWRITE, VFS_PLAIN),
        SQLITE_OK);
    exec(db, "CREATE TABLE t(x)");
    sqlite3_close(db);
}

/* journal_mode and locking_mode with no schema apply to every attached
 * database, and SQLite asks only the main database's VFS: with a main
 * database on "unix", a replicated attached one gets out of WAL mode (or
 * into heap-memory WAL) behind pragmaCheck's back. Its writes are refused
 * then, whatever the PRAGMA said. */
static void testGuardNoSchemaPragma(void **state)
{
    char sql[256];
    sqlite3 *db = NULL;
    (void)state;
    snprintf(sql, sizeof sql, "%s/main.db", dir);
    assert_int_equal(sqlite3_open_v2(sql, &db,
                                     SQLITE_OPEN_READWRITE |
                                         SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                                     "unix"),
                     SQLITE_OK);
    snprintf(sql, sizeof sql, "ATTACH 'file:%s?vfs=%s' AS aux", path_a,
             VFS_HOOKED);
    exec(db, sql);
    exec(db, "PRAGMA aux.journal_mode=WAL");
    exec(db, "CREATE TABLE aux.t(x)");
    int commits = rec.n_commit;
    assert_int_equal(commits, 1);
    /* Every database in exclusive locking mode: the attached one's WAL
     * writes would skip the shared-memory write lock capture runs under. */
    exec(db, "PRAGMA locking_mode=EXCLUSIVE");
    assertNotWal(db, "INSERT INTO aux.t VALUES (1)", "WAL write lock");
    exec(db, "PRAGMA locking_mode=NORMAL");
    sqlite3_close(db);
    snprintf(sql, sizeof sql, "%s/main.db", dir);
    assert_int_equal(
        sqlite3_open_v2(sql, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI,
                        "unix"),
        SQLITE_OK);
    snprintf(sql, sizeof sql, "ATTACH 'file:%s?vfs=%s' AS aux", path_a,
             VFS_HOOKED);
    exec(db, sql);
    /* Every database out of WAL mode. MEMORY and OFF journals write the
     * file without RESERVED after the EXCLUSIVE lock leaving WAL took. */
    const char *modes[] = {"MEMORY", "OFF", "DELETE", "TRUNCATE", "PERSIST"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA journal_mode=%s", modes[i]);
        (void)sqlite3_exec(db, pragma, NULL, NULL, NULL);
        int rc =
            sqlite3_exec(db, "INSERT INTO aux.t VALUES (2)", NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            /* Still in WAL mode (the switch was refused): captured. */
            assert_int_equal(rec.n_commit, commits + 1);
            commits = rec.n_commit;
        } else {
            assert_int_equal(sqlite3_extended_errcode(db), TPDB_SQLITE_NOTWAL);
            assert_int_equal(rec.n_commit, commits);
        }
        exec(db, "PRAGMA journal_mode=WAL");
    }
    /* What the file holds is what was captured. */
    exec(db, "PRAGMA aux.journal_mode=WAL");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM aux.t"), commits - 1);
    sqlite3_close(db);
}

/* cmocka's assertions are not for other threads: writers count their
 * failures instead. */
static int writerFailures;
static pthread_mutex_t writerMutex = PTHREAD_MUTEX_INITIALIZER;

static void *writerThread(void *arg)
{
    sqlite3 *db = NULL;
    int failures = 0;
    (void)arg;
    if (sqlite3_open_v2(path_a, &db, SQLITE_OPEN_READWRITE, VFS_HOOKED) !=
        SQLITE_OK) {
        failures++;
    }
    sqlite3_busy_timeout(db, 10000);
    for (int i = 0; i < 50; i++) {
        int rc = sqlite3_exec(db, "INSERT INTO t(v) VALUES (randomblob(300))",
                              NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            fprintf(stderr, "writer: %s\n", sqlite3_errmsg(db));
            failures++;
        }
    }
    sqlite3_close(db);
    pthread_mutex_lock(&writerMutex);
    writerFailures += failures;
    pthread_mutex_unlock(&writerMutex);
    return NULL;
}

/* Writers on several threads: commits serialise on the WAL write lock and
 * each is captured once, with the right pages. */
static void testConcurrentWriters(void **state)
{
    pthread_t threads[4];
    sqlite3 *db;
    (void)state;
    db = openDb(path_a, VFS_HOOKED);
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, writerThread, NULL),
                         0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
    }
    assert_int_equal(writerFailures, 0);
    assert_int_equal(rec.n_commit, 201);
    assert_int_equal(rec.n_end_committed, 201);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 200);
    assertShadowMatches(db);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testRegister, setup, teardown),
        cmocka_unit_test_setup_teardown(testOpenClose, setup, teardown),
        cmocka_unit_test_setup_teardown(testPragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(testCaptureSimple, setup, teardown),
        cmocka_unit_test_setup_teardown(testCaptureLarge, setup, teardown),
        cmocka_unit_test_setup_teardown(testInPlaceOverwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(testRollback, setup, teardown),
        cmocka_unit_test_setup_teardown(testRollbackTo, setup, teardown),
        cmocka_unit_test_setup_teardown(testVacuum, setup, teardown),
        cmocka_unit_test_setup_teardown(testCommitUnknown, setup, teardown),
        cmocka_unit_test_setup_teardown(testCommitRefusedCodes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testWriteCheckRefused, setup, teardown),
        cmocka_unit_test_setup_teardown(testConcurrentWriters, setup, teardown),
        cmocka_unit_test_setup_teardown(testPaddingFrames, setup, teardown),
        cmocka_unit_test_setup_teardown(testNoCommitHook, setup, teardown),
        cmocka_unit_test_setup_teardown(testGuardAttach, setup, teardown),
        cmocka_unit_test_setup_teardown(testGuardAttachNoSchemaSwitch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testGuardNotSwitched, setup, teardown),
        cmocka_unit_test_setup_teardown(testGuardNoSchemaPragma, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
