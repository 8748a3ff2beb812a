/*
 * SQL for tpdbd's client API (tpdbd_sql.h). Parameters are bound, never
 * inlined into the SQL text, so a '?' inside a string literal stays text
 * (TrashPandaDB's inlining replaced it).
 */
#include "shell/tpdbd_sql.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/tpdb.h"

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *tpdbdBase64Encode(const unsigned char *in, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        v |= i + 1 < len ? (unsigned)in[i + 1] << 8 : 0;
        v |= i + 2 < len ? in[i + 2] : 0;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int b64Value(char c)
{
    const char *p = c != '\0' ? strchr(b64, c) : NULL;
    return p != NULL ? (int)(p - b64) : -1;
}

int tpdbdBase64Decode(const char *in,
                      size_t inLen,
                      unsigned char **out,
                      size_t *len)
{
    size_t pad = 0, o = 0;
    if (inLen % 4 != 0) {
        return -1;
    }
    while (pad < 2 && pad < inLen && in[inLen - 1 - pad] == '=') {
        pad++;
    }
    unsigned char *buf = malloc(inLen / 4 * 3 + 1);
    if (buf == NULL) {
        return -1;
    }
    for (size_t i = 0; i < inLen; i += 4) {
        unsigned v = 0;
        for (size_t k = 0; k < 4; k++) {
            int x = i + k >= inLen - pad ? 0 : b64Value(in[i + k]);
            if (x < 0) {
                free(buf);
                return -1;
            }
            v = v << 6 | (unsigned)x;
        }
        buf[o++] = (unsigned char)(v >> 16);
        buf[o++] = (unsigned char)(v >> 8);
        buf[o++] = (unsigned char)v;
    }
    *out = buf;
    *len = o - pad;
    return 0;
}

/* {"$blob":"<base64>"}: returns 1 and binds it, 0 if v is not one, -1 for
 * bad base64. */
static int bindBlob(sqlite3_stmt *st, int idx, json_t *v)
{
    json_t *b = json_object_get(v, "$blob");
    unsigned char *data = NULL;
    size_t len = 0;
    if (!json_is_string(b) || json_object_size(v) != 1) {
        return 0;
    }
    if (tpdbdBase64Decode(json_string_value(b), json_string_length(b), &data,
                          &len) != 0) {
        return -1;
    }
    sqlite3_bind_blob64(st, idx, data, len, free);
    return 1;
}

/* TrashPandaDB's mapping; anything it does not know becomes NULL. */
static int bindValue(sqlite3_stmt *st,
                     int idx,
                     json_t *v,
                     char *err,
                     size_t size)
{
    switch (json_typeof(v)) {
        case JSON_TRUE:
            return sqlite3_bind_int(st, idx, 1);
        case JSON_FALSE:
            return sqlite3_bind_int(st, idx, 0);
        case JSON_INTEGER:
            return sqlite3_bind_int64(st, idx, json_integer_value(v));
        case JSON_REAL:
            return sqlite3_bind_double(st, idx, json_real_value(v));
        case JSON_STRING:
            return sqlite3_bind_text64(st, idx, json_string_value(v),
                                       json_string_length(v), SQLITE_TRANSIENT,
                                       SQLITE_UTF8);
        case JSON_OBJECT:
            if (bindBlob(st, idx, v) < 0) {
                snprintf(err, size, "params[%d]: $blob is not base64", idx - 1);
                return SQLITE_MISMATCH;
            }
            return SQLITE_OK;
        default:
            return SQLITE_OK;
    }
}

static int bindParams(sqlite3_stmt *st, json_t *params, char *err, size_t size)
{
    int want = sqlite3_bind_parameter_count(st);
    int got = params != NULL ? (int)json_array_size(params) : 0;
    if (want != got) {
        snprintf(err, size, "the statement takes %d params, %d given", want,
                 got);
        return SQLITE_RANGE;
    }
    for (int i = 0; i < got; i++) {
        int rc =
            bindValue(st, i + 1, json_array_get(params, (size_t)i), err, size);
        if (rc != SQLITE_OK) {
            if (err[0] == '\0') {
                snprintf(err, size, "params[%d]: %s", i,
                         sqlite3_errmsg(sqlite3_db_handle(st)));
            }
            return rc;
        }
    }
    return SQLITE_OK;
}

int tpdbdSqlError(sqlite3 *db, char *err, size_t size)
{
    int rc = sqlite3_extended_errcode(db);
    const char *why = tpdb_errmsg();
    if ((rc == TPDB_ERR_NOTLEADER || rc == TPDB_ERR_UNKNOWN ||
         rc == TPDB_ERR_REPLFAIL) &&
        why[0] != '\0') {
        snprintf(err, size, "%s", why);
    } else {
        snprintf(err, size, "%s", sqlite3_errmsg(db));
    }
    return rc != SQLITE_OK ? rc : SQLITE_ERROR;
}

/* Whether the SQL after the first statement holds no statement. */
static int tailEmpty(sqlite3 *db, const char *tail)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, tail, -1, &st, NULL);
    int empty = rc == SQLITE_OK && st == NULL;
    sqlite3_finalize(st);
    return empty;
}

static json_t *blobJson(sqlite3_stmt *st, int i, int blobs)
{
    const unsigned char *p = sqlite3_column_blob(st, i);
    size_t len = (size_t)sqlite3_column_bytes(st, i);
    if (blobs == TPDBD_BLOBS_BASE64) {
        char *text = tpdbdBase64Encode(p, len);
        json_t *v = text != NULL ? json_pack("{s:s}", "$blob", text) : NULL;
        free(text);
        return v;
    }
    static const char hex[] = "0123456789abcdef";
    char *text = malloc(len * 2 + 1);
    if (text == NULL) {
        return NULL;
    }
    for (size_t k = 0; k < len; k++) {
        text[2 * k] = hex[p[k] >> 4];
        text[2 * k + 1] = hex[p[k] & 15];
    }
    json_t *v = json_stringn(text, len * 2);
    free(text);
    return v;
}

/* Column i of the current row; NULL for text that is not UTF-8 (JSON
 * cannot carry it) or out of memory. */
static json_t *columnJson(sqlite3_stmt *st, int i, int blobs)
{
    switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            return json_integer(sqlite3_column_int64(st, i));
        case SQLITE_FLOAT:
            return json_real(sqlite3_column_double(st, i));
        case SQLITE_TEXT:
            return json_stringn((const char *)sqlite3_column_text(st, i),
                                (size_t)sqlite3_column_bytes(st, i));
        case SQLITE_BLOB:
            return blobJson(st, i, blobs);
        default:
            return json_null();
    }
}

static int rowJson(sqlite3_stmt *st,
                   int blobs,
                   json_t *rows,
                   char *err,
                   size_t size)
{
    json_t *row = json_array();
    int n = sqlite3_column_count(st);
    for (int i = 0; row != NULL && i < n; i++) {
        json_t *v = columnJson(st, i, blobs);
        if (v == NULL) {
            snprintf(err, size,
                     "column %d (%s): value not representable in "
                     "JSON (text not UTF-8, or out of memory)",
                     i, sqlite3_column_name(st, i));
            json_decref(row);
            return SQLITE_MISMATCH;
        }
        json_array_append_new(row, v);
    }
    if (row == NULL || json_array_append_new(rows, row) != 0) {
        snprintf(err, size, "out of memory");
        return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}

/* Whether the statement text starts with VACUUM (after blanks and
 * comments): it cannot run inside a transaction. */
static int isVacuum(const char *sql)
{
    for (;;) {
        while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' ||
               *sql == '\f') {
            sql++;
        }
        if (sql[0] == '-' && sql[1] == '-') {
            sql += strcspn(sql, "\n");
        } else if (sql[0] == '/' && sql[1] == '*') {
            const char *end = strstr(sql + 2, "*/");
            sql = end != NULL ? end + 2 : sql + strlen(sql);
        } else {
            break;
        }
    }
    return sqlite3_strnicmp(sql, "vacuum", 6) == 0 &&
           !(isalnum((unsigned char)sql[6]) || sql[6] == '_');
}

static int prepareQuery(sqlite3 *db,
                        const char *sql,
                        sqlite3_stmt **st,
                        char *err,
                        size_t size)
{
    const char *tail = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, st, &tail) != SQLITE_OK) {
        return tpdbdSqlError(db, err, size);
    }
    if (*st == NULL) {
        snprintf(err, size, "no statement in sql");
        return SQLITE_MISUSE;
    }
    if (!tailEmpty(db, tail)) {
        snprintf(err, size, "query and local_query take one statement");
        return SQLITE_MISUSE;
    }
    if (!sqlite3_stmt_readonly(*st)) {
        snprintf(err, size,
                 "query and local_query take read-only "
                 "statements: send writes with propose");
        return SQLITE_READONLY;
    }
    return SQLITE_OK;
}

static json_t *columnNames(sqlite3_stmt *st)
{
    json_t *cols = json_array();
    for (int i = 0; cols != NULL && i < sqlite3_column_count(st); i++) {
        const char *name = sqlite3_column_name(st, i);
        json_array_append_new(cols, json_string(name != NULL ? name : ""));
    }
    return cols;
}

/* How a client's SQL runs: the guard's policy (tpdbd_sql.h) and what
 * its authorizer saw. */
enum { RUN_PLAIN = 0, RUN_GROUPED = 1, RUN_IN_TXN = 2 };

struct guard {
    int mode;      /* RUN_* bits */
    int alone;     /* RUN_GROUPED: a statement cannot run in a savepoint */
    int vacuum;    /* a plain VACUUM is being stepped */
    char why[320]; /* why a statement was refused, "" if none was */
};

/* PRAGMAs whose setting changes the connection, not the database. */
static const char *const connectionPragmas[] = {"analysis_limit",
                                                "automatic_index",
                                                "busy_timeout",
                                                "cache_size",
                                                "cache_spill",
                                                "case_sensitive_like",
                                                "cell_size_check",
                                                "checkpoint_fullfsync",
                                                "count_changes",
                                                "data_store_directory",
                                                "default_cache_size",
                                                "empty_result_callbacks",
                                                "foreign_keys",
                                                "full_column_names",
                                                "fullfsync",
                                                "hard_heap_limit",
                                                "ignore_check_constraints",
                                                "journal_mode",
                                                "journal_size_limit",
                                                "legacy_alter_table",
                                                "legacy_file_format",
                                                "locking_mode",
                                                "max_page_count",
                                                "mmap_size",
                                                "query_only",
                                                "read_uncommitted",
                                                "recursive_triggers",
                                                "reverse_unordered_selects",
                                                "secure_delete",
                                                "short_column_names",
                                                "soft_heap_limit",
                                                "synchronous",
                                                "temp_store",
                                                "temp_store_directory",
                                                "threads",
                                                "trusted_schema",
                                                "wal_autocheckpoint",
                                                "writable_schema"};

static int isConnectionPragma(const char *name)
{
    size_t n = sizeof connectionPragmas / sizeof connectionPragmas[0];
    for (size_t i = 0; name != NULL && i < n; i++) {
        if (sqlite3_stricmp(name, connectionPragmas[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static int refusePragma(struct guard *g, const char *name)
{
    if (sqlite3_stricmp(name, "foreign_keys") == 0) {
        snprintf(g->why, sizeof g->why,
                 "PRAGMA foreign_keys cannot be set through tpdbd: it would "
                 "change one pooled connection, not the database, for later "
                 "requests of other clients. Send \"foreign_keys\":true with "
                 "a propose or begin request to enforce foreign keys for it");
    } else {
        snprintf(g->why, sizeof g->why,
                 "PRAGMA %.64s cannot be set through tpdbd: it changes one "
                 "pooled connection, not the database, and later requests "
                 "of other clients would inherit it (reading it, and "
                 "database PRAGMAs such as user_version, are allowed)",
                 name);
    }
    return SQLITE_DENY;
}

/* The authorizer of every client statement (see tpdbd_sql.h). */
static int guardAuthorizer(void *arg,
                           int action,
                           const char *a,
                           const char *b,
                           const char *c,
                           const char *e)
{
    struct guard *g = arg;
    (void)c;
    (void)e;
    if (g->vacuum) {
        /* VACUUM's own statements, its temporary database included;
         * VACUUM INTO attaches its target file. */
        if (action == SQLITE_ATTACH && a != NULL && a[0] != '\0') {
            snprintf(g->why, sizeof g->why,
                     "VACUUM INTO writes a file on this node, outside "
                     "replication: use the backup action");
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    }
    if (action == SQLITE_ATTACH || action == SQLITE_DETACH) {
        snprintf(g->why, sizeof g->why,
                 "ATTACH and DETACH are refused: an attached file would "
                 "bypass replication (address other databases of the node "
                 "directory with the request's \"db\" field)");
        return SQLITE_DENY;
    }
    if (action == SQLITE_PRAGMA && b != NULL && isConnectionPragma(a)) {
        return refusePragma(g, a);
    }
    if ((g->mode & RUN_IN_TXN) && action == SQLITE_TRANSACTION) {
        snprintf(g->why, sizeof g->why,
                 "BEGIN, COMMIT and ROLLBACK cannot run inside a "
                 "transaction: use the commit and rollback actions");
        return SQLITE_DENY;
    }
    if ((g->mode & RUN_GROUPED) &&
        (action == SQLITE_TRANSACTION || action == SQLITE_SAVEPOINT ||
         action == SQLITE_PRAGMA)) {
        /* Transaction control would end or unwind the batch; PRAGMAs may
         * be no-ops or fail inside a transaction. */
        g->alone = 1;
    }
    return SQLITE_OK;
}

/* The error of a failed prepare or step: the guard's reason first. */
static int guardError(sqlite3 *db, struct guard *g, char *err, size_t size)
{
    int rc = sqlite3_extended_errcode(db);
    if (g->why[0] != '\0' && (rc & 0xff) == SQLITE_AUTH) {
        snprintf(err, size, "%s", g->why);
        return SQLITE_AUTH;
    }
    return tpdbdSqlError(db, err, size);
}

int tpdbdSqlQuery(sqlite3 *db,
                  const char *sql,
                  json_t *params,
                  int blobs,
                  int in_txn,
                  json_t **result,
                  char *err,
                  size_t size)
{
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    struct guard g = {.mode = in_txn ? RUN_IN_TXN : RUN_PLAIN};
    sqlite3_set_authorizer(db, guardAuthorizer, &g);
    int rc = prepareQuery(db, sql, &st, err, size);
    if (rc != SQLITE_OK && g.why[0] != '\0') {
        snprintf(err, size, "%s", g.why);
        rc = SQLITE_AUTH;
    }
    if (rc == SQLITE_OK) {
        rc = bindParams(st, params, err, size);
    }
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = rowJson(st, blobs, rows, err, size);
    }
    if (rc == SQLITE_DONE) {
        *result = json_pack("{s:b,s:o,s:o}", "ok", 1, "cols", columnNames(st),
                            "rows", rows);
        rows = NULL;
        rc = *result != NULL ? SQLITE_OK : SQLITE_NOMEM;
    } else if (rc != SQLITE_OK && err[0] == '\0') {
        rc = guardError(db, &g, err, size);
    }
    sqlite3_finalize(st);
    sqlite3_set_authorizer(db, NULL, NULL);
    json_decref(rows);
    return rc;
}

void tpdbdSqlWriteClear(struct tpdbd_write *w)
{
    json_decref(w->returned);
    w->returned = NULL;
}

char *tpdbdSqlWriteReply(const struct tpdbd_write *w)
{
    json_t *o = json_pack("{s:b,s:I,s:I}", "ok", 1, "rows_affected",
                          (json_int_t)w->rows_affected, "last_id",
                          (json_int_t)w->last_id);
    if (o != NULL && w->returned != NULL &&
        json_object_update(o, w->returned) != 0) {
        json_decref(o);
        o = NULL;
    }
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* Runs one prepared statement to its end. The rows of a statement that
 * writes (RETURNING) go to out->returned; a SELECT's are dropped. A row
 * JSON cannot carry does not stop the statement, whose writes are made
 * by then: the reply says "rows_error" instead of "rows". */
static int stepAll(sqlite3 *db,
                   sqlite3_stmt *st,
                   struct guard *g,
                   struct tpdbd_write *out,
                   char *err,
                   size_t size)
{
    int keep = sqlite3_column_count(st) > 0 && !sqlite3_stmt_readonly(st);
    json_t *rows = keep ? json_array() : NULL;
    char why[256] = "";
    int rc;
    g->vacuum = isVacuum(sqlite3_sql(st));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (rows != NULL && why[0] == '\0' &&
            rowJson(st, out->blobs, rows, why, sizeof why) != SQLITE_OK) {
            json_array_clear(rows);
        }
    }
    g->vacuum = 0;
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        return guardError(db, g, err, size);
    }
    if (keep && (json_array_size(rows) > 0 || why[0] != '\0')) {
        tpdbdSqlWriteClear(out);
        out->returned =
            why[0] != '\0'
                ? json_pack("{s:o,s:s}", "cols", columnNames(st), "rows_error",
                            why)
                : json_pack("{s:o,s:O}", "cols", columnNames(st), "rows", rows);
    }
    json_decref(rows);
    return SQLITE_OK;
}

/* tpdbdSqlExec's work under mode (RUN_*): grouped refuses
 * (TPDBD_SQL_ALONE, before it runs) a statement that cannot run inside a
 * savepoint. */
static int execSql(sqlite3 *db,
                   const char *sql,
                   json_t *params,
                   int mode,
                   struct tpdbd_write *out,
                   char *err,
                   size_t size)
{
    const char *next = sql;
    struct guard g = {.mode = mode};
    int rc = SQLITE_OK, n = 0;
    long long changes = 0;
    tpdbdSqlWriteClear(out);
    /* The connection is pooled: last_id must be this request's. */
    sqlite3_set_last_insert_rowid(db, 0);
    sqlite3_set_authorizer(db, guardAuthorizer, &g);
    while (rc == SQLITE_OK && next != NULL && next[0] != '\0') {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        if (sqlite3_prepare_v2(db, next, -1, &st, &tail) != SQLITE_OK) {
            rc = guardError(db, &g, err, size);
            break;
        }
        if (st == NULL) {
            break;
        }
        if ((mode & RUN_GROUPED) && (g.alone || isVacuum(sqlite3_sql(st)))) {
            sqlite3_finalize(st);
            rc = TPDBD_SQL_ALONE;
            break;
        }
        if (n++ == 0 && json_array_size(params) > 0 && !tailEmpty(db, tail)) {
            snprintf(err, size, "params need sql with one statement");
            rc = SQLITE_MISUSE;
        } else if ((rc = bindParams(st, n == 1 ? params : NULL, err, size)) ==
                   SQLITE_OK) {
            sqlite3_int64 before = sqlite3_total_changes64(db);
            rc = stepAll(db, st, &g, out, err, size);
            /* sqlite3_changes64() keeps the count of the last DML
             * statement, also across DDL and other requests. */
            changes = sqlite3_total_changes64(db) != before
                          ? sqlite3_changes64(db)
                          : 0;
        }
        sqlite3_finalize(st);
        next = tail;
    }
    sqlite3_set_authorizer(db, NULL, NULL);
    out->rows_affected = changes;
    out->last_id = sqlite3_last_insert_rowid(db);
    return rc;
}

int tpdbdSqlExec(sqlite3 *db,
                 const char *sql,
                 json_t *params,
                 struct tpdbd_write *out,
                 char *err,
                 size_t size)
{
    return execSql(db, sql, params, RUN_IN_TXN, out, err, size);
}

int tpdbdSqlExecGrouped(sqlite3 *db,
                        const char *sql,
                        json_t *params,
                        struct tpdbd_write *out,
                        char *err,
                        size_t size)
{
    return execSql(db, sql, params, RUN_GROUPED, out, err, size);
}

int tpdbdSqlPropose(sqlite3 *db,
                    const char *sql,
                    json_t *params,
                    struct tpdbd_write *out,
                    char *err,
                    size_t size)
{
    int rc = execSql(db, sql, params, RUN_PLAIN, out, err, size);
    if (!sqlite3_get_autocommit(db)) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            snprintf(err, size,
                     "a transaction must end within its propose "
                     "(BEGIN without COMMIT): rolled back");
            rc = SQLITE_MISUSE;
        }
    }
    return rc;
}
