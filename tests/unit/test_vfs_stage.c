/* Unit tests for the snapshot reader (vfs/reader.c) and the staged apply
 * (tpdbVfsStage* in vfs/apply.c): a database read page by page from a
 * pinned state while a writer goes on and checkpoints, staged into another
 * database that a reader holds open, must end byte-identical to the pinned
 * state; nothing staged is visible before the commit; an abort leaves the
 * target as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vfs/vfs.h"

#define VFS_PLAIN "tpdb-stage-plain"
#define CHUNK 37 /* pages per read: not a divisor of anything in particular */

struct fixture {
    char dir[64];
    char path_a[128];
    char path_b[128];
    sqlite3 *a;      /* writer on A */
    sqlite3 *a_pin;  /* internal connection on A for the reader */
    sqlite3 *b;      /* internal connection on B for the stage */
    sqlite3 *b_read; /* an application reader on B */
    int pinned_calls;
};

static sqlite3 *openDb(const char *path, int internal)
{
    char uri[256];
    sqlite3 *db = NULL;
    snprintf(uri, sizeof uri, "file:%s%s", path,
             internal ? "?" TPDB_URI_INTERNAL "=1" : "");
    int rc = sqlite3_open_v2(
        uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
        VFS_PLAIN);
    assert_int_equal(rc, SQLITE_OK);
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
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void insertRows(sqlite3 *db, int n, int size)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
             "WHERE i < %d) INSERT INTO t(v) SELECT randomblob(%d) FROM c",
             n, size);
    exec(db, sql);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(tpdbVfsRegister(VFS_PLAIN, NULL, 0), SQLITE_OK);
    snprintf(f->dir, sizeof f->dir, "/tmp/tpdb-stage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path_a, sizeof f->path_a, "%s/a.db", f->dir);
    snprintf(f->path_b, sizeof f->path_b, "%s/b.db", f->dir);
    f->a = openDb(f->path_a, 0);
    exec(f->a,
         "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
         "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    insertRows(f->a, 3000, 300); /* about 250 pages, all in the WAL */
    exec(f->a, "PRAGMA wal_checkpoint(PASSIVE)");
    insertRows(f->a, 500, 300); /* more in the WAL over a checkpointed base */
    f->a_pin = openDb(f->path_a, 1);
    /* B holds a different database with a reader on it. Its schema cookie
     * (2) differs from A's (1), as it would for an older state of the same
     * history with another schema: readers check only the cookie. */
    f->b = openDb(f->path_b, 1);
    exec(f->b,
         "PRAGMA journal_mode=WAL; CREATE TABLE old(x);"
         "CREATE TABLE old2(y); INSERT INTO old VALUES(1),(2),(3)");
    f->b_read = openDb(f->path_b, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    sqlite3_close(f->a);
    sqlite3_close(f->a_pin);
    sqlite3_close(f->b);
    sqlite3_close(f->b_read);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static int pinnedCb(void *arg, char *errmsg)
{
    struct fixture *f = arg;
    (void)errmsg;
    f->pinned_calls++;
    return TPDB_OK;
}

/* The pinned state's image, read in chunks. Caller frees. */
static uint8_t *readAll(struct tpdb_vfs_reader *r, uint32_t *pages)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    uint32_t ps = tpdbVfsReaderPageSize(r);
    *pages = tpdbVfsReaderPages(r);
    uint8_t *img = malloc((size_t)*pages * ps);
    assert_non_null(img);
    for (uint32_t p = 1; p <= *pages; p += CHUNK) {
        uint32_t n = *pages - p + 1 < CHUNK ? *pages - p + 1 : CHUNK;
        assert_int_equal(
            tpdbVfsReaderRead(r, p, n, img + (size_t)(p - 1) * ps, errmsg),
            TPDB_OK);
    }
    return img;
}

/* Stages the image into B in chunks, in reverse chunk order (the order of
 * the frames must not matter). */
static struct tpdb_vfs_stage *stageImage(struct fixture *f,
                                         const uint8_t *img,
                                         uint32_t pages,
                                         uint32_t ps)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_vfs_stage *st = NULL;
    struct tpdb_page batch[CHUNK];
    assert_int_equal(tpdbVfsStageBegin(f->b, ps, 1000, &st, errmsg), TPDB_OK);
    uint32_t last = ((pages - 1) / CHUNK) * CHUNK + 1;
    for (uint32_t p = last;; p -= CHUNK) {
        uint32_t n = pages - p + 1 < CHUNK ? pages - p + 1 : CHUNK;
        for (uint32_t i = 0; i < n; i++) {
            batch[i].pgno = p + i;
            batch[i].data = img + (size_t)(p + i - 1) * ps;
        }
        assert_int_equal(tpdbVfsStageAppend(st, batch, n, errmsg), TPDB_OK);
        if (p == 1) {
            break;
        }
    }
    assert_int_equal(tpdbVfsStageFrames(st), pages);
    return st;
}

static uint8_t *fileBytes(const char *path, long *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)*len + 1);
    assert_int_equal(fread(buf, 1, (size_t)*len, fp), (size_t)*len);
    fclose(fp);
    return buf;
}

/* Pin, keep writing and checkpointing A, read, stage into B, commit: B is
 * the pinned state, byte for byte, and B's reader switched at the commit. */
static void testReadWhileWritingThenStage(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_vfs_reader *r = NULL;
    sqlite3_int64 rows = queryInt(f->a, "SELECT count(*) FROM t");
    assert_int_equal(tpdbVfsReaderOpen(f->a_pin, 1000, pinnedCb, f, &r, errmsg),
                     TPDB_OK);
    assert_int_equal(f->pinned_calls, 1);
    /* A moves on: rows change, pages are rewritten, checkpoints run (they
     * may not copy frames past the pin), and the WAL may not restart. */
    exec(f->a, "UPDATE t SET v = randomblob(300) WHERE id % 3 = 0");
    insertRows(f->a, 800, 300);
    exec(f->a, "PRAGMA wal_checkpoint(PASSIVE)");
    exec(f->a, "DELETE FROM t WHERE id % 5 = 0");
    exec(f->a, "PRAGMA wal_checkpoint(RESTART)");
    uint32_t pages = 0;
    uint32_t ps = tpdbVfsReaderPageSize(r);
    uint8_t *img = readAll(r, &pages);
    tpdbVfsReaderClose(r);
    assert_true(pages > 250);

    assert_int_equal(queryInt(f->b_read, "SELECT count(*) FROM old"), 3);
    struct tpdb_vfs_stage *st = stageImage(f, img, pages, ps);
    /* Staged, not committed: B's reader still sees the old database. */
    assert_int_equal(queryInt(f->b_read, "SELECT count(*) FROM old"), 3);
    assert_int_equal(tpdbVfsStageCommit(st, pages, 1, errmsg), TPDB_OK);
    assert_int_equal(queryInt(f->b_read, "SELECT count(*) FROM t"), rows);
    assert_int_equal(
        sqlite3_exec(f->b_read, "SELECT * FROM old", NULL, NULL, NULL),
        SQLITE_ERROR);
    assert_int_equal(queryInt(f->b_read,
                              "SELECT count(*) FROM "
                              "pragma_integrity_check "
                              "WHERE integrity_check != 'ok'"),
                     0);
    exec(f->b, "PRAGMA wal_checkpoint(TRUNCATE)");
    long len = 0;
    uint8_t *file = fileBytes(f->path_b, &len);
    assert_int_equal(len, (long)pages * ps);
    assert_memory_equal(file, img, (size_t)len);
    free(file);
    free(img);
}

/* An aborted stage is never seen and B keeps working. */
static void testAbort(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_vfs_reader *r = NULL;
    assert_int_equal(tpdbVfsReaderOpen(f->a_pin, 1000, NULL, NULL, &r, errmsg),
                     TPDB_OK);
    uint32_t pages = 0;
    uint32_t ps = tpdbVfsReaderPageSize(r);
    uint8_t *img = readAll(r, &pages);
    tpdbVfsReaderClose(r);
    struct tpdb_vfs_stage *st = stageImage(f, img, pages, ps);
    tpdbVfsStageAbort(st);
    assert_int_equal(queryInt(f->b_read, "SELECT count(*) FROM old"), 3);
    exec(f->b_read, "INSERT INTO old VALUES(4)");
    assert_int_equal(queryInt(f->b_read, "SELECT count(*) FROM old"), 4);
    /* A new connection after the abort (WAL recovery) sees the same. */
    sqlite3 *again = openDb(f->path_b, 0);
    assert_int_equal(queryInt(again, "SELECT count(*) FROM old"), 4);
    sqlite3_close(again);
    free(img);
}

/* Misuse and lock errors are reported, not crashed on. */
static void testErrors(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_vfs_stage *st = NULL;
    struct tpdb_vfs_reader *r = NULL;
    assert_int_equal(tpdbVfsStageBegin(f->b, 1000, 10, &st, errmsg),
                     TPDB_MISUSE);
    assert_int_equal(tpdbVfsStageBegin(f->b, 8192, 10, &st, errmsg),
                     TPDB_INVALID);
    assert_non_null(strstr(errmsg, "page size"));
    /* The write lock held by an application transaction on B. */
    exec(f->b_read, "BEGIN IMMEDIATE; INSERT INTO old VALUES(9)");
    assert_int_equal(tpdbVfsStageBegin(f->b, 4096, 20, &st, errmsg), TPDB_BUSY);
    exec(f->b_read, "COMMIT");
    assert_int_equal(tpdbVfsStageBegin(f->b, 4096, 20, &st, errmsg), TPDB_OK);
    assert_int_equal(tpdbVfsStageCommit(st, 1, 0, errmsg), TPDB_INVALID);
    assert_int_equal(tpdbVfsReaderOpen(f->a_pin, 1000, NULL, NULL, &r, errmsg),
                     TPDB_OK);
    uint8_t page[4096];
    assert_int_equal(tpdbVfsReaderRead(r, 0, 1, page, errmsg), TPDB_INVALID);
    assert_int_equal(
        tpdbVfsReaderRead(r, tpdbVfsReaderPages(r), 2, page, errmsg),
        TPDB_INVALID);
    tpdbVfsReaderClose(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testReadWhileWritingThenStage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testAbort, setup, teardown),
        cmocka_unit_test_setup_teardown(testErrors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
