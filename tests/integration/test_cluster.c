/*
 * Integration test: a 3-node cluster of real tpdb-testnode processes on
 * loopback. Mixed INSERT/UPDATE/DELETE load through whichever node leads,
 * SIGKILL of the leader in the middle of it, a transaction over 10 MB, the
 * killed node restarted; then every acknowledged transaction must be on
 * every node, all nodes at the same applied index, the main database files
 * byte-identical after a checkpoint and passing integrity_check in the
 * stock sqlite3 shell.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/harness.h"
#include "vfs/base.h"

#define N_NODES 3
#define N_TXNS 1000
#define KILL_AT 400
#define IO_MS 30000

/* Model of one row: 0 absent, 1 present with value v, 2 unknown. */
struct row {
    int state;
    long v;
};

struct cluster {
    char dir[HARNESS_PATH_MAX];
    char prog[HARNESS_PATH_MAX];
    unsigned ports[N_NODES];
    char peers[512];
    struct harness_proc *procs[N_NODES];
    struct row rows[N_TXNS + 1];
    unsigned unknown;
};

static char errmsg[TPDB_ERRMSG_SIZE];

static void nodeUri(struct cluster *c, int i, char *buf, size_t size)
{
    snprintf(buf, size,
             "file:%s/n%d/app.db?node=%d&bind=127.0.0.1:%u&peers=%s&"
             "election_ms=400&heartbeat_ms=40&ready_ms=60000&"
             "snapshot_threshold=256&snapshot_trailing=64",
             c->dir, i + 1, i + 1, c->ports[i], c->peers);
}

static void nodeStart(struct cluster *c, int i)
{
    char uri[HARNESS_PATH_MAX + 1024];
    char sub[HARNESS_PATH_MAX + 16];
    nodeUri(c, i, uri, sizeof uri);
    snprintf(sub, sizeof sub, "%s/n%d", c->dir, i + 1);
    mkdir(sub, 0755);
    const char *argv[] = {c->prog, uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &c->procs[i], errmsg),
                     TPDB_OK);
}

static void nodeWaitReady(struct cluster *c, int i)
{
    int rc =
        harnessProcExpect(c->procs[i], HARNESS_STDOUT, harnessMatchContains,
                          "ready", 60000, NULL, errmsg);
    if (rc != TPDB_OK) {
        char *err = NULL;
        harnessProcReadAll(c->procs[i], HARNESS_STDERR, 1000, &err, errmsg);
        fail_msg("node %d not ready: %s", i + 1, err ? err : "");
    }
}

/* Sends a command and returns its first reply line (caller frees), or NULL
 * if the node is gone. */
static char *command(struct cluster *c, int i, const char *cmd)
{
    char *line = NULL;
    if (c->procs[i] == NULL ||
        harnessProcWriteLine(c->procs[i], cmd, IO_MS, errmsg) != TPDB_OK ||
        harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS, &line,
                            errmsg) != TPDB_OK) {
        tpdb_free(line);
        return NULL;
    }
    return line;
}

/* Runs a query on node i and returns its first row line ("row ..."), or
 * "end" if it returned none, or the "err ..." line; NULL if the node is
 * gone. Reads every line of the reply. Caller frees. */
static char *queryFirst(struct cluster *c, int i, const char *sql)
{
    char cmd[HARNESS_PATH_MAX];
    char *first = NULL;
    snprintf(cmd, sizeof cmd, "query %s", sql);
    char *line = command(c, i, cmd);
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
        if (harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS, &line,
                                errmsg) != TPDB_OK) {
            break;
        }
    }
    return first;
}

/* Role of node i from its status, or "" if it does not answer. */
static void nodeRole(struct cluster *c,
                     int i,
                     char *role,
                     size_t size,
                     long long *applied)
{
    char *line = command(c, i, "status");
    json_t *o = NULL;
    snprintf(role, size, "%s", "");
    *applied = -1;
    if (line != NULL && strncmp(line, "status ", 7) == 0) {
        o = json_loads(line + 7, 0, NULL);
    }
    if (o != NULL) {
        snprintf(role, size, "%s",
                 json_string_value(json_object_get(o, "role")));
        *applied = json_integer_value(json_object_get(o, "applied_index"));
        json_decref(o);
    }
    tpdb_free(line);
}

/* A counter from node i's status "stats" object, or -1. */
static long long nodeStat(struct cluster *c, int i, const char *key)
{
    char *line = command(c, i, "status");
    long long v = -1;
    json_t *o = NULL;
    if (line != NULL && strncmp(line, "status ", 7) == 0) {
        o = json_loads(line + 7, 0, NULL);
    }
    if (o != NULL) {
        json_t *stats = json_object_get(o, "stats");
        json_t *value = json_object_get(stats, key);
        v = json_is_integer(value) ? json_integer_value(value) : -1;
        json_decref(o);
    }
    tpdb_free(line);
    return v;
}

struct leaderWait {
    struct cluster *c;
    int leader;
};

static int hasLeader(void *arg)
{
    struct leaderWait *w = arg;
    char role[32];
    long long applied;
    for (int i = 0; i < N_NODES; i++) {
        nodeRole(w->c, i, role, sizeof role, &applied);
        if (strcmp(role, "leader") == 0) {
            w->leader = i;
            return 1;
        }
    }
    return 0;
}

static int findLeader(struct cluster *c)
{
    struct leaderWait w = {c, -1};
    assert_int_equal(harnessPollUntil(hasLeader, &w, 30000, 50), TPDB_OK);
    return w.leader;
}

/* Runs one write on the leader, following leadership changes. Returns 1 if
 * acknowledged, 0 if definitely not applied, 2 if the outcome is unknown. */
static int write(struct cluster *c, int *leader, const char *sql)
{
    char cmd[HARNESS_PATH_MAX];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    for (int attempt = 0; attempt < 50; attempt++) {
        char *line = command(c, *leader, cmd);
        if (line == NULL) {
            /* The node died with the command in flight. */
            *leader = findLeader(c);
            return 2;
        }
        int ok = strncmp(line, "ok", 2) == 0;
        /* Extended codes TPDB_ERR_NOTLEADER and TPDB_ERR_UNKNOWN. */
        int notLeader = strstr(line, "err 51210 ") == line;
        int unknown = strstr(line, "err 51466 ") == line;
        if (!ok && !notLeader && !unknown) {
            fail_msg("write '%s' failed: %s", sql, line);
        }
        tpdb_free(line);
        if (ok) {
            return 1;
        }
        if (unknown) {
            *leader = findLeader(c);
            return 2;
        }
        *leader = findLeader(c);
    }
    fail_msg("write '%s' found no leader", sql);
    return 0;
}

static void applyLoad(struct cluster *c, int *leader, int from, int to)
{
    char sql[256];
    for (int i = from; i < to; i++) {
        int id = i + 1;
        long v = (long)i * 7919 % 100003;
        int op = i % 10;
        int target = id;
        if (op == 7 && i > 10) {
            target = id - 5;
            snprintf(sql, sizeof sql, "UPDATE t SET v=%ld WHERE id=%d", v,
                     target);
        } else if (op == 9 && i > 10) {
            target = id - 3;
            snprintf(sql, sizeof sql, "DELETE FROM t WHERE id=%d", target);
        } else {
            snprintf(sql, sizeof sql, "INSERT INTO t(id, v) VALUES(%d, %ld)",
                     id, v);
        }
        if (i + 1 == KILL_AT && to > KILL_AT) {
            /* SIGKILL the leader with this write in flight: its outcome
             * is unknown to the client. */
            char cmd[300];
            snprintf(cmd, sizeof cmd, "exec %s", sql);
            assert_int_equal(
                harnessProcWriteLine(c->procs[*leader], cmd, IO_MS, errmsg),
                TPDB_OK);
            assert_int_equal(harnessProcKill(c->procs[*leader], NULL, errmsg),
                             TPDB_OK);
            harnessProcFree(c->procs[*leader]);
            c->procs[*leader] = NULL;
            c->rows[target].state = 2;
            c->unknown++;
            return;
        }
        int outcome = write(c, leader, sql);
        struct row *r = &c->rows[target];
        if (outcome == 2) {
            r->state = 2;
            c->unknown++;
        } else if (outcome == 1 && r->state != 2) {
            if (op == 9 && i > 10) {
                r->state = 0;
            } else if (op != 7 || i <= 10 || r->state == 1) {
                r->state = 1;
                r->v = v;
            }
        }
    }
}

struct appliedWait {
    struct cluster *c;
    long long index;
};

static int allApplied(void *arg)
{
    struct appliedWait *w = arg;
    long long first = -2;
    char role[32];
    for (int i = 0; i < N_NODES; i++) {
        long long applied;
        nodeRole(w->c, i, role, sizeof role, &applied);
        if (applied < 0 || (first != -2 && applied != first)) {
            return 0;
        }
        first = applied;
    }
    w->index = first;
    return 1;
}

/* Checks node i's rows against the model; returns its row text. */
static char *checkRows(struct cluster *c, int i)
{
    char *all = tpdb_calloc(1, 1);
    size_t len = 0;
    assert_int_equal(harnessProcWriteLine(c->procs[i],
                                          "query SELECT id, v FROM t ORDER "
                                          "BY id",
                                          IO_MS, errmsg),
                     TPDB_OK);
    int seen[N_TXNS + 1] = {0};
    for (;;) {
        char *line = NULL;
        assert_int_equal(harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS,
                                             &line, errmsg),
                         TPDB_OK);
        if (strcmp(line, "end") == 0) {
            tpdb_free(line);
            break;
        }
        int id;
        long v;
        assert_int_equal(sscanf(line, "row %d|%ld", &id, &v), 2);
        assert_true(id >= 1 && id <= N_TXNS);
        seen[id] = 1;
        if (c->rows[id].state == 1) {
            assert_int_equal(v, c->rows[id].v);
        }
        assert_int_not_equal(c->rows[id].state, 0);
        size_t n = strlen(line);
        all = tpdb_realloc(all, len + n + 2);
        memcpy(all + len, line, n);
        all[len + n] = '\n';
        len += n + 1;
        all[len] = '\0';
        tpdb_free(line);
    }
    for (int id = 1; id <= N_TXNS; id++) {
        if (c->rows[id].state == 1 && !seen[id]) {
            fail_msg("node %d lost acknowledged row %d", i + 1, id);
        }
    }
    return all;
}

struct ckptWait {
    struct cluster *c;
    int node;
};

/* A full checkpoint of the node's database went through (no reader held
 * it back). Reads the "end" line after the result row. */
static int checkpointed(void *arg)
{
    struct ckptWait *w = arg;
    char *line = queryFirst(w->c, w->node, "PRAGMA wal_checkpoint(TRUNCATE)");
    int ok = line != NULL && strcmp(line, "row 0|0|0") == 0;
    tpdb_free(line);
    return ok;
}

static char *readFile(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = tpdb_malloc(*len + 1);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void testFailover(void **state)
{
    struct cluster *c = tpdb_calloc(1, sizeof *c);
    char *line;
    (void)state;
    assert_int_equal(harnessTmpDir(c->dir, sizeof c->dir, errmsg), TPDB_OK);
    const char *build = getenv("TPDB_BUILD_ROOT");
    assert_non_null(build);
    snprintf(c->prog, sizeof c->prog, "%s/tests/integration/tpdb-testnode",
             build);
    assert_int_equal(harnessFreePorts(c->ports, N_NODES, errmsg), TPDB_OK);
    snprintf(c->peers, sizeof c->peers,
             "1@127.0.0.1:%u,2@127.0.0.1:%u,3@127.0.0.1:%u", c->ports[0],
             c->ports[1], c->ports[2]);
    for (int i = 0; i < N_NODES; i++) {
        nodeStart(c, i);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodeWaitReady(c, i);
    }
    int leader = findLeader(c);
    assert_int_equal(write(c, &leader,
                           "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT); "
                           "CREATE TABLE big(b BLOB)"),
                     1);
    applyLoad(c, &leader, 0, N_TXNS);
    int killed = -1;
    for (int i = 0; i < N_NODES; i++) {
        if (c->procs[i] == NULL) {
            killed = i;
        }
    }
    assert_int_not_equal(killed, -1);
    leader = findLeader(c);
    applyLoad(c, &leader, KILL_AT, N_TXNS);
    assert_int_equal(
        write(c, &leader, "INSERT INTO big VALUES(randomblob(11000000))"), 1);
    nodeStart(c, killed);
    nodeWaitReady(c, killed);

    struct appliedWait w = {c, 0};
    assert_int_equal(harnessPollUntil(allApplied, &w, 60000, 100), TPDB_OK);
    char *rows[N_NODES];
    for (int i = 0; i < N_NODES; i++) {
        rows[i] = checkRows(c, i);
        if (i > 0) {
            assert_string_equal(rows[i], rows[0]);
        }
        line = queryFirst(c, i, "SELECT length(b) FROM big");
        assert_string_equal(line, "row 11000000");
        tpdb_free(line);
        struct ckptWait cw = {c, i};
        assert_int_equal(harnessPollUntil(checkpointed, &cw, 20000, 50),
                         TPDB_OK);
    }
    printf("# applied index %lld on all nodes, %u unknown outcomes\n", w.index,
           c->unknown);
    /* The restarted node rebuilt its database from its own last snapshot
     * (taken every 256 entries) plus the log after it. */
    assert_true(nodeStat(c, killed, "restores") >= 1);
    size_t len0 = 0;
    char path[HARNESS_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/n1/app.db", c->dir);
    char *file0 = readFile(path, &len0);
    for (int i = 1; i < N_NODES; i++) {
        size_t len = 0;
        snprintf(path, sizeof path, "%s/n%d/app.db", c->dir, i + 1);
        char *file = readFile(path, &len);
        assert_int_equal(len, len0);
        assert_memory_equal(file, file0, len0);
        tpdb_free(file);
    }
    tpdb_free(file0);
    for (int i = 0; i < N_NODES; i++) {
        char *out = NULL;
        char uri[HARNESS_PATH_MAX + 64];
        snprintf(uri, sizeof uri, "file:%s/n%d/app.db?mode=ro", c->dir, i + 1);
        assert_int_equal(harnessSqlite3(NULL, uri, "PRAGMA integrity_check",
                                        30000, &out, errmsg),
                         TPDB_OK);
        assert_string_equal(out, "ok\n");
        tpdb_free(out);
        tpdb_free(rows[i]);
    }
    harnessCleanup();
    harnessRmTree(c->dir, errmsg);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testFailover, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
