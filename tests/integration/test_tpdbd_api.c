/*
 * tpdbd's client API on one real tpdbd process (a single-node cluster):
 * TrashPandaDB's one request per connection, many requests on one
 * connection answered in order, params of every JSON type, BLOBs as hex
 * (TrashPandaDB) and {"$blob": base64} (opt-in) both ways, writes sent to
 * query/local_query refused and never executed, the db field, a
 * transaction left open by a propose, metrics counters, the connection
 * cap. Then, on a second process: no --data-dir means a temporary
 * directory, announced on stderr and removed after SIGINT, exit 0.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

static struct tpdbds cluster;

static int startNode(void **state)
{
    static const char *const extra[] = {"--max-clients=4", NULL};
    (void)state;
    tpdbdsInit(&cluster, 1, 0);
    tpdbdsStart(&cluster, 0, extra);
    tpdbdsWaitReady(&cluster, 0);
    tpdbdsFindLeader(&cluster, TPDBDS_READY_MS);
    return 0;
}

static int stopNode(void **state)
{
    (void)state;
    tpdbdsClose(&cluster);
    return 0;
}

/* The reply to line, asserted to be {"ok":true,...}. */
static json_t *ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *ok(const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    json_t *o = tpdbdsRequest(cluster.client[0], line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        char *text = o != NULL ? json_dumps(o, 0) : NULL;
        fail_msg("%s -> %s", line, text != NULL ? text : "no reply");
    }
    return o;
}

/* Asserts that line gets {"ok":false,"error":<starts with prefix>}. */
static void refused(const char *line, const char *prefix)
{
    json_t *o = tpdbdsRequest(cluster.client[0], line);
    const char *e = json_string_value(json_object_get(o, "error"));
    if (!json_is_false(json_object_get(o, "ok")) || e == NULL ||
        strncmp(e, prefix, strlen(prefix)) != 0) {
        char *text = o != NULL ? json_dumps(o, 0) : NULL;
        fail_msg("%s -> %s, not an error '%s...'", line,
                 text != NULL ? text : "no reply", prefix);
    }
    json_decref(o);
}

/* The single value of a one-row, one-column local_query. */
static json_t *scalar(const char *sql)
{
    json_t *o = ok("{\"action\":\"local_query\",\"sql\":\"%s\"}", sql);
    json_t *v = json_incref(
        json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0));
    json_decref(o);
    return v;
}

static long long count(const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    json_t *v = scalar(sql);
    long long n = json_integer_value(v);
    json_decref(v);
    return n;
}

static void testStatusAndMetrics(void **state)
{
    (void)state;
    json_t *o = ok("{\"action\":\"status\"}");
    assert_string_equal(json_string_value(json_object_get(o, "role")),
                        "Leader");
    assert_string_equal(json_string_value(json_object_get(o, "node_id")), "n1");
    assert_string_equal(json_string_value(json_object_get(o, "leader_id")),
                        "n1");
    assert_true(json_integer_value(json_object_get(o, "term")) >= 1);
    assert_int_equal(json_object_size(json_object_get(o, "members")), 0);
    json_decref(o);
    o = tpdbdsRequest(cluster.client[0], "{\"action\":\"metrics\"}");
    assert_non_null(o);
    /* TrashPandaDB's metrics reply has no "ok". */
    assert_null(json_object_get(o, "ok"));
    assert_true(json_is_integer(json_object_get(o, "writes_total")));
    assert_string_equal(json_string_value(json_object_get(o, "role")),
                        "Leader");
    json_decref(o);
}

/* The '?' of a literal, a missing param, a bad BLOB. */
static void paramsEdgeCases(void)
{
    /* A '?' inside a literal is text, never a parameter. */
    json_decref(
        ok("{\"action\":\"propose\",\"sql\":\"INSERT INTO p(v) "
           "VALUES('a?b')\"}"));
    refused(
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO p(v) VALUES(?)\","
        "\"params\":[]}",
        "the statement takes 1 params, 0 given");
    refused(
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO p(v) VALUES(?)\","
        "\"params\":[{\"$blob\":\"!!\"}]}",
        "params[0]: $blob is not base64");
}

static void testParamsRoundTrip(void **state)
{
    static const char *const params[] = {"null",
                                         "true",
                                         "false",
                                         "42",
                                         "1.5",
                                         "\"it's ? here\"",
                                         "{\"$blob\":\"AP8=\"}"};
    (void)state;
    json_decref(
        ok("{\"action\":\"propose\",\"sql\":\"CREATE TABLE p(id "
           "INTEGER PRIMARY KEY, v)\"}"));
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        json_t *o =
            ok("{\"action\":\"propose\",\"sql\":\"INSERT INTO p(v) "
               "VALUES(?)\",\"params\":[%s]}",
               params[i]);
        assert_int_equal(json_integer_value(json_object_get(o, "last_id")),
                         (long long)i + 1);
        assert_int_equal(
            json_integer_value(json_object_get(o, "rows_affected")), 1);
        json_decref(o);
    }
    json_t *o =
        ok("{\"action\":\"query\",\"sql\":\"SELECT v, typeof(v) FROM "
           "p ORDER BY id\"}");
    char *rows = json_dumps(json_object_get(o, "rows"), JSON_COMPACT);
    assert_string_equal(rows,
                        "[[null,\"null\"],[1,\"integer\"],[0,\"integer\"],"
                        "[42,\"integer\"],[1.5,\"real\"],"
                        "[\"it's ? here\",\"text\"],[\"00ff\",\"blob\"]]");
    free(rows);
    json_decref(o);
    o =
        ok("{\"action\":\"local_query\",\"sql\":\"SELECT v FROM p WHERE id = "
           "?\",\"params\":[7],\"blobs\":\"base64\"}");
    rows = json_dumps(json_object_get(o, "rows"), JSON_COMPACT);
    assert_string_equal(rows, "[[{\"$blob\":\"AP8=\"}]]");
    free(rows);
    json_decref(o);
    paramsEdgeCases();
    assert_int_equal(count("p"), 8);
}

static void testManyRequestsOneConnection(void **state)
{
    enum { N = 200 };
    static char batch[N * 128];
    size_t used = 0;
    (void)state;
    json_decref(
        ok("{\"action\":\"propose\",\"sql\":\"CREATE TABLE m(id "
           "INTEGER PRIMARY KEY, v INTEGER)\"}"));
    for (int i = 0; i < N; i++) {
        used += (size_t)snprintf(batch + used, sizeof batch - used,
                                 "{\"action\":\"propose\",\"sql\":\"INSERT "
                                 "INTO m(v) VALUES(?)\",\"params\":[%d]}\n",
                                 i);
    }
    int fd = tpdbdsConnect(cluster.client[0]);
    assert_true(fd >= 0);
    /* All requests at once: the replies must come back in order. */
    assert_int_equal(tpdbdsSend(fd, batch, used), 0);
    for (int i = 0; i < N; i++) {
        char *line = NULL;
        assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
        json_t *o = json_loads(line, 0, NULL);
        assert_true(json_is_true(json_object_get(o, "ok")));
        assert_int_equal(json_integer_value(json_object_get(o, "last_id")),
                         i + 1);
        json_decref(o);
        free(line);
    }
    const char *status = "{\"action\":\"status\"}\n";
    char *line = NULL;
    assert_int_equal(tpdbdsSend(fd, status, strlen(status)), 0);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_non_null(strstr(line, "\"role\":\"Leader\""));
    free(line);
    close(fd);
    assert_int_equal(count("m"), N);
}

static void testWritesRefusedInReads(void **state)
{
    (void)state;
    json_decref(
        ok("{\"action\":\"propose\",\"sql\":\"CREATE TABLE w(x); "
           "INSERT INTO w VALUES(1)\"}"));
    static const char *const writes[] = {
        "DELETE FROM w",      "INSERT INTO w VALUES(2)",
        "UPDATE w SET x = 5", "PRAGMA user_version = 7",
        "CREATE TABLE w2(y)", "DROP TABLE w"};
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        char line[256];
        snprintf(line, sizeof line, "{\"action\":\"%s\",\"sql\":\"%s\"}",
                 i % 2 ? "local_query" : "query", writes[i]);
        refused(line, "query and local_query take read-only statements");
    }
    refused(
        "{\"action\":\"local_query\",\"sql\":\"SELECT 1; DELETE FROM "
        "w\"}",
        "query and local_query take one statement");
    assert_int_equal(count("w"), 1);
    json_t *v = scalar("SELECT x FROM w");
    assert_int_equal(json_integer_value(v), 1);
    json_decref(v);
    v = scalar("PRAGMA user_version");
    assert_int_equal(json_integer_value(v), 0);
    json_decref(v);
}

static void testDbField(void **state)
{
    (void)state;
    json_decref(
        ok("{\"action\":\"propose\",\"db\":\"other.db\",\"sql\":"
           "\"CREATE TABLE o(x); INSERT INTO o VALUES(1)\"}"));
    json_t *o =
        ok("{\"action\":\"query\",\"db\":\"other.db\",\"sql\":"
           "\"SELECT count(*) FROM o\"}");
    char *rows = json_dumps(json_object_get(o, "rows"), JSON_COMPACT);
    assert_string_equal(rows, "[[1]]");
    free(rows);
    json_decref(o);
    refused("{\"action\":\"local_query\",\"sql\":\"SELECT * FROM o\"}",
            "no such table: o");
    static const char *const bad[] = {"\"../data.db\"",
                                      "\"tpdbd-meta.db\"",
                                      "\"x\"",
                                      "\"a/b.db\"",
                                      "\".hidden.db\"",
                                      "\"data.db-wal\"",
                                      "5",
                                      "\"\"",
                                      "\"data..db\"",
                                      "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[256];
        snprintf(line, sizeof line,
                 "{\"action\":\"local_query\",\"db\":%s,\"sql\":\"SELECT "
                 "1\"}",
                 bad[i]);
        refused(line, "db must name a database of the node directory");
    }
}

static void testTransactionLeftOpen(void **state)
{
    (void)state;
    json_decref(ok("{\"action\":\"propose\",\"sql\":\"CREATE TABLE tx(x)\"}"));
    refused(
        "{\"action\":\"propose\",\"sql\":\"BEGIN; INSERT INTO tx "
        "VALUES(1)\"}",
        "a transaction must end within its propose");
    assert_int_equal(count("tx"), 0);
    json_t *o =
        ok("{\"action\":\"propose\",\"sql\":\"BEGIN; INSERT INTO tx "
           "VALUES(1); INSERT INTO tx VALUES(2); COMMIT\"}");
    json_decref(o);
    assert_int_equal(count("tx"), 2);
    refused(
        "{\"action\":\"propose\",\"sql\":\"INSERT INTO nosuch "
        "VALUES(1)\"}",
        "no such table: nosuch");
}

/* Sends a status request on fd and checks that it is answered. */
static void answered(int fd)
{
    const char *status = "{\"action\":\"status\"}\n";
    char *line = NULL;
    assert_int_equal(tpdbdsSend(fd, status, strlen(status)), 0);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_non_null(strstr(line, "\"ok\":true"));
    free(line);
}

struct capPoll {
    unsigned port;
    int fd; /* a connection whose status request was answered */
};

/* Connections of earlier tests may still hold their slots for a moment
 * after the client closed them. */
static int servedConnection(void *arg)
{
    struct capPoll *p = arg;
    const char *status = "{\"action\":\"status\"}\n";
    char *line = NULL;
    p->fd = tpdbdsConnect(p->port);
    if (p->fd >= 0 && tpdbdsSend(p->fd, status, strlen(status)) == 0 &&
        tpdbdsReadLine(p->fd, TPDBDS_IO_MS, &line) == TPDB_OK &&
        strstr(line, "\"ok\":true") != NULL) {
        free(line);
        return 1;
    }
    free(line);
    if (p->fd >= 0) {
        close(p->fd);
    }
    p->fd = -1;
    return 0;
}

static void testConnectionCap(void **state)
{
    struct capPoll p = {cluster.client[0], -1};
    int fds[4];
    char *line = NULL;
    (void)state;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(harnessPollUntil(servedConnection, &p, 10000, 20),
                         TPDB_OK);
        fds[i] = p.fd;
    }
    int extra = tpdbdsConnect(cluster.client[0]);
    assert_true(extra >= 0);
    assert_int_equal(tpdbdsReadLine(extra, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_string_equal(line,
                        "{\"ok\":false,\"error\":\"too many connections "
                        "(at most 4)\"}");
    free(line);
    assert_int_equal(tpdbdsReadLine(extra, TPDBDS_IO_MS, &line), TPDB_SHUTDOWN);
    close(extra);
    close(fds[0]);
    /* The freed slot is taken again once its thread has ended. */
    assert_int_equal(harnessPollUntil(servedConnection, &p, 10000, 20),
                     TPDB_OK);
    close(p.fd);
    for (int i = 1; i < 4; i++) {
        answered(fds[i]);
        close(fds[i]);
    }
}

/* Sends len bytes on a connection that stays open and returns the reply
 * line (caller frees). */
static char *replyOn(int fd, const void *buf, size_t len)
{
    char *line = NULL;
    assert_int_equal(tpdbdsSend(fd, buf, len), 0);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    return line;
}

static void testMalformedRequests(void **state)
{
    static const struct {
        const char *line;
        const char *error; /* prefix; NULL: any parser message */
    } cases[] = {
        {"{\"action\":", NULL},
        {"[1]", "request must be a JSON object"},
        {"\"status\"", "request must be a JSON object"},
        {"{\"action\":\"frobnicate\"}", "unknown action: frobnicate"},
        {"{}", "unknown action: unknown"},
        {"{\"action\":7}", "unknown action: unknown"},
        {"{\"action\":\"propose\"}", "Missing hash key: \"sql\""},
        {"{\"action\":\"query\",\"sql\":5}", "sql must be a string"},
        {"{\"action\":\"query\",\"sql\":\"SELECT 1\",\"params\":\"x\"}",
         "params must be an array"},
        {"{\"action\":\"query\",\"sql\":\"SELECT 1\",\"blobs\":\"raw\"}",
         "blobs must be"},
        {"{\"action\":\"status\",\"action\":\"metrics\"}", NULL},
        {"{\"action\":\"status\",\"x\":\"\xff\"}", NULL},
        {"\x01\x02\xfe\xff garbage", NULL},
        {"{\"action\":\"local_query\",\"sql\":\"SELEC 1\"}", "near \"SELEC\""},
        {"{\"action\":\"local_query\",\"sql\":\"\"}", "no statement in sql"},
    };
    (void)state;
    int fd = tpdbdsConnect(cluster.client[0]);
    assert_true(fd >= 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[512];
        int n = snprintf(buf, sizeof buf, "%s\n", cases[i].line);
        char *line = replyOn(fd, buf, (size_t)n);
        json_t *o = json_loads(line, 0, NULL);
        const char *e = json_string_value(json_object_get(o, "error"));
        if (!json_is_false(json_object_get(o, "ok")) || e == NULL ||
            e[0] == '\0' ||
            (cases[i].error != NULL &&
             strncmp(e, cases[i].error, strlen(cases[i].error)) != 0)) {
            fail_msg("case %zu: %s", i, line);
        }
        json_decref(o);
        free(line);
    }
    /* NUL bytes inside a line, then the same connection still works. */
    static const char nul[] = "{\"action\":\0\"status\"}\n";
    char *line = replyOn(fd, nul, sizeof nul - 1);
    assert_non_null(strstr(line, "\"ok\":false"));
    free(line);
    answered(fd);
    close(fd);
}

static void testEmptyLinesAndHalfClose(void **state)
{
    static const char input[] = "\n\r\n\n{\"action\":\"status\"}\r\n\n";
    char *line = NULL;
    (void)state;
    int fd = tpdbdsConnect(cluster.client[0]);
    assert_int_equal(tpdbdsSend(fd, input, sizeof input - 1), 0);
    shutdown(fd, SHUT_WR);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_non_null(strstr(line, "\"ok\":true"));
    free(line);
    /* Exactly one reply, then the server closes. */
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_SHUTDOWN);
    close(fd);
    /* A last request without newline is answered (printf ... | nc). */
    fd = tpdbdsConnect(cluster.client[0]);
    assert_int_equal(tpdbdsSend(fd, "{\"action\":\"status\"}", 19), 0);
    shutdown(fd, SHUT_WR);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_non_null(strstr(line, "\"ok\":true"));
    free(line);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_SHUTDOWN);
    close(fd);
    /* Half a request, then end of file: a parse error, then closed. */
    fd = tpdbdsConnect(cluster.client[0]);
    assert_int_equal(tpdbdsSend(fd, "{\"action\":\"sta", 14), 0);
    shutdown(fd, SHUT_WR);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_non_null(strstr(line, "\"ok\":false"));
    free(line);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_SHUTDOWN);
    close(fd);
}

static void testLongLineAndAbortedClients(void **state)
{
    /* More than the limit: the reply must survive the unread rest. */
    size_t len = 3 * 1024 * 1024;
    char *big = malloc(len);
    char *line = NULL;
    (void)state;
    memset(big, 'a', len);
    int fd = tpdbdsConnect(cluster.client[0]);
    assert_int_equal(tpdbdsSend(fd, big, len), 0);
    free(big);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_OK);
    assert_string_equal(line,
                        "{\"ok\":false,\"error\":\"request line longer "
                        "than 1048576 bytes: closing the connection\"}");
    free(line);
    assert_int_equal(tpdbdsReadLine(fd, TPDBDS_IO_MS, &line), TPDB_SHUTDOWN);
    close(fd);
    /* Clients that vanish: at once, mid-line, with a reset. */
    for (int i = 0; i < 20; i++) {
        fd = tpdbdsConnect(cluster.client[0]);
        assert_true(fd >= 0);
        if (i % 2) {
            assert_int_equal(tpdbdsSend(fd, "{\"action\":\"sta", 14), 0);
        }
        if (i % 4 == 3) {
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
    }
    /* Still serving once their threads have ended. */
    struct capPoll p = {cluster.client[0], -1};
    assert_int_equal(harnessPollUntil(servedConnection, &p, 10000, 20),
                     TPDB_OK);
    close(p.fd);
}

static int announcesTempDir(const char *line, void *arg)
{
    (void)arg;
    return strstr(line, "temporary directory ") != NULL;
}

static void testTempDirRemovedAtExit(void **state)
{
    char prog[HARNESS_PATH_MAX], raft[64], client[64], errmsg[512];
    char dir[HARNESS_PATH_MAX];
    unsigned ports[2];
    struct harness_proc *p = NULL;
    char *line = NULL;
    struct stat sb;
    int status = -1;
    (void)state;
    snprintf(prog, sizeof prog, "%s/shell/tpdbd", getenv("TPDB_BUILD_ROOT"));
    assert_int_equal(harnessFreePorts(ports, 2, errmsg), TPDB_OK);
    snprintf(raft, sizeof raft, "--raft=127.0.0.1:%u", ports[0]);
    snprintf(client, sizeof client, "--client=127.0.0.1:%u", ports[1]);
    const char *argv[] = {prog, "--node-id", "solo", raft, client, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    assert_int_equal(harnessProcExpect(p, HARNESS_STDERR, announcesTempDir,
                                       NULL, TPDBDS_READY_MS, &line, errmsg),
                     TPDB_OK);
    const char *at = strstr(line, "temporary directory ") + 20;
    snprintf(dir, sizeof dir, "%.*s", (int)strcspn(at, ","), at);
    tpdb_free(line);
    assert_int_equal(
        harnessProcExpect(p, HARNESS_STDERR, harnessMatchContains,
                          " ready: ", TPDBDS_READY_MS, NULL, errmsg),
        TPDB_OK);
    assert_int_equal(stat(dir, &sb), 0);
    json_t *o = tpdbdsRequest(ports[1],
                              "{\"action\":\"propose\",\"sql\":"
                              "\"CREATE TABLE t(x)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    /* SIGINT stops it like SIGTERM (the cluster test sends SIGTERM). */
    assert_int_equal(harnessProcSignal(p, SIGINT, errmsg), TPDB_OK);
    assert_int_equal(harnessProcWait(p, 30000, &status, errmsg), TPDB_OK);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(stat(dir, &sb), -1);
    harnessProcFree(p);
}

static int readyOrError(const char *line, void *arg)
{
    (void)arg;
    return strstr(line, " ready: ") != NULL || strstr(line, " error ") != NULL;
}

/* Starts a single node "id" on dir; returns the process once ready, or
 * NULL if it logged an error (that line then in *err, caller frees)
 * and exited. */
static struct harness_proc *startSolo(const char *id,
                                      const char *dir,
                                      const unsigned *ports,
                                      char **err)
{
    char prog[HARNESS_PATH_MAX], raft[64], client[64], data[HARNESS_PATH_MAX];
    char errmsg[512];
    struct harness_proc *p = NULL;
    snprintf(prog, sizeof prog, "%s/shell/tpdbd", getenv("TPDB_BUILD_ROOT"));
    snprintf(raft, sizeof raft, "--raft=127.0.0.1:%u", ports[0]);
    snprintf(client, sizeof client, "--client=127.0.0.1:%u", ports[1]);
    snprintf(data, sizeof data, "--data-dir=%s", dir);
    const char *argv[] = {prog, "--node-id", id, raft, client, data, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    char *line = NULL;
    int rc = harnessProcExpect(p, HARNESS_STDERR, readyOrError, NULL,
                               TPDBDS_READY_MS, &line, errmsg);
    assert_int_equal(rc, TPDB_OK);
    if (strstr(line, " ready: ") != NULL) {
        tpdb_free(line);
        return p;
    }
    *err = line;
    assert_int_equal(harnessProcWait(p, 10000, NULL, errmsg), TPDB_OK);
    harnessProcFree(p);
    return NULL;
}

/* The node id's raft id and the data survive a restart; another id on
 * the same directory is refused with the library's reason. */
static void testRestartKeepsIdentity(void **state)
{
    char dir[HARNESS_PATH_MAX], errmsg[512];
    unsigned ports[2];
    char *err = NULL;
    long long ids[2];
    int status;
    (void)state;
    assert_int_equal(harnessTmpDir(dir, sizeof dir, errmsg), TPDB_OK);
    assert_int_equal(harnessFreePorts(ports, 2, errmsg), TPDB_OK);
    for (int run = 0; run < 2; run++) {
        struct harness_proc *p = startSolo("alpha", dir, ports, &err);
        assert_non_null(p);
        json_t *o = tpdbdsRequest(ports[1],
                                  "{\"action\":\"propose\",\"sql\":"
                                  "\"CREATE TABLE IF NOT EXISTS r(x); "
                                  "INSERT INTO r VALUES(1)\"}");
        assert_true(json_is_true(json_object_get(o, "ok")));
        json_decref(o);
        o = tpdbdsRequest(ports[1],
                          "{\"action\":\"query\",\"sql\":"
                          "\"SELECT count(*) FROM r\"}");
        char *rows = json_dumps(json_object_get(o, "rows"), JSON_COMPACT);
        assert_string_equal(rows, run == 0 ? "[[1]]" : "[[2]]");
        free(rows);
        json_decref(o);
        o = tpdbdsRequest(ports[1], "{\"action\":\"status\"}");
        ids[run] = json_integer_value(json_object_get(o, "raft_id"));
        json_decref(o);
        assert_int_equal(harnessProcStop(p, 30000, &status, errmsg), TPDB_OK);
        harnessProcFree(p);
    }
    assert_true(ids[0] >> 62 == 1);
    assert_int_equal(ids[0], ids[1]);
    assert_null(startSolo("beta", dir, ports, &err));
    if (strstr(err, "this directory is node ") == NULL) {
        fail_msg("refusal does not say why: %s", err);
    }
    tpdb_free(err);
    harnessRmTree(dir, errmsg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testStatusAndMetrics),
        cmocka_unit_test(testParamsRoundTrip),
        cmocka_unit_test(testManyRequestsOneConnection),
        cmocka_unit_test(testWritesRefusedInReads),
        cmocka_unit_test(testDbField),
        cmocka_unit_test(testTransactionLeftOpen),
        cmocka_unit_test(testConnectionCap),
        cmocka_unit_test(testMalformedRequests),
        cmocka_unit_test(testEmptyLinesAndHalfClose),
        cmocka_unit_test(testLongLineAndAbortedClients),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test_teardown(testTempDirRemovedAtExit, harnessTeardown),
        cmocka_unit_test_teardown(testRestartKeepsIdentity, harnessTeardown),
    };
    int failed = cmocka_run_group_tests(tests, startNode, stopNode);
    return failed + cmocka_run_group_tests(alone, NULL, NULL);
}
