/*
 * Column DEFAULTs in TrashPandaDB's literal forms (used by tpdb_export.c).
 * TrashPandaDB stores a DEFAULT as SQL text and re-parses it on every use;
 * its parser reads decimal integers, decimal floats without an exponent,
 * 'strings', X'blobs', NULL and expressions of those, so SQLite spellings
 * such as 1e3, 0x1F, TRUE or CURRENT_TIMESTAMP mean something else there,
 * or nothing. Each default is evaluated by SQLite itself in a scratch
 * in-memory database, into a column of the source column's affinity (so a
 * REAL column's DEFAULT 1 is 1.0, as SQLite stores it), and written back as
 * one literal TrashPandaDB reads as that same value. A default that changes
 * between uses, or a value no such literal spells, is refused.
 */
#include "shell/tpdb_migrate_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The format stores default_len as u16. */
#define MAX_DEFAULT_LEN 65535

/* Longest plain decimal of a double: sign, "0.", 323 zeros, 17 digits. */
#define REAL_BUF 400

int migrateDefaultScratch(sqlite3 **db, char *errmsg)
{
    int rc = TPDB_OK;
    *db = NULL;
    if (sqlite3_open_v2(":memory:", db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK) {
        rc = *db == NULL ? TPDB_NOMEM
                         : migrateSqliteErr(*db, errmsg, "scratch database");
        sqlite3_close(*db);
        *db = NULL;
    }
    return rc;
}

/* The affinity keyword of a declared type, by SQLite's rules (section 3.1
 * of its datatype documentation), so that the declared text itself never
 * has to be pasted into SQL. */
static const char *affinityOf(const char *type)
{
    char up[256];
    size_t n = 0;
    for (; type != NULL && type[n] != '\0' && n < sizeof up - 1; n++) {
        up[n] =
            (char)(type[n] >= 'a' && type[n] <= 'z' ? type[n] - 32 : type[n]);
    }
    up[n] = '\0';
    if (strstr(up, "INT") != NULL) {
        return "INTEGER";
    }
    if (strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT")) {
        return "TEXT";
    }
    if (n == 0 || strstr(up, "BLOB") != NULL) {
        return "BLOB";
    }
    if (strstr(up, "REAL") || strstr(up, "FLOA") || strstr(up, "DOUB")) {
        return "REAL";
    }
    return "NUMERIC";
}

int migrateTypeIsReal(const char *type)
{
    return strcmp(affinityOf(type), "REAL") == 0;
}

/* Places the decimal point of the significant digits `dig` (the value is
 * 0.dig * 10^point) and writes the number without an exponent into out. */
static void plainDecimal(int neg,
                         const char *dig,
                         int point,
                         char *out,
                         size_t n)
{
    int k = (int)strlen(dig);
    if (point <= 0) {
        snprintf(out, n, "%s0.%0*d%s", neg ? "-" : "", -point, 0, dig);
        if (point == 0) { /* "%0*d" wrote one zero too many */
            snprintf(out, n, "%s0.%s", neg ? "-" : "", dig);
        }
    } else if (point >= k) {
        snprintf(out, n, "%s%s%0*d.0", neg ? "-" : "", dig, point - k, 0);
        if (point == k) {
            snprintf(out, n, "%s%s.0", neg ? "-" : "", dig);
        }
    } else {
        snprintf(out, n, "%s%.*s.%s", neg ? "-" : "", point, dig, dig + point);
    }
}

/* Writes d as a decimal float without exponent whose shortest digits read
 * back (by strtod, as TrashPandaDB's Crystal parser reads floats) as
 * exactly d. Returns 0, or -1 for infinities and NaN. */
static int realLiteral(double d, char *out, size_t n)
{
    char e[40], dig[20];
    if (!isfinite(d)) {
        return -1;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, d);
        if (strtod(e, NULL) == d) {
            break;
        }
    }
    /* e is "[-]D[.DDD]e[+-]X". */
    const char *s = e + (e[0] == '-');
    size_t k = 0;
    for (; *s != 'e' && k < sizeof dig - 1; s++) {
        if (*s != '.') {
            dig[k++] = *s;
        }
    }
    dig[k] = '\0';
    plainDecimal(e[0] == '-', dig, atoi(s + 1) + 1, out, n);
    double back = strtod(out, NULL);
    return memcmp(&back, &d, sizeof d) == 0 ? 0 : -1;
}

static void appendBlob(sqlite3_str *s, const uint8_t *p, int n)
{
    static const char hex[] = "0123456789ABCDEF";
    sqlite3_str_appendall(s, "X'");
    for (int i = 0; i < n; i++) {
        sqlite3_str_appendchar(s, 1, hex[p[i] >> 4]);
        sqlite3_str_appendchar(s, 1, hex[p[i] & 15]);
    }
    sqlite3_str_appendall(s, "'");
}

/* Appends column i of st as a TrashPandaDB literal; returns NULL, or why
 * no literal means that value. */
static const char *appendLiteral(sqlite3_stmt *st, int i, sqlite3_str *s)
{
    char buf[REAL_BUF];
    const void *p;
    int n = sqlite3_column_bytes(st, i);
    switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            if (sqlite3_column_int64(st, i) == INT64_MIN) {
                /* 9223372036854775808 alone overflows a 64-bit parser. */
                sqlite3_str_appendall(s, "(-9223372036854775807 - 1)");
            } else {
                sqlite3_str_appendf(s, "%lld", sqlite3_column_int64(st, i));
            }
            return NULL;
        case SQLITE_FLOAT:
            if (realLiteral(sqlite3_column_double(st, i), buf, sizeof buf)) {
                return "an infinite REAL has no decimal literal";
            }
            sqlite3_str_appendall(s, buf);
            return NULL;
        case SQLITE_TEXT:
            p = sqlite3_column_text(st, i);
            if (p != NULL && memchr(p, 0, (size_t)n) != NULL) {
                return "text holding a NUL byte has no string literal";
            }
            sqlite3_str_appendf(s, "'%q'", p != NULL ? (const char *)p : "");
            return NULL;
        case SQLITE_BLOB:
            appendBlob(s, sqlite3_column_blob(st, i), n);
            return NULL;
        default:
            sqlite3_str_appendall(s, "NULL");
            return NULL;
    }
}

/* Creates the scratch table d from `create` and inserts one row into it. */
static int scratchTable(sqlite3 *db, const char *create, char *errmsg)
{
    int rc = migrateExecOne(db, create, errmsg);
    if (rc == TPDB_OK) {
        rc = migrateExecOne(db, "INSERT INTO d (k) VALUES (1)", errmsg);
    }
    return rc;
}

/* Whether SQLite accepts dflt as a generated column's expression, which
 * it does only for values that cannot change between uses (no random(),
 * CURRENT_TIMESTAMP, datetime('now'), ...). */
static int isConstant(sqlite3 *db, const char *dflt, char *errmsg)
{
    char *sql = sqlite3_mprintf("CREATE TABLE d (k, g AS (%s))", dflt);
    int rc = sql == NULL ? TPDB_NOMEM : scratchTable(db, sql, errmsg);
    sqlite3_free(sql);
    if (rc == TPDB_OK) {
        rc = migrateExecOne(db, "SELECT g FROM d", errmsg);
    }
    migrateExecOne(db, "DROP TABLE IF EXISTS d", NULL);
    return rc;
}

/* Evaluates dflt into a column of `affinity` and appends its literal. */
static int evalLiteral(sqlite3 *db,
                       const char *affinity,
                       const char *dflt,
                       sqlite3_str *out,
                       char *errmsg)
{
    char *sql = sqlite3_mprintf("CREATE TABLE d (k, c %s DEFAULT (%s))",
                                affinity, dflt);
    sqlite3_stmt *st = NULL;
    int rc = sql == NULL ? TPDB_NOMEM : scratchTable(db, sql, errmsg);
    sqlite3_free(sql);
    if (rc == TPDB_OK && (sqlite3_prepare_v2(db, "SELECT c FROM d", -1, &st,
                                             NULL) != SQLITE_OK ||
                          sqlite3_step(st) != SQLITE_ROW)) {
        rc = migrateSqliteErr(db, errmsg, "evaluate");
    }
    if (rc == TPDB_OK) {
        const char *why = appendLiteral(st, 0, out);
        if (why != NULL) {
            tpdbErrf(errmsg, "%s", why);
            rc = TPDB_INVALID;
        }
    }
    sqlite3_finalize(st);
    migrateExecOne(db, "DROP TABLE IF EXISTS d", NULL);
    return rc;
}

int migrateDefaultConvert(sqlite3 *scratch,
                          const char *type,
                          const char *dflt,
                          char **out,
                          char *errmsg)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    int rc = isConstant(scratch, dflt, errmsg);
    *out = NULL;
    if (rc == TPDB_INVALID) {
        /* SQLite's own words here speak of generated columns. */
        tpdbErrf(errmsg,
                 "it is not a constant, and TrashPandaDB, which "
                 "re-parses the stored text, cannot evaluate it");
    }
    if (rc == TPDB_OK) {
        rc = evalLiteral(scratch, affinityOf(type), dflt, s, errmsg);
    }
    if (rc == TPDB_OK && sqlite3_str_length(s) > MAX_DEFAULT_LEN) {
        tpdbErrf(errmsg, "its literal takes %d bytes, the format holds %d",
                 sqlite3_str_length(s), MAX_DEFAULT_LEN);
        rc = TPDB_INVALID;
    }
    if (rc == TPDB_OK && sqlite3_str_errcode(s) != SQLITE_OK) {
        tpdbErrf(errmsg, "out of memory");
        rc = TPDB_NOMEM;
    }
    char *text = sqlite3_str_finish(s);
    if (rc == TPDB_OK) {
        *out = text;
    } else {
        sqlite3_free(text);
    }
    return rc;
}
