/*
 * tpdb_table scans (tpdb_vtab_int.h). A cursor either walks key intervals
 * of the table tree or fetches a list of rowids collected up front (rowid
 * equality, index lookups). Cursors survive writes made through the shared
 * handle while they are open: each write bumps a generation counter and a
 * cursor whose generation is stale reopens its B+ tree cursor and seeks
 * back to its last rowid. Key order in the file is unsigned (defect B2), so
 * a signed rowid range becomes up to two unsigned key intervals.
 */
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "ext/tpdb_vtab_int.h"
#include "vfs/tpdbfile/tpdbfile.h"

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

/* A cursor holds its file from xOpen to xClose: SQLite opens a statement's
 * cursors when it starts and closes them when it is reset or finalized, so
 * a statement reads one committed state of a transient file. */
int vtabOpen(sqlite3_vtab *base, sqlite3_vtab_cursor **out)
{
    struct vtab *vt = (struct vtab *)base;
    struct cursor *cur = sqlite3_malloc(sizeof *cur);
    if (cur == NULL) {
        return SQLITE_NOMEM;
    }
    memset(cur, 0, sizeof *cur);
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = NULL;
    int rc = vtabFileHold(vt->sf, &vt->base.zErrMsg);
    if (rc != SQLITE_OK) {
        sqlite3_free(cur);
        return rc;
    }
    cur->eof = 1;
    *out = &cur->base;
    return SQLITE_OK;
}

int vtabClose(sqlite3_vtab_cursor *base)
{
    struct cursor *cur = (struct cursor *)base;
    struct vtab *vt = (struct vtab *)base->pVtab;
    tpdb_cursor_close(cur->tc);
    sqlite3_free(cur->rowids);
    sqlite3_free(cur);
    vtabFileUnhold(vt->sf);
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

int vtabNext(sqlite3_vtab_cursor *base)
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
    if (vtabBoundValue(v, out) == 0) {
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
    if ((flags & VTAB_RANGE_LO) && rangeBound(argv[a++], &lo) != 0) {
        return 0;
    }
    if ((flags & VTAB_RANGE_HI) && rangeBound(argv[a], &hi) != 0) {
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
            if (vtabRealToInt64(sqlite3_value_double(sv), &i) == 0) {
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
            if (vtabParseInt64((const char *)v[0].base, v[0].len, &i) == 0) {
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
 * looked up (at most 2^VTAB_MAX_INDEX_EQ). */
static int filterIndex(struct cursor *cur,
                       const char *index,
                       unsigned k,
                       sqlite3_value **argv)
{
    struct vtab *vt = (struct vtab *)cur->base.pVtab;
    struct eqCandidates cand[VTAB_MAX_INDEX_EQ];
    struct tpdb_value vals[VTAB_MAX_INDEX_EQ];
    struct tpdb_cursor *ic;
    size_t cap = 0;
    unsigned combos = 1;
    if (k == 0 || k > VTAB_MAX_INDEX_EQ) {
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

int vtabFilter(sqlite3_vtab_cursor *base,
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
    cur->use_list = plan == VTAB_PLAN_ROWID_EQ || plan == VTAB_PLAN_INDEX_EQ;
    rc = cursorFresh(cur, &reopened);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (plan == VTAB_PLAN_ROWID_EQ) {
        size_t cap = 0;
        if (vtabBoundValue(argv[0], &rowid) == 0) {
            rc = rowidsAppend(cur, rowid, &cap);
        } else {
            cur->use_list = 0; /* a non-integer PK value: scan everything */
        }
    } else if (plan == VTAB_PLAN_INDEX_EQ) {
        rc = filterIndex(cur, idxStr, (unsigned)idxNum >> 4, argv);
    }
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (cur->use_list) {
        return cursorSettleList(cur);
    }
    if (plan != VTAB_PLAN_ROWID_RANGE || !filterRange(cur, idxNum >> 4, argv)) {
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

int vtabEof(sqlite3_vtab_cursor *base)
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

int vtabColumn(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int i)
{
    struct cursor *cur = (struct cursor *)base;
    int rc = cursorReload(cur);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (i >= 0 && (unsigned)i < cur->nvals) {
        vtabResultValue(ctx, &cur->vals[i]);
    } else {
        sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

int vtabRowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    *rowid = ((struct cursor *)base)->rowid;
    return SQLITE_OK;
}
