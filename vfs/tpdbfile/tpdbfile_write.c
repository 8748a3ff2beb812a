/*
 * Writes to a native TPDB file: statements (insert, update, delete, create
 * table, create index) and transactions. Every statement runs under an undo
 * log of page images plus the saved header fields and is undone completely
 * when it fails (TrashPandaDB's defect B4 is not repeated); outside an
 * explicit transaction each statement commits by itself. Index entries and
 * the catalog (next_rowid, roots) are kept in step with every row change.
 */
#include <string.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

/* ---- Statements and transactions ---------------------------------------- */

static int tfStmtBegin(struct tpdb_file *f)
{
    if (f->rdonly) {
        tpdbErrf(f->errmsg, "%s: opened read-only", f->name);
        return TPDB_READONLY;
    }
    f->gen++;
    int rc = tfReplWriteCheck(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfCatalogSave(f, &f->s_cat);
    if (rc != TPDB_OK) {
        return rc;
    }
    f->in_stmt = 1;
    f->s_page_count = f->page_count;
    f->s_free_head = f->free_head;
    tfUndoClear(f);
    return TPDB_OK;
}

/* Commits the dirty pages, replicating them first when hooks are
 * installed (a refused replication writes nothing). When the commit did not
 * become durable, the header fields and the catalog go back to `save` (the
 * transaction's or the autocommit statement's start). */
static int tfTxnCommit(struct tpdb_file *f, const struct tfCatSave *save)
{
    int durable = 0;
    int replicated = 0;
    int rc = tfReplCommit(f, &replicated);
    if (rc == TPDB_OK) {
        rc = tfCommitWrite(f, &durable);
    }
    if (replicated) {
        tfReplDone(f, durable);
    }
    tfDirtyDrop(f);
    if (durable) {
        f->c_page_count = f->page_count;
        f->c_free_head = f->free_head;
    } else {
        f->page_count = f->c_page_count;
        f->free_head = f->c_free_head;
        tfCatalogRestore(f, save);
    }
    f->in_txn = 0;
    return rc;
}

/* Ends a statement: keeps its changes (committing outside a transaction)
 * or undoes every page, header field and catalog change it made. */
static int tfStmtEnd(struct tpdb_file *f, int rc)
{
    f->in_stmt = 0;
    if (rc == TPDB_OK) {
        tfUndoClear(f);
        rc = f->in_txn ? TPDB_OK : tfTxnCommit(f, &f->s_cat);
        tfCatalogSaveFree(&f->s_cat);
        return rc;
    }
    tfUndoApply(f);
    f->page_count = f->s_page_count;
    f->free_head = f->s_free_head;
    tfCatalogRestore(f, &f->s_cat);
    tfCatalogSaveFree(&f->s_cat);
    return rc;
}

int tpdb_file_begin(struct tpdb_file *f)
{
    if (f->rdonly) {
        tpdbErrf(f->errmsg, "%s: opened read-only", f->name);
        return TPDB_READONLY;
    }
    if (f->in_txn) {
        tpdbErrf(f->errmsg, "%s: a transaction is already open", f->name);
        return TPDB_MISUSE;
    }
    int rc = tfCatalogSave(f, &f->t_cat);
    if (rc == TPDB_OK) {
        f->in_txn = 1;
    }
    return rc;
}

int tpdb_file_commit(struct tpdb_file *f)
{
    if (!f->in_txn) {
        tpdbErrf(f->errmsg, "%s: no transaction is open", f->name);
        return TPDB_MISUSE;
    }
    f->gen++;
    int rc = tfTxnCommit(f, &f->t_cat);
    tfCatalogSaveFree(&f->t_cat);
    return rc;
}

int tpdb_file_rollback(struct tpdb_file *f)
{
    if (!f->in_txn) {
        tpdbErrf(f->errmsg, "%s: no transaction is open", f->name);
        return TPDB_MISUSE;
    }
    f->gen++;
    tfDirtyDrop(f);
    f->page_count = f->c_page_count;
    f->free_head = f->c_free_head;
    f->in_txn = 0;
    tfCatalogRestore(f, &f->t_cat);
    tfCatalogSaveFree(&f->t_cat);
    return TPDB_OK;
}

/* ---- Rows and index keys ------------------------------------------------ */

static int tfColumnIdx(const struct tpdb_table *t, const char *name)
{
    for (unsigned i = 0; i < t->ncols; i++) {
        if (strcmp(t->cols[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Index key of a row: the columns' encodings, then the rowid (8 bytes BE).
 * *skip is set when a column is NULL (such rows are not indexed); *plen
 * gets the length without the rowid. */
static int tfIndexKey(struct tpdb_file *f,
                      const struct tpdb_index *x,
                      const struct tpdb_table *t,
                      const struct tpdb_value *vals,
                      int64_t rowid,
                      uint8_t *key,
                      size_t *klen,
                      size_t *plen,
                      int *skip)
{
    *klen = 0;
    *skip = 0;
    for (unsigned i = 0; i < x->ncols; i++) {
        int ci = tfColumnIdx(t, x->cols[i]);
        if (ci < 0) {
            tpdbErrf(f->errmsg, "%s: index %s: no column %s in table %s",
                     f->name, x->name, x->cols[i], t->name);
            return TPDB_CORRUPT;
        }
        if (vals[ci].type == TPDB_VNULL) {
            *skip = 1;
            return TPDB_OK;
        }
        int rc = tfIndexKeyAppend(&vals[ci], key, TF_MAX_INDEX_KEY, klen);
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg, "%s: index %s: column %s: %s", f->name, x->name,
                     x->cols[i],
                     rc == TPDB_TOOBIG ? "key too long for an index"
                                       : "value is not INTEGER or TEXT "
                                         "(or TEXT holds a NUL)");
            return rc;
        }
    }
    *plen = *klen;
    tfRowidKey(rowid, key + *klen);
    *klen += 8;
    return TPDB_OK;
}

/* TPDB_INVALID when a key starting with prefix exists in the index. */
static int tfUniqueCheck(struct tpdb_file *f,
                         const struct tpdb_index *x,
                         const uint8_t *prefix,
                         size_t plen)
{
    struct tpdb_cursor *c = NULL;
    int rc = tfCursorOpenRoot(f, x->root, 1, &c);
    if (rc == TPDB_OK) {
        rc = tfCursorSeekKey(c, TPDB_SEEK_EQ, prefix, plen);
    }
    if (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        tpdbErrf(f->errmsg, "%s: UNIQUE constraint failed: %s", f->name,
                 x->name);
        rc = TPDB_INVALID;
    }
    tpdb_cursor_close(c);
    return rc;
}

/* Adds (add = 1) or removes the row's entries in every index of table ti. */
static int tfIndexesApply(struct tpdb_file *f,
                          unsigned ti,
                          const struct tpdb_value *vals,
                          int64_t rowid,
                          int add)
{
    uint8_t key[TF_MAX_INDEX_KEY + 8];
    const struct tpdb_table *t = &f->cat.tables[ti];
    int rc = TPDB_OK;
    for (unsigned i = 0; i < f->cat.nindexes && rc == TPDB_OK; i++) {
        struct tpdb_index *x = &f->cat.indexes[i];
        size_t klen = 0, plen = 0;
        int skip = 0, found = 0;
        if (strcmp(x->table, t->name) != 0) {
            continue;
        }
        rc = tfIndexKey(f, x, t, vals, rowid, key, &klen, &plen, &skip);
        if (rc != TPDB_OK || skip) {
            continue;
        }
        if (!add) {
            rc = tfTreeDelete(f, x->root, key, klen, &found);
            continue;
        }
        if (x->unique) {
            rc = tfUniqueCheck(f, x, key, plen);
        }
        if (rc == TPDB_OK) {
            rc = tfTreeInsert(f, &x->root, key, klen, NULL, 0);
        }
    }
    return rc;
}

static int tfValuesCheck(struct tpdb_file *f,
                         const struct tpdb_table *t,
                         const struct tpdb_value *vals)
{
    for (unsigned i = 0; i < t->ncols; i++) {
        if (vals[i].type < TPDB_VNULL || vals[i].type > TPDB_VBOOL ||
            ((vals[i].type == TPDB_VTEXT || vals[i].type == TPDB_VBLOB) &&
             vals[i].len > 0 && vals[i].base == NULL)) {
            tpdbErrf(f->errmsg, "%s: %s.%s: bad value", f->name, t->name,
                     t->cols[i].name);
            return TPDB_INVALID;
        }
        if (vals[i].type == TPDB_VNULL && t->cols[i].not_null) {
            tpdbErrf(f->errmsg, "%s: NOT NULL constraint failed: %s.%s",
                     f->name, t->name, t->cols[i].name);
            return TPDB_INVALID;
        }
    }
    return TPDB_OK;
}

/* Stores a full row under rowid, then its index entries. */
static int tfRowPut(struct tpdb_file *f,
                    unsigned ti,
                    const struct tpdb_value *vals,
                    int64_t rowid)
{
    struct tpdb_table *t = &f->cat.tables[ti];
    uint8_t key[8];
    uint8_t *row = NULL;
    size_t len = 0;
    int rc = tfValuesCheck(f, t, vals);
    if (rc == TPDB_OK) {
        rc = tfRowEncode(vals, t->ncols, &row, &len);
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg, "%s: %s: row too large or out of memory",
                     f->name, t->name);
        }
    }
    tfRowidKey(rowid, key);
    if (rc == TPDB_OK) {
        rc = tfTreeInsert(f, &t->root, key, sizeof key, row, len);
        if (rc == TPDB_INVALID) {
            tpdbErrf(f->errmsg, "%s: %s: rowid %lld already exists", f->name,
                     t->name, (long long)rowid);
        }
    }
    tpdb_free(row);
    if (rc == TPDB_OK) {
        rc = tfIndexesApply(f, ti, vals, rowid, 1);
    }
    return rc;
}

/* Fetches the row `rowid` of table ti: *raw (tpdb_malloc'd, the caller
 * frees it) holds the bytes `vals` point into. */
static int tfRowGet(struct tpdb_file *f,
                    unsigned ti,
                    int64_t rowid,
                    uint8_t **raw,
                    struct tpdb_value *vals)
{
    const struct tpdb_table *t = &f->cat.tables[ti];
    struct tpdb_cursor *c = NULL;
    const uint8_t *val = NULL;
    size_t vlen = 0;
    uint8_t key[8];
    unsigned stored = 0;
    char msg[TPDB_ERRMSG_SIZE];
    tfRowidKey(rowid, key);
    *raw = NULL;
    int rc = tfCursorOpenRoot(f, t->root, 0, &c);
    if (rc == TPDB_OK) {
        rc = tfCursorSeekKey(c, TPDB_SEEK_EQ, key, sizeof key);
    }
    if (rc == TPDB_OK && tpdb_cursor_eof(c)) {
        tpdbErrf(f->errmsg, "%s: %s: no row %lld", f->name, t->name,
                 (long long)rowid);
        rc = TPDB_NOTFOUND;
    }
    if (rc == TPDB_OK) {
        rc = tfCursorValue(c, &val, &vlen);
    }
    if (rc == TPDB_OK) {
        *raw = tpdb_malloc(vlen + 1);
        rc = *raw == NULL ? TPDB_NOMEM : TPDB_OK;
    }
    if (rc == TPDB_OK) {
        memcpy(*raw, val, vlen);
        rc = tfRowDecode(*raw, vlen, t->ncols, f->cat.defaults[ti], vals,
                         &stored, msg);
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg, "%s: %s: row %lld: %s", f->name, t->name,
                     (long long)rowid, msg);
        }
    }
    tpdb_cursor_close(c);
    return rc;
}

/* Removes the row `rowid` of table ti and its index entries. */
static int tfRowRemove(struct tpdb_file *f, unsigned ti, int64_t rowid)
{
    struct tpdb_table *t = &f->cat.tables[ti];
    struct tpdb_value *old = tpdb_calloc(t->ncols + 1, sizeof *old);
    uint8_t *raw = NULL;
    uint8_t key[8];
    int found = 0;
    int rc = old == NULL ? TPDB_NOMEM : tfRowGet(f, ti, rowid, &raw, old);
    if (rc == TPDB_OK) {
        rc = tfIndexesApply(f, ti, old, rowid, 0);
    }
    tfRowidKey(rowid, key);
    if (rc == TPDB_OK) {
        rc = tfTreeDelete(f, t->root, key, sizeof key, &found);
    }
    tpdb_free(raw);
    tpdb_free(old);
    return rc;
}

/* Copies n values and fills the remaining columns with their DEFAULTs. */
static struct tpdb_value *tfFullRow(struct tpdb_file *f,
                                    unsigned ti,
                                    const struct tpdb_value *vals,
                                    unsigned n)
{
    const struct tpdb_table *t = &f->cat.tables[ti];
    struct tpdb_value *full = tpdb_calloc(t->ncols + 1, sizeof *full);
    if (full == NULL) {
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return NULL;
    }
    for (unsigned i = 0; i < t->ncols; i++) {
        full[i] = i < n ? vals[i] : f->cat.defaults[ti][i];
    }
    return full;
}

static int tfTableLookup(struct tpdb_file *f,
                         const char *table,
                         unsigned n,
                         unsigned *ti)
{
    int i = table == NULL ? -1 : tfCatalogTableIdx(f, table);
    if (i < 0) {
        tpdbErrf(f->errmsg, "%s: no such table: %s", f->name,
                 table == NULL ? "(null)" : table);
        return TPDB_NOTFOUND;
    }
    if (n > f->cat.tables[i].ncols) {
        tpdbErrf(f->errmsg, "%s: %s has %u columns but %u values were given",
                 f->name, table, f->cat.tables[i].ncols, n);
        return TPDB_INVALID;
    }
    *ti = (unsigned)i;
    return TPDB_OK;
}

/* The rowid of a new row, as TrashPandaDB chooses it; moves next_rowid. */
static int64_t tfRowidChoose(struct tpdb_table *t, struct tpdb_value *full)
{
    int pk = t->pk_idx;
    int64_t rowid;
    if (pk >= 0 && (full[pk].type == TPDB_VINT)) {
        rowid = full[pk].i;
    } else {
        rowid = t->next_rowid;
        if (pk >= 0 && t->auto_pk && full[pk].type == TPDB_VNULL) {
            full[pk].type = TPDB_VINT;
            full[pk].i = rowid;
        }
    }
    if (rowid >= t->next_rowid && rowid < INT64_MAX) {
        t->next_rowid = rowid + 1;
    }
    return rowid;
}

/* ---- Public statements -------------------------------------------------- */

int tpdb_file_insert(struct tpdb_file *f,
                     const char *table,
                     const struct tpdb_value *vals,
                     unsigned n,
                     int64_t *rowid)
{
    struct tpdb_value *full = NULL;
    unsigned ti = 0;
    int rc = tfStmtBegin(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfTableLookup(f, table, n, &ti);
    if (rc == TPDB_OK) {
        full = tfFullRow(f, ti, vals, n);
        rc = full == NULL ? TPDB_NOMEM : TPDB_OK;
    }
    if (rc == TPDB_OK) {
        int64_t id = tfRowidChoose(&f->cat.tables[ti], full);
        rc = tfRowPut(f, ti, full, id);
        if (rowid != NULL) {
            *rowid = id;
        }
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogStore(f);
    }
    tpdb_free(full);
    return tfStmtEnd(f, rc);
}

int tpdb_file_update(struct tpdb_file *f,
                     const char *table,
                     int64_t rowid,
                     const struct tpdb_value *vals,
                     unsigned n)
{
    struct tpdb_value *full = NULL;
    unsigned ti = 0;
    int rc = tfStmtBegin(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfTableLookup(f, table, n, &ti);
    if (rc == TPDB_OK) {
        full = tfFullRow(f, ti, vals, n);
        rc = full == NULL ? TPDB_NOMEM : TPDB_OK;
    }
    int pk = rc == TPDB_OK ? f->cat.tables[ti].pk_idx : -1;
    if (pk >= 0 && full[pk].type == TPDB_VINT && full[pk].i != rowid) {
        tpdbErrf(f->errmsg,
                 "%s: %s: changing the INTEGER primary key of "
                 "row %lld is not supported",
                 f->name, table, (long long)rowid);
        rc = TPDB_INVALID;
    } else if (pk >= 0 && f->cat.tables[ti].auto_pk &&
               full[pk].type == TPDB_VNULL) {
        full[pk].type = TPDB_VINT;
        full[pk].i = rowid;
    }
    if (rc == TPDB_OK) {
        rc = tfRowRemove(f, ti, rowid);
    }
    if (rc == TPDB_OK) {
        rc = tfRowPut(f, ti, full, rowid);
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogStore(f);
    }
    tpdb_free(full);
    return tfStmtEnd(f, rc);
}

int tpdb_file_delete(struct tpdb_file *f, const char *table, int64_t rowid)
{
    unsigned ti = 0;
    int rc = tfStmtBegin(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfTableLookup(f, table, 0, &ti);
    if (rc == TPDB_OK) {
        rc = tfRowRemove(f, ti, rowid);
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogStore(f);
    }
    return tfStmtEnd(f, rc);
}

int tpdb_file_raise_next_rowid(struct tpdb_file *f,
                               const char *table,
                               int64_t next_rowid)
{
    unsigned ti = 0;
    int rc = tfStmtBegin(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfTableLookup(f, table, 0, &ti);
    if (rc == TPDB_OK && next_rowid > f->cat.tables[ti].next_rowid) {
        f->cat.tables[ti].next_rowid = next_rowid;
        rc = tfCatalogStore(f);
    }
    return tfStmtEnd(f, rc);
}

/* ---- DDL ------------------------------------------------------------------
 */

static int tfNameOk(struct tpdb_file *f, const char *what, const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 255) {
        tpdbErrf(f->errmsg, "%s: %s name missing or longer than 255 bytes",
                 f->name, what);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

static int tfTableDefCheck(struct tpdb_file *f,
                           const char *name,
                           const struct tpdb_column *cols,
                           unsigned ncols,
                           int pk_idx)
{
    int rc = tfNameOk(f, "table", name);
    if (rc == TPDB_OK && tfCatalogTableIdx(f, name) >= 0) {
        tpdbErrf(f->errmsg, "%s: table %s already exists", f->name, name);
        return TPDB_INVALID;
    }
    if (rc == TPDB_OK &&
        (cols == NULL || ncols == 0 || ncols > 0xFFFF || pk_idx < -1 ||
         pk_idx >= (int)ncols || f->cat.ntables >= 0xFFFF)) {
        tpdbErrf(f->errmsg, "%s: table %s: bad column count or pk_idx", f->name,
                 name);
        return TPDB_INVALID;
    }
    for (unsigned i = 0; rc == TPDB_OK && i < ncols; i++) {
        rc = tfNameOk(f, "column", cols[i].name);
        if (rc == TPDB_OK && cols[i].type != NULL &&
            strlen(cols[i].type) > 255) {
            rc = tfNameOk(f, "type", cols[i].type);
        }
        if (rc == TPDB_OK && cols[i].default_sql != NULL &&
            strlen(cols[i].default_sql) > 0xFFFF) {
            tpdbErrf(f->errmsg, "%s: default longer than 65535 bytes", f->name);
            rc = TPDB_INVALID;
        }
        for (unsigned j = 0; rc == TPDB_OK && j < i; j++) {
            if (strcmp(cols[i].name, cols[j].name) == 0) {
                tpdbErrf(f->errmsg, "%s: duplicate column %s", f->name,
                         cols[i].name);
                rc = TPDB_INVALID;
            }
        }
    }
    return rc;
}

/* Allocates a page holding an empty leaf. */
static int tfEmptyLeaf(struct tpdb_file *f, uint32_t *pg)
{
    uint8_t page[TF_PAGE];
    int rc = tfPageAlloc(f, pg);
    if (rc == TPDB_OK) {
        memset(page, 0, sizeof page);
        page[0] = TF_PT_LEAF;
        tpdbPut16(page + 11, (uint16_t)TF_PAGE);
        rc = tfPageWrite(f, *pg, page);
    }
    return rc;
}

int tpdb_file_create_table(struct tpdb_file *f,
                           const char *name,
                           const struct tpdb_column *cols,
                           unsigned ncols,
                           int pk_idx)
{
    uint32_t root = 0;
    int rc = tfStmtBegin(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfTableDefCheck(f, name, cols, ncols, pk_idx);
    if (rc == TPDB_OK && f->page_count < 1) {
        f->page_count = 1;
    }
    if (rc == TPDB_OK) {
        rc = tfEmptyLeaf(f, &root);
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogAddTable(f, name, cols, ncols, pk_idx, root);
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogStore(f);
    }
    return tfStmtEnd(f, rc);
}

static int tfIndexDefCheck(struct tpdb_file *f,
                           const char *name,
                           const char *table,
                           const char *const *cols,
                           unsigned ncols,
                           unsigned *ti)
{
    int rc = tfNameOk(f, "index", name);
    if (rc == TPDB_OK && tpdb_file_index_find(f, name) != NULL) {
        tpdbErrf(f->errmsg, "%s: index %s already exists", f->name, name);
        rc = TPDB_INVALID;
    }
    if (rc == TPDB_OK && (cols == NULL || ncols == 0 || ncols > 255)) {
        tpdbErrf(f->errmsg, "%s: index %s: 1 to 255 columns", f->name, name);
        rc = TPDB_INVALID;
    }
    if (rc == TPDB_OK) {
        rc = tfTableLookup(f, table, 0, ti);
    }
    for (unsigned i = 0; rc == TPDB_OK && i < ncols; i++) {
        if (cols[i] == NULL || tfColumnIdx(&f->cat.tables[*ti], cols[i]) < 0) {
            tpdbErrf(f->errmsg, "%s: index %s: no such column %s", f->name,
                     name, cols[i] == NULL ? "(null)" : cols[i]);
            rc = TPDB_NOTFOUND;
        }
    }
    return rc;
}

/* Adds every row of table ti to index xi. */
static int tfIndexFill(struct tpdb_file *f, unsigned ti, unsigned xi)
{
    const struct tpdb_table *t = &f->cat.tables[ti];
    struct tpdb_value *vals = tpdb_calloc(t->ncols + 1, sizeof *vals);
    struct tpdb_cursor *c = NULL;
    char msg[TPDB_ERRMSG_SIZE];
    int rc = vals == NULL ? TPDB_NOMEM : tfCursorOpenRoot(f, t->root, 0, &c);
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_first(c);
    }
    while (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        struct tpdb_index *x = &f->cat.indexes[xi];
        uint8_t key[TF_MAX_INDEX_KEY + 8];
        const uint8_t *val;
        size_t vlen, klen = 0, plen = 0;
        unsigned stored;
        int64_t rowid = 0;
        int skip = 0;
        rc = tpdb_cursor_rowid(c, &rowid);
        if (rc == TPDB_OK) {
            rc = tfCursorValue(c, &val, &vlen);
        }
        if (rc == TPDB_OK) {
            rc = tfRowDecode(val, vlen, t->ncols, f->cat.defaults[ti], vals,
                             &stored, msg);
            if (rc != TPDB_OK) {
                tpdbErrf(f->errmsg, "%s: %s: row %lld: %s", f->name, t->name,
                         (long long)rowid, msg);
            }
        }
        if (rc == TPDB_OK) {
            rc = tfIndexKey(f, x, t, vals, rowid, key, &klen, &plen, &skip);
        }
        if (rc == TPDB_OK && !skip && x->unique) {
            rc = tfUniqueCheck(f, x, key, plen);
        }
        if (rc == TPDB_OK && !skip) {
            rc = tfTreeInsert(f, &x->root, key, klen, NULL, 0);
        }
        if (rc == TPDB_OK) {
            rc = tpdb_cursor_next(c);
        }
    }
    tpdb_cursor_close(c);
    tpdb_free(vals);
    return rc;
}

int tpdb_file_create_index(struct tpdb_file *f,
                           const char *name,
                           const char *table,
                           const char *const *cols,
                           unsigned ncols,
                           int unique)
{
    uint32_t root = 0;
    unsigned ti = 0;
    int rc = tfStmtBegin(f);
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfIndexDefCheck(f, name, table, cols, ncols, &ti);
    if (rc == TPDB_OK) {
        rc = tfEmptyLeaf(f, &root);
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogAddIndex(f, name, table, cols, ncols, root, unique);
    }
    if (rc == TPDB_OK) {
        rc = tfIndexFill(f, ti, f->cat.nindexes - 1);
    }
    if (rc == TPDB_OK) {
        rc = tfCatalogStore(f);
    }
    return tfStmtEnd(f, rc);
}
