/*
 * Unit tests of raftfsm/wire.c, the check of raft 0.15 messages: genuine
 * messages pass byte for byte however the stream is cut; each refusal
 * (unknown type, header sizes, counts, entry and snapshot sizes, bad
 * configurations, terms too far ahead or near overflow) stops the stream
 * before the refused message's last byte; a header claim allocates only as
 * far as bytes came; out of memory is an error, not a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "raftfsm/wire.h"

struct sink {
    uint8_t buf[8192];
    size_t len;
};

static int sinkCb(void *arg, const uint8_t *p, size_t n)
{
    struct sink *s = arg;
    assert_true(s->len + n <= sizeof s->buf);
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return TPDB_OK;
}

static uint64_t ourTerm = 10;

static uint64_t termCb(void *arg)
{
    (void)arg;
    return ourTerm;
}

/* Appends u64s to b at *n. */
static void put(uint8_t *b, size_t *n, const uint64_t *v, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        tpdbPut64(b + *n, v[i]);
        *n += 8;
    }
}

/* A configuration of two servers, padded to 8: its length. */
static size_t conf(uint8_t *b)
{
    size_t n = 0;
    b[n++] = 1;
    tpdbPut64(b + n, 2);
    n += 8;
    for (uint64_t id = 1; id <= 2; id++) {
        tpdbPut64(b + n, id);
        n += 8;
        memcpy(b + n, "127.0.0.1:9001", 15);
        n += 15;
        b[n++] = 1;
    }
    while (n % 8 != 0) {
        b[n++] = 0;
    }
    return n;
}

/* An AppendEntries with a configuration entry and an 8-byte command. */
static size_t appendEntries(uint8_t *b)
{
    uint8_t c[128];
    size_t cn = conf(c);
    size_t n = 0;
    uint64_t pre[] = {1, 48 + 32};
    uint64_t hdr[] = {2, 0, 0, 1, 2};
    put(b, &n, pre, 2);
    put(b, &n, hdr, 5);
    tpdbPut64(b + n, 1);
    b[n + 8] = 3;
    memset(b + n + 9, 0, 3);
    tpdbPut32(b + n + 12, (uint32_t)cn);
    tpdbPut64(b + n + 16, 2);
    b[n + 24] = 1;
    memset(b + n + 25, 0, 3);
    tpdbPut32(b + n + 28, 8);
    tpdbPut64(b + n + 32, 0);
    n += 40;
    memcpy(b + n, c, cn);
    n += cn;
    memcpy(b + n, "tpdbtest", 8);
    return n + 8;
}

static size_t requestVote(uint8_t *b, uint64_t term)
{
    uint64_t v[] = {3, 40, term, 2, 1, 1, 0};
    size_t n = 0;
    put(b, &n, v, 7);
    return n;
}

static size_t installSnapshot(uint8_t *b)
{
    uint8_t c[128];
    size_t cn = conf(c);
    uint64_t pre[] = {5, 40 + cn + 16};
    uint64_t hdr[] = {3, 768, 3, 1, cn};
    uint64_t tail[] = {5, 0};
    size_t n = 0;
    put(b, &n, pre, 2);
    put(b, &n, hdr, 5);
    memcpy(b + n, c, cn);
    n += cn;
    put(b, &n, tail, 2);
    memcpy(b + n, "snap!", 5);
    return n + 5;
}

/* Feeds p in chunks of `chunk` bytes; returns the feed's last code. */
static int feed(const uint8_t *p, size_t n, size_t chunk, struct sink *s)
{
    struct tpdb_wire_limits limits = {0, 0, 0, termCb, NULL, 0};
    struct tpdb_wire w;
    char errmsg[TPDB_ERRMSG_SIZE];
    int rc = TPDB_OK;
    s->len = 0;
    tpdbWireInit(&w, &limits);
    for (size_t at = 0; at < n && rc == TPDB_OK; at += chunk) {
        size_t take = n - at < chunk ? n - at : chunk;
        rc = tpdbWireFeed(&w, p + at, take, sinkCb, s, errmsg);
    }
    tpdbWireClose(&w);
    return rc;
}

static void testGenuinePasses(void **state)
{
    static struct sink s;
    uint8_t b[4096];
    size_t n = appendEntries(b);
    (void)state;
    n += requestVote(b + n, 11);
    n += installSnapshot(b + n);
    for (size_t chunk = 1; chunk <= n; chunk = chunk * 3 + 1) {
        assert_int_equal(feed(b, n, chunk, &s), TPDB_OK);
        assert_int_equal(s.len, n);
        assert_memory_equal(s.buf, b, n);
    }
}

/* A message is refused, and never whole: raft drops a partial one. */
static void refused(const uint8_t *b, size_t n)
{
    static struct sink s;
    for (size_t chunk = 1; chunk <= n; chunk = chunk * 2 + 1) {
        assert_int_equal(feed(b, n, chunk, &s), TPDB_PROTO);
        assert_true(s.len < n);
    }
}

static void testRefusals(void **state)
{
    uint8_t b[4096];
    size_t n;
    (void)state;
    ourTerm = 10;
    n = requestVote(b, 10 + TPDB_WIRE_TERM_AHEAD);
    assert_int_equal(feed(b, n, n, &(struct sink){0}), TPDB_OK);
    refused(b, requestVote(b, 11 + TPDB_WIRE_TERM_AHEAD));
    refused(b, requestVote(b, UINT64_MAX));
    ourTerm = UINT64_MAX - 5; /* even if raft got there somehow */
    refused(b, requestVote(b, UINT64_MAX));
    ourTerm = 10;
    tpdbPut64(b + 8, 1); /* RequestVote with a 1-byte header */
    refused(b, 17);
    n = appendEntries(b);
    tpdbPut64(b + 8, 1); /* the crash frame */
    refused(b, 17);
    n = appendEntries(b);
    tpdbPut64(b + 16 + 32, 5); /* count disagrees with the header */
    refused(b, n);
    n = appendEntries(b);
    b[16 + 40 + 8] = 9; /* entry type */
    refused(b, n);
    n = appendEntries(b);
    b[16 + 80 + 9 + 8 + 5] = 'x'; /* the configuration's first NUL */
    b[16 + 80 + 9 + 8 + 14] = 'x';
    refused(b, n);
    n = appendEntries(b);
    tpdbPut64(b, 7); /* unknown type */
    refused(b, n);
    n = installSnapshot(b);
    tpdbPut64(b + 16 + 32, 4096); /* configuration length lies */
    refused(b, n);
    n = installSnapshot(b);
    tpdbPut64(b + n - 5 - 16, 1ull << 40); /* snapshot data too big */
    refused(b, n);
}

/* A header that claims the most allowed grows the buffer only with the
 * bytes that came; out of memory is an error. */
static void testHeaderClaims(void **state)
{
    struct tpdb_wire w;
    struct sink s = {{0}, 0};
    uint8_t b[16 + 100];
    char errmsg[TPDB_ERRMSG_SIZE];
    (void)state;
    memset(b, 0, sizeof b);
    tpdbPut64(b, 1);
    tpdbPut64(b + 8, TPDB_WIRE_HEADER_MAX);
    tpdbWireInit(&w, NULL);
    assert_int_equal(tpdbWireFeed(&w, b, sizeof b, sinkCb, &s, errmsg),
                     TPDB_OK);
    assert_true(w.cap <= 256);
    assert_int_equal(s.len, 0);
    tpdbAllocFailAfter(0);
    uint8_t more[300] = {0};
    assert_int_equal(tpdbWireFeed(&w, more, sizeof more, sinkCb, &s, errmsg),
                     TPDB_NOMEM);
    tpdbAllocFailAfter(-1);
    tpdbWireClose(&w);
    tpdbPut64(b + 8, TPDB_WIRE_HEADER_MAX + 16);
    refused(b, 16);

    /* A node's own bound on entries per message bounds the header too. */
    struct tpdb_wire_limits four = {0, 0, 0, NULL, NULL, 4};
    tpdbWireInit(&w, &four);
    tpdbPut64(b + 8, 48 + 16 * 5);
    assert_int_equal(tpdbWireFeed(&w, b, 16, sinkCb, &s, errmsg), TPDB_PROTO);
    tpdbWireClose(&w);
    tpdbWireInit(&w, &four);
    tpdbPut64(b + 8, 48 + 16 * 4);
    assert_int_equal(tpdbWireFeed(&w, b, 16, sinkCb, &s, errmsg), TPDB_OK);
    tpdbWireClose(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testGenuinePasses),
        cmocka_unit_test(testRefusals),
        cmocka_unit_test(testHeaderClaims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
