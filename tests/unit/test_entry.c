/* Unit tests for raftfsm/entry.c: round trips of every size and type,
 * padding, the compression ratio of real SQLite pages, input validation,
 * every class of corrupt or truncated entry, and allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lz4.h>
#include <raft.h>
#include <sqlite3.h>

#include "raftfsm/entry.h"

/* A transaction built by a test, owning its page images. */
struct testTxn {
    struct tpdb_txn txn;
    uint8_t *data;
};

static uint32_t rng = 12345;

static uint32_t nextRand(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* Fills a page: even pages compressible text, odd pages random bytes. */
static void fillPage(uint8_t *p, uint32_t page_size, uint32_t pgno)
{
    for (uint32_t i = 0; i < page_size; i++) {
        p[i] = (pgno % 2 == 0) ? (uint8_t)("row-data-"[i % 9] + pgno % 7)
                               : (uint8_t)nextRand();
    }
}

/* Pages pgno = first, first + step, ... */
static void makeTxn(struct testTxn *t,
                    uint32_t n,
                    uint32_t page_size,
                    uint32_t first,
                    uint32_t step,
                    uint32_t db_pages)
{
    t->data = malloc((size_t)n * page_size);
    t->txn.pages = calloc(n, sizeof *t->txn.pages);
    assert_non_null(t->data);
    assert_non_null(t->txn.pages);
    t->txn.page_size = page_size;
    t->txn.db_pages = db_pages;
    t->txn.n_pages = n;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = t->data + (size_t)i * page_size;
        t->txn.pages[i].pgno = first + i * step;
        t->txn.pages[i].data = p;
        fillPage(p, page_size, first + i * step);
    }
}

static void freeTxn(struct testTxn *t)
{
    free(t->data);
    free(t->txn.pages);
}

static void assertSameTxn(const struct tpdb_txn *a, const struct tpdb_txn *b)
{
    assert_int_equal(a->page_size, b->page_size);
    assert_int_equal(a->db_pages, b->db_pages);
    assert_int_equal(a->n_pages, b->n_pages);
    for (uint32_t i = 0; i < a->n_pages; i++) {
        assert_int_equal(a->pages[i].pgno, b->pages[i].pgno);
        assert_memory_equal(a->pages[i].data, b->pages[i].data, a->page_size);
    }
}

/* Encodes, checks the length, decodes and compares. */
static void roundTrip(int type, const char *db, const struct tpdb_txn *txn)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_entry e;
    void *buf;
    size_t len;
    assert_int_equal(
        tpdbEntryEncode(type, db, 77, 991, txn, &buf, &len, errmsg), TPDB_OK);
    assert_int_equal(len % 8, 0);
    assert_int_equal(tpdbEntryDecode(buf, len, &e, errmsg), TPDB_OK);
    assert_int_equal(e.type, type);
    assert_int_equal(e.origin, 77);
    assert_int_equal(e.seq, 991);
    assert_string_equal(e.db, db);
    assertSameTxn(txn, &e.txn);
    tpdbEntryRelease(&e);
    tpdbEntryRelease(&e);
    raft_free(buf);
}

static void testRoundTripOnePage(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 1, 4096, 1, 1, 1);
    roundTrip(TPDB_ENTRY_TXN, "main.db", &t.txn);
    freeTxn(&t);
}

static void testRoundTripManyPages(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 200, 4096, 3, 7, 5000);
    roundTrip(TPDB_ENTRY_TXN, "app-data.db", &t.txn);
    freeTxn(&t);
}

/* Names the FSM would refuse are never encoded: a leader must not propose
 * what its followers cannot apply. */
static void testEncodeRefusesNames(void **state)
{
    static const char *const bad[] = {"", ".hidden", "a/b.db", "/abs"};
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    char longName[TPDB_DBNAME_MAX + 2];
    struct testTxn t;
    void *buf = NULL;
    size_t len = 0;
    (void)state;
    makeTxn(&t, 1, 4096, 1, 1, 1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(tpdbDbNameValid(bad[i]));
        assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, bad[i], 1, 1, &t.txn,
                                         &buf, &len, errmsg),
                         TPDB_INVALID);
        assert_null(buf);
    }
    memset(longName, 'n', sizeof longName - 1);
    longName[sizeof longName - 1] = '\0';
    assert_false(tpdbDbNameValid(longName));
    longName[TPDB_DBNAME_MAX] = '\0';
    assert_true(tpdbDbNameValid(longName));
    assert_true(tpdbDbNameValid("%41 #1?.db"));
    freeTxn(&t);
}

static void testRoundTripTenMegabytes(void **state)
{
    struct testTxn t;
    (void)state;
    /* 2600 pages of 4 KiB: half random, half compressible. */
    makeTxn(&t, 2600, 4096, 1, 1, 2700);
    roundTrip(TPDB_ENTRY_TXN, "big", &t.txn);
    freeTxn(&t);
}

static void testRoundTripPageSizes(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 9, 512, 2, 3, 40);
    roundTrip(TPDB_ENTRY_TXN, "small", &t.txn);
    freeTxn(&t);
    makeTxn(&t, 5, 65536, 1, 2, 9);
    roundTrip(TPDB_ENTRY_TXN, "large", &t.txn);
    freeTxn(&t);
}

static void testRoundTripImage(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 30, 1024, 1, 1, 30);
    roundTrip(TPDB_ENTRY_IMAGE, "imported.db", &t.txn);
    freeTxn(&t);
}

/* A TPDB file commit: header page 1, then TPDB pages shifted by one; a
 * whole-file image is the same type. */
static void testRoundTripTpdbFile(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 4, 4096, 1, 3, 40);
    roundTrip(TPDB_ENTRY_TPDBFILE, "legacy.tpdb", &t.txn);
    freeTxn(&t);
    makeTxn(&t, 12, 4096, 1, 1, 12);
    roundTrip(TPDB_ENTRY_TPDBFILE, "legacy.tpdb", &t.txn);
    freeTxn(&t);
    /* The first part of a commit of changes sent in parts. */
    makeTxn(&t, 5, 4096, 1, 7, 900);
    roundTrip(TPDB_ENTRY_TPDBFILE_DELTA, "legacy.tpdb", &t.txn);
    freeTxn(&t);
}

/* All-zero pages compress about 250 times: the decoder's plausibility bound
 * on the compression ratio must accept them. */
static void testRoundTripZeroPages(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 300, 65536, 1, 1, 300);
    memset(t.data, 0, (size_t)300 * 65536);
    roundTrip(TPDB_ENTRY_TXN, "zeros", &t.txn);
    freeTxn(&t);
}

static void testLengthMultipleOfEight(void **state)
{
    char name[TPDB_DBNAME_MAX + 1];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct testTxn t;
    (void)state;
    makeTxn(&t, 2, 512, 1, 1, 2);
    for (size_t n = 1; n <= 24; n++) {
        void *buf;
        size_t len;
        memset(name, 'a' + (int)n, n);
        name[n] = '\0';
        assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, name, 1, n, &t.txn,
                                         &buf, &len, errmsg),
                         TPDB_OK);
        assert_int_equal(len % 8, 0);
        raft_free(buf);
    }
    memset(name, 'z', TPDB_DBNAME_MAX);
    name[TPDB_DBNAME_MAX] = '\0';
    roundTrip(TPDB_ENTRY_TXN, name, &t.txn);
    freeTxn(&t);
}

/* Builds a 10k-row SQLite table in a temp file and returns its bytes. */
static uint8_t *makeRealDatabase(size_t *size)
{
    char path[] = "/tmp/tpdb-test-entry-XXXXXX";
    sqlite3 *db;
    FILE *f;
    uint8_t *bytes;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, "
                     "email TEXT, created_at TEXT);"
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 "
                     "FROM n WHERE i < 10000) INSERT INTO users SELECT i, "
                     "'user ' || i, 'user' || i || '@example.com', "
                     "datetime(1700000000 + i * 37, 'unixepoch') FROM n;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    bytes = malloc(*size);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, *size, f), *size);
    fclose(f);
    unlink(path);
    return bytes;
}

static size_t encodedSize(const struct tpdb_txn *txn)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    void *buf;
    size_t len;
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "users.db", 1, 1, txn,
                                     &buf, &len, errmsg),
                     TPDB_OK);
    raft_free(buf);
    return len;
}

static void testRealisticCompression(void **state)
{
    struct tpdb_page one;
    struct tpdb_txn txn;
    size_t size, len_one, len_all;
    uint8_t *bytes = makeRealDatabase(&size);
    (void)state;
    assert_int_equal(size % 4096, 0);
    txn.page_size = 4096;
    txn.db_pages = (uint32_t)(size / 4096);
    assert_true(txn.db_pages > 10);
    /* A leaf page of the table, from the middle of the file. */
    one.pgno = txn.db_pages / 2;
    one.data = bytes + (size_t)(one.pgno - 1) * 4096;
    txn.n_pages = 1;
    txn.pages = &one;
    len_one = encodedSize(&txn);
    txn.n_pages = txn.db_pages;
    txn.pages = calloc(txn.n_pages, sizeof *txn.pages);
    assert_non_null(txn.pages);
    for (uint32_t i = 0; i < txn.n_pages; i++) {
        txn.pages[i].pgno = i + 1;
        txn.pages[i].data = bytes + (size_t)i * 4096;
    }
    len_all = encodedSize(&txn);
    print_message(
        "[ info ] 10k-row table: one page 4100 -> %zu bytes "
        "(%.2fx); %u pages %zu -> %zu bytes (%.2fx)\n",
        len_one, 4100.0 / (double)len_one, (unsigned)txn.n_pages, size, len_all,
        (double)size / (double)len_all);
    assert_true(len_one < 4096);
    roundTrip(TPDB_ENTRY_IMAGE, "users.db", &txn);
    free(txn.pages);
    free(bytes);
}

static void expectInvalid(int type,
                          const char *db,
                          const struct tpdb_txn *txn,
                          int code)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(tpdbEntryEncode(type, db, 1, 1, txn, &buf, &len, errmsg),
                     code);
    assert_null(buf);
    assert_true(strlen(errmsg) > 0);
}

static void testEncodeInvalid(void **state)
{
    char long_name[TPDB_DBNAME_MAX + 2];
    struct testTxn t;
    struct tpdb_page saved;
    (void)state;
    makeTxn(&t, 3, 1024, 2, 2, 10);
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    expectInvalid(TPDB_ENTRY_TXN, NULL, &t.txn, TPDB_INVALID);
    expectInvalid(TPDB_ENTRY_TXN, "", &t.txn, TPDB_INVALID);
    expectInvalid(TPDB_ENTRY_TXN, long_name, &t.txn, TPDB_INVALID);
    expectInvalid(TPDB_ENTRY_TXN, "db", NULL, TPDB_INVALID);
    expectInvalid(0, "db", &t.txn, TPDB_INVALID);
    expectInvalid(99, "db", &t.txn, TPDB_INVALID);
    /* IMAGE needs pages 1..db_pages. */
    expectInvalid(TPDB_ENTRY_IMAGE, "db", &t.txn, TPDB_INVALID);
    const uint32_t bad_sizes[] = {0, 256, 1000, 4095, 131072};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        t.txn.page_size = bad_sizes[i];
        expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    }
    t.txn.page_size = 1024;
    t.txn.n_pages = 0;
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.n_pages = 3;
    t.txn.db_pages = 5; /* last page is 6 */
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.db_pages = 10;
    t.txn.pages[0].pgno = 0;
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.pages[0].pgno = 4; /* equal to the next one */
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.pages[0].pgno = 5; /* decreasing */
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.pages[0].pgno = 2;
    saved = t.txn.pages[1];
    t.txn.pages[1].data = NULL;
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.pages[1] = saved;
    struct tpdb_page *pages = t.txn.pages;
    t.txn.pages = NULL;
    expectInvalid(TPDB_ENTRY_TXN, "db", &t.txn, TPDB_INVALID);
    t.txn.pages = pages;
    roundTrip(TPDB_ENTRY_TXN, "db", &t.txn);
    freeTxn(&t);
}

/* TPDB file entries need 4096-byte pages and their header page 1; the
 * IMAGE rule (every page present) does not apply. */
static void testEncodeInvalidTpdbFile(void **state)
{
    struct testTxn t;
    (void)state;
    makeTxn(&t, 3, 4096, 2, 2, 10);
    expectInvalid(TPDB_ENTRY_TPDBFILE, "x.tpdb", &t.txn, TPDB_INVALID);
    freeTxn(&t);
    makeTxn(&t, 3, 1024, 1, 2, 10);
    expectInvalid(TPDB_ENTRY_TPDBFILE, "x.tpdb", &t.txn, TPDB_INVALID);
    freeTxn(&t);
    makeTxn(&t, 3, 4096, 2, 2, 10);
    expectInvalid(TPDB_ENTRY_TPDBFILE_DELTA, "x.tpdb", &t.txn, TPDB_INVALID);
    freeTxn(&t);
    makeTxn(&t, 3, 4096, 1, 2, 10);
    expectInvalid(TPDB_ENTRY_TPDBFILE_DELTA + 1, "x.tpdb", &t.txn,
                  TPDB_INVALID);
    freeTxn(&t);
}

/* Over LZ4_MAX_INPUT_SIZE: rejected before anything is allocated, so every
 * page may share one buffer. */
static void testEncodeTooBig(void **state)
{
    const uint32_t n = LZ4_MAX_INPUT_SIZE / (4 + 65536) + 1;
    uint8_t *page = calloc(1, 65536);
    struct tpdb_txn txn = {65536, n, n, calloc(n, sizeof(struct tpdb_page))};
    (void)state;
    assert_non_null(page);
    assert_non_null(txn.pages);
    for (uint32_t i = 0; i < n; i++) {
        txn.pages[i].pgno = i + 1;
        txn.pages[i].data = page;
    }
    expectInvalid(TPDB_ENTRY_TXN, "huge", &txn, TPDB_TOOBIG);
    free(txn.pages);
    free(page);
}

static void testPeek(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct testTxn t;
    struct tpdb_entry e;
    void *buf;
    size_t len;
    (void)state;
    makeTxn(&t, 4, 2048, 5, 1, 8);
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "peeked", 3, 4, &t.txn,
                                     &buf, &len, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdbEntryPeek(buf, len, &e, errmsg), TPDB_OK);
    assert_int_equal(e.type, TPDB_ENTRY_TXN);
    assert_int_equal(e.origin, 3);
    assert_int_equal(e.seq, 4);
    assert_string_equal(e.db, "peeked");
    assert_int_equal(e.txn.page_size, 2048);
    assert_int_equal(e.txn.db_pages, 8);
    assert_int_equal(e.txn.n_pages, 4);
    assert_null(e.txn.pages);
    assert_null(e.payload);
    tpdbEntryRelease(&e);
    /* Peek does not look at the payload. */
    ((uint8_t *)buf)[len - 9] ^= 0x5a;
    assert_int_equal(tpdbEntryPeek(buf, len, &e, errmsg), TPDB_OK);
    assert_int_equal(tpdbEntryDecode(buf, len, &e, errmsg), TPDB_CORRUPT);
    assert_int_equal(tpdbEntryPeek(NULL, 0, &e, errmsg), TPDB_CORRUPT);
    raft_free(buf);
    freeTxn(&t);
}

static void expectCorrupt(const void *buf, size_t len)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_entry e;
    assert_int_equal(tpdbEntryDecode(buf, len, &e, errmsg), TPDB_CORRUPT);
    assert_null(e.payload);
    assert_true(strlen(errmsg) > 0);
}

/* Any single damaged byte anywhere in the entry is detected. */
static void testFlipEveryByte(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    const uint8_t masks[] = {0x01, 0x80, 0xff};
    struct testTxn t;
    uint8_t *buf;
    size_t len;
    (void)state;
    makeTxn(&t, 2, 512, 1, 1, 2);
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "flip", 1, 2, &t.txn,
                                     (void **)&buf, &len, errmsg),
                     TPDB_OK);
    for (size_t i = 0; i < len; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            buf[i] ^= masks[m];
            expectCorrupt(buf, len);
            buf[i] ^= masks[m];
        }
    }
    raft_free(buf);
    freeTxn(&t);
}

static void testTruncateEveryLength(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct testTxn t;
    uint8_t *buf, *copy;
    size_t len;
    (void)state;
    makeTxn(&t, 3, 512, 1, 1, 3);
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "cut", 1, 2, &t.txn,
                                     (void **)&buf, &len, errmsg),
                     TPDB_OK);
    for (size_t n = 0; n < len; n++) {
        /* A copy of exactly n bytes, so ASan catches any overread. */
        copy = malloc(n > 0 ? n : 1);
        assert_non_null(copy);
        memcpy(copy, buf, n);
        expectCorrupt(copy, n);
        free(copy);
    }
    /* Trailing bytes are corrupt too. */
    copy = calloc(1, len + 8);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    expectCorrupt(copy, len + 8);
    free(copy);
    raft_free(buf);
    freeTxn(&t);
}

/* Fields of a hand-made entry; the test computes valid checksums so that
 * only the field under test is wrong. */
struct craft {
    int version, type, flags, reserved;
    uint32_t page_size, db_pages, n_pages, raw_len, comp_len, name_len;
    const char *name;
    const uint8_t *raw; /* payload to compress */
    size_t raw_size;
    const uint8_t *comp; /* or an already compressed payload */
    size_t comp_size;    /* its size; comp_len may claim another */
};

static uint8_t *craftEntry(const struct craft *c, size_t *len)
{
    int bound = LZ4_compressBound((int)(c->raw_size + c->comp_size) + 1);
    uint8_t *p = calloc(1, 56 + c->name_len + (size_t)bound + 8);
    int comp;
    assert_non_null(p);
    memcpy(p + 56, c->name, c->name_len);
    if (c->comp != NULL) {
        comp = (int)c->comp_size;
        memcpy(p + 56 + c->name_len, c->comp, c->comp_size);
    } else {
        comp = LZ4_compress_default((const char *)c->raw,
                                    (char *)p + 56 + c->name_len,
                                    (int)c->raw_size, bound);
        assert_true(comp > 0);
    }
    memcpy(p, "TPE1", 4);
    p[4] = (uint8_t)c->version;
    p[5] = (uint8_t)c->type;
    tpdbPut16(p + 6, (uint16_t)c->flags);
    tpdbPut32(p + 24, c->page_size);
    tpdbPut32(p + 28, c->db_pages);
    tpdbPut32(p + 32, c->n_pages);
    tpdbPut32(p + 36, c->raw_len);
    tpdbPut32(p + 40, c->comp_len ? c->comp_len : (uint32_t)comp);
    tpdbPut16(p + 44, (uint16_t)c->name_len);
    tpdbPut16(p + 46, (uint16_t)c->reserved);
    tpdbPut32(p + 48, tpdbCrc32c(0, p + 56, c->name_len + (size_t)comp));
    tpdbPut32(p + 52, tpdbCrc32c(0, p, 52));
    *len = (56 + c->name_len + (size_t)comp + 7) & ~(size_t)7;
    return p;
}

/* Raw payload of pages with the given numbers, 512 bytes each. */
static uint8_t *rawPages(const uint32_t *pgnos, uint32_t n, size_t *size)
{
    uint8_t *raw = calloc(n, 4 + 512);
    assert_non_null(raw);
    for (uint32_t i = 0; i < n; i++) {
        tpdbPut32(raw + i * 516, pgnos[i]);
        memset(raw + i * 516 + 4, (int)i, 512);
    }
    *size = (size_t)n * 516;
    return raw;
}

static struct craft craftDefaults(const uint8_t *raw, size_t size, uint32_t n)
{
    struct craft c = {1,    TPDB_ENTRY_TXN, 0, 0, 512,  10,
                      n,    (uint32_t)size, 0, 2, "db", raw,
                      size, NULL,           0};
    return c;
}

static void expectCrafted(const struct craft *c, int code)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_entry e;
    size_t len;
    uint8_t *p = craftEntry(c, &len);
    assert_int_equal(tpdbEntryDecode(p, len, &e, errmsg), code);
    tpdbEntryRelease(&e);
    free(p);
}

static void testCraftedPageLists(void **state)
{
    const uint32_t good[] = {2, 5, 9}, reversed[] = {2, 9, 5},
                   dup[] = {2, 5, 5}, zero[] = {0, 5, 9}, beyond[] = {2, 5, 11};
    const uint32_t *bad[] = {reversed, dup, zero, beyond};
    struct craft c;
    size_t size;
    uint8_t *raw;
    (void)state;
    raw = rawPages(good, 3, &size);
    c = craftDefaults(raw, size, 3);
    expectCrafted(&c, TPDB_OK); /* the crafting itself is right */
    free(raw);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raw = rawPages(bad[i], 3, &size);
        c = craftDefaults(raw, size, 3);
        expectCrafted(&c, TPDB_CORRUPT);
        free(raw);
    }
    /* An image must hold pages 1..db_pages. */
    raw = rawPages(good, 3, &size);
    c = craftDefaults(raw, size, 3);
    c.type = TPDB_ENTRY_IMAGE;
    c.db_pages = 3;
    expectCrafted(&c, TPDB_CORRUPT);
    c.db_pages = 9;
    expectCrafted(&c, TPDB_CORRUPT);
    /* A TPDB file entry needs 4096-byte pages and page 1 first. */
    c.type = TPDB_ENTRY_TPDBFILE;
    c.db_pages = 10;
    expectCrafted(&c, TPDB_CORRUPT);
    free(raw);
}

static void testCraftedHeaderFields(void **state)
{
    const uint32_t pgnos[] = {1, 2};
    struct craft c, base;
    size_t size;
    uint8_t *raw = rawPages(pgnos, 2, &size);
    (void)state;
    base = craftDefaults(raw, size, 2);
    c = base, c.version = 2;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.type = 0;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.type = 3;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.flags = 1;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.reserved = 1;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.page_size = 1024; /* raw length no longer matches */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.page_size = 516, c.raw_len = 2 * 520;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.n_pages = 3, c.raw_len = 3 * 516; /* payload too short */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.n_pages = 1, c.raw_len = 516; /* payload too long */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.n_pages = 0, c.raw_len = 0;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.db_pages = 1;
    expectCrafted(&c, TPDB_CORRUPT);
    /* n_pages * (4 + page_size) overflowing 32 bits. */
    c = base, c.page_size = 65536, c.n_pages = 65536, c.db_pages = 65536,
    c.raw_len = (uint32_t)(65536ull * 65540);
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.name_len = 0;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.name = "d\0";
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.comp_len = 0xFFFFFFF0u; /* beyond the buffer */
    c.comp = raw, c.comp_size = 100;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.comp_len = 200; /* shorter than the buffer */
    c.comp = raw, c.comp_size = 100;
    expectCrafted(&c, TPDB_CORRUPT);
    free(raw);
}

/* Valid checksums over lz4 data that is not a valid block. */
static void testCraftedBadLz4(void **state)
{
    const uint32_t pgnos[] = {1, 2};
    uint8_t junk[64];
    struct craft c;
    size_t size;
    uint8_t *raw = rawPages(pgnos, 2, &size);
    (void)state;
    for (int k = 0; k < 20; k++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            junk[i] = (uint8_t)nextRand();
        }
        c = craftDefaults(raw, size, 2);
        c.comp = junk;
        c.comp_size = sizeof junk;
        expectCrafted(&c, TPDB_CORRUPT);
    }
    free(raw);
}

static void testDecodeOom(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct testTxn t;
    struct tpdb_entry e;
    void *buf;
    size_t len;
    int rc;
    (void)state;
    makeTxn(&t, 5, 1024, 1, 2, 9);
    tpdbAllocFailAfter(0);
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "oom", 1, 1, &t.txn, &buf,
                                     &len, errmsg),
                     TPDB_NOMEM);
    tpdbAllocFailAfter(-1);
    assert_int_equal(tpdbEntryEncode(TPDB_ENTRY_TXN, "oom", 1, 1, &t.txn, &buf,
                                     &len, errmsg),
                     TPDB_OK);
    for (long n = 0;; n++) {
        tpdbAllocFailAfter(n);
        rc = tpdbEntryDecode(buf, len, &e, errmsg);
        tpdbAllocFailAfter(-1);
        if (rc == TPDB_OK) {
            break;
        }
        assert_int_equal(rc, TPDB_NOMEM);
        assert_null(e.payload);
    }
    assertSameTxn(&t.txn, &e.txn);
    tpdbEntryRelease(&e);
    raft_free(buf);
    freeTxn(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testRoundTripOnePage),
        cmocka_unit_test(testRoundTripManyPages),
        cmocka_unit_test(testRoundTripTenMegabytes),
        cmocka_unit_test(testRoundTripPageSizes),
        cmocka_unit_test(testRoundTripImage),
        cmocka_unit_test(testRoundTripZeroPages),
        cmocka_unit_test(testEncodeRefusesNames),
        cmocka_unit_test(testRoundTripTpdbFile),
        cmocka_unit_test(testEncodeInvalidTpdbFile),
        cmocka_unit_test(testLengthMultipleOfEight),
        cmocka_unit_test(testRealisticCompression),
        cmocka_unit_test(testEncodeInvalid),
        cmocka_unit_test(testEncodeTooBig),
        cmocka_unit_test(testPeek),
        cmocka_unit_test(testFlipEveryByte),
        cmocka_unit_test(testTruncateEveryLength),
        cmocka_unit_test(testCraftedPageLists),
        cmocka_unit_test(testCraftedHeaderFields),
        cmocka_unit_test(testCraftedBadLz4),
        cmocka_unit_test(testDecodeOom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
