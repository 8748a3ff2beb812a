/*
 * SQLite to TPDB file (tpdbExport in tpdb_migrate.h). Reads the SQLite
 * database in one read transaction and writes a temporary TPDB file through
 * the library's writer, committing every EXPORT_BATCH rows so memory stays
 * bounded; then indexes, a read-only reopen that verifies row counts per
 * table, and the rename of the file (WAL first) into place. DEFAULTs are
 * rewritten in TrashPandaDB's literal forms (tpdb_export_dflt.c); what
 * the format cannot hold is left out with a warning, or refused when strict.
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
        t->pk_idx = -1; /* a composite key is only the _pk_ index */
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

/* One export, from the source's schema to the published file. */
struct exportJob {
    const struct tpdb_migrate_opts *opts; /* may be NULL */
    sqlite3 *db;      /* the source, read-only, in one read transaction */
    sqlite3 *scratch; /* in-memory database that evaluates DEFAULTs */
    struct tpdb_file *f;
    struct srcTable *tables;
    unsigned ntables;
    struct migrateProgress p;
    struct tpdb_migrate_stats stats;
};

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

/* ---- Export: what TrashPandaDB cannot hold ------------------------------ */

/* Something TrashPandaDB cannot hold (`what` says which and why): a strict
 * export fails with it as errmsg; otherwise it is left out, counted in
 * *count, with a warning line. */
static int leaveOut(struct exportJob *job,
                    uint32_t *count,
                    const char *what,
                    char *errmsg)
{
    if (job->opts != NULL && job->opts->strict) {
        tpdbErrf(errmsg, "%s", what);
        return TPDB_INVALID;
    }
    FILE *out =
        job->opts != NULL && job->opts->warn != NULL ? job->opts->warn : stderr;
    fprintf(out, "export: warning: %s; left out\n", what);
    fflush(out);
    (*count)++;
    return TPDB_OK;
}

/* Replaces each column's DEFAULT text by TrashPandaDB's literal for its
 * value, or leaves out a DEFAULT that has none. */
static int convertDefaults(struct exportJob *job,
                           struct srcTable *t,
                           char *errmsg)
{
    char why[TPDB_ERRMSG_SIZE], what[2 * TPDB_ERRMSG_SIZE];
    int rc = TPDB_OK;
    for (unsigned i = 0; i < t->ncols && rc == TPDB_OK; i++) {
        struct srcColumn *c = &t->cols[i];
        char *lit = NULL;
        if (c->dflt == NULL) {
            continue;
        }
        rc = migrateDefaultConvert(job->scratch, c->type, c->dflt, &lit, why);
        if (rc != TPDB_OK) {
            snprintf(what, sizeof what, "table %s, column %s: DEFAULT %s: %s",
                     t->name, c->name, c->dflt, why);
        }
        if (rc == TPDB_INVALID) {
            rc = leaveOut(job, &job->stats.defaults_left_out, what, errmsg);
        } else if (rc != TPDB_OK) {
            tpdbErrf(errmsg, "%s", what);
        }
        if (rc == TPDB_OK) {
            sqlite3_free(c->dflt);
            c->dflt = lit;
        }
    }
    return rc;
}

/* ---- Export: indexes ----------------------------------------------------- */

#define MAX_INDEX_COLS 255
#define MAX_NAME_LEN 255

/* An index of the source as it would go into the TPDB file. */
struct srcIndex {
    const char *name; /* SQLite's name; owned by the index_list statement */
    char *tname;      /* name in the TPDB file (sqlite3_malloc'ed) */
    char *cols[MAX_INDEX_COLS]; /* key columns (sqlite3_malloc'ed) */
    unsigned n;
    int unique;
};

static void srcIndexFree(struct srcIndex *ix)
{
    for (unsigned i = 0; i < ix->n; i++) {
        sqlite3_free(ix->cols[i]);
    }
    sqlite3_free(ix->tname);
}

/* Reads the key columns of a source index. TPDB_INVALID, with `why`, for
 * an index TrashPandaDB cannot hold (expressions, too many columns). */
static int indexColumns(sqlite3 *db, struct srcIndex *ix, char *why)
{
    char *sql = sqlite3_mprintf("PRAGMA index_info(\"%w\")", ix->name);
    sqlite3_stmt *st = NULL;
    int rc = TPDB_OK;
    if (sql == NULL ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(sql);
        return migrateSqliteErr(db, why, "index_info");
    }
    sqlite3_free(sql);
    while (rc == TPDB_OK && sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_int(st, 1) < 0) {
            tpdbErrf(why, "a TPDB index holds columns, not expressions");
            rc = TPDB_INVALID;
        } else if (ix->n == MAX_INDEX_COLS) {
            tpdbErrf(why, "a TPDB index holds at most %d columns",
                     MAX_INDEX_COLS);
            rc = TPDB_INVALID;
        } else if ((ix->cols[ix->n] = columnText(st, 2)) == NULL) {
            tpdbErrf(why, "out of memory");
            rc = TPDB_NOMEM;
        } else {
            ix->n++;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* TrashPandaDB names the index of a UNIQUE constraint _uq_<table>_<col>;
 * a PRIMARY KEY that is not the rowid becomes the unique index
 * _pk_<table>, which tpdbImport turns back into the key. */
static char *tpdbIndexName(const char *table,
                           const char *origin,
                           const struct srcIndex *ix)
{
    if (strcmp(origin, "pk") == 0) {
        return sqlite3_mprintf("_pk_%s", table);
    }
    if (strcmp(origin, "u") != 0) {
        return sqlite3_mprintf("%s", ix->name);
    }
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "_uq_%s", table);
    for (unsigned i = 0; i < ix->n; i++) {
        sqlite3_str_appendf(s, "_%s", ix->cols[i]);
    }
    return sqlite3_str_finish(s);
}

/* Whether the source holds a REAL or BLOB value in column `col`. */
static int holdsRealOrBlob(sqlite3 *db,
                           const char *table,
                           const char *col,
                           const char **type)
{
    char *sql = sqlite3_mprintf(
        "SELECT typeof(\"%w\") FROM \"%w\" WHERE typeof(\"%w\") IN "
        "('real', 'blob') LIMIT 1",
        col, table, col);
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sql != NULL &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        found = 1;
        *type = strcmp((const char *)sqlite3_column_text(st, 0), "real") == 0
                    ? "REAL"
                    : "BLOB";
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return found;
}

/* Fills `why` and returns 0 when TrashPandaDB cannot hold the index: its
 * keys hold only INTEGER and TEXT values (defect B3), and names are at
 * most 255 bytes. */
static int indexHoldable(sqlite3 *db,
                         const struct srcTable *t,
                         const struct srcIndex *ix,
                         char *why)
{
    const char *type = NULL;
    if (strlen(ix->tname) > MAX_NAME_LEN) {
        tpdbErrf(why, "a TPDB index name is at most %d bytes", MAX_NAME_LEN);
        return 0;
    }
    for (unsigned i = 0; i < ix->n; i++) {
        for (unsigned c = 0; c < t->ncols; c++) {
            if (strcmp(t->cols[c].name, ix->cols[i]) == 0 &&
                migrateTypeIsReal(t->cols[c].type)) {
                tpdbErrf(why,
                         "column %s is declared REAL, and a TPDB index "
                         "cannot hold REAL values",
                         ix->cols[i]);
                return 0;
            }
        }
        if (holdsRealOrBlob(db, t->name, ix->cols[i], &type)) {
            tpdbErrf(why,
                     "column %s holds %s values, which a TPDB index cannot "
                     "hold",
                     ix->cols[i], type);
            return 0;
        }
    }
    return 1;
}

/* Leaves out the index, naming it, its table and columns, and why. */
static int leaveOutIndex(struct exportJob *job,
                         const struct srcTable *t,
                         const struct srcIndex *ix,
                         const char *why,
                         char *errmsg)
{
    char what[2 * TPDB_ERRMSG_SIZE];
    sqlite3_str *s = sqlite3_str_new(NULL);
    for (unsigned i = 0; i < ix->n; i++) {
        sqlite3_str_appendf(s, "%s%s", i > 0 ? ", " : "", ix->cols[i]);
    }
    char *cols = sqlite3_str_finish(s);
    /* A constraint's index is named as the TPDB file would name it. */
    snprintf(what, sizeof what, "index %s on %s(%s): %s",
             ix->tname != NULL ? ix->tname : ix->name, t->name,
             cols != NULL ? cols : "...", why);
    sqlite3_free(cols);
    return leaveOut(job, &job->stats.indexes_left_out, what, errmsg);
}

/* Creates the index in the TPDB file, or leaves it out. */
static int writeIndex(struct exportJob *job,
                      const struct srcTable *t,
                      struct srcIndex *ix,
                      char *errmsg)
{
    char why[TPDB_ERRMSG_SIZE];
    if (!indexHoldable(job->db, t, ix, why)) {
        return leaveOutIndex(job, t, ix, why, errmsg);
    }
    int rc = tpdb_file_create_index(job->f, ix->tname, t->name,
                                    (const char *const *)ix->cols, ix->n,
                                    ix->unique);
    if (rc == TPDB_TOOBIG) {
        /* The statement left no trace: the file goes on without it. */
        tpdbErrf(why, "%s", tpdb_file_errmsg(job->f));
        return leaveOutIndex(job, t, ix, why, errmsg);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "index %s: %s", ix->name, tpdb_file_errmsg(job->f));
    }
    job->stats.indexes += rc == TPDB_OK;
    return rc;
}

static int exportIndex(struct exportJob *job,
                       const struct srcTable *t,
                       sqlite3_stmt *list,
                       char *errmsg)
{
    struct srcIndex ix = {.name = (const char *)sqlite3_column_text(list, 1),
                          .unique = sqlite3_column_int(list, 2)};
    const char *origin = (const char *)sqlite3_column_text(list, 3);
    char why[TPDB_ERRMSG_SIZE];
    int rc;
    if (ix.name == NULL || origin == NULL) {
        return TPDB_OK;
    }
    rc = indexColumns(job->db, &ix, why);
    if (rc == TPDB_OK && sqlite3_column_int(list, 4) != 0) {
        tpdbErrf(why, "a TPDB index cannot be partial");
        rc = TPDB_INVALID;
    }
    if (rc == TPDB_OK) {
        ix.tname = tpdbIndexName(t->name, origin, &ix);
        rc = ix.tname == NULL ? TPDB_NOMEM : writeIndex(job, t, &ix, errmsg);
    } else if (rc == TPDB_INVALID) {
        rc = leaveOutIndex(job, t, &ix, why, errmsg);
    } else {
        tpdbErrf(errmsg, "index %s: %s", ix.name, why);
    }
    srcIndexFree(&ix);
    return rc;
}

static int exportIndexes(struct exportJob *job,
                         const struct srcTable *t,
                         char *errmsg)
{
    char *sql = sqlite3_mprintf("PRAGMA index_list(\"%w\")", t->name);
    sqlite3_stmt *st = NULL;
    int rc = TPDB_OK;
    if (sql == NULL ||
        sqlite3_prepare_v2(job->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(sql);
        return migrateSqliteErr(job->db, errmsg, "index_list");
    }
    sqlite3_free(sql);
    while (rc == TPDB_OK && sqlite3_step(st) == SQLITE_ROW) {
        rc = exportIndex(job, t, st, errmsg);
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- Export: driver ------------------------------------------------------ */

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
        rc = rc == TPDB_OK ? convertDefaults(job, t, errmsg) : rc;
        t->rows =
            rc == TPDB_OK ? migrateSqliteCount(job->db, t->name, errmsg) : 0;
        rc = rc == TPDB_OK && t->rows < 0 ? TPDB_IOERR : rc;
        job->p.total += (uint64_t)t->rows;
    }
    sqlite3_finalize(st);
    return rc;
}

/* An AUTOINCREMENT table's counter (sqlite_sequence) goes into next_rowid,
 * which TrashPandaDB never lowers either: rowids SQLite handed out before
 * are not handed out again, even those of deleted rows. */
static int carrySequence(struct exportJob *job,
                         const struct srcTable *t,
                         char *errmsg)
{
    sqlite3_stmt *st = NULL;
    int64_t seq = 0;
    int rc = TPDB_OK;
    if (sqlite3_prepare_v2(job->db,
                           "SELECT seq FROM sqlite_sequence WHERE name = ?", -1,
                           &st, NULL) != SQLITE_OK) {
        /* No AUTOINCREMENT table: SQLite has not made sqlite_sequence. */
        return sqlite3_errcode(job->db) == SQLITE_NOMEM
                   ? migrateSqliteErr(job->db, errmsg, "sqlite_sequence")
                   : TPDB_OK;
    }
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        seq = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (seq > 0 && seq < INT64_MAX) {
        rc = tpdb_file_raise_next_rowid(job->f, t->name, seq + 1);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "table %s: sequence: %s", t->name,
                 tpdb_file_errmsg(job->f));
    }
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
        if (rc == TPDB_OK) {
            rc = carrySequence(job, t, errmsg);
        }
        if (rc == TPDB_OK && copied != (uint64_t)t->rows) {
            tpdbErrf(errmsg, "table %s: read %llu rows, expected %lld", t->name,
                     (unsigned long long)copied, (long long)t->rows);
            rc = TPDB_CORRUPT;
        }
        job->stats.rows += copied;
    }
    for (unsigned i = 0; i < job->ntables && rc == TPDB_OK; i++) {
        rc = exportIndexes(job, &job->tables[i], errmsg);
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
        rc = migrateDefaultScratch(&job->scratch, errmsg);
    }
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
    job.opts = opts;
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
    sqlite3_close(job.scratch);
    sqlite3_close(job.db);
    tpdb_free(tmpwal);
    tpdb_free(tmp);
    tpdb_free(destwal);
    if (rc == TPDB_OK && stats != NULL) {
        *stats = job.stats;
    }
    return rc;
}
