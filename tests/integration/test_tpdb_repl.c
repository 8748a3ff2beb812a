/*
 * Integration test: a TPDB page file in the data directory of a 3-node
 * cluster of real tpdb-testnode processes. Writes through the leader's
 * tpdb_table virtual table are replicated; a follower's copy reads the same
 * rows through the library and through its own virtual table, refuses
 * writes naming the leader, takes new entries while that table exists
 * (an idle table does not hold the file) and reads them through it. With
 * snapshots every 16 entries: a follower SIGKILLed and restarted keeps its
 * copy (the same file, nothing fetched) and replays what it missed; a
 * follower whose whole directory was wiped rejoins with the same id and
 * receives the file from a peer as a page stream (the snapshot record only
 * names it). At the end every copy is byte-identical.
 * A file of 12 MB built before the cluster saw it goes out at its first
 * commit in parts of at most 1,024 pages (the leader acknowledges one own
 * entry per part), not in one entry; followers end byte-identical without
 * fetching it. So does a later commit of about 3,000 changed pages, which
 * followers stage aside and commit whole at its last part.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/base.h"
#include "tests/integration/harness.h"
#include "vfs/tpdbfile/tpdbfile.h"

#define N_NODES 3
#define IO_MS 30000
#define WANT_MAX (1 << 14)

struct cluster {
    char dir[HARNESS_PATH_MAX];
    char prog[HARNESS_PATH_MAX];
    unsigned ports[N_NODES];
    char peers[512];
    struct harness_proc *procs[N_NODES];
};

static char errmsg[TPDB_ERRMSG_SIZE];

static void tpdbPath(struct cluster *c, int i, char *buf, size_t size)
{
    snprintf(buf, size, "%s/n%d/legacy.tpdb", c->dir, i + 1);
}

static void nodeStart(struct cluster *c, int i)
{
    char uri[HARNESS_PATH_MAX + 1024];
    char sub[HARNESS_PATH_MAX + 16];
    snprintf(uri, sizeof uri,
             "file:%s/n%d/app.db?node=%d&bind=127.0.0.1:%u&peers=%s&"
             "election_ms=1000&heartbeat_ms=100&ready_ms=60000&"
             "snapshot_threshold=16&snapshot_trailing=4",
             c->dir, i + 1, i + 1, c->ports[i], c->peers);
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

/* Sends a command and returns its first reply line (caller frees). */
static char *command(struct cluster *c, int i, const char *cmd)
{
    char *line = NULL;
    if (harnessProcWriteLine(c->procs[i], cmd, IO_MS, errmsg) != TPDB_OK ||
        harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS, &line,
                            errmsg) != TPDB_OK) {
        char *err = NULL;
        char why[TPDB_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        harnessProcReadAll(c->procs[i], HARNESS_STDERR, 1000, &err, errmsg);
        fail_msg("node %d: no reply to '%s': %s; its stderr:\n%s", i + 1, cmd,
                 why, err ? err : "");
    }
    return line;
}

/* Runs `exec sql` on node i and asserts the reply starts with `want`. */
static void execExpect(struct cluster *c,
                       int i,
                       const char *sql,
                       const char *want)
{
    char cmd[HARNESS_PATH_MAX * 2];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    char *line = command(c, i, cmd);
    if (strncmp(line, want, strlen(want)) != 0) {
        fail_msg("node %d: '%s' gave '%s', want '%s'", i + 1, sql, line, want);
    }
    tpdb_free(line);
}

/* Rows of a query on node i as "a|b;" text (caller frees). */
static char *query(struct cluster *c, int i, const char *sql)
{
    char cmd[HARNESS_PATH_MAX];
    size_t cap = 1 << 16;
    size_t len = 0;
    char *out = tpdb_calloc(1, cap);
    assert_non_null(out);
    snprintf(cmd, sizeof cmd, "query %s", sql);
    char *line = command(c, i, cmd);
    while (strncmp(line, "row ", 4) == 0) {
        len += (size_t)snprintf(out + len, cap - len, "%s;", line + 4);
        assert_true(len < cap);
        tpdb_free(line);
        line = NULL;
        assert_int_equal(harnessProcReadLine(c->procs[i], HARNESS_STDOUT, IO_MS,
                                             &line, errmsg),
                         TPDB_OK);
    }
    if (strcmp(line, "end") != 0) {
        fail_msg("node %d: '%s' gave '%s'", i + 1, sql, line);
    }
    tpdb_free(line);
    return out;
}

/* A counter of node i's status "stats" object. */
static long long statOf(struct cluster *c, int i, const char *key)
{
    char pat[64];
    char *line = command(c, i, "status");
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *at = strstr(line, pat);
    if (at == NULL) {
        fail_msg("node %d: no %s in %s", i + 1, key, line);
    }
    long long v = strtoll(at + strlen(pat), NULL, 10);
    tpdb_free(line);
    return v;
}

static ino_t inodeOf(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* Inserts rows from..to-1 one statement (one entry) each, and appends
 * them to want as "id|name;". */
static void insertRows(struct cluster *c, int l, int from, int to, char *want)
{
    char sql[128];
    for (int id = from; id < to; id++) {
        snprintf(sql, sizeof sql, "INSERT INTO temp.lu VALUES(%d,'u%d')", id,
                 id);
        execExpect(c, l, sql, "ok");
        size_t len = strlen(want);
        snprintf(want + len, WANT_MAX - len, "%d|u%d;", id, id);
    }
}

struct leaderWait {
    struct cluster *c;
    int leader;
};

static int hasLeader(void *arg)
{
    struct leaderWait *w = arg;
    for (int i = 0; i < N_NODES; i++) {
        char *line = command(w->c, i, "status");
        int leads = strstr(line, "\"role\": \"leader\"") != NULL ||
                    strstr(line, "\"role\":\"leader\"") != NULL;
        tpdb_free(line);
        if (leads) {
            w->leader = i;
            return 1;
        }
    }
    return 0;
}

/* Rows of users in the file at path as "id|name;" text, read through the
 * library; NULL while the file is missing or held by a writer. */
static char *fileRows(const char *path)
{
    struct tpdb_file *f = NULL;
    struct tpdb_cursor *cur = NULL;
    char err[TPDB_ERRMSG_SIZE];
    size_t cap = 1 << 16;
    size_t len = 0;
    if (tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err) != TPDB_OK) {
        return NULL;
    }
    char *out = tpdb_calloc(1, cap);
    assert_non_null(out);
    int rc = tpdb_cursor_open_table(f, "users", &cur);
    if (rc == TPDB_OK) {
        rc = tpdb_cursor_first(cur);
    }
    while (rc == TPDB_OK && !tpdb_cursor_eof(cur)) {
        const struct tpdb_value *v;
        unsigned n, stored;
        int64_t rowid;
        rc = tpdb_cursor_rowid(cur, &rowid);
        if (rc == TPDB_OK) {
            rc = tpdb_cursor_row(cur, &v, &n, &stored);
        }
        if (rc == TPDB_OK) {
            len += (size_t)snprintf(out + len, cap - len, "%lld|%.*s;",
                                    (long long)rowid, (int)v[1].len,
                                    (const char *)v[1].base);
            rc = tpdb_cursor_next(cur);
        }
    }
    tpdb_cursor_close(cur);
    tpdb_file_close(f);
    if (rc != TPDB_OK) {
        tpdb_free(out);
        return NULL;
    }
    return out;
}

struct rowsWait {
    const char *path;
    const char *want;
};

static int hasRows(void *arg)
{
    struct rowsWait *w = arg;
    char *rows = fileRows(w->path);
    int ok = rows != NULL && strcmp(rows, w->want) == 0;
    tpdb_free(rows);
    return ok;
}

static void waitRows(struct cluster *c, int i, const char *want)
{
    char path[HARNESS_PATH_MAX + 32];
    tpdbPath(c, i, path, sizeof path);
    struct rowsWait w = {path, want};
    if (harnessPollUntil(hasRows, &w, 30000, 20) != TPDB_OK) {
        char *st = command(c, i, "status");
        fprintf(stderr, "node %d: %s\n", i + 1, st);
        tpdb_free(st);
        char *rows = fileRows(path);
        fail_msg("node %d: rows '%s', want '%s'", i + 1, rows ? rows : "?",
                 want);
    }
}

/* A TPDB file with users(id INTEGER PK, name TEXT) and an index, written
 * locally on the leader before it is replicated. */
static void seedFile(const char *path)
{
    struct tpdb_file *f = NULL;
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"name", "text", 1, NULL}};
    const char *icols[] = {"name"};
    struct tpdb_value v[2] = {
        {.type = TPDB_VINT, .i = 1},
        {.type = TPDB_VTEXT, .base = (const uint8_t *)"alice", .len = 5}};
    assert_int_equal(tpdb_file_open(path, TPDB_FILE_CREATE, &f, errmsg),
                     TPDB_OK);
    assert_int_equal(tpdb_file_create_table(f, "users", cols, 2, 0), TPDB_OK);
    assert_int_equal(
        tpdb_file_create_index(f, "users_name", "users", icols, 1, 0), TPDB_OK);
    assert_int_equal(tpdb_file_insert(f, "users", v, 2, NULL), TPDB_OK);
    tpdb_file_close(f);
}

static char *readFile(const char *path, size_t *len);

/* Adds a table blobs(id, data) of `rows` rows of 900 random letters;
 * returns the file's pages in the replication mapping. */
static uint32_t seedBlobs(const char *path, int rows)
{
    struct tpdb_file *f = NULL;
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"data", "text", 0, NULL}};
    char text[900];
    assert_int_equal(tpdb_file_open(path, 0, &f, errmsg), TPDB_OK);
    assert_int_equal(tpdb_file_create_table(f, "blobs", cols, 2, 0), TPDB_OK);
    assert_int_equal(tpdb_file_begin(f), TPDB_OK);
    srand(11);
    for (int i = 1; i <= rows; i++) {
        for (size_t k = 0; k < sizeof text; k++) {
            text[k] = (char)('a' + rand() % 26);
        }
        struct tpdb_value v[2] = {{.type = TPDB_VINT, .i = i},
                                  {.type = TPDB_VTEXT,
                                   .base = (const uint8_t *)text,
                                   .len = sizeof text}};
        assert_int_equal(tpdb_file_insert(f, "blobs", v, 2, NULL), TPDB_OK);
    }
    assert_int_equal(tpdb_file_commit(f), TPDB_OK);
    uint32_t mapped = tpdb_file_mapped_pages(f);
    tpdb_file_close(f);
    return mapped;
}

static void assertIdentical(struct cluster *c)
{
    char path[HARNESS_PATH_MAX + 32];
    size_t len0 = 0;
    tpdbPath(c, 0, path, sizeof path);
    char *file0 = readFile(path, &len0);
    for (int i = 1; i < N_NODES; i++) {
        size_t len = 0;
        tpdbPath(c, i, path, sizeof path);
        char *file = readFile(path, &len);
        assert_int_equal(len, len0);
        assert_memory_equal(file, file0, len0);
        tpdb_free(file);
    }
    tpdb_free(file0);
}

static char *readFile(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    char *buf = tpdb_malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void clusterStart(struct cluster *c)
{
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
}

static void testTpdbReplication(void **state)
{
    struct cluster *c = tpdb_calloc(1, sizeof *c);
    char sql[HARNESS_PATH_MAX + 256];
    char path[HARNESS_PATH_MAX + 32];
    (void)state;
    clusterStart(c);
    struct leaderWait lw = {c, -1};
    assert_int_equal(harnessPollUntil(hasLeader, &lw, 30000, 50), TPDB_OK);
    int l = lw.leader;
    int f = (l + 1) % N_NODES;
    /* app.db is never written: the restarted follower below must open its
     * empty WAL-mode app.db again (it holds no data to adopt). */
    tpdbPath(c, l, path, sizeof path);
    seedFile(path);

    /* Leader: the first commit ships the whole file, then changes. */
    snprintf(sql, sizeof sql,
             "CREATE VIRTUAL TABLE temp.lu USING tpdb_table('%s','users')",
             path);
    execExpect(c, l, sql, "ok");
    execExpect(c, l, "INSERT INTO temp.lu VALUES(2,'bob'),(3,'carol')", "ok");
    execExpect(c, l,
               "BEGIN; INSERT INTO temp.lu VALUES(4,'dave'); "
               "UPDATE temp.lu SET name='carla' WHERE id=3; "
               "DELETE FROM temp.lu WHERE id=2; COMMIT",
               "ok");
    const char *want1 = "1|alice;3|carla;4|dave;";
    for (int i = 0; i < N_NODES; i++) {
        if (i != l) {
            waitRows(c, i, want1);
        }
    }

    /* Follower: its own virtual table reads the copy, refuses writes. */
    tpdbPath(c, f, path, sizeof path);
    snprintf(sql, sizeof sql,
             "CREATE VIRTUAL TABLE temp.fu USING tpdb_table('%s','users')",
             path);
    execExpect(c, f, sql, "ok");
    char *rows = query(c, f, "SELECT id, name FROM temp.fu ORDER BY id");
    assert_string_equal(rows, "1|alice;3|carla;4|dave;");
    tpdb_free(rows);
    rows = query(c, f, "SELECT id FROM temp.fu WHERE name = 'dave'");
    assert_string_equal(rows, "4;");
    tpdb_free(rows);
    char *line = command(c, f, "exec INSERT INTO temp.fu VALUES(9,'nope')");
    /* TPDB_SQLITE_NOTLEADER (SQLITE_IOERR | 200 << 8), naming the leader. */
    printf("# follower write: %s\n", line);
    assert_non_null(strstr(line, "not the leader: node"));
    assert_ptr_equal(strstr(line, "err 51210 "), line);
    tpdb_free(line);

    /* The follower's idle table does not hold its copy: the entry is
     * written there at once and the existing table reads it. */
    execExpect(c, l, "INSERT INTO temp.lu VALUES(5,'erin')", "ok");
    const char *want2 = "1|alice;3|carla;4|dave;5|erin;";
    waitRows(c, f, want2);
    rows = query(c, f, "SELECT id, name FROM temp.fu ORDER BY id");
    assert_string_equal(rows, "1|alice;3|carla;4|dave;5|erin;");
    tpdb_free(rows);
    rows = query(c, f, "SELECT id FROM temp.fu WHERE name = 'erin'");
    assert_string_equal(rows, "5;");
    tpdb_free(rows);
    waitRows(c, (l + 2) % N_NODES, want2); /* the other follower */

    /* A follower SIGKILLed after a snapshot keeps its copy: the restart
     * restores the record, which names the file, and replays the log after
     * it over the same file; nothing is fetched. */
    static char want[WANT_MAX];
    snprintf(want, sizeof want, "%s", want2);
    insertRows(c, l, 100, 124, want);
    waitRows(c, f, want);
    assert_true(statOf(c, f, "snapshots") >= 1);
    tpdbPath(c, f, path, sizeof path);
    ino_t kept = inodeOf(path);
    assert_int_equal(harnessProcKill(c->procs[f], NULL, errmsg), TPDB_OK);
    harnessProcFree(c->procs[f]);
    c->procs[f] = NULL;
    insertRows(c, l, 124, 130, want);
    nodeStart(c, f);
    nodeWaitReady(c, f);
    waitRows(c, f, want);
    assert_true(inodeOf(path) == kept);
    assert_int_equal(statOf(c, f, "fetches"), 0);
    assert_true(statOf(c, f, "restores") >= 1);

    /* The other follower loses its whole directory and rejoins with the
     * same id: the leader's log is compacted past it, so it installs a
     * snapshot record and fetches the file as a page stream (the TPDB file
     * is the only database the cluster carries: app.db is never
     * written). */
    int g = (l + 2) % N_NODES;
    assert_int_equal(harnessProcKill(c->procs[g], NULL, errmsg), TPDB_OK);
    harnessProcFree(c->procs[g]);
    c->procs[g] = NULL;
    char sub[HARNESS_PATH_MAX + 16];
    snprintf(sub, sizeof sub, "%s/n%d", c->dir, g + 1);
    assert_int_equal(harnessRmTree(sub, errmsg), TPDB_OK);
    insertRows(c, l, 130, 150, want);
    long long servedBefore = statOf(c, l, "served") + statOf(c, f, "served");
    nodeStart(c, g);
    nodeWaitReady(c, g);
    waitRows(c, g, want);
    long long fetched = statOf(c, g, "fetches");
    long long served =
        statOf(c, l, "served") + statOf(c, f, "served") - servedBefore;
    printf("# wiped follower: %lld fetches, %lld streams served\n", fetched,
           served);
    assert_true(fetched >= 1);
    assert_true(served >= fetched);
    assert_int_equal(statOf(c, g, "fetching"), 0);

    /* Every copy ends byte-identical once the leader's table is gone. */
    execExpect(c, l, "DROP TABLE temp.lu", "ok");
    waitRows(c, f, want);
    waitRows(c, g, want);
    size_t len0 = 0;
    tpdbPath(c, l, path, sizeof path);
    char *file0 = readFile(path, &len0);
    for (int i = 0; i < N_NODES; i++) {
        size_t len = 0;
        tpdbPath(c, i, path, sizeof path);
        char *file = readFile(path, &len);
        assert_int_equal(len, len0);
        assert_memory_equal(file, file0, len0);
        tpdb_free(file);
    }
    tpdb_free(file0);
    harnessCleanup();
    harnessRmTree(c->dir, errmsg);
    tpdb_free(c);
}

/* A large file the cluster never carried: its first commit goes out in
 * bounded parts through the node (ext/tpdb_vtab_file.c's commit_part). */
static void testLargeFileInParts(void **state)
{
    struct cluster *c = tpdb_calloc(1, sizeof *c);
    char sql[HARNESS_PATH_MAX + 256];
    char path[HARNESS_PATH_MAX + 32];
    char want[64];
    (void)state;
    clusterStart(c);
    struct leaderWait lw = {c, -1};
    assert_int_equal(harnessPollUntil(hasLeader, &lw, 30000, 50), TPDB_OK);
    int l = lw.leader;
    tpdbPath(c, l, path, sizeof path);
    seedFile(path);
    long long pages = seedBlobs(path, 12000);
    long long own0 = statOf(c, l, "own_entries");
    snprintf(sql, sizeof sql,
             "CREATE VIRTUAL TABLE temp.lu USING tpdb_table('%s','users')",
             path);
    execExpect(c, l, sql, "ok");
    execExpect(c, l, "INSERT INTO temp.lu VALUES(2,'bob')", "ok");
    long long parts = statOf(c, l, "own_entries") - own0;
    printf("# a file of %lld pages: its first commit took %lld entries\n",
           pages, parts);
    assert_int_equal(parts, (pages + 1023) / 1024);
    snprintf(want, sizeof want, "1|alice;2|bob;");
    for (int i = 0; i < N_NODES; i++) {
        waitRows(c, i, want);
    }

    /* A commit of about 3,000 changed pages to the file the cluster now
     * carries: in parts too, staged by the followers and committed whole
     * at the last one. */
    snprintf(sql, sizeof sql,
             "CREATE VIRTUAL TABLE temp.lb USING tpdb_table('%s','blobs')",
             path);
    execExpect(c, l, sql, "ok");
    own0 = statOf(c, l, "own_entries");
    execExpect(c, l,
               "WITH RECURSIVE r(i) AS (SELECT 20001 UNION ALL SELECT i + 1 "
               "FROM r WHERE i < 26000) INSERT INTO temp.lb SELECT i, "
               "hex(randomblob(450)) FROM r",
               "ok");
    parts = statOf(c, l, "own_entries") - own0;
    printf("# 6,000 rows of 900 bytes in one commit took %lld entries\n",
           parts);
    assert_true(parts >= 3);
    execExpect(c, l, "INSERT INTO temp.lu VALUES(3,'carol')", "ok");
    snprintf(want, sizeof want, "1|alice;2|bob;3|carol;");
    execExpect(c, l, "DROP TABLE temp.lb", "ok");
    execExpect(c, l, "DROP TABLE temp.lu", "ok");
    for (int i = 0; i < N_NODES; i++) {
        waitRows(c, i, want);
        if (i != l) {
            assert_int_equal(statOf(c, i, "fetches"), 0);
        }
    }
    assertIdentical(c);
    harnessCleanup();
    harnessRmTree(c->dir, errmsg);
    tpdb_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testTpdbReplication, harnessTeardown),
        cmocka_unit_test_teardown(testLargeFileInParts, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
