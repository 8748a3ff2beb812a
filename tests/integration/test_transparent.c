/*
 * Integration test: ordinary SQLite code on the real library (libtpdbraft,
 * its node and Raft, the single-node default cluster of a fresh directory)
 * behaves as on "unix". One case per defect SQLite's own test suite found
 * (tests/sqlite-suite): an existing database opened with shared cache on
 * (adoption used to open a nested connection inside xOpen and deadlock),
 * its WAL content and its size in several parts; the process's POSIX locks
 * surviving another connection's open; read-only opens; a damaged file;
 * SQLITE_BUSY; a database deleted and recreated while the node runs; writes
 * outside WAL mode (a VFS layered over tpdb, an ATTACHed database) refused;
 * SQLite's PRNG stream left alone by a node starting; the first entry of a
 * new database applied without reading its file. Last, the C call
 * tpdb_leader() gives what SELECT tpdb_leader() gives, truncated to a short
 * buffer, and SQLITE_NOTFOUND for a plain database of a directory no node
 * serves.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "base/base.h"
#include "ext/tpdb.h"
#include "tests/integration/harness.h"

/* A deadlock ends the test process instead of hanging it. */
#define CASE_SECONDS 120

struct fixture {
    char dir[HARNESS_PATH_MAX];
    char db[HARNESS_PATH_MAX + 32];
};

static char errmsg[TPDB_ERRMSG_SIZE];

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(harnessTmpDir(f->dir, sizeof f->dir, errmsg), TPDB_OK);
    snprintf(f->db, sizeof f->db, "%s/app.db", f->dir);
    assert_int_equal(tpdb_register(), SQLITE_OK);
    alarm(CASE_SECONDS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    alarm(0);
    sqlite3_enable_shared_cache(0);
    tpdb_shutdown();
    harnessRmTree(f->dir, errmsg);
    free(f);
    return 0;
}

static sqlite3 *openVfs(const char *path, int flags, const char *vfs)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, vfs);
    if (rc != SQLITE_OK) {
        fail_msg("open %s on %s: %s (%s)", path, vfs,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), tpdb_errmsg());
    }
    return db;
}

static sqlite3 *openTpdb(const char *path)
{
    return openVfs(path,
                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                   "tpdb");
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fail_msg("%s: %s", sql, err ? err : "?");
    }
}

static sqlite3_int64 queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    sqlite3_int64 v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    } else {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return v;
}

/* own_entries of the node's status: entries this node proposed. */
static long ownEntries(sqlite3 *db)
{
    char *json = NULL;
    assert_int_equal(tpdb_status(db, &json), SQLITE_OK);
    const char *p = strstr(json, "\"own_entries\":");
    assert_non_null(p);
    long v = strtol(p + strlen("\"own_entries\":"), NULL, 10);
    sqlite3_free(json);
    return v;
}

/* Fills t(x) with n rows of 1000 bytes through db. */
static void fill(sqlite3 *db, int n)
{
    char sql[256];
    exec(db, "CREATE TABLE IF NOT EXISTS t(x)");
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
             "WHERE i<%d) INSERT INTO t SELECT randomblob(1000) FROM c",
             n);
    exec(db, sql);
}

/* A plain WAL database of 4,000 rows (about 4,100 pages of 1 KiB), most of
 * it only in the WAL: the "unix" connection that wrote it stays open, so
 * nothing checkpoints it. Returns that connection. */
static sqlite3 *plainDatabase(const char *path)
{
    sqlite3 *u =
        openVfs(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix");
    exec(u, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL");
    sqlite3_wal_autocheckpoint(u, 0);
    fill(u, 1000);
    exec(u, "PRAGMA wal_checkpoint(TRUNCATE)");
    fill(u, 3000);
    return u;
}

/* An existing database opened through tpdb with shared cache on: the
 * import runs inside xOpen, under SQLite's static main mutex; it must not
 * deadlock, must carry what is only in the WAL, and goes out in parts of
 * at most 1024 pages. */
static void testSharedCacheAdopt(void **state)
{
    struct fixture *f = *state;
    sqlite3 *u = plainDatabase(f->db);
    struct stat st;
    assert_int_equal(stat(f->db, &st), 0);
    /* Most of it is only in the WAL. */
    assert_true(st.st_size / 1024 * 2 < queryInt(u, "PRAGMA page_count"));

    assert_int_equal(sqlite3_enable_shared_cache(1), SQLITE_OK);
    sqlite3 *a = openTpdb(f->db);
    sqlite3 *b = openTpdb(f->db); /* shares a's cache */
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 4000);
    assert_int_equal(queryInt(b, "SELECT count(*) FROM t"), 4000);
    sqlite3_int64 pages = queryInt(a, "PRAGMA page_count");
    assert_true(pages > 4000);
    /* One entry per part of 1024 pages: a large transaction. */
    assert_int_equal(ownEntries(a), (pages + 1023) / 1024);
    exec(b, "INSERT INTO t VALUES (1)");
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 4001);
    assert_int_equal(queryInt(a,
                              "SELECT count(*) FROM pragma_integrity_check "
                              "WHERE integrity_check != 'ok'"),
                     0);
    sqlite3_close(b);
    sqlite3_close(a);
    sqlite3_close(u);
}

/* Whether another process could take a write lock on the byte range where
 * SQLite's connections hold their SHARED lock of the database file, that
 * is, whether this process holds no lock there. Asked from a child, since
 * a process never conflicts with its own locks. */
static int sharedLockHeld(const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_RDONLY);
        struct flock fl = {.l_type = F_WRLCK,
                           .l_whence = SEEK_SET,
                           .l_start = 0x40000000 + 2,
                           .l_len = 510};
        if (fd < 0 || fcntl(fd, F_GETLK, &fl) != 0) {
            _exit(2);
        }
        _exit(fl.l_type == F_UNLCK ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 2);
    return WEXITSTATUS(status) == 1;
}

/* Status counter `key` of the node serving db. */
static long statusCounter(sqlite3 *db, const char *key)
{
    char *json = NULL;
    char pat[64];
    assert_int_equal(tpdb_status(db, &json), SQLITE_OK);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    assert_non_null(p);
    long v = strtol(p + strlen(pat), NULL, 10);
    sqlite3_free(json);
    return v;
}

/* A connection's locks on its database file survive what the node does
 * meanwhile: other connections' opens of a file it does not know yet, and
 * snapshots (the node used to open and close database files with its own
 * descriptors, and POSIX drops every lock of a process on a file when any
 * of its descriptors closes); a second connection commits while the first
 * holds a read transaction. */
static void testLocksSurvive(void **state)
{
    struct fixture *f = *state;
    char uri[HARNESS_PATH_MAX + 96];
    snprintf(uri, sizeof uri,
             "file:%s?snapshot_threshold=8&snapshot_trailing=4", f->db);
    sqlite3 *a = openTpdb(uri);
    /* A file the cluster does not know yet, held by a reader. */
    exec(a, "BEGIN; SELECT count(*) FROM sqlite_schema");
    assert_true(sharedLockHeld(f->db));
    sqlite3 *b = openTpdb(f->db);
    assert_true(sharedLockHeld(f->db));
    exec(a, "COMMIT");

    fill(b, 50);
    exec(a, "BEGIN; SELECT count(*) FROM t");
    for (int i = 0; i < 40; i++) {
        exec(b, "INSERT INTO t VALUES (1)");
    }
    uint64_t deadline = tpdbNowMs() + 60000;
    while (statusCounter(b, "snapshots") < 2 && tpdbNowMs() < deadline) {
        exec(b, "INSERT INTO t VALUES (1)");
    }
    assert_true(statusCounter(b, "snapshots") >= 2);
    assert_true(sharedLockHeld(f->db));
    sqlite3 *c = openTpdb(f->db);
    sqlite3_close(c);
    assert_true(sharedLockHeld(f->db));
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 50);
    exec(a, "COMMIT");
    assert_true(queryInt(a, "SELECT count(*) FROM t") >= 90);
    sqlite3_close(b);
    sqlite3_close(a);
}

/* Read-only connections read, refuse writes as SQLite does, and start no
 * node where none runs. */
static void testReadOnlyOpens(void **state)
{
    struct fixture *f = *state;
    char uri[HARNESS_PATH_MAX + 64];
    char meta[HARNESS_PATH_MAX + 32];
    sqlite3 *w = openTpdb(f->db);
    fill(w, 20);
    sqlite3_close(w);
    tpdb_shutdown();

    const char *params[] = {"mode=ro", "immutable=1"};
    for (int i = 0; i < 2; i++) {
        snprintf(uri, sizeof uri, "file:%s?%s", f->db, params[i]);
        sqlite3 *r =
            openVfs(uri, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, "tpdb");
        assert_int_equal(queryInt(r, "SELECT count(*) FROM t"), 20);
        assert_int_equal(
            sqlite3_exec(r, "INSERT INTO t VALUES (1)", NULL, NULL, NULL),
            SQLITE_READONLY);
        sqlite3_close(r);
    }
    sqlite3 *r = openVfs(f->db, SQLITE_OPEN_READONLY, "tpdb");
    assert_int_equal(queryInt(r, "SELECT count(*) FROM t"), 20);
    sqlite3_close(r);

    /* A directory where no node ran stays untouched. */
    char dir2[HARNESS_PATH_MAX + 16];
    char path2[HARNESS_PATH_MAX + 32];
    snprintf(dir2, sizeof dir2, "%s/ro", f->dir);
    assert_int_equal(mkdir(dir2, 0755), 0);
    snprintf(path2, sizeof path2, "%s/app.db", dir2);
    sqlite3 *u =
        openVfs(path2, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix");
    fill(u, 3);
    sqlite3_close(u);
    snprintf(uri, sizeof uri, "file:%s?mode=ro", path2);
    r = openVfs(uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "tpdb");
    assert_int_equal(queryInt(r, "SELECT count(*) FROM t"), 3);
    sqlite3_close(r);
    snprintf(meta, sizeof meta, "%s/.tpdb", dir2);
    struct stat st;
    assert_int_not_equal(stat(meta, &st), 0);
}

/* A file that is not a database opens, reads fail with SQLite's own
 * "file is not a database", writes fail with a reason; no crash. */
static void testDamagedFile(void **state)
{
    struct fixture *f = *state;
    FILE *out = fopen(f->db, "wb");
    assert_non_null(out);
    for (int i = 0; i < 8192; i++) {
        fputc((i * 7919) & 0xff, out);
    }
    fclose(out);
    sqlite3 *db = openTpdb(f->db);
    assert_int_equal(
        sqlite3_exec(db, "SELECT * FROM sqlite_schema", NULL, NULL, NULL),
        SQLITE_NOTADB);
    assert_int_not_equal(
        sqlite3_exec(db, "CREATE TABLE x(a)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* A second writer gets SQLITE_BUSY ("database is locked") while the first
 * holds the write lock, exactly as on unix. */
static void testBusy(void **state)
{
    struct fixture *f = *state;
    sqlite3 *a = openTpdb(f->db);
    sqlite3 *b = openTpdb(f->db);
    fill(a, 5);
    exec(a, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
    assert_int_equal(
        sqlite3_exec(b, "INSERT INTO t VALUES (2)", NULL, NULL, NULL),
        SQLITE_BUSY);
    assert_string_equal(sqlite3_errmsg(b), "database is locked");
    assert_int_equal(sqlite3_exec(b, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_BUSY);
    exec(a, "COMMIT");
    exec(b, "INSERT INTO t VALUES (2)");
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 7);
    sqlite3_close(b);
    sqlite3_close(a);
}

static void removeDb(const char *path)
{
    char p[HARNESS_PATH_MAX + 40];
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

/* A database deleted and recreated while the node runs: the node's own
 * connections (its checkpointer) follow the new file, and a commit while
 * another connection reads succeeds with every row there. A replacement
 * holding data is imported again. */
static void testDeleteRecreate(void **state)
{
    struct fixture *f = *state;
    sqlite3 *a = openTpdb(f->db);
    /* Enough frames that the node checkpoints (and holds the file). */
    for (int i = 0; i < 3; i++) {
        fill(a, 500);
    }
    sqlite3_close(a);
    removeDb(f->db);

    a = openTpdb(f->db);
    exec(a, "CREATE TABLE t(x)");
    for (int i = 0; i < 3; i++) {
        fill(a, 500);
    }
    sqlite3 *b = openTpdb(f->db);
    exec(a, "BEGIN; SELECT count(*) FROM t");
    exec(b, "INSERT INTO t VALUES (7); INSERT INTO t VALUES (8)");
    exec(a, "COMMIT");
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 1502);
    assert_int_equal(queryInt(b, "SELECT count(*) FROM t WHERE x IN (7,8)"), 2);
    sqlite3_close(b);
    sqlite3_close(a);

    /* Replaced by a file with other data: imported again, in parts. */
    char other[HARNESS_PATH_MAX + 32];
    snprintf(other, sizeof other, "%s/other.db", f->dir);
    sqlite3 *keep = openTpdb(other); /* keeps the node's status at hand */
    removeDb(f->db);
    sqlite3 *u = plainDatabase(f->db);
    sqlite3_close(u);
    long before = ownEntries(keep);
    a = openTpdb(f->db);
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 4000);
    sqlite3_int64 pages = queryInt(a, "PRAGMA page_count");
    assert_int_equal(ownEntries(keep), before + (pages + 1023) / 1024);
    exec(a, "INSERT INTO t VALUES (9)");
    sqlite3_close(a);
    sqlite3_close(keep);
}

/* The text of SELECT tpdb_leader() on db into buf; "" for NULL. */
static void leaderBySql(sqlite3 *db, char *buf, size_t size)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT tpdb_leader()", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(buf, size, "%s", t != NULL ? (const char *)t : "");
    sqlite3_finalize(st);
}

static void testLeaderCall(void **state)
{
    struct fixture *f = *state;
    char want[256], got[256], small[4], other[HARNESS_PATH_MAX + 16];
    sqlite3 *a = openTpdb(f->db);
    fill(a, 1); /* a write: the single node leads */
    leaderBySql(a, want, sizeof want);
    assert_non_null(strchr(want, '@'));
    assert_int_equal(tpdb_leader(a, got, sizeof got), SQLITE_OK);
    assert_string_equal(got, want);
    assert_int_equal(tpdb_leader(a, small, sizeof small), SQLITE_OK);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, want, sizeof small - 1);
    /* Another directory: a node serves every database of its own. */
    snprintf(other, sizeof other, "%s/plain", f->dir);
    assert_int_equal(mkdir(other, 0700), 0);
    snprintf(other, sizeof other, "%s/plain/p.db", f->dir);
    sqlite3 *u =
        openVfs(other, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix");
    got[0] = 'x';
    assert_int_equal(tpdb_leader(u, got, sizeof got), SQLITE_NOTFOUND);
    assert_string_equal(got, "");
    sqlite3_close(u);
    sqlite3_close(a);
}

/* The statement is refused as a write outside WAL mode, and the node
 * proposed nothing for it. */
static void assertNotWal(sqlite3 *db, sqlite3 *status, const char *sql)
{
    long before = ownEntries(status);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_READONLY) {
        fail_msg("%s: %d (%s), want the refusal of a write outside WAL", sql,
                 rc, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_extended_errcode(db), TPDB_ERR_NOTWAL);
    assert_non_null(strstr(tpdb_errmsg(), "journal_mode=WAL"));
    assert_int_equal(ownEntries(status), before);
}

/* A connection through a VFS layered over tpdb (an encryption or test VFS
 * would pass through to it as this one does) is not switched to WAL by the
 * extension, and an ATTACHed database starts in rollback mode: their
 * rollback-journal writes would reach the file and never the cluster (rows
 * lost on every other node, and SQLite's journal2.test lost rows on this
 * one). They are refused; PRAGMA journal_mode=WAL makes them replicated. */
static void testNotWalRefused(void **state)
{
    struct fixture *f = *state;
    static sqlite3_vfs layered;
    layered = *sqlite3_vfs_find("tpdb");
    layered.zName = "tpdb-layered-test";
    assert_int_equal(sqlite3_vfs_register(&layered, 0), SQLITE_OK);
    char other[HARNESS_PATH_MAX + 32];
    snprintf(other, sizeof other, "%s/other.db", f->dir);
    sqlite3 *keep = openTpdb(other); /* the node's status at hand */

    sqlite3 *l = openVfs(f->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                         layered.zName);
    assertNotWal(l, keep, "CREATE TABLE t(x)");
    long before = ownEntries(keep);
    exec(l, "PRAGMA journal_mode=WAL");
    exec(l, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    assert_int_equal(ownEntries(keep), before + 2);
    sqlite3_close(l);

    sqlite3 *a = openTpdb(f->db);
    assert_int_equal(queryInt(a, "SELECT count(*) FROM t"), 1);
    char sql[HARNESS_PATH_MAX + 64];
    snprintf(sql, sizeof sql, "ATTACH '%s/aux.db' AS aux", f->dir);
    exec(a, sql);
    assertNotWal(a, keep, "CREATE TABLE aux.u(y)");
    assertNotWal(a, keep, "VACUUM aux");
    before = ownEntries(keep);
    exec(a, "PRAGMA aux.journal_mode=WAL");
    exec(a, "CREATE TABLE aux.u(y); INSERT INTO aux.u VALUES (2)");
    assert_int_equal(ownEntries(keep), before + 2);
    sqlite3_close(a);
    sqlite3_close(keep);
    sqlite3_vfs_unregister(&layered);
}

/* Starting a node leaves SQLite's PRNG alone: the random() and
 * randomblob() stream of the application's connections is the one it
 * would be without tpdb (SQLite's trans.test builds its data from it). */
static void testPrngUntouched(void **state)
{
    struct fixture *f = *state;
    unsigned char want[16], got[16];
    char plain[HARNESS_PATH_MAX + 32];
    snprintf(plain, sizeof plain, "%s/plain.db", f->dir);
    /* As on "unix": a new database switched to WAL and written once. */
    sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, 4242, NULL);
    sqlite3 *u =
        openVfs(plain, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix");
    exec(u, "PRAGMA journal_mode=WAL; CREATE TABLE t(x)");
    sqlite3_randomness(sizeof want, want);
    sqlite3_close(u);
    sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, 4242, NULL);
    sqlite3 *db = openTpdb(f->db); /* starts the directory's node */
    exec(db, "CREATE TABLE t(x)");
    sqlite3_randomness(sizeof got, got);
    assert_memory_equal(got, want, sizeof want);
    sqlite3_close(db);
}

/* An open(2) for the unix VFS that counts the opens of files named
 * peekName by any thread but the test's own. */
static sqlite3_syscall_ptr realOpen;
static pthread_t testThread;
static _Atomic int foreignOpens;
static const char *peekName = "/fresh.db";

static int countingOpen(const char *path, int flags, int mode)
{
    size_t n = strlen(path), m = strlen(peekName);
    if (!pthread_equal(pthread_self(), testThread) && n >= m &&
        strcmp(path + n - m, peekName) == 0) {
        foreignOpens++;
    }
    int (*real)(const char *, int, int) =
        (int (*)(const char *, int, int))realOpen;
    return real(path, flags, mode);
}

/* The node's loop thread applies the first entry of a database new to it
 * without opening its file through SQLite's unix VFS (which allocates from
 * SQLite's heap, where SQLite's malloc fault injection then hit the node
 * instead of the application: backup_malloc.test): a SQLite transaction's
 * entry says what the database is. */
static void testFirstEntryNoPeek(void **state)
{
    struct fixture *f = *state;
    char fresh[HARNESS_PATH_MAX + 32];
    sqlite3 *db = openTpdb(f->db); /* starts the directory's node */
    exec(db, "CREATE TABLE t(x)");
    snprintf(fresh, sizeof fresh, "%s/fresh.db", f->dir);
    sqlite3 *d = openTpdb(fresh);
    sqlite3_vfs *unixVfs = sqlite3_vfs_find("unix");
    realOpen = unixVfs->xGetSystemCall(unixVfs, "open");
    testThread = pthread_self();
    foreignOpens = 0;
    assert_int_equal(unixVfs->xSetSystemCall(unixVfs, "open",
                                             (sqlite3_syscall_ptr)countingOpen),
                     SQLITE_OK);
    exec(d, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    assert_int_equal(unixVfs->xSetSystemCall(unixVfs, "open", realOpen),
                     SQLITE_OK);
    assert_int_equal(foreignOpens, 0);
    assert_int_equal(queryInt(d, "SELECT count(*) FROM t"), 1);
    sqlite3_close(d);
    sqlite3_close(db);
}

/* A pwrite64 for the unix VFS that, while armed, fails the first write
 * of non-zero bytes to a -wal file: the commit frame written once the
 * quorum holds the transaction (the VFS writes zeros in its place before
 * replicating it). */
static sqlite3_syscall_ptr realPwrite;
static _Atomic int failFrameArmed;

static int isWalFd(int fd)
{
    char link[64];
    char path[HARNESS_PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    return n > 4 && memcmp(path + n - 4, "-wal", 4) == 0;
}

static ssize_t failingFramePwrite(int fd, const void *buf, size_t n, off_t off)
{
    const unsigned char *p = buf;
    size_t zeros = 0;
    while (zeros < n && p[zeros] == 0) {
        zeros++;
    }
    if (failFrameArmed && zeros < n && isWalFd(fd)) {
        failFrameArmed = 0;
        errno = EIO;
        return -1;
    }
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t(*)(int, const void *, size_t, off_t))realPwrite;
    return real(fd, buf, n, off);
}

static int hasRedoRow(void *arg)
{
    return queryInt(arg, "SELECT count(*) FROM t WHERE x = 'redo'") == 1;
}

/* A single node (no peer to fetch from) whose own committed transaction
 * failed to reach its WAL writes it again from the log entry: the row
 * appears, later writes go through once it is written, and the file is
 * sound. (It used to wait for a fetch from a peer it does not have, and
 * every later open and write of the database failed.) */
static void testOwnWriteRedone(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = openTpdb(f->db);
    exec(db, "CREATE TABLE t(x)");
    exec(db, "INSERT INTO t VALUES('before')");
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
    realPwrite = unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
    assert_non_null(realPwrite);
    assert_int_equal(
        unix_vfs->xSetSystemCall(unix_vfs, "pwrite64",
                                 (sqlite3_syscall_ptr)failingFramePwrite),
        SQLITE_OK);
    failFrameArmed = 1;
    int rc = sqlite3_exec(db, "INSERT INTO t VALUES('redo')", NULL, NULL, NULL);
    int missed = failFrameArmed;
    unix_vfs->xSetSystemCall(unix_vfs, "pwrite64", realPwrite);
    assert_false(missed);
    assert_int_not_equal(rc, SQLITE_OK);
    if (harnessPollUntil(hasRedoRow, db, 20000, 10) != TPDB_OK) {
        fail_msg("the committed row never appeared: %s", tpdb_errmsg());
    }
    /* Written: the next write goes through at once. */
    exec(db, "INSERT INTO t VALUES('after')");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"), 3);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testSharedCacheAdopt, setup, teardown),
        cmocka_unit_test_setup_teardown(testLocksSurvive, setup, teardown),
        cmocka_unit_test_setup_teardown(testReadOnlyOpens, setup, teardown),
        cmocka_unit_test_setup_teardown(testDamagedFile, setup, teardown),
        cmocka_unit_test_setup_teardown(testBusy, setup, teardown),
        cmocka_unit_test_setup_teardown(testDeleteRecreate, setup, teardown),
        cmocka_unit_test_setup_teardown(testLeaderCall, setup, teardown),
        cmocka_unit_test_setup_teardown(testNotWalRefused, setup, teardown),
        cmocka_unit_test_setup_teardown(testPrngUntouched, setup, teardown),
        cmocka_unit_test_setup_teardown(testOwnWriteRedone, setup, teardown),
        cmocka_unit_test_setup_teardown(testFirstEntryNoPeek, setup, teardown),
    };
    /* TPDB_TEST_FILTER=testBusy runs one case (a glob pattern). */
    if (getenv("TPDB_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("TPDB_TEST_FILTER"));
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
