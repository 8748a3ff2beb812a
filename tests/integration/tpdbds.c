/*
 * Clusters of tpdbd processes for the integration tests (tpdbds.h).
 */
#include "tests/integration/tpdbds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

void tpdbdsInit(struct tpdbds *c, unsigned n, int client_peers)
{
    unsigned ports[2 * TPDBDS_MAX];
    assert_true(n >= 1 && n <= TPDBDS_MAX);
    memset(c, 0, sizeof *c);
    c->n = n;
    c->voters = n;
    c->client_peers = client_peers;
    assert_int_equal(harnessTmpDir(c->dir, sizeof c->dir, c->errmsg), TPDB_OK);
    const char *build = getenv("TPDB_BUILD_ROOT");
    assert_non_null(build);
    snprintf(c->prog, sizeof c->prog, "%s/shell/tpdbd", build);
    assert_int_equal(harnessFreePorts(ports, 2 * n, c->errmsg), TPDB_OK);
    for (unsigned i = 0; i < n; i++) {
        c->raft[i] = ports[2 * i];
        c->client[i] = ports[2 * i + 1];
    }
}

/* Appends a copy of s to argv at *argc. */
static void push(const char **argv,
                 int *argc,
                 char *pool,
                 size_t *used,
                 const char *fmt,
                 ...)
{
    va_list ap;
    char *dst = pool + *used;
    va_start(ap, fmt);
    int n = vsnprintf(dst, 8192 - *used, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && *used + (size_t)n + 1 < 8192);
    *used += (size_t)n + 1;
    argv[(*argc)++] = dst;
}

void tpdbdsStart(struct tpdbds *c, int i, const char *const *extra)
{
    const char *argv[128];
    static char pool[8192];
    size_t used = 0;
    int argc = 0;
    assert_true(i >= 0 && (unsigned)i < c->n && c->procs[i] == NULL);
    push(argv, &argc, pool, &used, "%s", c->prog);
    push(argv, &argc, pool, &used, "--node-id=n%d", i + 1);
    push(argv, &argc, pool, &used, "--raft=127.0.0.1:%u", c->raft[i]);
    push(argv, &argc, pool, &used, "--client=127.0.0.1:%u", c->client[i]);
    push(argv, &argc, pool, &used, "--data-dir=%s/n%d", c->dir, i + 1);
    push(argv, &argc, pool, &used, "--election-ms=%u",
         400 * harnessTimerScale());
    push(argv, &argc, pool, &used, "--ready-ms=60000");
    for (unsigned k = 0; (unsigned)i < c->voters && k < c->voters; k++) {
        if (k == (unsigned)i) {
            continue;
        }
        push(argv, &argc, pool, &used, "--peer=n%u=127.0.0.1:%u", k + 1,
             c->raft[k]);
        if (c->client_peers) {
            push(argv, &argc, pool, &used, "--client-peer=n%u=127.0.0.1:%u",
                 k + 1, c->client[k]);
        }
    }
    for (; extra != NULL && *extra != NULL && argc < 126; extra++) {
        argv[argc++] = *extra;
    }
    argv[argc] = NULL;
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &c->procs[i], c->errmsg),
                     TPDB_OK);
}

void tpdbdsWaitReady(struct tpdbds *c, int i)
{
    int rc =
        harnessProcExpect(c->procs[i], HARNESS_STDERR, harnessMatchContains,
                          " ready: ", TPDBDS_READY_MS, NULL, c->errmsg);
    if (rc != TPDB_OK) {
        fail_msg("tpdbd n%d not ready: %s", i + 1, c->errmsg);
    }
}

void tpdbdsStartAll(struct tpdbds *c, const char *const *extra)
{
    for (unsigned i = 0; i < c->n; i++) {
        tpdbdsStart(c, (int)i, extra);
    }
    for (unsigned i = 0; i < c->n; i++) {
        tpdbdsWaitReady(c, (int)i);
    }
}

json_t *tpdbdsOnConn(int fd, const char *line)
{
    char *reply = NULL;
    json_t *o = NULL;
    if (tpdbdsSend(fd, line, strlen(line)) == 0 &&
        tpdbdsSend(fd, "\n", 1) == 0 &&
        tpdbdsReadLine(fd, TPDBDS_IO_MS, &reply) == TPDB_OK) {
        o = json_loads(reply, 0, NULL);
    }
    free(reply);
    return o;
}

static int connectAt(const char *ip, unsigned port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int tpdbdsConnect(unsigned port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int tpdbdsSend(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Peeks at what has arrived and consumes it only up to the newline, so
 * the next reply stays in the socket for the next call. */
int tpdbdsReadLine(int fd, int timeout_ms, char **line)
{
    uint64_t deadline = tpdbNowMs() + (uint64_t)timeout_ms;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        uint64_t now = tpdbNowMs();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) == 0) {
            free(buf);
            return TPDB_TIMEOUT;
        }
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = recv(fd, buf + len, cap - len, MSG_PEEK);
        if (n <= 0) {
            free(buf);
            return n == 0 ? TPDB_SHUTDOWN : TPDB_IOERR;
        }
        char *nl = memchr(buf + len, '\n', (size_t)n);
        size_t take = nl != NULL ? (size_t)(nl - (buf + len)) + 1 : (size_t)n;
        assert_int_equal(recv(fd, buf + len, take, 0), (ssize_t)take);
        len += take;
        if (nl != NULL) {
            buf[len - 1] = '\0';
            *line = buf;
            return TPDB_OK;
        }
    }
}

const char *tpdbdsText(json_t *o)
{
    static _Thread_local char buf[4096];
    char *t = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    snprintf(buf, sizeof buf, "%s", t != NULL ? t : "no reply");
    free(t);
    return buf;
}

json_t *tpdbdsRequest(unsigned port, const char *line)
{
    return tpdbdsRequestAt("127.0.0.1", port, line);
}

json_t *tpdbdsRequestAt(const char *ip, unsigned port, const char *line)
{
    char *reply = NULL;
    json_t *o = NULL;
    int fd = connectAt(ip, port);
    if (fd < 0) {
        return NULL;
    }
    if (tpdbdsSend(fd, line, strlen(line)) == 0 &&
        tpdbdsSend(fd, "\n", 1) == 0 &&
        tpdbdsReadLine(fd, TPDBDS_IO_MS, &reply) == TPDB_OK) {
        o = json_loads(reply, 0, NULL);
    }
    free(reply);
    close(fd);
    return o;
}

json_t *tpdbdsCall(struct tpdbds *c, int i, const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (c->procs[i] == NULL) {
        return NULL;
    }
    if (c->token == NULL) {
        return tpdbdsRequest(c->client[i], line);
    }
    json_t *req = json_loads(line, 0, NULL);
    assert_non_null(req);
    if (json_object_get(req, "token") == NULL) {
        json_object_set_new(req, "token", json_string(c->token));
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    assert_non_null(text);
    json_t *reply = tpdbdsRequest(c->client[i], text);
    free(text);
    return reply;
}

void tpdbdsRole(struct tpdbds *c, int i, char *role, size_t size)
{
    json_t *o = tpdbdsCall(c, i, "{\"action\":\"status\"}");
    const char *r = json_string_value(json_object_get(o, "role"));
    snprintf(role, size, "%s", r != NULL ? r : "");
    json_decref(o);
}

/* The member all running members name as leader, or -1. */
static int agreedLeader(struct tpdbds *c)
{
    char want[16] = "";
    int leader = -1;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->procs[i] == NULL) {
            continue;
        }
        json_t *o = tpdbdsCall(c, (int)i, "{\"action\":\"status\"}");
        const char *l = json_string_value(json_object_get(o, "leader_id"));
        const char *r = json_string_value(json_object_get(o, "role"));
        int ok = l != NULL && l[0] != '\0' &&
                 (want[0] == '\0' || strcmp(want, l) == 0);
        if (ok) {
            snprintf(want, sizeof want, "%s", l);
        }
        if (ok && strcmp(r, "Leader") == 0) {
            leader = (int)i;
        }
        json_decref(o);
        if (!ok) {
            return -1;
        }
    }
    return leader;
}

struct leaderPoll {
    struct tpdbds *c;
    int leader;
};

static int leaderFound(void *arg)
{
    struct leaderPoll *p = arg;
    p->leader = agreedLeader(p->c);
    return p->leader >= 0;
}

int tpdbdsFindLeader(struct tpdbds *c, int timeout_ms)
{
    struct leaderPoll p = {c, -1};
    if (harnessPollUntil(leaderFound, &p, timeout_ms, 50) != TPDB_OK) {
        fail_msg("no leader agreed on within %d ms", timeout_ms);
    }
    return p.leader;
}

struct countPoll {
    struct tpdbds *c;
    const char *table;
    long long want;
    char seen[256];
};

static int countsEqual(void *arg)
{
    struct countPoll *p = arg;
    int all = 1;
    p->seen[0] = '\0';
    for (unsigned i = 0; i < p->c->n; i++) {
        if (p->c->procs[i] == NULL) {
            continue;
        }
        json_t *o = tpdbdsCall(p->c, (int)i,
                               "{\"action\":\"local_query\",\"sql\":"
                               "\"SELECT count(*) FROM %s\"}",
                               p->table);
        json_t *v =
            json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0);
        long long n = json_is_integer(v) ? json_integer_value(v) : -1;
        size_t used = strlen(p->seen);
        snprintf(p->seen + used, sizeof p->seen - used, " n%u=%lld", i + 1, n);
        all &= n == p->want;
        json_decref(o);
    }
    return all;
}

void tpdbdsWaitCount(struct tpdbds *c,
                     const char *table,
                     long long count,
                     int timeout_ms)
{
    struct countPoll p = {c, table, count, ""};
    if (harnessPollUntil(countsEqual, &p, timeout_ms, 50) != TPDB_OK) {
        fail_msg("count(*) of %s is not %lld everywhere:%s", table, count,
                 p.seen);
    }
}

void tpdbdsKill(struct tpdbds *c, int i)
{
    assert_non_null(c->procs[i]);
    assert_int_equal(harnessProcKill(c->procs[i], NULL, c->errmsg), TPDB_OK);
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
}

int tpdbdsStop(struct tpdbds *c, int i, int timeout_ms)
{
    int status = -1;
    assert_non_null(c->procs[i]);
    int rc = harnessProcStop(c->procs[i], timeout_ms, &status, c->errmsg);
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
    if (rc != TPDB_OK) {
        fail_msg("tpdbd n%d did not stop on SIGTERM within %d ms", i + 1,
                 timeout_ms);
    }
    return status;
}

void tpdbdsClose(struct tpdbds *c)
{
    harnessCleanup();
    for (unsigned i = 0; i < c->n; i++) {
        c->procs[i] = NULL;
    }
    harnessRmTree(c->dir, c->errmsg);
}
