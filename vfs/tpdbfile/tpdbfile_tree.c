/*
 * B+ tree modification for the native TPDB format: insert with splits by
 * bytes (never by count, unlike TrashPandaDB's defect B1), delete with the
 * leaf repacked, overflow chains written and freed. Every page is rebuilt
 * whole from a cell list, so free_end is always exact and cells never meet
 * the pointer array. Leaves are not merged (as TrashPandaDB); a root split
 * allocates a new root and reports it to the caller.
 */
#include <string.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

/* A cell being placed: key, and for leaves the inline value or overflow
 * head; for interiors the left child. */
struct tfNCell {
    const uint8_t *key;
    size_t klen;
    const uint8_t *val;
    uint32_t vlen;
    uint32_t ovf;
    uint32_t child;
};

struct tfPath {
    int depth;
    uint32_t pg[TF_MAX_DEPTH + 1];
    unsigned ci[TF_MAX_DEPTH + 1];
};

#define TF_ROOM (TF_PAGE - 16)

static size_t tfCellSize(const struct tfNCell *c, int leaf)
{
    if (!leaf) {
        return 6 + c->klen;
    }
    return 6 + c->klen + (c->ovf != 0 ? 4 : c->vlen);
}

/* Serialises cells into a fresh page image; the caller checked the fit. */
static void tfNodeBuild(uint8_t *page,
                        int leaf,
                        const struct tfNCell *cells,
                        unsigned n,
                        uint32_t a,
                        uint32_t b)
{
    size_t end = TF_PAGE;
    memset(page, 0, TF_PAGE);
    page[0] = leaf ? TF_PT_LEAF : TF_PT_INTERIOR;
    tpdbPut16(page + 1, (uint16_t)n);
    tpdbPut32(page + 3, a); /* prev leaf, or rightmost child */
    for (unsigned i = 0; i < n; i++) {
        const struct tfNCell *c = &cells[i];
        end -= tfCellSize(c, leaf);
        uint8_t *p = page + end;
        if (leaf) {
            tpdbPut16(p, (uint16_t)c->klen);
            tpdbPut32(p + 2, c->ovf != 0 ? (c->vlen | 0x80000000u) : c->vlen);
            memcpy(p + 6, c->key, c->klen);
            if (c->ovf != 0) {
                tpdbPut32(p + 6 + c->klen, c->ovf);
            } else if (c->vlen > 0) {
                memcpy(p + 6 + c->klen, c->val, c->vlen);
            }
        } else {
            tpdbPut32(p, c->child);
            tpdbPut16(p + 4, (uint16_t)c->klen);
            memcpy(p + 6, c->key, c->klen);
        }
        tpdbPut16(page + 16 + 2 * i, (uint16_t)end);
    }
    if (leaf) {
        tpdbPut32(page + 7, b);
        tpdbPut16(page + 11, (uint16_t)(end == TF_PAGE ? TF_PAGE : end));
    } else {
        tpdbPut16(page + 7, (uint16_t)end);
    }
}

static size_t tfCellsBytes(const struct tfNCell *c, unsigned n, int leaf)
{
    size_t s = 0;
    for (unsigned i = 0; i < n; i++) {
        s += tfCellSize(&c[i], leaf) + 2;
    }
    return s;
}

/* Loads a page's cells into a tpdb_malloc'd array with `extra` spare
 * slots; cell pointers refer into `page`. */
static int tfCellsLoad(struct tpdb_file *f,
                       const uint8_t *page,
                       int leaf,
                       unsigned extra,
                       struct tfNCell **out,
                       unsigned *n)
{
    *n = tpdbGet16(page + 1);
    *out = tpdb_calloc(*n + extra, sizeof **out);
    if (*out == NULL) {
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    for (unsigned i = 0; i < *n; i++) {
        struct tfNCell *c = &(*out)[i];
        if (leaf) {
            struct tfCell lc;
            tfLeafCell(page, i, &lc);
            c->key = lc.key;
            c->klen = lc.klen;
            c->val = lc.val;
            c->vlen = lc.vlen;
            c->ovf = lc.ovf;
        } else {
            tfInteriorCell(page, i, &c->child, &c->key, &c->klen);
        }
    }
    return TPDB_OK;
}

/* Reads a tree page and checks it; *leaf tells its kind. */
static int tfNodeRead(struct tpdb_file *f,
                      uint32_t pg,
                      uint8_t *page,
                      int *leaf)
{
    int rc = tfPageRead(f, pg, page);
    if (rc != TPDB_OK) {
        return rc;
    }
    *leaf = page[0] == TF_PT_LEAF;
    if (page[0] == TF_PT_LEAF) {
        return tfLeafCheck(f, pg, page);
    }
    if (page[0] == TF_PT_INTERIOR) {
        return tfInteriorCheck(f, pg, page);
    }
    tpdbErrf(f->errmsg, "%s: page %u: not a B+ tree page (type %u)", f->name,
             pg, page[0]);
    return TPDB_CORRUPT;
}

/* Descends to the leaf for key, filling the path; page gets the leaf. */
static int tfPathFind(struct tpdb_file *f,
                      uint32_t root,
                      const uint8_t *key,
                      size_t klen,
                      struct tfPath *path,
                      uint8_t *page)
{
    uint32_t pg = root;
    path->depth = 0;
    for (;;) {
        int leaf = 0;
        int rc = tfNodeRead(f, pg, page, &leaf);
        if (rc != TPDB_OK) {
            return rc;
        }
        path->pg[path->depth] = pg;
        if (leaf) {
            return TPDB_OK;
        }
        if (path->depth >= TF_MAX_DEPTH) {
            tpdbErrf(f->errmsg, "%s: page %u: B+ tree too deep", f->name, pg);
            return TPDB_CORRUPT;
        }
        unsigned n = tpdbGet16(page + 1);
        unsigned i = 0;
        for (; i < n; i++) {
            uint32_t child;
            const uint8_t *sk;
            size_t sklen;
            tfInteriorCell(page, i, &child, &sk, &sklen);
            if (tfKeyCmp(sk, sklen, key, klen) > 0) {
                break;
            }
        }
        path->ci[path->depth++] = i;
        pg = tfInteriorChild(page, i);
    }
}

/* ---- Overflow chains ---------------------------------------------------- */

static int tfOverflowWrite(struct tpdb_file *f,
                           const uint8_t *val,
                           size_t vlen,
                           uint32_t *first)
{
    uint8_t page[TF_PAGE];
    size_t npages = (vlen + TF_OVF_DATA - 1) / TF_OVF_DATA;
    uint32_t *pgs = tpdb_malloc(npages * sizeof *pgs);
    int rc = pgs == NULL ? TPDB_NOMEM : TPDB_OK;
    for (size_t i = 0; i < npages && rc == TPDB_OK; i++) {
        rc = tfPageAlloc(f, &pgs[i]);
    }
    for (size_t i = 0; i < npages && rc == TPDB_OK; i++) {
        size_t off = i * TF_OVF_DATA;
        size_t n = vlen - off < TF_OVF_DATA ? vlen - off : TF_OVF_DATA;
        memset(page, 0, sizeof page);
        page[0] = TF_PT_OVF;
        tpdbPut32(page + 1, i + 1 < npages ? pgs[i + 1] : 0);
        memcpy(page + 8, val + off, n);
        rc = tfPageWrite(f, pgs[i], page);
    }
    if (rc == TPDB_OK) {
        *first = pgs[0];
    } else if (rc == TPDB_NOMEM) {
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
    }
    tpdb_free(pgs);
    return rc;
}

static int tfOverflowFree(struct tpdb_file *f, uint32_t first, uint32_t vlen)
{
    uint8_t page[TF_PAGE];
    size_t npages = ((size_t)vlen + TF_OVF_DATA - 1) / TF_OVF_DATA;
    uint32_t pg = first;
    for (size_t i = 0; i < npages; i++) {
        int rc = pg == 0 ? TPDB_CORRUPT : tfPageRead(f, pg, page);
        if (rc == TPDB_OK && page[0] != TF_PT_OVF) {
            rc = TPDB_CORRUPT;
        }
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg, "%s: page %u: broken overflow chain", f->name,
                     pg);
            return rc;
        }
        uint32_t next = tpdbGet32(page + 1);
        rc = tfPageFree(f, pg);
        if (rc != TPDB_OK) {
            return rc;
        }
        pg = next;
    }
    return TPDB_OK;
}

/* ---- Splitting ---------------------------------------------------------- */

/* Splits cells into consecutive groups that each fit a page: the most
 * balanced two-way split if one exists, else greedy packing. starts[] gets
 * each group's first cell; returns the group count (at most 3 here). */
static unsigned tfLeafGroups(const struct tfNCell *c,
                             unsigned n,
                             unsigned *starts)
{
    size_t total = tfCellsBytes(c, n, 1);
    size_t left = 0;
    size_t best = SIZE_MAX;
    unsigned split = 0;
    for (unsigned s = 1; s < n; s++) {
        left += tfCellSize(&c[s - 1], 1) + 2;
        size_t worst = left > total - left ? left : total - left;
        if (left <= TF_ROOM && total - left <= TF_ROOM && worst < best) {
            best = worst;
            split = s;
        }
    }
    starts[0] = 0;
    if (split != 0) {
        starts[1] = split;
        return 2;
    }
    unsigned g = 1;
    size_t used = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t sz = tfCellSize(&c[i], 1) + 2;
        if (used + sz > TF_ROOM && g < 3) {
            starts[g++] = i;
            used = 0;
        }
        used += sz;
    }
    return g;
}

/* Where an overfull interior node splits: the key moving up, chosen so
 * both halves fit and are as even as possible. */
static unsigned tfInteriorSplit(const struct tfNCell *c, unsigned n)
{
    size_t total = tfCellsBytes(c, n, 0);
    size_t left = 0;
    size_t best = SIZE_MAX;
    unsigned mid = n / 2;
    for (unsigned m = 1; m + 1 < n; m++) {
        left += tfCellSize(&c[m - 1], 0) + 2;
        size_t right = total - left - (tfCellSize(&c[m], 0) + 2);
        size_t worst = left > right ? left : right;
        if (left <= TF_ROOM && right <= TF_ROOM && worst < best) {
            best = worst;
            mid = m;
        }
    }
    return mid;
}

/* Separators pushed to the parent: key copies and their right pages. */
struct tfUp {
    unsigned n;
    uint8_t *key[2];
    size_t klen[2];
    uint32_t pg[2];
};

static void tfUpFree(struct tfUp *up)
{
    for (unsigned i = 0; i < up->n; i++) {
        tpdb_free(up->key[i]);
    }
    up->n = 0;
}

static int tfUpAdd(struct tpdb_file *f,
                   struct tfUp *up,
                   const uint8_t *key,
                   size_t klen,
                   uint32_t pg)
{
    up->key[up->n] = tpdb_malloc(klen + 1);
    if (up->key[up->n] == NULL) {
        tpdbErrf(f->errmsg, "%s: out of memory", f->name);
        return TPDB_NOMEM;
    }
    memcpy(up->key[up->n], key, klen);
    up->klen[up->n] = klen;
    up->pg[up->n] = pg;
    up->n++;
    return TPDB_OK;
}

/* Patches the prev link of leaf pg (the old right sibling). */
static int tfLeafSetPrev(struct tpdb_file *f, uint32_t pg, uint32_t prev)
{
    uint8_t page[TF_PAGE];
    int leaf = 0;
    int rc = tfNodeRead(f, pg, page, &leaf);
    if (rc == TPDB_OK && !leaf) {
        tpdbErrf(f->errmsg, "%s: page %u: leaf sibling is not a leaf", f->name,
                 pg);
        rc = TPDB_CORRUPT;
    }
    if (rc == TPDB_OK) {
        tpdbPut32(page + 3, prev);
        rc = tfPageWrite(f, pg, page);
    }
    return rc;
}

/* Writes leaf cells to pg, splitting into new pages as needed. */
static int tfLeafStore(struct tpdb_file *f,
                       uint32_t pg,
                       const uint8_t *old,
                       struct tfNCell *c,
                       unsigned n,
                       struct tfUp *up)
{
    uint8_t page[TF_PAGE];
    unsigned starts[4];
    uint32_t pgs[3] = {pg, 0, 0};
    uint32_t prev = tpdbGet32(old + 3);
    uint32_t next = tpdbGet32(old + 7);
    unsigned g = 1;
    starts[0] = 0;
    if (16 + tfCellsBytes(c, n, 1) > TF_PAGE) {
        g = tfLeafGroups(c, n, starts);
    }
    starts[g] = n;
    int rc = TPDB_OK;
    for (unsigned i = 1; i < g && rc == TPDB_OK; i++) {
        rc = tfPageAlloc(f, &pgs[i]);
        if (rc == TPDB_OK) {
            rc = tfUpAdd(f, up, c[starts[i]].key, c[starts[i]].klen, pgs[i]);
        }
    }
    for (unsigned i = 0; i < g && rc == TPDB_OK; i++) {
        tfNodeBuild(page, 1, c + starts[i], starts[i + 1] - starts[i],
                    i == 0 ? prev : pgs[i - 1], i + 1 < g ? pgs[i + 1] : next);
        rc = tfPageWrite(f, pgs[i], page);
    }
    if (rc == TPDB_OK && g > 1 && next != 0) {
        rc = tfLeafSetPrev(f, next, pgs[g - 1]);
    }
    return rc;
}

/* Inserts the separators of `up` after child ci of interior page pg; on a
 * split `up` is replaced by this level's separator. */
static int tfInteriorInsert(struct tpdb_file *f,
                            uint32_t pg,
                            unsigned ci,
                            struct tfUp *up)
{
    uint8_t old[TF_PAGE];
    uint8_t page[TF_PAGE];
    struct tfNCell *c = NULL;
    unsigned n = 0;
    struct tfUp next = {0};
    int rc = tfPageRead(f, pg, old);
    if (rc == TPDB_OK) {
        rc = tfCellsLoad(f, old, 0, up->n + 1, &c, &n);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    /* Children C[0..n], keys K[0..n): cell i = (C[i], K[i]); rightmost
     * C[n]. New child up->pg[j] goes right of key up->key[j]. */
    c[n].child = tpdbGet32(old + 3);
    memmove(&c[ci + up->n], &c[ci], (n + 1 - ci) * sizeof *c);
    uint32_t right = c[ci + up->n].child;
    for (unsigned j = 0; j < up->n; j++) {
        c[ci + j].key = up->key[j];
        c[ci + j].klen = up->klen[j];
        c[ci + j].child = j == 0 ? right : up->pg[j - 1];
    }
    c[ci + up->n].child = up->pg[up->n - 1];
    n += up->n;
    if (16 + tfCellsBytes(c, n, 0) <= TF_PAGE) {
        tfNodeBuild(page, 0, c, n, c[n].child, 0);
        rc = tfPageWrite(f, pg, page);
        tfUpFree(up);
        tpdb_free(c);
        return rc;
    }
    unsigned m = tfInteriorSplit(c, n);
    uint32_t npg = 0;
    rc = tfPageAlloc(f, &npg);
    if (rc == TPDB_OK) {
        rc = tfUpAdd(f, &next, c[m].key, c[m].klen, npg);
    }
    if (rc == TPDB_OK) {
        tfNodeBuild(page, 0, c, m, c[m].child, 0);
        rc = tfPageWrite(f, pg, page);
    }
    if (rc == TPDB_OK) {
        tfNodeBuild(page, 0, c + m + 1, n - m - 1, c[n].child, 0);
        rc = tfPageWrite(f, npg, page);
    }
    tpdb_free(c);
    tfUpFree(up);
    *up = next;
    return rc;
}

/* A new root over the old one and the separators in `up`. */
static int tfNewRoot(struct tpdb_file *f, uint32_t *root, struct tfUp *up)
{
    uint8_t page[TF_PAGE];
    struct tfNCell c[2];
    uint32_t pg = 0;
    int rc = tfPageAlloc(f, &pg);
    if (rc != TPDB_OK) {
        return rc;
    }
    for (unsigned j = 0; j < up->n; j++) {
        c[j].key = up->key[j];
        c[j].klen = up->klen[j];
        c[j].child = j == 0 ? *root : up->pg[j - 1];
    }
    tfNodeBuild(page, 0, c, up->n, up->pg[up->n - 1], 0);
    rc = tfPageWrite(f, pg, page);
    if (rc == TPDB_OK) {
        *root = pg;
    }
    return rc;
}

static int tfLeafInsert(struct tpdb_file *f,
                        uint32_t pg,
                        const uint8_t *old,
                        struct tfNCell *cell,
                        struct tfUp *up)
{
    struct tfNCell *c = NULL;
    unsigned n = 0;
    int rc = tfCellsLoad(f, old, 1, 1, &c, &n);
    if (rc != TPDB_OK) {
        return rc;
    }
    unsigned pos = 0;
    while (pos < n &&
           tfKeyCmp(c[pos].key, c[pos].klen, cell->key, cell->klen) < 0) {
        pos++;
    }
    if (pos < n &&
        tfKeyCmp(c[pos].key, c[pos].klen, cell->key, cell->klen) == 0) {
        tpdbErrf(f->errmsg, "%s: duplicate key", f->name);
        tpdb_free(c);
        return TPDB_INVALID;
    }
    memmove(&c[pos + 1], &c[pos], (n - pos) * sizeof *c);
    c[pos] = *cell;
    rc = tfLeafStore(f, pg, old, c, n + 1, up);
    tpdb_free(c);
    return rc;
}

int tfTreeInsert(struct tpdb_file *f,
                 uint32_t *root,
                 const uint8_t *key,
                 size_t klen,
                 const uint8_t *val,
                 size_t vlen)
{
    uint8_t leaf[TF_PAGE];
    struct tfPath path;
    struct tfUp up = {0};
    struct tfNCell cell = {key, klen, val, (uint32_t)vlen, 0, 0};
    if (klen > TF_MAX_INDEX_KEY + 8 || vlen > 0x7FFFFFFF) {
        tpdbErrf(f->errmsg, "%s: key or value too large", f->name);
        return TPDB_TOOBIG;
    }
    int rc = tfPathFind(f, *root, key, klen, &path, leaf);
    if (rc == TPDB_OK && 6 + klen + vlen > TF_PAGE - 16 - 2) {
        rc = tfOverflowWrite(f, val, vlen, &cell.ovf);
    }
    if (rc == TPDB_OK) {
        rc = tfLeafInsert(f, path.pg[path.depth], leaf, &cell, &up);
    }
    for (int d = path.depth - 1; rc == TPDB_OK && up.n > 0 && d >= 0; d--) {
        rc = tfInteriorInsert(f, path.pg[d], path.ci[d], &up);
    }
    if (rc == TPDB_OK && up.n > 0) {
        rc = tfNewRoot(f, root, &up);
    }
    tfUpFree(&up);
    return rc;
}

int tfTreeDelete(struct tpdb_file *f,
                 uint32_t root,
                 const uint8_t *key,
                 size_t klen,
                 int *found)
{
    uint8_t leaf[TF_PAGE];
    struct tfPath path;
    struct tfNCell *c = NULL;
    unsigned n = 0;
    struct tfUp up = {0};
    *found = 0;
    int rc = tfPathFind(f, root, key, klen, &path, leaf);
    if (rc == TPDB_OK) {
        rc = tfCellsLoad(f, leaf, 1, 0, &c, &n);
    }
    unsigned pos = 0;
    while (rc == TPDB_OK && pos < n &&
           tfKeyCmp(c[pos].key, c[pos].klen, key, klen) != 0) {
        pos++;
    }
    if (rc == TPDB_OK && pos < n) {
        *found = 1;
        if (c[pos].ovf != 0) {
            rc = tfOverflowFree(f, c[pos].ovf, c[pos].vlen);
        }
        memmove(&c[pos], &c[pos + 1], (n - pos - 1) * sizeof *c);
        if (rc == TPDB_OK) {
            rc = tfLeafStore(f, path.pg[path.depth], leaf, c, n - 1, &up);
        }
    }
    tfUpFree(&up);
    tpdb_free(c);
    return rc;
}
