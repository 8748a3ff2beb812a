/*
 * tpdbd's command line: TrashPandaDB's exact error texts for a missing
 * --node-id and a --peer naming this node (from the real program, with
 * exit code 1), --help listing every flag (exit 0), the string-to-raft id
 * mapping (decimal ids are themselves, others a 63-bit hash, stable
 * across runs), IPv4 resolution and the advertised address for 0.0.0.0.
 * Parsing is tested in-process against shell/tpdbd_flags.c; the exit
 * codes and texts against the built tpdbd.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "base/base.h"
#include "shell/tpdbd_flags.h"
#include "tests/integration/harness.h"

#define RUN_MS 20000

static char errmsg[TPDB_ERRMSG_SIZE];

/* Runs tpdbd with args; returns its exit status and its stdout and
 * stderr (caller frees). */
static int runTpdbd(const char *const *args, char **out, char **err)
{
    const char *argv[32];
    char prog[HARNESS_PATH_MAX];
    struct harness_proc *p = NULL;
    int status = -1, n = 1;
    snprintf(prog, sizeof prog, "%s/shell/tpdbd", getenv("TPDB_BUILD_ROOT"));
    argv[0] = prog;
    for (; args[n - 1] != NULL && n < 31; n++) {
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    assert_int_equal(harnessProcReadAll(p, HARNESS_STDOUT, RUN_MS, out, errmsg),
                     TPDB_OK);
    assert_int_equal(harnessProcReadAll(p, HARNESS_STDERR, RUN_MS, err, errmsg),
                     TPDB_OK);
    assert_int_equal(harnessProcWait(p, RUN_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void testNodeIdRequired(void **state)
{
    const char *args[] = {"--raft", "127.0.0.1:1", NULL};
    char *out, *err;
    (void)state;
    assert_int_equal(runTpdbd(args, &out, &err), 1);
    assert_string_equal(err,
                        "ERROR: --node-id is required (or use --dns-peers so "
                        "it can be auto-detected)\n");
    tpdb_free(out);
    tpdb_free(err);
}

static void testPeerNamesSelf(void **state)
{
    const char *args[] = {
        "--node-id",     "a", "--peer", "b=127.0.0.1:2", "--peer",
        "a=127.0.0.1:1", NULL};
    char *out, *err;
    (void)state;
    assert_int_equal(runTpdbd(args, &out, &err), 1);
    assert_string_equal(err,
                        "ERROR: --peer includes this node's own ID 'a': "
                        "b=127.0.0.1:2, a=127.0.0.1:1. Remove it.\n");
    tpdb_free(out);
    tpdb_free(err);
}

static void testHelpListsEveryFlag(void **state)
{
    static const char *const flags[] = {
        "--node-id",         "--raft",
        "--client",          "--peer",
        "--client-peer",     "--join",
        "--data-dir",        "--log-level",
        "--election-ms",     "--ready-ms",
        "--commit-ms",       "--max-clients",
        "--key-file",        "--key-file-next",
        "--insecure",        "-h, --help",
        "--txn-idle-ms",     "--role",
        "--dns-peers",       "--dns-raft-port",
        "--dns-client-port", "--dns-minimum-cluster-size",
        "--metrics"};
    const char *args[] = {"--help", NULL};
    const char *shortArgs[] = {"-h", NULL};
    char *out, *err, *out2, *err2;
    (void)state;
    assert_int_equal(runTpdbd(args, &out, &err), 0);
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (strstr(out, flags[i]) == NULL) {
            fail_msg("--help does not list %s:\n%s", flags[i], out);
        }
    }
    assert_int_equal(runTpdbd(shortArgs, &out2, &err2), 0);
    assert_string_equal(out, out2);
    tpdb_free(out);
    tpdb_free(err);
    tpdb_free(out2);
    tpdb_free(err2);
}

/* Parses a NULL-terminated argument list (argv[0] added). */
static int parse(struct tpdbd_config *cfg, char *err, const char *first, ...)
{
    char *argv[40] = {"tpdbd"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 39;
         a = va_arg(ap, const char *)) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    err[0] = '\0';
    return tpdbdParseArgs(argc, argv, cfg, err, 1024);
}

static void testRaftIds(void **state)
{
    (void)state;
    assert_int_equal(tpdbdRaftId("1"), 1);
    assert_int_equal(tpdbdRaftId("999999999999999999"), 999999999999999999ull);
    /* FNV-1a of "a" is 0xaf63dc4c8601ec8c; folded to 63 bits, bit 62 set. */
    assert_int_equal(tpdbdRaftId("a"), 0x6f63dc4c8601ec8cull);
    const char *others[] = {"0",      "01",       "1000000000000000000",
                            "node-1", "10.0.0.1", ""};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        uint64_t id = tpdbdRaftId(others[i]);
        assert_true(id >> 62 == 1);
        assert_int_equal(id, tpdbdRaftId(others[i]));
    }
    assert_int_not_equal(tpdbdRaftId("node-1"), tpdbdRaftId("node-2"));
}

static void testParseMembers(void **state)
{
    static struct tpdbd_config cfg;
    char err[1024];
    (void)state;
    assert_int_equal(
        parse(&cfg, err, "--node-id=n1", "--raft", "localhost:7001", "--peer",
              "n2=127.0.0.1:7002", "--peer=n3=localhost:7003", "--client-peer",
              "n2=127.0.0.1:8002", NULL),
        0);
    assert_string_equal(cfg.node_id, "n1");
    assert_string_equal(cfg.raft_addr, "127.0.0.1:7001");
    assert_string_equal(cfg.client_listen, "127.0.0.1:9002");
    assert_int_equal(cfg.npeers, 2);
    assert_int_equal(cfg.nmembers, 2);
    assert_string_equal(cfg.members[0].raft, "127.0.0.1:7002");
    assert_string_equal(cfg.members[0].client, "127.0.0.1:8002");
    assert_string_equal(cfg.members[1].raft, "127.0.0.1:7003");
    assert_string_equal(cfg.members[1].client, "");
    assert_ptr_equal(tpdbdMemberByRaftId(&cfg, tpdbdRaftId("n3")),
                     &cfg.members[1]);
    assert_null(tpdbdMemberByRaftId(&cfg, 12345));
}

static void testAdvertisedAddress(void **state)
{
    static struct tpdbd_config cfg;
    char err[1024];
    (void)state;
    /* 0.0.0.0 becomes the address routing to the first peer. */
    assert_int_equal(parse(&cfg, err, "--node-id", "n1", "--peer",
                           "n2=127.0.0.1:7002", NULL),
                     0);
    assert_string_equal(cfg.raft_addr, "127.0.0.1:9001");
    assert_int_equal(
        parse(&cfg, err, "--node-id", "n1", "--raft", "0.0.0.0:7001", NULL), 0);
    assert_string_equal(cfg.raft_addr, "127.0.0.1:7001");
}

/* --dns-peers makes --node-id optional and sets the defaults of --raft
 * and --client from the DNS ports; the members come later (test_tpdbd_dns). */
static void testParseDns(void **state)
{
    static struct tpdbd_config cfg;
    char err[1024];
    (void)state;
    assert_int_equal(
        parse(&cfg, err, "--dns-peers", "db.test", "--dns-raft-port", "7001",
              "--dns-client-port=8001", NULL),
        0);
    assert_string_equal(cfg.node_id, "");
    assert_string_equal(cfg.dns_peers, "db.test");
    assert_int_equal(cfg.dns_min, 3);
    assert_string_equal(cfg.raft_listen, "0.0.0.0:7001");
    assert_string_equal(cfg.client_listen, "127.0.0.1:8001");
    assert_int_equal(cfg.nmembers, 0);
    assert_int_equal(parse(&cfg, err, "--node-id", "n1", "--metrics",
                           "localhost:9100", NULL),
                     0);
    assert_string_equal(cfg.metrics, "127.0.0.1:9100");
    assert_int_equal(cfg.dns_raft_port, 9001);
}

static void testParseErrors(void **state)
{
    static struct tpdbd_config cfg;
    static const struct {
        const char *args[6];
        const char *error;
    } cases[] = {
        {{"--node-id", "n1", "--bogus", "1"},
         "ERROR: unknown flag '--bogus' (see --help)"},
        {{"--node-id", "n1", "--peer", "n2"},
         "ERROR: --peer 'n2': expected ID=HOST:PORT"},
        {{"--node-id", "n1", "--peer", "n2=127.0.0.1:0"},
         "ERROR: --peer '127.0.0.1:0': bad port"},
        {{"--node-id", "n1", "--peer", "n2=127.0.0.1:1", "--peer",
          "n2=127.0.0.1:2"},
         "ERROR: --peer names 'n2' twice"},
        {{"--node-id", "n1", "--raft", "nosuchhost.invalid:1"}, NULL},
        {{"--node-id", "n 1"}, NULL},
        {{"--node-id", "n1", "--election-ms", "0"}, NULL},
        {{"--node-id", "n1", "--log-level", "loud"}, NULL},
        {{"--dns-peers", "db.test", "--peer", "a=127.0.0.1:1"},
         "ERROR: --dns-peers names the initial voters: it cannot be combined "
         "with --peer"},
        {{"--dns-peers", "db.test", "--dns-minimum-cluster-size", "0"},
         "ERROR: --dns-minimum-cluster-size '0': expected a number from 1 to "
         "16"},
        {{"--node-id", "n1", "--dns-raft-port", "7001"},
         "ERROR: --dns-raft-port, --dns-client-port and "
         "--dns-minimum-cluster-size need --dns-peers"},
        {{"--dns-peers", "db.test", "--raft", "127.0.0.1:7001"},
         "ERROR: --raft port 7001 differs from --dns-raft-port 9001: the "
         "other nodes reach this one at its IP and --dns-raft-port"},
        {{"--node-id", "n1", "--metrics", "127.0.0.1:0"},
         "ERROR: --metrics '127.0.0.1:0': bad port"},
        {{"--node-id"}, "ERROR: --node-id needs a value"},
    };
    char err[1024];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i].args;
        int rc = parse(&cfg, err, a[0], a[1], a[2], a[3], a[4], a[5], NULL);
        if (rc != -1 || strncmp(err, "ERROR: ", 7) != 0 ||
            (cases[i].error != NULL && strcmp(err, cases[i].error) != 0)) {
            fail_msg("case %zu: rc %d, '%s'", i, rc, err);
        }
    }
}

static void testTxnIdleMs(void **state)
{
    static struct tpdbd_config cfg;
    char err[1024];
    (void)state;
    assert_int_equal(parse(&cfg, err, "--node-id", "n1", NULL), 0);
    assert_int_equal(cfg.txn_idle_ms, 15000);
    assert_int_equal(
        parse(&cfg, err, "--node-id", "n1", "--txn-idle-ms=250", NULL), 0);
    assert_int_equal(cfg.txn_idle_ms, 250);
    assert_int_equal(
        parse(&cfg, err, "--node-id", "n1", "--txn-idle-ms", "0", NULL), -1);
    assert_string_equal(err,
                        "ERROR: --txn-idle-ms '0': expected a number "
                        "from 1 to 3600000");
}

static void testRole(void **state)
{
    static struct tpdbd_config cfg;
    char err[1024];
    (void)state;
    assert_int_equal(parse(&cfg, err, "--node-id", "n1", NULL), 0);
    assert_string_equal(cfg.role, "voter");
    assert_int_equal(
        parse(&cfg, err, "--node-id", "n1", "--role", "standby", NULL), 0);
    assert_string_equal(cfg.role, "standby");
    assert_int_equal(parse(&cfg, err, "--node-id", "n1", "--role=boss", NULL),
                     -1);
    assert_string_equal(
        err, "ERROR: --role 'boss': expected voter, standby or spare");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testRaftIds),
        cmocka_unit_test(testRole),
        cmocka_unit_test(testParseMembers),
        cmocka_unit_test(testAdvertisedAddress),
        cmocka_unit_test(testParseDns),
        cmocka_unit_test(testParseErrors),
        cmocka_unit_test(testTxnIdleMs),
        cmocka_unit_test_teardown(testNodeIdRequired, harnessTeardown),
        cmocka_unit_test_teardown(testPeerNamesSelf, harnessTeardown),
        cmocka_unit_test_teardown(testHelpListsEveryFlag, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
