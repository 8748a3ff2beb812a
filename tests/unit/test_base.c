/* Unit tests for vfs/base.c: error table, errmsg wrapping, allocator
 * failure injection, CRC-32C and the byte-order helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"

static void testStrerror(void **state)
{
    (void)state;
    assert_string_equal(tpdb_strerror(TPDB_OK), "ok");
    assert_non_null(strstr(tpdb_strerror(TPDB_UNKNOWN), "unknown"));
    assert_string_equal(tpdb_strerror(-1), "unknown error code");
    assert_string_equal(tpdb_strerror(TPDB_NRC), "unknown error code");
    for (int rc = 0; rc < TPDB_NRC; rc++) {
        assert_string_not_equal(tpdb_strerror(rc), "unknown error code");
    }
}

static void testErrWrap(void **state)
{
    char msg[TPDB_ERRMSG_SIZE];
    (void)state;
    tpdbErrf(msg, "short write (%d of %d)", 3, 24);
    tpdbErrWrap(msg, "write frame %d", 3);
    tpdbErrWrap(msg, "apply entry %d", 812);
    assert_string_equal(
        msg, "apply entry 812: write frame 3: short write (3 of 24)");
    /* Long context truncates instead of overflowing. */
    char big[2 * TPDB_ERRMSG_SIZE];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    tpdbErrWrap(msg, "%s", big);
    assert_int_equal(strlen(msg), TPDB_ERRMSG_SIZE - 1);
    tpdbErrf(NULL, "ignored");
    tpdbErrWrap(NULL, "ignored");
}

static void testAllocFail(void **state)
{
    (void)state;
    tpdbAllocFailAfter(2);
    void *a = tpdb_malloc(8);
    void *b = tpdb_calloc(2, 8);
    void *c = tpdb_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_null(tpdb_strdup("x"));
    tpdbAllocFailAfter(-1);
    char *d = tpdb_strdup("hello");
    assert_string_equal(d, "hello");
    tpdb_free(a);
    tpdb_free(b);
    tpdb_free(d);
    tpdb_free(NULL);
}

static void testCrc32c(void **state)
{
    (void)state;
    /* The standard check value of CRC-32C. */
    assert_int_equal(tpdbCrc32c(0, "123456789", 9), 0xE3069283u);
    /* Incremental equals one-shot. */
    uint32_t c = tpdbCrc32c(0, "1234", 4);
    assert_int_equal(tpdbCrc32c(c, "56789", 5), 0xE3069283u);
    assert_int_equal(tpdbCrc32c(0, "", 0), 0);
    /* Whichever path this CPU takes agrees with the table, at every length
     * and alignment, chained or not. */
    uint8_t buf[300];
    for (unsigned i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)(i * 151 + 7);
    }
    for (unsigned off = 0; off < 9; off++) {
        for (unsigned n = 0; off + n <= sizeof buf; n += 13) {
            assert_int_equal(tpdbCrc32c(0x1234, buf + off, n),
                             tpdbCrc32cPortable(0x1234, buf + off, n));
        }
    }
}

static void testLogLevel(void **state)
{
    (void)state;
    assert_int_equal(tpdbLogParseLevel("error"), TPDB_LOG_ERROR);
    assert_int_equal(tpdbLogParseLevel("WARN"), TPDB_LOG_WARN);
    assert_int_equal(tpdbLogParseLevel("info"), TPDB_LOG_INFO);
    assert_int_equal(tpdbLogParseLevel("Debug"), TPDB_LOG_DEBUG);
    assert_int_equal(tpdbLogParseLevel("none"), TPDB_LOG_NONE);
    assert_int_equal(tpdbLogParseLevel("loud"), -1);
    assert_int_equal(tpdbLogParseLevel(""), -1);
    assert_int_equal(tpdbLogParseLevel(NULL), -1);
    tpdbLogSetLevel(TPDB_LOG_WARN);
    assert_true(tpdbLogEnabled(TPDB_LOG_ERROR));
    assert_true(tpdbLogEnabled(TPDB_LOG_WARN));
    assert_false(tpdbLogEnabled(TPDB_LOG_INFO));
    tpdbLogSetLevel(TPDB_LOG_NONE);
    assert_false(tpdbLogEnabled(TPDB_LOG_ERROR));
}

/* Paths become URIs SQLite reads back as the same path. */
static void testUriOfPath(void **state)
{
    (void)state;
    char *u = tpdbUriOfPath("/d/%41 #1?.db", "tpdb_internal=1");
    assert_string_equal(u, "file:///d/%2541 %231%3F.db?tpdb_internal=1");
    tpdb_free(u);
    u = tpdbUriOfPath("//srv/x.db", NULL);
    assert_string_equal(u, "file:////srv/x.db");
    tpdb_free(u);
    u = tpdbUriOfPath("rel/x.db", NULL);
    assert_string_equal(u, "file:rel/x.db");
    tpdb_free(u);
    tpdbAllocFailAfter(0);
    assert_null(tpdbUriOfPath("/x", NULL));
    tpdbAllocFailAfter(-1);
}

static void testByteOrder(void **state)
{
    uint8_t b[8];
    (void)state;
    tpdbPut32(b, 0x01020304u);
    assert_int_equal(b[0], 4);
    assert_int_equal(tpdbGet32(b), 0x01020304u);
    tpdbPutBe32(b, 0x01020304u);
    assert_int_equal(b[0], 1);
    assert_int_equal(tpdbGetBe32(b), 0x01020304u);
    tpdbPut64(b, 0x0102030405060708ull);
    assert_int_equal(tpdbGet64(b), 0x0102030405060708ull);
    tpdbPut16(b, 0xBEEF);
    assert_int_equal(tpdbGet16(b), 0xBEEF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testStrerror),  cmocka_unit_test(testErrWrap),
        cmocka_unit_test(testAllocFail), cmocka_unit_test(testCrc32c),
        cmocka_unit_test(testByteOrder), cmocka_unit_test(testLogLevel),
        cmocka_unit_test(testUriOfPath),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
