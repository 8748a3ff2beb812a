/*
 * Unit tests of vfs/filepeek.c: reads and fsyncs of a database file keep
 * the SQLite locks this process holds on it (a plain open()/close() drops
 * them all), as another process sees with F_GETLK.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "base/base.h"
#include "vfs/filepeek.h"

/* SQLite's shared-lock byte range (os_unix.c: SHARED_FIRST, SHARED_SIZE). */
#define SHARED_FIRST (0x40000000 + 2)
#define SHARED_SIZE 510

struct fixture {
    char dir[64];
    char path[128];
    sqlite3 *db;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tpdb-filepeek-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/app.db", f->dir);
    assert_int_equal(
        sqlite3_open_v2(f->path, &f->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix"),
        SQLITE_OK);
    assert_int_equal(sqlite3_exec(f->db,
                                  "PRAGMA journal_mode=WAL;"
                                  "CREATE TABLE t(x); INSERT INTO t VALUES(1);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];
    sqlite3_close(f->db);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Whether another process sees a read lock of this one on the database's
 * shared range (what a closing connection elsewhere tests before it takes
 * EXCLUSIVE and deletes the WAL). */
static int sharedLockSeen(const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_RDWR);
        struct flock l = {0};
        l.l_type = F_WRLCK;
        l.l_whence = SEEK_SET;
        l.l_start = SHARED_FIRST;
        l.l_len = SHARED_SIZE;
        int seen =
            fd >= 0 && fcntl(fd, F_GETLK, &l) == 0 && l.l_type != F_UNLCK;
        _exit(seen ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void testKeepsLocks(void **state)
{
    struct fixture *f = *state;
    char errmsg[512];
    char head[16];
    /* An open read transaction: the connection holds its SHARED lock. */
    assert_int_equal(
        sqlite3_exec(f->db, "BEGIN; SELECT * FROM t;", NULL, NULL, NULL),
        SQLITE_OK);
    assert_true(sharedLockSeen(f->path));
    assert_int_equal(tpdbPeekHead(f->path, head, sizeof head), 16);
    assert_memory_equal(head, "SQLite format 3", 16);
    struct tpdb_peek *p = NULL;
    assert_int_equal(tpdbPeekOpen(f->path, &p, errmsg), TPDB_OK);
    assert_int_equal(tpdbPeekSync(p, errmsg), TPDB_OK);
    tpdbPeekClose(p);
    assert_true(sharedLockSeen(f->path));

    /* The failure these functions avoid. */
    int fd = open(f->path, O_RDONLY);
    assert_true(fd >= 0);
    close(fd);
    assert_false(sharedLockSeen(f->path));
    sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL);
}

static void testMissingAndShort(void **state)
{
    struct fixture *f = *state;
    char errmsg[512];
    char buf[64];
    char path[160];
    snprintf(path, sizeof path, "%s/none.db", f->dir);
    struct tpdb_peek *p = NULL;
    assert_int_equal(tpdbPeekHead(path, buf, sizeof buf), 0);
    assert_int_equal(tpdbPeekOpen(path, &p, errmsg), TPDB_NOTFOUND);
    assert_null(p);
    assert_int_equal(tpdbPeekHead(f->dir, buf, sizeof buf), 0);
    snprintf(path, sizeof path, "%s/short", f->dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("abc", fp);
    fclose(fp);
    assert_int_equal(tpdbPeekHead(path, buf, sizeof buf), 3);
    assert_memory_equal(buf, "abc", 3);
    int64_t size = 0;
    size_t got = 0;
    assert_int_equal(tpdbPeekOpen(path, &p, errmsg), TPDB_OK);
    assert_int_equal(tpdbPeekSize(p, &size, errmsg), TPDB_OK);
    assert_int_equal(size, 3);
    memset(buf, 'x', sizeof buf);
    assert_int_equal(tpdbPeekRead(p, buf, 8, 1, &got, errmsg), TPDB_OK);
    assert_int_equal(got, 2);
    assert_memory_equal(buf, "bc\0\0\0\0\0\0", 8);
    tpdbPeekClose(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testKeepsLocks, setup, teardown),
        cmocka_unit_test_setup_teardown(testMissingAndShort, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
