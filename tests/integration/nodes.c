/*
 * Clusters of tpdb-testnode processes for the integration tests (nodes.h):
 * start and wait, the command/reply line protocol, status JSON, polls for a
 * leader, equal applied indexes and a completed checkpoint.
 */
#include "tests/integration/nodes.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

void nodesInit(struct nodes *c,
               unsigned n,
               unsigned nvoters,
               const char *params)
{
    size_t len = 0;
    assert_true(n >= 1 && n <= NODES_MAX && nvoters <= n);
    c->n = n;
    assert_int_equal(harnessTmpDir(c->dir, sizeof c->dir, c->errmsg), TPDB_OK);
    const char *build = getenv("TPDB_BUILD_ROOT");
    assert_non_null(build);
    snprintf(c->prog, sizeof c->prog, "%s/tests/integration/tpdb-testnode",
             build);
    assert_int_equal(harnessFreePorts(c->ports, n, c->errmsg), TPDB_OK);
    c->peers[0] = '\0';
    for (unsigned i = 0; i < nvoters; i++) {
        len += (size_t)snprintf(c->peers + len, sizeof c->peers - len,
                                "%s%u@127.0.0.1:%u", i > 0 ? "," : "", i + 1,
                                c->ports[i]);
        assert_true(len < sizeof c->peers);
    }
    assert_true(params == NULL || strlen(params) < sizeof c->params);
    harnessScaleParams(params != NULL ? params : "", c->params,
                       sizeof c->params);
}

void nodesStart(struct nodes *c, int i, int via)
{
    char uri[HARNESS_PATH_MAX * 2];
    char sub[HARNESS_PATH_MAX + 16];
    char how[600];
    assert_true(i >= 0 && (unsigned)i < c->n && c->procs[i] == NULL);
    if (via < 0) {
        snprintf(how, sizeof how, "peers=%s", c->peers);
    } else {
        snprintf(how, sizeof how, "join=127.0.0.1:%u", c->ports[via]);
    }
    snprintf(uri, sizeof uri,
             "file:%s/n%d/app.db?node=%d&bind=127.0.0.1:%u&%s%s%s", c->dir,
             i + 1, i + 1, c->ports[i], how, c->params[0] != '\0' ? "&" : "",
             c->params);
    snprintf(sub, sizeof sub, "%s/n%d", c->dir, i + 1);
    mkdir(sub, 0755);
    const char *argv[] = {c->prog, uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &c->procs[i], c->errmsg),
                     TPDB_OK);
}

void nodesWaitReady(struct nodes *c, int i)
{
    int rc =
        harnessProcExpect(c->procs[i], HARNESS_STDOUT, harnessMatchContains,
                          "ready", NODES_READY_MS, NULL, c->errmsg);
    if (rc != TPDB_OK) {
        char *err = NULL;
        harnessProcReadAll(c->procs[i], HARNESS_STDERR, 1000, &err, c->errmsg);
        fail_msg("node %d not ready: %s", i + 1, err ? err : "");
    }
}

char *nodesCommand(struct nodes *c, int i, const char *cmd)
{
    return nodesCommandWithin(c, i, cmd, NODES_IO_MS);
}

char *nodesCommandWithin(struct nodes *c, int i, const char *cmd, int ms)
{
    char *line = NULL;
    if (c->procs[i] == NULL ||
        harnessProcWriteLine(c->procs[i], cmd, NODES_IO_MS, c->errmsg) !=
            TPDB_OK ||
        harnessProcReadLine(c->procs[i], HARNESS_STDOUT, ms, &line,
                            c->errmsg) != TPDB_OK) {
        tpdb_free(line);
        return NULL;
    }
    return line;
}

char *nodesQueryFirst(struct nodes *c, int i, const char *sql)
{
    char cmd[HARNESS_PATH_MAX];
    char *first = NULL;
    snprintf(cmd, sizeof cmd, "query %s", sql);
    char *line = nodesCommand(c, i, cmd);
    while (line != NULL) {
        if (strncmp(line, "row ", 4) != 0) {
            if (first == NULL || strncmp(line, "err", 3) == 0) {
                tpdb_free(first);
                first = line;
            } else {
                tpdb_free(line);
            }
            return first;
        }
        if (first == NULL) {
            first = line;
        } else {
            tpdb_free(line);
        }
        line = NULL;
        if (harnessProcReadLine(c->procs[i], HARNESS_STDOUT, NODES_IO_MS, &line,
                                c->errmsg) != TPDB_OK) {
            break;
        }
    }
    return first;
}

json_t *nodesStatus(struct nodes *c, int i)
{
    char *line = nodesCommand(c, i, "status");
    json_t *o = NULL;
    if (line != NULL && strncmp(line, "status ", 7) == 0) {
        o = json_loads(line + 7, 0, NULL);
    }
    tpdb_free(line);
    return o;
}

void nodesRole(struct nodes *c,
               int i,
               char *role,
               size_t size,
               long long *applied)
{
    json_t *o = nodesStatus(c, i);
    const char *r = json_string_value(json_object_get(o, "role"));
    snprintf(role, size, "%s", r != NULL ? r : "");
    *applied = o != NULL
                   ? json_integer_value(json_object_get(o, "applied_index"))
                   : -1;
    json_decref(o);
}

long long nodesStat(struct nodes *c, int i, const char *key)
{
    json_t *o = nodesStatus(c, i);
    json_t *value = json_object_get(json_object_get(o, "stats"), key);
    long long v = json_is_integer(value) ? json_integer_value(value) : -1;
    json_decref(o);
    return v;
}

struct leaderWait {
    struct nodes *c;
    int leader;
};

static int hasLeader(void *arg)
{
    struct leaderWait *w = arg;
    char role[32];
    long long applied;
    for (unsigned i = 0; i < w->c->n; i++) {
        nodesRole(w->c, (int)i, role, sizeof role, &applied);
        if (strcmp(role, "leader") == 0) {
            w->leader = (int)i;
            return 1;
        }
    }
    return 0;
}

/* What each node says of itself (and a silent node's stderr), for the log
 * of a failed run. */
static void printStatuses(struct nodes *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        json_t *st = c->procs[i] != NULL ? nodesStatus(c, (int)i) : NULL;
        char *text = st != NULL ? json_dumps(st, JSON_COMPACT) : NULL;
        print_error("node %u: %s\n", i + 1,
                    c->procs[i] == NULL ? "not running"
                    : text != NULL      ? text
                                        : "no status");
        if (c->procs[i] != NULL && st == NULL) {
            char *err = NULL;
            harnessProcReadAll(c->procs[i], HARNESS_STDERR, 2000, &err,
                               c->errmsg);
            print_error("node %u stderr: %s\n", i + 1, err != NULL ? err : "");
            tpdb_free(err);
        }
        free(text);
        json_decref(st);
    }
}

int nodesFindLeader(struct nodes *c, int timeout_ms)
{
    struct leaderWait w = {c, -1};
    if (harnessPollUntil(hasLeader, &w, timeout_ms, 50) != TPDB_OK) {
        printStatuses(c);
        fail_msg("no leader within %d ms", timeout_ms);
    }
    return w.leader;
}

struct statWait {
    struct nodes *c;
    int i;
    const char *key;
    long long at_least;
};

static int statReached(void *arg)
{
    struct statWait *w = arg;
    return nodesStat(w->c, w->i, w->key) >= w->at_least;
}

void nodesWaitStat(struct nodes *c,
                   int i,
                   const char *key,
                   long long at_least,
                   int timeout_ms)
{
    struct statWait w = {c, i, key, at_least};
    if (harnessPollUntil(statReached, &w, timeout_ms, 20) != TPDB_OK) {
        fail_msg("node %d: stats.%s stayed below %lld for %d ms", i + 1, key,
                 at_least, timeout_ms);
    }
}

struct appliedWait {
    struct nodes *c;
    long long index;
};

static int allApplied(void *arg)
{
    struct appliedWait *w = arg;
    long long first = -2;
    char role[32];
    for (unsigned i = 0; i < w->c->n; i++) {
        long long applied;
        nodesRole(w->c, (int)i, role, sizeof role, &applied);
        if (applied < 0 || (first != -2 && applied != first)) {
            return 0;
        }
        first = applied;
    }
    w->index = first;
    return 1;
}

long long nodesWaitApplied(struct nodes *c, int timeout_ms)
{
    struct appliedWait w = {c, 0};
    if (harnessPollUntil(allApplied, &w, timeout_ms, 100) != TPDB_OK) {
        printStatuses(c);
        fail_msg("the nodes did not reach one applied index within %d ms",
                 timeout_ms);
    }
    return w.index;
}

struct ckptWait {
    struct nodes *c;
    int node;
};

static int checkpointed(void *arg)
{
    struct ckptWait *w = arg;
    char *line =
        nodesQueryFirst(w->c, w->node, "PRAGMA wal_checkpoint(TRUNCATE)");
    int ok = line != NULL && strcmp(line, "row 0|0|0") == 0;
    tpdb_free(line);
    return ok;
}

void nodesCheckpoint(struct nodes *c, int i, int timeout_ms)
{
    struct ckptWait w = {c, i};
    assert_int_equal(harnessPollUntil(checkpointed, &w, timeout_ms, 50),
                     TPDB_OK);
}

void nodesKill(struct nodes *c, int i)
{
    assert_int_equal(harnessProcKill(c->procs[i], NULL, c->errmsg), TPDB_OK);
    harnessProcFree(c->procs[i]);
    c->procs[i] = NULL;
}

void nodesPath(const struct nodes *c,
               int i,
               const char *name,
               char *buf,
               size_t size)
{
    snprintf(buf, size, "%s/n%d/%s", c->dir, i + 1, name);
}

char *nodesReadFile(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    char *buf = tpdb_malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

void nodesClose(struct nodes *c)
{
    harnessCleanup();
    for (unsigned i = 0; i < c->n; i++) {
        c->procs[i] = NULL;
    }
    harnessRmTree(c->dir, c->errmsg);
}
