/* Unit tests for follower apply (vfs/apply.c, vfs/walindex.c): every
 * transaction captured on database A goes through tpdbVfsApply to database
 * B, whose other connections (in this process and a stock sqlite3 process)
 * must see each one at once, and whose file must end byte-identical. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfs/vfs.h"

#define VFS_LEADER "tpdb-apply-leader"
#define VFS_PLAIN "tpdb-apply-plain"

struct fixture {
    char dir[64];
    char path_a[128];
    char path_b[128];
    sqlite3 *a;       /* writer on A (hooks) */
    sqlite3 *applier; /* internal, idle connection on B */
    sqlite3 *reader;  /* another connection on B, opened before */
    int n_commit;
    int apply_rc;
    int fail_writes; /* the apply in the hook sees every pwrite fail */
    char apply_err[TPDB_ERRMSG_SIZE];
};

static struct fixture *current;

/* A pwrite64 that always fails as on a full disk. */
static ssize_t failingPwrite(int fd, const void *buf, size_t n, off_t off)
{
    (void)fd;
    (void)buf;
    (void)n;
    (void)off;
    errno = ENOSPC;
    return -1;
}

static int hookOpen(void *arg,
                    const char *path,
                    const char *uri,
                    void **handle,
                    char *errmsg)
{
    (void)arg;
    (void)path;
    (void)uri;
    (void)errmsg;
    *handle = NULL;
    return TPDB_OK;
}

/* The leader's commit applies the transaction to B, as a follower would. */
static int hookCommit(void *arg,
                      void *handle,
                      const struct tpdb_txn *txn,
                      char *errmsg)
{
    struct fixture *f = current;
    (void)arg;
    (void)handle;
    f->n_commit++;
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
    sqlite3_syscall_ptr real_pwrite = NULL;
    if (f->fail_writes) {
        /* Through the tpdb VFS, which passes system calls on to unix. */
        sqlite3_vfs *vfs = sqlite3_vfs_find(VFS_PLAIN);
        real_pwrite = unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
        assert_int_equal(
            vfs->xSetSystemCall(vfs, "pwrite64",
                                (sqlite3_syscall_ptr)failingPwrite),
            SQLITE_OK);
    }
    /* Every other transaction is synced. */
    f->apply_rc =
        tpdbVfsApply(f->applier, txn, f->n_commit % 2, 1000, f->apply_err);
    if (f->fail_writes) {
        unix_vfs->xSetSystemCall(unix_vfs, "pwrite64", real_pwrite);
    }
    if (f->apply_rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", f->apply_err);
    }
    return f->apply_rc;
}

static const struct tpdb_vfs_hooks leaderHooks = {
    .version = 1,
    .db_open = hookOpen,
    .commit = hookCommit,
};

static sqlite3 *openDb(const char *path, const char *vfs, int wal)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
        vfs);
    assert_int_equal(rc, SQLITE_OK);
    if (wal) {
        assert_int_equal(
            sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL),
            SQLITE_OK);
    }
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        fail_msg("%s: %s (%s)", sql, sqlite3_errmsg(db), tpdbVfsLastError());
    }
}

static sqlite3_int64 queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    sqlite3_int64 v;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int setup(void **state)
{
    char uri[256];
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    assert_int_equal(tpdbVfsRegister(VFS_LEADER, &leaderHooks, 0), SQLITE_OK);
    assert_int_equal(tpdbVfsRegister(VFS_PLAIN, NULL, 0), SQLITE_OK);
    snprintf(f->dir, sizeof f->dir, "/tmp/tpdb-apply-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path_a, sizeof f->path_a, "%s/a.db", f->dir);
    snprintf(f->path_b, sizeof f->path_b, "%s/b.db", f->dir);
    snprintf(uri, sizeof uri, "file:%s?%s=1", f->path_b, TPDB_URI_INTERNAL);
    /* B starts as an empty file; its first apply writes page 1. */
    f->applier = openDb(uri, VFS_LEADER, 0);
    f->reader = openDb(f->path_b, VFS_PLAIN, 0);
    f->a = openDb(f->path_a, VFS_LEADER, 1);
    current = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    sqlite3_close(f->a);
    sqlite3_close(f->reader);
    sqlite3_close(f->applier);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    current = NULL;
    return rc == 0 ? 0 : -1;
}

/* Inserts n rows of `size` random bytes on A. */
static void insertBlobs(sqlite3 *db, int n, int size)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
             "WHERE i < %d) INSERT INTO t(v) SELECT randomblob(%d) FROM c",
             n, size);
    exec(db, sql);
}

static char *readFile(const char *path, long *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)*len + 1);
    assert_int_equal(fread(buf, 1, (size_t)*len, fp), (size_t)*len);
    fclose(fp);
    return buf;
}

/* Crash recovery: a copy of B's main file and WAL, without the WAL-index,
 * opens with every applied transaction (checksums and salts are right). */
static void assertRecovers(struct fixture *f)
{
    char cmd[1024], copy[160];
    snprintf(copy, sizeof copy, "%s/copy.db", f->dir);
    snprintf(cmd, sizeof cmd,
             "rm -f '%s'*; cp '%s' '%s' && cp '%s-wal' '%s-wal'", copy,
             f->path_b, copy, f->path_b, copy);
    assert_int_equal(system(cmd), 0);
    sqlite3 *c = openDb(copy, VFS_PLAIN, 0);
    assert_int_equal(queryInt(c, "SELECT count(*) FROM t"),
                     queryInt(f->a, "SELECT count(*) FROM t"));
    assert_int_equal(queryInt(c, "SELECT total(length(v)) FROM t"),
                     queryInt(f->a, "SELECT total(length(v)) FROM t"));
    sqlite3_close(c);
}

/* After a TRUNCATE checkpoint on both, the main files are byte-identical
 * and B passes integrity_check. */
static void assertIdentical(struct fixture *f)
{
    long la, lb;
    exec(f->a, "PRAGMA wal_checkpoint(TRUNCATE)");
    exec(f->reader, "PRAGMA wal_checkpoint(TRUNCATE)");
    char *a = readFile(f->path_a, &la);
    char *b = readFile(f->path_b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, (size_t)la);
    free(a);
    free(b);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(f->reader, "PRAGMA integrity_check", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

static void testApplyBasic(void **state)
{
    struct fixture *f = *state;
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    assert_int_equal(f->apply_rc, TPDB_OK);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 0);
    for (int i = 1; i <= 50; i++) {
        exec(f->a, "INSERT INTO t(v) VALUES (randomblob(100))");
        assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), i);
    }
    exec(f->a, "UPDATE t SET v = 'x' WHERE id % 2 = 0");
    exec(f->a, "DELETE FROM t WHERE id > 40");
    assert_int_equal(
        queryInt(f->reader, "SELECT count(*) FROM t WHERE v = 'x'"), 20);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 40);
    assertRecovers(f);
    assertIdentical(f);
}

/* B already set to WAL mode by a connection (one page on disk) before
 * the first transaction arrives. */
static void testApplyOnWalDb(void **state)
{
    struct fixture *f = *state;
    exec(f->reader, "PRAGMA journal_mode=WAL");
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 30, 700);
    assert_int_equal(f->apply_rc, TPDB_OK);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 30);
    assertRecovers(f);
    assertIdentical(f);
}

/* Page sizes other than the default, including 65536 (stored as 1 in the
 * WAL-index header). */
static void testApplyPageSizes(void **state)
{
    struct fixture *f = *state;
    static const int sizes[] = {512, 1024, 65536};
    for (int i = 0; i < 3; i++) {
        char sql[64], uri[256];
        sqlite3_close(f->a);
        sqlite3_close(f->reader);
        sqlite3_close(f->applier);
        snprintf(f->path_a, sizeof f->path_a, "%s/a%d.db", f->dir, sizes[i]);
        snprintf(f->path_b, sizeof f->path_b, "%s/b%d.db", f->dir, sizes[i]);
        snprintf(uri, sizeof uri, "file:%s?%s=1", f->path_b, TPDB_URI_INTERNAL);
        f->applier = openDb(uri, VFS_LEADER, 0);
        f->reader = openDb(f->path_b, VFS_PLAIN, 0);
        f->a = openDb(f->path_a, VFS_LEADER, 0);
        snprintf(sql, sizeof sql, "PRAGMA page_size=%d", sizes[i]);
        exec(f->a, sql);
        exec(f->a, "PRAGMA journal_mode=WAL");
        exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
        insertBlobs(f->a, 40, 3000);
        exec(f->a, "CREATE INDEX tv ON t(v)");
        exec(f->a, "DELETE FROM t WHERE id % 2 = 0");
        assert_int_equal(f->apply_rc, TPDB_OK);
        assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 20);
        assert_int_equal(queryInt(f->reader, "PRAGMA page_size"), sizes[i]);
        assertRecovers(f);
        assertIdentical(f);
    }
}

/* WAL frames on B as reported by a PASSIVE checkpoint. */
static sqlite3_int64 walFrames(sqlite3 *db)
{
    sqlite3_stmt *st;
    sqlite3_int64 v;
    assert_int_equal(
        sqlite3_prepare_v2(db, "PRAGMA wal_checkpoint(PASSIVE)", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    return v;
}

static void testApplyMixed(void **state)
{
    struct fixture *f = *state;
    exec(f->a, "PRAGMA cache_size=100");
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, k INT)");
    for (int round = 0; round < 6; round++) {
        insertBlobs(f->a, 200, 700);
        exec(f->a, "UPDATE t SET k = id * 7 % 101");
        if (round == 1) {
            exec(f->a, "CREATE INDEX tk ON t(k)");
        }
        if (round == 2) {
            exec(f->a, "INSERT INTO t(v) VALUES (randomblob(5000000))");
        }
        if (round == 3) {
            exec(f->a, "DELETE FROM t WHERE id % 3 = 0");
            exec(f->a, "VACUUM");
        }
        if (round == 4) {
            /* B's WAL is fully checkpointed: the next apply restarts it. */
            sqlite3_int64 before = walFrames(f->reader);
            assert_true(before > 10);
            exec(f->a, "INSERT INTO t(v) VALUES ('restart')");
            assert_true(walFrames(f->reader) < 10);
        }
        assert_int_equal(f->apply_rc, TPDB_OK);
        assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"),
                         queryInt(f->a, "SELECT count(*) FROM t"));
        assert_int_equal(queryInt(f->reader, "SELECT sum(k) FROM t"),
                         queryInt(f->a, "SELECT sum(k) FROM t"));
    }
    assertRecovers(f);
    assertIdentical(f);

    /* A stock sqlite3 process reads B. */
    char cmd[256], out[64] = "";
    snprintf(cmd, sizeof cmd,
             "/usr/bin/sqlite3 '%s' 'SELECT count(*), sum(k) FROM t' "
             "2>&1",
             f->path_b);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    char want[64];
    snprintf(want, sizeof want, "%lld|%lld\n",
             (long long)queryInt(f->a, "SELECT count(*) FROM t"),
             (long long)queryInt(f->a, "SELECT sum(k) FROM t"));
    assert_string_equal(out, want);
}

static long long fileSize(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* The apply that restarts B's fully checkpointed WAL truncates the file
 * first: what is left is the new header and the new transaction's frames
 * (the old generation's, still dirty in the page cache, are dropped rather
 * than written by the header's sync), and a copy without the WAL-index
 * still recovers every transaction. */
static void testApplyRestartTruncates(void **state)
{
    struct fixture *f = *state;
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path_b);
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 200, 3000);
    assert_int_equal(f->apply_rc, TPDB_OK);
    long long before = fileSize(wal);
    assert_true(before > 100 * 4096);
    assert_true(walFrames(f->reader) > 100);
    exec(f->a, "INSERT INTO t(v) VALUES ('restart')");
    assert_int_equal(f->apply_rc, TPDB_OK);
    sqlite3_int64 frames = walFrames(f->reader);
    assert_true(frames > 0 && frames < 10);
    assert_int_equal(
        fileSize(wal),
        32 + frames * (queryInt(f->reader, "PRAGMA page_size") + 24));
    assertRecovers(f);
    assertIdentical(f);
}

static int syncSkips;

static int countingSkip(void *arg)
{
    syncSkips++;
    return *(int *)arg;
}

/* tpdbVfsWalSyncFilter: the sync of the WAL that a checkpoint on that
 * connection runs asks the filter (skipped or not, the checkpoint
 * completes and B stays whole); a checkpoint on another connection does
 * not; a connection not in WAL mode is refused. */
static void testWalSyncFilter(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    int skip = 1;
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    sqlite3 *ck = openDb(f->path_b, VFS_PLAIN, 0);
    assert_int_equal(tpdbVfsWalSyncFilter(ck, countingSkip, &skip, errmsg),
                     TPDB_OK);
    for (int i = 0; i < 2; i++) {
        skip = i == 0;
        syncSkips = 0;
        insertBlobs(f->a, 20, 3000);
        assert_int_equal(f->apply_rc, TPDB_OK);
        exec(f->reader, "PRAGMA wal_checkpoint(PASSIVE)");
        assert_int_equal(syncSkips, 0);
        insertBlobs(f->a, 20, 3000);
        exec(ck, "PRAGMA wal_checkpoint(PASSIVE)");
        assert_true(syncSkips >= 1);
    }
    assert_int_equal(tpdbVfsWalSyncFilter(ck, NULL, NULL, errmsg), TPDB_OK);
    syncSkips = 0;
    insertBlobs(f->a, 20, 3000);
    exec(ck, "PRAGMA wal_checkpoint(PASSIVE)");
    assert_int_equal(syncSkips, 0);
    sqlite3_close(ck);
    assertRecovers(f);
    assertIdentical(f);

    char path[160];
    snprintf(path, sizeof path, "%s/rollback.db", f->dir);
    sqlite3 *rb = openDb(path, VFS_PLAIN, 0);
    exec(rb, "CREATE TABLE x(a)");
    assert_int_equal(tpdbVfsWalSyncFilter(rb, countingSkip, &skip, errmsg),
                     TPDB_INVALID);
    sqlite3_close(rb);
}

/* B's own connections keep working around applied transactions: a read
 * transaction keeps its snapshot, SQLite's writer takes the write lock in
 * between, and PASSIVE, RESTART and TRUNCATE checkpoints run. */
static void testApplyInterleaved(void **state)
{
    struct fixture *f = *state;
    sqlite3 *snap = openDb(f->path_b, VFS_PLAIN, 0);
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    static const char *const ckpt[] = {"PRAGMA wal_checkpoint(PASSIVE)",
                                       "PRAGMA wal_checkpoint(RESTART)",
                                       "PRAGMA wal_checkpoint(TRUNCATE)"};
    for (int i = 0; i < 30; i++) {
        exec(snap, "BEGIN");
        sqlite3_int64 seen = queryInt(snap, "SELECT count(*) FROM t");
        insertBlobs(f->a, 5, 3000);
        assert_int_equal(f->apply_rc, TPDB_OK);
        /* The open read transaction still sees its snapshot. */
        assert_int_equal(queryInt(snap, "SELECT count(*) FROM t"), seen);
        exec(snap, "COMMIT");
        assert_int_equal(queryInt(snap, "SELECT count(*) FROM t"), seen + 5);
        exec(f->reader, "BEGIN IMMEDIATE");
        exec(f->reader, "COMMIT");
        if (i % 4 == 3) {
            exec(f->reader, ckpt[(i / 4) % 3]);
        }
    }
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 150);
    sqlite3_close(snap);
    assertIdentical(f);
}

static void testApplyErrors(void **state)
{
    struct fixture *f = *state;
    char err[TPDB_ERRMSG_SIZE];
    static uint8_t page[4096];
    struct tpdb_page pages[2] = {{2, page}, {1, page}};
    struct tpdb_txn txn = {4096, 2, 2, pages};

    /* Empty B and no page 1. */
    pages[0].pgno = 2;
    txn.n_pages = 1;
    assert_int_equal(tpdbVfsApply(f->applier, &txn, 0, 100, err), TPDB_INVALID);
    assert_non_null(strstr(err, "page 1"));
    /* Unsorted pages. */
    txn.n_pages = 2;
    assert_int_equal(tpdbVfsApply(f->applier, &txn, 0, 100, err), TPDB_INVALID);
    /* Page past the database size. */
    txn.db_pages = 1;
    pages[0].pgno = 1;
    assert_int_equal(tpdbVfsApply(f->applier, &txn, 0, 100, err), TPDB_INVALID);
    /* Bad page size. */
    txn.page_size = 1000;
    assert_int_equal(tpdbVfsApply(f->applier, &txn, 0, 100, err), TPDB_INVALID);
    assert_int_equal(tpdbVfsApply(NULL, &txn, 0, 100, err), TPDB_MISUSE);

    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 3, 100);
    assert_int_equal(f->apply_rc, TPDB_OK);

    /* Page size differing from B's WAL. */
    txn = (struct tpdb_txn){1024, 2, 1, pages};
    assert_int_equal(tpdbVfsApply(f->applier, &txn, 0, 100, err), TPDB_INVALID);
    assert_non_null(strstr(err, "page size 1024"));

    /* A connection that is not on the tpdb VFS. */
    sqlite3 *plain = openDb(f->path_b, "unix", 0);
    txn.page_size = 4096;
    assert_int_equal(tpdbVfsApply(plain, &txn, 0, 100, err), TPDB_INVALID);
    sqlite3_close(plain);

    /* Another connection holds the write lock: busy after the timeout. */
    exec(f->reader, "BEGIN IMMEDIATE");
    exec(f->a, "PRAGMA busy_timeout=0");
    assert_int_equal(
        sqlite3_exec(f->a, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL),
        SQLITE_IOERR);
    assert_int_equal(f->apply_rc, TPDB_BUSY);
    assert_int_equal(sqlite3_extended_errcode(f->a), TPDB_SQLITE_REPLFAIL);
    exec(f->reader, "ROLLBACK");
    exec(f->a, "INSERT INTO t(v) VALUES (1)");
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 4);

    /* A transaction open on the applier's connection. */
    exec(f->applier, "BEGIN");
    exec(f->applier, "SELECT 1 FROM t");
    assert_int_equal(tpdbVfsApply(f->applier, &txn, 0, 100, err), TPDB_MISUSE);
    exec(f->applier, "COMMIT");
    assertIdentical(f);
}

struct readerState {
    const char *path;
    int stop;     /* set by the test thread */
    int failures; /* errors or counts going backwards */
    long reads;
};

/* Reads B's row count in a loop: it must never fail or go backwards. */
static void *readerThread(void *arg)
{
    struct readerState *r = arg;
    sqlite3 *db = NULL;
    sqlite3_int64 last = 0;
    if (sqlite3_open_v2(r->path, &db, SQLITE_OPEN_READONLY, VFS_PLAIN) !=
        SQLITE_OK) {
        __atomic_fetch_add(&r->failures, 1, __ATOMIC_RELAXED);
    }
    sqlite3_busy_timeout(db, 5000);
    /* Pages of the main file come through the memory map. */
    sqlite3_exec(db, "PRAGMA mmap_size=268435456", NULL, NULL, NULL);
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "SELECT count(*), total(length(v)) FROM t",
                               -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
            __atomic_fetch_add(&r->failures, 1, __ATOMIC_RELAXED);
        } else {
            sqlite3_int64 n = sqlite3_column_int64(st, 0);
            if (n < last || sqlite3_column_double(st, 1) != 400.0 * n) {
                __atomic_fetch_add(&r->failures, 1, __ATOMIC_RELAXED);
            }
            last = n;
            __atomic_fetch_add(&r->reads, 1, __ATOMIC_RELAXED);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return NULL;
}

/* Readers on other threads during applies never see an error, a torn
 * transaction or a state going backwards. */
static void testApplyConcurrentReaders(void **state)
{
    struct fixture *f = *state;
    struct readerState r = {f->path_b, 0, 0, 0};
    pthread_t threads[2];
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, readerThread, &r),
                         0);
    }
    for (int i = 0; i < 300; i++) {
        exec(f->a, "BEGIN");
        insertBlobs(f->a, 1 + i % 7, 400);
        exec(f->a, "COMMIT");
        assert_int_equal(f->apply_rc, TPDB_OK);
        if (i % 50 == 49) {
            exec(f->reader, "PRAGMA wal_checkpoint(PASSIVE)");
        }
    }
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
    }
    assert_int_equal(r.failures, 0);
    assert_true(r.reads > 0);
    assertIdentical(f);
}

/* A WAL-index whose header copies are broken is repaired by a read on the
 * applier's connection (SQLite rebuilds it from the WAL) and apply goes on. */
static void testApplyRepairsIndex(void **state)
{
    struct fixture *f = *state;
    char shm[160];
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 20, 500);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 20);
    snprintf(shm, sizeof shm, "%s-shm", f->path_b);
    FILE *fp = fopen(shm, "r+b");
    assert_non_null(fp);
    static const uint8_t junk[96] = {0xde, 0xad, 0xbe, 0xef};
    assert_int_equal(fwrite(junk, 1, sizeof junk, fp), sizeof junk);
    fclose(fp);
    insertBlobs(f->a, 5, 500);
    assert_int_equal(f->apply_rc, TPDB_OK);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 25);
    assertIdentical(f);
}

/* A writer process on B killed mid-transaction leaves frames past mxFrame
 * in the WAL and their entries in the hash table; apply overwrites the
 * frames and clears the stale entries. */
static void testApplyAfterKilledWriter(void **state)
{
    struct fixture *f = *state;
    char cmd[512];
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 20, 500);
    snprintf(cmd, sizeof cmd,
             "(printf '%%s\\n' 'PRAGMA cache_size=10;' 'BEGIN;' "
             "'WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
             "FROM c WHERE i < 300) INSERT INTO t(v) SELECT randomblob(3000) "
             "FROM c;' '.shell kill -9 $PPID' | /usr/bin/sqlite3 '%s' "
             ">/dev/null 2>&1) 2>/dev/null",
             f->path_b);
    assert_int_not_equal(system(cmd), 0);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 20);
    for (int i = 0; i < 10; i++) {
        insertBlobs(f->a, 3, 200);
        assert_int_equal(f->apply_rc, TPDB_OK);
    }
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 50);
    assertRecovers(f);
    assertIdentical(f);
}

/* A failing write fails the apply with context and publishes nothing; the
 * next apply succeeds over the partly written frames. */
static void testApplyWriteError(void **state)
{
    struct fixture *f = *state;
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 20, 500);
    f->fail_writes = 1;
    assert_int_equal(
        sqlite3_exec(f->a, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL),
        SQLITE_FULL);
    f->fail_writes = 0;
    assert_int_equal(f->apply_rc, TPDB_FULL);
    assert_non_null(strstr(f->apply_err, "apply: write frames"));
    /* A hook's TPDB_FULL is a definite failure: SQLite's own code. */
    assert_int_equal(sqlite3_extended_errcode(f->a), SQLITE_FULL);
    assert_non_null(strstr(tpdbVfsLastError(), "write frames"));
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 20);
    insertBlobs(f->a, 5, 500);
    assert_int_equal(f->apply_rc, TPDB_OK);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 25);
    assertRecovers(f);
    assertIdentical(f);
}

/* Out of memory fails the apply cleanly; the next one succeeds. */
static void testApplyOom(void **state)
{
    struct fixture *f = *state;
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 20, 500);
    /* Capture's allocations come first, then apply's: fail each in turn. */
    int apply_oom = 0;
    for (long n = 0; n < 8; n++) {
        tpdbAllocFailAfter(n);
        int rc =
            sqlite3_exec(f->a, "INSERT INTO t(v) VALUES (1)", NULL, NULL, NULL);
        tpdbAllocFailAfter(-1);
        if (rc == SQLITE_OK) {
            assert_int_equal(f->apply_rc, TPDB_OK);
            break;
        }
        assert_int_equal(rc, SQLITE_IOERR);
        assert_int_equal(sqlite3_extended_errcode(f->a), TPDB_SQLITE_REPLFAIL);
        assert_true(f->apply_rc == TPDB_NOMEM || f->apply_rc == TPDB_OK);
        apply_oom += f->apply_rc == TPDB_NOMEM;
        f->apply_rc = TPDB_OK;
    }
    assert_true(apply_oom > 0);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"),
                     queryInt(f->a, "SELECT count(*) FROM t"));
    exec(f->a, "INSERT INTO t(v) VALUES (2)");
    assertIdentical(f);
}

/* Reads pages 1..n of a database file into a transaction. */
static struct tpdb_txn fileTxn(const char *path,
                               uint32_t n,
                               uint32_t db_pages,
                               uint8_t **buf)
{
    long len;
    struct tpdb_txn txn = {4096, db_pages, n, NULL};
    *buf = (uint8_t *)readFile(path, &len);
    assert_true(len >= (long)n * 4096);
    txn.pages = calloc(n, sizeof *txn.pages);
    for (uint32_t i = 0; i < n; i++) {
        txn.pages[i] = (struct tpdb_page){i + 1, *buf + (size_t)i * 4096};
    }
    return txn;
}

static double applyLoop(struct fixture *f, const struct tpdb_txn *txn, int n)
{
    char err[TPDB_ERRMSG_SIZE];
    uint64_t t0 = tpdbNowNs();
    for (int i = 0; i < n; i++) {
        int rc = tpdbVfsApply(f->applier, txn, 0, 1000, err);
        if (rc != TPDB_OK) {
            fail_msg("apply %d: %s", i, err);
        }
    }
    return (double)(tpdbNowNs() - t0) / 1000.0 / n;
}

/* Apply cost of a 4-page transaction with an empty WAL and with ~100k
 * frames in it. Prints the timings; asserts only correctness. */
static void testApplyCost(void **state)
{
    struct fixture *f = *state;
    uint8_t *buf;
    exec(f->a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertBlobs(f->a, 10, 1000);
    exec(f->a, "PRAGMA wal_checkpoint(TRUNCATE)");
    uint32_t db_pages = (uint32_t)queryInt(f->a, "PRAGMA page_count");
    assert_true(db_pages >= 4);
    exec(f->reader, "PRAGMA wal_checkpoint(TRUNCATE)");
    /* Pages 1-4 of A's current state: re-applying them keeps B valid. */
    struct tpdb_txn txn = fileTxn(f->path_a, 4, db_pages, &buf);
    double empty = applyLoop(f, &txn, 1000);
    applyLoop(f, &txn, 24000);
    double full = applyLoop(f, &txn, 1000);
    /* Frames in B's WAL, without checkpointing it. */
    char wal[160];
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", f->path_b);
    assert_int_equal(stat(wal, &st), 0);
    long frames = (long)((st.st_size - 32) / (4096 + 24));
    assert_true(frames >= 100000);
    printf(
        "apply of a 4-page transaction: %.1f us with an empty WAL, "
        "%.1f us with %ld frames in it\n",
        empty, full, frames);
    assert_int_equal(queryInt(f->reader, "SELECT count(*) FROM t"), 10);
    free(txn.pages);
    free(buf);
    assertIdentical(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testApplyBasic, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyOnWalDb, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyPageSizes, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyMixed, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyInterleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyRestartTruncates, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testWalSyncFilter, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyConcurrentReaders, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testApplyErrors, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyRepairsIndex, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyAfterKilledWriter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testApplyWriteError, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyOom, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyCost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
