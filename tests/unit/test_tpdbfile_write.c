/* Unit tests for the native TPDB page format writer (vfs/tpdbfile_write.c,
 * tpdbfile_tree.c, the commit path of tpdbfile_pager.c): round trips,
 * splits by bytes, overflow chains and the free list, statement and
 * transaction rollback, and crash consistency with a SIGKILLed writer. */
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

#include "vfs/tpdbfile/tpdbfile.h"

struct fx {
    char dir[64];
    char path[128];
    struct tpdb_file *f;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/tpdbfile-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/data.tpdb", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    char p[160];
    tpdb_file_close(fx->f);
    unlink(fx->path);
    snprintf(p, sizeof p, "%s-wal", fx->path);
    unlink(p);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static struct tpdb_file *openRw(struct fx *fx)
{
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *f = NULL;
    int rc = tpdb_file_open(fx->path, TPDB_FILE_CREATE, &f, err);
    if (rc != TPDB_OK) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, TPDB_OK);
    return f;
}

static void reopen(struct fx *fx)
{
    tpdb_file_close(fx->f);
    fx->f = openRw(fx);
}

static struct tpdb_value vInt(int64_t i)
{
    struct tpdb_value v = {.type = TPDB_VINT, .i = i};
    return v;
}

static struct tpdb_value vText(const char *s)
{
    struct tpdb_value v = {
        .type = TPDB_VTEXT, .base = (const uint8_t *)s, .len = strlen(s)};
    return v;
}

static struct tpdb_value vBlob(const void *p, size_t n)
{
    struct tpdb_value v = {.type = TPDB_VBLOB, .base = p, .len = n};
    return v;
}

static void mustOk(struct tpdb_file *f, int rc)
{
    if (rc != TPDB_OK) {
        print_error("rc %d: %s\n", rc, tpdb_file_errmsg(f));
    }
    assert_int_equal(rc, TPDB_OK);
}

/* users(id INTEGER PK, name TEXT NOT NULL, data BLOB, score REAL DEFAULT 1.5)
 */
static void makeUsers(struct tpdb_file *f)
{
    struct tpdb_column cols[4] = {
        {"id", "integer", 0, NULL},
        {"name", "text", 1, NULL},
        {"data", "blob", 0, NULL},
        {"score", "real", 0, "1.5"},
    };
    mustOk(f, tpdb_file_create_table(f, "users", cols, 4, 0));
}

static long countRows(struct tpdb_file *f, const char *table, int index)
{
    struct tpdb_cursor *c = NULL;
    long n = 0;
    if (index) {
        mustOk(f, tpdb_cursor_open_index(f, table, &c));
    } else {
        mustOk(f, tpdb_cursor_open_table(f, table, &c));
    }
    mustOk(f, tpdb_cursor_first(c));
    while (!tpdb_cursor_eof(c)) {
        n++;
        mustOk(f, tpdb_cursor_next(c));
    }
    tpdb_cursor_close(c);
    return n;
}

/* Fetches row `rowid` of users; returns 0 if absent. */
static int getRow(struct tpdb_file *f,
                  int64_t rowid,
                  const struct tpdb_value **vals)
{
    static struct tpdb_cursor *c;
    unsigned n, stored;
    tpdb_cursor_close(c);
    c = NULL;
    if (f == NULL) {
        return 0;
    }
    mustOk(f, tpdb_cursor_open_table(f, "users", &c));
    mustOk(f, tpdb_cursor_seek_rowid(c, TPDB_SEEK_EQ, rowid));
    if (tpdb_cursor_eof(c)) {
        return 0;
    }
    mustOk(f, tpdb_cursor_row(c, vals, &n, &stored));
    assert_int_equal(n, 4);
    return 1;
}

static void testRoundTrip(void **state)
{
    struct fx *fx = *state;
    const struct tpdb_value *v;
    int64_t rowid;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    struct tpdb_value row[4] = {vInt(7),
                                vText("ann"),
                                vBlob("\0\1\2", 3),
                                {.type = TPDB_VREAL, .r = -2.25}};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 4, &rowid));
    assert_int_equal(rowid, 7);
    struct tpdb_value row2[2] = {{.type = TPDB_VNULL}, vText("bob")};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", row2, 2, &rowid));
    assert_int_equal(rowid, 8); /* next_rowid moved past 7 */
    struct tpdb_value neg[2] = {vInt(-5), vText("neg")};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", neg, 2, &rowid));
    reopen(fx);
    const struct tpdb_table *t = tpdb_file_table_find(fx->f, "users");
    assert_non_null(t);
    assert_int_equal(t->next_rowid, 9);
    assert_int_equal(t->auto_pk, 1);
    assert_string_equal(t->cols[1].type, "TEXT");
    assert_true(getRow(fx->f, 8, &v));
    assert_int_equal(v[0].type, TPDB_VINT);
    assert_int_equal(v[0].i, 8);
    assert_int_equal(v[2].type, TPDB_VNULL);
    assert_int_equal(v[3].type, TPDB_VREAL); /* DEFAULT 1.5 stored */
    assert_true(v[3].r == 1.5);
    assert_true(getRow(fx->f, 7, &v));
    assert_int_equal(v[2].len, 3);
    assert_memory_equal(v[2].base, "\0\1\2", 3);
    assert_true(v[3].r == -2.25);
    /* File order: negative rowids after positive ones (B2). */
    struct tpdb_cursor *c = NULL;
    mustOk(fx->f, tpdb_cursor_open_table(fx->f, "users", &c));
    mustOk(fx->f, tpdb_cursor_last(c));
    mustOk(fx->f, tpdb_cursor_rowid(c, &rowid));
    assert_int_equal(rowid, -5);
    mustOk(fx->f, tpdb_cursor_prev(c));
    mustOk(fx->f, tpdb_cursor_rowid(c, &rowid));
    assert_int_equal(rowid, 8);
    tpdb_cursor_close(c);
    getRow(NULL, 0, &v);
    struct tpdb_file_info in;
    tpdb_file_get_info(fx->f, &in);
    assert_int_equal(in.version, 2);
    assert_int_equal(in.wal_size, 32);
}

static void expectUnique(struct tpdb_file *f, const char *index)
{
    const char *msg = tpdb_file_errmsg(f);
    if (strstr(msg, "UNIQUE") == NULL || strstr(msg, index) == NULL) {
        print_error("unexpected message: %s\n", msg);
        fail();
    }
}

static void testManyRowsAndIndexes(void **state)
{
    struct fx *fx = *state;
    char name[64];
    fx->f = openRw(fx);
    makeUsers(fx->f);
    const char *icols[1] = {"name"};
    mustOk(fx->f,
           tpdb_file_create_index(fx->f, "ux_name", "users", icols, 1, 1));
    mustOk(fx->f, tpdb_file_begin(fx->f));
    for (int i = 0; i < 3000; i++) {
        int id = (i * 7919) % 3000 + 1; /* shuffled */
        snprintf(name, sizeof name, "user-%05d-%s", id, "padpadpadpadpad");
        struct tpdb_value row[2] = {vInt(id), vText(name)};
        mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 2, NULL));
    }
    mustOk(fx->f, tpdb_file_commit(fx->f));
    reopen(fx);
    assert_int_equal(countRows(fx->f, "users", 0), 3000);
    assert_int_equal(countRows(fx->f, "ux_name", 1), 3000);
    /* Scan order is rowid order; index lookup by TEXT prefix works. */
    struct tpdb_cursor *c = NULL;
    int64_t prev = 0, rowid;
    mustOk(fx->f, tpdb_cursor_open_table(fx->f, "users", &c));
    mustOk(fx->f, tpdb_cursor_first(c));
    while (!tpdb_cursor_eof(c)) {
        mustOk(fx->f, tpdb_cursor_rowid(c, &rowid));
        assert_true(rowid == prev + 1);
        prev = rowid;
        mustOk(fx->f, tpdb_cursor_next(c));
    }
    tpdb_cursor_close(c);
    mustOk(fx->f, tpdb_cursor_open_index(fx->f, "ux_name", &c));
    snprintf(name, sizeof name, "user-%05d-%s", 1234, "padpadpadpadpad");
    struct tpdb_value k = vText(name);
    mustOk(fx->f, tpdb_cursor_seek_index(c, TPDB_SEEK_EQ, &k, 1));
    assert_false(tpdb_cursor_eof(c));
    mustOk(fx->f, tpdb_cursor_rowid(c, &rowid));
    assert_int_equal(rowid, 1234);
    mustOk(fx->f, tpdb_cursor_next(c));
    assert_true(tpdb_cursor_eof(c));
    tpdb_cursor_close(c);
    /* Delete every other row, update some, check indexes follow. */
    mustOk(fx->f, tpdb_file_begin(fx->f));
    for (int id = 2; id <= 3000; id += 2) {
        mustOk(fx->f, tpdb_file_delete(fx->f, "users", id));
    }
    mustOk(fx->f, tpdb_file_commit(fx->f));
    struct tpdb_value upd[2] = {vInt(1), vText("renamed")};
    mustOk(fx->f, tpdb_file_update(fx->f, "users", 1, upd, 2));
    reopen(fx);
    assert_int_equal(countRows(fx->f, "users", 0), 1500);
    assert_int_equal(countRows(fx->f, "ux_name", 1), 1500);
    assert_int_equal(tpdb_file_delete(fx->f, "users", 2), TPDB_NOTFOUND);
    struct tpdb_value dup[2] = {vInt(5000), vText("renamed")};
    assert_int_equal(tpdb_file_insert(fx->f, "users", dup, 2, NULL),
                     TPDB_INVALID);
    assert_int_equal(countRows(fx->f, "users", 0), 1500);
}

/* Defect B1: a small row then two ~2040-byte rows must not corrupt. */
static void testSplitByBytes(void **state)
{
    struct fx *fx = *state;
    static uint8_t big[4200];
    const struct tpdb_value *v;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    for (int sz = 2000; sz < 2100; sz += 3) {
        mustOk(fx->f, tpdb_file_begin(fx->f));
        struct tpdb_value small[2] = {vInt(1), vText("s")};
        mustOk(fx->f, tpdb_file_insert(fx->f, "users", small, 2, NULL));
        for (int i = 2; i < 6; i++) {
            memset(big, i, sizeof big);
            struct tpdb_value row[3] = {vInt(i), vText("b"), vBlob(big, sz)};
            mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 3, NULL));
        }
        for (int i = 2; i < 6; i++) {
            assert_true(getRow(fx->f, i, &v));
            assert_int_equal(v[2].len, sz);
            assert_int_equal(v[2].base[sz - 1], i);
        }
        mustOk(fx->f, tpdb_file_rollback(fx->f));
    }
    /* Cells of 3-4 KB need three-way splits. */
    for (int i = 1; i <= 40; i++) {
        memset(big, i, sizeof big);
        int sz = 3000 + (i * 37) % 1070;
        struct tpdb_value row[3] = {vInt(i * 2 % 41), vText("b"),
                                    vBlob(big, sz)};
        mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 3, NULL));
    }
    reopen(fx);
    assert_int_equal(countRows(fx->f, "users", 0), 40);
    getRow(NULL, 0, &v);
}

static void testOverflowAndFreeList(void **state)
{
    struct fx *fx = *state;
    size_t n = 100000;
    uint8_t *big = malloc(n);
    const struct tpdb_value *v;
    uint32_t *pages;
    size_t np;
    for (size_t i = 0; i < n; i++) {
        big[i] = (uint8_t)(i * 31);
    }
    fx->f = openRw(fx);
    makeUsers(fx->f);
    size_t sizes[] = {4060, 4064, 4065, 4070, 4088, 8176, 8177, 100000};
    for (int i = 0; i < 8; i++) {
        struct tpdb_value row[3] = {vInt(i + 1), vText("o"),
                                    vBlob(big, sizes[i])};
        mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 3, NULL));
    }
    reopen(fx);
    for (int i = 0; i < 8; i++) {
        assert_true(getRow(fx->f, i + 1, &v));
        assert_int_equal(v[2].len, sizes[i]);
        assert_memory_equal(v[2].base, big, sizes[i]);
    }
    getRow(NULL, 0, &v);
    mustOk(fx->f, tpdb_file_delete(fx->f, "users", 8));
    mustOk(fx->f, tpdb_file_chain(fx->f, TPDB_CHAIN_FREELIST, &pages, &np));
    assert_int_equal(np, 25); /* ceil(100000 / 4088) */
    tpdb_free(pages);
    struct tpdb_file_info in;
    tpdb_file_get_info(fx->f, &in);
    uint32_t count = in.eff_page_count;
    struct tpdb_value row[3] = {vInt(9), vText("o"), vBlob(big, 50000)};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 3, NULL));
    reopen(fx);
    tpdb_file_get_info(fx->f, &in);
    assert_int_equal(in.page_count, count); /* reused freed pages */
    mustOk(fx->f, tpdb_file_chain(fx->f, TPDB_CHAIN_FREELIST, &pages, &np));
    assert_int_equal(np, 25 - 13);
    tpdb_free(pages);
    assert_true(getRow(fx->f, 9, &v));
    assert_memory_equal(v[2].base, big, 50000);
    getRow(NULL, 0, &v);
    free(big);
}

/* Defect B4: a failed statement leaves no trace. */
static void testStatementRollback(void **state)
{
    struct fx *fx = *state;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    const char *c1[1] = {"name"};
    const char *c2[1] = {"id"};
    mustOk(fx->f, tpdb_file_create_index(fx->f, "ix_id", "users", c2, 1, 0));
    mustOk(fx->f, tpdb_file_create_index(fx->f, "ux_name", "users", c1, 1, 1));
    struct tpdb_value a[2] = {vInt(1), vText("same")};
    struct tpdb_value b[2] = {vInt(2), vText("same")};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", a, 2, NULL));
    assert_int_equal(tpdb_file_insert(fx->f, "users", b, 2, NULL),
                     TPDB_INVALID);
    assert_non_null(strstr(tpdb_file_errmsg(fx->f), "UNIQUE"));
    assert_int_equal(countRows(fx->f, "users", 0), 1);
    assert_int_equal(countRows(fx->f, "ix_id", 1), 1);
    assert_int_equal(tpdb_file_table_find(fx->f, "users")->next_rowid, 2);
    struct tpdb_value nn[2] = {vInt(3), {.type = TPDB_VNULL}};
    assert_int_equal(tpdb_file_insert(fx->f, "users", nn, 2, NULL),
                     TPDB_INVALID);
    struct tpdb_value real[2] = {vInt(3), {.type = TPDB_VREAL, .r = 1}};
    assert_int_equal(tpdb_file_insert(fx->f, "users", real, 2, NULL),
                     TPDB_INVALID);
    /* Inside a transaction, the failed statement alone is undone. */
    mustOk(fx->f, tpdb_file_begin(fx->f));
    struct tpdb_value c[2] = {vInt(4), vText("four")};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", c, 2, NULL));
    assert_int_equal(tpdb_file_insert(fx->f, "users", b, 2, NULL),
                     TPDB_INVALID);
    mustOk(fx->f, tpdb_file_commit(fx->f));
    reopen(fx);
    assert_int_equal(countRows(fx->f, "users", 0), 2);
    assert_int_equal(countRows(fx->f, "ux_name", 1), 2);
    assert_int_equal(countRows(fx->f, "ix_id", 1), 2);
    /* Errors of the API. */
    assert_int_equal(tpdb_file_insert(fx->f, "nope", c, 2, NULL),
                     TPDB_NOTFOUND);
    assert_int_equal(tpdb_file_commit(fx->f), TPDB_MISUSE);
    assert_int_equal(tpdb_file_rollback(fx->f), TPDB_MISUSE);
    struct tpdb_value chg[2] = {vInt(99), vText("x")};
    assert_int_equal(tpdb_file_update(fx->f, "users", 1, chg, 2), TPDB_INVALID);
    struct tpdb_column col = {"x", "INT", 0, NULL};
    assert_int_equal(tpdb_file_create_table(fx->f, "users", &col, 1, -1),
                     TPDB_INVALID);
    assert_int_equal(
        tpdb_file_create_index(fx->f, "ux_name", "users", c1, 1, 0),
        TPDB_INVALID);
    assert_int_equal(tpdb_file_create_index(fx->f, "ux_bad", "users", c1, 1, 1),
                     TPDB_OK);
}

/* tpdb_file_raise_next_rowid() only ever raises the counter, durably, and
 * a rollback undoes it. */
static void testRaiseNextRowid(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *ro;
    int64_t id;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    struct tpdb_value row[2] = {{.type = TPDB_VNULL}, vText("a")};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 2, &id));
    assert_int_equal(id, 1);
    mustOk(fx->f, tpdb_file_raise_next_rowid(fx->f, "users", 10));
    mustOk(fx->f, tpdb_file_raise_next_rowid(fx->f, "users", 5));
    reopen(fx);
    assert_int_equal(tpdb_file_table_find(fx->f, "users")->next_rowid, 10);
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 2, &id));
    assert_int_equal(id, 10);
    mustOk(fx->f, tpdb_file_begin(fx->f));
    mustOk(fx->f, tpdb_file_raise_next_rowid(fx->f, "users", 100));
    mustOk(fx->f, tpdb_file_rollback(fx->f));
    assert_int_equal(tpdb_file_table_find(fx->f, "users")->next_rowid, 11);
    assert_int_equal(tpdb_file_raise_next_rowid(fx->f, "nope", 5),
                     TPDB_NOTFOUND);
    tpdb_file_close(fx->f);
    fx->f = NULL;
    assert_int_equal(tpdb_file_open(fx->path, TPDB_FILE_RDONLY, &ro, err),
                     TPDB_OK);
    assert_int_equal(tpdb_file_raise_next_rowid(ro, "users", 50),
                     TPDB_READONLY);
    tpdb_file_close(ro);
}

static void testTransactionRollback(void **state)
{
    struct fx *fx = *state;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    mustOk(fx->f, tpdb_file_begin(fx->f));
    assert_int_equal(tpdb_file_begin(fx->f), TPDB_MISUSE);
    for (int i = 1; i <= 500; i++) {
        struct tpdb_value r[2] = {vInt(i), vText("tx")};
        mustOk(fx->f, tpdb_file_insert(fx->f, "users", r, 2, NULL));
    }
    struct tpdb_column col = {"x", "INT", 0, NULL};
    mustOk(fx->f, tpdb_file_create_table(fx->f, "t2", &col, 1, -1));
    mustOk(fx->f, tpdb_file_rollback(fx->f));
    assert_null(tpdb_file_table_find(fx->f, "t2"));
    assert_int_equal(countRows(fx->f, "users", 0), 0);
    reopen(fx);
    assert_int_equal(countRows(fx->f, "users", 0), 0);
    struct tpdb_file_info in;
    tpdb_file_get_info(fx->f, &in);
    assert_int_equal(in.page_count, 2);
    /* Cursors are invalidated by writes. */
    struct tpdb_cursor *c = NULL;
    mustOk(fx->f, tpdb_cursor_open_table(fx->f, "users", &c));
    struct tpdb_value r[2] = {vInt(1), vText("x")};
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", r, 2, NULL));
    assert_int_equal(tpdb_cursor_first(c), TPDB_MISUSE);
    tpdb_cursor_close(c);
}

static void testReadOnly(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *ro = NULL;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    tpdb_file_close(fx->f);
    fx->f = NULL;
    mustOk(NULL, tpdb_file_open(fx->path, TPDB_FILE_RDONLY, &ro, err));
    struct tpdb_value r[2] = {vInt(1), vText("x")};
    assert_int_equal(tpdb_file_insert(ro, "users", r, 2, NULL), TPDB_READONLY);
    assert_int_equal(tpdb_file_begin(ro), TPDB_READONLY);
    /* A writer cannot open while a reader holds the file. */
    assert_int_equal(tpdb_file_open(fx->path, 0, &fx->f, err), TPDB_BUSY);
    tpdb_file_close(ro);
    assert_int_equal(
        tpdb_file_open("/nonexistent/x.tpdb", TPDB_FILE_RDONLY, &ro, err),
        TPDB_NOTFOUND);
    assert_null(ro);
}

/* Checks the raw page file against the format document, independently of
 * the reader: header, WAL header, and every leaf/interior page's
 * free_end and cell bounds (what TrashPandaDB's own reader relies on). */
static void checkRawFormat(const char *path)
{
    char wpath[200];
    uint8_t hdr[64], page[4096], wal[64];
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(hdr, 1, 64, fp), 64);
    assert_memory_equal(hdr, "TPANDADB", 8);
    assert_int_equal(tpdbGet32(hdr + 8), 2);
    uint32_t count = tpdbGet32(hdr + 12);
    for (uint32_t pg = 1; pg <= count; pg++) {
        assert_int_equal(fread(page, 1, 4096, fp), 4096);
        if (page[0] != 2 && page[0] != 1) {
            continue;
        }
        unsigned n = tpdbGet16(page + 1);
        unsigned fe = tpdbGet16(page + (page[0] == 2 ? 11 : 7));
        unsigned lowest = 4096;
        for (unsigned i = 0; i < n; i++) {
            unsigned off = tpdbGet16(page + 16 + 2 * i);
            lowest = off < lowest ? off : lowest;
        }
        assert_true(16 + 2 * n <= lowest);
        assert_int_equal(fe, lowest);
    }
    fclose(fp);
    snprintf(wpath, sizeof wpath, "%s-wal", path);
    fp = fopen(wpath, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(wal, 1, sizeof wal, fp), 32);
    assert_memory_equal(wal, "TPANDAWL", 8);
    assert_int_equal(tpdbGet32(wal + 8), 3);
    fclose(fp);
}

static void testFormatInvariants(void **state)
{
    struct fx *fx = *state;
    static uint8_t big[6000];
    fx->f = openRw(fx);
    makeUsers(fx->f);
    const char *icols[2] = {"name", "id"};
    mustOk(fx->f, tpdb_file_create_index(fx->f, "ix", "users", icols, 2, 0));
    mustOk(fx->f, tpdb_file_begin(fx->f));
    for (int i = 0; i < 400; i++) {
        char name[32];
        snprintf(name, sizeof name, "n%d", (i * 37) % 400);
        struct tpdb_value r[3] = {vInt(i * 3), vText(name),
                                  vBlob(big, (size_t)(i * 97) % 6000)};
        mustOk(fx->f, tpdb_file_insert(fx->f, "users", r, 3, NULL));
    }
    mustOk(fx->f, tpdb_file_commit(fx->f));
    tpdb_file_close(fx->f);
    fx->f = NULL;
    checkRawFormat(fx->path);
}

static void copyFile(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
    }
    fclose(in);
    fclose(out);
}

/* Writes into a genuine TrashPandaDB file: its indexes stay in step. */
static void testWriteGenuineFile(void **state)
{
    struct fx *fx = *state;
    char src[1024], wal[1100];
    const char *root = getenv("TPDB_SOURCE_ROOT");
    snprintf(src, sizeof src, "%s/tests/fixtures/tpdb/05_indexes.tpdb",
             root == NULL ? "." : root);
    copyFile(src, fx->path);
    snprintf(wal, sizeof wal, "%s-wal", src);
    snprintf(src, sizeof src, "%s-wal", fx->path);
    copyFile(wal, src);
    fx->f = openRw(fx);
    struct tpdb_value dup[5] = {{.type = TPDB_VNULL},
                                vText("ada@lovelace.org"),
                                vText("X"),
                                vText("Y"),
                                vInt(1)};
    assert_int_equal(tpdb_file_insert(fx->f, "users", dup, 5, NULL),
                     TPDB_INVALID);
    expectUnique(fx->f, "_uq_users_email");
    struct tpdb_value row[6] = {{.type = TPDB_VNULL},
                                vText("new@example.com"),
                                vText("Newman"),
                                vText("Nia"),
                                vInt(-3),
                                {.type = TPDB_VREAL, .r = 2.5}};
    int64_t rowid = 0;
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", row, 6, &rowid));
    assert_int_equal(rowid, 13);
    mustOk(fx->f, tpdb_file_delete(fx->f, "users", 1));
    reopen(fx);
    assert_int_equal(countRows(fx->f, "users", 0), 11);
    assert_int_equal(countRows(fx->f, "_uq_users_email", 1), 10);
    assert_int_equal(countRows(fx->f, "ux_users_handle", 1), 10);
    assert_int_equal(countRows(fx->f, "ix_users_name", 1), 10);
    assert_int_equal(countRows(fx->f, "ix_users_age", 1), 9);
    /* Age -3 sorts after every positive age, as TrashPandaDB stores it. */
    struct tpdb_cursor *c = NULL;
    mustOk(fx->f, tpdb_cursor_open_index(fx->f, "ix_users_age", &c));
    mustOk(fx->f, tpdb_cursor_last(c)); /* age -1 */
    mustOk(fx->f, tpdb_cursor_prev(c));
    mustOk(fx->f, tpdb_cursor_rowid(c, &rowid));
    assert_int_equal(rowid, 13); /* -70 < -3 < -1: 0xff..ba, fd, ff */
    tpdb_cursor_close(c);
    assert_int_equal(tpdb_file_table_find(fx->f, "users")->next_rowid, 14);
    checkRawFormat(fx->path);
}

/* A catalog over several pages: continuation chain written and read back,
 * an entry straddling page boundaries. */
static void testCatalogMultiPage(void **state)
{
    struct fx *fx = *state;
    char name[128];
    uint32_t *pages;
    size_t np;
    fx->f = openRw(fx);
    mustOk(fx->f, tpdb_file_begin(fx->f));
    for (int i = 0; i < 120; i++) {
        snprintf(name, sizeof name, "a_rather_long_table_name_for_catalog_%03d",
                 i);
        struct tpdb_column cols[3] = {
            {"identifier_column", "INTEGER", 1, NULL},
            {"description_column", "TEXT", 0, "'a default text value'"},
            {"amount_column", "REAL", 0, "0.0"},
        };
        mustOk(fx->f, tpdb_file_create_table(fx->f, name, cols, 3, 0));
        struct tpdb_value r[1] = {vInt(i)};
        mustOk(fx->f, tpdb_file_insert(fx->f, name, r, 1, NULL));
    }
    mustOk(fx->f, tpdb_file_commit(fx->f));
    reopen(fx);
    mustOk(fx->f, tpdb_file_chain(fx->f, TPDB_CHAIN_CATALOG, &pages, &np));
    assert_true(np >= 3);
    tpdb_free(pages);
    assert_int_equal(tpdb_file_table_count(fx->f), 120);
    for (int i = 0; i < 120; i++) {
        const struct tpdb_value *v;
        unsigned n, st;
        struct tpdb_cursor *c = NULL;
        snprintf(name, sizeof name, "a_rather_long_table_name_for_catalog_%03d",
                 i);
        const struct tpdb_table *t = tpdb_file_table(fx->f, (unsigned)i);
        assert_string_equal(t->name, name);
        assert_string_equal(t->cols[1].default_sql, "'a default text value'");
        assert_int_equal(t->next_rowid, i + 1);
        mustOk(fx->f, tpdb_cursor_open_table(fx->f, name, &c));
        mustOk(fx->f, tpdb_cursor_first(c));
        mustOk(fx->f, tpdb_cursor_row(c, &v, &n, &st));
        assert_int_equal(v[0].i, i);
        assert_int_equal(v[1].len, 20);
        tpdb_cursor_close(c);
    }
    /* A rolled-back table leaves the chain as it was. */
    mustOk(fx->f, tpdb_file_begin(fx->f));
    struct tpdb_column col = {"x", "INT", 0, NULL};
    mustOk(fx->f, tpdb_file_create_table(fx->f, "extra", &col, 1, -1));
    mustOk(fx->f, tpdb_file_rollback(fx->f));
    assert_int_equal(tpdb_file_table_count(fx->f), 120);
    reopen(fx);
    assert_int_equal(tpdb_file_table_count(fx->f), 120);
    tpdb_file_close(fx->f);
    fx->f = NULL;
    checkRawFormat(fx->path);
}

/* Out of memory at every allocation of an open and of a statement: the
 * call fails cleanly and the file stays as it was. */
static void testOutOfMemory(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    fx->f = openRw(fx);
    makeUsers(fx->f);
    const char *icols[1] = {"name"};
    mustOk(fx->f, tpdb_file_create_index(fx->f, "ux", "users", icols, 1, 1));
    tpdb_file_close(fx->f);
    fx->f = NULL;
    int done = 0;
    for (long n = 0; !done && n < 10000; n++) {
        struct tpdb_file *f = NULL;
        tpdbAllocFailAfter(n);
        int rc = tpdb_file_open(fx->path, 0, &f, err);
        tpdbAllocFailAfter(-1);
        if (rc != TPDB_OK && rc != TPDB_NOMEM) {
            print_error("n=%ld rc=%d %s\n", n, rc, err);
        }
        assert_true(rc == TPDB_OK || rc == TPDB_NOMEM);
        done = rc == TPDB_OK;
        tpdb_file_close(f);
    }
    assert_true(done);
    fx->f = openRw(fx);
    int64_t next = 1;
    done = 0;
    for (long n = 0; !done && n < 10000; n++) {
        char name[32];
        snprintf(name, sizeof name, "name-%ld", n);
        struct tpdb_value r[2] = {{.type = TPDB_VNULL}, vText(name)};
        tpdbAllocFailAfter(n);
        int rc = tpdb_file_insert(fx->f, "users", r, 2, NULL);
        tpdbAllocFailAfter(-1);
        if (rc != TPDB_OK && rc != TPDB_NOMEM) {
            print_error("n=%ld rc=%d %s\n", n, rc, tpdb_file_errmsg(fx->f));
        }
        assert_true(rc == TPDB_OK || rc == TPDB_NOMEM);
        done = rc == TPDB_OK;
        assert_int_equal(countRows(fx->f, "users", 0), done ? 1 : 0);
        assert_int_equal(countRows(fx->f, "ux", 1), done ? 1 : 0);
        assert_int_equal(tpdb_file_table_find(fx->f, "users")->next_rowid,
                         next + done);
    }
    assert_true(done);
}

/* ---- Crash consistency ---------------------------------------------------*/

static void insertBatch(struct tpdb_file *f, int batch, int rows)
{
    static uint8_t blob[5000];
    mustOk(f, tpdb_file_begin(f));
    for (int i = 0; i < rows; i++) {
        memset(blob, batch, sizeof blob);
        struct tpdb_value r[3] = {vInt(batch * 1000 + i), vText("crash"),
                                  vBlob(blob, i % 2 ? sizeof blob : 10)};
        mustOk(f, tpdb_file_insert(f, "users", r, 3, NULL));
    }
    mustOk(f, tpdb_file_commit(f));
}

/* Each committed batch holds exactly `rows` rows with ids batch*1000+i. */
static int checkBatches(struct tpdb_file *f, int rows)
{
    long n = countRows(f, "users", 0);
    assert_int_equal(n % rows, 0);
    return (int)(n / rows);
}

static void crashAt(struct fx *fx, long frames, int before)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct tpdb_file *f = NULL;
        char err[TPDB_ERRMSG_SIZE];
        if (tpdb_file_open(fx->path, 0, &f, err) != TPDB_OK) {
            _exit(2);
        }
        tpdb_file_test_crash_after_frames(frames);
        insertBatch(f, before + 1, 20);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_true(WEXITSTATUS(st) == 77 || WEXITSTATUS(st) == 0);
}

static void testCrashMidCommit(void **state)
{
    struct fx *fx = *state;
    fx->f = openRw(fx);
    makeUsers(fx->f);
    /* Free pages to pop, so a stale free-list head would show (B5). */
    insertBatch(fx->f, 0, 20);
    for (int i = 0; i < 20; i++) {
        mustOk(fx->f, tpdb_file_delete(fx->f, "users", i));
    }
    tpdb_file_close(fx->f);
    fx->f = NULL;
    int committed = 0;
    int replayed = 0;
    for (long frames = 0; frames < 40; frames++) {
        crashAt(fx, frames, committed);
        struct tpdb_file *ro = NULL;
        char err[TPDB_ERRMSG_SIZE];
        mustOk(NULL, tpdb_file_open(fx->path, TPDB_FILE_RDONLY, &ro, err));
        int got = checkBatches(ro, 20);
        assert_true(got == committed || got == committed + 1);
        struct tpdb_file_info in;
        tpdb_file_get_info(ro, &in);
        if (in.wal_committed > 0) {
            /* Crashed between the WAL fdatasync and the checkpoint: the
             * header's free-list head is stale, our sentinel's is used. */
            replayed++;
            assert_int_not_equal(in.eff_free_head, in.free_list_head);
        }
        committed = got;
        tpdb_file_close(ro);
    }
    assert_true(committed > 0);
    assert_true(replayed > 0);
    /* Reopening read-write checkpoints; later writes must not reuse a page
     * in use (the free-list head came from our sentinel). */
    fx->f = openRw(fx);
    insertBatch(fx->f, 90, 20);
    reopen(fx);
    assert_int_equal(checkBatches(fx->f, 20), committed + 1);
}

static void testCrashSigkill(void **state)
{
    struct fx *fx = *state;
    int fds[2];
    fx->f = openRw(fx);
    makeUsers(fx->f);
    tpdb_file_close(fx->f);
    fx->f = NULL;
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct tpdb_file *f = NULL;
        char err[TPDB_ERRMSG_SIZE];
        close(fds[0]);
        if (tpdb_file_open(fx->path, 0, &f, err) != TPDB_OK) {
            _exit(2);
        }
        for (int b = 1;; b++) {
            insertBatch(f, b, 10);
            if (write(fds[1], &b, sizeof b) != sizeof b) {
                _exit(3);
            }
        }
    }
    close(fds[1]);
    int last = 0;
    while (last < 25) {
        assert_int_equal(read(fds[0], &last, sizeof last), sizeof last);
    }
    kill(pid, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    while (read(fds[0], &last, sizeof last) == sizeof last) {
    }
    close(fds[0]);
    fx->f = openRw(fx);
    int got = checkBatches(fx->f, 10);
    assert_true(got == last || got == last + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testRoundTrip, setup, teardown),
        cmocka_unit_test_setup_teardown(testManyRowsAndIndexes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testSplitByBytes, setup, teardown),
        cmocka_unit_test_setup_teardown(testOverflowAndFreeList, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testStatementRollback, setup, teardown),
        cmocka_unit_test_setup_teardown(testTransactionRollback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testRaiseNextRowid, setup, teardown),
        cmocka_unit_test_setup_teardown(testReadOnly, setup, teardown),
        cmocka_unit_test_setup_teardown(testFormatInvariants, setup, teardown),
        cmocka_unit_test_setup_teardown(testOutOfMemory, setup, teardown),
        cmocka_unit_test_setup_teardown(testCatalogMultiPage, setup, teardown),
        cmocka_unit_test_setup_teardown(testWriteGenuineFile, setup, teardown),
        cmocka_unit_test_setup_teardown(testCrashMidCommit, setup, teardown),
        cmocka_unit_test_setup_teardown(testCrashSigkill, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
