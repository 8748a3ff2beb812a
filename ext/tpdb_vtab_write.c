/*
 * tpdb_table writes and transactions (tpdb_vtab_int.h). INSERT, UPDATE and
 * DELETE write through the shared handle's TPDB transaction, which begins
 * with the first table's xBegin and commits in xSync, where a failure still
 * aborts the SQLite transaction. A table in a transaction holds its file
 * from xBegin to xCommit/xRollback, so a transient file (a node's data
 * directory) stays open, at one committed state, for the whole write
 * transaction. The library has no savepoints: a ROLLBACK TO over writes
 * drops the whole TPDB transaction.
 */
#include <string.h>

#include "base/base.h"
#include "ext/tpdb_vtab_int.h"
#include "vfs/tpdbfile/tpdbfile.h"

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
        vtabValueFromSqlite(argv[2 + i], int_aff, &vals[i]);
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
        if (vtabBoundValue(argv[1], &want) != 0 || pk == NULL ||
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
        return vtabSqliteRc(rc);
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

int vtabUpdate(sqlite3_vtab *base,
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

int vtabBegin(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    struct sharedFile *sf = vt->sf;
    int rc;
    if (!vt->in_txn) {
        sqlite3_free(vt->base.zErrMsg);
        vt->base.zErrMsg = NULL;
        rc = vtabFileHold(sf, &vt->base.zErrMsg);
        if (rc != SQLITE_OK) {
            return rc;
        }
        vt->in_txn = 1;
    }
    if (sf->txn || sf->rdonly || sf->broken) {
        return SQLITE_OK;
    }
    rc = tpdb_file_begin(sf->f);
    if (rc != TPDB_OK) {
        /* SQLite calls neither xCommit nor xRollback after a failed xBegin. */
        rc = vtabError(vt, rc, "tpdb_table: begin");
        vt->in_txn = 0;
        vtabFileUnhold(sf);
        return rc;
    }
    sf->txn = 1;
    sf->changes = 0;
    sf->nsp = 0;
    return SQLITE_OK;
}

/* Ends this table's part in the transaction: drops its hold. */
static void txnLeave(struct vtab *vt)
{
    if (vt->in_txn) {
        vt->in_txn = 0;
        vtabFileUnhold(vt->sf);
    }
}

/* The TPDB commit happens here, where a failure still aborts the SQLite
 * transaction; xCommit cannot fail. */
int vtabSync(sqlite3_vtab *base)
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

int vtabCommit(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    int rc = SQLITE_OK;
    if (vt->sf->txn) {
        rc = vtabSync(base);
    }
    txnLeave(vt);
    return rc;
}

int vtabRollback(sqlite3_vtab *base)
{
    struct vtab *vt = (struct vtab *)base;
    struct sharedFile *sf = vt->sf;
    if (sf->txn) {
        sf->gen++;
        tpdb_file_rollback(sf->f);
        sf->txn = 0;
    }
    sf->broken = 0;
    sf->nsp = 0;
    txnLeave(vt);
    return SQLITE_OK;
}

/* The library has no savepoints: rolling back to a savepoint after writes
 * made since it began drops the whole TPDB transaction (txnBreak). */
int vtabSavepoint(sqlite3_vtab *base, int i)
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

int vtabRelease(sqlite3_vtab *base, int i)
{
    struct sharedFile *sf = ((struct vtab *)base)->sf;
    if (i >= 0 && i < sf->nsp) {
        sf->nsp = i;
    }
    return SQLITE_OK;
}

int vtabRollbackTo(sqlite3_vtab *base, int i)
{
    struct sharedFile *sf = ((struct vtab *)base)->sf;
    if (i >= 0 && i < sf->nsp && sf->changes != sf->sp[i]) {
        txnBreak(sf);
    }
    return SQLITE_OK;
}
