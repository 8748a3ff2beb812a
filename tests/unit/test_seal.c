/*
 * Unit tests of raftfsm/seal.c: loading keys (file permissions, lengths,
 * the environment variable, the rotation key), the handshake between two
 * key holders (both ends agree on keys, the expected node id is checked,
 * another key or an altered proof fails, the next key is accepted) and
 * records (open once, replay, reorder and alteration fail).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "raftfsm/seal.h"

#define HEX_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HEX_B "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static char dir[64];

static void keyFile(const char *name, const char *text, mode_t mode, char *path)
{
    snprintf(path, 128, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tpdb-test-seal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    unsetenv(TPDB_SEAL_ENV);
    return tpdbSealInit(NULL) == TPDB_OK ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void testLoadKeys(void **state)
{
    struct tpdb_seal_keys k;
    char errmsg[TPDB_ERRMSG_SIZE];
    char a[128], b[128], open_file[128], short_file[128];
    (void)state;
    keyFile("a", HEX_A "\n", 0600, a);
    keyFile("b", HEX_B, 0400, b);
    keyFile("open", HEX_A, 0644, open_file);
    keyFile("short", "abcd\n", 0600, short_file);
    assert_int_equal(tpdbSealKeysLoad(&k, NULL, NULL, errmsg), TPDB_OK);
    assert_int_equal(k.n, 0);
    assert_int_equal(tpdbSealKeysLoad(&k, a, NULL, errmsg), TPDB_OK);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.key[0][31], 0x1f);
    assert_int_equal(tpdbSealKeysLoad(&k, a, b, errmsg), TPDB_OK);
    assert_int_equal(k.n, 2);
    assert_int_equal(k.key[1][0], 0xff);
    assert_int_equal(tpdbSealKeysLoad(&k, open_file, NULL, errmsg),
                     TPDB_INVALID);
    assert_non_null(strstr(errmsg, "readable by group or others"));
    assert_int_equal(tpdbSealKeysLoad(&k, short_file, NULL, errmsg),
                     TPDB_INVALID);
    assert_non_null(strstr(errmsg, "64 hex digits"));
    assert_int_equal(tpdbSealKeysLoad(&k, "/nonexistent/key", NULL, errmsg),
                     TPDB_IOERR);
    assert_int_equal(tpdbSealKeysLoad(&k, NULL, b, errmsg), TPDB_INVALID);
    assert_int_equal(k.n, 0);

    /* The environment variable, when no file is named. */
    setenv(TPDB_SEAL_ENV, HEX_B, 1);
    assert_int_equal(tpdbSealKeysLoad(&k, NULL, NULL, errmsg), TPDB_OK);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.key[0][0], 0xff);
    assert_int_equal(tpdbSealKeysLoad(&k, a, NULL, errmsg), TPDB_OK);
    assert_int_equal(k.key[0][0], 0x00); /* the file wins */
    setenv(TPDB_SEAL_ENV, HEX_B "00", 1);
    assert_int_equal(tpdbSealKeysLoad(&k, NULL, NULL, errmsg), TPDB_INVALID);
    assert_non_null(strstr(errmsg, TPDB_SEAL_ENV));
    assert_non_null(strstr(errmsg, "got 66 characters"));
    setenv(TPDB_SEAL_ENV,
           "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
           1);
    assert_int_equal(tpdbSealKeysLoad(&k, NULL, NULL, errmsg), TPDB_INVALID);
    unsetenv(TPDB_SEAL_ENV);
}

static void keysOf(struct tpdb_seal_keys *k, const char *hex, const char *next)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    memset(k, 0, sizeof *k);
    k->n = next != NULL ? 2 : 1;
    assert_int_equal(tpdbSealKeyParse(hex, k->key[0], errmsg), TPDB_OK);
    if (next != NULL) {
        assert_int_equal(tpdbSealKeyParse(next, k->key[1], errmsg), TPDB_OK);
    }
}

/* Runs a handshake; returns the first failing step (0: all good). */
static int handshake(const struct tpdb_seal_keys *ck,
                     const struct tpdb_seal_keys *sk,
                     uint64_t expect,
                     int alter_fin,
                     struct tpdb_seal_session *cs,
                     struct tpdb_seal_session *ss)
{
    static const uint8_t h[] = "TPDB handshake bytes";
    struct tpdb_seal_hs chs, shs;
    uint8_t ext[TPDB_SEAL_HELLO], srv[TPDB_SEAL_SERVER], fin[TPDB_SEAL_FINISH];
    char errmsg[TPDB_ERRMSG_SIZE];
    tpdbSealClientHello(&chs, ck, h, sizeof h, ext);
    if (tpdbSealServerHello(&shs, sk, h, sizeof h, ext, 7, srv, errmsg) !=
        TPDB_OK) {
        return 1;
    }
    if (tpdbSealClientFinish(&chs, srv, expect, fin, cs, errmsg) != TPDB_OK) {
        return 2;
    }
    fin[0] ^= (uint8_t)alter_fin;
    if (tpdbSealServerFinish(&shs, fin, ss, errmsg) != TPDB_OK) {
        return 3;
    }
    return 0;
}

static void testHandshake(void **state)
{
    struct tpdb_seal_keys a, b, ba;
    struct tpdb_seal_session cs, ss;
    (void)state;
    keysOf(&a, HEX_A, NULL);
    keysOf(&b, HEX_B, NULL);
    keysOf(&ba, HEX_B, HEX_A);
    assert_int_equal(handshake(&a, &a, 7, 0, &cs, &ss), 0);
    assert_memory_equal(cs.tx, ss.rx, sizeof cs.tx);
    assert_memory_equal(cs.rx, ss.tx, sizeof cs.rx);
    assert_memory_not_equal(cs.tx, cs.rx, sizeof cs.tx);
    assert_int_equal(handshake(&a, &a, 0, 0, &cs, &ss), 0);
    assert_int_equal(handshake(&a, &a, 8, 0, &cs, &ss), 2);
    assert_int_equal(handshake(&a, &b, 0, 0, &cs, &ss), 1);
    assert_int_equal(handshake(&a, &a, 0, 1, &cs, &ss), 3);
    /* During a rotation the server takes either key. */
    assert_int_equal(handshake(&a, &ba, 0, 0, &cs, &ss), 0);
    assert_int_equal(handshake(&b, &ba, 0, 0, &cs, &ss), 0);
}

static void testRecords(void **state)
{
    struct tpdb_seal_keys a;
    struct tpdb_seal_session cs, ss;
    uint8_t r1[64], r2[64], copy[64];
    char errmsg[TPDB_ERRMSG_SIZE];
    size_t n;
    (void)state;
    keysOf(&a, HEX_A, NULL);
    assert_int_equal(handshake(&a, &a, 7, 0, &cs, &ss), 0);
    memcpy(r1 + TPDB_SEAL_LEN, "first record", 12);
    memcpy(r2 + TPDB_SEAL_LEN, "second recor", 12);
    assert_int_equal(tpdbSealRecord(&cs, r1, 12), 12 + TPDB_SEAL_OVERHEAD);
    tpdbSealRecord(&cs, r2, 12);
    assert_memory_not_equal(r1 + TPDB_SEAL_LEN, "first record", 12);
    assert_int_equal(tpdbSealRecordLen(r1, &n, errmsg), TPDB_OK);
    assert_int_equal(n, 12);
    memcpy(copy, r2, sizeof copy);
    /* Out of order: record 2 first fails, and so does anything altered. */
    assert_int_equal(tpdbSealOpen(&ss, copy, 12, errmsg), TPDB_PROTO);
    memcpy(copy, r1, sizeof copy);
    copy[TPDB_SEAL_LEN + 12] ^= 1; /* the tag */
    assert_int_equal(tpdbSealOpen(&ss, copy, 12, errmsg), TPDB_PROTO);
    memcpy(copy, r1, sizeof copy);
    assert_int_equal(tpdbSealOpen(&ss, copy, 12, errmsg), TPDB_OK);
    assert_memory_equal(copy + TPDB_SEAL_LEN, "first record", 12);
    memcpy(copy, r1, sizeof copy);
    assert_int_equal(tpdbSealOpen(&ss, copy, 12, errmsg), TPDB_PROTO);
    assert_int_equal(tpdbSealOpen(&ss, r2, 12, errmsg), TPDB_OK);
    tpdbPut32(copy, 0);
    assert_int_equal(tpdbSealRecordLen(copy, &n, errmsg), TPDB_PROTO);
    tpdbPut32(copy, TPDB_SEAL_RECORD_MAX + 1);
    assert_int_equal(tpdbSealRecordLen(copy, &n, errmsg), TPDB_PROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testLoadKeys),
        cmocka_unit_test(testHandshake),
        cmocka_unit_test(testRecords),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
