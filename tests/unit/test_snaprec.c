/* Unit tests for the snapshot record codec (raftfsm/snaprec.c): round trip,
 * every truncation and every flipped byte refused, bad input to the
 * encoder refused, out of memory reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>

#include "raftfsm/snaprec.h"

static uint8_t image[3 * 4096];

#define N_DBS 4

static unsigned fill(struct tpdb_snaprec_db *dbs)
{
    memset(dbs, 0, N_DBS * sizeof *dbs);
    for (unsigned i = 0; i < sizeof image; i++) {
        image[i] = (uint8_t)(i * 7);
    }
    strcpy(dbs[0].name, "app.db");
    dbs[0].kind = TPDB_SNAPREC_SQLITE;
    dbs[0].db_pages = 1;
    strcpy(dbs[1].name, "empty.db");
    dbs[1].kind = TPDB_SNAPREC_SQLITE;
    strcpy(dbs[2].name, "legacy.tpdb");
    dbs[2].kind = TPDB_SNAPREC_TPDBFILE;
    dbs[2].page_size = 4096;
    dbs[2].db_pages = 3;
    dbs[2].image = image;
    strcpy(dbs[3].name, "big.tpdb");
    dbs[3].kind = TPDB_SNAPREC_TPDBREF;
    dbs[3].page_size = 4096;
    dbs[3].db_pages = 50000; /* by reference: no image */
    return N_DBS;
}

static void testRoundTrip(void **state)
{
    struct tpdb_snaprec_db in[N_DBS];
    struct tpdb_snaprec_db *out = NULL;
    char errmsg[TPDB_ERRMSG_SIZE];
    void *buf = NULL;
    size_t len = 0;
    unsigned n = 0;
    uint64_t index = 0;
    (void)state;
    unsigned k = fill(in);
    assert_int_equal(
        tpdbSnaprecEncode(123456789012ull, in, k, &buf, &len, errmsg), TPDB_OK);
    assert_true(tpdbSnaprecIs(buf, len));
    assert_int_equal(tpdbSnaprecDecode(buf, len, &index, &out, &n, errmsg),
                     TPDB_OK);
    assert_int_equal(index, 123456789012ull);
    assert_int_equal(n, N_DBS);
    for (unsigned i = 0; i < n; i++) {
        assert_string_equal(out[i].name, in[i].name);
        assert_int_equal(out[i].kind, in[i].kind);
        assert_int_equal(out[i].db_pages, in[i].db_pages);
    }
    assert_null(out[0].image);
    assert_memory_equal(out[2].image, image, sizeof image);
    assert_null(out[3].image);
    assert_int_equal(out[3].page_size, 4096);
    /* Only the legacy kind's image takes room. */
    assert_true(len < sizeof image + 200);
    tpdb_free(out);
    raft_free(buf);
}

static void testDamageRefused(void **state)
{
    struct tpdb_snaprec_db in[N_DBS];
    struct tpdb_snaprec_db *out = NULL;
    char errmsg[TPDB_ERRMSG_SIZE];
    void *buf = NULL;
    size_t len = 0;
    unsigned n = 0;
    uint64_t index = 0;
    (void)state;
    /* Without the TPDB image, so that every byte can be flipped fast. */
    assert_int_equal(tpdbSnaprecEncode(7, in, fill(in) - 1, &buf, &len, errmsg),
                     TPDB_OK);
    uint8_t *p = buf;
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(tpdbSnaprecDecode(p, cut, &index, &out, &n, errmsg),
                         TPDB_CORRUPT);
        assert_null(out);
    }
    for (size_t i = 0; i < len; i++) {
        p[i] ^= 0x20;
        assert_int_equal(tpdbSnaprecDecode(p, len, &index, &out, &n, errmsg),
                         TPDB_CORRUPT);
        p[i] ^= 0x20;
    }
    assert_int_equal(tpdbSnaprecDecode(NULL, 0, &index, &out, &n, errmsg),
                     TPDB_CORRUPT);
    raft_free(buf);
}

static void testEncodeRefusesBadInput(void **state)
{
    struct tpdb_snaprec_db in[N_DBS];
    char errmsg[TPDB_ERRMSG_SIZE];
    void *buf = NULL;
    size_t len = 0;
    (void)state;
    fill(in);
    in[0].name[0] = '\0';
    assert_int_equal(tpdbSnaprecEncode(1, in, 3, &buf, &len, errmsg),
                     TPDB_INVALID);
    fill(in);
    in[1].kind = 9;
    assert_int_equal(tpdbSnaprecEncode(1, in, 3, &buf, &len, errmsg),
                     TPDB_INVALID);
    fill(in);
    in[2].image = NULL;
    assert_int_equal(tpdbSnaprecEncode(1, in, 3, &buf, &len, errmsg),
                     TPDB_INVALID);
    assert_null(buf);
}

static void testOom(void **state)
{
    struct tpdb_snaprec_db in[N_DBS];
    struct tpdb_snaprec_db *out = NULL;
    char errmsg[TPDB_ERRMSG_SIZE];
    void *buf = NULL;
    size_t len = 0;
    unsigned n = 0;
    uint64_t index = 0;
    (void)state;
    assert_int_equal(tpdbSnaprecEncode(5, in, fill(in), &buf, &len, errmsg),
                     TPDB_OK);
    tpdbAllocFailAfter(0);
    int rc = tpdbSnaprecDecode(buf, len, &index, &out, &n, errmsg);
    tpdbAllocFailAfter(-1);
    assert_int_equal(rc, TPDB_NOMEM);
    assert_null(out);
    raft_free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testRoundTrip),
        cmocka_unit_test(testDamageRefused),
        cmocka_unit_test(testEncodeRefusesBadInput),
        cmocka_unit_test(testOom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
