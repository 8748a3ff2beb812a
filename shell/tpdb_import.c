/*
 * TPDB file to SQLite (tpdbImport in tpdb_migrate.h). Reads the TPDB file
 * read-only through vfs/tpdbfile.h and writes a temporary SQLite database in
 * one transaction (journal off: the rename is what makes the result appear
 * atomically): tables with their columns and constraints, rows with their
 * rowids, then the indexes. Row counts are verified per table before the
 * file is fsynced and renamed into place.
 */
#include "shell/tpdb_migrate_int.h"

#include <string.h>
#include <unistd.h>

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

/* Whether ix is the index of a UNIQUE constraint: TrashPandaDB names the
 * index of a column's UNIQUE `_uq_<table>_<col>`, tpdbExport that of a
 * table constraint UNIQUE (a, b) `_uq_<table>_<a>_<b>`. */
static int isConstraintUnique(const struct tpdb_index *ix)
{
    const char *p = ix->name;
    size_t tl = strlen(ix->table);
    if (!ix->unique || ix->ncols == 0 || strncmp(p, "_uq_", 4) != 0 ||
        strncmp(p + 4, ix->table, tl) != 0) {
        return 0;
    }
    p += 4 + tl;
    for (unsigned c = 0; c < ix->ncols; c++) {
        size_t cl = strlen(ix->cols[c]);
        if (*p != '_' || strncmp(p + 1, ix->cols[c], cl) != 0) {
            return 0;
        }
        p += 1 + cl;
    }
    return *p == '\0';
}

/* UNIQUE constraints of the table, from their indexes. */
static void uniqueDdl(struct tpdb_file *f,
                      sqlite3_str *s,
                      const struct tpdb_table *t)
{
    for (unsigned i = 0; i < tpdb_file_index_count(f); i++) {
        const struct tpdb_index *ix = tpdb_file_index(f, i);
        if (strcmp(ix->table, t->name) != 0 || !isConstraintUnique(ix)) {
            continue;
        }
        sqlite3_str_appendall(s, ", UNIQUE (");
        for (unsigned c = 0; c < ix->ncols; c++) {
            sqlite3_str_appendf(s, "%s\"%w\"", c > 0 ? ", " : "", ix->cols[c]);
        }
        sqlite3_str_appendall(s, ")");
    }
}

/* The unique index `_pk_<table>` that tpdbExport makes for a PRIMARY KEY
 * other than the rowid, when it can be this table's key: the table has no
 * PK column, or the index is on exactly that column. NULL otherwise. */
static const struct tpdb_index *keyIndex(struct tpdb_file *f,
                                         const struct tpdb_table *t)
{
    for (unsigned i = 0; i < tpdb_file_index_count(f); i++) {
        const struct tpdb_index *ix = tpdb_file_index(f, i);
        if (!ix->unique || ix->ncols == 0 || strcmp(ix->table, t->name) != 0 ||
            strncmp(ix->name, "_pk_", 4) != 0 ||
            strcmp(ix->name + 4, t->name) != 0) {
            continue;
        }
        if (t->pk_idx < 0 ||
            (ix->ncols == 1 &&
             strcmp(ix->cols[0], t->cols[t->pk_idx].name) == 0)) {
            return ix;
        }
    }
    return NULL;
}

/* Whether ix is the index keyIndex() finds for its table. */
static int isKeyIndex(struct tpdb_file *f, const struct tpdb_index *ix)
{
    const struct tpdb_table *t = tpdb_file_table_find(f, ix->table);
    return t != NULL && keyIndex(f, t) == ix;
}

/* A table-level PRIMARY KEY from the key index, when the table has no PK
 * column (a composite key, or a single one TrashPandaDB did not record). */
static void keyDdl(struct tpdb_file *f,
                   sqlite3_str *s,
                   const struct tpdb_table *t)
{
    const struct tpdb_index *ix = keyIndex(f, t);
    if (ix == NULL || t->pk_idx >= 0) {
        return;
    }
    sqlite3_str_appendall(s, ", PRIMARY KEY (");
    for (unsigned c = 0; c < ix->ncols; c++) {
        sqlite3_str_appendf(s, "%s\"%w\"", c > 0 ? ", " : "", ix->cols[c]);
    }
    sqlite3_str_appendall(s, ")");
}

static void columnDdl(sqlite3 *db,
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
}

static int createTable(sqlite3 *db,
                       struct tpdb_file *f,
                       const struct tpdb_table *t,
                       char *errmsg)
{
    sqlite3_str *s = sqlite3_str_new(db);
    sqlite3_str_appendf(s, "CREATE TABLE \"%w\" (", t->name);
    for (unsigned i = 0; i < t->ncols; i++) {
        columnDdl(db, s, t, i);
    }
    keyDdl(f, s, t);
    uniqueDdl(f, s, t);
    sqlite3_str_appendall(s, ")");
    char *sql = sqlite3_str_finish(s);
    if (sql == NULL) {
        tpdbErrf(errmsg, "out of memory");
        return TPDB_NOMEM;
    }
    int rc = migrateExecOne(db, sql, errmsg);
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
        if (isConstraintUnique(ix) || isKeyIndex(f, ix)) {
            continue; /* made by a UNIQUE or PRIMARY KEY constraint */
        }
        sqlite3_str *s = sqlite3_str_new(db);
        sqlite3_str_appendf(s, "CREATE %sINDEX \"%w\" ON \"%w\" (",
                            ix->unique ? "UNIQUE " : "", ix->name, ix->table);
        for (unsigned c = 0; c < ix->ncols; c++) {
            sqlite3_str_appendf(s, "%s\"%w\"", c > 0 ? ", " : "", ix->cols[c]);
        }
        sqlite3_str_appendall(s, ")");
        char *sql = sqlite3_str_finish(s);
        rc = sql == NULL ? TPDB_NOMEM : migrateExecOne(db, sql, errmsg);
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
                    struct migrateProgress *p,
                    uint64_t *copied,
                    char *errmsg)
{
    const char *rowid = rowidName(t);
    struct tpdb_cursor *c = NULL;
    sqlite3_stmt *st = prepareInsert(db, t, rowid);
    int rc;
    *copied = 0;
    if (st == NULL) {
        return migrateSqliteErr(db, errmsg, "prepare insert");
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
            rc = migrateSqliteErr(db, errmsg, "insert");
            tpdbErrWrap(errmsg, "table %s", t->name);
            goto out;
        }
        sqlite3_reset(st);
        (*copied)++;
        migrateProgressTick(p);
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
                       struct migrateProgress *p,
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
    rc = migrateTpdbCount(f, t->name, &source);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "count %s: %s", t->name, tpdb_file_errmsg(f));
        return rc;
    }
    int64_t dest = migrateSqliteCount(db, t->name, errmsg);
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
        if (migrateTpdbCount(f, tpdb_file_table(f, i)->name, &n) == TPDB_OK) {
            total += n;
        }
    }
    return total;
}

/* Builds the whole SQLite database at `path` (which must not exist). */
static int importInto(struct tpdb_file *f,
                      const char *path,
                      struct migrateProgress *p,
                      struct tpdb_migrate_stats *stats,
                      char *errmsg)
{
    sqlite3 *db = NULL;
    int rc = TPDB_IOERR;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK) {
        rc = db == NULL ? TPDB_NOMEM : migrateSqliteErr(db, errmsg, path);
        goto out;
    }
    rc = migrateExecOne(db, "PRAGMA journal_mode=OFF", errmsg);
    if (rc == TPDB_OK) {
        rc = migrateExecOne(db, "PRAGMA synchronous=OFF", errmsg);
    }
    if (rc == TPDB_OK) {
        rc = migrateExecOne(db, "BEGIN", errmsg);
    }
    p->total = p->on ? tpdbTotalRows(f) : 0;
    for (unsigned i = 0; i < tpdb_file_table_count(f) && rc == TPDB_OK; i++) {
        rc = importTable(db, f, tpdb_file_table(f, i), p, stats, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = createIndexes(db, f, stats, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = migrateExecOne(db, "COMMIT", errmsg);
    }
    migrateProgressEnd(p);
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
    struct migrateProgress p;
    char *tmp = NULL;
    int rc;
    if (tpdb_path == NULL || sqlite_path == NULL) {
        tpdbErrf(errmsg, "import: missing path");
        return TPDB_INVALID;
    }
    if (migratePathExists(sqlite_path)) {
        tpdbErrf(errmsg, "%s already exists", sqlite_path);
        return TPDB_INVALID;
    }
    rc = tpdb_file_open(tpdb_path, TPDB_FILE_RDONLY, &f, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    tmp = migrateTempPath(sqlite_path, "import");
    if (tmp == NULL) {
        tpdbErrf(errmsg, "out of memory");
        rc = TPDB_NOMEM;
        goto out;
    }
    unlink(tmp);
    migrateProgressInit(&p, opts, "import");
    rc = importInto(f, tmp, &p, &st, errmsg);
    if (rc == TPDB_OK) {
        rc = migrateFsyncPath(tmp, 0, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = migrateRename(tmp, sqlite_path, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = migrateFsyncParent(sqlite_path, errmsg);
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
