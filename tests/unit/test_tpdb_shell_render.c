/*
 * Unit tests for shell/tpdb_shell_render.c: each output mode on one small
 * result (NULL, INTEGER, REAL, TEXT with a space, a newline, a tab and
 * quotes, a BLOB with a NUL), the expected bytes being what the stock
 * sqlite3 3.40 prints for the same rows; zero rows print nothing; mode
 * names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shell/tpdb_shell_render.h"

static void text(struct tpdb_value *v, const char *z)
{
    assert_int_equal(tpdbValueSet(v, TPDB_VAL_TEXT, z, strlen(z), 0), 0);
}

/* a|b: (1,'x y'), (NULL,'multi\nline'), (0.1,x'00ff41'),
 * ('tab\there','"q",'). */
static int setup(void **state)
{
    static const unsigned char blob[] = {0x00, 0xff, 0x41};
    struct tpdb_result *r = tpdbResultNew(2);
    assert_non_null(r);
    assert_int_equal(tpdbResultSetName(r, 0, "a"), 0);
    assert_int_equal(tpdbResultSetName(r, 1, "b"), 0);
    struct tpdb_value *v = tpdbResultAddRow(r);
    assert_int_equal(tpdbValueSet(&v[0], TPDB_VAL_INT, "1", 1, 0), 0);
    text(&v[1], "x y");
    v = tpdbResultAddRow(r);
    text(&v[1], "multi\nline");
    v = tpdbResultAddRow(r);
    assert_int_equal(tpdbValueSetReal(&v[0], 0.1), 0);
    assert_int_equal(tpdbValueSet(&v[1], TPDB_VAL_BLOB, blob, 3, 0), 0);
    v = tpdbResultAddRow(r);
    text(&v[0], "tab\there");
    text(&v[1], "\"q\",");
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    tpdbResultFree(*state);
    return 0;
}

/* Renders r in mode m (headers on) and compares with want (len bytes). */
static void expect(const struct tpdb_result *r,
                   int m,
                   const char *want,
                   size_t len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    assert_non_null(f);
    tpdbRender(f, m, 1, r);
    fclose(f);
    assert_int_equal(size, len);
    assert_memory_equal(buf, want, len);
    free(buf);
}

#define EXPECT(r, m, lit) expect((r), (m), (lit), sizeof(lit) - 1)

static void testList(void **state)
{
    EXPECT(*state, TPDB_MODE_LIST,
           "a|b\n1|x y\n|multi\nline\n0.1|\ntab\there|\"q\",\n");
}

static void testCsv(void **state)
{
    EXPECT(*state, TPDB_MODE_CSV,
           "a,b\r\n1,\"x y\"\r\n,\"multi\nline\"\r\n0.1,\"\"\r\n"
           "\"tab\there\",\"\"\"q\"\",\"\r\n");
}

static void testJson(void **state)
{
    EXPECT(*state, TPDB_MODE_JSON,
           "[{\"a\":1,\"b\":\"x y\"},\n{\"a\":null,\"b\":\"multi\\nline\"},\n"
           "{\"a\":0.10000000000000000555,\"b\":\"\\u0000\xff"
           "A\"},\n{\"a\":\"tab\\there\",\"b\":\"\\\"q\\\",\"}]\n");
}

static void testColumn(void **state)
{
    EXPECT(*state, TPDB_MODE_COLUMN,
           "a             b    \n------------  -----\n1             x y  \n\n"
           "              multi\n              line \n\n0.1                \n"
           "\ntab     here  \"q\", \n");
}

static void testTable(void **state)
{
    EXPECT(*state, TPDB_MODE_TABLE,
           "+--------------+-------+\n|      a       |   b   |\n"
           "+--------------+-------+\n| 1            | x y   |\n"
           "+--------------+-------+\n|              | multi |\n"
           "|              | line  |\n+--------------+-------+\n"
           "| 0.1          |       |\n+--------------+-------+\n"
           "| tab     here | \"q\",  |\n+--------------+-------+\n");
}

static void testLine(void **state)
{
    EXPECT(*state, TPDB_MODE_LINE,
           "    a = 1\n    b = x y\n\n    a = \n    b = multi\nline\n\n"
           "    a = 0.1\n    b = \n\n    a = tab\there\n    b = \"q\",\n");
}

static void testZeroRowsPrintNothing(void **state)
{
    (void)state;
    struct tpdb_result *r = tpdbResultNew(1);
    assert_int_equal(tpdbResultSetName(r, 0, "x"), 0);
    for (int m = TPDB_MODE_LIST; m <= TPDB_MODE_LINE; m++) {
        expect(r, m, "", 0);
    }
    tpdbResultFree(r);
}

static void testModeNames(void **state)
{
    (void)state;
    for (int m = TPDB_MODE_LIST; m <= TPDB_MODE_LINE; m++) {
        assert_int_equal(tpdbModeByName(tpdbModeName(m)), m);
    }
    assert_int_equal(tpdbModeByName("box"), TPDB_MODE_BOX);
    assert_int_equal(tpdbModeByName("markdown"), -1);
    assert_int_equal(tpdbModeByName(""), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testList, setup, teardown),
        cmocka_unit_test_setup_teardown(testCsv, setup, teardown),
        cmocka_unit_test_setup_teardown(testJson, setup, teardown),
        cmocka_unit_test_setup_teardown(testColumn, setup, teardown),
        cmocka_unit_test_setup_teardown(testTable, setup, teardown),
        cmocka_unit_test_setup_teardown(testLine, setup, teardown),
        cmocka_unit_test(testZeroRowsPrintNothing),
        cmocka_unit_test(testModeNames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
