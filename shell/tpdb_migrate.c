/*
 * Migration between TrashPandaDB page files and SQLite (tpdb_migrate.h).
 *
 * Import reads the TPDB file read-only through vfs/tpdbfile.h and writes a
 * temporary SQLite database in one transaction (journal off: the rename is
 * what makes the result appear atomically). Export reads the SQLite database
 * in one read transaction and writes a temporary TPDB file through the
 * library's writer, committing every EXPORT_BATCH rows so memory stays
 * bounded. Both verify row counts per table, fsync, and rename into place.
 */
#include "shell/tpdb_migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "vfs/tpdbfile.h"

#define EXPORT_BATCH 20000
#define DEFAULT_INTERVAL_MS 500

/* ---- Progress ------------------------------------------------------------ */

struct progress {
    int on;
    int tty;
    FILE *out;
    unsigned interval_ms;
    uint64_t last_ms;
    uint64_t done;
    uint64_t total;
    const char *what;
};

static void progressInit(struct progress *p,
                         const struct tpdb_migrate_opts *opts,
                         const char *what)
{
    int mode = opts != NULL ? opts->progress : TPDB_PROGRESS_AUTO;
    memset(p, 0, sizeof *p);
    p->out = opts != NULL && opts->out != NULL ? opts->out : stderr;
    p->tty = isatty(fileno(p->out));
    p->on =
        mode == TPDB_PROGRESS_ALWAYS || (mode == TPDB_PROGRESS_AUTO && p->tty);
    p->interval_ms = opts != NULL && opts->interval_ms > 0
                         ? opts->interval_ms
                         : DEFAULT_INTERVAL_MS;
    p->what = what;
    p->last_ms = tpdbNowMs();
}

static void progressPrint(struct progress *p, int final)
{
    double pct =
        p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0;
    fprintf(p->out, "%s%s: %llu/%llu rows (%.0f%%)%s", p->tty ? "\r" : "",
            p->what, (unsigned long long)p->done, (unsigned long long)p->total,
            pct, p->tty && !final ? "" : "\n");
    fflush(p->out);
}

/* Counts one row done; prints at most one line per interval. */
static void progressTick(struct progress *p)
{
    p->done++;
    if (!p->on || (p->done & 255) != 0) {
        return;
    }
    uint64_t now = tpdbNowMs();
    if (now - p->last_ms >= p->interval_ms) {
        p->last_ms = now;
        progressPrint(p, 0);
    }
}

static void progressEnd(struct progress *p)
{
    if (p->on) {
        progressPrint(p, 1);
    }
}

/* ---- Files --------------------------------------------------------------- */

static int pathExists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* path + suffix, tpdb_malloc'ed. */
static char *pathWith(const char *path, const char *suffix)
{
    size_t a = strlen(path), b = strlen(suffix);
    char *s = tpdb_malloc(a + b + 1);
    if (s != NULL) {
        memcpy(s, path, a);
        memcpy(s + a, suffix, b + 1);
    }
    return s;
}

static char *tempPath(const char *dest, const char *tag)
{
    char suffix[64];
    snprintf(suffix, sizeof suffix, ".%s-%ld.tmp", tag, (long)getpid());
    return pathWith(dest, suffix);
}

static int fsyncPath(const char *path, int dir, char *errmsg)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDWR);
    if (fd < 0 || fsync(fd) != 0) {
        tpdbErrf(errmsg, "fsync %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return TPDB_IOERR;
    }
    close(fd);
    return TPDB_OK;
}

/* fsyncs the directory holding `path`. Allocates nothing, so that it
 * cannot fail for lack of memory after the rename. */
static int fsyncParent(const char *path, char *errmsg)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : (size_t)(slash - path);
    if (n >= sizeof dir) {
        tpdbErrf(errmsg, "path too long: %s", path);
        return TPDB_INVALID;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    return fsyncPath(slash == NULL ? "." : n == 0 ? "/" : dir, 1, errmsg);
}

static int renameInto(const char *from, const char *to, char *errmsg)
{
    if (rename(from, to) != 0) {
        tpdbErrf(errmsg, "rename %s to %s: %s", from, to, strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

static int sqliteErr(sqlite3 *db, char *errmsg, const char *what)
{
    int code = sqlite3_errcode(db);
    tpdbErrf(errmsg, "%s: %s", what, sqlite3_errmsg(db));
    return code == SQLITE_NOMEM                              ? TPDB_NOMEM
           : code == SQLITE_IOERR || code == SQLITE_FULL     ? TPDB_IOERR
           : code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? TPDB_CORRUPT
                                                             : TPDB_INVALID;
}

/* Runs exactly one SQL statement (text from a file may not smuggle in a
 * second one). */
static int execOne(sqlite3 *db, const char *sql, char *errmsg)
{
    sqlite3_stmt *st;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) {
        return sqliteErr(db, errmsg, sql);
    }
    while (tail != NULL && (*tail == ' ' || *tail == '\n' || *tail == ';')) {
        tail++;
    }
    if (tail != NULL && *tail != '\0') {
        sqlite3_finalize(st);
        tpdbErrf(errmsg, "%s: more than one statement", sql);
        return TPDB_INVALID;
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return sqliteErr(db, errmsg, sql);
    }
    return TPDB_OK;
}

static int64_t sqliteCount(sqlite3 *db, const char *table, char *errmsg)
{
    char *sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", table);
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sql == NULL) {
        tpdbErrf(errmsg, "out of memory");
        return -1;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            n = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    if (n < 0) {
        sqliteErr(db, errmsg, sql);
    }
    sqlite3_free(sql);
    return n;
}

/* Rows of a TPDB table, by walking its tree without decoding rows. */
static int tpdbCount(struct tpdb_file *f, const char *table, uint64_t *n)
{
    struct tpdb_cursor *c;
    int rc = tpdb_cursor_open_table(f, table, &c);
    *n = 0;
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tpdb_cursor_first(c);
    while (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        (*n)++;
        rc = tpdb_cursor_next(c);
    }
    tpdb_cursor_close(c);
    return rc;
}

/* ---- Import: DDL --------------------------------------------------------- */

/* Declared types are copied only when made of harmless characters. */
static int typeIsSafe(const char *t)
{
    for (; *t != '\0'; t++) {
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789_ (),.+-",
                   *t) == NULL) {
            return 0;
        }
    }
    return 1;
}

/* A DEFAULT that SQLite accepts without parentheses: a signed number, a
 * quoted string or blob, or a keyword literal. */
static int isPlainLiteral(const char *s)
{
    static const char *const words[] = {"NULL",         "TRUE",
                                        "FALSE",        "CURRENT_TIME",
                                        "CURRENT_DATE", "CURRENT_TIMESTAMP"};
    size_t n = strlen(s);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (sqlite3_stricmp(s, words[i]) == 0) {
            return 1;
        }
    }
    if (n >= 2 && s[0] == '\'' && s[n - 1] == '\'') {
        return 1;
    }
    if (n >= 3 && (s[0] == 'x' || s[0] == 'X') && s[1] == '\'' &&
        s[n - 1] == '\'') {
        return 1;
    }
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (i == n) {
        return 0;
    }
    for (; i < n; i++) {
        if (strchr("0123456789.eE+-", s[i]) == NULL) {
            return 0;
        }
    }
    return 1;
}

/* A DEFAULT from the file is used only if it is one expression that SQLite
 * can evaluate on its own. */
static int defaultIsSafe(sqlite3 *db, const char *sql)
{
    int depth = 0;
    for (const char *p = sql; *p != '\0'; p++) {
        depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
        if (depth < 0 || *p == ';') {
            return 0;
        }
    }
    char *q = sqlite3_mprintf("SELECT %s", sql);
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int ok = q != NULL && depth == 0 &&
             sqlite3_prepare_v2(db, q, -1, &st, &tail) == SQLITE_OK &&
             st != NULL && tail != NULL && *tail == '\0';
    sqlite3_finalize(st);
    sqlite3_free(q);
    return ok;
}

/* The implicit index TrashPandaDB makes for a column UNIQUE constraint. */
static int isColumnUnique(const struct tpdb_index *ix,
                          const char *table,
                          const char *col)
{
    size_t tl = strlen(table);
    if (!ix->unique || ix->ncols != 1 || strcmp(ix->table, table) != 0 ||
        strcmp(ix->cols[0], col) != 0 || strncmp(ix->name, "_uq_", 4) != 0) {
        return 0;
    }
    return strncmp(ix->name + 4, table, tl) == 0 && ix->name[4 + tl] == '_' &&
           strcmp(ix->name + 5 + tl, col) == 0;
}

static int hasColumnUnique(struct tpdb_file *f,
                           const char *table,
                           const char *col)
{
    for (unsigned i = 0; i < tpdb_file_index_count(f); i++) {
        if (isColumnUnique(tpdb_file_index(f, i), table, col)) {
            return 1;
        }
    }
    return 0;
}

static void columnDdl(sqlite3 *db,
                      struct tpdb_file *f,
                      sqlite3_str *s,
                      const struct tpdb_table *t,
                      unsigned i)
{
    const struct tpdb_column *c = &t->cols[i];
    sqlite3_str_appendf(s, "%s\"%w\"", i > 0 ? ", " : "", c->name);
    if (c->type != NULL && c->type[0] != '\0' && typeIsSafe(c->type)) {
        sqlite3_str_appendf(s, " %s", c->type);
    }
    if ((int)i == t->pk_idx) {
        sqlite3_str_appendall(s, " PRIMARY KEY");
    }
    if (c->not_null) {
        sqlite3_str_appendall(s, " NOT NULL");
    }
    if (c->default_sql != NULL && defaultIsSafe(db, c->default_sql)) {
        sqlite3_str_appendf(
            s, isPlainLiteral(c->default_sql) ? " DEFAULT %s" : " DEFAULT (%s)",
            c->default_sql);
    }
    if (hasColumnUnique(f, t->name, c->name)) {
        sqlite3_str_appendall(s, " UNIQUE");
    }
}

static int createTable(sqlite3 *db,
                       struct tpdb_file *f,
                       const struct tpdb_table *t,
                       char *errmsg)
{
    sqlite3_str *s = sqlite3_str_new(db);
    sqlite3_str_appendf(s, "CREATE TABLE \"%w\" (", t->name);
    for (unsigned i = 0; i < t->ncols; i++) {
        columnDdl(db, f, s, t, i);
    }
    sqlite3_str_appendall(s, ")");
    char *sql = sqlite3_str_finish(s);
    if (sql == NULL) {
        tpdbErrf(errmsg, "out of memory");
        return TPDB_NOMEM;
    }
    int rc = execOne(db, sql, errmsg);
    sqlite3_free(sql);
    return rc;
}

static int createIndexes(sqlite3 *db,
                         struct tpdb_file *f,
                         struct tpdb_migrate_stats *stats,
                         char *errmsg)
{
    int rc = TPDB_OK;
    for (unsigned i = 0; i < tpdb_file_index_count(f) && rc == TPDB_OK; i++) {
        const struct tpdb_index *ix = tpdb_file_index(f, i);
        stats->indexes++;
        if (isColumnUnique(ix, ix->table, ix->cols[0])) {
            continue; /* made by the column's UNIQUE constraint */
        }
        sqlite3_str *s = sqlite3_str_new(db);
        sqlite3_str_appendf(s, "CREATE %sINDEX \"%w\" ON \"%w\" (",
                            ix->unique ? "UNIQUE " : "", ix->name, ix->table);
        for (unsigned c = 0; c < ix->ncols; c++) {
            sqlite3_str_appendf(s, "%s\"%w\"", c > 0 ? ", " : "", ix->cols[c]);
        }
        sqlite3_str_appendall(s, ")");
        char *sql = sqlite3_str_finish(s);
        rc = sql == NULL ? TPDB_NOMEM : execOne(db, sql, errmsg);
        sqlite3_free(sql);
    }
    return rc;
}

/* ---- Import: rows -------------------------------------------------------- */

static int bindValue(sqlite3_stmt *st, int i, const struct tpdb_value *v)
{
    switch (v->type) {
        case TPDB_VINT:
        case TPDB_VBOOL:
            return sqlite3_bind_int64(st, i, v->i);
        case TPDB_VREAL:
            return sqlite3_bind_double(st, i, v->r);
        case TPDB_VTEXT:
            return sqlite3_bind_text64(st, i, (const char *)v->base, v->len,
                                       SQLITE_STATIC, SQLITE_UTF8);
        case TPDB_VBLOB:
            /* A NULL pointer would bind NULL, not an empty blob. */
            return sqlite3_bind_blob64(st, i, v->len > 0 ? v->base : (void *)"",
                                       v->len, SQLITE_STATIC);
        default:
            return sqlite3_bind_null(st, i);
    }
}

/* Whether the imported table's PRIMARY KEY column is SQLite's rowid. */
static int pkIsRowid(const struct tpdb_table *t)
{
    return t->pk_idx >= 0 && t->cols[t->pk_idx].type != NULL &&
           sqlite3_stricmp(t->cols[t->pk_idx].type, "INTEGER") == 0;
}

/* The name that addresses the rowid, or NULL when the PK column is the
 * rowid already or every alias is taken by a real column (then rowids are
 * not kept). */
static const char *rowidName(const struct tpdb_table *t)
{
    static const char *const names[] = {"rowid", "_rowid_", "oid"};
    if (pkIsRowid(t)) {
        return NULL;
    }
    for (size_t n = 0; n < 3; n++) {
        unsigned i = 0;
        while (i < t->ncols && sqlite3_stricmp(t->cols[i].name, names[n])) {
            i++;
        }
        if (i == t->ncols) {
            return names[n];
        }
    }
    return NULL;
}

static sqlite3_stmt *prepareInsert(sqlite3 *db,
                                   const struct tpdb_table *t,
                                   const char *rowid)
{
    sqlite3_str *s = sqlite3_str_new(db);
    sqlite3_stmt *st = NULL;
    sqlite3_str_appendf(s, "INSERT INTO \"%w\" (", t->name);
    if (rowid != NULL) {
        sqlite3_str_appendf(s, "%s, ", rowid);
    }
    for (unsigned i = 0; i < t->ncols; i++) {
        sqlite3_str_appendf(s, "%s\"%w\"", i > 0 ? ", " : "", t->cols[i].name);
    }
    sqlite3_str_appendall(s, ") VALUES (?");
    for (unsigned i = 1; i < t->ncols + (rowid != NULL); i++) {
        sqlite3_str_appendall(s, ", ?");
    }
    sqlite3_str_appendall(s, ")");
    char *sql = sqlite3_str_finish(s);
    if (sql != NULL) {
        sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    }
    sqlite3_free(sql);
    return st;
}

/* Inserts the cursor's current row. */
static int insertRow(sqlite3_stmt *st,
                     struct tpdb_cursor *c,
                     const struct tpdb_table *t,
                     int with_rowid)
{
    const struct tpdb_value *vals;
    unsigned n, stored;
    int64_t rowid;
    int rc = tpdb_cursor_rowid(c, &rowid);
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_row(c, &vals, &n, &stored);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    int off = with_rowid ? 2 : 1;
    if (with_rowid) {
        sqlite3_bind_int64(st, 1, rowid);
    }
    for (unsigned i = 0; i < n && i < t->ncols; i++) {
        if ((int)i == t->pk_idx && vals[i].type == TPDB_VNULL && pkIsRowid(t)) {
            sqlite3_bind_int64(st, off + (int)i, rowid);
        } else {
            bindValue(st, off + (int)i, &vals[i]);
        }
    }
    return TPDB_OK;
}

static int copyRows(sqlite3 *db,
                    struct tpdb_file *f,
                    const struct tpdb_table *t,
                    struct progress *p,
                    uint64_t *copied,
                    char *errmsg)
{
    const char *rowid = rowidName(t);
    struct tpdb_cursor *c = NULL;
    sqlite3_stmt *st = prepareInsert(db, t, rowid);
    int rc;
    *copied = 0;
    if (st == NULL) {
        return sqliteErr(db, errmsg, "prepare insert");
    }
    rc = tpdb_cursor_open_table(f, t->name, &c);
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_first(c);
    }
    while (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        rc = insertRow(st, c, t, rowid != NULL);
        if (rc != TPDB_OK) {
            break;
        }
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = sqliteErr(db, errmsg, "insert");
            tpdbErrWrap(errmsg, "table %s", t->name);
            goto out;
        }
        sqlite3_reset(st);
        (*copied)++;
        progressTick(p);
        rc = tpdb_cursor_next(c);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "table %s: %s", t->name, tpdb_file_errmsg(f));
    }
out:
    tpdb_cursor_close(c);
    sqlite3_finalize(st);
    return rc;
}

/* Copies one table and checks the row counts on both sides. */
static int importTable(sqlite3 *db,
                       struct tpdb_file *f,
                       const struct tpdb_table *t,
                       struct progress *p,
                       struct tpdb_migrate_stats *stats,
                       char *errmsg)
{
    uint64_t copied, source;
    int rc = createTable(db, f, t, errmsg);
    if (rc == TPDB_OK) {
        rc = copyRows(db, f, t, p, &copied, errmsg);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tpdbCount(f, t->name, &source);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "count %s: %s", t->name, tpdb_file_errmsg(f));
        return rc;
    }
    int64_t dest = sqliteCount(db, t->name, errmsg);
    if (dest < 0) {
        return TPDB_IOERR;
    }
    if ((uint64_t)dest != source || copied != source) {
        tpdbErrf(errmsg,
                 "table %s: row count mismatch (source %llu, copied %llu, "
                 "destination %lld)",
                 t->name, (unsigned long long)source,
                 (unsigned long long)copied, (long long)dest);
        return TPDB_CORRUPT;
    }
    stats->tables++;
    stats->rows += copied;
    return TPDB_OK;
}

static uint64_t tpdbTotalRows(struct tpdb_file *f)
{
    uint64_t total = 0, n;
    for (unsigned i = 0; i < tpdb_file_table_count(f); i++) {
        if (tpdbCount(f, tpdb_file_table(f, i)->name, &n) == TPDB_OK) {
            total += n;
        }
    }
    return total;
}

/* Builds the whole SQLite database at `path` (which must not exist). */
static int importInto(struct tpdb_file *f,
                      const char *path,
                      struct progress *p,
                      struct tpdb_migrate_stats *stats,
                      char *errmsg)
{
    sqlite3 *db = NULL;
    int rc = TPDB_IOERR;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK) {
        rc = db == NULL ? TPDB_NOMEM : sqliteErr(db, errmsg, path);
        goto out;
    }
    rc = execOne(db, "PRAGMA journal_mode=OFF", errmsg);
    if (rc == TPDB_OK) {
        rc = execOne(db, "PRAGMA synchronous=OFF", errmsg);
    }
    if (rc == TPDB_OK) {
        rc = execOne(db, "BEGIN", errmsg);
    }
    p->total = p->on ? tpdbTotalRows(f) : 0;
    for (unsigned i = 0; i < tpdb_file_table_count(f) && rc == TPDB_OK; i++) {
        rc = importTable(db, f, tpdb_file_table(f, i), p, stats, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = createIndexes(db, f, stats, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = execOne(db, "COMMIT", errmsg);
    }
    progressEnd(p);
out:
    if (sqlite3_close(db) != SQLITE_OK && rc == TPDB_OK) {
        tpdbErrf(errmsg, "close %s: %s", path, sqlite3_errmsg(db));
        rc = TPDB_IOERR;
    }
    return rc;
}

int tpdbImport(const char *tpdb_path,
               const char *sqlite_path,
               const struct tpdb_migrate_opts *opts,
               struct tpdb_migrate_stats *stats,
               char *errmsg)
{
    struct tpdb_migrate_stats st = {0};
    struct tpdb_file *f = NULL;
    struct progress p;
    char *tmp = NULL;
    int rc;
    if (tpdb_path == NULL || sqlite_path == NULL) {
        tpdbErrf(errmsg, "import: missing path");
        return TPDB_INVALID;
    }
    if (pathExists(sqlite_path)) {
        tpdbErrf(errmsg, "%s already exists", sqlite_path);
        return TPDB_INVALID;
    }
    rc = tpdb_file_open(tpdb_path, TPDB_FILE_RDONLY, &f, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    tmp = tempPath(sqlite_path, "import");
    if (tmp == NULL) {
        tpdbErrf(errmsg, "out of memory");
        rc = TPDB_NOMEM;
        goto out;
    }
    unlink(tmp);
    progressInit(&p, opts, "import");
    rc = importInto(f, tmp, &p, &st, errmsg);
    if (rc == TPDB_OK) {
        rc = fsyncPath(tmp, 0, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = renameInto(tmp, sqlite_path, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = fsyncParent(sqlite_path, errmsg);
    } else {
        unlink(tmp);
    }
out:
    tpdb_free(tmp);
    tpdb_file_close(f);
    if (rc == TPDB_OK && stats != NULL) {
        *stats = st;
    }
    return rc;
}

/* ---- Export: schema ------------------------------------------------------ */

/* A column of the source table, strings owned (sqlite3_malloc'ed). */
struct srcColumn {
    char *name;
    char *type;
    char *dflt;
    int notnull;
    int pk; /* position in the PRIMARY KEY, 1-based; 0 if not in it */
};

struct srcTable {
    char *name;
    struct srcColumn *cols;
    unsigned ncols;
    int pk_idx;   /* the single PK column, or -1 */
    unsigned npk; /* columns in the PRIMARY KEY */
    int64_t rows; /* count(*) at the start of the read transaction */
};

static void srcTableFree(struct srcTable *t)
{
    for (unsigned i = 0; i < t->ncols; i++) {
        sqlite3_free(t->cols[i].name);
        sqlite3_free(t->cols[i].type);
        sqlite3_free(t->cols[i].dflt);
    }
    sqlite3_free(t->cols);
    sqlite3_free(t->name);
    memset(t, 0, sizeof *t);
}

static char *columnText(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s == NULL ? NULL : sqlite3_mprintf("%s", s);
}

static int srcColumnsRead(sqlite3 *db, struct srcTable *t, char *errmsg)
{
    char *sql = sqlite3_mprintf("PRAGMA table_info(\"%w\")", t->name);
    sqlite3_stmt *st = NULL;
    unsigned cap = 0;
    if (sql == NULL ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(sql);
        return sqliteErr(db, errmsg, "table_info");
    }
    sqlite3_free(sql);
    t->pk_idx = -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (t->ncols == cap) {
            cap = cap == 0 ? 8 : cap * 2;
            void *p = sqlite3_realloc64(t->cols, cap * sizeof *t->cols);
            if (p == NULL) {
                sqlite3_finalize(st);
                tpdbErrf(errmsg, "out of memory");
                return TPDB_NOMEM;
            }
            t->cols = p;
        }
        struct srcColumn *c = &t->cols[t->ncols++];
        c->name = columnText(st, 1);
        c->type = columnText(st, 2);
        c->notnull = sqlite3_column_int(st, 3);
        c->dflt = columnText(st, 4);
        c->pk = sqlite3_column_int(st, 5);
        if (c->pk > 0) {
            t->npk++;
            t->pk_idx = (int)t->ncols - 1;
        }
    }
    sqlite3_finalize(st);
    if (t->npk != 1) {
        t->pk_idx = -1; /* a composite key becomes a unique index */
    }
    return TPDB_OK;
}

static int createTpdbTable(struct tpdb_file *f,
                           const struct srcTable *t,
                           char *errmsg)
{
    struct tpdb_column *cols = tpdb_calloc(t->ncols, sizeof *cols);
    if (cols == NULL) {
        tpdbErrf(errmsg, "out of memory");
        return TPDB_NOMEM;
    }
    for (unsigned i = 0; i < t->ncols; i++) {
        cols[i].name = t->cols[i].name;
        cols[i].type = t->cols[i].type != NULL ? t->cols[i].type : "";
        cols[i].not_null = t->cols[i].notnull;
        cols[i].default_sql = t->cols[i].dflt;
    }
    int rc = tpdb_file_create_table(f, t->name, cols, t->ncols, t->pk_idx);
    tpdb_free(cols);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "create table %s: %s", t->name, tpdb_file_errmsg(f));
    }
    return rc;
}

/* ---- Export: rows -------------------------------------------------------- */

static void valueFromColumn(sqlite3_stmt *st, int i, struct tpdb_value *v)
{
    memset(v, 0, sizeof *v);
    switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            v->type = TPDB_VINT;
            v->i = sqlite3_column_int64(st, i);
            break;
        case SQLITE_FLOAT:
            v->type = TPDB_VREAL;
            v->r = sqlite3_column_double(st, i);
            break;
        case SQLITE_TEXT:
            v->type = TPDB_VTEXT;
            v->base = sqlite3_column_text(st, i);
            v->len = (size_t)sqlite3_column_bytes(st, i);
            break;
        case SQLITE_BLOB:
            v->type = TPDB_VBLOB;
            v->base = sqlite3_column_blob(st, i);
            v->len = (size_t)sqlite3_column_bytes(st, i);
            if (v->base == NULL) {
                v->base = (const uint8_t *)"";
            }
            break;
        default:
            v->type = TPDB_VNULL;
            break;
    }
}

/* SELECT of every column, in rowid order when the table has rowids. */
static sqlite3_stmt *prepareSelect(sqlite3 *db, const struct srcTable *t)
{
    sqlite3_stmt *st = NULL;
    for (int ordered = 1; ordered >= 0 && st == NULL; ordered--) {
        sqlite3_str *s = sqlite3_str_new(db);
        sqlite3_str_appendall(s, "SELECT ");
        for (unsigned i = 0; i < t->ncols; i++) {
            sqlite3_str_appendf(s, "%s\"%w\"", i > 0 ? ", " : "",
                                t->cols[i].name);
        }
        sqlite3_str_appendf(s, " FROM \"%w\"%s", t->name,
                            ordered ? " ORDER BY _rowid_" : "");
        char *sql = sqlite3_str_finish(s);
        if (sql != NULL) {
            sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        }
        sqlite3_free(sql);
    }
    return st;
}

static int exportRows(sqlite3 *db,
                      struct tpdb_file *f,
                      const struct srcTable *t,
                      struct progress *p,
                      uint64_t *copied,
                      char *errmsg)
{
    struct tpdb_value *vals = tpdb_calloc(t->ncols, sizeof *vals);
    sqlite3_stmt *st = prepareSelect(db, t);
    int rc = TPDB_OK, src;
    *copied = 0;
    if (vals == NULL || st == NULL) {
        rc = vals == NULL ? TPDB_NOMEM : sqliteErr(db, errmsg, "select");
        goto out;
    }
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        for (unsigned i = 0; i < t->ncols; i++) {
            valueFromColumn(st, (int)i, &vals[i]);
        }
        rc = tpdb_file_insert(f, t->name, vals, t->ncols, NULL);
        if (rc == TPDB_OK && ++*copied % EXPORT_BATCH == 0) {
            rc = tpdb_file_commit(f);
            rc = rc == TPDB_OK ? tpdb_file_begin(f) : rc;
        }
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "table %s, row %llu: %s", t->name,
                     (unsigned long long)*copied + 1, tpdb_file_errmsg(f));
            goto out;
        }
        progressTick(p);
    }
    if (src != SQLITE_DONE) {
        rc = sqliteErr(db, errmsg, t->name);
    }
out:
    sqlite3_finalize(st);
    tpdb_free(vals);
    return rc;
}

/* ---- Export: indexes ----------------------------------------------------- */

#define MAX_INDEX_COLS 255

/* Reads the key columns of a source index into cols (sqlite3 strings). */
static int indexColumns(sqlite3 *db,
                        const char *index,
                        char **cols,
                        unsigned *n,
                        char *errmsg)
{
    char *sql = sqlite3_mprintf("PRAGMA index_info(\"%w\")", index);
    sqlite3_stmt *st = NULL;
    int rc = TPDB_OK;
    *n = 0;
    if (sql == NULL ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(sql);
        return sqliteErr(db, errmsg, "index_info");
    }
    sqlite3_free(sql);
    while (rc == TPDB_OK && sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_int(st, 1) < 0 || *n == MAX_INDEX_COLS) {
            tpdbErrf(errmsg,
                     "index %s: expressions, the rowid and more than %d "
                     "columns cannot be indexed in a TPDB file",
                     index, MAX_INDEX_COLS);
            rc = TPDB_INVALID;
        } else if ((cols[*n] = columnText(st, 2)) == NULL) {
            rc = TPDB_NOMEM;
        } else {
            (*n)++;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* TrashPandaDB names the index of a UNIQUE constraint _uq_<table>_<col>. */
static char *tpdbIndexName(const char *table,
                           const char *name,
                           const char *origin,
                           char **cols,
                           unsigned n)
{
    if (strcmp(origin, "u") != 0) {
        return sqlite3_mprintf("%s", name);
    }
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "_uq_%s", table);
    for (unsigned i = 0; i < n; i++) {
        sqlite3_str_appendf(s, "_%s", cols[i]);
    }
    return sqlite3_str_finish(s);
}

static int exportIndex(sqlite3 *db,
                       struct tpdb_file *f,
                       const char *table,
                       sqlite3_stmt *list,
                       struct tpdb_migrate_stats *stats,
                       char *errmsg)
{
    const char *name = (const char *)sqlite3_column_text(list, 1);
    const char *origin = (const char *)sqlite3_column_text(list, 3);
    char *cols[MAX_INDEX_COLS];
    char *tname = NULL;
    unsigned n = 0;
    int rc;
    if (name == NULL || origin == NULL || strcmp(origin, "pk") == 0) {
        return TPDB_OK;
    }
    if (sqlite3_column_int(list, 4) != 0) {
        tpdbErrf(errmsg, "index %s: partial indexes cannot be exported", name);
        return TPDB_INVALID;
    }
    rc = indexColumns(db, name, cols, &n, errmsg);
    if (rc == TPDB_OK) {
        tname = tpdbIndexName(table, name, origin, cols, n);
        rc = tname == NULL ? TPDB_NOMEM : TPDB_OK;
    }
    if (rc == TPDB_OK) {
        rc = tpdb_file_create_index(f, tname, table, (const char *const *)cols,
                                    n, sqlite3_column_int(list, 2));
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "index %s: %s", name, tpdb_file_errmsg(f));
        }
    }
    stats->indexes += rc == TPDB_OK;
    sqlite3_free(tname);
    for (unsigned i = 0; i < n; i++) {
        sqlite3_free(cols[i]);
    }
    return rc;
}

/* A composite PRIMARY KEY becomes the unique index _pk_<table>. */
static int exportCompositeKey(struct tpdb_file *f,
                              const struct srcTable *t,
                              struct tpdb_migrate_stats *stats,
                              char *errmsg)
{
    const char *cols[MAX_INDEX_COLS];
    if (t->npk < 2 || t->npk > MAX_INDEX_COLS) {
        return TPDB_OK;
    }
    for (unsigned i = 0; i < t->ncols; i++) {
        if (t->cols[i].pk > 0 && (unsigned)t->cols[i].pk <= t->npk) {
            cols[t->cols[i].pk - 1] = t->cols[i].name;
        }
    }
    char *name = sqlite3_mprintf("_pk_%s", t->name);
    if (name == NULL) {
        return TPDB_NOMEM;
    }
    int rc = tpdb_file_create_index(f, name, t->name, cols, t->npk, 1);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "primary key of %s: %s", t->name, tpdb_file_errmsg(f));
    }
    stats->indexes += rc == TPDB_OK;
    sqlite3_free(name);
    return rc;
}

static int exportIndexes(sqlite3 *db,
                         struct tpdb_file *f,
                         const struct srcTable *t,
                         struct tpdb_migrate_stats *stats,
                         char *errmsg)
{
    char *sql = sqlite3_mprintf("PRAGMA index_list(\"%w\")", t->name);
    sqlite3_stmt *st = NULL;
    int rc = exportCompositeKey(f, t, stats, errmsg);
    if (rc != TPDB_OK) {
        sqlite3_free(sql);
        return rc;
    }
    if (sql == NULL ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(sql);
        return sqliteErr(db, errmsg, "index_list");
    }
    sqlite3_free(sql);
    while (rc == TPDB_OK && sqlite3_step(st) == SQLITE_ROW) {
        rc = exportIndex(db, f, t->name, st, stats, errmsg);
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- Export: driver ------------------------------------------------------ */

struct exportJob {
    sqlite3 *db;
    struct tpdb_file *f;
    struct srcTable *tables;
    unsigned ntables;
    struct progress p;
    struct tpdb_migrate_stats stats;
};

static int readTables(struct exportJob *job, char *errmsg)
{
    sqlite3_stmt *st = NULL;
    unsigned cap = 0;
    int rc = TPDB_OK;
    if (sqlite3_prepare_v2(job->db,
                           "SELECT name FROM sqlite_schema WHERE type = "
                           "'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE "
                           "'\\' AND sql NOT LIKE 'CREATE VIRTUAL%' "
                           "ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK) {
        return sqliteErr(job->db, errmsg, "read schema");
    }
    while (rc == TPDB_OK && sqlite3_step(st) == SQLITE_ROW) {
        if (job->ntables == cap) {
            cap = cap == 0 ? 8 : cap * 2;
            void *p = sqlite3_realloc64(job->tables, cap * sizeof *job->tables);
            if (p == NULL) {
                rc = TPDB_NOMEM;
                break;
            }
            job->tables = p;
        }
        struct srcTable *t = &job->tables[job->ntables++];
        memset(t, 0, sizeof *t);
        t->name = columnText(st, 0);
        rc = t->name == NULL ? TPDB_NOMEM : srcColumnsRead(job->db, t, errmsg);
        t->rows = rc == TPDB_OK ? sqliteCount(job->db, t->name, errmsg) : 0;
        rc = rc == TPDB_OK && t->rows < 0 ? TPDB_IOERR : rc;
        job->p.total += (uint64_t)t->rows;
    }
    sqlite3_finalize(st);
    return rc;
}

static int exportAll(struct exportJob *job, char *errmsg)
{
    uint64_t copied;
    int rc = tpdb_file_begin(job->f);
    for (unsigned i = 0; i < job->ntables && rc == TPDB_OK; i++) {
        struct srcTable *t = &job->tables[i];
        copied = 0;
        rc = createTpdbTable(job->f, t, errmsg);
        if (rc == TPDB_OK) {
            rc = exportRows(job->db, job->f, t, &job->p, &copied, errmsg);
        }
        if (rc == TPDB_OK && copied != (uint64_t)t->rows) {
            tpdbErrf(errmsg, "table %s: read %llu rows, expected %lld", t->name,
                     (unsigned long long)copied, (long long)t->rows);
            rc = TPDB_CORRUPT;
        }
        job->stats.rows += copied;
    }
    for (unsigned i = 0; i < job->ntables && rc == TPDB_OK; i++) {
        rc = exportIndexes(job->db, job->f, &job->tables[i], &job->stats,
                           errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdb_file_commit(job->f);
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "commit: %s", tpdb_file_errmsg(job->f));
        }
    }
    job->stats.tables = rc == TPDB_OK ? job->ntables : 0;
    return rc;
}

/* Reopens the written file read-only and compares row counts. */
static int exportVerify(struct exportJob *job, const char *path, char *errmsg)
{
    struct tpdb_file *f;
    uint64_t n;
    int rc = tpdb_file_open(path, TPDB_FILE_RDONLY, &f, errmsg);
    for (unsigned i = 0; i < job->ntables && rc == TPDB_OK; i++) {
        const struct srcTable *t = &job->tables[i];
        rc = tpdbCount(f, t->name, &n);
        if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "verify %s: %s", t->name, tpdb_file_errmsg(f));
        } else if (n != (uint64_t)t->rows) {
            tpdbErrf(errmsg, "verify %s: %llu rows written, %lld expected",
                     t->name, (unsigned long long)n, (long long)t->rows);
            rc = TPDB_CORRUPT;
        }
    }
    tpdb_file_close(f);
    return rc;
}

static int exportOpenSource(const char *path, sqlite3 **db, char *errmsg)
{
    if (!pathExists(path)) {
        tpdbErrf(errmsg, "%s: no such file", path);
        return TPDB_NOTFOUND;
    }
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        return *db == NULL ? TPDB_NOMEM : sqliteErr(*db, errmsg, path);
    }
    /* One read transaction, so that counts and rows agree. */
    int rc = execOne(*db, "BEGIN", errmsg);
    if (rc == TPDB_OK) {
        rc = execOne(*db, "SELECT count(*) FROM sqlite_schema", errmsg);
    }
    return rc;
}

/* Moves tmp (and its WAL) to dest. The WAL goes first: a stale dest-wal
 * with TrashPandaDB's magic would otherwise be replayed into the new file. */
static int exportPublish(const char *tmp,
                         const char *tmpwal,
                         const char *dest,
                         const char *destwal,
                         char *errmsg)
{
    int rc = TPDB_OK;
    if (pathExists(tmpwal)) {
        rc = renameInto(tmpwal, destwal, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = renameInto(tmp, dest, errmsg);
        if (rc != TPDB_OK) {
            unlink(destwal);
        }
    }
    if (rc == TPDB_OK) {
        rc = fsyncParent(dest, errmsg);
    }
    return rc;
}

static int exportRun(struct exportJob *job,
                     const char *src,
                     const char *tmp,
                     char *errmsg)
{
    int rc = exportOpenSource(src, &job->db, errmsg);
    if (rc == TPDB_OK) {
        rc = readTables(job, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdb_file_open(tmp, TPDB_FILE_CREATE, &job->f, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = exportAll(job, errmsg);
        progressEnd(&job->p);
    }
    tpdb_file_close(job->f);
    job->f = NULL;
    if (rc == TPDB_OK) {
        rc = exportVerify(job, tmp, errmsg);
    }
    return rc;
}

int tpdbExport(const char *sqlite_path,
               const char *tpdb_path,
               const struct tpdb_migrate_opts *opts,
               struct tpdb_migrate_stats *stats,
               char *errmsg)
{
    struct exportJob job;
    int rc = TPDB_NOMEM;
    if (sqlite_path == NULL || tpdb_path == NULL) {
        tpdbErrf(errmsg, "export: missing path");
        return TPDB_INVALID;
    }
    memset(&job, 0, sizeof job);
    char *destwal = pathWith(tpdb_path, TPDB_FILE_WAL_SUFFIX);
    char *tmp = tempPath(tpdb_path, "export");
    char *tmpwal = tmp != NULL ? pathWith(tmp, TPDB_FILE_WAL_SUFFIX) : NULL;
    if (destwal == NULL || tmpwal == NULL) {
        tpdbErrf(errmsg, "out of memory");
        goto out;
    }
    if (pathExists(tpdb_path) || pathExists(destwal)) {
        tpdbErrf(errmsg, "%s or its -wal already exists", tpdb_path);
        rc = TPDB_INVALID;
        goto out;
    }
    unlink(tmp);
    unlink(tmpwal);
    progressInit(&job.p, opts, "export");
    rc = exportRun(&job, sqlite_path, tmp, errmsg);
    if (rc == TPDB_OK) {
        rc = exportPublish(tmp, tmpwal, tpdb_path, destwal, errmsg);
    }
    if (rc != TPDB_OK) {
        unlink(tmp);
        unlink(tmpwal);
    }
out:
    for (unsigned i = 0; i < job.ntables; i++) {
        srcTableFree(&job.tables[i]);
    }
    sqlite3_free(job.tables);
    sqlite3_close(job.db);
    tpdb_free(tmpwal);
    tpdb_free(tmp);
    tpdb_free(destwal);
    if (rc == TPDB_OK && stats != NULL) {
        *stats = job.stats;
    }
    return rc;
}
