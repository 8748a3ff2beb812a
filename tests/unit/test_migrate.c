/* Unit tests for shell/tpdb_migrate.c and the tpdb program: every genuine
 * fixture imported and compared with its manifest, SQLite -> TPDB -> SQLite
 * round trips for every value type, failures leaving no output, progress
 * output and the command line's exit codes. */
#include <dirent.h>
#include <setjmp.h>
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
#include "shell/tpdb_migrate.h"
#include "vfs/tpdbfile/tpdbfile.h"

static char fixtureDir[1024];
static char buildRoot[1024];

static const struct tpdb_migrate_opts quiet = {.version = 1,
                                               .progress = TPDB_PROGRESS_NEVER};

struct scratch {
    char dir[64];
};

static int setup(void **state)
{
    struct scratch *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/test_migrate.XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        return -1;
    }
    *state = s;
    return 0;
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

static void scratchPath(struct scratch *s,
                        const char *name,
                        char *out,
                        size_t n)
{
    snprintf(out, n, "%s/%s", s->dir, name);
}

/* Number of entries in the scratch directory. */
static int dirEntries(struct scratch *s)
{
    DIR *d = opendir(s->dir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
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

/* ---- Manifest helpers -----------------------------------------------------
 */

static int hexVal(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : (c | 32) - 'a' + 10;
}

static size_t unhex(const char *hex, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n / 2; i++) {
        out[i] =
            (unsigned char)(hexVal(hex[2 * i]) * 16 + hexVal(hex[2 * i + 1]));
    }
    return n / 2;
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

/* Checks column i against a manifest token. SQLite applies the declared
 * type's affinity on insert, so an INTEGER stored by TrashPandaDB in a REAL
 * column comes back as the equal REAL: that is accepted. */
static void checkValue(sqlite3_stmt *st,
                       int i,
                       const char *tok,
                       size_t len,
                       const char *ctx)
{
    static unsigned char buf[1 << 18];
    char num[40];
    int type = sqlite3_column_type(st, i);
    snprintf(num, sizeof num, "%.*s", (int)(len > 2 ? len - 2 : 0), tok + 2);
    if (tok[0] == 'N') {
        assert_int_equal(type, SQLITE_NULL);
    } else if (tok[0] == 'I' || tok[0] == 'Z') {
        if (type == SQLITE_FLOAT) {
            assert_true(sqlite3_column_double(st, i) ==
                        (double)strtoll(num, NULL, 10));
        } else {
            if (type != SQLITE_INTEGER) {
                fail_msg("%s col %d: want %s, type %d", ctx, i, num, type);
            }
            assert_int_equal(sqlite3_column_int64(st, i),
                             strtoll(num, NULL, 10));
        }
    } else if (tok[0] == 'R') {
        uint64_t u = strtoull(num, NULL, 16);
        double d, got = sqlite3_column_double(st, i);
        memcpy(&d, &u, sizeof d);
        assert_int_equal(type, SQLITE_FLOAT);
        assert_memory_equal(&got, &d, sizeof d);
    } else {
        size_t n = unhex(tok + 2, len - 2, buf);
        assert_int_equal(type, tok[0] == 'T' ? SQLITE_TEXT : SQLITE_BLOB);
        const void *p = tok[0] == 'T' ? (const void *)sqlite3_column_text(st, i)
                                      : sqlite3_column_blob(st, i);
        assert_int_equal((size_t)sqlite3_column_bytes(st, i), n);
        if (n > 0) {
            assert_memory_equal(p, buf, n);
        }
    }
}

/* `row <table> <rowid> <stored> values...`: the imported row with that
 * rowid holds those values. */
static void checkRowLine(sqlite3 *db, const char *line)
{
    char table[300];
    long long rowid;
    int stored, off;
    sqlite3_stmt *st;
    assert_int_equal(
        sscanf(line, "row %299s %lld %d %n", table, &rowid, &stored, &off), 3);
    char *sql = sqlite3_mprintf("SELECT * FROM \"%w\" WHERE _rowid_ = %lld",
                                table, rowid);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_msg("%s: no row", sql);
    }
    const char *toks = line + off;
    for (int i = 0; *toks != '\0'; i++) {
        const char *end = strchr(toks, ' ');
        size_t n = end != NULL ? (size_t)(end - toks) : strlen(toks);
        assert_true(i < sqlite3_column_count(st));
        checkValue(st, i, toks, n, sql);
        toks += n + (end != NULL);
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
}

/* `table <name> ... nrows=N` and `col <table> <i> <name> type=<hex>
 * not_null=<0|1> default=<-|hex>` against the imported schema. */
static void checkTableLine(sqlite3 *db, const char *line)
{
    char table[300];
    char *nr = strstr(line, " nrows=");
    assert_int_equal(sscanf(line, "table %299s", table), 1);
    assert_non_null(nr);
    char *sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", table);
    assert_int_equal(queryInt(db, sql), atoll(nr + 7));
    sqlite3_free(sql);
}

static void checkColLine(sqlite3 *db, const char *line)
{
    char table[300], name[600], type[600], dflt[600];
    unsigned char tname[300];
    int idx, notnull;
    sqlite3_stmt *st;
    assert_int_equal(sscanf(line,
                            "col %299s %d %599s type=%599s not_null=%d "
                            "default=%599s",
                            table, &idx, name, type, &notnull, dflt),
                     6);
    tname[unhex(type, strlen(type), tname)] = '\0';
    char *sql = sqlite3_mprintf(
        "SELECT name, type, \"notnull\", dflt_value "
        "FROM pragma_table_info(%Q) WHERE cid = %d",
        table, idx);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(st, 0), name);
    assert_string_equal(sqlite3_column_text(st, 1), tname);
    assert_int_equal(sqlite3_column_int(st, 2), notnull);
    assert_int_equal(sqlite3_column_type(st, 3) != SQLITE_NULL,
                     strcmp(dflt, "-") != 0);
    sqlite3_finalize(st);
    sqlite3_free(sql);
}

/* `index <name> table=<t> cols=a,b root=.. unique=<0|1>`: SQLite has an
 * index with those columns and uniqueness (a column UNIQUE constraint for
 * TrashPandaDB's implicit _uq_ indexes). */
static void checkIndexLine(sqlite3 *db, const char *line)
{
    char name[300], table[300], cols[600];
    int unique;
    char *sql;
    const char *u = strstr(line, " unique=");
    assert_int_equal(
        sscanf(line, "index %299s table=%299s cols=%599s", name, table, cols),
        3);
    assert_non_null(u);
    unique = atoi(u + 8);
    for (char *c = cols; *c != '\0'; c++) {
        *c = *c == ',' ? '|' : *c;
    }
    sql = sqlite3_mprintf(
        "SELECT count(*) FROM pragma_index_list(%Q) AS l WHERE l.\"unique\" "
        "= %d AND (SELECT group_concat(name, '|') FROM (SELECT name FROM "
        "pragma_index_info(l.name) ORDER BY seqno)) = %Q AND (l.name = %Q OR "
        "l.origin = 'u')",
        table, unique, cols, name);
    if (queryInt(db, sql) < 1) {
        fail_msg("index %s on %s(%s) missing", name, table, cols);
    }
    sqlite3_free(sql);
}

static void importFixture(struct scratch *s, const char *name)
{
    char src[1200], dest[1200];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_migrate_stats stats;
    sqlite3 *db;
    snprintf(src, sizeof src, "%s/%s.tpdb", fixtureDir, name);
    snprintf(dest, sizeof dest, "%s/%s.db", s->dir, name);
    int rc = tpdbImport(src, dest, &quiet, &stats, errmsg);
    if (rc != TPDB_OK) {
        fail_msg("import %s: %s", name, errmsg);
    }
    snprintf(src, sizeof src, "%s/%s.manifest.txt", fixtureDir, name);
    char *text = readAll(src), *p = text, *line;
    uint64_t rows = 0;
    assert_int_equal(sqlite3_open_v2(dest, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    while ((line = nextLine(&p)) != NULL) {
        if (strncmp(line, "table ", 6) == 0) {
            checkTableLine(db, line);
        } else if (strncmp(line, "col ", 4) == 0) {
            checkColLine(db, line);
        } else if (strncmp(line, "row ", 4) == 0) {
            checkRowLine(db, line);
            rows++;
        } else if (strncmp(line, "index ", 6) == 0) {
            checkIndexLine(db, line);
        }
    }
    assert_int_equal(stats.rows, rows);
    assert_string_equal(sqlite3_db_readonly(db, "main") ? "ok" : "rw", "ok");
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM pragma_integrity_check "
                              "WHERE integrity_check != 'ok'"),
                     0);
    sqlite3_close(db);
    free(text);
}

static void testImportFixtures(void **state)
{
    static const char *const names[] = {
        "01_empty",   "02_types",          "03_multipage", "04_overflow",
        "05_indexes", "07_catalog_shrunk", "08_deleted",   "09_altered"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        importFixture(*state, names[i]);
    }
    /* The sources are untouched: imports open them read-only. */
}

/* ---- Round trips -----------------------------------------------------------
 */

static const char *const roundTripSchema =
    "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, "
    "s TEXT NOT NULL DEFAULT 'dflt', b BLOB, u TEXT UNIQUE, n NUMERIC "
    "DEFAULT (1 + 2));"
    "CREATE INDEX t_i ON t(i);"
    "CREATE INDEX t_su ON t(s, u);"
    "CREATE TABLE nopk (a, b TEXT, c REAL);"
    "CREATE TABLE comp (x INTEGER NOT NULL, y TEXT NOT NULL, v BLOB, "
    "PRIMARY KEY (x, y));"
    "CREATE TABLE tpk (code TEXT PRIMARY KEY, qty INT DEFAULT -4);"
    "CREATE TABLE empty (z INTEGER);";

static const char *const roundTripRows =
    "INSERT INTO t VALUES (1, 0, 0.0, '', x'', NULL, NULL);"
    "INSERT INTO t VALUES (-5, -9223372036854775808, -1.5e300, 'négatif ü✓', "
    "x'00010200ff', 'u1', 7);"
    "INSERT INTO t VALUES (9223372036854775807, 9223372036854775807, "
    "2.2250738585072014e-308, 'line1' || char(10) || 'line2', "
    "zeroblob(5000), 'u2', 1.25);"
    "INSERT INTO t VALUES (3, NULL, -0.0, 'x', NULL, NULL, 'text in numeric');"
    "INSERT INTO t (id, i, s) VALUES (4, -1, 'defaults');"
    "INSERT INTO t (id, i, s, b) VALUES (5, 42, 'big', randomblob(20000));"
    "INSERT INTO t (id, i, s, n) VALUES (6, 1, 'big text', "
    "printf('%.*c', 9000, 'z'));"
    "INSERT INTO nopk VALUES (1, 'one', 1.1), (NULL, NULL, NULL), "
    "('text in untyped', x'ff00', -3), (-3, 'neg', 2.5);"
    "DELETE FROM nopk WHERE a IS NULL;"
    "INSERT INTO comp VALUES (1, 'a', x'01'), (1, 'b', NULL), (-2, 'a', x'');"
    "INSERT INTO tpk VALUES ('B-2', 5), ('A-1', NULL), ('C-3', -12);";

/* Identical rows, value for value and type for type, in `order`. */
static void assertSameTable(sqlite3 *a,
                            sqlite3 *b,
                            const char *table,
                            const char *order)
{
    char *sql =
        sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY %s", table, order);
    sqlite3_stmt *sa, *sb;
    int rows = 0;
    assert_int_equal(sqlite3_prepare_v2(a, sql, -1, &sa, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(b, sql, -1, &sb, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(b));
    }
    assert_int_equal(sqlite3_column_count(sa), sqlite3_column_count(sb));
    while (sqlite3_step(sa) == SQLITE_ROW) {
        assert_int_equal(sqlite3_step(sb), SQLITE_ROW);
        for (int i = 0; i < sqlite3_column_count(sa); i++) {
            int t = sqlite3_column_type(sa, i);
            assert_int_equal(sqlite3_column_type(sb, i), t);
            int n = sqlite3_column_bytes(sa, i);
            assert_int_equal(sqlite3_column_bytes(sb, i), n);
            if (t == SQLITE_FLOAT) {
                double x = sqlite3_column_double(sa, i);
                double y = sqlite3_column_double(sb, i);
                assert_memory_equal(&x, &y, sizeof x);
            } else if (n > 0) {
                assert_memory_equal(sqlite3_column_blob(sa, i),
                                    sqlite3_column_blob(sb, i), (size_t)n);
            }
        }
        rows++;
    }
    assert_int_equal(sqlite3_step(sb), SQLITE_DONE);
    assert_true(rows >= 0);
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    sqlite3_free(sql);
}

static void makeSource(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    execOk(db, roundTripSchema);
    execOk(db, roundTripRows);
    sqlite3_close(db);
}

static void testRoundTrip(void **state)
{
    struct scratch *s = *state;
    char src[256], tp[256], back[256];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_migrate_stats stats;
    sqlite3 *a, *b;
    scratchPath(s, "src.db", src, sizeof src);
    scratchPath(s, "mid.tpdb", tp, sizeof tp);
    scratchPath(s, "back.db", back, sizeof back);
    makeSource(src);
    if (tpdbExport(src, tp, &quiet, &stats, errmsg) != TPDB_OK) {
        fail_msg("export: %s", errmsg);
    }
    assert_int_equal(stats.tables, 5);
    assert_int_equal(stats.rows, 7 + 3 + 3 + 3);
    /* t_i, t_su, UNIQUE(u), and _pk_ indexes for comp's composite key and
     * tpk's TEXT key (TrashPandaDB does not enforce its pk_idx, B6). */
    assert_int_equal(stats.indexes, 5);
    assert_int_equal(stats.indexes_left_out, 0);
    assert_int_equal(stats.defaults_left_out, 0);
    if (tpdbImport(tp, back, &quiet, &stats, errmsg) != TPDB_OK) {
        fail_msg("import: %s", errmsg);
    }
    assert_int_equal(stats.rows, 16);
    assert_int_equal(sqlite3_open(src, &a), SQLITE_OK);
    assert_int_equal(sqlite3_open(back, &b), SQLITE_OK);
    assertSameTable(a, b, "t", "id");
    assertSameTable(a, b, "nopk", "rowid");
    assertSameTable(a, b, "comp", "x, y");
    assertSameTable(a, b, "tpk", "code");
    assertSameTable(a, b, "empty", "z");
    /* Rowid order survives in tables without an INTEGER PRIMARY KEY. */
    assertSameTable(a, b, "nopk", "a");
    /* Schema: types, NOT NULL, DEFAULT, UNIQUE and the indexes. */
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM pragma_table_info('t') "
                              "WHERE name = 's' AND \"notnull\" = 1 AND "
                              "dflt_value = '''dflt'''"),
                     1);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM pragma_table_info('t') "
                              "WHERE name = 'n' AND type = 'NUMERIC' AND "
                              "dflt_value IS NOT NULL"),
                     1);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM pragma_index_list('t') "
                              "WHERE \"unique\" = 1 AND origin = 'u'"),
                     1);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM sqlite_schema WHERE "
                              "type = 'index' AND name IN ('t_i', 't_su')"),
                     2);
    assert_int_equal(queryInt(b,
                              "SELECT count(*) FROM pragma_table_info('t') "
                              "WHERE name = 'id' AND pk = 1"),
                     1);
    execOk(b, "INSERT INTO t (id, s) VALUES (100, 'new')");
    assert_int_equal(queryInt(b, "SELECT n FROM t WHERE id = 100"), 3);
    assert_int_not_equal(sqlite3_exec(b,
                                      "INSERT INTO t (id, s, u) VALUES "
                                      "(101, 'x', 'u1')",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    sqlite3_close(a);
    sqlite3_close(b);
}

/* ---- Failures leave nothing behind ------------------------------------------
 */

static void testExportFailure(void **state)
{
    struct scratch *s = *state;
    char src[256], out[256];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_migrate_opts strict = quiet;
    sqlite3 *db;
    strict.strict = 1;
    scratchPath(s, "bad.db", src, sizeof src);
    scratchPath(s, "out.tpdb", out, sizeof out);
    assert_int_equal(sqlite3_open(src, &db), SQLITE_OK);
    /* The format cannot index a REAL value (TrashPandaDB defect B3): a
     * strict export fails as a whole. */
    execOk(db,
           "CREATE TABLE t (a INTEGER, r REAL); CREATE INDEX t_r ON t(r);"
           "INSERT INTO t VALUES (1, 1.5)");
    sqlite3_close(db);
    int before = dirEntries(s);
    assert_int_not_equal(tpdbExport(src, out, &strict, NULL, errmsg), TPDB_OK);
    assert_non_null(strstr(errmsg, "t_r"));
    assert_int_equal(dirEntries(s), before);
    /* Expression and partial indexes are refused too. */
    assert_int_equal(sqlite3_open(src, &db), SQLITE_OK);
    execOk(db, "DROP INDEX t_r; CREATE INDEX t_e ON t(a + 1)");
    sqlite3_close(db);
    assert_int_equal(tpdbExport(src, out, &strict, NULL, errmsg), TPDB_INVALID);
    assert_int_equal(dirEntries(s), before);
    assert_int_equal(sqlite3_open(src, &db), SQLITE_OK);
    execOk(db, "DROP INDEX t_e; CREATE INDEX t_p ON t(a) WHERE a > 0");
    sqlite3_close(db);
    assert_int_equal(tpdbExport(src, out, &strict, NULL, errmsg), TPDB_INVALID);
    assert_non_null(strstr(errmsg, "t_p"));
    assert_int_equal(dirEntries(s), before);
    /* A table name over 255 bytes cannot be left out: refused. */
    assert_int_equal(sqlite3_open(src, &db), SQLITE_OK);
    execOk(db, "DROP INDEX t_p; CREATE TABLE \"x\" (a)");
    execOk(db,
           "ALTER TABLE x RENAME TO "
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
           "xxxxxxxxxxxxxxxxxxxxx");
    sqlite3_close(db);
    assert_int_equal(tpdbExport(src, out, &quiet, NULL, errmsg), TPDB_INVALID);
    assert_int_equal(dirEntries(s), before);
    /* Missing source; existing destination. */
    assert_int_equal(tpdbExport("/nonexistent/x.db", out, &quiet, NULL, errmsg),
                     TPDB_NOTFOUND);
    assert_int_equal(tpdbExport(src, src, &quiet, NULL, errmsg), TPDB_INVALID);
    assert_int_equal(tpdbExport(NULL, out, &quiet, NULL, errmsg), TPDB_INVALID);
    assert_int_equal(dirEntries(s), before);
}

static void testImportFailure(void **state)
{
    struct scratch *s = *state;
    char bad[256], out[256], src[1200];
    char errmsg[TPDB_ERRMSG_SIZE];
    scratchPath(s, "bad.tpdb", bad, sizeof bad);
    scratchPath(s, "out.db", out, sizeof out);
    FILE *f = fopen(bad, "wb");
    assert_non_null(f);
    fputs("NOTATPDB and more bytes so that the header is sixty-four long!!!",
          f);
    fclose(f);
    assert_int_equal(tpdbImport(bad, out, &quiet, NULL, errmsg), TPDB_CORRUPT);
    assert_non_null(strstr(errmsg, "bad.tpdb"));
    assert_int_equal(dirEntries(s), 1);
    assert_int_equal(
        tpdbImport("/nonexistent/x.tpdb", out, &quiet, NULL, errmsg),
        TPDB_NOTFOUND);
    /* A destination that exists is refused and left alone. */
    snprintf(src, sizeof src, "%s/02_types.tpdb", fixtureDir);
    assert_int_equal(tpdbImport(src, bad, &quiet, NULL, errmsg), TPDB_INVALID);
    assert_int_equal(dirEntries(s), 1);
    assert_int_equal(tpdbImport(src, NULL, &quiet, NULL, errmsg), TPDB_INVALID);
}

/* A TrashPandaDB file whose TEXT primary key has duplicates (defect B6)
 * cannot become a SQLite table with that PRIMARY KEY: the import fails as
 * a whole, naming the table, and leaves no output. */
static void testImportConstraintFailure(void **state)
{
    struct scratch *s = *state;
    char tp[256], out[256];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_file *f;
    const struct tpdb_column cols[] = {{"code", "TEXT", 0, NULL},
                                       {"v", "INTEGER", 0, NULL}};
    struct tpdb_value row[2] = {
        {.type = TPDB_VTEXT, .base = (const uint8_t *)"dup", .len = 3},
        {.type = TPDB_VINT, .i = 1}};
    scratchPath(s, "dup.tpdb", tp, sizeof tp);
    scratchPath(s, "out.db", out, sizeof out);
    assert_int_equal(tpdb_file_open(tp, TPDB_FILE_CREATE, &f, errmsg), TPDB_OK);
    assert_int_equal(tpdb_file_create_table(f, "k", cols, 2, 0), TPDB_OK);
    assert_int_equal(tpdb_file_insert(f, "k", row, 2, NULL), TPDB_OK);
    row[1].i = 2;
    int dup = tpdb_file_insert(f, "k", row, 2, NULL);
    tpdb_file_close(f);
    if (dup != TPDB_OK) {
        return; /* the library refuses the duplicate itself */
    }
    int before = dirEntries(s);
    assert_int_not_equal(tpdbImport(tp, out, &quiet, NULL, errmsg), TPDB_OK);
    assert_non_null(strstr(errmsg, "k"));
    assert_int_equal(dirEntries(s), before);
}

/* ---- Out of memory ----------------------------------------------------------
 * Every allocation of the library and of the migration code fails in turn;
 * each failure must be reported and leave no output behind. */

static void testImportOom(void **state)
{
    struct scratch *s = *state;
    char src[1200], out[256];
    char errmsg[TPDB_ERRMSG_SIZE];
    int rc = TPDB_NOMEM;
    snprintf(src, sizeof src, "%s/05_indexes.tpdb", fixtureDir);
    scratchPath(s, "out.db", out, sizeof out);
    long n;
    for (n = 0; n < 100000 && rc != TPDB_OK; n++) {
        tpdbAllocFailAfter(n);
        rc = tpdbImport(src, out, &quiet, NULL, errmsg);
        tpdbAllocFailAfter(-1);
        if (rc != TPDB_OK) {
            assert_int_equal(dirEntries(s), 0);
        }
    }
    assert_int_equal(rc, TPDB_OK);
    assert_true(n > 1);
}

static void testExportOom(void **state)
{
    struct scratch *s = *state;
    char src[256], out[256];
    char errmsg[TPDB_ERRMSG_SIZE];
    int rc = TPDB_NOMEM;
    sqlite3 *db;
    scratchPath(s, "src.db", src, sizeof src);
    scratchPath(s, "out.tpdb", out, sizeof out);
    assert_int_equal(sqlite3_open(src, &db), SQLITE_OK);
    execOk(db,
           "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT UNIQUE, "
           "b BLOB DEFAULT x'00'); CREATE INDEX t_s ON t(s, id);"
           "CREATE TABLE u (a, b, PRIMARY KEY (a, b));"
           "INSERT INTO t VALUES (1, 'one', x'0102'), (-2, 'two', NULL);"
           "INSERT INTO u VALUES (1, 'x'), (2, 'y')");
    sqlite3_close(db);
    long n;
    for (n = 0; n < 100000 && rc != TPDB_OK; n++) {
        tpdbAllocFailAfter(n);
        rc = tpdbExport(src, out, &quiet, NULL, errmsg);
        tpdbAllocFailAfter(-1);
        if (rc != TPDB_OK) {
            assert_int_equal(dirEntries(s), 1);
        }
    }
    assert_int_equal(rc, TPDB_OK);
    assert_true(n > 1);
}

/* ---- Progress and the command line ------------------------------------------
 */

static void testProgress(void **state)
{
    struct scratch *s = *state;
    char src[1200], out[256], text[4096];
    char errmsg[TPDB_ERRMSG_SIZE];
    FILE *log = tmpfile();
    struct tpdb_migrate_opts opts = {.version = 1,
                                     .progress = TPDB_PROGRESS_ALWAYS,
                                     .out = log,
                                     .interval_ms = 1};
    assert_non_null(log);
    snprintf(src, sizeof src, "%s/03_multipage.tpdb", fixtureDir);
    scratchPath(s, "out.db", out, sizeof out);
    assert_int_equal(tpdbImport(src, out, &opts, NULL, errmsg), TPDB_OK);
    rewind(log);
    size_t n = fread(text, 1, sizeof text - 1, log);
    text[n] = '\0';
    fclose(log);
    /* Not a terminal: whole lines, the last one complete. */
    assert_non_null(strstr(text, "import: 5050/5050 rows (100%)\n"));
    assert_null(strchr(text, '\r'));
    /* Never: nothing at all. */
    log = tmpfile();
    opts.progress = TPDB_PROGRESS_NEVER;
    opts.out = log;
    scratchPath(s, "out2.db", out, sizeof out);
    assert_int_equal(tpdbImport(src, out, &opts, NULL, errmsg), TPDB_OK);
    assert_int_equal(ftell(log), 0);
    fclose(log);
}

/* Runs the tpdb program; returns its exit status. */
static int runTpdb(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/shell/tpdb' %s >/dev/null 2>&1", buildRoot,
             args);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void testCommandLine(void **state)
{
    struct scratch *s = *state;
    char args[1800];
    assert_int_equal(runTpdb("--help"), 0);
    assert_int_equal(runTpdb("help"), 0);
    /* With no arguments tpdb is the shell (at 127.0.0.1:9002); a bad
     * shell option is a usage error too. */
    assert_int_equal(runTpdb("-nosuchoption"), 2);
    assert_int_equal(runTpdb("frobnicate"), 2);
    assert_int_equal(runTpdb("import onlyone.tpdb"), 2);
    assert_int_equal(runTpdb("import --bogus a b"), 2);
    assert_int_equal(runTpdb("export a b c"), 2);
    snprintf(args, sizeof args, "import /nonexistent.tpdb '%s/x.db'", s->dir);
    assert_int_equal(runTpdb(args), 1);
    snprintf(args, sizeof args, "import --quiet '%s/05_indexes.tpdb' '%s/x.db'",
             fixtureDir, s->dir);
    assert_int_equal(runTpdb(args), 0);
    assert_int_equal(runTpdb(args), 1); /* exists now */
    snprintf(args, sizeof args, "export --progress '%s/x.db' '%s/y.tpdb'",
             s->dir, s->dir);
    assert_int_equal(runTpdb(args), 0);
    snprintf(args, sizeof args, "import '%s/y.tpdb' '%s/z.db'", s->dir, s->dir);
    assert_int_equal(runTpdb(args), 0);
    /* x.db, y.tpdb, y.tpdb-wal, z.db and nothing temporary. */
    assert_int_equal(dirEntries(s), 4);
}

int main(void)
{
    const char *root = getenv("TPDB_SOURCE_ROOT");
    const char *build = getenv("TPDB_BUILD_ROOT");
    snprintf(fixtureDir, sizeof fixtureDir, "%s/tests/fixtures/tpdb",
             root != NULL ? root : ".");
    snprintf(buildRoot, sizeof buildRoot, "%s", build != NULL ? build : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testImportFixtures, setup, teardown),
        cmocka_unit_test_setup_teardown(testRoundTrip, setup, teardown),
        cmocka_unit_test_setup_teardown(testExportFailure, setup, teardown),
        cmocka_unit_test_setup_teardown(testImportFailure, setup, teardown),
        cmocka_unit_test_setup_teardown(testImportConstraintFailure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testImportOom, setup, teardown),
        cmocka_unit_test_setup_teardown(testExportOom, setup, teardown),
        cmocka_unit_test_setup_teardown(testProgress, setup, teardown),
        cmocka_unit_test_setup_teardown(testCommandLine, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
