/*
 * B+ tree pages and cursors of the native TPDB format.
 *
 * Leaf (0x02): cell_count u16 @1 | prev u32 @3 | next u32 @7 | free_end u16
 * @11 | pointers u16 @16, sorted by key; cell = key_size u16 | val_size u32
 * (bit 31: overflow) | key | value or first overflow page u32.
 * Interior (0x01): cell_count u16 @1 | rightmost u32 @3 | free_end u16 @7 |
 * pointers @16; cell = left_child u32 | key_size u16 | key. Keys equal to a
 * separator live to its right. Overflow (0x03): next u32 @1 | data @8.
 *
 * Cursors walk the tree with a stack of interior pages, never the leaf
 * sibling links, so a damaged link cannot loop; each positioning counts the
 * pages it enters and fails once it enters more than the file holds.
 */
#include <string.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

struct tpdb_cursor {
    struct tpdb_file *f;
    uint64_t gen;
    int is_index;
    uint32_t root;
    const struct tpdb_table *tab;
    const struct tpdb_value *defs;
    unsigned key_cols; /* index columns */
    int eof;
    int depth;
    uint32_t ipg[TF_MAX_DEPTH];
    unsigned ichild[TF_MAX_DEPTH];
    unsigned in[TF_MAX_DEPTH];
    uint32_t leaf_pg;
    unsigned idx;
    unsigned n;
    uint64_t visits;
    uint8_t *bound;
    size_t blen;
    uint8_t *val;
    size_t valcap;
    struct tpdb_value *vals;
    uint8_t leaf[TF_PAGE];
};

/* ---- Page checks -------------------------------------------------------- */

static int tfCellsCheck(struct tpdb_file *f,
                        uint32_t pgno,
                        const uint8_t *page,
                        int leaf)
{
    unsigned n = tpdbGet16(page + 1);
    size_t lo = 16 + 2 * (size_t)n;
    const uint8_t *prev = NULL;
    /* Key order is checked on pages from disk; the pages this handle wrote
     * (the dirty set) were built sorted, and the check costs a memcmp per
     * cell on every descent of a bulk load. Bounds are always checked. */
    int order = tfMapGet(&f->dirty, pgno) == NULL;
    size_t prevlen = 0;
    if (lo > TF_PAGE) {
        tpdbErrf(f->errmsg, "%s: page %u: cell count %u too large", f->name,
                 pgno, n);
        return TPDB_CORRUPT;
    }
    for (unsigned i = 0; i < n; i++) {
        size_t off = tpdbGet16(page + 16 + 2 * i);
        if (off < lo || off + 6 > TF_PAGE) {
            tpdbErrf(f->errmsg,
                     "%s: page %u: cell %u offset %zu out of "
                     "bounds",
                     f->name, pgno, i, off);
            return TPDB_CORRUPT;
        }
        size_t klen = tpdbGet16(page + off + (leaf ? 0 : 4));
        uint32_t v = leaf ? tpdbGet32(page + off + 2) : 0;
        size_t body = klen + (leaf ? ((v >> 31) ? 4 : v) : 0);
        if (TF_PAGE - off - 6 < body) {
            tpdbErrf(f->errmsg,
                     "%s: page %u: cell %u length %zu past page "
                     "end",
                     f->name, pgno, i, body + 6);
            return TPDB_CORRUPT;
        }
        const uint8_t *key = page + off + 6;
        if (order && prev != NULL && tfKeyCmp(prev, prevlen, key, klen) >= 0) {
            tpdbErrf(f->errmsg, "%s: page %u: cell %u key out of order",
                     f->name, pgno, i);
            return TPDB_CORRUPT;
        }
        prev = key;
        prevlen = klen;
    }
    return TPDB_OK;
}

int tfLeafCheck(struct tpdb_file *f, uint32_t pgno, const uint8_t *page)
{
    return tfCellsCheck(f, pgno, page, 1);
}

int tfInteriorCheck(struct tpdb_file *f, uint32_t pgno, const uint8_t *page)
{
    int rc = tfCellsCheck(f, pgno, page, 0);
    unsigned n = tpdbGet16(page + 1);
    for (unsigned i = 0; rc == TPDB_OK && i <= n; i++) {
        uint32_t child = tfInteriorChild(page, i);
        if (child < 2 || child > f->page_count || child == pgno) {
            tpdbErrf(f->errmsg, "%s: page %u: child %u page %u out of range",
                     f->name, pgno, i, child);
            rc = TPDB_CORRUPT;
        }
    }
    return rc;
}

void tfLeafCell(const uint8_t *page, unsigned i, struct tfCell *c)
{
    size_t off = tpdbGet16(page + 16 + 2 * i);
    uint32_t v = tpdbGet32(page + off + 2);
    c->klen = tpdbGet16(page + off);
    c->key = page + off + 6;
    if ((v >> 31) != 0) {
        c->vlen = v & 0x7FFFFFFFu;
        c->val = NULL;
        c->ovf = tpdbGet32(page + off + 6 + c->klen);
    } else {
        c->vlen = v;
        c->val = page + off + 6 + c->klen;
        c->ovf = 0;
    }
}

void tfInteriorCell(const uint8_t *page,
                    unsigned i,
                    uint32_t *child,
                    const uint8_t **key,
                    size_t *klen)
{
    size_t off = tpdbGet16(page + 16 + 2 * i);
    *child = tpdbGet32(page + off);
    *klen = tpdbGet16(page + off + 4);
    *key = page + off + 6;
}

uint32_t tfInteriorChild(const uint8_t *page, unsigned i)
{
    unsigned n = tpdbGet16(page + 1);
    if (i >= n) {
        return tpdbGet32(page + 3);
    }
    return tpdbGet32(page + tpdbGet16(page + 16 + 2 * i));
}

int tfOverflowRead(struct tpdb_file *f,
                   uint32_t pgno,
                   uint32_t first,
                   uint32_t vlen,
                   uint8_t *out)
{
    uint8_t page[TF_PAGE];
    uint32_t pg = first;
    size_t done = 0;
    while (done < vlen) {
        int rc = pg == 0 ? TPDB_CORRUPT : tfPageRead(f, pg, page);
        if (rc == TPDB_OK && (page[0] != TF_PT_OVF || pg == 1)) {
            rc = TPDB_CORRUPT;
        }
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg,
                     "%s: page %u: overflow chain of %u bytes "
                     "broken at page %u (%zu bytes read)",
                     f->name, pgno, vlen, pg, done);
            return rc == TPDB_IOERR ? rc : TPDB_CORRUPT;
        }
        size_t n = vlen - done < TF_OVF_DATA ? vlen - done : TF_OVF_DATA;
        memcpy(out + done, page + 8, n);
        done += n;
        pg = tpdbGet32(page + 1);
    }
    /* A chain that goes on past the value (a cycle, or a wrong length)
     * is corrupt. */
    if (pg != 0) {
        tpdbErrf(f->errmsg,
                 "%s: page %u: overflow chain of %u bytes does "
                 "not end (next page %u)",
                 f->name, pgno, vlen, pg);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

/* ---- Cursor movement ---------------------------------------------------- */

static int tfCursorCheck(struct tpdb_cursor *c)
{
    if (c->gen != c->f->gen) {
        tpdbErrf(c->f->errmsg, "%s: cursor used after a write", c->f->name);
        return TPDB_MISUSE;
    }
    return TPDB_OK;
}

/* Reads page pg as a tree page into buf; *leaf says which kind. */
static int tfNodeLoad(struct tpdb_cursor *c,
                      uint32_t pg,
                      uint8_t *buf,
                      int *leaf)
{
    struct tpdb_file *f = c->f;
    if (++c->visits > tfChainLimit(f)) {
        tpdbErrf(f->errmsg,
                 "%s: page %u: B+ tree visits more pages than the "
                 "file holds (cycle)",
                 f->name, pg);
        return TPDB_CORRUPT;
    }
    int rc = tfPageRead(f, pg, buf);
    if (rc != TPDB_OK) {
        return rc;
    }
    if (buf[0] == TF_PT_LEAF) {
        *leaf = 1;
        return tfLeafCheck(f, pg, buf);
    }
    if (buf[0] == TF_PT_INTERIOR) {
        *leaf = 0;
        return tfInteriorCheck(f, pg, buf);
    }
    tpdbErrf(f->errmsg, "%s: page %u: not a B+ tree page (type %u)", f->name,
             pg, buf[0]);
    return TPDB_CORRUPT;
}

enum { TF_GO_FIRST, TF_GO_LAST, TF_GO_GE, TF_GO_LE };

static unsigned tfChooseChild(const uint8_t *page,
                              int mode,
                              const uint8_t *key,
                              size_t klen)
{
    unsigned n = tpdbGet16(page + 1);
    if (mode == TF_GO_FIRST) {
        return 0;
    }
    if (mode == TF_GO_LAST) {
        return n;
    }
    for (unsigned i = 0; i < n; i++) {
        uint32_t child;
        const uint8_t *sk;
        size_t sklen;
        tfInteriorCell(page, i, &child, &sk, &sklen);
        int cmp = mode == TF_GO_GE ? tfKeyCmp(sk, sklen, key, klen)
                                   : tfKeyCmpPrefix(sk, sklen, key, klen);
        if (cmp > 0) {
            return i;
        }
    }
    return n;
}

/* Descends from pg to a leaf, pushing interior pages, and loads it. */
static int tfDescend(struct tpdb_cursor *c,
                     uint32_t pg,
                     int mode,
                     const uint8_t *key,
                     size_t klen)
{
    for (;;) {
        int leaf = 0;
        int rc = tfNodeLoad(c, pg, c->leaf, &leaf);
        if (rc != TPDB_OK) {
            return rc;
        }
        if (leaf) {
            c->leaf_pg = pg;
            c->n = tpdbGet16(c->leaf + 1);
            c->idx = mode == TF_GO_LAST && c->n > 0 ? c->n - 1 : 0;
            return TPDB_OK;
        }
        if (c->depth >= TF_MAX_DEPTH) {
            tpdbErrf(c->f->errmsg, "%s: page %u: B+ tree deeper than %d",
                     c->f->name, pg, TF_MAX_DEPTH);
            return TPDB_CORRUPT;
        }
        unsigned ch = tfChooseChild(c->leaf, mode, key, klen);
        c->ipg[c->depth] = pg;
        c->ichild[c->depth] = ch;
        c->in[c->depth] = tpdbGet16(c->leaf + 1);
        c->depth++;
        pg = tfInteriorChild(c->leaf, ch);
    }
}

/* Moves to the next (dir 1) or previous (dir -1) non-empty leaf. */
static int tfLeafStep(struct tpdb_cursor *c, int dir)
{
    uint8_t page[TF_PAGE];
    while (c->depth > 0) {
        int lv = c->depth - 1;
        int more = dir > 0 ? c->ichild[lv] < c->in[lv] : c->ichild[lv] > 0;
        if (!more) {
            c->depth--;
            continue;
        }
        int rc = tfPageRead(c->f, c->ipg[lv], page);
        if (rc != TPDB_OK) {
            return rc;
        }
        c->ichild[lv] = dir > 0 ? c->ichild[lv] + 1 : c->ichild[lv] - 1;
        rc = tfDescend(c, tfInteriorChild(page, c->ichild[lv]),
                       dir > 0 ? TF_GO_FIRST : TF_GO_LAST, NULL, 0);
        if (rc != TPDB_OK) {
            return rc;
        }
        if (c->n > 0) {
            return TPDB_OK;
        }
    }
    c->eof = 1;
    return TPDB_OK;
}

static void tfCurKey(const struct tpdb_cursor *c,
                     const uint8_t **key,
                     size_t *klen)
{
    struct tfCell cell;
    tfLeafCell(c->leaf, c->idx, &cell);
    *key = cell.key;
    *klen = cell.klen;
}

/* Checks the current entry's key shape and the EQ prefix bound. */
static int tfCurSettle(struct tpdb_cursor *c)
{
    const uint8_t *key;
    size_t klen;
    if (c->eof) {
        return TPDB_OK;
    }
    tfCurKey(c, &key, &klen);
    if ((c->is_index && klen < 8) || (!c->is_index && klen != 8)) {
        tpdbErrf(c->f->errmsg, "%s: page %u: cell %u key of %zu bytes",
                 c->f->name, c->leaf_pg, c->idx, klen);
        return TPDB_CORRUPT;
    }
    if (c->bound != NULL && tfKeyCmpPrefix(key, klen, c->bound, c->blen)) {
        c->eof = 1;
    }
    return TPDB_OK;
}

static int tfStart(struct tpdb_cursor *c,
                   int mode,
                   const uint8_t *key,
                   size_t klen)
{
    int rc = tfCursorCheck(c);
    if (rc != TPDB_OK) {
        return rc;
    }
    c->depth = 0;
    c->visits = 0;
    c->eof = 0;
    rc = tfDescend(c, c->root, mode, key, klen);
    if (rc != TPDB_OK) {
        c->eof = 1;
    }
    return rc;
}

static int tfStepped(struct tpdb_cursor *c, int rc)
{
    if (rc == TPDB_OK) {
        rc = tfCurSettle(c);
    }
    if (rc != TPDB_OK) {
        c->eof = 1;
    }
    return rc;
}

int tpdb_cursor_first(struct tpdb_cursor *c)
{
    tpdb_free(c->bound);
    c->bound = NULL;
    int rc = tfStart(c, TF_GO_FIRST, NULL, 0);
    if (rc == TPDB_OK && c->n == 0) {
        rc = tfLeafStep(c, 1);
    }
    return tfStepped(c, rc);
}

int tpdb_cursor_last(struct tpdb_cursor *c)
{
    tpdb_free(c->bound);
    c->bound = NULL;
    int rc = tfStart(c, TF_GO_LAST, NULL, 0);
    if (rc == TPDB_OK && c->n == 0) {
        rc = tfLeafStep(c, -1);
    }
    return tfStepped(c, rc);
}

int tpdb_cursor_next(struct tpdb_cursor *c)
{
    int rc = tfCursorCheck(c);
    if (rc != TPDB_OK || c->eof) {
        return rc;
    }
    if (c->idx + 1 < c->n) {
        c->idx++;
    } else {
        rc = tfLeafStep(c, 1);
    }
    return tfStepped(c, rc);
}

int tpdb_cursor_prev(struct tpdb_cursor *c)
{
    int rc = tfCursorCheck(c);
    if (rc != TPDB_OK || c->eof) {
        return rc;
    }
    if (c->idx > 0) {
        c->idx--;
    } else {
        rc = tfLeafStep(c, -1);
    }
    return tfStepped(c, rc);
}

int tpdb_cursor_eof(const struct tpdb_cursor *c)
{
    return c->eof;
}

/* Compares cell i of the current leaf with the seek key (prefix rule). */
static int tfCellCmp(struct tpdb_cursor *c,
                     unsigned i,
                     const uint8_t *key,
                     size_t klen)
{
    struct tfCell cell;
    tfLeafCell(c->leaf, i, &cell);
    return tfKeyCmpPrefix(cell.key, cell.klen, key, klen);
}

/* Positions for GE (first key >= prefix) or LE (last key <= prefix). */
static int tfSeek(struct tpdb_cursor *c,
                  int op,
                  const uint8_t *key,
                  size_t klen)
{
    int ge = op != TPDB_SEEK_LE;
    int rc = tfStart(c, ge ? TF_GO_GE : TF_GO_LE, key, klen);
    if (rc != TPDB_OK) {
        return rc;
    }
    unsigned i = 0;
    if (ge) {
        while (i < c->n && tfCellCmp(c, i, key, klen) < 0) {
            i++;
        }
    } else {
        i = c->n;
        while (i > 0 && tfCellCmp(c, i - 1, key, klen) > 0) {
            i--;
        }
    }
    if (ge && i < c->n) {
        c->idx = i;
    } else if (!ge && i > 0) {
        c->idx = i - 1;
    } else {
        rc = tfLeafStep(c, ge ? 1 : -1);
    }
    if (rc == TPDB_OK && !c->eof && op == TPDB_SEEK_EQ) {
        c->eof = tfCellCmp(c, c->idx, key, klen) != 0;
    }
    return tfStepped(c, rc);
}

int tpdb_cursor_seek_rowid(struct tpdb_cursor *c, int op, int64_t rowid)
{
    uint8_t key[8];
    tpdb_free(c->bound);
    c->bound = NULL;
    if (c->is_index || op < TPDB_SEEK_EQ || op > TPDB_SEEK_LE) {
        tpdbErrf(c->f->errmsg, "%s: bad rowid seek", c->f->name);
        return TPDB_MISUSE;
    }
    tfRowidKey(rowid, key);
    return tfSeek(c, op, key, sizeof key);
}

int tpdb_cursor_seek_index(struct tpdb_cursor *c,
                           int op,
                           const struct tpdb_value *vals,
                           unsigned n)
{
    uint8_t key[TF_PAGE];
    size_t klen = 0;
    int rc = TPDB_OK;
    tpdb_free(c->bound);
    c->bound = NULL;
    if (!c->is_index || op < TPDB_SEEK_EQ || op > TPDB_SEEK_LE) {
        tpdbErrf(c->f->errmsg, "%s: bad index seek", c->f->name);
        return TPDB_MISUSE;
    }
    for (unsigned i = 0; i < n && rc == TPDB_OK; i++) {
        rc = i < c->key_cols
                 ? tfIndexKeyAppend(&vals[i], key, sizeof key, &klen)
                 : TPDB_INVALID;
    }
    if (rc != TPDB_OK) {
        tpdbErrf(c->f->errmsg,
                 "%s: index seek: key values not INTEGER/TEXT "
                 "or too many",
                 c->f->name);
        return TPDB_INVALID;
    }
    rc = tfSeek(c, op, key, klen);
    if (rc == TPDB_OK && op == TPDB_SEEK_EQ && !c->eof) {
        c->bound = tpdb_malloc(klen + 1);
        if (c->bound == NULL) {
            c->eof = 1;
            tpdbErrf(c->f->errmsg, "%s: out of memory", c->f->name);
            return TPDB_NOMEM;
        }
        memcpy(c->bound, key, klen);
        c->blen = klen;
    }
    return rc;
}

/* ---- Entry access ------------------------------------------------------- */

int tpdb_cursor_key(struct tpdb_cursor *c, const uint8_t **key, size_t *len)
{
    int rc = tfCursorCheck(c);
    if (rc == TPDB_OK && c->eof) {
        tpdbErrf(c->f->errmsg, "%s: cursor at EOF", c->f->name);
        rc = TPDB_MISUSE;
    }
    if (rc == TPDB_OK) {
        tfCurKey(c, key, len);
    }
    return rc;
}

int tpdb_cursor_rowid(struct tpdb_cursor *c, int64_t *rowid)
{
    const uint8_t *key;
    size_t klen;
    int rc = tpdb_cursor_key(c, &key, &klen);
    if (rc == TPDB_OK) {
        *rowid = tfRowidFromKey(key + klen - 8);
    }
    return rc;
}

/* The current cell's value bytes, assembling an overflow chain. */
static int tfCurValue(struct tpdb_cursor *c, const uint8_t **val, size_t *vlen)
{
    struct tfCell cell;
    tfLeafCell(c->leaf, c->idx, &cell);
    *vlen = cell.vlen;
    if (cell.ovf == 0) {
        *val = cell.val;
        return TPDB_OK;
    }
    uint64_t most = tfChainLimit(c->f) * TF_OVF_DATA;
    if (cell.vlen > most) {
        tpdbErrf(c->f->errmsg,
                 "%s: page %u: cell %u overflow length %u "
                 "larger than the file",
                 c->f->name, c->leaf_pg, c->idx, cell.vlen);
        return TPDB_CORRUPT;
    }
    if (c->valcap < cell.vlen) {
        uint8_t *nv = tpdb_realloc(c->val, cell.vlen);
        if (nv == NULL) {
            tpdbErrf(c->f->errmsg, "%s: out of memory", c->f->name);
            return TPDB_NOMEM;
        }
        c->val = nv;
        c->valcap = cell.vlen;
    }
    *val = c->val;
    return tfOverflowRead(c->f, c->leaf_pg, cell.ovf, cell.vlen, c->val);
}

int tpdb_cursor_row(struct tpdb_cursor *c,
                    const struct tpdb_value **vals,
                    unsigned *ncols,
                    unsigned *stored)
{
    const uint8_t *val = NULL;
    size_t vlen = 0;
    char msg[TPDB_ERRMSG_SIZE];
    int rc = tfCursorCheck(c);
    if (rc == TPDB_OK && (c->eof || c->is_index)) {
        tpdbErrf(c->f->errmsg, "%s: no row at cursor", c->f->name);
        rc = TPDB_MISUSE;
    }
    if (rc == TPDB_OK) {
        rc = tfCurValue(c, &val, &vlen);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tfRowDecode(val, vlen, c->tab->ncols, c->defs, c->vals, stored, msg);
    if (rc != TPDB_OK) {
        tpdbErrf(c->f->errmsg, "%s: page %u: cell %u: %s", c->f->name,
                 c->leaf_pg, c->idx, msg);
        return rc;
    }
    *vals = c->vals;
    *ncols = c->tab->ncols;
    return TPDB_OK;
}

/* ---- Open / close ------------------------------------------------------- */

static int tfCursorNew(struct tpdb_file *f,
                       uint32_t root,
                       unsigned nvals,
                       struct tpdb_cursor **out)
{
    struct tpdb_cursor *c = tpdb_calloc(1, sizeof *c);
    if (c != NULL) {
        c->vals = tpdb_calloc(nvals + 1, sizeof *c->vals);
    }
    if (c == NULL || c->vals == NULL) {
        tpdb_free(c);
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    c->f = f;
    c->gen = f->gen;
    c->root = root;
    c->eof = 1;
    *out = c;
    return TPDB_OK;
}

int tpdb_cursor_open_table(struct tpdb_file *f,
                           const char *table,
                           struct tpdb_cursor **out)
{
    int t = table == NULL ? -1 : tfCatalogTableIdx(f, table);
    *out = NULL;
    if (t < 0) {
        tpdbErrf(f->errmsg, "%s: no such table: %s", f->name,
                 table == NULL ? "(null)" : table);
        return TPDB_NOTFOUND;
    }
    const struct tpdb_table *tb = &f->cat.tables[t];
    int rc = tfCursorNew(f, tb->root, tb->ncols, out);
    if (rc == TPDB_OK) {
        (*out)->tab = tb;
        (*out)->defs = f->cat.defaults[t];
    }
    return rc;
}

int tpdb_cursor_open_index(struct tpdb_file *f,
                           const char *index,
                           struct tpdb_cursor **out)
{
    const struct tpdb_index *x = tpdb_file_index_find(f, index);
    *out = NULL;
    if (x == NULL) {
        tpdbErrf(f->errmsg, "%s: no such index: %s", f->name,
                 index == NULL ? "(null)" : index);
        return TPDB_NOTFOUND;
    }
    int rc = tfCursorNew(f, x->root, 0, out);
    if (rc == TPDB_OK) {
        (*out)->is_index = 1;
        (*out)->key_cols = x->ncols;
    }
    return rc;
}

void tpdb_cursor_close(struct tpdb_cursor *c)
{
    if (c == NULL) {
        return;
    }
    tpdb_free(c->bound);
    tpdb_free(c->val);
    tpdb_free(c->vals);
    tpdb_free(c);
}

/* ---- Internal access for the writer ------------------------------------ */

int tfCursorOpenRoot(struct tpdb_file *f,
                     uint32_t root,
                     int is_index,
                     struct tpdb_cursor **out)
{
    int rc = tfCursorNew(f, root, 0, out);
    if (rc == TPDB_OK) {
        (*out)->is_index = is_index;
    }
    return rc;
}

int tfCursorSeekKey(struct tpdb_cursor *c,
                    int op,
                    const uint8_t *key,
                    size_t klen)
{
    tpdb_free(c->bound);
    c->bound = NULL;
    return tfSeek(c, op, key, klen);
}

int tfCursorValue(struct tpdb_cursor *c, const uint8_t **val, size_t *vlen)
{
    return tfCurValue(c, val, vlen);
}
