/* Unit tests for the schema side of shell/tpdb_export.c, tpdb_export_dflt.c
 * and tpdb_import.c: DEFAULTs written in TrashPandaDB's literal forms, the
 * unique index that enforces a TEXT or composite PRIMARY KEY in the
 * exported file, indexes TrashPandaDB cannot hold left out with a warning
 * (or refused with --strict), and a SQLite -> TPDB -> SQLite round trip
 * compared as far as the README says it keeps the schema. */
#include <regex.h>
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
#include "shell/tpdb_migrate.h"
#include "vfs/tpdbfile/tpdbfile.h"

static char buildRoot[1024];

struct scratch {
    char dir[64];
    char src[128];
    char tp[128];
    char back[128];
    FILE *warn; /* export warnings */
    struct tpdb_migrate_opts opts;
};

static int setup(void **state)
{
    struct scratch *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/test_migrate_schema.XXXXXX");
    if (s == NULL || mkdtemp(s->dir) == NULL) {
        return -1;
    }
    snprintf(s->src, sizeof s->src, "%s/src.db", s->dir);
    snprintf(s->tp, sizeof s->tp, "%s/out.tpdb", s->dir);
    snprintf(s->back, sizeof s->back, "%s/back.db", s->dir);
    s->warn = tmpfile();
    s->opts.version = 1;
    s->opts.progress = TPDB_PROGRESS_NEVER;
    s->opts.warn = s->warn;
    *state = s;
    return s->warn == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    struct scratch *s = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    fclose(s->warn);
    if (system(cmd) != 0) {
        return -1;
    }
    free(s);
    return 0;
}

static void execOk(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fail_msg("%s: %s", sql, err != NULL ? err : "?");
    }
}

static int64_t queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Text of the first column of the first row, malloc'ed ("" for none). */
static char *queryText(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    const char *t = sqlite3_step(st) == SQLITE_ROW
                        ? (const char *)sqlite3_column_text(st, 0)
                        : NULL;
    char *out = strdup(t != NULL ? t : "");
    sqlite3_finalize(st);
    return out;
}

static void makeDb(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    execOk(db, sql);
    sqlite3_close(db);
}

/* Everything written to the warning stream so far, malloc'ed. */
static char *warnings(struct scratch *s)
{
    long n = ftell(s->warn);
    char *buf = calloc(1, (size_t)n + 1);
    rewind(s->warn);
    assert_int_equal(fread(buf, 1, (size_t)n, s->warn), (size_t)n);
    return buf;
}

static void exportOk(struct scratch *s, struct tpdb_migrate_stats *stats)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    if (tpdbExport(s->src, s->tp, &s->opts, stats, errmsg) != TPDB_OK) {
        fail_msg("export: %s", errmsg);
    }
}

/* ---- DEFAULTs ---------------------------------------------------------------
 */

static const char *const defaultsSchema =
    "CREATE TABLE d (id INTEGER PRIMARY KEY,"
    " a REAL DEFAULT 1e3, b INTEGER DEFAULT 0x1F, c REAL DEFAULT -1.5e3,"
    " e BOOLEAN DEFAULT TRUE, f BOOLEAN DEFAULT FALSE, g DEFAULT (1 + 2),"
    " h TEXT DEFAULT 'it''s ü', i BLOB DEFAULT x'00fF10', j REAL DEFAULT 1,"
    " k DEFAULT 1e300, l DEFAULT 5e-324, m DEFAULT 0.1, n DEFAULT -0.0,"
    " o DEFAULT -9223372036854775808, p DEFAULT 9223372036854775807,"
    " q DEFAULT NULL, r TEXT DEFAULT 42, s NUMERIC DEFAULT '7',"
    " t DEFAULT (abs(-2.5) * 2), u DEFAULT 2.5e-7, v INT DEFAULT -0x10,"
    " w DEFAULT (hex('a')), x DEFAULT (date('2020-01-02', '+1 day')),"
    " y DEFAULT 123456789.125e-3,"
    /* No literal TrashPandaDB reads means these: */
    " z1 DEFAULT CURRENT_TIMESTAMP, z2 DEFAULT (random()),"
    " z3 REAL DEFAULT 1e999, z4 DEFAULT (datetime('now')),"
    " z5 DEFAULT (char(65, 0, 66)))";

/* Columns of `d` whose DEFAULT has no TrashPandaDB literal. */
static int leftOutColumn(const char *name)
{
    return name[0] == 'z';
}

/* Whether text is in the forms TrashPandaDB's parser reads (decimal
 * integers, decimal floats without exponent, strings, blobs, NULL), or the
 * one expression of integers the export writes for INT64_MIN. */
static int isTrashPandaLiteral(const char *text)
{
    static const char *const forms =
        "^(-?[0-9]+|-?[0-9]+\\.[0-9]+|'([^']|'')*'|X'([0-9A-F]{2})*'|NULL|"
        "\\(-9223372036854775807 - 1\\))$";
    regex_t re;
    assert_int_equal(regcomp(&re, forms, REG_EXTENDED | REG_NOSUB), 0);
    int ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* The value a TrashPandaDB literal stands for (strtod and strtoll read
 * numbers as Crystal does); text and blob bytes point into buf. */
static void literalValue(const char *text, uint8_t *buf, struct tpdb_value *v)
{
    if (strcmp(text, "(-9223372036854775807 - 1)") == 0) {
        v->type = TPDB_VINT;
        v->i = INT64_MIN;
        return;
    }
    assert_int_equal(tpdb_default_eval(text, buf, v), TPDB_OK);
    if (strchr(text, '.') != NULL && text[0] != '\'') {
        assert_int_equal(v->type, TPDB_VREAL);
        assert_true(strtod(text, NULL) == v->r);
    }
}

/* Column i of st (a row SQLite stored with every DEFAULT) equals v. */
static void assertSameValue(sqlite3_stmt *st, int i, const struct tpdb_value *v)
{
    static const int types[] = {[SQLITE_INTEGER] = TPDB_VINT,
                                [SQLITE_FLOAT] = TPDB_VREAL,
                                [SQLITE_TEXT] = TPDB_VTEXT,
                                [SQLITE_BLOB] = TPDB_VBLOB,
                                [SQLITE_NULL] = TPDB_VNULL};
    const char *name = sqlite3_column_name(st, i);
    int t = sqlite3_column_type(st, i);
    if (types[t] != v->type) {
        fail_msg("column %s: SQLite type %d, literal type %d", name, t,
                 v->type);
    }
    if (t == SQLITE_INTEGER) {
        assert_int_equal(sqlite3_column_int64(st, i), v->i);
    } else if (t == SQLITE_FLOAT) {
        double d = sqlite3_column_double(st, i);
        assert_memory_equal(&d, &v->r, sizeof d); /* also the sign of 0 */
    } else if (t == SQLITE_TEXT || t == SQLITE_BLOB) {
        assert_int_equal((size_t)sqlite3_column_bytes(st, i), v->len);
        assert_memory_equal(sqlite3_column_blob(st, i), v->base, v->len);
    }
}

/* The exported catalog holds every DEFAULT as a TrashPandaDB literal for
 * the value SQLite stores for it (affinity included); those without one
 * are left out, each with a warning naming table and column. */
static void testExportDefaults(void **state)
{
    struct scratch *s = *state;
    struct tpdb_migrate_stats stats;
    struct tpdb_file *f;
    sqlite3 *db;
    sqlite3_stmt *st;
    char errmsg[TPDB_ERRMSG_SIZE];
    uint8_t buf[256];
    makeDb(s->src, defaultsSchema);
    exportOk(s, &stats);
    assert_int_equal(stats.defaults_left_out, 5);
    assert_int_equal(tpdb_file_open(s->tp, TPDB_FILE_RDONLY, &f, errmsg),
                     TPDB_OK);
    const struct tpdb_table *t = tpdb_file_table_find(f, "d");
    assert_non_null(t);
    /* What SQLite stores for each DEFAULT, from the source itself. */
    assert_int_equal(sqlite3_open(s->src, &db), SQLITE_OK);
    execOk(db, "INSERT INTO d DEFAULT VALUES");
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT * FROM d", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal((unsigned)sqlite3_column_count(st), t->ncols);
    for (unsigned i = 1; i < t->ncols; i++) {
        const char *sql = t->cols[i].default_sql;
        struct tpdb_value v = {0};
        if (leftOutColumn(t->cols[i].name)) {
            assert_null(sql);
            continue;
        }
        assert_non_null(sql);
        if (!isTrashPandaLiteral(sql)) {
            fail_msg("column %s: DEFAULT %s", t->cols[i].name, sql);
        }
        literalValue(sql, buf, &v);
        assertSameValue(st, (int)i, &v);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* The spellings the issue names. */
    assert_string_equal(t->cols[1].default_sql, "1000.0");
    assert_string_equal(t->cols[2].default_sql, "31");
    assert_string_equal(t->cols[3].default_sql, "-1500.0");
    assert_string_equal(t->cols[4].default_sql, "1");
    assert_string_equal(t->cols[9].default_sql, "1.0");
    tpdb_file_close(f);
    char *w = warnings(s);
    assert_non_null(strstr(w, "table d, column z1: DEFAULT CURRENT_TIMESTAMP"));
    assert_non_null(strstr(w, "table d, column z3: DEFAULT 1e999"));
    assert_non_null(strstr(w, "column z5"));
    free(w);
}

/* With --strict, a DEFAULT without a literal fails the export, naming
 * table and column, and leaves nothing behind. */
static void testExportDefaultsStrict(void **state)
{
    struct scratch *s = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    makeDb(s->src,
           "CREATE TABLE ok (a REAL DEFAULT 1e3);"
           "CREATE TABLE late (a INTEGER, at TEXT DEFAULT CURRENT_TIME)");
    s->opts.strict = 1;
    assert_int_equal(tpdbExport(s->src, s->tp, &s->opts, NULL, errmsg),
                     TPDB_INVALID);
    assert_non_null(strstr(errmsg, "table late, column at"));
    assert_int_equal(access(s->tp, F_OK), -1);
    assert_int_equal(ftell(s->warn), 0);
}

/* ---- Keys ---------------------------------------------------------------- */

static struct tpdb_value textValue(const char *s)
{
    struct tpdb_value v = {
        .type = TPDB_VTEXT, .base = (const uint8_t *)s, .len = strlen(s)};
    return v;
}

static struct tpdb_value intValue(int64_t i)
{
    struct tpdb_value v = {.type = TPDB_VINT, .i = i};
    return v;
}

/* A duplicate TEXT key (or composite key) written into the exported file,
 * as TrashPandaDB's own INSERT would, is refused by the file's `_pk_`
 * index; distinct keys are accepted, and the file still imports. */
static void testExportTextKeyUnique(void **state)
{
    struct scratch *s = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_migrate_stats stats;
    struct tpdb_file *f;
    makeDb(s->src,
           "CREATE TABLE k (code TEXT PRIMARY KEY, qty INT);"
           "INSERT INTO k VALUES ('A-1', 1), ('B-2', 2);"
           "CREATE TABLE c (x INTEGER, y TEXT, PRIMARY KEY (x, y));"
           "INSERT INTO c VALUES (1, 'a'), (1, 'b')");
    exportOk(s, &stats);
    assert_int_equal(stats.indexes, 2);
    assert_int_equal(tpdb_file_open(s->tp, 0, &f, errmsg), TPDB_OK);
    const struct tpdb_index *ix = tpdb_file_index_find(f, "_pk_k");
    assert_non_null(ix);
    assert_true(ix->unique);
    assert_int_equal(ix->ncols, 1);
    assert_string_equal(ix->cols[0], "code");
    struct tpdb_value row[2] = {textValue("A-1"), intValue(3)};
    assert_int_equal(tpdb_file_insert(f, "k", row, 2, NULL), TPDB_INVALID);
    row[0] = textValue("C-3");
    assert_int_equal(tpdb_file_insert(f, "k", row, 2, NULL), TPDB_OK);
    row[0] = intValue(1);
    row[1] = textValue("b");
    assert_int_equal(tpdb_file_insert(f, "c", row, 2, NULL), TPDB_INVALID);
    row[1] = textValue("c");
    assert_int_equal(tpdb_file_insert(f, "c", row, 2, NULL), TPDB_OK);
    tpdb_file_close(f);
    if (tpdbImport(s->tp, s->back, &s->opts, &stats, errmsg) != TPDB_OK) {
        fail_msg("import: %s", errmsg);
    }
    assert_int_equal(stats.rows, 6);
}

/* An AUTOINCREMENT table's counter becomes the exported table's
 * next_rowid: a row TrashPandaDB inserts without a key does not reuse the
 * rowid of a row deleted in SQLite. */
static void testExportAutoincrement(void **state)
{
    struct scratch *s = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_file *f;
    int64_t id;
    makeDb(s->src,
           "CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);"
           "INSERT INTO seq (v) VALUES ('a'), ('b'), ('c');"
           "DELETE FROM seq WHERE id = 3;"
           "CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT);"
           "INSERT INTO plain (v) VALUES ('a'), ('b'), ('c');"
           "DELETE FROM plain WHERE id = 3");
    exportOk(s, NULL);
    assert_int_equal(tpdb_file_open(s->tp, 0, &f, errmsg), TPDB_OK);
    assert_int_equal(tpdb_file_table_find(f, "seq")->next_rowid, 4);
    assert_int_equal(tpdb_file_table_find(f, "plain")->next_rowid, 3);
    struct tpdb_value row[2] = {{.type = TPDB_VNULL}, textValue("d")};
    assert_int_equal(tpdb_file_insert(f, "seq", row, 2, &id), TPDB_OK);
    assert_int_equal(id, 4);
    tpdb_file_close(f);
}

/* ---- Indexes TrashPandaDB cannot hold -------------------------------------
 */

static const char *const realIndexSchema =
    "CREATE TABLE t (a INTEGER, r REAL, b BLOB, s TEXT);"
    "CREATE INDEX t_a ON t(a);"
    "CREATE INDEX t_r ON t(r);"
    "CREATE INDEX t_sb ON t(s, b);"
    "CREATE INDEX t_e ON t(a + 1);"
    "CREATE INDEX t_p ON t(s) WHERE a > 0;"
    "CREATE UNIQUE INDEX t_s ON t(s);"
    "CREATE TABLE empty_real (x REAL UNIQUE);"
    "INSERT INTO t VALUES (1, 1.5, x'01', 'one'), (2, NULL, NULL, 'two')";

/* The database exports without the indexes TrashPandaDB cannot hold, with
 * one warning naming each; the rest of the file is complete. */
static void testExportLeavesOutIndexes(void **state)
{
    struct scratch *s = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_migrate_stats stats;
    struct tpdb_file *f;
    uint64_t rows = 0;
    makeDb(s->src, realIndexSchema);
    exportOk(s, &stats);
    assert_int_equal(stats.indexes, 2); /* t_a, t_s */
    assert_int_equal(stats.indexes_left_out, 5);
    assert_int_equal(stats.rows, 2);
    char *w = warnings(s);
    assert_non_null(strstr(w, "index t_r on t(r): column r is declared REAL"));
    assert_non_null(strstr(w, "index t_sb on t(s, b): column b holds BLOB"));
    assert_non_null(strstr(w, "index t_e on t"));
    assert_non_null(strstr(w,
                           "index t_p on t(s): a TPDB index cannot be "
                           "partial"));
    /* A REAL column's index, even with no rows to trip over. */
    assert_non_null(strstr(w, "on empty_real(x)"));
    free(w);
    assert_int_equal(tpdb_file_open(s->tp, TPDB_FILE_RDONLY, &f, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdb_file_index_count(f), 2);
    assert_non_null(tpdb_file_index_find(f, "t_a"));
    assert_non_null(tpdb_file_index_find(f, "t_s"));
    struct tpdb_cursor *c;
    assert_int_equal(tpdb_cursor_open_table(f, "t", &c), TPDB_OK);
    for (int rc = tpdb_cursor_first(c); rc == TPDB_OK && !tpdb_cursor_eof(c);
         rc = tpdb_cursor_next(c)) {
        rows++;
    }
    tpdb_cursor_close(c);
    tpdb_file_close(f);
    assert_int_equal(rows, 2);
}

/* --strict refuses the same database, naming the first index. */
static void testExportStrictIndex(void **state)
{
    struct scratch *s = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    makeDb(s->src,
           "CREATE TABLE t (a INTEGER, r REAL); CREATE INDEX t_r ON t(r);"
           "INSERT INTO t VALUES (1, 1.5)");
    s->opts.strict = 1;
    assert_int_equal(tpdbExport(s->src, s->tp, &s->opts, NULL, errmsg),
                     TPDB_INVALID);
    assert_non_null(strstr(errmsg, "index t_r on t(r)"));
    assert_int_equal(access(s->tp, F_OK), -1);
}

/* Runs the tpdb program, its stderr into *err (malloc'ed); returns its
 * exit status. */
static int runTpdb(struct scratch *s, const char *args, char **err)
{
    char cmd[2048], path[128];
    snprintf(path, sizeof path, "%s/stderr.txt", s->dir);
    snprintf(cmd, sizeof cmd, "'%s/shell/tpdb' %s >/dev/null 2>'%s'", buildRoot,
             args, path);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    *err = calloc(1, 4096);
    assert_true(fread(*err, 1, 4095, f) > 0);
    fclose(f);
    unlink(path);
    return WEXITSTATUS(st);
}

/* The command line prints the warning and says so in its summary line;
 * --strict makes it fail. */
static void testCommandLineWarnings(void **state)
{
    struct scratch *s = *state;
    char args[600], *err;
    makeDb(s->src, realIndexSchema);
    snprintf(args, sizeof args, "export --strict '%s' '%s'", s->src, s->tp);
    assert_int_equal(runTpdb(s, args, &err), 1);
    assert_non_null(strstr(err, "index t_"));
    free(err);
    snprintf(args, sizeof args, "export --quiet '%s' '%s'", s->src, s->tp);
    assert_int_equal(runTpdb(s, args, &err), 0);
    assert_non_null(strstr(err, "warning: index t_r on t(r)"));
    assert_non_null(strstr(err, "left out: 5 indexes, 0 defaults"));
    free(err);
    snprintf(args, sizeof args, "import --strict '%s' '%s'", s->tp, s->back);
    assert_int_equal(runTpdb(s, args, &err), 2); /* export only */
    free(err);
}

/* ---- Round trip ------------------------------------------------------------
 */

static const char *const roundTripSchema =
    "CREATE TABLE d (id INTEGER PRIMARY KEY, a REAL DEFAULT 1e3,"
    " b INTEGER DEFAULT 0x1F, c REAL DEFAULT -1.5e3, e BOOLEAN DEFAULT TRUE,"
    " g NUMERIC DEFAULT (1 + 2), h TEXT NOT NULL DEFAULT 'x''y',"
    " i BLOB DEFAULT x'0A', ts TEXT DEFAULT CURRENT_TIMESTAMP);"
    "CREATE TABLE k (code TEXT PRIMARY KEY, qty INT DEFAULT -4);"
    "CREATE TABLE comp (x INTEGER NOT NULL, y TEXT NOT NULL, v BLOB,"
    " PRIMARY KEY (x, y));"
    "CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE wr (a TEXT, b INTEGER, c REAL, PRIMARY KEY (b, a))"
    " WITHOUT ROWID;"
    "CREATE TABLE m (r REAL, s TEXT, n INTEGER, UNIQUE (s, n));"
    "CREATE INDEX m_r ON m(r);"
    "CREATE INDEX m_ns ON m(n, s);"
    "INSERT INTO d (id, h) VALUES (1, 'one');"
    "INSERT INTO d VALUES (2, 2.5, -7, 0.0, 0, 1.25, '', NULL, NULL);"
    "INSERT INTO k VALUES ('B-2', 5), ('A-1', NULL);"
    "INSERT INTO comp VALUES (1, 'a', x'01'), (1, 'b', NULL), (-2, 'a', x'');"
    "INSERT INTO seq (name) VALUES ('first'), ('second');"
    "INSERT INTO wr VALUES ('p', 2, 0.5), ('q', 1, NULL), ('p', 1, -1.0);"
    "INSERT INTO m VALUES (1.5, 'a', 1), (NULL, 'a', 2), (-0.25, NULL, 3)";

/* Columns (name, type, NOT NULL, position in the PRIMARY KEY) of table. */
static char *columnsOf(sqlite3 *db, const char *table)
{
    char *sql = sqlite3_mprintf(
        "SELECT group_concat(name || ':' || type || ':' || \"notnull\" || "
        "':' || pk, ',') FROM pragma_table_info(%Q)",
        table);
    char *out = queryText(db, sql);
    sqlite3_free(sql);
    return out;
}

/* Indexes of table: origin, uniqueness, columns, and the name of explicit
 * ones (SQLite names the automatic ones itself). */
static char *indexesOf(sqlite3 *db, const char *table)
{
    char *sql = sqlite3_mprintf(
        "SELECT group_concat(x, ';') FROM (SELECT l.origin || ':' || "
        "l.\"unique\" || ':' || iif(l.origin = 'c', l.name, '') || ':' || "
        "(SELECT group_concat(name) FROM (SELECT name FROM "
        "pragma_index_info(l.name) ORDER BY seqno)) AS x FROM "
        "pragma_index_list(%Q) AS l ORDER BY x)",
        table);
    char *out = queryText(db, sql);
    sqlite3_free(sql);
    return out;
}

/* Identical rows, value for value and type for type, in `order`. */
static void assertSameRows(sqlite3 *a,
                           sqlite3 *b,
                           const char *table,
                           const char *order)
{
    sqlite3_stmt *sa, *sb;
    char *sql =
        sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY %s", table, order);
    assert_int_equal(sqlite3_prepare_v2(a, sql, -1, &sa, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(b, sql, -1, &sb, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_column_count(sa), sqlite3_column_count(sb));
    while (sqlite3_step(sa) == SQLITE_ROW) {
        assert_int_equal(sqlite3_step(sb), SQLITE_ROW);
        for (int i = 0; i < sqlite3_column_count(sa); i++) {
            int n = sqlite3_column_bytes(sa, i);
            assert_int_equal(sqlite3_column_type(sb, i),
                             sqlite3_column_type(sa, i));
            assert_int_equal(sqlite3_column_bytes(sb, i), n);
            if (n > 0) {
                assert_memory_equal(sqlite3_column_blob(sa, i),
                                    sqlite3_column_blob(sb, i), (size_t)n);
            }
        }
    }
    assert_int_equal(sqlite3_step(sb), SQLITE_DONE);
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    sqlite3_free(sql);
}

static void assertSameText(char *x, char *y, const char *what)
{
    if (strcmp(x, y) != 0) {
        fail_msg("%s: source %s, round trip %s", what, x, y);
    }
    free(x);
    free(y);
}

/* What the README promises a round trip keeps: rows, column names,
 * (upper-case) types, NOT NULL, every PRIMARY KEY with its column order,
 * UNIQUE constraints and indexes TrashPandaDB can hold, and the value of
 * every constant DEFAULT. */
static void assertKept(sqlite3 *a, sqlite3 *b)
{
    static const char *const tables[][2] = {{"d", "id"},      {"k", "code"},
                                            {"comp", "x, y"}, {"seq", "id"},
                                            {"wr", "b, a"},   {"m", "n"}};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        assertSameRows(a, b, tables[i][0], tables[i][1]);
        assertSameText(columnsOf(a, tables[i][0]), columnsOf(b, tables[i][0]),
                       tables[i][0]);
        assertSameText(indexesOf(a, tables[i][0]), indexesOf(b, tables[i][0]),
                       tables[i][0]);
    }
    /* Defaults: a row relying on them holds the same values on both
     * sides, except the CURRENT_TIMESTAMP left out. */
    const char *ins =
        "INSERT INTO d (id, h) VALUES (100, 'h');"
        "INSERT INTO k (code) VALUES ('new');"
        "UPDATE d SET ts = NULL WHERE id = 100";
    execOk(a, ins);
    execOk(b, ins);
    assertSameRows(a, b, "d", "id");
    assertSameRows(a, b, "k", "code");
    /* Keys are enforced again. */
    assert_int_not_equal(
        sqlite3_exec(b, "INSERT INTO k VALUES ('A-1', 9)", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(b, "INSERT INTO comp VALUES (1, 'a', 0)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
}

/* SQLite -> TPDB -> SQLite of a schema with every construct above. */
static void testRoundTripSchema(void **state)
{
    struct scratch *s = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_migrate_stats stats;
    sqlite3 *a, *b;
    makeDb(s->src, roundTripSchema);
    exportOk(s, &stats);
    assert_int_equal(stats.indexes_left_out, 1);  /* m_r */
    assert_int_equal(stats.defaults_left_out, 1); /* d.ts */
    if (tpdbImport(s->tp, s->back, &s->opts, &stats, errmsg) != TPDB_OK) {
        fail_msg("import: %s", errmsg);
    }
    assert_int_equal(sqlite3_open(s->src, &a), SQLITE_OK);
    assert_int_equal(sqlite3_open(s->back, &b), SQLITE_OK);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM sqlite_schema WHERE "
                              "name = 'm_r'"),
                     0);
    /* Everything else compares equal. */
    execOk(a, "DROP INDEX m_r");
    assertKept(a, b);
    /* What it cannot keep, as the README says: the index over REAL
     * values, the CURRENT_TIMESTAMP default, AUTOINCREMENT and WITHOUT
     * ROWID. */
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM sqlite_schema WHERE "
                              "name = 'm_r'"),
                     0);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM pragma_table_info('d') "
                              "WHERE name = 'ts' AND dflt_value IS NULL"),
                     1);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM sqlite_schema WHERE "
                              "sql LIKE '%AUTOINCREMENT%' OR sql LIKE "
                              "'%WITHOUT ROWID%'"),
                     0);
    sqlite3_close(a);
    sqlite3_close(b);
}

int main(void)
{
    const char *build = getenv("TPDB_BUILD_ROOT");
    snprintf(buildRoot, sizeof buildRoot, "%s", build != NULL ? build : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testExportDefaults, setup, teardown),
        cmocka_unit_test_setup_teardown(testExportDefaultsStrict, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testExportTextKeyUnique, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testExportAutoincrement, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testExportLeavesOutIndexes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testExportStrictIndex, setup, teardown),
        cmocka_unit_test_setup_teardown(testCommandLineWarnings, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testRoundTripSchema, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
