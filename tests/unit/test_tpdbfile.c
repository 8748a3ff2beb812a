/* Unit tests for the native TPDB page format reader (vfs/tpdbfile*.c):
 * every genuine TrashPandaDB 0.8.7 fixture matched against its manifest,
 * line for line, plus files built from the format document. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfs/tpdbfile/tpdbfile.h"

/* ---- Growing string ------------------------------------------------------*/

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
};

static void sbPut(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sbPut(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (b->cap - b->len < (size_t)n + 1) {
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sbHex(struct sbuf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sbPut(b, "%02x", p[i]);
    }
    if (n == 0) {
        sbPut(b, "%s", "");
    }
}

static void sbValue(struct sbuf *b, const struct tpdb_value *v)
{
    uint64_t bits;
    switch (v->type) {
        case TPDB_VINT:
            sbPut(b, "I:%lld", (long long)v->i);
            break;
        case TPDB_VREAL:
            memcpy(&bits, &v->r, sizeof bits);
            sbPut(b, "R:%016llx", (unsigned long long)bits);
            break;
        case TPDB_VTEXT:
            sbPut(b, "T:");
            sbHex(b, v->base, v->len);
            break;
        case TPDB_VBLOB:
            sbPut(b, "B:");
            sbHex(b, v->base, v->len);
            break;
        case TPDB_VBOOL:
            sbPut(b, "Z:%d", (int)v->i);
            break;
        default:
            sbPut(b, "N");
    }
}

static void sbChain(struct sbuf *b, struct tpdb_file *f, int which)
{
    uint32_t *pages = NULL;
    size_t n = 0;
    assert_int_equal(tpdb_file_chain(f, which, &pages, &n), TPDB_OK);
    for (size_t i = 0; i < n; i++) {
        sbPut(b, "%s%u", i == 0 ? "" : ",", pages[i]);
    }
    tpdb_free(pages);
}

/* ---- Fixture walk -------------------------------------------------------- */

static char *fixtureDir(void)
{
    const char *root = getenv("TPDB_SOURCE_ROOT");
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/tpdb",
             root == NULL ? "." : root);
    return dir;
}

struct walk {
    struct tpdb_file *f;
    struct tpdb_cursor *cur;
    const char *name;
    long rows;
    long keys;
};

static void walkEndCursor(struct walk *w)
{
    if (w->cur != NULL) {
        assert_true(tpdb_cursor_eof(w->cur));
        tpdb_cursor_close(w->cur);
        w->cur = NULL;
    }
}

static void expectLine(const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        print_error("got:  %.300s\nwant: %.300s\n", got, want);
        fail();
    }
}

static void checkHeaderLines(struct walk *w, const char *line, struct sbuf *b)
{
    struct tpdb_file_info in;
    tpdb_file_get_info(w->f, &in);
    if (strncmp(line, "header ", 7) == 0) {
        sbPut(b,
              "header magic=TPANDADB version=%u page_count=%u "
              "free_list_head=%u file_size=%llu",
              in.version, in.page_count, in.free_list_head,
              (unsigned long long)in.file_size);
    } else if (strncmp(line, "wal ", 4) == 0) {
        size_t n = 0;
        const uint32_t *pg = tpdb_file_wal_pages(w->f, &n);
        sbPut(b, "wal size=%llu committed_pages=",
              (unsigned long long)in.wal_size);
        for (size_t i = 0; i < n; i++) {
            sbPut(b, "%s%u", i == 0 ? "" : ",", pg[i]);
        }
    } else if (strncmp(line, "effective ", 10) == 0) {
        sbPut(b, "effective page_count=%u free_list_head=%u", in.eff_page_count,
              in.eff_free_head);
    } else if (strncmp(line, "freelist ", 9) == 0) {
        sbPut(b, "freelist ");
        sbChain(b, w->f, TPDB_CHAIN_FREELIST);
    } else {
        sbPut(b, "catalog_chain ");
        sbChain(b, w->f, TPDB_CHAIN_CATALOG);
    }
}

static long countEntries(struct tpdb_file *f, int index, const char *name)
{
    struct tpdb_cursor *c = NULL;
    long n = 0;
    if (index) {
        assert_int_equal(tpdb_cursor_open_index(f, name, &c), TPDB_OK);
    } else {
        assert_int_equal(tpdb_cursor_open_table(f, name, &c), TPDB_OK);
    }
    assert_int_equal(tpdb_cursor_first(c), TPDB_OK);
    while (!tpdb_cursor_eof(c)) {
        n++;
        assert_int_equal(tpdb_cursor_next(c), TPDB_OK);
    }
    tpdb_cursor_close(c);
    return n;
}

static void checkTableLine(struct walk *w, const char *line, struct sbuf *b)
{
    char name[512];
    assert_int_equal(sscanf(line, "table %511s", name), 1);
    const struct tpdb_table *t = tpdb_file_table_find(w->f, name);
    assert_non_null(t);
    sbPut(b,
          "table %s root=%u next_rowid=%lld pk_idx=%d auto_pk=%d ncols=%u "
          "nrows=%ld",
          t->name, t->root, (long long)t->next_rowid, t->pk_idx, t->auto_pk,
          t->ncols, countEntries(w->f, 0, name));
    walkEndCursor(w);
    assert_int_equal(tpdb_cursor_open_table(w->f, name, &w->cur), TPDB_OK);
    assert_int_equal(tpdb_cursor_first(w->cur), TPDB_OK);
}

static void checkColLine(struct walk *w, const char *line, struct sbuf *b)
{
    char tname[512];
    unsigned i;
    assert_int_equal(sscanf(line, "col %511s %u", tname, &i), 2);
    const struct tpdb_table *t = tpdb_file_table_find(w->f, tname);
    assert_non_null(t);
    assert_true(i < t->ncols);
    const struct tpdb_column *c = &t->cols[i];
    sbPut(b, "col %s %u %s type=", tname, i, c->name);
    sbHex(b, (const uint8_t *)c->type, strlen(c->type));
    sbPut(b, " not_null=%d default=", c->not_null);
    if (c->default_sql == NULL) {
        sbPut(b, "-");
    } else {
        sbHex(b, (const uint8_t *)c->default_sql, strlen(c->default_sql));
    }
}

/* Row lines list the stored columns; compare as many values as listed. */
static void checkRowLine(struct walk *w, const char *line, struct sbuf *b)
{
    char tname[512];
    const struct tpdb_value *vals;
    unsigned ncols, stored;
    int64_t rowid;
    assert_int_equal(sscanf(line, "row %511s", tname), 1);
    assert_non_null(w->cur);
    assert_false(tpdb_cursor_eof(w->cur));
    assert_int_equal(tpdb_cursor_rowid(w->cur, &rowid), TPDB_OK);
    assert_int_equal(tpdb_cursor_row(w->cur, &vals, &ncols, &stored), TPDB_OK);
    unsigned listed = 0;
    for (const char *p = line; *p != '\0'; p++) {
        listed += *p == ' ';
    }
    listed -= 3;
    sbPut(b, "row %s %lld %u", tname, (long long)rowid, stored);
    for (unsigned i = 0; i < listed && i < ncols; i++) {
        sbPut(b, " ");
        sbValue(b, &vals[i]);
    }
    assert_int_equal(tpdb_cursor_next(w->cur), TPDB_OK);
    w->rows++;
}

static void checkIndexLine(struct walk *w, const char *line, struct sbuf *b)
{
    char name[512];
    assert_int_equal(sscanf(line, "index %511s", name), 1);
    const struct tpdb_index *x = tpdb_file_index_find(w->f, name);
    assert_non_null(x);
    sbPut(b, "index %s table=%s cols=", x->name, x->table);
    for (unsigned i = 0; i < x->ncols; i++) {
        sbPut(b, "%s%s", i == 0 ? "" : ",", x->cols[i]);
    }
    sbPut(b, " root=%u unique=%d nentries=%ld", x->root, x->unique,
          countEntries(w->f, 1, name));
    walkEndCursor(w);
    assert_int_equal(tpdb_cursor_open_index(w->f, name, &w->cur), TPDB_OK);
    assert_int_equal(tpdb_cursor_first(w->cur), TPDB_OK);
}

static void checkIkeyLine(struct walk *w, const char *line, struct sbuf *b)
{
    char name[512];
    const uint8_t *key;
    size_t klen;
    int64_t rowid;
    assert_int_equal(sscanf(line, "ikey %511s", name), 1);
    assert_non_null(w->cur);
    assert_false(tpdb_cursor_eof(w->cur));
    assert_int_equal(tpdb_cursor_key(w->cur, &key, &klen), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(w->cur, &rowid), TPDB_OK);
    sbPut(b, "ikey %s ", name);
    sbHex(b, key, klen);
    sbPut(b, " rowid=%lld", (long long)rowid);
    assert_int_equal(tpdb_cursor_next(w->cur), TPDB_OK);
    w->keys++;
}

static void checkLine(struct walk *w, const char *line)
{
    struct sbuf b = {0};
    if (line[0] == '#' || strncmp(line, "sql", 3) == 0 ||
        strncmp(line, "srow", 4) == 0) {
        return; /* SQL results belong to the SQL layer's tests */
    }
    if (strncmp(line, "file ", 5) == 0) {
        sbPut(&b, "file %s", w->name);
    } else if (strncmp(line, "table ", 6) == 0) {
        checkTableLine(w, line, &b);
    } else if (strncmp(line, "col ", 4) == 0) {
        checkColLine(w, line, &b);
    } else if (strncmp(line, "row ", 4) == 0) {
        checkRowLine(w, line, &b);
    } else if (strncmp(line, "index ", 6) == 0) {
        checkIndexLine(w, line, &b);
    } else if (strncmp(line, "ikey ", 5) == 0) {
        checkIkeyLine(w, line, &b);
    } else {
        checkHeaderLines(w, line, &b);
    }
    expectLine(b.p, line);
    free(b.p);
}

static void checkFixture(const char *name)
{
    char path[4600];
    char *line = NULL;
    size_t cap = 0;
    char err[TPDB_ERRMSG_SIZE];
    struct walk w = {0};
    w.name = name;
    snprintf(path, sizeof path, "%s/%s", fixtureDir(), name);
    int rc = tpdb_file_open(path, TPDB_FILE_RDONLY, &w.f, err);
    if (rc != TPDB_OK) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, TPDB_OK);
    snprintf(path, sizeof path, "%s/%.*s.manifest.txt", fixtureDir(),
             (int)(strlen(name) - 5), name);
    FILE *m = fopen(path, "r");
    assert_non_null(m);
    ssize_t n;
    while ((n = getline(&line, &cap, m)) > 0) {
        if (line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        checkLine(&w, line);
    }
    walkEndCursor(&w);
    print_message("%s: %ld rows, %ld index keys matched\n", name, w.rows,
                  w.keys);
    free(line);
    fclose(m);
    tpdb_file_close(w.f);
}

/* Every fixture in the directory is one of the named tests above. */
static void testNoFixtureMissed(void **s)
{
    static const char *known[] = {"01_empty.tpdb",     "02_types.tpdb",
                                  "03_multipage.tpdb", "04_overflow.tpdb",
                                  "05_indexes.tpdb",   "07_catalog_shrunk.tpdb",
                                  "08_deleted.tpdb",   "09_altered.tpdb"};
    DIR *d = opendir(fixtureDir());
    struct dirent *e;
    (void)s;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        int found = 0;
        if (n < 5 || strcmp(e->d_name + n - 5, ".tpdb") != 0) {
            continue;
        }
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
            found |= strcmp(known[i], e->d_name) == 0;
        }
        if (!found) {
            print_error("fixture %s has no test\n", e->d_name);
            fail();
        }
    }
    closedir(d);
}

static void testFixture01(void **s)
{
    (void)s;
    checkFixture("01_empty.tpdb");
}
static void testFixture02(void **s)
{
    (void)s;
    checkFixture("02_types.tpdb");
}
static void testFixture03(void **s)
{
    (void)s;
    checkFixture("03_multipage.tpdb");
}
static void testFixture04(void **s)
{
    (void)s;
    checkFixture("04_overflow.tpdb");
}
static void testFixture05(void **s)
{
    (void)s;
    checkFixture("05_indexes.tpdb");
}
static void testFixture07(void **s)
{
    (void)s;
    checkFixture("07_catalog_shrunk.tpdb");
}
static void testFixture08(void **s)
{
    (void)s;
    checkFixture("08_deleted.tpdb");
}
static void testFixture09(void **s)
{
    (void)s;
    checkFixture("09_altered.tpdb");
}

/* ---- Files built from the format document ------------------------------ */

#define PG 4096

struct img {
    uint8_t hdr[64];
    uint8_t *pages;
    uint32_t npages;
};

static void imgInit(struct img *im, uint32_t npages)
{
    memset(im->hdr, 0, sizeof im->hdr);
    memcpy(im->hdr, "TPANDADB", 8);
    im->hdr[8] = 2;
    im->hdr[12] = (uint8_t)npages;
    im->npages = npages;
    im->pages = calloc(npages, PG);
}

static uint8_t *imgPage(struct img *im, uint32_t pgno)
{
    return im->pages + (size_t)(pgno - 1) * PG;
}

/* Catalog with one table t(id INTEGER PK, v TEXT DEFAULT 'dflt') at root,
 * and one index ix(v) at iroot when iroot != 0. */
static void imgCatalog(struct img *im, uint32_t root, uint32_t iroot)
{
    uint8_t *p = imgPage(im, 1);
    size_t o = 16;
    p[0] = 4;
    tpdbPut16(p + 1, 1);
    tpdbPut16(p + 7, iroot != 0);
    p[o++] = 1;
    p[o++] = 't';
    tpdbPut32(p + o, root);
    o += 4;
    tpdbPut16(p + o, 2);
    o += 2;
    tpdbPut16(p + o, 0);
    o += 2;
    p[o++] = 1;
    tpdbPut64(p + o, 100);
    o += 8;
    memcpy(p + o, "\x02id\x07INTEGER\x00\x00", 13);
    o += 13;
    memcpy(p + o, "\x01v\x04TEXT\x00\x01\x06\x00'dflt'", 17);
    o += 17;
    if (iroot != 0) {
        memcpy(p + o, "\x02ix\x01t\x01\x01v", 8);
        o += 8;
        tpdbPut32(p + o, iroot);
        o += 4;
        p[o++] = 0;
    }
}

/* A leaf with cells given as (key, value) byte strings. */
static void imgLeaf(struct img *im,
                    uint32_t pgno,
                    int n,
                    const uint8_t **keys,
                    const size_t *klens,
                    const uint8_t **vals,
                    const size_t *vlens)
{
    uint8_t *p = imgPage(im, pgno);
    size_t end = PG;
    p[0] = 2;
    tpdbPut16(p + 1, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        end -= 6 + klens[i] + vlens[i];
        tpdbPut16(p + end, (uint16_t)klens[i]);
        tpdbPut32(p + end + 2, (uint32_t)vlens[i]);
        memcpy(p + end + 6, keys[i], klens[i]);
        memcpy(p + end + 6 + klens[i], vals[i], vlens[i]);
        tpdbPut16(p + 16 + 2 * i, (uint16_t)end);
    }
    tpdbPut16(p + 11, (uint16_t)end);
}

static void rowidKey(int64_t id, uint8_t *k)
{
    tpdbPutBe32(k, (uint32_t)((uint64_t)id >> 32));
    tpdbPutBe32(k + 4, (uint32_t)id);
}

/* Table leaf at pgno with rows (id, 'v<id>'); row 2 stores only 1 column. */
static void imgRows(struct img *im, uint32_t pgno, int n)
{
    static uint8_t keys[16][8], vals[16][32];
    const uint8_t *kp[16], *vp[16];
    size_t kl[16], vl[16];
    for (int i = 0; i < n; i++) {
        int64_t id = i + 1;
        uint8_t *v = vals[i];
        rowidKey(id, keys[i]);
        int ncols = id == 2 ? 1 : 2;
        tpdbPut16(v, (uint16_t)ncols);
        v[2] = 0;
        v[3] = 1;
        tpdbPut64(v + 4, (uint64_t)id);
        vl[i] = 12;
        if (ncols == 2) {
            v[12] = 3;
            tpdbPut32(v + 13, 2);
            v[17] = 'v';
            v[18] = (uint8_t)('0' + id);
            vl[i] = 19;
        }
        kp[i] = keys[i];
        kl[i] = 8;
        vp[i] = vals[i];
    }
    imgLeaf(im, pgno, n, kp, kl, vp, vl);
}

static char tmpDir[64];

static const char *imgWrite(struct img *im, const uint8_t *wal, size_t wlen)
{
    static char path[128];
    char wpath[160];
    if (tmpDir[0] == '\0') {
        snprintf(tmpDir, sizeof tmpDir, "/tmp/tpdbfile-ro-XXXXXX");
        assert_non_null(mkdtemp(tmpDir));
    }
    snprintf(path, sizeof path, "%s/t.tpdb", tmpDir);
    snprintf(wpath, sizeof wpath, "%s-wal", path);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(im->hdr, 1, 64, fp), 64);
    assert_int_equal(fwrite(im->pages, PG, im->npages, fp), im->npages);
    fclose(fp);
    unlink(wpath);
    if (wal != NULL) {
        fp = fopen(wpath, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(wal, 1, wlen, fp), wlen);
        fclose(fp);
    }
    return path;
}

static void cleanupTmp(void)
{
    char p[200];
    if (tmpDir[0] == '\0') {
        return;
    }
    snprintf(p, sizeof p, "%s/t.tpdb", tmpDir);
    unlink(p);
    snprintf(p, sizeof p, "%s/t.tpdb-wal", tmpDir);
    unlink(p);
    rmdir(tmpDir);
}

/* Opens the image read-only; returns the rc, errmsg in err. */
static int imgOpen(struct img *im, struct tpdb_file **f, char *err)
{
    const char *path = imgWrite(im, NULL, 0);
    *f = NULL;
    return tpdb_file_open(path, TPDB_FILE_RDONLY, f, err);
}

/* Scans table t fully; returns the first error. */
static int scanAll(struct tpdb_file *f, const char *table, long *rows)
{
    struct tpdb_cursor *c = NULL;
    const struct tpdb_value *v;
    unsigned n, st;
    int rc = tpdb_cursor_open_table(f, table, &c);
    *rows = 0;
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_first(c);
    }
    while (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        rc = tpdb_cursor_row(c, &v, &n, &st);
        if (rc == TPDB_OK) {
            (*rows)++;
            rc = tpdb_cursor_next(c);
        }
    }
    tpdb_cursor_close(c);
    return rc;
}

static void expectErr(const char *err, const char *part)
{
    if (strstr(err, part) == NULL) {
        print_error("message '%s' lacks '%s'\n", err, part);
        fail();
    }
}

static void testBuiltFile(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    const struct tpdb_value *v;
    unsigned n, st;
    (void)s;
    imgInit(&im, 2);
    imgCatalog(&im, 2, 0);
    imgRows(&im, 2, 3);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    const struct tpdb_table *t = tpdb_file_table(f, 0);
    assert_string_equal(t->name, "t");
    assert_int_equal(t->next_rowid, 100);
    assert_string_equal(t->cols[1].default_sql, "'dflt'");
    assert_null(tpdb_file_table(f, 1));
    assert_null(tpdb_file_table_find(f, "nope"));
    struct tpdb_cursor *c;
    assert_int_equal(tpdb_cursor_open_table(f, "t", &c), TPDB_OK);
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_EQ, 2), TPDB_OK);
    assert_int_equal(tpdb_cursor_row(c, &v, &n, &st), TPDB_OK);
    assert_int_equal(st, 1); /* short row: padded with DEFAULT */
    assert_int_equal(v[1].type, TPDB_VTEXT);
    assert_memory_equal(v[1].base, "dflt", 4);
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_EQ, 9), TPDB_OK);
    assert_true(tpdb_cursor_eof(c));
    assert_int_equal(tpdb_cursor_row(c, &v, &n, &st), TPDB_MISUSE);
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_GE, 9), TPDB_OK);
    assert_true(tpdb_cursor_eof(c));
    int64_t id;
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_LE, 9), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 3);
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_GE, 2), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 2);
    /* Negative rowids sort last in file order (defect B2). */
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_LE, -1), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 3);
    tpdb_cursor_close(c);
    assert_int_equal(tpdb_cursor_open_table(f, "zz", &c), TPDB_NOTFOUND);
    assert_int_equal(tpdb_cursor_open_index(f, "zz", &c), TPDB_NOTFOUND);
    tpdb_file_close(f);
    free(im.pages);
}

static void testWalReplay(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    long rows;
    (void)s;
    imgInit(&im, 2);
    imgCatalog(&im, 2, 0);
    imgRows(&im, 2, 1);
    /* WAL: committed new leaf with 3 rows, then an uncommitted 5-row
     * version and a torn frame. */
    size_t fr = 8 + PG;
    uint8_t *wal = calloc(1, 32 + 4 * fr);
    memcpy(wal, "TPANDAWL", 8);
    wal[8] = 3;
    struct img tmp;
    imgInit(&tmp, 2);
    imgRows(&tmp, 2, 3);
    tpdbPut32(wal + 32, 2);
    memcpy(wal + 40, imgPage(&tmp, 2), PG);
    tpdbPut32(wal + 32 + fr + 4, 1); /* sentinel */
    memset(imgPage(&tmp, 2), 0, PG);
    imgRows(&tmp, 2, 5);
    tpdbPut32(wal + 32 + 2 * fr, 2);
    memcpy(wal + 40 + 2 * fr, imgPage(&tmp, 2), PG);
    const char *path = imgWrite(&im, wal, 32 + 3 * fr + 100);
    assert_int_equal(tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_OK);
    assert_int_equal(rows, 3);
    size_t n;
    const uint32_t *pg = tpdb_file_wal_pages(f, &n);
    assert_int_equal(n, 1);
    assert_int_equal(pg[0], 2);
    tpdb_file_close(f);
    /* A committed frame for a page no commit could allocate. */
    tpdbPut32(wal + 32, 9);
    path = imgWrite(&im, wal, 32 + 2 * fr);
    assert_int_equal(tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err),
                     TPDB_CORRUPT);
    expectErr(err,
              "t.tpdb-wal: committed frame for page 9 beyond any "
              "allocation");
    tpdbPut32(wal + 32, 2);
    /* A WAL with a bad magic is ignored. */
    wal[0] = 'X';
    path = imgWrite(&im, wal, 32 + 2 * fr);
    assert_int_equal(tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_OK);
    assert_int_equal(rows, 1);
    tpdb_file_close(f);
    free(wal);
    free(tmp.pages);
    free(im.pages);
}

static void testBadHeader(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    (void)s;
    imgInit(&im, 1);
    im.hdr[0] = 'X';
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    assert_null(f);
    expectErr(err, "t.tpdb: not a TrashPandaDB file (bad magic)");
    im.hdr[0] = 'T';
    im.hdr[8] = 1;
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "JSON storage format (v1)");
    im.hdr[8] = 7; /* any other version is accepted */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    tpdb_file_close(f);
    /* A file shorter than the header is an empty database. */
    im.npages = 0;
    const char *path = imgWrite(&im, NULL, 0);
    truncate(path, 10);
    assert_int_equal(tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err), TPDB_OK);
    assert_int_equal(tpdb_file_table_count(f), 0);
    tpdb_file_close(f);
    assert_int_equal(tpdb_file_open(NULL, 0, &f, err), TPDB_INVALID);
    free(im.pages);
}

static void testCorruptCatalog(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    (void)s;
    imgInit(&im, 3);
    imgCatalog(&im, 9, 0); /* root out of range */
    imgRows(&im, 2, 1);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "t.tpdb: page 1: catalog table 0 (t): root page 9");
    imgCatalog(&im, 2, 0);
    tpdbPut16(imgPage(&im, 1) + 1, 5); /* five tables, stream has one */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "page 1: catalog table");
    imgCatalog(&im, 2, 0);
    tpdbPut32(imgPage(&im, 1) + 3, 3); /* continuation 3 -> 3 */
    tpdbPut32(imgPage(&im, 3), 3);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "cycle in page chain");
    tpdbPut32(imgPage(&im, 1) + 3, 77); /* out of range */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "page 77 out of range");
    tpdbPut32(imgPage(&im, 1) + 3, 0);
    imgPage(&im, 1)[0] = 2;
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "page 1: not a catalog page");
    free(im.pages);
}

static void testCorruptFreeList(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    uint32_t *pages;
    size_t n;
    (void)s;
    imgInit(&im, 4);
    imgCatalog(&im, 2, 0);
    imgRows(&im, 2, 1);
    im.hdr[16] = 3;
    tpdbPut32(imgPage(&im, 3) + 1, 4);
    tpdbPut32(imgPage(&im, 4) + 1, 3); /* cycle 3 -> 4 -> 3 */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(tpdb_file_chain(f, TPDB_CHAIN_FREELIST, &pages, &n),
                     TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "cycle in page chain");
    tpdb_file_close(f);
    tpdbPut32(imgPage(&im, 4) + 1, 0);
    imgPage(&im, 4)[0] = 3; /* not a free page */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(tpdb_file_chain(f, TPDB_CHAIN_FREELIST, &pages, &n),
                     TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "page 4: free-list page has type 3");
    tpdb_file_close(f);
    im.hdr[16] = 200; /* head out of range */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_CORRUPT);
    expectErr(err, "free-list head 200 out of range");
    free(im.pages);
}

static void testCorruptTree(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    long rows;
    (void)s;
    imgInit(&im, 4);
    imgCatalog(&im, 2, 0);
    imgRows(&im, 2, 3);
    uint8_t *p = imgPage(&im, 2);
    /* Cell length past the page end. */
    uint16_t off = tpdbGet16(p + 16);
    tpdbPut32(p + off + 2, 5000);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f),
              "t.tpdb: page 2: cell 0 length 5014 past "
              "page end");
    tpdb_file_close(f);
    /* A cell pointer into the header / pointer array. */
    imgRows(&im, 2, 3);
    tpdbPut16(p + 18, 4);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "page 2: cell 1 offset 4 out of bounds");
    tpdb_file_close(f);
    /* Keys out of order. */
    imgRows(&im, 2, 3);
    uint16_t o0 = tpdbGet16(p + 16), o1 = tpdbGet16(p + 18);
    tpdbPut16(p + 16, o1);
    tpdbPut16(p + 18, o0);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "key out of order");
    tpdb_file_close(f);
    /* Interior pages that point at themselves or at each other. */
    memset(p, 0, PG);
    p[0] = 1;
    tpdbPut32(p + 3, 3);
    uint8_t *q = imgPage(&im, 3);
    q[0] = 1;
    tpdbPut32(q + 3, 2);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    tpdb_file_close(f);
    tpdbPut32(p + 3, 2);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "page 2: child 0 page 2 out of range");
    tpdb_file_close(f);
    /* A root past the end of the file reads as zeros: not a tree page. */
    memset(p, 0, PG);
    im.hdr[12] = 9;
    imgCatalog(&im, 8, 0);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "page 8: not a B+ tree page (type 0)");
    tpdb_file_close(f);
    free(im.pages);
}

static void testCorruptOverflowAndRow(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    long rows;
    (void)s;
    imgInit(&im, 4);
    imgCatalog(&im, 2, 0);
    uint8_t key[8], val[4];
    rowidKey(1, key);
    tpdbPut32(val, 3);
    const uint8_t *kp[1] = {key}, *vp[1] = {val};
    size_t kl[1] = {8}, vl[1] = {4};
    imgLeaf(&im, 2, 1, kp, kl, vp, vl);
    uint8_t *p = imgPage(&im, 2);
    uint16_t off = tpdbGet16(p + 16);
    tpdbPut32(p + off + 2, 0x80000000u | 9000); /* 3 pages: 3 -> 4 -> 3 */
    imgPage(&im, 3)[0] = 3;
    tpdbPut32(imgPage(&im, 3) + 1, 4);
    imgPage(&im, 4)[0] = 3;
    tpdbPut32(imgPage(&im, 4) + 1, 3);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "page 2: overflow chain of 9000 bytes");
    tpdb_file_close(f);
    tpdbPut32(p + off + 2, 0x80000000u | 0x7FFFFFFFu); /* huge */
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "larger than the file");
    tpdb_file_close(f);
    /* Rows: truncated values and an unknown tag. */
    uint8_t row[16] = {2, 0, 0, 3, 0xff, 0xff, 0, 0};
    vp[0] = row;
    vl[0] = 8;
    imgLeaf(&im, 2, 1, kp, kl, vp, vl);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    expectErr(tpdb_file_errmsg(f), "page 2: cell 0: column 0: length");
    tpdb_file_close(f);
    uint8_t row2[3] = {1, 0, 0};
    vp[0] = row2;
    vl[0] = 3; /* one column, not NULL, no tag byte */
    memset(p, 0, PG);
    imgLeaf(&im, 2, 1, kp, kl, vp, vl);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    tpdb_file_close(f);
    uint8_t row3[4] = {2, 0, 0, 9}; /* unknown tag: NULL, consumes nothing */
    vp[0] = row3;
    vl[0] = 4;
    memset(p, 0, PG);
    imgLeaf(&im, 2, 1, kp, kl, vp, vl);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    assert_int_equal(scanAll(f, "t", &rows), TPDB_CORRUPT);
    tpdb_file_close(f);
    free(im.pages);
}

static void testIndexSeek(void **s)
{
    struct img im;
    struct tpdb_file *f;
    char err[TPDB_ERRMSG_SIZE];
    (void)s;
    imgInit(&im, 3);
    imgCatalog(&im, 2, 3);
    imgRows(&im, 2, 3);
    /* Index keys: 'a'\0 rowid 3, 'b'\0 rowid 1, 'b'\0 rowid 2. */
    static uint8_t k[3][10];
    const uint8_t *kp[3], *vp[3];
    size_t kl[3], vl[3];
    const char *t[3] = {"a", "b", "b"};
    int ids[3] = {3, 1, 2};
    for (int i = 0; i < 3; i++) {
        k[i][0] = (uint8_t)t[i][0];
        k[i][1] = 0;
        rowidKey(ids[i], k[i] + 2);
        kp[i] = k[i];
        kl[i] = 10;
        vp[i] = k[i];
        vl[i] = 0;
    }
    imgLeaf(&im, 3, 3, kp, kl, vp, vl);
    assert_int_equal(imgOpen(&im, &f, err), TPDB_OK);
    struct tpdb_cursor *c;
    int64_t id;
    assert_int_equal(tpdb_cursor_open_index(f, "ix", &c), TPDB_OK);
    struct tpdb_value b = {
        .type = TPDB_VTEXT, .base = (const uint8_t *)"b", .len = 1};
    assert_int_equal(tpdb_cursor_seek_index(c, TPDB_SEEK_EQ, &b, 1), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 1);
    assert_int_equal(tpdb_cursor_next(c), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 2);
    assert_int_equal(tpdb_cursor_next(c), TPDB_OK);
    assert_true(tpdb_cursor_eof(c));
    assert_int_equal(tpdb_cursor_seek_index(c, TPDB_SEEK_LE, &b, 1), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 2);
    b.base = (const uint8_t *)"ab";
    b.len = 2;
    assert_int_equal(tpdb_cursor_seek_index(c, TPDB_SEEK_EQ, &b, 1), TPDB_OK);
    assert_true(tpdb_cursor_eof(c));
    assert_int_equal(tpdb_cursor_seek_index(c, TPDB_SEEK_GE, &b, 1), TPDB_OK);
    assert_int_equal(tpdb_cursor_rowid(c, &id), TPDB_OK);
    assert_int_equal(id, 1);
    struct tpdb_value r = {.type = TPDB_VREAL};
    assert_int_equal(tpdb_cursor_seek_index(c, TPDB_SEEK_EQ, &r, 1),
                     TPDB_INVALID);
    assert_int_equal(tpdb_cursor_seek_rowid(c, TPDB_SEEK_EQ, 1), TPDB_MISUSE);
    const struct tpdb_value *v;
    unsigned n, st;
    assert_int_equal(tpdb_cursor_row(c, &v, &n, &st), TPDB_MISUSE);
    tpdb_cursor_close(c);
    tpdb_file_close(f);
    free(im.pages);
}

static void testDefaultEval(void **s)
{
    uint8_t scratch[64];
    struct tpdb_value v;
    (void)s;
    tpdb_default_eval("42", scratch, &v);
    assert_int_equal(v.type, TPDB_VINT);
    assert_int_equal(v.i, 42);
    tpdb_default_eval(" -9223372036854775808 ", scratch, &v);
    assert_int_equal(v.i, INT64_MIN);
    tpdb_default_eval("(0.5)", scratch, &v);
    assert_int_equal(v.type, TPDB_VREAL);
    assert_true(v.r == 0.5);
    tpdb_default_eval("'it''s'", scratch, &v);
    assert_int_equal(v.type, TPDB_VTEXT);
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.base, "it's", 4);
    tpdb_default_eval("x'00ff'", scratch, &v);
    assert_int_equal(v.type, TPDB_VBLOB);
    assert_int_equal(v.len, 2);
    assert_int_equal(v.base[1], 0xff);
    tpdb_default_eval("null", scratch, &v);
    assert_int_equal(v.type, TPDB_VNULL);
    tpdb_default_eval("TRUE", scratch, &v);
    assert_int_equal(v.type, TPDB_VBOOL);
    assert_int_equal(v.i, 1);
    tpdb_default_eval("CURRENT_TIMESTAMP", scratch, &v);
    assert_int_equal(v.type, TPDB_VTEXT);
    assert_int_equal(v.len, 17);
    tpdb_default_eval("'unterminated", scratch, &v);
    assert_int_equal(v.type, TPDB_VTEXT);
    tpdb_default_eval(NULL, scratch, &v);
    assert_int_equal(v.type, TPDB_VNULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testFixture01),
        cmocka_unit_test(testFixture02),
        cmocka_unit_test(testFixture03),
        cmocka_unit_test(testFixture04),
        cmocka_unit_test(testFixture05),
        cmocka_unit_test(testFixture07),
        cmocka_unit_test(testFixture08),
        cmocka_unit_test(testFixture09),
        cmocka_unit_test(testNoFixtureMissed),
        cmocka_unit_test(testBuiltFile),
        cmocka_unit_test(testWalReplay),
        cmocka_unit_test(testBadHeader),
        cmocka_unit_test(testCorruptCatalog),
        cmocka_unit_test(testCorruptFreeList),
        cmocka_unit_test(testCorruptTree),
        cmocka_unit_test(testCorruptOverflowAndRow),
        cmocka_unit_test(testIndexSeek),
        cmocka_unit_test(testDefaultEval),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cleanupTmp();
    return rc;
}
