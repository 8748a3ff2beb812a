/*
 * SQLite to TPDB file (tpdbExport in tpdb_migrate.h). Reads the SQLite
 * database in one read transaction and writes a temporary TPDB file through
 * the library's writer, committing every EXPORT_BATCH rows so memory stays
 * bounded; then indexes, a read-only reopen that verifies row counts per
 * table, and the rename of the file (WAL first) into place.
 */
#include "shell/tpdb_migrate_int.h"

#include <string.h>
#include <unistd.h>

#define EXPORT_BATCH 20000

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
        return migrateSqliteErr(db, errmsg, "table_info");
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
                      struct migrateProgress *p,
                      uint64_t *copied,
                      char *errmsg)
{
    struct tpdb_value *vals = tpdb_calloc(t->ncols, sizeof *vals);
    sqlite3_stmt *st = prepareSelect(db, t);
    int rc = TPDB_OK, src;
    *copied = 0;
    if (vals == NULL || st == NULL) {
        rc = vals == NULL ? TPDB_NOMEM : migrateSqliteErr(db, errmsg, "select");
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
        migrateProgressTick(p);
    }
    if (src != SQLITE_DONE) {
        rc = migrateSqliteErr(db, errmsg, t->name);
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
        return migrateSqliteErr(db, errmsg, "index_info");
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
        return migrateSqliteErr(db, errmsg, "index_list");
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
    struct migrateProgress p;
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
        return migrateSqliteErr(job->db, errmsg, "read schema");
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
        t->rows =
            rc == TPDB_OK ? migrateSqliteCount(job->db, t->name, errmsg) : 0;
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
        rc = migrateTpdbCount(f, t->name, &n);
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
    if (!migratePathExists(path)) {
        tpdbErrf(errmsg, "%s: no such file", path);
        return TPDB_NOTFOUND;
    }
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        return *db == NULL ? TPDB_NOMEM : migrateSqliteErr(*db, errmsg, path);
    }
    /* One read transaction, so that counts and rows agree. */
    int rc = migrateExecOne(*db, "BEGIN", errmsg);
    if (rc == TPDB_OK) {
        rc = migrateExecOne(*db, "SELECT count(*) FROM sqlite_schema", errmsg);
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
    if (migratePathExists(tmpwal)) {
        rc = migrateRename(tmpwal, destwal, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = migrateRename(tmp, dest, errmsg);
        if (rc != TPDB_OK) {
            unlink(destwal);
        }
    }
    if (rc == TPDB_OK) {
        rc = migrateFsyncParent(dest, errmsg);
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
        migrateProgressEnd(&job->p);
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
    char *destwal = migratePathWith(tpdb_path, TPDB_FILE_WAL_SUFFIX);
    char *tmp = migrateTempPath(tpdb_path, "export");
    char *tmpwal =
        tmp != NULL ? migratePathWith(tmp, TPDB_FILE_WAL_SUFFIX) : NULL;
    if (destwal == NULL || tmpwal == NULL) {
        tpdbErrf(errmsg, "out of memory");
        goto out;
    }
    if (migratePathExists(tpdb_path) || migratePathExists(destwal)) {
        tpdbErrf(errmsg, "%s or its -wal already exists", tpdb_path);
        rc = TPDB_INVALID;
        goto out;
    }
    unlink(tmp);
    unlink(tmpwal);
    migrateProgressInit(&job.p, opts, "export");
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
