/*
 * tpdbd --metrics: three real tpdbd processes, each serving Prometheus
 * text over HTTP, read with real HTTP GETs on loopback. Shown: the reply
 * is HTTP/1.1 200 with Prometheus's content type and a well-formed
 * exposition (every sample's family has a TYPE line, every line parses);
 * exactly one node reports the leader role, all the same term and leader,
 * three voters; after writes on the leader its write counter, commit
 * counter and latency histogram count them, its group commit counters
 * one commit per write (one writer at a time), and every node's data.db
 * applied index reaches the leader's commit index; other paths get 404,
 * other methods 405, a garbage request 400, and the node keeps serving.
 * The `metrics` action of each node has every fact of its Prometheus text
 * (role, term, indexes, commits, the latency histogram, apply backlog,
 * snapshot counts, per-database sizes, ...) with the same values, read
 * between two identical scrapes.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define WAIT_MS 60000
#define WRITES 10

static struct tpdbds c;
static unsigned metricsPort[N];

/* Sends request on a new connection to the metrics port of node i and
 * returns everything until the server closes (caller frees). */
static char *http(int i, const char *request)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    uint64_t deadline = tpdbNowMs() + TPDBDS_IO_MS;
    int fd = tpdbdsConnect(metricsPort[i]);
    assert_non_null(buf);
    assert_true(fd >= 0);
    assert_int_equal(tpdbdsSend(fd, request, strlen(request)), 0);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = tpdbNowMs();
        assert_true(now < deadline);
        if (poll(&p, 1, (int)(deadline - now)) <= 0) {
            continue;
        }
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        assert_true(n >= 0);
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static char *scrape(int i)
{
    char *r = http(i, "GET /metrics HTTP/1.1\r\nHost: tpdbd\r\n\r\n");
    if (strncmp(r, "HTTP/1.1 200 OK\r\n", 17) != 0 ||
        strstr(r, "\r\nContent-Type: text/plain; version=0.0.4") == NULL) {
        fail_msg("node %d: bad reply: %.300s", i + 1, r);
    }
    return r;
}

/* The value of the sample written exactly as series ("name" or
 * "name{labels}") in text; fails if absent. */
static double sample(const char *text, const char *series)
{
    size_t len = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p += len) {
        if ((p == text || p[-1] == '\n') && p[len] == ' ') {
            return strtod(p + len + 1, NULL);
        }
    }
    fail_msg("no sample %s", series);
    return 0;
}

static int validName(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 ch == '_' || ch == ':' || (i > 0 && ch >= '0' && ch <= '9');
        if (!ok) {
            return 0;
        }
    }
    return len > 0;
}

/* Text format 0.0.4: HELP/TYPE comments, then samples "name{...} value"
 * of a family whose TYPE came first. */
static void checkFormat(const char *reply)
{
    const char *body = strstr(reply, "\r\n\r\n");
    char typed[256][96];
    int ntyped = 0;
    assert_non_null(body);
    body += 4;
    assert_true(body[0] != '\0' && body[strlen(body) - 1] == '\n');
    for (const char *line = body; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = (size_t)(end - line);
        char l[1024];
        snprintf(l, sizeof l, "%.*s", (int)len, line);
        if (strncmp(l, "# TYPE ", 7) == 0) {
            char name[96], type[32];
            assert_int_equal(sscanf(l + 7, "%95s %31s", name, type), 2);
            assert_true(ntyped < 256);
            snprintf(typed[ntyped++], sizeof typed[0], "%s", name);
        } else if (strncmp(l, "# HELP ", 7) != 0) {
            size_t nlen = strcspn(l, "{ ");
            char *value = strrchr(l, ' ');
            char *rest = NULL;
            int known = 0;
            if (!validName(l, nlen) || value == NULL) {
                fail_msg("bad line: %s", l);
            }
            strtod(value + 1, &rest);
            if (*rest != '\0' || rest == value + 1) {
                fail_msg("bad value: %s", l);
            }
            for (int t = 0; t < ntyped; t++) {
                size_t tl = strlen(typed[t]);
                known |= strncmp(l, typed[t], tl) == 0 &&
                         (tl == nlen || strncmp(l + tl, "_bucket", 7) == 0 ||
                          strncmp(l + tl, "_sum", 4) == 0 ||
                          strncmp(l + tl, "_count", 6) == 0);
            }
            if (!known) {
                fail_msg("sample before its TYPE: %s", l);
            }
        }
        line = end + 1;
    }
}

struct appliedPoll {
    double want;
};

static int allApplied(void *arg)
{
    struct appliedPoll *p = arg;
    for (int i = 0; i < N; i++) {
        char *r = scrape(i);
        double v = sample(r, "tpdb_database_applied_index{db=\"data.db\"}");
        free(r);
        if (v < p->want) {
            return 0;
        }
    }
    return 1;
}

static void startCluster(void)
{
    char args[N][32];
    assert_int_equal(harnessFreePorts(metricsPort, N, c.errmsg), TPDB_OK);
    for (int i = 0; i < N; i++) {
        snprintf(args[i], sizeof args[i], "--metrics=127.0.0.1:%u",
                 metricsPort[i]);
        const char *extra[] = {args[i], NULL};
        tpdbdsStart(&c, i, extra);
    }
    for (int i = 0; i < N; i++) {
        tpdbdsWaitReady(&c, i);
    }
}

static void testMetrics(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    startCluster();
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    json_t *o = tpdbdsCall(&c, leader,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "t(x)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    for (int k = 0; k < WRITES; k++) {
        o = tpdbdsCall(&c, leader,
                       "{\"action\":\"propose\",\"sql\":\"INSERT INTO t "
                       "VALUES(%d)\"}",
                       k);
        assert_true(json_is_true(json_object_get(o, "ok")));
        json_decref(o);
    }
    char *lr = scrape(leader);
    checkFormat(lr);
    assert_int_equal(sample(lr, "tpdbd_writes_total"), WRITES + 1);
    /* One writer at a time: each propose is a group commit of its own. */
    assert_int_equal(sample(lr, "tpdbd_group_commits_total"), WRITES + 1);
    assert_int_equal(sample(lr, "tpdbd_group_writes_total"), WRITES + 1);
    assert_int_equal(sample(lr, "tpdbd_group_largest"), 1);
    assert_int_equal(sample(lr, "tpdbd_group_queued"), 0);
    assert_true(sample(lr, "tpdb_commits_total") >= WRITES + 1);
    assert_true(sample(lr, "tpdbd_request_duration_seconds_count") >=
                WRITES + 1);
    assert_true(
        sample(lr, "tpdbd_request_duration_seconds_bucket{le=\"+Inf\"}") ==
        sample(lr, "tpdbd_request_duration_seconds_count"));
    assert_int_equal(sample(lr, "tpdb_raft_members{role=\"voter\"}"), N);
    assert_int_equal(sample(lr, "tpdb_raft_is_leader"), 1);
    double term = sample(lr, "tpdb_raft_term");
    struct appliedPoll want = {sample(lr, "tpdb_raft_commit_index")};
    assert_true(want.want >= WRITES + 1);
    free(lr);
    /* Every node gets there; one leader, the others followers. */
    assert_int_equal(harnessPollUntil(allApplied, &want, WAIT_MS, 50), TPDB_OK);
    int leaders = 0;
    for (int i = 0; i < N; i++) {
        char *r = scrape(i);
        checkFormat(r);
        leaders += sample(r, "tpdb_raft_role{role=\"leader\"}") == 1;
        assert_int_equal(sample(r, "tpdb_raft_role{role=\"follower\"}"),
                         i != leader);
        assert_true(sample(r, "tpdb_raft_term") == term);
        assert_int_equal(sample(r, "tpdb_up"), 1);
        assert_true(sample(r, "tpdb_database_size_bytes{db=\"data.db\"}") >=
                    4096);
        assert_true(sample(r, "tpdb_apply_backlog_entries") >= 0);
        assert_true(sample(r, "tpdb_snapshots_total") >= 0);
        assert_true(sample(r, "tpdb_fetches_total") >= 0);
        free(r);
    }
    assert_int_equal(leaders, 1);
    /* Other requests. */
    char *r = http(0, "GET /other HTTP/1.1\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.1 404 ", 13), 0);
    free(r);
    r = http(0, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.1 405 ", 13), 0);
    free(r);
    r = http(0, "\x01\x02garbage\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.1 400 ", 13), 0);
    free(r);
    free(scrape(0));
    tpdbdsClose(&c);
}

/* A field of o that must be there. Borrowed. */
static json_t *need(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL) {
        char *t = json_dumps(o, JSON_COMPACT);
        fail_msg("metrics action: no \"%s\" in %.600s", key, t);
    }
    return v;
}

static long long needInt(json_t *o, const char *key)
{
    json_t *v = need(o, key);
    if (!json_is_integer(v)) {
        fail_msg("metrics action: \"%s\" is not an integer", key);
    }
    return (long long)json_integer_value(v);
}

/* Asserts that text has the sample series with value want. */
static void agrees(const char *text, const char *series, double want)
{
    double got = sample(text, series);
    if (got != want) {
        fail_msg("%s: %g in the Prometheus text, %g in the metrics action",
                 series, got, want);
    }
}

static void agreesRaft(const char *t, json_t *m)
{
    static const char *const roles[] = {"leader", "follower", "candidate",
                                        "unavailable"};
    json_t *r = need(m, "raft"), *members = need(r, "members");
    json_t *leader = need(r, "leader");
    const char *role = json_string_value(need(r, "role"));
    char series[512], tpRole[32];
    agrees(t, "tpdb_raft_term", needInt(r, "term"));
    agrees(t, "tpdb_raft_commit_index", needInt(r, "commit_index"));
    agrees(t, "tpdb_raft_applied_index", needInt(r, "applied_index"));
    agrees(t, "tpdb_raft_last_index", needInt(r, "last_index"));
    agrees(t, "tpdb_apply_lag_entries", needInt(r, "apply_lag"));
    agrees(t, "tpdb_raft_is_leader", json_is_true(need(r, "is_leader")));
    for (size_t i = 0; i < 4; i++) {
        snprintf(series, sizeof series, "tpdb_raft_role{role=\"%s\"}",
                 roles[i]);
        agrees(t, series, role != NULL && strcmp(role, roles[i]) == 0);
    }
    if (json_is_object(leader)) {
        snprintf(series, sizeof series,
                 "tpdb_raft_leader{raft_id=\"%lld\",address=\"%s\"}",
                 needInt(leader, "raft_id"),
                 json_string_value(need(leader, "address")));
        agrees(t, series, 1);
    }
    agrees(t, "tpdb_raft_members{role=\"voter\"}", needInt(members, "voter"));
    agrees(t, "tpdb_raft_members{role=\"standby\"}",
           needInt(members, "standby"));
    agrees(t, "tpdb_raft_members{role=\"spare\"}", needInt(members, "spare"));
    /* TrashPandaDB's fields say the same. */
    assert_int_equal(needInt(m, "term"), needInt(r, "term"));
    assert_int_equal(needInt(m, "commit_index"), needInt(r, "commit_index"));
    assert_int_equal(needInt(m, "last_applied"), needInt(r, "applied_index"));
    snprintf(tpRole, sizeof tpRole, "%s", role);
    tpRole[0] = (char)(tpRole[0] - 'a' + 'A');
    assert_string_equal(json_string_value(need(m, "role")), tpRole);
}

static void agreesFsm(const char *t, json_t *m)
{
    static const char *const pairs[][2] = {
        {"tpdb_commits_total", "commits"},
        {"tpdb_applied_entries_total", "applied_entries"},
        {"tpdb_applied_pages_total", "applied_pages"},
        {"tpdb_snapshots_total", "snapshots"},
        {"tpdb_snapshot_restores_total", "snapshot_restores"},
        {"tpdb_fetches_total", "fetches"},
        {"tpdb_fetches_served_total", "fetches_served"},
        {"tpdb_fetching", "fetching"},
        {"tpdb_apply_backlog_entries", "apply_backlog"},
        {"tpdb_peer_connections_refused_total", "peer_connections_refused"},
    };
    json_t *f = need(m, "fsm");
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        agrees(t, pairs[i][0], needInt(f, pairs[i][1]));
    }
}

static void agreesDatabases(const char *t, json_t *m)
{
    static const char *const pairs[][2] = {
        {"tpdb_database_applied_index", "applied_index"},
        {"tpdb_database_last_entry_index", "last_entry_index"},
        {"tpdb_database_apply_backlog_entries", "apply_backlog"},
        {"tpdb_database_size_bytes", "size_bytes"},
    };
    json_t *dbs = need(m, "databases"), *db;
    const char *name;
    char series[256];
    need(dbs, "data.db");
    json_object_foreach(dbs, name, db)
    {
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            snprintf(series, sizeof series, "%s{db=\"%s\"}", pairs[i][0], name);
            agrees(t, series, needInt(db, pairs[i][1]));
        }
    }
}

static void agreesDaemon(const char *t, json_t *m)
{
    static const char *const pairs[][2] = {
        {"tpdbd_group_commits_total", "commits"},
        {"tpdbd_group_writes_total", "writes"},
        {"tpdbd_group_largest", "largest"},
        {"tpdbd_group_queued", "queued"},
        {"tpdbd_group_reruns_total", "reruns"},
    };
    json_t *g = need(m, "group_commit"), *node = need(m, "node");
    json_t *lat = need(m, "latency"), *b;
    char series[512];
    size_t i;
    agrees(t, "tpdb_up", json_is_true(need(m, "up")));
    agrees(t, "tpdbd_writes_total", needInt(m, "writes_total"));
    agrees(t, "tpdbd_queries_total", needInt(m, "queries_total"));
    agrees(t, "tpdbd_slow_queries_total", needInt(m, "slow_queries_total"));
    for (i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        agrees(t, pairs[i][0], needInt(g, pairs[i][1]));
    }
    snprintf(series, sizeof series,
             "tpdbd_node_info{node_id=\"%s\",raft_id=\"%lld\",raft_addr="
             "\"%s\",client_addr=\"%s\"}",
             json_string_value(need(node, "node_id")), needInt(node, "raft_id"),
             json_string_value(need(node, "raft_addr")),
             json_string_value(need(node, "client_addr")));
    agrees(t, series, 1);
    assert_int_equal(json_array_size(need(lat, "buckets")), 14);
    json_array_foreach(need(lat, "buckets"), i, b)
    {
        snprintf(series, sizeof series,
                 "tpdbd_request_duration_seconds_bucket{le=\"%s\"}",
                 json_string_value(need(b, "le")));
        agrees(t, series, needInt(b, "count"));
    }
    agrees(t, "tpdbd_request_duration_seconds_count", needInt(lat, "count"));
    double sum = json_number_value(need(lat, "sum_seconds"));
    assert_true(sample(t, "tpdbd_request_duration_seconds_sum") - sum <
                    0.0006 &&
                sum - sample(t, "tpdbd_request_duration_seconds_sum") < 0.0006);
}

/* The body of a scrape (after the HTTP head). */
static const char *body(const char *reply)
{
    const char *b = strstr(reply, "\r\n\r\n");
    assert_non_null(b);
    return b + 4;
}

struct agreement {
    int node;
};

/* One try: a scrape, the action, a scrape; compared when the two scrapes
 * are the same (nothing changed meanwhile). */
static int agreementOnce(void *arg)
{
    struct agreement *a = arg;
    char *before = scrape(a->node);
    json_t *m = tpdbdsCall(&c, a->node, "{\"action\":\"metrics\"}");
    char *after = scrape(a->node);
    int same = strcmp(body(before), body(after)) == 0;
    if (same) {
        const char *t = body(before);
        agreesRaft(t, m);
        agreesFsm(t, m);
        agreesDatabases(t, m);
        agreesDaemon(t, m);
    }
    json_decref(m);
    free(before);
    free(after);
    return same;
}

static void testActionAgrees(void **state)
{
    (void)state;
    tpdbdsInit(&c, N, 0);
    startCluster();
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    for (int k = 0; k < WRITES; k++) {
        json_t *o = tpdbdsCall(
            &c, (leader + k) % N,
            k == 0 ? "{\"action\":\"propose\",\"sql\":\"CREATE TABLE t(x)\"}"
                   : "{\"action\":\"propose\",\"sql\":\"INSERT INTO t "
                     "VALUES(1)\"}");
        assert_true(json_is_true(json_object_get(o, "ok")));
        json_decref(o);
    }
    json_decref(
        tpdbdsCall(&c, leader, "{\"action\":\"query\",\"sql\":\"SELECT 1\"}"));
    for (int i = 0; i < N; i++) {
        struct agreement a = {i};
        assert_int_equal(harnessPollUntil(agreementOnce, &a, WAIT_MS, 50),
                         TPDB_OK);
    }
    tpdbdsClose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testMetrics),
        cmocka_unit_test(testActionAgrees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
