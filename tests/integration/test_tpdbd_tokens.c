/*
 * tpdbd's client tokens with real processes: tokens made by
 * `tpdbd --make-token`; a tokens file others may read, or a malformed one,
 * stops the start with a message naming the problem (and the line); on a
 * 3-node cluster started with --client-tokens and --node-token-file (and
 * no --client-peer, so forwarding needs the nodes' own announcements), a
 * request without a token, with an unknown token, or a write with a read
 * token is refused and changes nothing; a write token works, directly, per
 * connection, forwarded from a follower and in a transaction begun on a
 * follower; a node joins through a follower with its node token, one
 * without is refused; the tpdb shell with -token and TPDB_TOKEN; SIGHUP
 * rereads the file (a removed token stops working, a bad file is
 * refused and the tokens stay). Without
 * tokens the start says where the client port listens and warns when it
 * is beyond loopback.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define WAIT_MS 30000

struct made {
    char token[96];
    char line[256];
};

struct run {
    char *out, *err;
    int status; /* exit code, or -1 if killed by a signal */
};

static void runProg(const char *const *argv,
                    const char *const *env,
                    struct run *r)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    struct harness_proc *p;
    int status = 0;
    assert_int_equal(harnessSpawn(argv, env, NULL, &p, errmsg), TPDB_OK);
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, WAIT_MS, &r->out, errmsg),
        TPDB_OK);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, WAIT_MS, &r->err, errmsg),
        TPDB_OK);
    assert_int_equal(harnessProcWait(p, WAIT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void runFree(struct run *r)
{
    tpdb_free(r->out);
    tpdb_free(r->err);
}

/* tpdbd --make-token role --token-name name: the token (second line of
 * its output) and the tokens-file line (fourth). */
static void makeToken(const struct tpdbds *c,
                      const char *role,
                      const char *name,
                      struct made *m)
{
    const char *argv[] = {c->prog,        "--make-token", role,
                          "--token-name", name,           NULL};
    struct run r;
    runProg(argv, NULL, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(sscanf(r.out, "%*[^\n]\n%95[^\n]\n%*[^\n]\n%255[^\n]",
                            m->token, m->line),
                     2);
    assert_int_equal(strncmp(m->token, "tpdb_", 5), 0);
    assert_int_equal(strlen(m->token), 69);
    assert_non_null(strstr(m->line, role));
    assert_null(strstr(m->line, m->token + 5)); /* only the hash is kept */
    runFree(&r);
}

static void writeFile(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* Starts a one-node tpdbd with --client-tokens path; it must exit 1 with
 * want in its stderr. */
static void refusedStart(struct tpdbds *c, const char *path, const char *want)
{
    char flag[HARNESS_PATH_MAX + 32], *err = NULL;
    int status = 0;
    snprintf(flag, sizeof flag, "--client-tokens=%s", path);
    const char *const extra[] = {flag, NULL};
    tpdbdsStart(c, 0, extra);
    assert_int_equal(harnessProcReadAll(c->procs[0], HARNESS_STDERR, WAIT_MS,
                                        &err, c->errmsg),
                     TPDB_OK);
    if (strstr(err, want) == NULL) {
        fail_msg("wanted '%s' in: %s", want, err);
    }
    tpdb_free(err);
    assert_int_equal(harnessProcWait(c->procs[0], WAIT_MS, &status, c->errmsg),
                     TPDB_OK);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    harnessProcFree(c->procs[0]);
    c->procs[0] = NULL;
}

static void testBadFiles(void **state)
{
    static struct tpdbds c;
    char path[HARNESS_PATH_MAX + 16], text[1024];
    struct made w;
    struct run r;
    (void)state;
    tpdbdsInit(&c, 1, 0);
    const char *const admin[] = {c.prog, "--make-token", "admin", NULL};
    runProg(admin, NULL, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "role must be read or write"));
    runFree(&r);
    makeToken(&c, "write", "w", &w);
    snprintf(path, sizeof path, "%s/tokens", c.dir);
    snprintf(text, sizeof text, "# ops\n%s\n", w.line);
    writeFile(path, text, 0644);
    refusedStart(&c, path, "mode 0644 lets other users read or change it");
    snprintf(text, sizeof text, "%s\nx admin blake2b:00\n", w.line);
    writeFile(path, text, 0600);
    refusedStart(&c, path, "line 2: ROLE must be read or write");
    snprintf(text, sizeof text, "\n%s\n%s\n", w.line, w.line);
    writeFile(path, text, 0600);
    refusedStart(&c, path, "line 3: NAME already used");
    writeFile(path, "# nothing\n", 0600);
    refusedStart(&c, path, "no token in the file");
    tpdbdsClose(&c);
}

/* The reply's "error", which must start with want. */
static void expectError(json_t *o, const char *want)
{
    const char *e = json_string_value(json_object_get(o, "error"));
    assert_false(json_is_true(json_object_get(o, "ok")));
    if (e == NULL || strncmp(e, want, strlen(want)) != 0) {
        fail_msg("wanted an error starting '%s', got %s", want,
                 e != NULL ? e : "none");
    }
    json_decref(o);
}

static void expectOk(json_t *o)
{
    if (!json_is_true(json_object_get(o, "ok"))) {
        char *t = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        fail_msg("wanted ok, got %s", t != NULL ? t : "no reply");
    }
    json_decref(o);
}

/* Sends the lines in order on one connection to port and returns the
 * last reply; every earlier one must be ok. */
static json_t *onOneConnection(unsigned port, const char *const *lines)
{
    int fd = tpdbdsConnect(port);
    json_t *last = NULL;
    assert_true(fd >= 0);
    for (; *lines != NULL; lines++) {
        char *reply = NULL;
        json_decref(last);
        assert_int_equal(tpdbdsSend(fd, *lines, strlen(*lines)), 0);
        assert_int_equal(tpdbdsSend(fd, "\n", 1), 0);
        assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &reply), TPDB_OK);
        last = json_loads(reply, 0, NULL);
        if (lines[1] != NULL && !json_is_true(json_object_get(last, "ok"))) {
            fail_msg("%s: %s", *lines, reply);
        }
        free(reply);
    }
    close(fd);
    return last;
}

struct cluster {
    struct tpdbds c;
    struct made w, r, node;
    char tokensFlag[HARNESS_PATH_MAX + 64], nodeFlag[HARNESS_PATH_MAX + 64];
    int leader, follower;
};

static void startCluster(struct cluster *k)
{
    char path[HARNESS_PATH_MAX + 16], text[1024];
    struct tpdbds *c = &k->c;
    tpdbdsInit(c, 5, 0);
    c->voters = 3;
    makeToken(c, "write", "app", &k->w);
    makeToken(c, "read", "reports", &k->r);
    makeToken(c, "write", "nodes", &k->node);
    snprintf(path, sizeof path, "%s/tokens", c->dir);
    snprintf(text, sizeof text, "%s\n%s\n%s\n", k->w.line, k->r.line,
             k->node.line);
    writeFile(path, text, 0600);
    snprintf(k->tokensFlag, sizeof k->tokensFlag, "--client-tokens=%s", path);
    snprintf(path, sizeof path, "%s/node.token", c->dir);
    snprintf(text, sizeof text, "%s\n", k->node.token);
    writeFile(path, text, 0600);
    snprintf(k->nodeFlag, sizeof k->nodeFlag, "--node-token-file=%s", path);
    const char *const extra[] = {k->tokensFlag, k->nodeFlag, NULL};
    for (int i = 0; i < 3; i++) {
        tpdbdsStart(c, i, extra);
    }
    for (int i = 0; i < 3; i++) {
        tpdbdsWaitReady(c, i);
    }
    c->token = k->w.token;
    k->leader = tpdbdsFindLeader(c, WAIT_MS);
    k->follower = (k->leader + 1) % 3;
    expectOk(tpdbdsCall(c, k->leader,
                        "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                        "t(id INTEGER PRIMARY KEY)\"}"));
}

#define INSERT "{\"action\":\"propose\",\"sql\":\"INSERT INTO t VALUES (100)\""

/* Requests without a valid token, and writes with a read token, are
 * refused on the leader and on a follower, and write nothing. */
static void checkRefusals(struct cluster *k)
{
    struct tpdbds *c = &k->c;
    char line[512];
    for (int i = 0; i < 2; i++) {
        unsigned port = c->client[i == 0 ? k->leader : k->follower];
        expectError(tpdbdsRequest(port, "{\"action\":\"status\"}"),
                    "unauthorized: this node requires a client token");
        snprintf(line, sizeof line, INSERT "}");
        expectError(tpdbdsRequest(port, line), "unauthorized");
        snprintf(line, sizeof line, INSERT ",\"token\":\"tpdb_0123\"}");
        expectError(tpdbdsRequest(port, line), "unauthorized: unknown token");
        snprintf(line, sizeof line, INSERT ",\"token\":\"%s\"}", k->r.token);
        expectError(tpdbdsRequest(port, line),
                    "forbidden: action propose needs a write token");
        snprintf(line, sizeof line,
                 "{\"action\":\"backup\",\"path\":\"/tmp/x\",\"token\":\"%s\"}",
                 k->r.token);
        expectError(tpdbdsRequest(port, line), "forbidden");
        /* A read token may read. */
        snprintf(line, sizeof line,
                 "{\"action\":\"local_query\",\"sql\":\"SELECT count(*) "
                 "FROM t\",\"token\":\"%s\"}",
                 k->r.token);
        expectOk(tpdbdsRequest(port, line));
    }
    snprintf(line, sizeof line,
             "{\"action\":\"query\",\"sql\":\"SELECT 1\",\"token\":\"%s\"}",
             k->r.token);
    expectOk(tpdbdsRequest(c->client[k->leader], line));
    tpdbdsWaitCount(c, "t", 0, WAIT_MS);
}

/* A write token works on the leader, forwarded from a follower, once per
 * connection, and in a transaction begun on a follower. */
static void checkWrites(struct cluster *k)
{
    struct tpdbds *c = &k->c;
    char first[256];
    expectOk(tpdbdsCall(c, k->leader,
                        "{\"action\":\"propose\",\"sql\":\"INSERT INTO t "
                        "VALUES (1)\"}"));
    expectOk(tpdbdsCall(c, k->follower,
                        "{\"action\":\"propose\",\"sql\":\"INSERT INTO t "
                        "VALUES (2)\"}"));
    snprintf(first, sizeof first, "{\"action\":\"status\",\"token\":\"%s\"}",
             k->w.token);
    const char *const perConnection[] = {
        first,
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO t VALUES (3)\"}",
        "{\"action\":\"begin\"}",
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO t VALUES (4)\"}",
        "{\"action\":\"commit\"}",
        NULL,
    };
    expectOk(onOneConnection(c->client[k->follower], perConnection));
    /* A read token on a connection: reads yes, writes no. */
    snprintf(first, sizeof first, "{\"action\":\"status\",\"token\":\"%s\"}",
             k->r.token);
    const char *const readConnection[] = {
        first,
        "{\"action\":\"local_query\",\"sql\":\"SELECT count(*) FROM t\"}",
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO t VALUES (5)\"}",
        NULL,
    };
    expectError(onOneConnection(c->client[k->follower], readConnection),
                "forbidden");
    tpdbdsWaitCount(c, "t", 4, WAIT_MS);
}

/* A fourth node joins through a follower with its node token; a fifth
 * without one is refused at start. */
static void checkJoin(struct cluster *k)
{
    struct tpdbds *c = &k->c;
    char join[64], *err = NULL;
    snprintf(join, sizeof join, "--join=127.0.0.1:%u", c->client[k->follower]);
    const char *const with[] = {k->tokensFlag, k->nodeFlag, join, NULL};
    tpdbdsStart(c, 3, with);
    tpdbdsWaitReady(c, 3);
    tpdbdsWaitCount(c, "t", 4, WAIT_MS);
    const char *const without[] = {k->tokensFlag, join, "--ready-ms=2000",
                                   NULL};
    tpdbdsStart(c, 4, without);
    assert_int_equal(harnessProcReadAll(c->procs[4], HARNESS_STDERR, WAIT_MS,
                                        &err, c->errmsg),
                     TPDB_OK);
    if (strstr(err, "--join") == NULL ||
        strstr(err, "unauthorized: this node requires a client token") ==
            NULL) {
        fail_msg("wanted the --join refusal in: %s", err);
    }
    tpdb_free(err);
    assert_int_equal(harnessProcWait(c->procs[4], WAIT_MS, NULL, c->errmsg),
                     TPDB_OK);
    harnessProcFree(c->procs[4]);
    c->procs[4] = NULL;
}

/* The tpdb shell with -token, with TPDB_TOKEN, with a read token and
 * without one. */
static void checkShell(struct cluster *k)
{
    struct tpdbds *c = &k->c;
    char prog[HARNESS_PATH_MAX], addr[64], env[128];
    struct run r;
    snprintf(prog, sizeof prog, "%s/shell/tpdb", getenv("TPDB_BUILD_ROOT"));
    snprintf(addr, sizeof addr, "127.0.0.1:%u", c->client[k->follower]);
    const char *const flag[] = {prog,       addr, "-token",
                                k->w.token, "-c", "INSERT INTO t VALUES (10)",
                                NULL};
    runProg(flag, NULL, &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    snprintf(env, sizeof env, "TPDB_TOKEN=%s", k->r.token);
    const char *const readEnv[] = {env, NULL};
    const char *const count[] = {prog, addr, "-c", "SELECT count(*) FROM t",
                                 NULL};
    runProg(count, readEnv, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "5\n");
    runFree(&r);
    const char *const insert[] = {prog, addr, "-c", "INSERT INTO t VALUES (11)",
                                  NULL};
    runProg(insert, readEnv, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "forbidden: action propose needs a write"));
    runFree(&r);
    const char *const noEnv[] = {"TPDB_TOKEN=", NULL};
    runProg(count, noEnv, &r);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "unauthorized"));
    runFree(&r);
    tpdbdsWaitCount(c, "t", 5, WAIT_MS);
}

/* One request line on the kept connection fd; returns the reply. */
static json_t *callOn(int fd, const char *line)
{
    char *reply = NULL;
    assert_int_equal(tpdbdsSend(fd, line, strlen(line)), 0);
    assert_int_equal(tpdbdsSend(fd, "\n", 1), 0);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &reply), TPDB_OK);
    json_t *o = json_loads(reply, 0, NULL);
    free(reply);
    return o;
}

struct member {
    struct tpdbds *c;
    int i;
};

/* Whether the member answers status with c->token. */
static int answersOk(void *arg)
{
    struct member *m = arg;
    json_t *o = tpdbdsCall(m->c, m->i, "{\"action\":\"status\"}");
    int ok = json_is_true(json_object_get(o, "ok"));
    json_decref(o);
    return ok;
}

static void hangUpAll(struct tpdbds *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->procs[i] != NULL) {
            assert_int_equal(harnessProcSignal(c->procs[i], SIGHUP, c->errmsg),
                             TPDB_OK);
        }
    }
}

/* SIGHUP rereads the tokens file: a new token works, a removed one stops
 * working, also on a connection it authenticated; a bad file is refused
 * with its line named and the tokens stay. */
static void checkReload(struct cluster *k)
{
    struct tpdbds *c = &k->c;
    char path[HARNESS_PATH_MAX + 16], text[1024], line[256];
    struct made late;
    makeToken(c, "write", "late", &late);
    int fd = tpdbdsConnect(c->client[k->follower]);
    assert_true(fd >= 0);
    snprintf(line, sizeof line, "{\"action\":\"status\",\"token\":\"%s\"}",
             k->r.token);
    expectOk(callOn(fd, line));
    snprintf(path, sizeof path, "%s/tokens", c->dir);
    snprintf(text, sizeof text, "%s\n%s\n%s\n", k->w.line, k->node.line,
             late.line);
    writeFile(path, text, 0600);
    hangUpAll(c);
    c->token = late.token;
    for (unsigned i = 0; i < c->n; i++) {
        struct member m = {c, (int)i};
        if (c->procs[i] != NULL) {
            assert_int_equal(harnessPollUntil(answersOk, &m, WAIT_MS, 50),
                             TPDB_OK);
        }
    }
    snprintf(line, sizeof line, "{\"action\":\"status\",\"token\":\"%s\"}",
             k->r.token);
    expectError(tpdbdsRequest(c->client[k->leader], line),
                "unauthorized: unknown token");
    expectError(callOn(fd, "{\"action\":\"status\"}"),
                "unauthorized: this connection's token is no longer valid");
    close(fd);
    writeFile(path, "late write blake2b:00\n", 0600);
    assert_int_equal(harnessProcSignal(c->procs[k->leader], SIGHUP, c->errmsg),
                     TPDB_OK);
    assert_int_equal(
        harnessProcExpect(c->procs[k->leader], HARNESS_STDERR,
                          harnessMatchContains, "line 1: HASH must be", WAIT_MS,
                          NULL, c->errmsg),
        TPDB_OK);
    expectOk(tpdbdsCall(c, k->leader,
                        "{\"action\":\"propose\",\"sql\":\"INSERT INTO t "
                        "VALUES (20)\"}"));
    tpdbdsWaitCount(c, "t", 6, WAIT_MS);
}

static void testCluster(void **state)
{
    static struct cluster k;
    (void)state;
    startCluster(&k);
    checkRefusals(&k);
    checkWrites(&k);
    checkJoin(&k);
    checkShell(&k);
    checkReload(&k);
    tpdbdsClose(&k.c);
}

/* Without tokens: what the start says about the client port. */
static void testNoTokens(void **state)
{
    static struct tpdbds c;
    char any[64];
    (void)state;
    tpdbdsInit(&c, 1, 0);
    tpdbdsStart(&c, 0, NULL);
    assert_int_equal(
        harnessProcExpect(c.procs[0], HARNESS_STDERR, harnessMatchContains,
                          "without tokens: only this machine", WAIT_MS, NULL,
                          c.errmsg),
        TPDB_OK);
    tpdbdsWaitReady(&c, 0);
    tpdbdsStop(&c, 0, WAIT_MS);
    snprintf(any, sizeof any, "--client=0.0.0.0:%u", c.client[0]);
    const char *const extra[] = {any, NULL};
    tpdbdsStart(&c, 0, extra);
    assert_int_equal(
        harnessProcExpect(c.procs[0], HARNESS_STDERR, harnessMatchContains,
                          "anyone who can reach this port can read and write",
                          WAIT_MS, NULL, c.errmsg),
        TPDB_OK);
    tpdbdsWaitReady(&c, 0);
    expectOk(tpdbdsCall(&c, 0, "{\"action\":\"status\"}"));
    tpdbdsClose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testBadFiles),
        cmocka_unit_test(testNoTokens),
        cmocka_unit_test(testCluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
