/* Unit tests for ext/tpdb_vtab*.c: the tpdb_table virtual table and
 * tpdb_attach() over the genuine TrashPandaDB fixtures (every row and every
 * manifest query), query plans, writes read back (also in a node's data
 * directory, where the file is open only per statement or transaction),
 * and damaged files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "base/base.h"
#include "ext/tpdb_vtab.h"
#include "vfs/tpdbfile/tpdbfile.h"

/* ---- Fixture paths and a scratch directory ------------------------------- */

static char fixtureDir[1024];

static void fixturePath(char *out, size_t n, const char *name, const char *ext)
{
    snprintf(out, n, "%s/%s%s", fixtureDir, name, ext);
}

struct scratch {
    char dir[64];
};

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

/* Copies fixture `name` (page file and WAL) into the scratch dir as
 * <dir>/<name>.tpdb; writes the path into out. */
static void copyFixture(struct scratch *s,
                        const char *name,
                        char *out,
                        size_t n)
{
    char from[1200], to[1200];
    fixturePath(from, sizeof from, name, ".tpdb");
    snprintf(out, n, "%s/%s.tpdb", s->dir, name);
    copyFile(from, out);
    fixturePath(from, sizeof from, name, ".tpdb-wal");
    snprintf(to, sizeof to, "%s-wal", out);
    copyFile(from, to);
}

static int setup(void **state)
{
    struct scratch *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/test_tpdb_vtab.XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        return -1;
    }
    *state = s;
    return 0;
}

/* A scratch directory that looks like a node's data directory (it holds
 * `.tpdb/`): tpdb_table files there are transient. */
static int setupNodeDir(void **state)
{
    char meta[128];
    if (setup(state) != 0) {
        return -1;
    }
    struct scratch *s = *state;
    snprintf(meta, sizeof meta, "%s/.tpdb", s->dir);
    return mkdir(meta, 0755) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    struct scratch *s = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) {
        return -1;
    }
    free(s);
    return 0;
}

static sqlite3 *openDb(void)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(tpdbVtabRegister(db), SQLITE_OK);
    return db;
}

static void execOk(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fail_msg("%s: %s", sql, err != NULL ? err : "?");
    }
}

/* Runs sql, expecting failure; returns the message (sqlite3_free it). */
static char *execErr(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    assert_int_not_equal(rc, SQLITE_OK);
    assert_non_null(err);
    return err;
}

static int64_t queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- Manifest parsing -----------------------------------------------------
 */

static int hexVal(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : (c | 32) - 'a' + 10;
}

/* Decodes hex in place into bytes; returns the length. */
static size_t unhex(const char *hex, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n / 2; i++) {
        out[i] =
            (unsigned char)(hexVal(hex[2 * i]) * 16 + hexVal(hex[2 * i + 1]));
    }
    return n / 2;
}

/* Checks column i of st against a manifest value token. */
static void checkValue(sqlite3_stmt *st,
                       int i,
                       const char *tok,
                       size_t len,
                       const char *ctx)
{
    static unsigned char buf[1 << 18];
    int type = sqlite3_column_type(st, i);
    switch (tok[0]) {
        case 'N':
            assert_int_equal(type, SQLITE_NULL);
            return;
        case 'I':
        case 'Z': {
            char num[32];
            snprintf(num, sizeof num, "%.*s", (int)len - 2, tok + 2);
            if (type != SQLITE_INTEGER) {
                fail_msg("%s col %d: want integer %s, got type %d", ctx, i, num,
                         type);
            }
            assert_int_equal(sqlite3_column_int64(st, i),
                             strtoll(num, NULL, 10));
            return;
        }
        case 'R': {
            char bits[17];
            double d;
            uint64_t u;
            snprintf(bits, sizeof bits, "%.*s", 16, tok + 2);
            u = strtoull(bits, NULL, 16);
            memcpy(&d, &u, sizeof d);
            assert_int_equal(type, SQLITE_FLOAT);
            double got = sqlite3_column_double(st, i);
            assert_memory_equal(&got, &d, sizeof d);
            return;
        }
        case 'T':
        case 'B': {
            size_t n = unhex(tok + 2, len - 2, buf);
            assert_int_equal(type, tok[0] == 'T' ? SQLITE_TEXT : SQLITE_BLOB);
            const void *p = tok[0] == 'T'
                                ? (const void *)sqlite3_column_text(st, i)
                                : sqlite3_column_blob(st, i);
            assert_int_equal((size_t)sqlite3_column_bytes(st, i), n);
            if (n > 0) {
                assert_memory_equal(p, buf, n);
            }
            return;
        }
        default:
            fail_msg("%s: bad manifest token %.*s", ctx, (int)len, tok);
    }
}

/* Checks the current row of st against space-separated value tokens; the
 * statement's first `skip` columns are not compared. */
static void checkRow(sqlite3_stmt *st,
                     int skip,
                     const char *toks,
                     const char *ctx)
{
    int i = skip;
    while (*toks != '\0' && *toks != '\n') {
        const char *end = toks;
        while (*end != ' ' && *end != '\n' && *end != '\0') {
            end++;
        }
        assert_true(i < sqlite3_column_count(st));
        checkValue(st, i++, toks, (size_t)(end - toks), ctx);
        toks = *end == ' ' ? end + 1 : end;
    }
    assert_int_equal(i, sqlite3_column_count(st));
}

static char *readAll(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static char *nextLine(char **p)
{
    char *line = *p;
    if (*line == '\0') {
        return NULL;
    }
    char *nl = strchr(line, '\n');
    if (nl != NULL) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = line + strlen(line);
    }
    return line;
}

/* ---- Fixtures against their manifests ------------------------------------ */

/* Queries whose TrashPandaDB result is a defect: the expected rows are what
 * the file holds. B2: TrashPandaDB's index range scan compares negative
 * keys as unsigned, so `age BETWEEN -5 AND 40` found nothing; ages 37, -1
 * and 36 are in range. */
static const struct {
    const char *sql;
    const char *rows[4];
} overrides[] = {
    {"SELECT id, age FROM users WHERE age BETWEEN -5 AND 40 ORDER BY id",
     {"I:1 I:37", "I:5 I:-1", "I:10 I:36", NULL}},
};

/* Queries not compared: TrashPandaDB's length() counts neither characters
 * nor bytes (46805 for a 10240-byte BLOB), so SQLite's answer differs by
 * design; the values themselves are compared byte for byte through
 * SELECT * and the `row` lines. */
static const char *const skipped[] = {
    "SELECT id, title, length(body), length(data) FROM docs ORDER BY id",
};

static int isSkipped(const char *sql)
{
    for (size_t i = 0; i < sizeof skipped / sizeof skipped[0]; i++) {
        if (strcmp(skipped[i], sql) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char *const *overrideFor(const char *sql)
{
    for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++) {
        if (strcmp(overrides[i].sql, sql) == 0) {
            return overrides[i].rows;
        }
    }
    return NULL;
}

static void checkColumnNames(sqlite3_stmt *st, const char *cols)
{
    unsigned char name[512];
    int i = 0;
    while (*cols != '\0') {
        const char *end = strchr(cols, ',');
        size_t n = end != NULL ? (size_t)(end - cols) : strlen(cols);
        size_t len = unhex(cols, n, name);
        name[len] = '\0';
        assert_true(i < sqlite3_column_count(st));
        if (sqlite3_stricmp(sqlite3_column_name(st, i), (const char *)name)) {
            fail_msg("column %d: '%s' != '%s'", i, sqlite3_column_name(st, i),
                     name);
        }
        i++;
        cols += n + (end != NULL);
    }
    assert_int_equal(i, sqlite3_column_count(st));
}

/* Runs a manifest `sql` line and compares the `srow` lines that follow. */
static void checkSql(sqlite3 *db, char *line, char **rest)
{
    static char sql[4096];
    sqlite3_stmt *st;
    char *sp = strchr(line + 4, ' ');
    size_t n = unhex(line + 4, (size_t)(sp - (line + 4)), (unsigned char *)sql);
    sql[n] = '\0';
    int nrows = atoi(strstr(sp, " nrows=") + 7);
    if (isSkipped(sql)) {
        for (int r = 0; r < nrows; r++) {
            assert_non_null(nextLine(rest));
        }
        return;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    checkColumnNames(st, strstr(sp, " cols=") + 6);
    const char *const *ov = overrideFor(sql);
    for (int r = 0; r < nrows; r++) {
        char *srow = nextLine(rest);
        assert_non_null(srow);
        assert_memory_equal(srow, "srow ", 5);
        if (ov == NULL) {
            assert_int_equal(sqlite3_step(st), SQLITE_ROW);
            checkRow(st, 0, srow + 5, sql);
        }
    }
    for (int r = 0; ov != NULL && ov[r] != NULL; r++) {
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        checkRow(st, 0, ov[r], sql);
    }
    if (sqlite3_step(st) != SQLITE_DONE) {
        fail_msg("%s: more rows than the manifest, or %s", sql,
                 sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
}

/* Compares `row <table> <rowid> <stored> values...` with a full scan. */
static void checkRowLine(sqlite3 *db, sqlite3_stmt **st, char *line)
{
    char table[300];
    long long rowid;
    int stored, off;
    assert_int_equal(
        sscanf(line, "row %299s %lld %d %n", table, &rowid, &stored, &off), 3);
    if (*st == NULL) {
        char *sql = sqlite3_mprintf("SELECT rowid, * FROM \"%w\"", table);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, st, NULL), SQLITE_OK);
        sqlite3_free(sql);
    }
    if (sqlite3_step(*st) != SQLITE_ROW) {
        fail_msg("%s rowid %lld: %s", table, rowid, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_column_int64(*st, 0), rowid);
    checkRow(*st, 1, line + off, table);
}

static void finishTable(sqlite3_stmt **st)
{
    if (*st != NULL) {
        assert_int_equal(sqlite3_step(*st), SQLITE_DONE);
        sqlite3_finalize(*st);
        *st = NULL;
    }
}

static int countTables(const char *text)
{
    int n = strncmp(text, "table ", 6) == 0;
    for (const char *p = text; (p = strstr(p, "\ntable ")) != NULL; p++) {
        n++;
    }
    return n;
}

static void checkFixture(const char *name)
{
    char path[1200];
    char *text, *p, *line;
    sqlite3_stmt *st = NULL;
    sqlite3 *db = openDb();
    fixturePath(path, sizeof path, name, ".manifest.txt");
    text = readAll(path);
    fixturePath(path, sizeof path, name, ".tpdb");
    char *sql = sqlite3_mprintf("SELECT tpdb_attach(%Q, '', 'ro')", path);
    assert_int_equal(queryInt(db, sql), countTables(text));
    sqlite3_free(sql);
    for (p = text; (line = nextLine(&p)) != NULL;) {
        if (strncmp(line, "row ", 4) == 0) {
            checkRowLine(db, &st, line);
            continue;
        }
        finishTable(&st);
        if (strncmp(line, "sql ", 4) == 0) {
            checkSql(db, line, &p);
        }
    }
    finishTable(&st);
    free(text);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void testFixture01(void **state)
{
    (void)state;
    checkFixture("01_empty");
}
static void testFixture02(void **state)
{
    (void)state;
    checkFixture("02_types");
}
static void testFixture03(void **state)
{
    (void)state;
    checkFixture("03_multipage");
}
static void testFixture04(void **state)
{
    (void)state;
    checkFixture("04_overflow");
}
static void testFixture05(void **state)
{
    (void)state;
    checkFixture("05_indexes");
}
static void testFixture07(void **state)
{
    (void)state;
    checkFixture("07_catalog_shrunk");
}
static void testFixture08(void **state)
{
    (void)state;
    checkFixture("08_deleted");
}
static void testFixture09(void **state)
{
    (void)state;
    checkFixture("09_altered");
}

/* ---- Query plans and lookups ----------------------------------------------
 */

/* The concatenated EXPLAIN QUERY PLAN details of sql. */
static void queryPlan(sqlite3 *db, const char *sql, char *out, size_t n)
{
    char *q = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    out[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t len = strlen(out);
        snprintf(out + len, n - len, "%s|", sqlite3_column_text(st, 3));
    }
    sqlite3_finalize(st);
    sqlite3_free(q);
}

static void assertPlan(sqlite3 *db, const char *sql, const char *want)
{
    char plan[1024];
    queryPlan(db, sql, plan, sizeof plan);
    if (strstr(plan, want) == NULL) {
        fail_msg("%s: plan '%s' lacks '%s'", sql, plan, want);
    }
}

static sqlite3 *openFixture(const char *name, const char *prefix)
{
    char path[1200];
    sqlite3 *db = openDb();
    fixturePath(path, sizeof path, name, ".tpdb");
    char *sql =
        sqlite3_mprintf("SELECT tpdb_attach(%Q, %Q, 'ro')", path, prefix);
    assert_true(queryInt(db, sql) > 0);
    sqlite3_free(sql);
    return db;
}

static void testQueryPlans(void **state)
{
    (void)state;
    sqlite3 *db = openFixture("05_indexes", "");
    assertPlan(db, "SELECT * FROM users WHERE id = 4", "INDEX 1:rowid");
    assertPlan(db, "SELECT * FROM users WHERE rowid = 4", "INDEX 1:rowid");
    assertPlan(db, "SELECT * FROM users WHERE id BETWEEN 2 AND 5",
               "INDEX 50:rowid");
    assertPlan(db, "SELECT * FROM users WHERE id > 2", "INDEX 18:rowid");
    assertPlan(db, "SELECT * FROM users WHERE email = 'x'",
               "INDEX 19:_uq_users_email");
    assertPlan(db, "SELECT * FROM users WHERE last = 'x' AND first = 'y'",
               "INDEX 35:ix_users_name");
    assertPlan(db, "SELECT * FROM users WHERE age = 3",
               "INDEX 19:ix_users_age");
    assertPlan(db, "SELECT * FROM users WHERE score = 1.5", "INDEX 0:");
    assertPlan(db, "SELECT * FROM users WHERE email = 'x' COLLATE NOCASE",
               "INDEX 0:");
    assertPlan(db, "SELECT * FROM tags WHERE tag = 'db'", "INDEX 19:ix_tags");
    /* Index lookups agree with full scans (unary + hides the column). */
    const char *pairs[][2] = {
        {"SELECT group_concat(id) FROM users WHERE last = 'Lovelace'",
         "SELECT group_concat(id) FROM users WHERE +last = 'Lovelace'"},
        {"SELECT group_concat(id) FROM users WHERE age = -70",
         "SELECT group_concat(id) FROM users WHERE +age = -70"},
        /* INTEGER affinity turns '-70' into -70 for the comparison. */
        {"SELECT group_concat(id) FROM users WHERE age = '-70'",
         "SELECT group_concat(id) FROM users WHERE +age = -70"},
        {"SELECT group_concat(id) FROM users WHERE first = 'Ada' AND id = 1",
         "SELECT group_concat(id) FROM users WHERE +first = 'Ada' AND +id = 1"},
        {"SELECT count(*) FROM users WHERE id > 3", "SELECT 8"},
        {"SELECT count(*) FROM users WHERE id >= -100 AND id < 5", "SELECT 4"},
        {"SELECT count(*) FROM users WHERE id = 6", "SELECT 0"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        sqlite3_stmt *a, *b;
        assert_int_equal(sqlite3_prepare_v2(db, pairs[i][0], -1, &a, NULL), 0);
        assert_int_equal(sqlite3_prepare_v2(db, pairs[i][1], -1, &b, NULL), 0);
        assert_int_equal(sqlite3_step(a), SQLITE_ROW);
        assert_int_equal(sqlite3_step(b), SQLITE_ROW);
        assert_string_equal(sqlite3_column_text(a, 0) != NULL
                                ? (const char *)sqlite3_column_text(a, 0)
                                : "-",
                            sqlite3_column_text(b, 0) != NULL
                                ? (const char *)sqlite3_column_text(b, 0)
                                : "-");
        sqlite3_finalize(a);
        sqlite3_finalize(b);
    }
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Negative rowids sort last in the file (B2); ranges still find them. */
static void testNegativeRanges(void **state)
{
    (void)state;
    sqlite3 *db = openFixture("02_types", "");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t_negpk WHERE id < 0"),
                     4);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM t_negpk WHERE id "
                              "BETWEEN -100 AND 3"),
                     6);
    assert_int_equal(queryInt(db,
                              "SELECT sum(id) FROM t_negpk WHERE id "
                              "BETWEEN -100 AND 3"),
                     -100 - 2 - 1 + 0 + 1 + 3);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM t_negpk WHERE id > "
                              "-2.5 AND id <= 5.5"),
                     6);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM t_negpk WHERE rowid = "
                              "-9223372036854775808"),
                     1);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM t_negpk WHERE id = "
                              "'3'"),
                     1);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM t_types WHERE id "
                              "IN (1, 4, 99)"),
                     2);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Every 50th key of the depth-3 TEXT index of 03_multipage finds its row. */
static void testIndexKeys(void **state)
{
    char path[1200];
    char *p, *line;
    sqlite3_stmt *st;
    int seen = 0;
    (void)state;
    sqlite3 *db = openFixture("03_multipage", "");
    fixturePath(path, sizeof path, "03_multipage", ".manifest.txt");
    char *text = readAll(path);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT rowid FROM big_rand WHERE "
                                        "label = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (p = text; (line = nextLine(&p)) != NULL;) {
        static unsigned char key[4096];
        char hex[8200];
        long long rowid;
        if (strncmp(line, "ikey idx_big_rand_label ", 24) != 0 ||
            seen++ % 50 != 0) {
            continue;
        }
        assert_int_equal(sscanf(line + 24, "%8199s rowid=%lld", hex, &rowid),
                         2);
        unhex(hex, strlen(hex), key);
        sqlite3_bind_text(st, 1, (const char *)key, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(st, 0), rowid);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    assert_int_equal(seen, 2000);
    sqlite3_finalize(st);
    free(text);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- Writes ---------------------------------------------------------------
 */

static sqlite3 *openCopy(struct scratch *s,
                         const char *name,
                         char *path,
                         size_t n)
{
    sqlite3 *db = openDb();
    copyFixture(s, name, path, n);
    char *sql =
        sqlite3_mprintf("SELECT tpdb_attach(%Q, 'legacy_', 'rw')", path);
    assert_true(queryInt(db, sql) > 0);
    sqlite3_free(sql);
    return db;
}

static void testWriteReadBack(void **state)
{
    char path[1200];
    sqlite3 *db = openCopy(*state, "05_indexes", path, sizeof path);
    execOk(db,
           "INSERT INTO legacy_users (email, last, first, age, score) "
           "VALUES ('new@example.com', 'Newton', 'Isaac', 84, 2.5)");
    assert_int_equal(sqlite3_last_insert_rowid(db), 13);
    assert_int_equal(queryInt(db,
                              "SELECT id FROM legacy_users WHERE email = "
                              "'new@example.com'"),
                     13);
    execOk(db, "UPDATE legacy_users SET age = 50 WHERE id = 13");
    assert_int_equal(queryInt(db, "SELECT id FROM legacy_users WHERE age = 50"),
                     13);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM legacy_users WHERE "
                              "age = 84"),
                     0);
    execOk(db, "DELETE FROM legacy_users WHERE id = 2");
    execOk(db, "INSERT INTO legacy_users (id, email) VALUES (-7, 'neg@x')");
    execOk(db, "UPDATE legacy_users SET id = 100 WHERE id = -7");
    execOk(db,
           "BEGIN; INSERT INTO legacy_tags VALUES ('a', 1); "
           "INSERT INTO legacy_tags VALUES ('b', 2); COMMIT");
    execOk(db, "BEGIN; DELETE FROM legacy_tags; ROLLBACK");
    /* Reading one table while writing another of the same file: the scan
     * survives the writes (its cursor reseeks). */
    execOk(db,
           "INSERT INTO legacy_tags SELECT last, id FROM legacy_users "
           "WHERE last IS NOT NULL");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 8 + 11);
    execOk(db,
           "UPDATE legacy_tags SET post_id = post_id + 1000 WHERE "
           "post_id < 100");
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM legacy_tags WHERE "
                              "post_id >= 1000"),
                     19);
    execOk(db, "DELETE FROM legacy_tags WHERE post_id > 1002");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 7);
    /* A scan interleaved with writes by another statement: every row is
     * seen exactly once. */
    sqlite3_stmt *scan;
    int64_t sum = 0, n = 0;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT id FROM legacy_users", -1, &scan, NULL),
        SQLITE_OK);
    while (sqlite3_step(scan) == SQLITE_ROW) {
        sum += sqlite3_column_int64(scan, 0);
        n++;
        execOk(db, "INSERT INTO legacy_tags VALUES ('tmp', 5000)");
        execOk(db, "DELETE FROM legacy_tags WHERE post_id = 5000");
    }
    sqlite3_finalize(scan);
    assert_int_equal(n, 12);
    assert_int_equal(sum, queryInt(db, "SELECT sum(id) FROM legacy_users"));
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    /* A fresh connection sees exactly the committed state. */
    db = openDb();
    char *sql = sqlite3_mprintf("SELECT tpdb_attach(%Q)", path);
    assert_int_equal(queryInt(db, sql), 2);
    sqlite3_free(sql);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM users"), 12);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM users WHERE id = 2"),
                     0);
    assert_int_equal(queryInt(db,
                              "SELECT rowid FROM users WHERE email = "
                              "'neg@x'"),
                     100);
    assert_int_equal(queryInt(db, "SELECT age FROM users WHERE id = 13"), 50);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM tags"), 7);
    assert_int_equal(queryInt(db, "SELECT post_id FROM tags WHERE tag = 'b'"),
                     1002);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void testWriteErrors(void **state)
{
    char path[1200];
    char *err;
    sqlite3 *db = openCopy(*state, "05_indexes", path, sizeof path);
    /* UNIQUE violation: the library's message, nothing written. */
    err = execErr(db,
                  "INSERT INTO legacy_users (email) VALUES "
                  "('grace@example.com')");
    assert_non_null(strstr(err, "insert"));
    sqlite3_free(err);
    /* A REAL in an indexed column cannot be stored in the format. */
    err = execErr(db, "INSERT INTO legacy_tags VALUES (1.5, 1)");
    sqlite3_free(err);
    /* Moving a row onto a taken INTEGER PRIMARY KEY: refused, no change. */
    err = execErr(db, "UPDATE legacy_users SET id = 3 WHERE id = 4");
    assert_non_null(strstr(err, "already exists"));
    sqlite3_free(err);
    execOk(db, "UPDATE OR IGNORE legacy_users SET id = 3 WHERE id = 4");
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM legacy_users WHERE "
                              "id IN (3, 4)"),
                     2);
    err = execErr(db, "INSERT INTO legacy_tags (rowid, tag) VALUES (99, 'x')");
    assert_non_null(strstr(err, "rowid"));
    sqlite3_free(err);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_users"), 11);
    /* A statement failing midway drops the whole transaction. */
    execOk(db, "BEGIN");
    execOk(db, "INSERT INTO legacy_tags VALUES ('kept?', 7)");
    err = execErr(db, "UPDATE legacy_users SET email = 'same@x' WHERE id < 5");
    sqlite3_free(err);
    err = execErr(db, "INSERT INTO legacy_tags VALUES ('after', 8)");
    assert_non_null(strstr(err, "ROLLBACK"));
    sqlite3_free(err);
    err = execErr(db, "COMMIT");
    sqlite3_free(err);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 6);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM legacy_users WHERE "
                              "email = 'same@x'"),
                     0);
    /* The connection keeps working. */
    execOk(db, "INSERT INTO legacy_tags VALUES ('later', 9)");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 7);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Whether a read-write handle can be opened on path right now (no
 * tpdb_table handle holds the file); the probe is closed again. */
static int fileFree(const char *path)
{
    struct tpdb_file *f = NULL;
    char err[TPDB_ERRMSG_SIZE];
    int rc = tpdb_file_open(path, 0, &f, err);
    tpdb_file_close(f);
    assert_true(rc == TPDB_OK || rc == TPDB_BUSY);
    return rc == TPDB_OK;
}

/* Adds a tag row through the library, as a node's state machine writes a
 * replicated commit into its copy. */
static void fileAddTag(const char *path, const char *tag, int64_t post)
{
    struct tpdb_file *f = NULL;
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_value v[2] = {
        {.type = TPDB_VTEXT, .base = (const uint8_t *)tag, .len = strlen(tag)},
        {.type = TPDB_VINT, .i = post}};
    if (tpdb_file_open(path, 0, &f, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    assert_int_equal(tpdb_file_insert(f, "tags", v, 2, NULL), TPDB_OK);
    tpdb_file_close(f);
}

/* In a node's data directory the file is open only while a statement or a
 * write transaction uses it; between statements others can write it and
 * the existing tables see their commits. */
static void testTransient(void **state)
{
    char path[1200];
    sqlite3_stmt *st;
    sqlite3 *db = openCopy(*state, "05_indexes", path, sizeof path);
    assert_true(fileFree(path));
    fileAddTag(path, "outside", 500);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 7);
    assert_int_equal(
        queryInt(db, "SELECT post_id FROM legacy_tags WHERE tag = 'outside'"),
        500);
    /* A statement holds the file from its first step until it is reset,
     * and reads one state throughout. */
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT tag FROM legacy_tags", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_false(fileFree(path));
    int n = 1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        n++;
    }
    assert_int_equal(n, 7);
    assert_int_equal(sqlite3_reset(st), SQLITE_OK);
    assert_true(fileFree(path));
    fileAddTag(path, "between", 501);
    n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        n++;
    }
    assert_int_equal(n, 8);
    sqlite3_finalize(st);
    /* A write transaction holds it from its first write to COMMIT. */
    execOk(db, "BEGIN; INSERT INTO legacy_tags VALUES ('txn', 502)");
    assert_false(fileFree(path));
    execOk(db, "INSERT INTO legacy_tags VALUES ('txn2', 503)");
    execOk(db, "COMMIT");
    assert_true(fileFree(path));
    execOk(db, "BEGIN; DELETE FROM legacy_tags WHERE post_id >= 500");
    assert_false(fileFree(path));
    execOk(db, "ROLLBACK");
    assert_true(fileFree(path));
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 10);
    /* While another handle holds the file, planning and running a
     * statement wait a while, then fail (running: SQLITE_BUSY). */
    struct tpdb_file *f = NULL;
    char err[TPDB_ERRMSG_SIZE];
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM legacy_tags",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(tpdb_file_open(path, 0, &f, err), TPDB_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_BUSY);
    assert_non_null(strstr(sqlite3_errmsg(db), "05_indexes.tpdb"));
    sqlite3_reset(st);
    sqlite3_stmt *st2 = NULL;
    assert_int_not_equal(sqlite3_prepare_v2(db,
                                            "SELECT * FROM legacy_users "
                                            "WHERE id = 1",
                                            -1, &st2, NULL),
                         SQLITE_OK);
    assert_null(st2);
    tpdb_file_close(f);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 10);
    sqlite3_finalize(st);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 10);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_true(fileFree(path));
}

/* Outside a node's data directory the handle stays open between
 * statements. */
static void testKeptOpen(void **state)
{
    char path[1200];
    sqlite3 *db = openCopy(*state, "05_indexes", path, sizeof path);
    assert_false(fileFree(path));
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_tags"), 6);
    assert_false(fileFree(path));
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_true(fileFree(path));
}

static void testReadOnly(void **state)
{
    (void)state;
    sqlite3 *db = openFixture("02_types", "ro_");
    char *err = execErr(db, "DELETE FROM ro_t_types");
    assert_non_null(strstr(err, "read-only"));
    sqlite3_free(err);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM ro_t_types"), 8);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- Attach and errors -----------------------------------------------------
 */

static void testAttach(void **state)
{
    char path[1200];
    (void)state;
    sqlite3 *db = openDb();
    fixturePath(path, sizeof path, "05_indexes", ".tpdb");
    char *sql =
        sqlite3_mprintf("SELECT tpdb_attach(%Q, 'legacy_', 'ro')", path);
    assert_int_equal(queryInt(db, sql), 2);
    assert_int_equal(queryInt(db, sql), 0); /* names exist: skipped */
    sqlite3_free(sql);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM temp.sqlite_schema "
                              "WHERE name IN ('legacy_users', "
                              "'legacy_tags')"),
                     2);
    sql = sqlite3_mprintf(
        "CREATE VIRTUAL TABLE main.u2 USING "
        "tpdb_table('%q', 'users', 'ro')",
        path);
    execOk(db, sql);
    sqlite3_free(sql);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM u2"), 11);
    execOk(db, "DROP TABLE u2");
    assert_int_equal(queryInt(db, "SELECT count(*) FROM legacy_users"), 11);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void writeFile(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void testErrors(void **state)
{
    struct scratch *s = *state;
    char path[1200];
    char *sql, *err;
    sqlite3 *db = openDb();
    err = execErr(db,
                  "CREATE VIRTUAL TABLE x USING tpdb_table('/nonexistent"
                  "/a.tpdb', 't')");
    assert_non_null(strstr(err, "/nonexistent/a.tpdb"));
    sqlite3_free(err);
    err = execErr(db, "CREATE VIRTUAL TABLE x USING tpdb_table('a')");
    assert_non_null(strstr(err, "usage"));
    sqlite3_free(err);
    err = execErr(db, "SELECT tpdb_attach(NULL)");
    sqlite3_free(err);
    /* Bad magic. */
    snprintf(path, sizeof path, "%s/bad.tpdb", s->dir);
    writeFile(path,
              "NOTATPDB-and-some-more-bytes-to-make-sixty-four-bytes-"
              "long......",
              64);
    sql = sqlite3_mprintf("SELECT tpdb_attach(%Q)", path);
    err = execErr(db, sql);
    sqlite3_free(sql);
    assert_non_null(strstr(err, "bad.tpdb"));
    sqlite3_free(err);
    /* Unknown table and bad mode. */
    copyFixture(s, "02_types", path, sizeof path);
    sql = sqlite3_mprintf(
        "CREATE VIRTUAL TABLE x USING tpdb_table('%q', "
        "'nope')",
        path);
    err = execErr(db, sql);
    sqlite3_free(sql);
    assert_non_null(strstr(err, "no table"));
    sqlite3_free(err);
    sql = sqlite3_mprintf("SELECT tpdb_attach(%Q, '', 'rx')", path);
    err = execErr(db, sql);
    sqlite3_free(sql);
    sqlite3_free(err);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A garbage table root page: queries fail with the file's name, no crash. */
static void testCorruptPage(void **state)
{
    struct scratch *s = *state;
    char path[1200];
    unsigned char junk[4096];
    copyFixture(s, "02_types", path, sizeof path);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    memset(junk, 0xAB, sizeof junk);
    fseek(f, 64 + 4096, SEEK_SET); /* page 2: root of t_types */
    assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
    fclose(f);
    sqlite3 *db = openDb();
    char *sql = sqlite3_mprintf("SELECT tpdb_attach(%Q, '', 'ro')", path);
    assert_int_equal(queryInt(db, sql), 4);
    sqlite3_free(sql);
    char *err = execErr(db, "SELECT * FROM t_types");
    assert_non_null(strstr(err, "02_types.tpdb"));
    assert_non_null(strstr(err, "page 2"));
    sqlite3_free(err);
    err = execErr(db, "SELECT * FROM t_types WHERE id = 3");
    sqlite3_free(err);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t_nopk"), 4);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Differential test: the same random statements on a tpdb_table and on a
 * plain SQLite table leave the same contents, and indexed lookups agree. */
static void makeDiffFile(const char *path)
{
    struct tpdb_file *f;
    char errmsg[TPDB_ERRMSG_SIZE];
    const struct tpdb_column cols[] = {{"id", "INTEGER", 0, NULL},
                                       {"k", "TEXT", 0, NULL},
                                       {"n", "INTEGER", 0, NULL},
                                       {"r", "REAL", 0, NULL},
                                       {"b", "BLOB", 0, NULL}};
    const char *const kn[] = {"k", "n"};
    assert_int_equal(tpdb_file_open(path, TPDB_FILE_CREATE, &f, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdb_file_create_table(f, "t", cols, 5, 0), TPDB_OK);
    assert_int_equal(tpdb_file_create_index(f, "t_kn", "t", kn, 2, 0), TPDB_OK);
    assert_int_equal(tpdb_file_create_index(f, "t_n", "t", kn + 1, 1, 0),
                     TPDB_OK);
    tpdb_file_close(f);
}

static void randomStatement(char *sql, size_t n, unsigned *seed)
{
    int id = (int)(rand_r(seed) % 400) - 100;
    int v = (int)(rand_r(seed) % 60) - 30;
    switch (rand_r(seed) % 6) {
        case 5:
            snprintf(sql, n,
                     "UPDATE OR IGNORE %%s SET id = id + %d WHERE id = %d", v,
                     id);
            break;
        case 0:
        case 1:
            snprintf(sql, n,
                     "INSERT OR IGNORE INTO %%s VALUES (%d, 'k%d', %d, %d.5, "
                     "randomblob(%d))",
                     id, v % 7, v, v, (v + 30) * 40);
            break;
        case 2:
            snprintf(sql, n, "UPDATE %%s SET n = %d, k = 'k%d' WHERE id = %d",
                     v, v % 5, id);
            break;
        case 3:
            snprintf(sql, n, "UPDATE %%s SET r = r * 2 WHERE n = %d", v);
            break;
        default:
            snprintf(sql, n, "DELETE FROM %%s WHERE id BETWEEN %d AND %d", id,
                     id + v % 4);
            break;
    }
}

static void testDifferential(void **state)
{
    struct scratch *s = *state;
    char path[1200], tmpl[512];
    unsigned seed = 20261122;
    sqlite3 *db = openDb();
    snprintf(path, sizeof path, "%s/diff.tpdb", s->dir);
    makeDiffFile(path);
    char *q = sqlite3_mprintf(
        "CREATE VIRTUAL TABLE v USING tpdb_table(%Q, "
        "'t', 'rw')",
        path);
    execOk(db, q);
    sqlite3_free(q);
    execOk(db,
           "CREATE TABLE p (id INTEGER PRIMARY KEY, k TEXT, n INTEGER, "
           "r REAL, b BLOB)");
    for (int i = 0; i < 1500; i++) {
        randomStatement(tmpl, sizeof tmpl, &seed);
        if (i % 100 == 0) {
            execOk(db, "BEGIN");
        }
        for (int t = 0; t < 2; t++) {
            char *stmt = sqlite3_mprintf(tmpl, t == 0 ? "v" : "p");
            execOk(db, stmt);
            sqlite3_free(stmt);
        }
        if (i % 100 == 99) {
            execOk(db, i % 300 == 299 ? "ROLLBACK" : "COMMIT");
        }
    }
    static const char *const checks[] = {
        "SELECT count(*) FROM %s",
        "SELECT total(id * 3 + n) FROM %s",
        "SELECT total(length(b)) + total(r) FROM %s",
        "SELECT count(*) FROM %s WHERE k = 'k3'",
        "SELECT total(id) FROM %s WHERE k = 'k-2' AND n = -9",
        "SELECT total(id) FROM %s WHERE n = 12",
        "SELECT count(*) FROM %s WHERE id BETWEEN -50 AND 20",
        "SELECT group_concat(id) FROM (SELECT id FROM %s WHERE id < 0 "
        "ORDER BY id)",
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        char *a = sqlite3_mprintf(checks[i], "v");
        char *b = sqlite3_mprintf(checks[i], "p");
        sqlite3_stmt *sa, *sb;
        assert_int_equal(sqlite3_prepare_v2(db, a, -1, &sa, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, b, -1, &sb, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(sa), SQLITE_ROW);
        assert_int_equal(sqlite3_step(sb), SQLITE_ROW);
        const char *ta = (const char *)sqlite3_column_text(sa, 0);
        const char *tb = (const char *)sqlite3_column_text(sb, 0);
        assert_string_equal(ta != NULL ? ta : "-", tb != NULL ? tb : "-");
        sqlite3_finalize(sa);
        sqlite3_finalize(sb);
        sqlite3_free(a);
        sqlite3_free(b);
    }
    assert_true(queryInt(db, "SELECT count(*) FROM v") > 50);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Every tpdb allocation (registry, shared handle, the library's) fails in
 * turn: each failure is an SQL error, never a crash or a leak. */
static void testOom(void **state)
{
    char path[1200];
    int done = 0;
    (void)state;
    fixturePath(path, sizeof path, "05_indexes", ".tpdb");
    char *attach = sqlite3_mprintf("SELECT tpdb_attach(%Q, '', 'ro')", path);
    for (long n = 0; n < 100000 && !done; n++) {
        sqlite3 *db;
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
        tpdbAllocFailAfter(n);
        if (tpdbVtabRegister(db) == SQLITE_OK &&
            sqlite3_exec(db, attach, NULL, NULL, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db,
                               "SELECT sum(id) FROM users WHERE last = "
                               "'Lovelace'",
                               -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) {
                done = sqlite3_column_int(st, 0) == 11;
            }
            sqlite3_finalize(st);
        }
        tpdbAllocFailAfter(-1);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
    }
    assert_true(done);
    sqlite3_free(attach);
}

/* The genuine fixtures must never be written (git checks them out
 * writable, and as root even read-only permissions do not stop a read-write
 * open): their modification times are checked after every other test. */
static const char *const fixtureNames[] = {
    "01_empty",   "02_types",          "03_multipage", "04_overflow",
    "05_indexes", "07_catalog_shrunk", "08_deleted",   "09_altered"};
#define N_FIXTURES (sizeof fixtureNames / sizeof fixtureNames[0])
static struct timespec fixtureMtimes[2 * N_FIXTURES];
static size_t fixtureMtimesFound;

/* Fills out[] with the fixtures' modification times (zero for a file that
 * cannot be stat'ed) and returns how many were found. */
static size_t fixtureTimes(struct timespec *out)
{
    char path[1200];
    struct stat st;
    size_t found = 0;
    for (size_t i = 0; i < 2 * N_FIXTURES; i++) {
        fixturePath(path, sizeof path, fixtureNames[i / 2],
                    i % 2 ? ".tpdb-wal" : ".tpdb");
        memset(&out[i], 0, sizeof out[i]);
        if (stat(path, &st) == 0) {
            out[i] = st.st_mtim;
            found++;
        }
    }
    return found;
}

static void testFixturesUntouched(void **state)
{
    struct timespec now[2 * N_FIXTURES];
    (void)state;
    /* Missing fixtures would make the comparison pass vacuously. */
    assert_int_equal(fixtureMtimesFound, 2 * N_FIXTURES);
    assert_int_equal(fixtureTimes(now), 2 * N_FIXTURES);
    assert_memory_equal(now, fixtureMtimes, sizeof now);
}

int main(void)
{
    const char *root = getenv("TPDB_SOURCE_ROOT");
    snprintf(fixtureDir, sizeof fixtureDir, "%s/tests/fixtures/tpdb",
             root != NULL ? root : ".");
    fixtureMtimesFound = fixtureTimes(fixtureMtimes);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testFixture01),
        cmocka_unit_test(testFixture02),
        cmocka_unit_test(testFixture03),
        cmocka_unit_test(testFixture04),
        cmocka_unit_test(testFixture05),
        cmocka_unit_test(testFixture07),
        cmocka_unit_test(testFixture08),
        cmocka_unit_test(testFixture09),
        cmocka_unit_test(testQueryPlans),
        cmocka_unit_test(testNegativeRanges),
        cmocka_unit_test(testIndexKeys),
        cmocka_unit_test_setup_teardown(testWriteReadBack, setup, teardown),
        cmocka_unit_test_setup_teardown(testWriteErrors, setup, teardown),
        cmocka_unit_test_setup_teardown(testWriteReadBack, setupNodeDir,
                                        teardown),
        cmocka_unit_test_setup_teardown(testWriteErrors, setupNodeDir,
                                        teardown),
        cmocka_unit_test_setup_teardown(testTransient, setupNodeDir, teardown),
        cmocka_unit_test_setup_teardown(testKeptOpen, setup, teardown),
        cmocka_unit_test(testReadOnly),
        cmocka_unit_test(testAttach),
        cmocka_unit_test_setup_teardown(testErrors, setup, teardown),
        cmocka_unit_test_setup_teardown(testCorruptPage, setup, teardown),
        cmocka_unit_test_setup_teardown(testDifferential, setup, teardown),
        cmocka_unit_test(testOom),
        cmocka_unit_test(testFixturesUntouched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
