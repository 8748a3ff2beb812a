/*
 * Hostile bytes against a 3-node cluster of real tpdb-testnode processes
 * without a cluster key (loopback): every message raft 0.15's decoder
 * could not take (an AppendEntries whose header says 1 byte, a 1-byte
 * RequestVote, terms of 2^64-1 or 2^33 ahead, headers claiming 1000 MiB,
 * an entry count that disagrees with the header, oversized entries and
 * snapshots, unknown types), 200 connections of random bytes, idle and
 * half-done handshakes and more connections than one address may hold.
 * Each refused connection must be closed by the node; afterwards every node
 * is alive, no term moved far, memory did not balloon, and the cluster
 * still commits on every node.
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

#define N_NODES 3
#define WAIT_MS 60000
#define CLOSE_MS 5000
#define PARAMS "election_ms=400&heartbeat_ms=40&ready_ms=60000"

/* Resident memory of member i in KiB, from /proc. */
static long rssKb(struct nodes *c, int i)
{
    char path[64];
    char line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status",
             (int)harnessProcPid(c->procs[i]));
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kb;
}

/* Sends a handshake from `id` then msg; the node must close the stream. */
static void refusedAfterHello(unsigned port,
                              uint64_t id,
                              const uint8_t *msg,
                              size_t len,
                              const char *what)
{
    uint8_t buf[8192];
    size_t n = pokeHello(buf, id);
    int fd = pokeConnect(port);
    assert_true(n + len <= sizeof buf);
    memcpy(buf + n, msg, len);
    pokeSend(fd, buf, n + len);
    if (!pokeClosedWithin(fd, CLOSE_MS, NULL)) {
        fail_msg("port %u kept a connection open after %s", port, what);
    }
}

/* The messages raft's decoder cannot take, each on its own stream. */
static void sendBadMessages(unsigned port, uint64_t id)
{
    uint8_t m[8192];
    uint64_t vote_max[] = {UINT64_MAX, id, 1, 1, 0};
    uint64_t vote_ahead[] = {1ull << 33, id, 1, 1, 0};
    uint64_t ae_count[] = {1, 0, 0, 0, 5};
    uint64_t ae_big[] = {1, 0, 0, 0, 1, 1, 1ull | (0xffffffffull << 32)};
    uint64_t snap_big[] = {1, 5, 1, 1, 24, 0, 0, 0, 1ull << 30};
    size_t n;
    n = pokeMessage(m, 1, 1, NULL, 0);
    m[n] = 0x41;
    refusedAfterHello(port, id, m, n + 1, "an AppendEntries of 1 byte");
    n = pokeMessage(m, 3, 1, NULL, 0);
    m[n] = 0x41;
    refusedAfterHello(port, id, m, n + 1, "a RequestVote of 1 byte");
    n = pokeMessage(m, 3, 40, vote_max, 5);
    refusedAfterHello(port, id, m, n, "a RequestVote of term 2^64-1");
    n = pokeMessage(m, 3, 40, vote_ahead, 5);
    refusedAfterHello(port, id, m, n, "a RequestVote 2^33 terms ahead");
    n = pokeMessage(m, 1, 1000ull << 20, NULL, 0);
    refusedAfterHello(port, id, m, 16, "a header of 1000 MiB");
    refusedAfterHello(port, id, m, 16, "a header of 1000 MiB");
    n = pokeMessage(m, 1, 64, ae_count, 5);
    refusedAfterHello(port, id, m, n, "5 entries in a 1-entry header");
    n = pokeMessage(m, 1, 64, ae_big, 7);
    refusedAfterHello(port, id, m, n, "an entry of 4 GiB");
    n = pokeMessage(m, 5, 80, snap_big, 9);
    refusedAfterHello(port, id, m, n, "a bad InstallSnapshot");
    n = pokeMessage(m, 9, 8, NULL, 0);
    refusedAfterHello(port, id, m, n, "an unknown message type");
}

/* 100 connections of random bytes and 100 of a handshake then random
 * bytes. */
static void sendRandom(unsigned port, unsigned seed)
{
    uint8_t buf[2048];
    srand(seed);
    for (int k = 0; k < 200; k++) {
        size_t n = k % 2 ? pokeHello(buf, 1 + (unsigned)k % 3) : 0;
        size_t len = TPDB_HANDSHAKE_HDR + (size_t)rand() % 1000;
        for (size_t i = 0; i < len; i++) {
            buf[n + i] = (uint8_t)rand();
        }
        int fd = pokeConnect(port);
        pokeSend(fd, buf, n + len);
        if (k % 2 == 0) {
            /* No magic: refused in the handshake. */
            assert_true(pokeClosedWithin(fd, CLOSE_MS, NULL));
        } else {
            close(fd);
        }
    }
}

/* A stream that completed its handshake and then says nothing is closed
 * after the idle deadline (5 election timeouts); one that never completes
 * its handshake after the handshake deadline. */
static void idleStreamsClose(unsigned port)
{
    uint8_t buf[512];
    size_t n = pokeHello(buf, 77);
    int idle = pokeConnect(port);
    int half = pokeConnect(port);
    pokeSend(idle, buf, n);
    pokeSend(half, buf, 10);
    assert_true(
        pokeClosedWithin(idle, 3 * 5 * 400 * harnessTimerScale(), NULL));
    assert_true(pokeClosedWithin(half, 3 * 5000, NULL));
}

/* At most 64 accepted streams per address: the ones beyond are closed at
 * once while ours stay open. */
static void capPerAddress(unsigned port)
{
    enum { OPEN = 70 };
    int fds[OPEN];
    uint8_t buf[512];
    size_t n = pokeHello(buf, 78);
    int closed = 0;
    for (int i = 0; i < OPEN; i++) {
        fds[i] = pokeConnect(port);
        pokeSend(fds[i], buf, n);
    }
    /* The node sees 64 of ours and its peers' streams: at least 6 of ours
     * must be refused. */
    for (int i = OPEN - 1; i >= 0; i--) {
        closed += pokeClosedWithin(fds[i], i >= OPEN - 8 ? 1000 : 0, NULL);
    }
    assert_true(closed >= 6);
}

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

static long long statusInt(struct nodes *c, int i, const char *key)
{
    json_t *o = nodesStatus(c, i);
    long long v = -1;
    if (o != NULL) {
        v = json_integer_value(json_object_get(o, key));
        json_decref(o);
    }
    return v;
}

static void testHostileBytes(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    long rss[N_NODES];
    int leader;
    char sql[128];
    (void)state;
    assert_non_null(c);
    nodesInit(c, N_NODES, N_NODES, PARAMS);
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(c, i);
    }
    leader = nodesFindLeader(c, WAIT_MS);
    commit(c, &leader, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    for (int i = 0; i < N_NODES; i++) {
        rss[i] = rssKb(c, i);
    }
    for (int i = 0; i < N_NODES; i++) {
        /* Claim to be another member, as a stranger could. */
        sendBadMessages(c->ports[i], (uint64_t)(i + 1) % N_NODES + 1);
        sendBadMessages(c->ports[i], 99);
        sendRandom(c->ports[i], (unsigned)i + 1);
        snprintf(sql, sizeof sql, "INSERT INTO t(v) VALUES ('after %d')", i);
        commit(c, &leader, sql);
    }
    idleStreamsClose(c->ports[0]);
    capPerAddress(c->ports[1]);
    for (int i = 0; i < N_NODES; i++) {
        assert_non_null(c->procs[i]);
        assert_true(statusInt(c, i, "term") < 1000);
        assert_true(nodesStat(c, i, "refused") >= 200);
        assert_true(rssKb(c, i) < rss[i] + 64 * 1024);
    }
    commit(c, &leader, "INSERT INTO t(v) VALUES ('the end')");
    nodesWaitApplied(c, WAIT_MS);
    for (int i = 0; i < N_NODES; i++) {
        char *row = nodesQueryFirst(c, i, "SELECT count(*) FROM t");
        assert_non_null(row);
        assert_string_equal(row, "row 4");
        tpdb_free(row);
    }
    nodesClose(c);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testHostileBytes, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
