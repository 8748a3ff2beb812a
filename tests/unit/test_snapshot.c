/* Unit tests for raftfsm/snapshot.c: 0, 1 and 3 databases, images spanning
 * several chunks, invalid input, corrupt and truncated snapshots, callback
 * errors and allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lz4.h>
#include <raft.h>

#include "raftfsm/snapshot.h"

#define MAX_SEEN 8

/* What the decode callback saw. */
struct seen {
    unsigned n;
    const struct tpdb_snapshot_db *expect; /* compared when not NULL */
    int fail_at;                           /* callback index to fail, or -1 */
    char names[MAX_SEEN][256];
};

static int recordCb(void *arg, const struct tpdb_snapshot_db *db, char *errmsg)
{
    struct seen *s = arg;
    if ((int)s->n == s->fail_at) {
        tpdbErrf(errmsg, "callback refused %s", db->name);
        return TPDB_IOERR;
    }
    assert_true(s->n < MAX_SEEN);
    snprintf(s->names[s->n], sizeof s->names[0], "%s", db->name);
    if (s->expect != NULL) {
        const struct tpdb_snapshot_db *e = &s->expect[s->n];
        assert_string_equal(db->name, e->name);
        assert_int_equal(db->page_size, e->page_size);
        assert_int_equal(db->db_pages, e->db_pages);
        if (e->db_pages > 0) {
            assert_memory_equal(db->image, e->image,
                                (size_t)e->page_size * e->db_pages);
        }
    }
    s->n++;
    return TPDB_OK;
}

static uint8_t *makeImage(uint32_t page_size, uint32_t pages, uint32_t seed)
{
    size_t size = (size_t)page_size * pages;
    uint8_t *p = malloc(size > 0 ? size : 1);
    uint32_t x = seed;
    assert_non_null(p);
    for (size_t i = 0; i < size; i++) {
        /* Mostly compressible, with some noise. */
        x = x * 1103515245u + 12345u;
        p[i] = (i % 64 < 48) ? (uint8_t)(i / 512) : (uint8_t)(x >> 16);
    }
    return p;
}

static void roundTrip(uint64_t applied,
                      const struct tpdb_snapshot_db *dbs,
                      unsigned n)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct seen s = {0, dbs, -1, {{0}}};
    uint64_t got = 0;
    void *buf;
    size_t len;
    assert_int_equal(tpdbSnapshotEncode(applied, dbs, n, &buf, &len, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdbSnapshotDecode(buf, len, &got, recordCb, &s, errmsg),
                     TPDB_OK);
    assert_int_equal(got, applied);
    assert_int_equal(s.n, n);
    raft_free(buf);
}

static void testNoDatabases(void **state)
{
    (void)state;
    roundTrip(42, NULL, 0);
}

static void testOneDatabase(void **state)
{
    uint8_t *img = makeImage(4096, 10, 1);
    struct tpdb_snapshot_db db = {"main.db", 4096, 10, img};
    (void)state;
    roundTrip(7, &db, 1);
    free(img);
}

static void testThreeDatabases(void **state)
{
    uint8_t *a = makeImage(512, 3, 1), *b = makeImage(65536, 2, 2);
    struct tpdb_snapshot_db dbs[3] = {{"a.db", 512, 3, a},
                                      {"empty.db", 4096, 0, NULL},
                                      {"b.db", 65536, 2, b}};
    (void)state;
    roundTrip(UINT64_MAX, dbs, 3);
    free(a);
    free(b);
}

/* 5 MiB and 9 MiB images: two and three chunks, last one partial. */
static void testMultipleChunks(void **state)
{
    uint8_t *a = makeImage(4096, 1280, 3), *b = makeImage(65536, 144, 4);
    struct tpdb_snapshot_db dbs[2] = {{"five", 4096, 1280, a},
                                      {"nine", 65536, 144, b}};
    (void)state;
    roundTrip(100, dbs, 2);
    free(a);
    free(b);
}

static void testEncodeInvalid(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    char long_name[300];
    uint8_t page[1024] = {0};
    struct tpdb_snapshot_db db = {"x", 1024, 1, page};
    void *buf = NULL;
    size_t len;
    (void)state;
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(tpdbSnapshotEncode(1, NULL, 1, &buf, &len, errmsg),
                     TPDB_INVALID);
    db.name = NULL;
    assert_int_equal(tpdbSnapshotEncode(1, &db, 1, &buf, &len, errmsg),
                     TPDB_INVALID);
    db.name = "";
    assert_int_equal(tpdbSnapshotEncode(1, &db, 1, &buf, &len, errmsg),
                     TPDB_INVALID);
    db.name = long_name;
    assert_int_equal(tpdbSnapshotEncode(1, &db, 1, &buf, &len, errmsg),
                     TPDB_INVALID);
    db.name = "x";
    db.page_size = 1000;
    assert_int_equal(tpdbSnapshotEncode(1, &db, 1, &buf, &len, errmsg),
                     TPDB_INVALID);
    db.page_size = 1024;
    db.image = NULL;
    assert_int_equal(tpdbSnapshotEncode(1, &db, 1, &buf, &len, errmsg),
                     TPDB_INVALID);
    assert_null(buf);
}

/* Encodes a small two-database snapshot for the corruption tests. */
static uint8_t *smallSnapshot(size_t *len, uint8_t **imgs)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    void *buf;
    imgs[0] = makeImage(512, 4, 5);
    imgs[1] = makeImage(512, 2, 6);
    struct tpdb_snapshot_db dbs[2] = {{"one", 512, 4, imgs[0]},
                                      {"two", 512, 2, imgs[1]}};
    assert_int_equal(tpdbSnapshotEncode(9, dbs, 2, &buf, len, errmsg), TPDB_OK);
    return buf;
}

static void expectCorrupt(const void *buf, size_t len)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct seen s = {0, NULL, -1, {{0}}};
    uint64_t applied = 0;
    assert_int_equal(
        tpdbSnapshotDecode(buf, len, &applied, recordCb, &s, errmsg),
        TPDB_CORRUPT);
    /* Structure and checksums are checked before any callback. */
    assert_int_equal(s.n, 0);
    assert_true(strlen(errmsg) > 0);
}

static void testTruncateEveryLength(void **state)
{
    uint8_t *imgs[2];
    size_t len;
    uint8_t *buf = smallSnapshot(&len, imgs);
    (void)state;
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n > 0 ? n : 1);
        assert_non_null(copy);
        memcpy(copy, buf, n);
        expectCorrupt(copy, n);
        free(copy);
    }
    uint8_t *longer = calloc(1, len + 1);
    assert_non_null(longer);
    memcpy(longer, buf, len);
    expectCorrupt(longer, len + 1);
    free(longer);
    raft_free(buf);
    free(imgs[0]);
    free(imgs[1]);
}

/* Every damaged byte is caught except in a database name, which no
 * checksum covers (the format has none for it); a damaged page size, page
 * count or chunk length is caught by the cross-checks between them. */
static void testFlipEveryByte(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    uint8_t *imgs[2];
    size_t len;
    uint8_t *buf = smallSnapshot(&len, imgs);
    (void)state;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            struct seen s = {0, NULL, -1, {{0}}};
            uint64_t applied;
            int rc;
            buf[i] ^= (uint8_t)(1u << bit);
            rc = tpdbSnapshotDecode(buf, len, &applied, recordCb, &s, errmsg);
            if (rc == TPDB_OK) {
                /* Only a name byte can change without detection. */
                assert_int_equal(s.n, 2);
                assert_true(strcmp(s.names[0], "one") != 0 ||
                            strcmp(s.names[1], "two") != 0);
            } else {
                assert_int_equal(rc, TPDB_CORRUPT);
                assert_int_equal(s.n, 0);
            }
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    raft_free(buf);
    free(imgs[0]);
    free(imgs[1]);
}

static void testBadChunkCrc(void **state)
{
    uint8_t *imgs[2];
    size_t len;
    uint8_t *buf = smallSnapshot(&len, imgs);
    (void)state;
    /* Header 24, then "one": 2 + 3 + 12, then the first chunk header. */
    size_t crc_at = 24 + 2 + 3 + 12 + 8;
    buf[crc_at] ^= 1;
    expectCorrupt(buf, len);
    buf[crc_at] ^= 1;
    buf[len - 1] ^= 0x40; /* last compressed byte of "two" */
    expectCorrupt(buf, len);
    buf[len - 1] ^= 0x40;
    buf[3] ^= 1; /* magic */
    expectCorrupt(buf, len);
    raft_free(buf);
    free(imgs[0]);
    free(imgs[1]);
}

/* A hand-made one-database snapshot with valid checksums, so that only the
 * field under test is wrong. */
struct craft {
    uint32_t n_dbs;
    const char *name;
    size_t name_len;
    uint32_t page_size, db_pages;
    uint32_t raw_len;   /* claimed raw length of the single chunk */
    const uint8_t *raw; /* compressed into the chunk */
    size_t raw_size;
    const uint8_t *junk; /* or stored as is, when not NULL */
};

static uint8_t *craftSnapshot(const struct craft *c, size_t *len)
{
    int bound = LZ4_compressBound((int)c->raw_size);
    uint8_t *buf = calloc(1, 64 + c->name_len + (size_t)bound);
    uint8_t *p = buf + 24;
    int comp = (int)c->raw_size;
    assert_non_null(buf);
    memcpy(buf, "TPS1", 4);
    tpdbPut32(buf + 4, 1);
    tpdbPut64(buf + 8, 5);
    tpdbPut32(buf + 16, c->n_dbs);
    tpdbPut32(buf + 20, tpdbCrc32c(0, buf, 20));
    tpdbPut16(p, (uint16_t)c->name_len);
    memcpy(p + 2, c->name, c->name_len);
    p += 2 + c->name_len;
    tpdbPut32(p, c->page_size);
    tpdbPut32(p + 4, c->db_pages);
    tpdbPut32(p + 8, 1);
    p += 12;
    if (c->junk != NULL) {
        memcpy(p + 12, c->junk, c->raw_size);
    } else {
        comp = LZ4_compress_default((const char *)c->raw, (char *)p + 12,
                                    (int)c->raw_size, bound);
        assert_true(comp > 0);
    }
    tpdbPut32(p, c->raw_len);
    tpdbPut32(p + 4, (uint32_t)comp);
    tpdbPut32(p + 8, tpdbCrc32c(0, p + 12, (size_t)comp));
    *len = (size_t)(p + 12 + comp - buf);
    return buf;
}

static void expectCrafted(const struct craft *c, int code)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct seen s = {0, NULL, -1, {{0}}};
    uint64_t applied;
    size_t len;
    uint8_t *buf = craftSnapshot(c, &len);
    assert_int_equal(
        tpdbSnapshotDecode(buf, len, &applied, recordCb, &s, errmsg), code);
    assert_int_equal(s.n, code == TPDB_OK ? 1 : 0);
    free(buf);
}

static void testCraftedFields(void **state)
{
    const size_t big = (4u << 20) + 512;
    uint8_t *raw = calloc(1, big);
    uint8_t junk[64];
    struct craft base = {1, "db", 2, 512, 2, 1024, raw, 1024, NULL}, c;
    (void)state;
    assert_non_null(raw);
    memset(junk, 0x5a, sizeof junk);
    expectCrafted(&base, TPDB_OK); /* the crafting itself is right */
    c = base, c.name = "d\0", c.name_len = 2;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.name_len = 0;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.page_size = 1000;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.page_size = 131072;
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.raw_len = 700, c.raw_size = 700; /* not whole pages */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.db_pages = 3; /* chunk holds only 2 pages */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.raw_len = 2048, c.db_pages = 4; /* lz4 gives 1024 bytes */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.n_dbs = 2; /* the second database is missing */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.raw_len = (uint32_t)big, c.raw_size = big,
    c.db_pages = (uint32_t)(big / 512); /* a chunk over 4 MiB */
    expectCrafted(&c, TPDB_CORRUPT);
    c = base, c.junk = junk, c.raw_size = sizeof junk; /* bad lz4 */
    expectCrafted(&c, TPDB_CORRUPT);
    free(raw);
}

static void testCallbackError(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    uint8_t *imgs[2];
    size_t len;
    uint8_t *buf = smallSnapshot(&len, imgs);
    struct seen s = {0, NULL, 1, {{0}}};
    uint64_t applied = 0;
    (void)state;
    assert_int_equal(
        tpdbSnapshotDecode(buf, len, &applied, recordCb, &s, errmsg),
        TPDB_IOERR);
    assert_int_equal(s.n, 1);
    assert_non_null(strstr(errmsg, "callback refused two"));
    raft_free(buf);
    free(imgs[0]);
    free(imgs[1]);
}

static void testDecodeOom(void **state)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    uint8_t *imgs[2];
    size_t len;
    uint8_t *buf = smallSnapshot(&len, imgs);
    uint64_t applied;
    int rc;
    (void)state;
    for (long n = 0;; n++) {
        struct seen s = {0, NULL, -1, {{0}}};
        tpdbAllocFailAfter(n);
        rc = tpdbSnapshotDecode(buf, len, &applied, recordCb, &s, errmsg);
        tpdbAllocFailAfter(-1);
        if (rc == TPDB_OK) {
            assert_int_equal(s.n, 2);
            break;
        }
        assert_int_equal(rc, TPDB_NOMEM);
        assert_int_equal(s.n, (unsigned)n);
    }
    raft_free(buf);
    free(imgs[0]);
    free(imgs[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testNoDatabases),
        cmocka_unit_test(testOneDatabase),
        cmocka_unit_test(testThreeDatabases),
        cmocka_unit_test(testMultipleChunks),
        cmocka_unit_test(testEncodeInvalid),
        cmocka_unit_test(testTruncateEveryLength),
        cmocka_unit_test(testFlipEveryByte),
        cmocka_unit_test(testBadChunkCrc),
        cmocka_unit_test(testCraftedFields),
        cmocka_unit_test(testCallbackError),
        cmocka_unit_test(testDecodeOom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
