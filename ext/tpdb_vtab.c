/*
 * tpdb_table: a SQLite virtual table over one table of a TrashPandaDB page
 * file, and tpdb_attach() to expose every table of a file (tpdb_vtab.h).
 *
 * Every virtual table of a connection on the same file shares one handle
 * (the library locks a read-write file exclusively). Cursors survive writes
 * made through the handle while they are open: each write bumps a
 * generation counter and a cursor whose generation is stale reopens its
 * B+ tree cursor and seeks back to its last rowid. Index lookups collect
 * their rowids up front. Key order in the file is unsigned (defect B2), so
 * a signed rowid range becomes up to two unsigned key intervals.
 * Loading: the tpdb extension calls tpdbVtabRegister() on every connection;
 * a program linking vfs/ can call it itself. Built into the extension
 * (TPDB_VTAB_REPLICATE), a file in the data directory of a node running in
 * this process is replicated through that node (see "Replication" below).
 */
#include "ext/tpdb_vtab.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vfs/base.h"
#include "vfs/tpdbfile.h"
#include "vfs/vfs.h"

#ifdef TPDB_VTAB_REPLICATE
#include "raftfsm/entry.h"
#include "raftfsm/node.h"
#endif

/* ---- Shared file handles ------------------------------------------------ */

struct sharedFile {
    struct sharedFile *next;
    char *key; /* realpath of the file */
    int rdonly;
    struct tpdb_file *f;
    unsigned refs;
    unsigned gen;     /* bumped by every write call: cursors must reseek */
    int txn;          /* a TPDB transaction is open */
    int broken;       /* the transaction was dropped by a failed statement */
    uint64_t changes; /* successful writes in the transaction */
    uint64_t *sp;     /* `changes` when each open savepoint began */
    int nsp;
    int spcap;
    void *repl; /* replication state (vtabRepl), NULL when not replicated */
};

/* Module client data: one per connection. */
struct registry {
    sqlite3 *db;
    struct sharedFile *files;
};

enum { MODE_AUTO = 0, MODE_RW, MODE_RO };

static int dirWritable(const char *real)
{
    const char *slash = strrchr(real, '/');
    char dir[PATH_MAX];
    size_t n = slash == NULL ? 0 : (size_t)(slash - real);
    if (n == 0) {
        return access(slash == NULL ? "." : "/", W_OK) == 0;
    }
    memcpy(dir, real, n);
    dir[n] = '\0';
    return access(dir, W_OK) == 0;
}

static int parseMode(const char *s, int *mode)
{
    if (s == NULL || s[0] == '\0') {
        *mode = MODE_AUTO;
    } else if (strcmp(s, "rw") == 0) {
        *mode = MODE_RW;
    } else if (strcmp(s, "ro") == 0) {
        *mode = MODE_RO;
    } else {
        return -1;
    }
    return 0;
}

static void sharedFree(struct sharedFile *sf)
{
    tpdb_file_close(sf->f);
    tpdb_free(sf->repl);
    tpdb_free(sf->sp);
    tpdb_free(sf->key);
    tpdb_free(sf);
}

#ifdef TPDB_VTAB_REPLICATE
/* ---- Replication ---------------------------------------------------------
 * A read-write file in the data directory of a node running in this process
 * is replicated: its commits go through the node as TPDB_ENTRY_TPDBFILE
 * entries before they are written, and writes are refused on a follower
 * with the leader's address. Followers' FSMs write the entries to their own
 * copies (tpdb_file_apply) while no handle holds them. */
struct vtabRepl {
    struct tpdb_node *node;
    char name[TPDB_DBNAME_MAX + 1]; /* file name in the data directory */
    int acked; /* the node acknowledged a commit not yet written */
};

static int replWriteCheck(void *arg, char *errmsg)
{
    struct vtabRepl *r = arg;
    return tpdbNodeWriteCheck(r->node, r->name, errmsg);
}

static int replCommit(void *arg, const struct tpdb_txn *txn, char *errmsg)
{
    struct vtabRepl *r = arg;
    int rc =
        tpdbNodePropose(r->node, TPDB_ENTRY_TPDBFILE, r->name, txn, errmsg);
    r->acked = rc == TPDB_OK;
    return rc;
}

static void replDone(void *arg, int written)
{
    struct vtabRepl *r = arg;
    if (r->acked) {
        r->acked = 0;
        tpdbNodeOwnWriteDone(r->node, r->name, written);
    }
}

/* Installs the hooks when `real` lies in a running node's data directory. */
static int replInstall(struct sharedFile *sf, char **pzErr)
{
    struct tpdb_node *node = tpdbNodeFind(sf->key);
    const char *slash = strrchr(sf->key, '/');
    const char *name = slash == NULL ? sf->key : slash + 1;
    if (node == NULL || sf->rdonly) {
        return SQLITE_OK;
    }
    if (name[0] == '\0' || name[0] == '.' || strlen(name) > TPDB_DBNAME_MAX) {
        *pzErr = sqlite3_mprintf(
            "tpdb_table: %s: file name cannot be replicated", sf->key);
        return SQLITE_ERROR;
    }
    struct vtabRepl *r = tpdb_calloc(1, sizeof *r);
    if (r == NULL) {
        return SQLITE_NOMEM;
    }
    r->node = node;
    snprintf(r->name, sizeof r->name, "%s", name);
    struct tpdb_file_hooks hooks = {
        .version = 1,
        .arg = r,
        .write_check = replWriteCheck,
        .commit = replCommit,
        .done = replDone,
    };
    if (tpdb_file_set_hooks(sf->f, &hooks) != TPDB_OK) {
        *pzErr = sqlite3_mprintf("%s", tpdb_file_errmsg(sf->f));
        tpdb_free(r);
        return SQLITE_ERROR;
    }
    sf->repl = r;
    return SQLITE_OK;
}
#endif

/* Finds or opens the shared handle of `path`. On SQLITE_OK *out holds a new
 * reference; otherwise *pzErr gets an sqlite3_malloc'ed message. */
static int sharedAcquire(struct registry *reg,
                         const char *path,
                         int mode,
                         struct sharedFile **out,
                         char **pzErr)
{
    char real[PATH_MAX];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct sharedFile *sf;
    if (realpath(path, real) == NULL) {
        *pzErr = sqlite3_mprintf("tpdb_table: %s: %s", path, strerror(errno));
        return SQLITE_CANTOPEN;
    }
    for (sf = reg->files; sf != NULL; sf = sf->next) {
        if (strcmp(sf->key, real) != 0) {
            continue;
        }
        if (mode == MODE_RW && sf->rdonly) {
            *pzErr = sqlite3_mprintf(
                "tpdb_table: %s is already open read-only on this "
                "connection",
                path);
            return SQLITE_ERROR;
        }
        sf->refs++;
        *out = sf;
        return SQLITE_OK;
    }
    int rdonly =
        mode == MODE_RO ||
        (mode == MODE_AUTO && (access(real, W_OK) != 0 || !dirWritable(real)));
    sf = tpdb_calloc(1, sizeof *sf);
    if (sf == NULL || (sf->key = tpdb_strdup(real)) == NULL) {
        tpdb_free(sf);
        return SQLITE_NOMEM;
    }
    int rc =
        tpdb_file_open(real, rdonly ? TPDB_FILE_RDONLY : 0, &sf->f, errmsg);
    if (rc != TPDB_OK) {
        *pzErr = sqlite3_mprintf("%s", errmsg);
        tpdb_free(sf->key);
        tpdb_free(sf);
        return rc == TPDB_NOMEM ? SQLITE_NOMEM : SQLITE_CANTOPEN;
    }
    sf->rdonly = rdonly;
#ifdef TPDB_VTAB_REPLICATE
    rc = replInstall(sf, pzErr);
    if (rc != SQLITE_OK) {
        sharedFree(sf);
        return rc;
    }
#endif
    sf->refs = 1;
    sf->next = reg->files;
    reg->files = sf;
    *out = sf;
    return SQLITE_OK;
}

static void sharedRelease(struct registry *reg, struct sharedFile *sf)
{
    if (--sf->refs > 0) {
        return;
    }
    for (struct sharedFile **pp = &reg->files; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sf) {
            *pp = sf->next;
            break;
        }
    }
    sharedFree(sf);
}

static void registryDestroy(void *arg)
{
    struct registry *reg = arg;
    while (reg->files != NULL) {
        struct sharedFile *sf = reg->files;
        reg->files = sf->next;
        sharedFree(sf);
    }
    tpdb_free(reg);
}

/* ---- Value conversion ---------------------------------------------------- */

static int sqliteRc(int rc)
{
    switch (rc) {
        case TPDB_OK:
            return SQLITE_OK;
        case TPDB_NOMEM:
            return SQLITE_NOMEM;
        case TPDB_IOERR:
            return SQLITE_IOERR;
        case TPDB_FULL:
            return SQLITE_FULL;
        case TPDB_CORRUPT:
            return SQLITE_CORRUPT;
        case TPDB_BUSY:
            return SQLITE_BUSY;
        case TPDB_READONLY:
            return SQLITE_READONLY;
        case TPDB_TOOBIG:
            return SQLITE_TOOBIG;
        case TPDB_INVALID:
            return SQLITE_CONSTRAINT;
        case TPDB_NOTLEADER:
            return TPDB_SQLITE_NOTLEADER;
        case TPDB_UNKNOWN:
            return TPDB_SQLITE_UNKNOWN;
        default:
            return SQLITE_ERROR;
    }
}

static void resultValue(sqlite3_context *ctx, const struct tpdb_value *v)
{
    switch (v->type) {
        case TPDB_VINT:
        case TPDB_VBOOL:
            sqlite3_result_int64(ctx, v->i);
            break;
        case TPDB_VREAL:
            sqlite3_result_double(ctx, v->r);
            break;
        case TPDB_VTEXT:
            sqlite3_result_text64(ctx, (const char *)v->base, v->len,
                                  SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        case TPDB_VBLOB:
            sqlite3_result_blob64(ctx, v->len == 0 ? "" : (const void *)v->base,
                                  v->len, SQLITE_TRANSIENT);
            break;
        default:
            sqlite3_result_null(ctx);
            break;
    }
}

/* Parses a whole string as a decimal int64; 0 on success. */
static int parseInt64(const char *s, size_t len, int64_t *out)
{
    char buf[32];
    char *end;
    if (len == 0 || len >= sizeof buf) {
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!((buf[0] >= '0' && buf[0] <= '9') || buf[0] == '-' || buf[0] == '+')) {
        return -1;
    }
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

/* The integral value of a REAL when it is exactly an int64; 0 on success. */
static int realToInt64(double d, int64_t *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
        return -1;
    }
    int64_t i = (int64_t)d;
    if ((double)i != d) {
        return -1;
    }
    *out = i;
    return 0;
}

/* Converts an SQLite value; `int_affinity` applies INTEGER affinity as SQLite
 * would for a column whose declared type contains "INT". Bytes point into
 * the SQLite value. */
static void valueFromSqlite(sqlite3_value *v,
                            int int_affinity,
                            struct tpdb_value *out)
{
    memset(out, 0, sizeof *out);
    switch (sqlite3_value_type(v)) {
        case SQLITE_INTEGER:
            out->type = TPDB_VINT;
            out->i = sqlite3_value_int64(v);
            break;
        case SQLITE_FLOAT:
            out->type = TPDB_VREAL;
            out->r = sqlite3_value_double(v);
            if (int_affinity && realToInt64(out->r, &out->i) == 0) {
                out->type = TPDB_VINT;
            }
            break;
        case SQLITE_TEXT:
            out->type = TPDB_VTEXT;
            out->base = sqlite3_value_text(v);
            out->len = (size_t)sqlite3_value_bytes(v);
            if (int_affinity &&
                parseInt64((const char *)out->base, out->len, &out->i) == 0) {
                out->type = TPDB_VINT;
            }
            break;
        case SQLITE_BLOB:
            out->type = TPDB_VBLOB;
            out->base = sqlite3_value_blob(v);
            out->len = (size_t)sqlite3_value_bytes(v);
            if (out->base == NULL) {
                out->base = (const uint8_t *)"";
            }
            break;
        default:
            out->type = TPDB_VNULL;
            break;
    }
}

/* ---- The virtual table --------------------------------------------------- */

struct vtab {
    sqlite3_vtab base;
    struct registry *reg;
    struct sharedFile *sf;
    char *table;
    unsigned ncols;
    int in_txn;
};

static const struct tpdb_table *vtabTable(struct vtab *vt)
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

static int vtabError(struct vtab *vt, int rc, const char *what)
{
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg =
        sqlite3_mprintf("%s: %s", what, tpdb_file_errmsg(vt->sf->f));
    return sqliteRc(rc);
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
    if (parseMode(a->mode, mode) != 0) {
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
    rc = sharedAcquire(reg, a.path, mode, &vt->sf, pzErr);
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
    vt->table = a.table;
    a.table = NULL;
    vtabArgsFree(&a);
    *out = &vt->base;
    return SQLITE_OK;

err_after_acquire:
    sharedRelease(reg, vt->sf);
err_after_vt:
    sqlite3_free(vt);
err_after_args:
    vtabArgsFree(&a);
    return rc;
}

static int vtabDisconnect(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    sharedRelease(vt->reg, vt->sf);
    sqlite3_free(vt->table);
    sqlite3_free(vt);
    return SQLITE_OK;
}

/* ---- Query planning ------------------------------------------------------ */

/* Plans, in idxNum's low 4 bits; the high bits carry flags (rowid range:
 * 1 = lower bound, 2 = upper bound, in argv order) or the number of index
 * columns with equality constraints. idxStr names "rowid" or the index. */
enum {
    PLAN_FULL = 0,
    PLAN_ROWID_EQ = 1,
    PLAN_ROWID_RANGE = 2,
    PLAN_INDEX_EQ = 3
};
enum { RANGE_LO = 1, RANGE_HI = 2 };
#define MAX_INDEX_EQ 4
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
        while (n < (int)ix->ncols && n < MAX_INDEX_EQ &&
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
    info->idxNum = PLAN_INDEX_EQ | (k << 4);
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
static int vtabBestIndex(sqlite3_vtab *base, sqlite3_index_info *info)
{
    struct vtab *vt = (struct vtab *)base;
    const struct tpdb_table *t = vtabTable(vt);
    int eq, lo, hi, k;
    if (t == NULL) {
        return SQLITE_ERROR;
    }
    rowidConstraints(t, info, &eq, &lo, &hi);
    if (eq >= 0) {
        info->aConstraintUsage[eq].argvIndex = 1;
        info->idxNum = PLAN_ROWID_EQ;
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
            flags |= RANGE_LO;
        }
        if (hi >= 0) {
            info->aConstraintUsage[hi].argvIndex = argv;
            flags |= RANGE_HI;
        }
        info->idxNum = PLAN_ROWID_RANGE | (flags << 4);
        info->idxStr = "rowid";
        info->estimatedCost = flags == (RANGE_LO | RANGE_HI) ? 100.0 : 5000.0;
        info->estimatedRows = flags == (RANGE_LO | RANGE_HI) ? 100 : 5000;
        return SQLITE_OK;
    }
    info->idxNum = PLAN_FULL;
    info->estimatedCost = FULL_SCAN_ROWS;
    info->estimatedRows = (sqlite3_int64)FULL_SCAN_ROWS;
    return SQLITE_OK;
}

/* ---- Cursors --------------------------------------------------------------
 * A cursor either walks key intervals of the table tree (unsigned key
 * order, [lo, hi] inclusive) or fetches a list of rowids one by one. */

struct cursor {
    sqlite3_vtab_cursor base;
    struct tpdb_cursor *tc;
    unsigned gen;
    uint64_t lo[2];
    uint64_t hi[2];
    int nint;
    int cur;
    int64_t *rowids;
    size_t nrowids;
    size_t pos;
    int use_list;
    int eof;
    int64_t rowid;
    const struct tpdb_value *vals;
    unsigned nvals;
};

static int vtabOpen(sqlite3_vtab *base, sqlite3_vtab_cursor **out)
{
    struct cursor *cur = sqlite3_malloc(sizeof *cur);
    if (cur == NULL) {
        return SQLITE_NOMEM;
    }
    memset(cur, 0, sizeof *cur);
    cur->eof = 1;
    *out = &cur->base;
    (void)base;
    return SQLITE_OK;
}

static int vtabClose(sqlite3_vtab_cursor *base)
{
    struct cursor *cur = (struct cursor *)base;
    tpdb_cursor_close(cur->tc);
    sqlite3_free(cur->rowids);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* (Re)opens the table cursor when missing or invalidated by a write.
 * *reopened is set when it was. */
static int cursorFresh(struct cursor *cur, int *reopened)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    *reopened = 0;
    if (cur->tc != NULL && cur->gen == vt->sf->gen) {
        return SQLITE_OK;
    }
    tpdb_cursor_close(cur->tc);
    cur->tc = NULL;
    int rc = tpdb_cursor_open_table(vt->sf->f, vt->table, &cur->tc);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: open cursor");
    }
    cur->gen = vt->sf->gen;
    *reopened = 1;
    return SQLITE_OK;
}

static int cursorLoadRow(struct cursor *cur)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    unsigned stored;
    int rc = tpdb_cursor_rowid(cur->tc, &cur->rowid);
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_row(cur->tc, &cur->vals, &cur->nvals, &stored);
    }
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: read row");
    }
    return SQLITE_OK;
}

/* Interval walk: from the table cursor's position, settles on the next row
 * inside an interval, seeking to later intervals as needed, or at EOF. */
static int cursorSettleIntervals(struct cursor *cur)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    int64_t rowid;
    int rc;
    while (cur->cur < cur->nint) {
        if (!tpdb_cursor_eof(cur->tc)) {
            rc = tpdb_cursor_rowid(cur->tc, &rowid);
            if (rc != TPDB_OK) {
                return vtabError(vt, rc, "tpdb_table: scan");
            }
            if ((uint64_t)rowid >= cur->lo[cur->cur] &&
                (uint64_t)rowid <= cur->hi[cur->cur]) {
                return cursorLoadRow(cur);
            }
        }
        if (++cur->cur == cur->nint) {
            break;
        }
        rc = tpdb_cursor_seek_rowid(cur->tc, TPDB_SEEK_GE,
                                    (int64_t)cur->lo[cur->cur]);
        if (rc != TPDB_OK) {
            return vtabError(vt, rc, "tpdb_table: seek");
        }
    }
    cur->eof = 1;
    return SQLITE_OK;
}

/* List walk: fetches rowids[pos], skipping rowids that no longer exist. */
static int cursorSettleList(struct cursor *cur)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    int reopened;
    int rc = cursorFresh(cur, &reopened);
    if (rc != SQLITE_OK) {
        return rc;
    }
    for (; cur->pos < cur->nrowids; cur->pos++) {
        int trc = tpdb_cursor_seek_rowid(cur->tc, TPDB_SEEK_EQ,
                                         cur->rowids[cur->pos]);
        if (trc != TPDB_OK) {
            return vtabError(vt, trc, "tpdb_table: seek");
        }
        if (!tpdb_cursor_eof(cur->tc)) {
            return cursorLoadRow(cur);
        }
    }
    cur->eof = 1;
    return SQLITE_OK;
}

static int vtabNext(sqlite3_vtab_cursor *base)
{
    struct cursor *cur = (struct cursor *)base;
    struct vtab *vt = (struct vtab *)base->pVtab;
    int reopened, trc;
    if (cur->use_list) {
        cur->pos++;
        return cursorSettleList(cur);
    }
    int rc = cursorFresh(cur, &reopened);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (reopened) {
        /* A write moved the tree: find our row again, or its successor. */
        trc = tpdb_cursor_seek_rowid(cur->tc, TPDB_SEEK_GE, cur->rowid);
        if (trc == TPDB_OK && !tpdb_cursor_eof(cur->tc)) {
            int64_t at;
            trc = tpdb_cursor_rowid(cur->tc, &at);
            if (trc == TPDB_OK && at == cur->rowid) {
                trc = tpdb_cursor_next(cur->tc);
            }
        }
    } else {
        trc = tpdb_cursor_next(cur->tc);
    }
    if (trc != TPDB_OK) {
        return vtabError(vt, trc, "tpdb_table: scan");
    }
    return cursorSettleIntervals(cur);
}

/* The integer a rowid bound or key compares as, or -1 when the value is no
 * integer (then the plan falls back to a full scan, which is a superset). */
static int boundValue(sqlite3_value *v, int64_t *out)
{
    struct tpdb_value tv;
    valueFromSqlite(v, 1, &tv);
    if (tv.type != TPDB_VINT) {
        return -1;
    }
    *out = tv.i;
    return 0;
}

/* Turns the signed range [lo, hi] into unsigned key intervals, negative keys
 * (which sort last in the file) first so rows come out in signed order. */
static void rangeIntervals(struct cursor *cur, int64_t lo, int64_t hi)
{
    cur->nint = 0;
    if (lo > hi) {
        return;
    }
    if (lo < 0) {
        cur->lo[cur->nint] = (uint64_t)lo;
        cur->hi[cur->nint++] = hi < 0 ? (uint64_t)hi : UINT64_MAX;
    }
    if (hi >= 0) {
        cur->lo[cur->nint] = lo < 0 ? 0 : (uint64_t)lo;
        cur->hi[cur->nint++] = (uint64_t)hi;
    }
}

/* An integer bound no tighter than the value: a REAL is truncated toward
 * zero, which never excludes an integer in range (SQLite re-checks every
 * row). -1 when the value is no number: the caller then scans everything. */
static int rangeBound(sqlite3_value *v, int64_t *out)
{
    if (boundValue(v, out) == 0) {
        return 0;
    }
    if (sqlite3_value_type(v) != SQLITE_FLOAT) {
        return -1;
    }
    double d = sqlite3_value_double(v);
    if (d != d) {
        return -1; /* NaN */
    }
    *out = d >= 9.2e18 ? INT64_MAX : d <= -9.2e18 ? INT64_MIN : (int64_t)d;
    return 0;
}

/* Rowid range plan: 0 when a bound is no number (scan everything). */
static int filterRange(struct cursor *cur, int flags, sqlite3_value **argv)
{
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    int a = 0;
    if ((flags & RANGE_LO) && rangeBound(argv[a++], &lo) != 0) {
        return 0;
    }
    if ((flags & RANGE_HI) && rangeBound(argv[a], &hi) != 0) {
        return 0;
    }
    rangeIntervals(cur, lo, hi);
    return 1;
}

/* Candidate encodings of one equality value: a stored INTEGER and a stored
 * TEXT can both compare equal to it once SQLite applies column affinity. */
struct eqCandidates {
    int n;
    struct tpdb_value v[2];
    char num[2][32];
};

static void eqCandidatesOf(sqlite3_value *sv, struct eqCandidates *c)
{
    struct tpdb_value *v = c->v;
    int64_t i;
    memset(c, 0, sizeof *c);
    switch (sqlite3_value_type(sv)) {
        case SQLITE_INTEGER:
            i = sqlite3_value_int64(sv);
            snprintf(c->num[0], sizeof c->num[0], "%lld", (long long)i);
            v[c->n++] = (struct tpdb_value){.type = TPDB_VINT, .i = i};
            break;
        case SQLITE_FLOAT:
            if (realToInt64(sqlite3_value_double(sv), &i) == 0) {
                v[c->n++] = (struct tpdb_value){.type = TPDB_VINT, .i = i};
            }
            sqlite3_snprintf(sizeof c->num[0], c->num[0], "%!.15g",
                             sqlite3_value_double(sv));
            break;
        case SQLITE_TEXT:
            v[c->n++] =
                (struct tpdb_value){.type = TPDB_VTEXT,
                                    .base = sqlite3_value_text(sv),
                                    .len = (size_t)sqlite3_value_bytes(sv)};
            if (parseInt64((const char *)v[0].base, v[0].len, &i) == 0) {
                v[c->n++] = (struct tpdb_value){.type = TPDB_VINT, .i = i};
            }
            return;
        default:
            return; /* NULL and BLOB values are never in an index */
    }
    if (c->num[0][0] != '\0') {
        v[c->n++] = (struct tpdb_value){.type = TPDB_VTEXT,
                                        .base = (const uint8_t *)c->num[0],
                                        .len = strlen(c->num[0])};
    }
}

static int rowidsAppend(struct cursor *cur, int64_t rowid, size_t *cap)
{
    if (cur->nrowids == *cap) {
        size_t n = *cap == 0 ? 16 : *cap * 2;
        int64_t *p = sqlite3_realloc64(cur->rowids, n * sizeof *p);
        if (p == NULL) {
            return SQLITE_NOMEM;
        }
        cur->rowids = p;
        *cap = n;
    }
    cur->rowids[cur->nrowids++] = rowid;
    return SQLITE_OK;
}

/* Collects the rowids of the index entries whose prefix is `vals`. */
static int indexCollect(struct cursor *cur,
                        struct tpdb_cursor *ic,
                        const struct tpdb_value *vals,
                        unsigned k,
                        size_t *cap)
{
    int64_t rowid;
    int rc = tpdb_cursor_seek_index(ic, TPDB_SEEK_EQ, vals, k);
    while (rc == TPDB_OK && !tpdb_cursor_eof(ic)) {
        rc = tpdb_cursor_rowid(ic, &rowid);
        if (rc != TPDB_OK) {
            break;
        }
        if (rowidsAppend(cur, rowid, cap) != SQLITE_OK) {
            return TPDB_NOMEM;
        }
        rc = tpdb_cursor_next(ic);
    }
    return rc;
}

/* Index equality: every combination of the columns' candidate encodings is
 * looked up (at most 2^MAX_INDEX_EQ). */
static int filterIndex(struct cursor *cur,
                       const char *index,
                       unsigned k,
                       sqlite3_value **argv)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    struct eqCandidates cand[MAX_INDEX_EQ];
    struct tpdb_value vals[MAX_INDEX_EQ];
    struct tpdb_cursor *ic;
    size_t cap = 0;
    unsigned combos = 1;
    if (k == 0 || k > MAX_INDEX_EQ) {
        return SQLITE_INTERNAL;
    }
    for (unsigned n = 0; n < k; n++) {
        eqCandidatesOf(argv[n], &cand[n]);
        combos *= (unsigned)cand[n].n;
    }
    int rc = tpdb_cursor_open_index(vt->sf->f, index, &ic);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: open index");
    }
    for (unsigned m = 0; m < combos && rc == TPDB_OK; m++) {
        unsigned rest = m;
        for (unsigned n = 0; n < k; n++) {
            vals[n] = cand[n].v[rest % (unsigned)cand[n].n];
            rest /= (unsigned)cand[n].n;
        }
        rc = indexCollect(cur, ic, vals, k, &cap);
    }
    tpdb_cursor_close(ic);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: index lookup");
    }
    return SQLITE_OK;
}

static int vtabFilter(sqlite3_vtab_cursor *base,
                      int idxNum,
                      const char *idxStr,
                      int argc,
                      sqlite3_value **argv)
{
    struct cursor *cur = (struct cursor *)base;
    int plan = idxNum & 0xf, reopened, rc;
    int64_t rowid;
    (void)argc;
    cur->nrowids = cur->pos = 0;
    cur->eof = 0;
    cur->use_list = plan == PLAN_ROWID_EQ || plan == PLAN_INDEX_EQ;
    rc = cursorFresh(cur, &reopened);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (plan == PLAN_ROWID_EQ) {
        size_t cap = 0;
        if (boundValue(argv[0], &rowid) == 0) {
            rc = rowidsAppend(cur, rowid, &cap);
        } else {
            cur->use_list = 0; /* a non-integer PK value: scan everything */
        }
    } else if (plan == PLAN_INDEX_EQ) {
        rc = filterIndex(cur, idxStr, (unsigned)idxNum >> 4, argv);
    }
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (cur->use_list) {
        return cursorSettleList(cur);
    }
    if (plan != PLAN_ROWID_RANGE || !filterRange(cur, idxNum >> 4, argv)) {
        /* A full scan goes in file order, as TrashPandaDB returns rows. */
        cur->nint = 1;
        cur->lo[0] = 0;
        cur->hi[0] = UINT64_MAX;
    }
    cur->cur = 0;
    if (cur->nint == 0) {
        cur->eof = 1;
        return SQLITE_OK;
    }
    int trc =
        tpdb_cursor_seek_rowid(cur->tc, TPDB_SEEK_GE, (int64_t)cur->lo[0]);
    if (trc != TPDB_OK) {
        return vtabError((struct vtab *)base->pVtab, trc, "tpdb_table: seek");
    }
    return cursorSettleIntervals(cur);
}

static int vtabEof(sqlite3_vtab_cursor *base)
{
    return ((struct cursor *)base)->eof;
}

/* A write since the cursor loaded its row invalidated the values: fetch the
 * row again by rowid (it may be gone: then every column reads NULL). */
static int cursorReload(struct cursor *cur)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    int reopened;
    int rc = cursorFresh(cur, &reopened);
    if (rc != SQLITE_OK || !reopened) {
        return rc;
    }
    int trc = tpdb_cursor_seek_rowid(cur->tc, TPDB_SEEK_EQ, cur->rowid);
    if (trc != TPDB_OK) {
        return vtabError(vt, trc, "tpdb_table: seek");
    }
    if (tpdb_cursor_eof(cur->tc)) {
        cur->nvals = 0;
        return SQLITE_OK;
    }
    return cursorLoadRow(cur);
}

static int vtabColumn(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int i)
{
    struct cursor *cur = (struct cursor *)base;
    int rc = cursorReload(cur);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (i >= 0 && (unsigned)i < cur->nvals) {
        resultValue(ctx, &cur->vals[i]);
    } else {
        sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

static int vtabRowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    *rowid = ((struct cursor *)base)->rowid;
    return SQLITE_OK;
}

/* ---- Writes and transactions --------------------------------------------- */

/* Drops the TPDB transaction after a statement failed midway, so that no
 * partial statement can ever be committed. */
static void txnBreak(struct sharedFile *sf)
{
    if (sf->txn) {
        sf->gen++;
        tpdb_file_rollback(sf->f);
        sf->txn = 0;
    }
    sf->broken = 1;
}

static int writeCheck(struct vtab *vt)
{
    struct sharedFile *sf = vt->sf;
    const char *why = NULL;
    if (sf->rdonly) {
        why = "is open read-only";
    } else if (sf->broken) {
        why =
            "had its transaction rolled back by a failed statement; "
            "ROLLBACK first";
    } else if (!sf->txn) {
        why = "has no open transaction";
    }
    if (why != NULL) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = sqlite3_mprintf("tpdb_table: %s %s", sf->key, why);
        return sf->rdonly ? SQLITE_READONLY : SQLITE_ERROR;
    }
    return SQLITE_OK;
}

/* Converts argv[2..] into vals (n = table columns); INTEGER affinity applies
 * to columns whose declared type contains "INT". */
static void rowFromArgv(const struct tpdb_table *t,
                        sqlite3_value **argv,
                        struct tpdb_value *vals)
{
    for (unsigned i = 0; i < t->ncols; i++) {
        const char *type = t->cols[i].type;
        int int_aff = type != NULL && strstr(type, "INT") != NULL;
        valueFromSqlite(argv[2 + i], int_aff, &vals[i]);
    }
}

static int doInsert(struct vtab *vt,
                    const struct tpdb_table *t,
                    sqlite3_value **argv,
                    struct tpdb_value *vals,
                    sqlite3_int64 *rowid)
{
    struct sharedFile *sf = vt->sf;
    int64_t want, got;
    rowFromArgv(t, argv, vals);
    if (sqlite3_value_type(argv[1]) != SQLITE_NULL) {
        struct tpdb_value *pk = t->auto_pk ? &vals[t->pk_idx] : NULL;
        if (boundValue(argv[1], &want) != 0 || pk == NULL ||
            (pk->type != TPDB_VNULL &&
             (pk->type != TPDB_VINT || pk->i != want))) {
            sqlite3_free(vt->base.zErrMsg);
            vt->base.zErrMsg = sqlite3_mprintf(
                "tpdb_table: %s: a rowid can only be chosen through the "
                "INTEGER PRIMARY KEY column",
                vt->table);
            return SQLITE_CONSTRAINT;
        }
        *pk = (struct tpdb_value){.type = TPDB_VINT, .i = want};
    }
    sf->gen++;
    int rc = tpdb_file_insert(sf->f, vt->table, vals, t->ncols, &got);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: insert");
    }
    *rowid = got;
    return SQLITE_OK;
}

/* An UPDATE that changes an INTEGER PRIMARY KEY moves the row: delete and
 * insert, dropping the whole transaction if the insert fails. */
static int doMove(struct vtab *vt,
                  const struct tpdb_table *t,
                  int64_t old,
                  const struct tpdb_value *vals)
{
    struct sharedFile *sf = vt->sf;
    struct tpdb_cursor *c;
    int64_t got;
    /* Refuse a taken rowid before changing anything. */
    int rc = tpdb_cursor_open_table(sf->f, vt->table, &c);
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_seek_rowid(c, TPDB_SEEK_EQ, vals[t->pk_idx].i);
        if (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
            rc = TPDB_INVALID;
        }
        tpdb_cursor_close(c);
    }
    if (rc != TPDB_OK) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg =
            sqlite3_mprintf("tpdb_table: %s: rowid %lld already exists",
                            vt->table, (long long)vals[t->pk_idx].i);
        return sqliteRc(rc);
    }
    sf->gen++;
    rc = tpdb_file_delete(sf->f, vt->table, old);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: update (delete)");
    }
    rc = tpdb_file_insert(sf->f, vt->table, vals, t->ncols, &got);
    if (rc != TPDB_OK) {
        int src = vtabError(vt, rc, "tpdb_table: update (insert)");
        txnBreak(sf);
        return src;
    }
    return SQLITE_OK;
}

static int doUpdate(struct vtab *vt,
                    const struct tpdb_table *t,
                    sqlite3_value **argv,
                    struct tpdb_value *vals)
{
    struct sharedFile *sf = vt->sf;
    int64_t old = sqlite3_value_int64(argv[0]);
    if (sqlite3_value_int64(argv[1]) != old) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = sqlite3_mprintf(
            "tpdb_table: %s: the rowid cannot be changed", vt->table);
        return SQLITE_CONSTRAINT;
    }
    rowFromArgv(t, argv, vals);
    if (t->auto_pk && vals[t->pk_idx].type == TPDB_VINT &&
        vals[t->pk_idx].i != old) {
        return doMove(vt, t, old, vals);
    }
    sf->gen++;
    int rc = tpdb_file_update(sf->f, vt->table, old, vals, t->ncols);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: update");
    }
    return SQLITE_OK;
}

static int vtabUpdate(sqlite3_vtab *base,
                      int argc,
                      sqlite3_value **argv,
                      sqlite3_int64 *rowid)
{
    struct vtab *vt = (struct vtab *)base;
    const struct tpdb_table *t = vtabTable(vt);
    struct tpdb_value *vals = NULL;
    int rc;
    if (t == NULL) {
        return SQLITE_ERROR;
    }
    rc = writeCheck(vt);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (argc == 1) {
        vt->sf->gen++;
        rc = tpdb_file_delete(vt->sf->f, vt->table,
                              sqlite3_value_int64(argv[0]));
        rc =
            rc == TPDB_OK ? SQLITE_OK : vtabError(vt, rc, "tpdb_table: delete");
    } else if ((vals = sqlite3_malloc64(t->ncols * sizeof *vals)) == NULL) {
        rc = SQLITE_NOMEM;
    } else if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        rc = doInsert(vt, t, argv, vals, rowid);
    } else {
        rc = doUpdate(vt, t, argv, vals);
    }
    sqlite3_free(vals);
    if (rc == SQLITE_OK) {
        vt->sf->changes++;
    }
    return rc;
}

static int vtabBegin(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    struct sharedFile *sf = vt->sf;
    vt->in_txn = 1;
    if (sf->txn || sf->rdonly || sf->broken) {
        return SQLITE_OK;
    }
    int rc = tpdb_file_begin(sf->f);
    if (rc != TPDB_OK) {
        return vtabError(vt, rc, "tpdb_table: begin");
    }
    sf->txn = 1;
    sf->changes = 0;
    sf->nsp = 0;
    return SQLITE_OK;
}

/* The TPDB commit happens here, where a failure still aborts the SQLite
 * transaction; xCommit cannot fail. */
static int vtabSync(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    struct sharedFile *sf = vt->sf;
    if (sf->broken) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = sqlite3_mprintf(
            "tpdb_table: %s: transaction was rolled back by a failed "
            "statement",
            sf->key);
        return SQLITE_ABORT;
    }
    if (!sf->txn) {
        return SQLITE_OK;
    }
    sf->gen++;
    sf->txn = 0;
    int rc = tpdb_file_commit(sf->f);
    if (rc != TPDB_OK) {
        int src = vtabError(vt, rc, "tpdb_table: commit");
        tpdb_file_rollback(sf->f);
        return src;
    }
    return SQLITE_OK;
}

static int vtabCommit(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    vt->in_txn = 0;
    if (vt->sf->txn) {
        return vtabSync(base);
    }
    return SQLITE_OK;
}

static int vtabRollback(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    struct sharedFile *sf = vt->sf;
    vt->in_txn = 0;
    if (sf->txn) {
        sf->gen++;
        tpdb_file_rollback(sf->f);
        sf->txn = 0;
    }
    sf->broken = 0;
    sf->nsp = 0;
    return SQLITE_OK;
}

/* The library has no savepoints: rolling back to a savepoint after writes
 * made since it began drops the whole TPDB transaction (txnBreak). */
static int vtabSavepoint(sqlite3_vtab *base, int i)
{
    struct sharedFile *sf = ((struct vtab *)base)->sf;
    if (i < 0) {
        return SQLITE_OK;
    }
    if (i >= sf->spcap) {
        int cap = i + 8;
        uint64_t *p = tpdb_realloc(sf->sp, (size_t)cap * sizeof *p);
        if (p == NULL) {
            return SQLITE_NOMEM;
        }
        sf->sp = p;
        sf->spcap = cap;
    }
    for (int j = sf->nsp; j <= i; j++) {
        sf->sp[j] = sf->changes;
    }
    sf->nsp = i + 1;
    return SQLITE_OK;
}

static int vtabRelease(sqlite3_vtab *base, int i)
{
    struct sharedFile *sf = ((struct vtab *)base)->sf;
    if (i >= 0 && i < sf->nsp) {
        sf->nsp = i;
    }
    return SQLITE_OK;
}

static int vtabRollbackTo(sqlite3_vtab *base, int i)
{
    struct sharedFile *sf = ((struct vtab *)base)->sf;
    if (i >= 0 && i < sf->nsp && sf->changes != sf->sp[i]) {
        txnBreak(sf);
    }
    return SQLITE_OK;
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
    if (path == NULL || parseMode(mtext, &mode) != 0) {
        sqlite3_result_error(ctx, "tpdb_attach(PATH [, PREFIX [, 'rw'|'ro']])",
                             -1);
        return;
    }
    if (sharedAcquire(reg, path, mode, &sf, &err) != SQLITE_OK) {
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
    sharedRelease(reg, sf);
}

int tpdbVtabRegister(sqlite3 *db)
{
    struct registry *reg = tpdb_calloc(1, sizeof *reg);
    if (reg == NULL) {
        return SQLITE_NOMEM;
    }
    reg->db = db;
    int rc = sqlite3_create_module_v2(db, "tpdb_table", &tpdbModule, reg,
                                      registryDestroy);
    if (rc != SQLITE_OK) {
        return rc; /* sqlite3_create_module_v2 calls the destructor */
    }
    for (int nargs = 1; nargs <= 3 && rc == SQLITE_OK; nargs++) {
        rc = sqlite3_create_function_v2(db, "tpdb_attach", nargs, SQLITE_UTF8,
                                        reg, attachFunc, NULL, NULL, NULL);
    }
    return rc;
}
