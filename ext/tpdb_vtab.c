/*
 * tpdb_table: a SQLite virtual table over one table of a TrashPandaDB page
 * file, and tpdb_attach() to expose every table of a file (tpdb_vtab.h).
 * This file registers the module and holds xConnect, xBestIndex and
 * tpdb_attach; the rest is split by concern (tpdb_vtab_int.h): shared file
 * handles and when they are open in tpdb_vtab_file.c, scans in
 * tpdb_vtab_cursor.c, writes and transactions in tpdb_vtab_write.c.
 * Loading: the tpdb extension calls tpdbVtabRegister() on every connection;
 * a program linking vfs/ can call it itself. Built into the extension
 * (TPDB_VTAB_REPLICATE), a file in the data directory of a node running in
 * this process is replicated through that node.
 */
#include "ext/tpdb_vtab.h"

#include <string.h>

#include "base/base.h"
#include "ext/tpdb_vtab_int.h"
#include "vfs/tpdbfile/tpdbfile.h"

/* ---- The virtual table --------------------------------------------------- */

const struct tpdb_table *vtabTable(struct vtab *vt)
{
    const struct tpdb_table *t = tpdb_file_table_find(vt->sf->f, vt->table);
    if (t == NULL || t->ncols != vt->ncols) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg =
            sqlite3_mprintf("tpdb_table: table %s of %s is gone or was altered",
                            vt->table, vt->sf->key);
        return NULL;
    }
    return t;
}

int vtabError(struct vtab *vt, int rc, const char *what)
{
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg =
        sqlite3_mprintf("%s: %s", what, tpdb_file_errmsg(vt->sf->f));
    return vtabSqliteRc(rc);
}

/* Strips SQL quotes from a module argument, into a new sqlite3 string. */
static char *unquoteArg(const char *a)
{
    size_t n = strlen(a);
    char q = a[0];
    if (n < 2 || (q != '\'' && q != '"') || a[n - 1] != q) {
        return sqlite3_mprintf("%s", a);
    }
    char *out = sqlite3_malloc64(n);
    if (out == NULL) {
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        out[j++] = a[i];
        if (a[i] == q && a[i + 1] == q) {
            i++;
        }
    }
    out[j] = '\0';
    return out;
}

/* A declared type is passed to sqlite3_declare_vtab only if it is made of
 * harmless characters; otherwise the column is declared without a type. */
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

static int declareSchema(sqlite3 *db, const struct tpdb_table *t)
{
    sqlite3_str *s = sqlite3_str_new(db);
    sqlite3_str_appendall(s, "CREATE TABLE x(");
    for (unsigned i = 0; i < t->ncols; i++) {
        const struct tpdb_column *c = &t->cols[i];
        sqlite3_str_appendf(s, "%s\"%w\"", i > 0 ? ", " : "", c->name);
        if (c->type != NULL && c->type[0] != '\0' && typeIsSafe(c->type)) {
            sqlite3_str_appendf(s, " %s", c->type);
        }
    }
    sqlite3_str_appendall(s, ")");
    char *sql = sqlite3_str_finish(s);
    if (sql == NULL) {
        return SQLITE_NOMEM;
    }
    int rc = sqlite3_declare_vtab(db, sql);
    sqlite3_free(sql);
    return rc;
}

/* Parsed module arguments, each an sqlite3 string. */
struct vtabArgs {
    char *path;
    char *table;
    char *mode;
};

static void vtabArgsFree(struct vtabArgs *a)
{
    sqlite3_free(a->path);
    sqlite3_free(a->table);
    sqlite3_free(a->mode);
}

static int vtabArgsParse(int argc,
                         const char *const *argv,
                         struct vtabArgs *a,
                         int *mode,
                         char **pzErr)
{
    memset(a, 0, sizeof *a);
    if (argc < 5 || argc > 6) {
        *pzErr = sqlite3_mprintf(
            "tpdb_table: usage: tpdb_table('file.tpdb', 'table' "
            "[, 'rw'|'ro'])");
        return SQLITE_ERROR;
    }
    a->path = unquoteArg(argv[3]);
    a->table = unquoteArg(argv[4]);
    a->mode = argc > 5 ? unquoteArg(argv[5]) : NULL;
    if (a->path == NULL || a->table == NULL || (argc > 5 && a->mode == NULL)) {
        vtabArgsFree(a);
        return SQLITE_NOMEM;
    }
    if (vtabParseMode(a->mode, mode) != 0) {
        *pzErr = sqlite3_mprintf(
            "tpdb_table: mode must be 'rw' or 'ro', "
            "not '%s'",
            a->mode);
        vtabArgsFree(a);
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

static int vtabConnect(sqlite3 *db,
                       void *arg,
                       int argc,
                       const char *const *argv,
                       sqlite3_vtab **out,
                       char **pzErr)
{
    struct registry *reg = arg;
    struct vtabArgs a;
    struct vtab *vt = NULL;
    int mode;
    int rc = vtabArgsParse(argc, argv, &a, &mode, pzErr);
    if (rc != SQLITE_OK) {
        return rc;
    }
    vt = sqlite3_malloc(sizeof *vt);
    if (vt == NULL) {
        rc = SQLITE_NOMEM;
        goto err_after_args;
    }
    memset(vt, 0, sizeof *vt);
    vt->reg = reg;
    rc = vtabFileAcquire(reg, a.path, mode, &vt->sf, pzErr);
    if (rc != SQLITE_OK) {
        goto err_after_vt;
    }
    const struct tpdb_table *t = tpdb_file_table_find(vt->sf->f, a.table);
    if (t == NULL) {
        *pzErr =
            sqlite3_mprintf("tpdb_table: no table '%s' in %s", a.table, a.path);
        rc = SQLITE_ERROR;
        goto err_after_acquire;
    }
    vt->ncols = t->ncols;
    /* Constraint errors are SQLITE_CONSTRAINT, so INSERT OR IGNORE skips
     * the row and OR FAIL/ROLLBACK behave; OR REPLACE acts as ABORT. */
    sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
    rc = declareSchema(db, t);
    if (rc != SQLITE_OK) {
        goto err_after_acquire;
    }
    vtabFileUnhold(vt->sf);
    vt->table = a.table;
    a.table = NULL;
    vtabArgsFree(&a);
    *out = &vt->base;
    return SQLITE_OK;

err_after_acquire:
    vtabFileUnhold(vt->sf);
    vtabFileRelease(reg, vt->sf);
err_after_vt:
    sqlite3_free(vt);
err_after_args:
    vtabArgsFree(&a);
    return rc;
}

static int vtabDisconnect(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    vtabFileRelease(vt->reg, vt->sf);
    sqlite3_free(vt->table);
    sqlite3_free(vt);
    return SQLITE_OK;
}

/* ---- Query planning ------------------------------------------------------ */

#define FULL_SCAN_ROWS 100000.0

static int isRowidColumn(const struct tpdb_table *t, int col)
{
    return col == -1 || (t->auto_pk && col == t->pk_idx);
}

static int columnNumber(const struct tpdb_table *t, const char *name)
{
    for (unsigned i = 0; i < t->ncols; i++) {
        if (strcmp(t->cols[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* The usable binary-collated EQ constraint on column `col`, or -1 (also
 * for col < 0: an index naming a column the table lacks). */
static int eqConstraint(sqlite3_index_info *info, int col)
{
    for (int i = 0; i < info->nConstraint && col >= 0; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->usable && c->iColumn == col &&
            c->op == SQLITE_INDEX_CONSTRAINT_EQ &&
            sqlite3_stricmp(sqlite3_vtab_collation(info, i), "BINARY") == 0) {
            return i;
        }
    }
    return -1;
}

/* The index of table t with the most leading columns constrained by
 * equality; *k gets that count (0: none). */
static const struct tpdb_index *bestIndex(struct tpdb_file *f,
                                          const struct tpdb_table *t,
                                          sqlite3_index_info *info,
                                          int *k)
{
    const struct tpdb_index *best = NULL;
    *k = 0;
    for (unsigned i = 0; i < tpdb_file_index_count(f); i++) {
        const struct tpdb_index *ix = tpdb_file_index(f, i);
        if (strcmp(ix->table, t->name) != 0) {
            continue;
        }
        int n = 0;
        while (n < (int)ix->ncols && n < VTAB_MAX_INDEX_EQ &&
               eqConstraint(info, columnNumber(t, ix->cols[n])) >= 0) {
            n++;
        }
        if (n > *k || (n == *k && n > 0 && ix->unique && !best->unique)) {
            best = ix;
            *k = n;
        }
    }
    return best;
}

static int useIndexPlan(const struct tpdb_table *t,
                        const struct tpdb_index *ix,
                        int k,
                        sqlite3_index_info *info)
{
    info->idxStr = sqlite3_mprintf("%s", ix->name);
    if (info->idxStr == NULL) {
        return SQLITE_NOMEM;
    }
    info->needToFreeIdxStr = 1;
    for (int n = 0; n < k; n++) {
        int c = eqConstraint(info, columnNumber(t, ix->cols[n]));
        info->aConstraintUsage[c].argvIndex = n + 1;
    }
    int exact = ix->unique && k == (int)ix->ncols;
    info->idxNum = VTAB_PLAN_INDEX_EQ | (k << 4);
    info->estimatedCost = exact ? 2.0 : 20.0 / k;
    info->estimatedRows = exact ? 1 : 10;
    return SQLITE_OK;
}

/* Rowid constraints: sets *eq, *lo, *hi to constraint numbers or -1. */
static void rowidConstraints(const struct tpdb_table *t,
                             sqlite3_index_info *info,
                             int *eq,
                             int *lo,
                             int *hi)
{
    *eq = *lo = *hi = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (!c->usable || !isRowidColumn(t, c->iColumn)) {
            continue;
        }
        switch (c->op) {
            case SQLITE_INDEX_CONSTRAINT_EQ:
                *eq = i;
                break;
            case SQLITE_INDEX_CONSTRAINT_GT:
            case SQLITE_INDEX_CONSTRAINT_GE:
                *lo = i;
                break;
            case SQLITE_INDEX_CONSTRAINT_LT:
            case SQLITE_INDEX_CONSTRAINT_LE:
                *hi = i;
                break;
            default:
                break;
        }
    }
}

/* Constraints are never omitted: SQLite re-checks every row, so a plan only
 * has to return a superset of the matching rows. */
static int planChoose(struct vtab *vt, sqlite3_index_info *info)
{
    const struct tpdb_table *t = vtabTable(vt);
    int eq, lo, hi, k;
    if (t == NULL) {
        return SQLITE_ERROR;
    }
    rowidConstraints(t, info, &eq, &lo, &hi);
    if (eq >= 0) {
        info->aConstraintUsage[eq].argvIndex = 1;
        info->idxNum = VTAB_PLAN_ROWID_EQ;
        info->idxStr = "rowid";
        info->estimatedCost = 1.0;
        info->estimatedRows = 1;
        return SQLITE_OK;
    }
    const struct tpdb_index *ix = bestIndex(vt->sf->f, t, info, &k);
    if (k > 0) {
        return useIndexPlan(t, ix, k, info);
    }
    if (lo >= 0 || hi >= 0) {
        int flags = 0, argv = 1;
        if (lo >= 0) {
            info->aConstraintUsage[lo].argvIndex = argv++;
            flags |= VTAB_RANGE_LO;
        }
        if (hi >= 0) {
            info->aConstraintUsage[hi].argvIndex = argv;
            flags |= VTAB_RANGE_HI;
        }
        info->idxNum = VTAB_PLAN_ROWID_RANGE | (flags << 4);
        info->idxStr = "rowid";
        info->estimatedCost =
            flags == (VTAB_RANGE_LO | VTAB_RANGE_HI) ? 100.0 : 5000.0;
        info->estimatedRows =
            flags == (VTAB_RANGE_LO | VTAB_RANGE_HI) ? 100 : 5000;
        return SQLITE_OK;
    }
    info->idxNum = VTAB_PLAN_FULL;
    info->estimatedCost = FULL_SCAN_ROWS;
    info->estimatedRows = (sqlite3_int64)FULL_SCAN_ROWS;
    return SQLITE_OK;
}

/* Planning reads the catalog: a transient file is opened for the call. */
static int vtabBestIndex(sqlite3_vtab *base, sqlite3_index_info *info)
{
    struct vtab *vt = (struct vtab *)base;
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = NULL;
    int rc = vtabFileHold(vt->sf, &vt->base.zErrMsg);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = planChoose(vt, info);
    vtabFileUnhold(vt->sf);
    return rc;
}

static sqlite3_module tpdbModule = {
    .iVersion = 2,
    .xCreate = vtabConnect,
    .xConnect = vtabConnect,
    .xBestIndex = vtabBestIndex,
    .xDisconnect = vtabDisconnect,
    .xDestroy = vtabDisconnect,
    .xOpen = vtabOpen,
    .xClose = vtabClose,
    .xFilter = vtabFilter,
    .xNext = vtabNext,
    .xEof = vtabEof,
    .xColumn = vtabColumn,
    .xRowid = vtabRowid,
    .xUpdate = vtabUpdate,
    .xBegin = vtabBegin,
    .xSync = vtabSync,
    .xCommit = vtabCommit,
    .xRollback = vtabRollback,
    .xSavepoint = vtabSavepoint,
    .xRelease = vtabRelease,
    .xRollbackTo = vtabRollbackTo,
};

/* ---- tpdb_attach() --------------------------------------------------------
 */

static int tempTableExists(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM temp.sqlite_schema WHERE name = ?1 "
                           "COLLATE NOCASE",
                           -1, &st, NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* Creates the TEMP virtual table prefix||table; 1 if created, 0 if a table
 * of that name exists, -1 on error with *err set. */
static int attachOne(sqlite3 *db,
                     const char *path,
                     const char *prefix,
                     const char *table,
                     const char *mode,
                     char **err)
{
    char *name = sqlite3_mprintf("%s%s", prefix, table);
    char *sql = NULL;
    int rc = -1;
    if (name == NULL) {
        *err = sqlite3_mprintf("out of memory");
        return -1;
    }
    if (tempTableExists(db, name)) {
        sqlite3_free(name);
        return 0;
    }
    if (mode != NULL) {
        sql = sqlite3_mprintf(
            "CREATE VIRTUAL TABLE temp.\"%w\" USING tpdb_table(%Q, %Q, %Q)",
            name, path, table, mode);
    } else {
        sql = sqlite3_mprintf(
            "CREATE VIRTUAL TABLE temp.\"%w\" USING tpdb_table(%Q, %Q)", name,
            path, table);
    }
    if (sql == NULL) {
        *err = sqlite3_mprintf("out of memory");
    } else if (sqlite3_exec(db, sql, NULL, NULL, err) == SQLITE_OK) {
        rc = 1;
    }
    sqlite3_free(sql);
    sqlite3_free(name);
    return rc;
}

/* Copies the table names, since creating virtual tables may reload the
 * catalog; returns an sqlite3_malloc'ed array of sqlite3 strings. */
static char **tableNames(struct tpdb_file *f, unsigned *n)
{
    *n = tpdb_file_table_count(f);
    char **names = sqlite3_malloc64((*n + 1) * sizeof *names);
    if (names == NULL) {
        return NULL;
    }
    for (unsigned i = 0; i < *n; i++) {
        names[i] = sqlite3_mprintf("%s", tpdb_file_table(f, i)->name);
        if (names[i] == NULL) {
            for (unsigned j = 0; j < i; j++) {
                sqlite3_free(names[j]);
            }
            sqlite3_free(names);
            return NULL;
        }
    }
    return names;
}

static void attachFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct registry *reg = sqlite3_user_data(ctx);
    const char *path = (const char *)sqlite3_value_text(argv[0]);
    const char *prefix =
        argc > 1 ? (const char *)sqlite3_value_text(argv[1]) : "";
    const char *mtext =
        argc > 2 ? (const char *)sqlite3_value_text(argv[2]) : NULL;
    struct sharedFile *sf;
    char *err = NULL;
    unsigned n;
    int mode, created = 0;
    if (path == NULL || vtabParseMode(mtext, &mode) != 0) {
        sqlite3_result_error(ctx, "tpdb_attach(PATH [, PREFIX [, 'rw'|'ro']])",
                             -1);
        return;
    }
    if (vtabFileAcquire(reg, path, mode, &sf, &err) != SQLITE_OK) {
        sqlite3_result_error(ctx, err != NULL ? err : "out of memory", -1);
        sqlite3_free(err);
        return;
    }
    char **names = tableNames(sf->f, &n);
    for (unsigned i = 0; names != NULL && i < n && err == NULL; i++) {
        int r = attachOne(reg->db, path, prefix == NULL ? "" : prefix, names[i],
                          mtext, &err);
        created += r > 0;
    }
    if (names == NULL) {
        sqlite3_result_error_nomem(ctx);
    } else if (err != NULL) {
        sqlite3_result_error(ctx, err, -1);
    } else {
        sqlite3_result_int(ctx, created);
    }
    for (unsigned i = 0; names != NULL && i < n; i++) {
        sqlite3_free(names[i]);
    }
    sqlite3_free(names);
    sqlite3_free(err);
    vtabFileUnhold(sf);
    vtabFileRelease(reg, sf);
}

int tpdbVtabRegister(sqlite3 *db)
{
    struct registry *reg = tpdb_calloc(1, sizeof *reg);
    if (reg == NULL) {
        return SQLITE_NOMEM;
    }
    reg->db = db;
    int rc = sqlite3_create_module_v2(db, "tpdb_table", &tpdbModule, reg,
                                      vtabRegistryDestroy);
    if (rc != SQLITE_OK) {
        return rc; /* sqlite3_create_module_v2 calls the destructor */
    }
    for (int nargs = 1; nargs <= 3 && rc == SQLITE_OK; nargs++) {
        rc = sqlite3_create_function_v2(db, "tpdb_attach", nargs, SQLITE_UTF8,
                                        reg, attachFunc, NULL, NULL, NULL);
    }
    return rc;
}
