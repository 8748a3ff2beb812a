/*
 * The catalog of the native TPDB format: page 1 (type 0x04, table_count u16,
 * first continuation u32, index_count u16, stream from byte 16) plus
 * continuation pages (next u32, stream from byte 4). The stream holds the
 * table entries, then the index entries (layouts in docs/tpdb-format.md 1.8).
 * Loaded whole into memory at open and after rollbacks; rewritten whole at
 * the end of every write statement, reusing its continuation pages.
 */
#include <string.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

/* ---- Arena: every catalog allocation, freed at once --------------------- */

static void *tfArenaAlloc(struct tfCatalog *cat, size_t n)
{
    void **b = tpdb_realloc(cat->blocks, (cat->nblocks + 1) * sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    cat->blocks = b;
    void *p = tpdb_calloc(1, n == 0 ? 1 : n);
    if (p != NULL) {
        cat->blocks[cat->nblocks++] = p;
    }
    return p;
}

static char *tfArenaStr(struct tfCatalog *cat, const uint8_t *s, size_t n)
{
    char *p = tfArenaAlloc(cat, n + 1);
    if (p != NULL && n > 0) {
        memcpy(p, s, n);
    }
    return p;
}

void tfCatalogFree(struct tfCatalog *cat)
{
    for (size_t i = 0; i < cat->nblocks; i++) {
        tpdb_free(cat->blocks[i]);
    }
    tpdb_free(cat->blocks);
    tpdb_free(cat->tables);
    tpdb_free(cat->indexes);
    tpdb_free(cat->defaults);
    memset(cat, 0, sizeof *cat);
}

/* ---- Stream reader ------------------------------------------------------ */

struct tfReader {
    const uint8_t *p;
    size_t len;
    size_t pos;
    int bad;
};

static const uint8_t *tfTake(struct tfReader *r, size_t n)
{
    if (r->bad != 0 || r->len - r->pos < n) {
        r->bad = r->bad != 0 ? r->bad : 1; /* keep 2: out of memory */
        return NULL;
    }
    r->pos += n;
    return r->p + r->pos - n;
}

static uint32_t tfTakeUint(struct tfReader *r, size_t n)
{
    const uint8_t *p = tfTake(r, n);
    if (p == NULL) {
        return 0;
    }
    return n == 1 ? p[0] : (n == 2 ? tpdbGet16(p) : tpdbGet32(p));
}

static char *tfTakeStr(struct tfCatalog *cat, struct tfReader *r, size_t n)
{
    const uint8_t *p = tfTake(r, n);
    char *s = p == NULL ? NULL : tfArenaStr(cat, p, n);
    if (p != NULL && s == NULL) {
        r->bad = 2;
    }
    return s;
}

static int tfColumnParse(struct tfCatalog *cat,
                         struct tfReader *r,
                         struct tpdb_column *c)
{
    c->name = tfTakeStr(cat, r, tfTakeUint(r, 1));
    c->type = tfTakeStr(cat, r, tfTakeUint(r, 1));
    c->not_null = (int)tfTakeUint(r, 1);
    c->default_sql = NULL;
    if (tfTakeUint(r, 1) == 1) {
        c->default_sql = tfTakeStr(cat, r, tfTakeUint(r, 2));
    }
    return r->bad;
}

/* Evaluates the DEFAULT of every column into cat->defaults[t]. */
static int tfDefaultsEval(struct tfCatalog *cat, unsigned t)
{
    const struct tpdb_table *tb = &cat->tables[t];
    cat->defaults[t] = tfArenaAlloc(cat, tb->ncols * sizeof(struct tpdb_value));
    if (cat->defaults[t] == NULL) {
        return TPDB_NOMEM;
    }
    for (unsigned i = 0; i < tb->ncols; i++) {
        const char *sql = tb->cols[i].default_sql;
        uint8_t *scratch = tfArenaAlloc(cat, sql == NULL ? 1 : strlen(sql));
        if (scratch == NULL) {
            return TPDB_NOMEM;
        }
        tpdb_default_eval(sql, scratch, &cat->defaults[t][i]);
    }
    return TPDB_OK;
}

static int tfTableParse(struct tfCatalog *cat,
                        struct tfReader *r,
                        struct tpdb_table *t)
{
    t->name = tfTakeStr(cat, r, tfTakeUint(r, 1));
    t->root = tfTakeUint(r, 4);
    t->ncols = tfTakeUint(r, 2);
    t->pk_idx = (int16_t)tfTakeUint(r, 2);
    (void)tfTakeUint(r, 1);
    const uint8_t *p = tfTake(r, 8);
    t->next_rowid = p == NULL ? 0 : (int64_t)tpdbGet64(p);
    if (r->bad) {
        return r->bad;
    }
    struct tpdb_column *cols =
        tfArenaAlloc(cat, t->ncols * sizeof(struct tpdb_column));
    if (cols == NULL) {
        return 2;
    }
    for (unsigned i = 0; i < t->ncols && !r->bad; i++) {
        tfColumnParse(cat, r, &cols[i]);
    }
    t->cols = cols;
    t->auto_pk = 0;
    if (!r->bad && t->pk_idx >= 0 && (unsigned)t->pk_idx < t->ncols) {
        t->auto_pk = strstr(cols[t->pk_idx].type, "INT") != NULL;
    }
    return r->bad;
}

static int tfIndexParse(struct tfCatalog *cat,
                        struct tfReader *r,
                        struct tpdb_index *ix)
{
    ix->name = tfTakeStr(cat, r, tfTakeUint(r, 1));
    ix->table = tfTakeStr(cat, r, tfTakeUint(r, 1));
    ix->ncols = tfTakeUint(r, 1);
    const char **cols = tfArenaAlloc(cat, ix->ncols * sizeof(char *));
    if (cols == NULL) {
        return 2;
    }
    for (unsigned i = 0; i < ix->ncols && !r->bad; i++) {
        cols[i] = tfTakeStr(cat, r, tfTakeUint(r, 1));
    }
    ix->cols = cols;
    ix->root = tfTakeUint(r, 4);
    ix->unique = (int)tfTakeUint(r, 1);
    return r->bad;
}

/* ---- Load --------------------------------------------------------------- */

/* Reads page 1 and its continuation chain into one tpdb_malloc'd stream;
 * chain[] receives the continuation page numbers (for messages). */
static int tfStreamRead(struct tpdb_file *f,
                        uint8_t *page1,
                        uint8_t **out,
                        size_t *len,
                        uint32_t **chain,
                        size_t *nchain)
{
    uint8_t page[TF_PAGE];
    int rc = tpdb_file_chain(f, TPDB_CHAIN_CATALOG, chain, nchain);
    if (rc != TPDB_OK) {
        tpdbErrWrap(f->errmsg, "catalog continuation chain");
        return rc;
    }
    size_t total = TF_CAT_CHUNK0 + *nchain * (size_t)TF_CAT_CHUNK;
    uint8_t *buf = tpdb_malloc(total);
    if (buf == NULL) {
        tpdbErrf(f->errmsg, "%s: catalog: out of memory", f->name);
        return TPDB_NOMEM;
    }
    memcpy(buf, page1 + 16, TF_CAT_CHUNK0);
    for (size_t i = 0; i < *nchain; i++) {
        rc = tfPageRead(f, (*chain)[i], page);
        if (rc != TPDB_OK) {
            tpdb_free(buf);
            return rc;
        }
        memcpy(buf + TF_CAT_CHUNK0 + i * TF_CAT_CHUNK, page + 4, TF_CAT_CHUNK);
    }
    *out = buf;
    *len = total;
    return TPDB_OK;
}

static uint32_t tfStreamPage(size_t off, const uint32_t *chain, size_t n)
{
    if (off < TF_CAT_CHUNK0) {
        return 1;
    }
    size_t i = (off - TF_CAT_CHUNK0) / TF_CAT_CHUNK;
    return i < n ? chain[i] : (n > 0 ? chain[n - 1] : 1);
}

static int tfCatalogParse(struct tpdb_file *f,
                          struct tfCatalog *cat,
                          struct tfReader *r,
                          const uint32_t *chain,
                          size_t nchain)
{
    const char *what = "table";
    unsigned i = 0;
    int bad = 0;
    for (i = 0; i < cat->ntables && bad == 0; i++) {
        bad = tfTableParse(cat, r, &cat->tables[i]);
    }
    if (bad == 0) {
        what = "index";
        for (i = 0; i < cat->nindexes && bad == 0; i++) {
            bad = tfIndexParse(cat, r, &cat->indexes[i]);
        }
    }
    for (unsigned t = 0; t < cat->ntables && bad == 0; t++) {
        bad = tfDefaultsEval(cat, t) == TPDB_OK ? 0 : 2;
    }
    if (bad == 2) {
        tpdbErrf(f->errmsg, "%s: catalog: out of memory", f->name);
        return TPDB_NOMEM;
    }
    if (bad != 0) {
        tpdbErrf(f->errmsg,
                 "%s: page %u: catalog %s %u truncated at stream "
                 "offset %zu",
                 f->name, tfStreamPage(r->pos, chain, nchain), what, i - 1,
                 r->pos);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

static int tfCatalogCheck(struct tpdb_file *f, const struct tfCatalog *cat)
{
    for (unsigned i = 0; i < cat->ntables; i++) {
        const struct tpdb_table *t = &cat->tables[i];
        if (t->root < 2 || t->root > f->page_count ||
            t->pk_idx >= (int)t->ncols || t->pk_idx < -1) {
            tpdbErrf(f->errmsg,
                     "%s: page 1: catalog table %u (%s): root "
                     "page %u or pk_idx %d out of range",
                     f->name, i, t->name, t->root, t->pk_idx);
            return TPDB_CORRUPT;
        }
    }
    for (unsigned i = 0; i < cat->nindexes; i++) {
        const struct tpdb_index *x = &cat->indexes[i];
        if (x->root < 2 || x->root > f->page_count) {
            tpdbErrf(f->errmsg,
                     "%s: page 1: catalog index %u (%s): root "
                     "page %u out of range",
                     f->name, i, x->name, x->root);
            return TPDB_CORRUPT;
        }
    }
    return TPDB_OK;
}

int tfCatalogLoad(struct tpdb_file *f)
{
    uint8_t page1[TF_PAGE];
    struct tfCatalog cat = {0};
    uint8_t *stream = NULL;
    uint32_t *chain = NULL;
    size_t len = 0;
    size_t nchain = 0;
    int rc = tfPageRead(f, 1, page1);
    if (rc != TPDB_OK || (page1[0] == 0 && tpdbGet16(page1 + 1) == 0 &&
                          tpdbGet16(page1 + 7) == 0)) {
        goto out; /* a fresh file: page 1 never written */
    }
    if (page1[0] != TF_PT_CATALOG) {
        tpdbErrf(f->errmsg, "%s: page 1: not a catalog page (type %u)", f->name,
                 page1[0]);
        rc = TPDB_CORRUPT;
        goto out;
    }
    rc = tfStreamRead(f, page1, &stream, &len, &chain, &nchain);
    if (rc != TPDB_OK) {
        goto out;
    }
    cat.ntables = tpdbGet16(page1 + 1);
    cat.nindexes = tpdbGet16(page1 + 7);
    cat.tables = tpdb_calloc(cat.ntables + 1, sizeof *cat.tables);
    cat.indexes = tpdb_calloc(cat.nindexes + 1, sizeof *cat.indexes);
    cat.defaults = tpdb_calloc(cat.ntables + 1, sizeof *cat.defaults);
    if (cat.tables == NULL || cat.indexes == NULL || cat.defaults == NULL) {
        tpdbErrf(f->errmsg, "%s: catalog: out of memory", f->name);
        rc = TPDB_NOMEM;
        goto out;
    }
    struct tfReader r = {stream, len, 0, 0};
    rc = tfCatalogParse(f, &cat, &r, chain, nchain);
    if (rc == TPDB_OK) {
        rc = tfCatalogCheck(f, &cat);
    }
out:
    tpdb_free(stream);
    tpdb_free(chain);
    if (rc != TPDB_OK) {
        tfCatalogFree(&cat);
        return rc;
    }
    tfCatalogFree(&f->cat);
    f->cat = cat;
    return TPDB_OK;
}

/* ---- Store -------------------------------------------------------------- */

struct tfWriter {
    uint8_t *p;
    size_t len;
    size_t cap;
    int nomem;
};

static void tfPutBytes(struct tfWriter *w, const void *b, size_t n)
{
    if (w->nomem) {
        return;
    }
    if (w->cap - w->len < n) {
        size_t ncap = (w->cap + n) * 2;
        uint8_t *np = tpdb_realloc(w->p, ncap);
        if (np == NULL) {
            w->nomem = 1;
            return;
        }
        w->p = np;
        w->cap = ncap;
    }
    if (n > 0) {
        memcpy(w->p + w->len, b, n);
    }
    w->len += n;
}

static void tfPutUint(struct tfWriter *w, uint64_t v, size_t n)
{
    uint8_t b[8];
    tpdbPut64(b, v);
    tfPutBytes(w, b, n);
}

static void tfPutStr(struct tfWriter *w, const char *s, size_t lenw)
{
    size_t n = strlen(s);
    tfPutUint(w, n, lenw);
    tfPutBytes(w, s, n);
}

static void tfTableEncode(struct tfWriter *w, const struct tpdb_table *t)
{
    tfPutStr(w, t->name, 1);
    tfPutUint(w, t->root, 4);
    tfPutUint(w, t->ncols, 2);
    tfPutUint(w, (uint16_t)(int16_t)t->pk_idx, 2);
    tfPutUint(w, t->auto_pk != 0, 1);
    tfPutUint(w, (uint64_t)t->next_rowid, 8);
    for (unsigned i = 0; i < t->ncols; i++) {
        const struct tpdb_column *c = &t->cols[i];
        tfPutStr(w, c->name, 1);
        tfPutStr(w, c->type, 1);
        tfPutUint(w, c->not_null != 0, 1);
        tfPutUint(w, c->default_sql != NULL, 1);
        if (c->default_sql != NULL) {
            tfPutStr(w, c->default_sql, 2);
        }
    }
}

static void tfIndexEncode(struct tfWriter *w, const struct tpdb_index *x)
{
    tfPutStr(w, x->name, 1);
    tfPutStr(w, x->table, 1);
    tfPutUint(w, x->ncols, 1);
    for (unsigned i = 0; i < x->ncols; i++) {
        tfPutStr(w, x->cols[i], 1);
    }
    tfPutUint(w, x->root, 4);
    tfPutUint(w, x->unique != 0, 1);
}

/* Makes `chain` exactly `need` pages long: reuse, allocate, free surplus. */
static int tfChainResize(struct tpdb_file *f,
                         uint32_t **chain,
                         size_t *n,
                         size_t need)
{
    int rc = TPDB_OK;
    while (*n > need && rc == TPDB_OK) {
        rc = tfPageFree(f, (*chain)[--*n]);
    }
    if (*n < need && rc == TPDB_OK) {
        uint32_t *c = tpdb_realloc(*chain, need * sizeof *c);
        if (c == NULL) {
            tpdbErrf(f->errmsg, "%s: catalog: out of memory", f->name);
            return TPDB_NOMEM;
        }
        *chain = c;
    }
    while (*n < need && rc == TPDB_OK) {
        rc = tfPageAlloc(f, &(*chain)[*n]);
        *n += rc == TPDB_OK;
    }
    return rc;
}

static int tfStreamWrite(struct tpdb_file *f,
                         const struct tfWriter *w,
                         uint32_t *chain,
                         size_t nchain)
{
    uint8_t page[TF_PAGE];
    memset(page, 0, sizeof page);
    page[0] = TF_PT_CATALOG;
    tpdbPut16(page + 1, (uint16_t)f->cat.ntables);
    tpdbPut32(page + 3, nchain > 0 ? chain[0] : 0);
    tpdbPut16(page + 7, (uint16_t)f->cat.nindexes);
    size_t n = w->len < TF_CAT_CHUNK0 ? w->len : TF_CAT_CHUNK0;
    memcpy(page + 16, w->p, n);
    int rc = tfPageWrite(f, 1, page);
    size_t off = n;
    for (size_t i = 0; i < nchain && rc == TPDB_OK; i++) {
        memset(page, 0, sizeof page);
        tpdbPut32(page, i + 1 < nchain ? chain[i + 1] : 0);
        n = w->len - off < TF_CAT_CHUNK ? w->len - off : TF_CAT_CHUNK;
        memcpy(page + 4, w->p + off, n);
        off += n;
        rc = tfPageWrite(f, chain[i], page);
    }
    return rc;
}

int tfCatalogStore(struct tpdb_file *f)
{
    struct tfWriter w = {0};
    uint32_t *chain = NULL;
    size_t nchain = 0;
    for (unsigned i = 0; i < f->cat.ntables; i++) {
        tfTableEncode(&w, &f->cat.tables[i]);
    }
    for (unsigned i = 0; i < f->cat.nindexes; i++) {
        tfIndexEncode(&w, &f->cat.indexes[i]);
    }
    int rc = w.nomem ? TPDB_NOMEM : TPDB_OK;
    if (rc == TPDB_NOMEM) {
        tpdbErrf(f->errmsg, "%s: catalog: out of memory", f->name);
    }
    if (rc == TPDB_OK) {
        rc = tpdb_file_chain(f, TPDB_CHAIN_CATALOG, &chain, &nchain);
    }
    size_t need =
        w.len <= TF_CAT_CHUNK0
            ? 0
            : (w.len - TF_CAT_CHUNK0 + TF_CAT_CHUNK - 1) / TF_CAT_CHUNK;
    if (rc == TPDB_OK) {
        rc = tfChainResize(f, &chain, &nchain, need);
    }
    if (rc == TPDB_OK) {
        rc = tfStreamWrite(f, &w, chain, nchain);
    }
    tpdb_free(chain);
    tpdb_free(w.p);
    return rc;
}

/* ---- Lookup and additions ----------------------------------------------- */

int tfCatalogTableIdx(const struct tpdb_file *f, const char *name)
{
    for (unsigned i = 0; i < f->cat.ntables; i++) {
        if (strcmp(f->cat.tables[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static char *tfUpperDup(struct tfCatalog *cat, const char *s)
{
    char *p = tfArenaStr(cat, (const uint8_t *)s, strlen(s));
    for (char *q = p; q != NULL && *q != '\0'; q++) {
        if (*q >= 'a' && *q <= 'z') {
            *q = (char)(*q - 'a' + 'A');
        }
    }
    return p;
}

int tfCatalogAddTable(struct tpdb_file *f,
                      const char *name,
                      const struct tpdb_column *cols,
                      unsigned ncols,
                      int pk_idx,
                      uint32_t root)
{
    struct tfCatalog *cat = &f->cat;
    unsigned n = cat->ntables;
    struct tpdb_table *t = tpdb_realloc(cat->tables, (n + 1) * sizeof *t);
    if (t != NULL) {
        cat->tables = t;
    }
    struct tpdb_value **d =
        t == NULL ? NULL : tpdb_realloc(cat->defaults, (n + 1) * sizeof *d);
    if (d != NULL) {
        cat->defaults = d;
    }
    struct tpdb_column *c = tfArenaAlloc(cat, ncols * sizeof *c);
    struct tpdb_table *nt = t == NULL ? NULL : &t[n];
    int ok = d != NULL && c != NULL;
    if (ok) {
        memset(nt, 0, sizeof *nt);
        nt->name = tfArenaStr(cat, (const uint8_t *)name, strlen(name));
        ok = nt->name != NULL;
    }
    for (unsigned i = 0; ok && i < ncols; i++) {
        const char *dsql = cols[i].default_sql;
        c[i].name = tfArenaStr(cat, (const uint8_t *)cols[i].name,
                               strlen(cols[i].name));
        c[i].type = tfUpperDup(cat, cols[i].type == NULL ? "" : cols[i].type);
        c[i].not_null = cols[i].not_null != 0;
        c[i].default_sql =
            dsql == NULL ? NULL
                         : tfArenaStr(cat, (const uint8_t *)dsql, strlen(dsql));
        ok = c[i].name != NULL && c[i].type != NULL &&
             (dsql == NULL || c[i].default_sql != NULL);
    }
    if (!ok) {
        tpdbErrf(f->errmsg, "%s: create table %s: out of memory", f->name,
                 name);
        return TPDB_NOMEM;
    }
    nt->root = root;
    nt->next_rowid = 1;
    nt->pk_idx = pk_idx;
    nt->ncols = ncols;
    nt->cols = c;
    nt->auto_pk = pk_idx >= 0 && strstr(c[pk_idx].type, "INT") != NULL;
    cat->ntables = n + 1;
    if (tfDefaultsEval(cat, n) != TPDB_OK) {
        cat->ntables = n;
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    return TPDB_OK;
}

int tfCatalogAddIndex(struct tpdb_file *f,
                      const char *name,
                      const char *table,
                      const char *const *cols,
                      unsigned ncols,
                      uint32_t root,
                      int unique)
{
    struct tfCatalog *cat = &f->cat;
    unsigned n = cat->nindexes;
    struct tpdb_index *x = tpdb_realloc(cat->indexes, (n + 1) * sizeof *x);
    if (x == NULL) {
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    cat->indexes = x;
    const char **c = tfArenaAlloc(cat, ncols * sizeof *c);
    int ok = c != NULL;
    memset(&x[n], 0, sizeof x[n]);
    x[n].name = tfArenaStr(cat, (const uint8_t *)name, strlen(name));
    x[n].table = tfArenaStr(cat, (const uint8_t *)table, strlen(table));
    for (unsigned i = 0; ok && i < ncols; i++) {
        c[i] = tfArenaStr(cat, (const uint8_t *)cols[i], strlen(cols[i]));
        ok = c[i] != NULL;
    }
    if (!ok || x[n].name == NULL || x[n].table == NULL) {
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    x[n].ncols = ncols;
    x[n].cols = c;
    x[n].root = root;
    x[n].unique = unique != 0;
    cat->nindexes = n + 1;
    return TPDB_OK;
}

/* ---- Save and restore --------------------------------------------------- */

int tfCatalogSave(struct tpdb_file *f, struct tfCatSave *save)
{
    const struct tfCatalog *cat = &f->cat;
    tfCatalogSaveFree(save);
    save->troot = tpdb_malloc((cat->ntables + 1) * sizeof *save->troot);
    save->tnext = tpdb_malloc((cat->ntables + 1) * sizeof *save->tnext);
    save->iroot = tpdb_malloc((cat->nindexes + 1) * sizeof *save->iroot);
    if (save->troot == NULL || save->tnext == NULL || save->iroot == NULL) {
        tfCatalogSaveFree(save);
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    save->ntables = cat->ntables;
    save->nindexes = cat->nindexes;
    for (unsigned i = 0; i < cat->ntables; i++) {
        save->troot[i] = cat->tables[i].root;
        save->tnext[i] = cat->tables[i].next_rowid;
    }
    for (unsigned i = 0; i < cat->nindexes; i++) {
        save->iroot[i] = cat->indexes[i].root;
    }
    return TPDB_OK;
}

/* Tables and indexes added since the save are dropped from view; their
 * strings stay in the arena until the catalog is freed. */
void tfCatalogRestore(struct tpdb_file *f, const struct tfCatSave *save)
{
    struct tfCatalog *cat = &f->cat;
    if (save->troot == NULL) {
        return;
    }
    cat->ntables = save->ntables;
    cat->nindexes = save->nindexes;
    for (unsigned i = 0; i < cat->ntables; i++) {
        cat->tables[i].root = save->troot[i];
        cat->tables[i].next_rowid = save->tnext[i];
    }
    for (unsigned i = 0; i < cat->nindexes; i++) {
        cat->indexes[i].root = save->iroot[i];
    }
}

void tfCatalogSaveFree(struct tfCatSave *save)
{
    tpdb_free(save->troot);
    tpdb_free(save->tnext);
    tpdb_free(save->iroot);
    memset(save, 0, sizeof *save);
}

/* ---- Public accessors --------------------------------------------------- */

unsigned tpdb_file_table_count(const struct tpdb_file *f)
{
    return f->cat.ntables;
}

const struct tpdb_table *tpdb_file_table(const struct tpdb_file *f, unsigned i)
{
    return i < f->cat.ntables ? &f->cat.tables[i] : NULL;
}

const struct tpdb_table *tpdb_file_table_find(const struct tpdb_file *f,
                                              const char *name)
{
    int i = name == NULL ? -1 : tfCatalogTableIdx(f, name);
    return i < 0 ? NULL : &f->cat.tables[i];
}

unsigned tpdb_file_index_count(const struct tpdb_file *f)
{
    return f->cat.nindexes;
}

const struct tpdb_index *tpdb_file_index(const struct tpdb_file *f, unsigned i)
{
    return i < f->cat.nindexes ? &f->cat.indexes[i] : NULL;
}

const struct tpdb_index *tpdb_file_index_find(const struct tpdb_file *f,
                                              const char *name)
{
    for (unsigned i = 0; name != NULL && i < f->cat.nindexes; i++) {
        if (strcmp(f->cat.indexes[i].name, name) == 0) {
            return &f->cat.indexes[i];
        }
    }
    return NULL;
}
