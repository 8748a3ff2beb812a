/*
 * The cluster key end to end, on clusters of real tpdb-testnode processes:
 * a proxy in front of one member sees every row in the clear without a key
 * and no row with one; a node with a wrong key or none cannot join, and a
 * member restarted with a wrong key is cut off (its peers refuse it and it
 * refuses them) until it has the right key again; a client holding the key
 * whose record is altered or replayed is cut off; and a rolling rotation
 * from key A to key B keeps committing throughout; and without a key a
 * node listens beyond loopback only with insecure=1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/base.h"
#include "raftfsm/transport.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"
#include "tests/integration/poke.h"
#include "tests/integration/proxy.h"

#define WAIT_MS 60000
#define BASE "election_ms=400&heartbeat_ms=40&ready_ms=60000"

static char errmsg[TPDB_ERRMSG_SIZE];

static void commit(struct nodes *c, int *leader, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    for (int attempt = 0; attempt < 100; attempt++) {
        char *line = nodesCommand(c, *leader, cmd);
        int ok = line != NULL && strncmp(line, "ok", 2) == 0;
        tpdb_free(line);
        if (ok) {
            return;
        }
        *leader = nodesFindLeader(c, WAIT_MS);
    }
    fail_msg("write '%s' never acknowledged", sql);
}

/* Writes key file <dir>/name made from seed; the key into key if not NULL.
 */
static void keyFile(struct nodes *c,
                    const char *name,
                    unsigned seed,
                    uint8_t *key)
{
    char path[HARNESS_PATH_MAX + 16];
    int n = snprintf(path, sizeof path, "%s/%s", c->dir, name);
    assert_true(n > 0 && (size_t)n < sizeof path);
    pokeKeyFile(path, seed, key);
}

/* Sets the URI parameters of the next starts: extra, then BASE (SQLite
 * takes a parameter's first value, so extra overrides BASE). */
static void params(struct nodes *c, const char *extra)
{
    char all[sizeof c->params];
    int n = snprintf(all, sizeof all, "%s%s%s", extra,
                     extra[0] != '\0' ? "&" : "", BASE);
    assert_true(n > 0 && (size_t)n < sizeof all);
    harnessScaleParams(all, c->params, sizeof c->params);
}

/* "key_file=<dir>/<name>" into buf. */
static void keyParam(struct nodes *c,
                     const char *what,
                     const char *name,
                     char *buf,
                     size_t size)
{
    int n = snprintf(buf, size, "%s=%s/%s", what, c->dir, name);
    assert_true(n > 0 && (size_t)n < size);
}

struct countWait {
    struct nodes *c;
    int node;
    const char *want;
};

static int hasCount(void *arg)
{
    struct countWait *w = arg;
    char *row = nodesQueryFirst(w->c, w->node, "SELECT count(*) FROM t");
    int ok = row != NULL && strcmp(row, w->want) == 0;
    tpdb_free(row);
    return ok;
}

static void waitCount(struct nodes *c, int i, int n)
{
    char want[32];
    snprintf(want, sizeof want, "row %d", n);
    struct countWait w = {c, i, want};
    if (harnessPollUntil(hasCount, &w, WAIT_MS, 50) != TPDB_OK) {
        fail_msg("node %d never had %d rows", i + 1, n);
    }
}

static void startAll(struct nodes *c, int n)
{
    for (int i = 0; i < n; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < n; i++) {
        nodesWaitReady(c, i);
    }
}

/* Ends member i with "quit" and waits for the process. */
static void stop(struct nodes *c, int i)
{
    char *line = nodesCommand(c, i, "quit");
    tpdb_free(line);
    assert_int_equal(harnessProcWait(c->procs[i], NODES_IO_MS, NULL, errmsg),
                     TPDB_OK);
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
}

/* Waits for member i's process to end (a start that failed). */
static void waitExit(struct nodes *c, int i)
{
    assert_int_equal(harnessProcWait(c->procs[i], WAIT_MS, NULL, errmsg),
                     TPDB_OK);
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
}

static size_t members(struct nodes *c, int i)
{
    json_t *o = nodesStatus(c, i);
    size_t n = o != NULL ? json_array_size(json_object_get(o, "members")) : 0;
    json_decref(o);
    return n;
}

/* Runs a 3-node cluster whose members are reached through proxies, writes
 * a row holding a random marker, and returns whether a proxy saw it. */
static int proxySeesMarker(int keyed)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    struct proxy *p = tpdb_calloc(3, sizeof *p);
    char marker[33];
    char sql[128];
    int leader;
    int saw = 0;
    size_t total = 0;
    assert_non_null(c);
    assert_non_null(p);
    nodesInit(c, 3, 3, BASE);
    char kp[600] = "";
    if (keyed) {
        keyFile(c, "a.key", 1, NULL);
        keyParam(c, "key_file", "a.key", kp, sizeof kp);
    }
    /* Member i listens on its port but is known (its bind, advertised in
     * every handshake, and in the peers list) by its proxy's port, so all
     * raft traffic to it crosses the proxy. */
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        proxyStart(&p[i], c->ports[i]);
        len += (size_t)snprintf(c->peers + len, sizeof c->peers - len,
                                "%s%d@127.0.0.1:%u", i > 0 ? "," : "", i + 1,
                                p[i].port);
    }
    for (int i = 0; i < 3; i++) {
        char extra[800];
        int n = snprintf(extra, sizeof extra, "listen=127.0.0.1:%u%s%s",
                         c->ports[i], keyed ? "&" : "", kp);
        assert_true(n > 0 && (size_t)n < sizeof extra);
        params(c, extra);
        c->ports[i] = p[i].port;
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < 3; i++) {
        nodesWaitReady(c, i);
    }
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    for (int i = 0; i < 32; i++) {
        marker[i] = "0123456789abcdef"[(unsigned)rand() % 16];
    }
    marker[32] = '\0';
    snprintf(sql, sizeof sql, "INSERT INTO t(v) VALUES ('%s')", marker);
    commit(c, &leader, sql);
    for (int i = 0; i < 3; i++) {
        waitCount(c, i, 1);
    }
    nodesClose(c);
    for (int i = 0; i < 3; i++) {
        proxyStop(&p[i]);
        print_message("[ info ] proxy %d: %lu connections, %zu bytes%s\n", i,
                      p[i].connections, p[i].kept_len, keyed ? ", sealed" : "");
        total += p[i].kept_len;
        saw |= proxySaw(&p[i], marker, sizeof marker - 1);
        proxyFree(&p[i]);
    }
    /* Heartbeats and both entries (lz4 makes their pages small) went
     * through. */
    assert_true(total > 1000);
    tpdb_free(p);
    tpdb_free(c);
    return saw;
}

static void testProxySeesNoPlaintext(void **state)
{
    (void)state;
    srand((unsigned)getpid());
    /* Without a key the row crosses the proxy in the clear: the search
     * works. With one it does not. */
    assert_true(proxySeesMarker(0));
    assert_false(proxySeesMarker(1));
}

static void testWrongKeyCannotJoin(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char kp[1400];
    char a[600];
    int leader;
    (void)state;
    assert_non_null(c);
    nodesInit(c, 4, 3, BASE);
    keyFile(c, "a.key", 1, NULL);
    keyFile(c, "b.key", 2, NULL);
    keyParam(c, "key_file", "a.key", a, sizeof a);
    params(c, a);
    startAll(c, 3);
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    long long refused = nodesStat(c, leader, "refused");

    /* A wrong key, then none: the start fails, nobody was added. */
    keyParam(c, "key_file", "b.key", kp, sizeof kp);
    strcat(kp, "&ready_ms=3000");
    params(c, kp);
    nodesStart(c, 3, leader);
    waitExit(c, 3);
    params(c, "ready_ms=3000");
    nodesStart(c, 3, leader);
    waitExit(c, 3);
    assert_int_equal(members(c, leader), 3);
    assert_true(nodesStat(c, leader, "refused") >= refused + 2);

    /* The right key: it joins and gets the table. */
    params(c, a);
    nodesStart(c, 3, leader);
    nodesWaitReady(c, 3);
    commit(c, &leader, "INSERT INTO t(v) VALUES ('x')");
    waitCount(c, 3, 1);
    assert_int_equal(members(c, leader), 4);
    nodesClose(c);
    tpdb_free(c);
}

struct statWait {
    struct nodes *c;
    int node;
    const char *key;
    long long above;
};

static int statAbove(void *arg)
{
    struct statWait *w = arg;
    return nodesStat(w->c, w->node, w->key) > w->above;
}

static void testWrongKeyMemberIsCutOff(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char a[600];
    char b[600];
    int leader;
    (void)state;
    assert_non_null(c);
    nodesInit(c, 3, 3, BASE);
    keyFile(c, "a.key", 1, NULL);
    keyFile(c, "b.key", 2, NULL);
    keyParam(c, "key_file", "a.key", a, sizeof a);
    keyParam(c, "key_file", "b.key", b, sizeof b);
    strcat(a, "&snapshot_threshold=32&snapshot_trailing=8");
    params(c, a);
    startAll(c, 3);
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    int other = (leader + 1) % 3;
    int victim = (leader + 2) % 3;
    nodesWaitApplied(c, WAIT_MS);
    stop(c, victim);
    long long before = nodesStat(c, leader, "refused");

    /* With key B the victim neither gets entries nor votes: the leader
     * refuses its streams and it refuses the leader's, so it never catches
     * up and its start fails at ready_ms, while the others commit. */
    char bshort[700];
    int n = snprintf(bshort, sizeof bshort, "%s&ready_ms=8000", b);
    assert_true(n > 0 && (size_t)n < sizeof bshort);
    params(c, bshort);
    nodesStart(c, victim, -1);
    struct statWait w = {c, leader, "refused", before};
    assert_int_equal(harnessPollUntil(statAbove, &w, WAIT_MS, 50), TPDB_OK);
    commit(c, &leader, "INSERT INTO t(v) VALUES ('while cut off')");
    waitCount(c, other, 1);
    waitExit(c, victim);
    /* Far enough ahead that the victim must fetch the database (a sealed
     * FETCH stream) rather than replay entries. */
    for (int i = 0; i < 80; i++) {
        commit(c, &leader, "INSERT INTO t(v) VALUES ('more')");
    }
    assert_int_equal(nodesFindLeader(c, WAIT_MS), leader);
    char role[32];
    long long applied;
    nodesRole(c, leader, role, sizeof role, &applied);
    assert_string_equal(role, "leader");

    /* Key A again: it catches up. */
    params(c, a);
    nodesStart(c, victim, -1);
    nodesWaitReady(c, victim);
    waitCount(c, victim, 81);
    assert_true(nodesStat(c, victim, "fetches") >= 1);
    nodesClose(c);
    tpdb_free(c);
}

/* Sealed streams carry entries of a megabyte: their records arrive split
 * across TCP reads and several whole in one read, and every node ends with
 * the same database file. */
static void testBigSealedEntries(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char a[600];
    int leader;
    (void)state;
    assert_non_null(c);
    nodesInit(c, 3, 3, BASE);
    keyFile(c, "a.key", 1, NULL);
    keyParam(c, "key_file", "a.key", a, sizeof a);
    params(c, a);
    startAll(c, 3);
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    for (int i = 0; i < 3; i++) {
        /* Hex of random bytes: lz4 leaves about 1.2 MB per entry, many
         * records of up to 64 KiB. */
        commit(c, &leader,
               "INSERT INTO t(v) SELECT hex(randomblob(600000)) UNION ALL "
               "SELECT 'small'");
    }
    nodesWaitApplied(c, WAIT_MS);
    char *want = NULL;
    size_t want_len = 0;
    for (int i = 0; i < 3; i++) {
        char path[HARNESS_PATH_MAX + 16];
        size_t len = 0;
        waitCount(c, i, 6);
        nodesCheckpoint(c, i, WAIT_MS);
        nodesPath(c, i, "app.db", path, sizeof path);
        char *got = nodesReadFile(path, &len);
        assert_true(len > 3600000);
        if (want == NULL) {
            want = got;
            want_len = len;
            continue;
        }
        assert_true(len == want_len && memcmp(got, want, len) == 0);
        tpdb_free(got);
    }
    tpdb_free(want);
    nodesClose(c);
    tpdb_free(c);
}

/* A key holder's stream is closed for an altered record and for a
 * replayed one; valid records are not refusals. A stranger without the
 * key gets no server hello at all. */
static void testTamperAndReplay(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    struct tpdb_seal_session s;
    uint8_t key[TPDB_SEAL_KEY];
    uint8_t wrong[TPDB_SEAL_KEY];
    uint8_t rec[2][256];
    size_t len[2];
    char a[600];
    (void)state;
    assert_non_null(c);
    nodesInit(c, 1, 1, BASE);
    keyFile(c, "a.key", 1, key);
    keyFile(c, "b.key", 2, wrong);
    keyParam(c, "key_file", "a.key", a, sizeof a);
    params(c, a);
    startAll(c, 1);
    unsigned port = c->ports[0];
    assert_int_equal(pokeSealed(port, TPDB_HANDSHAKE_RAFT, 99, wrong, &s), -1);

    /* Two harmless AppendEntries results (term 0) from a stranger. */
    for (int k = 0; k < 2; k++) {
        len[k] = pokeMessage(rec[k] + TPDB_SEAL_LEN, 2, 24, NULL, 0);
    }
    long long refused = nodesStat(c, 0, "refused");
    int fd = pokeSealed(port, TPDB_HANDSHAKE_RAFT, 99, key, &s);
    assert_true(fd >= 0);
    for (int k = 0; k < 2; k++) {
        len[k] = tpdbSealRecord(&s, rec[k], len[k]);
        pokeSend(fd, rec[k], len[k]);
    }
    pokeSend(fd, rec[0], len[0]); /* replayed */
    assert_true(pokeClosedWithin(fd, 5000, NULL));
    assert_int_equal(nodesStat(c, 0, "refused"), refused + 1);

    fd = pokeSealed(port, TPDB_HANDSHAKE_RAFT, 99, key, &s);
    assert_true(fd >= 0);
    len[0] = pokeMessage(rec[0] + TPDB_SEAL_LEN, 2, 24, NULL, 0);
    len[0] = tpdbSealRecord(&s, rec[0], len[0]);
    rec[0][TPDB_SEAL_LEN + 3] ^= 0x01; /* altered */
    pokeSend(fd, rec[0], len[0]);
    assert_true(pokeClosedWithin(fd, 5000, NULL));
    assert_int_equal(nodesStat(c, 0, "refused"), refused + 2);
    nodesClose(c);
    tpdb_free(c);
}

/* Rolling restarts: A -> A accepting B -> B accepting A -> B, with a write
 * after every restart. */
static void testRotation(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char p1[600], p2[600], step[1300];
    int leader;
    int rows = 0;
    (void)state;
    assert_non_null(c);
    nodesInit(c, 3, 3, BASE);
    keyFile(c, "a.key", 1, NULL);
    keyFile(c, "b.key", 2, NULL);
    keyParam(c, "key_file", "a.key", p1, sizeof p1);
    params(c, p1);
    startAll(c, 3);
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    static const char *const steps[3][2] = {
        {"a.key", "b.key"}, {"b.key", "a.key"}, {"b.key", NULL}};
    for (int s = 0; s < 3; s++) {
        keyParam(c, "key_file", steps[s][0], p1, sizeof p1);
        p2[0] = '\0';
        if (steps[s][1] != NULL) {
            keyParam(c, "&key_file_next", steps[s][1], p2, sizeof p2);
        }
        int n = snprintf(step, sizeof step, "%s%s", p1, p2);
        assert_true(n > 0 && (size_t)n < sizeof step);
        params(c, step);
        for (int i = 0; i < 3; i++) {
            stop(c, i);
            nodesStart(c, i, -1);
            nodesWaitReady(c, i);
            leader = nodesFindLeader(c, WAIT_MS);
            commit(c, &leader, "INSERT INTO t(v) VALUES ('rotating')");
            rows++;
            nodesWaitApplied(c, WAIT_MS);
        }
    }
    for (int i = 0; i < 3; i++) {
        waitCount(c, i, rows);
    }
    nodesClose(c);
    tpdb_free(c);
}

/* Without a key a node will not listen beyond loopback unless told
 * insecure=1; with a key it will. */
static void testPublicAddressNeedsKey(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char extra[800];
    char kp[600];
    char *err = NULL;
    (void)state;
    assert_non_null(c);
    nodesInit(c, 1, 1, BASE);
    snprintf(extra, sizeof extra, "listen=0.0.0.0:%u", c->ports[0]);
    params(c, extra);
    nodesStart(c, 0, -1);
    assert_int_equal(
        harnessProcReadAll(c->procs[0], HARNESS_STDERR, WAIT_MS, &err, errmsg),
        TPDB_OK);
    assert_non_null(strstr(err, "without a cluster key"));
    tpdb_free(err);
    waitExit(c, 0);
    snprintf(extra, sizeof extra, "listen=0.0.0.0:%u&insecure=1", c->ports[0]);
    params(c, extra);
    nodesStart(c, 0, -1);
    nodesWaitReady(c, 0);
    stop(c, 0);
    keyFile(c, "a.key", 1, NULL);
    keyParam(c, "key_file", "a.key", kp, sizeof kp);
    int n =
        snprintf(extra, sizeof extra, "listen=0.0.0.0:%u&%s", c->ports[0], kp);
    assert_true(n > 0 && (size_t)n < sizeof extra);
    params(c, extra);
    nodesStart(c, 0, -1);
    nodesWaitReady(c, 0);
    nodesClose(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testProxySeesNoPlaintext, harnessTeardown),
        cmocka_unit_test_teardown(testWrongKeyCannotJoin, harnessTeardown),
        cmocka_unit_test_teardown(testWrongKeyMemberIsCutOff, harnessTeardown),
        cmocka_unit_test_teardown(testBigSealedEntries, harnessTeardown),
        cmocka_unit_test_teardown(testTamperAndReplay, harnessTeardown),
        cmocka_unit_test_teardown(testRotation, harnessTeardown),
        cmocka_unit_test_teardown(testPublicAddressNeedsKey, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
