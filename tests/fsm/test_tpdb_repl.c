/*
 * Deterministic cluster tests of TPDB page file replication: 3 raft_fixture
 * servers with the real FSM (tests/fsm/cluster.c). The leader writes a TPDB
 * file through the library with hooks that propose TPDB_ENTRY_TPDBFILE
 * entries through the fixture; followers' FSMs apply them with
 * tpdb_file_apply. Covers replication, a follower's tpdb_table (idle: no
 * effect on replication; in the middle of a statement: entries queued, then
 * drained), a leader change with the deposed leader's writer still open,
 * snapshot install, and a large file the cluster never carried whose first
 * commit goes out in bounded parts (a chunk sequence that followers build
 * aside and switch to at its end). Every test ends with
 * the same rows on every server and byte-identical files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ext/tpdb_vtab.h"
#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "tests/fsm/cluster.h"
#include "vfs/tpdbfile/tpdbfile.h"

#define TPDB_DB "legacy.tpdb"
#define STEP_LIMIT 200000

/* The leader's writer: a TPDB handle whose hooks replicate through the
 * fixture from server `server`. */
struct writer {
    struct cluster *c;
    unsigned server;
    struct tpdb_file *f;
    int acked;
    unsigned entries; /* proposed */
    size_t maxLen;    /* bytes of the largest entry proposed */
    /* Commits of changes in parts (hookCommitDeltaPart). */
    unsigned deltaParts; /* parts proposed */
    unsigned cutAfter;   /* cut the leader off after this many (0: never) */
    unsigned newLeader;  /* the leader after the cut */
    int barrierEach;     /* a barrier after each part but the last */
    uint8_t *before[CLUSTER_MAX]; /* each server's copy before the commit */
    size_t beforeLen[CLUSTER_MAX];
};

struct applyReq {
    struct raft_apply req;
    struct raft_fsm *fsm;
    uint64_t seq;
};

static void applyCb(struct raft_apply *req, int status, void *result)
{
    struct applyReq *a = req->data;
    (void)result;
    if (status != 0) {
        tpdbFsmProposalFinish(a->fsm, a->seq, TPDB_UNKNOWN,
                              "leadership lost before commit");
    }
    tpdb_free(a);
}

/* Proposes an entry of `type` on the writer's server and steps the
 * fixture until the FSM gave it an outcome, as the node's commit path
 * does. */
static int propose(struct writer *w,
                   int type,
                   const struct tpdb_txn *txn,
                   char *errmsg)
{
    struct clusterServer *s = &w->c->s[w->server];
    struct tpdb_proposal p;
    struct raft_buffer buf;
    memset(&p, 0, sizeof p);
    p.seq = ++w->c->nextSeq;
    p.db = TPDB_DB;
    int rc = tpdbEntryEncode(type, TPDB_DB, s->origin, p.seq, txn, &buf.base,
                             &buf.len, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    w->entries++;
    w->maxLen = buf.len > w->maxLen ? buf.len : w->maxLen;
    struct applyReq *a = tpdb_malloc(sizeof *a);
    assert_non_null(a);
    a->fsm = &s->fsm;
    a->seq = p.seq;
    a->req.data = a;
    tpdbFsmProposalAdd(&s->fsm, &p);
    int rv = raft_apply(raft_fixture_get(&w->c->f, w->server), &a->req, &buf, 1,
                        applyCb);
    if (rv != 0) {
        raft_free(buf.base);
        tpdb_free(a);
        tpdbFsmProposalFinish(&s->fsm, p.seq, TPDB_NOTLEADER,
                              raft_strerror(rv));
    }
    s->pending = &p;
    for (unsigned n = 0; p.state == TPDB_BUSY && n < STEP_LIMIT; n++) {
        raft_fixture_step(&w->c->f);
    }
    s->pending = NULL;
    rc = tpdbFsmProposalWait(&s->fsm, &p, 0);
    if (rc != TPDB_OK) {
        snprintf(errmsg, TPDB_ERRMSG_SIZE, "%s", p.errmsg);
    }
    return rc;
}

static int hookCommit(void *arg, const struct tpdb_txn *txn, char *errmsg)
{
    struct writer *w = arg;
    int rc = propose(w, TPDB_ENTRY_TPDBFILE, txn, errmsg);
    w->acked = rc == TPDB_OK;
    return rc;
}

/* A whole file in parts, as ext/tpdb_vtab_file.c proposes it. Until the
 * last part is committed no follower has the file. */
static int hookCommitPart(void *arg,
                          const struct tpdb_txn *part,
                          unsigned index,
                          int final,
                          char *errmsg)
{
    struct writer *w = arg;
    char path[CLUSTER_PATH_MAX];
    int type = final        ? TPDB_ENTRY_CHUNK_END
               : index == 0 ? TPDB_ENTRY_TPDBFILE_BEGIN
                            : TPDB_ENTRY_CHUNK;
    int rc = propose(w, type, part, errmsg);
    for (unsigned i = 0; i < w->c->n && !final; i++) {
        clusterDbPath(w->c, i, TPDB_DB, path);
        if (i != w->server) {
            assert_int_not_equal(access(path, F_OK), 0);
        }
    }
    w->acked = final && rc == TPDB_OK;
    return rc;
}

/* A commit of changes in parts, as ext/tpdb_vtab_file.c proposes it.
 * Until the last part is committed every follower's copy keeps the bytes
 * it had before the commit (w->before, when set). After part `cutAfter`
 * (when set) the leader is cut off until another server leads, so the
 * next part fails. */
static void leaderMoves(struct writer *w);
static void assertUnchanged(struct writer *w);

static int hookCommitDeltaPart(void *arg,
                               const struct tpdb_txn *part,
                               unsigned index,
                               int final,
                               char *errmsg)
{
    struct writer *w = arg;
    int type = final        ? TPDB_ENTRY_CHUNK_END
               : index == 0 ? TPDB_ENTRY_TPDBFILE_DELTA
                            : TPDB_ENTRY_CHUNK;
    int rc = propose(w, type, part, errmsg);
    w->deltaParts++;
    if (!final && rc == TPDB_OK && w->before[w->server] != NULL) {
        raft_index at = raft_last_index(raft_fixture_get(&w->c->f, w->server));
        assert_true(clusterStepUntilApplied(w->c, CLUSTER_ALL, at));
        assertUnchanged(w);
    }
    if (!final && rc == TPDB_OK && w->barrierEach) {
        /* Under the fixture the leader's snapshots are taken at entries
         * it applies itself (see the adapter in cluster.c). */
        assert_int_equal(clusterLeaderReady(w->c), w->server);
    }
    if (!final && rc == TPDB_OK && w->cutAfter != 0 &&
        index + 1 == w->cutAfter) {
        leaderMoves(w);
    }
    w->acked = final && rc == TPDB_OK;
    return rc;
}

static void hookDone(void *arg, int written)
{
    struct writer *w = arg;
    if (w->acked) {
        w->acked = 0;
        tpdbFsmOwnWriteDone(&w->c->s[w->server].fsm, TPDB_DB, written);
    }
}

static void mustOk(struct tpdb_file *f, int rc)
{
    if (rc != TPDB_OK) {
        fail_msg("rc %d: %s", rc, tpdb_file_errmsg(f));
    }
}

static void writerOpen(struct writer *w, struct cluster *c, unsigned server)
{
    char path[CLUSTER_PATH_MAX];
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file_hooks hooks = {
        .version = 1, .arg = w, .commit = hookCommit, .done = hookDone};
    memset(w, 0, sizeof *w);
    w->c = c;
    w->server = server;
    clusterDbPath(c, server, TPDB_DB, path);
    if (tpdb_file_open(path, TPDB_FILE_CREATE, &w->f, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    mustOk(w->f, tpdb_file_set_hooks(w->f, &hooks));
}

static void writerClose(struct writer *w)
{
    tpdb_file_close(w->f);
    w->f = NULL;
}

static void makeUsers(struct tpdb_file *f)
{
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"name", "text", 1, NULL}};
    const char *icols[] = {"name"};
    mustOk(f, tpdb_file_create_table(f, "users", cols, 2, 0));
    mustOk(f, tpdb_file_create_index(f, "users_name", "users", icols, 1, 0));
}

static void insertUser(struct tpdb_file *f, int64_t id, const char *prefix)
{
    char name[64];
    snprintf(name, sizeof name, "%s-%05lld-padding-padding", prefix,
             (long long)id);
    struct tpdb_value v[2] = {
        {.type = TPDB_VINT, .i = id},
        {.type = TPDB_VTEXT,
         .base = (const uint8_t *)name,
         .len = strlen(name)},
    };
    mustOk(f, tpdb_file_insert(f, "users", v, 2, NULL));
}

/* Rows of users as "id:name;" text (caller frees). */
static char *dumpHandle(struct tpdb_file *f)
{
    struct tpdb_cursor *cur = NULL;
    size_t cap = 1 << 22;
    size_t len = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    mustOk(f, tpdb_cursor_open_table(f, "users", &cur));
    mustOk(f, tpdb_cursor_first(cur));
    while (!tpdb_cursor_eof(cur)) {
        const struct tpdb_value *v;
        unsigned n, stored;
        int64_t rowid;
        mustOk(f, tpdb_cursor_rowid(cur, &rowid));
        mustOk(f, tpdb_cursor_row(cur, &v, &n, &stored));
        len += (size_t)snprintf(out + len, cap - len, "%lld:%.*s;",
                                (long long)rowid, (int)v[1].len,
                                (const char *)v[1].base);
        assert_true(len < cap);
        mustOk(f, tpdb_cursor_next(cur));
    }
    tpdb_cursor_close(cur);
    return out;
}

static char *dumpServer(struct cluster *c, unsigned i)
{
    char path[CLUSTER_PATH_MAX];
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *f = NULL;
    clusterDbPath(c, i, TPDB_DB, path);
    if (tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err) != TPDB_OK) {
        fail_msg("server %u: %s", i, err);
    }
    char *out = dumpHandle(f);
    tpdb_file_close(f);
    return out;
}

/* Steps until every server applied the leader's last entry and wrote
 * every queued one. */
static void converge(struct cluster *c, unsigned l)
{
    raft_index index = raft_last_index(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    for (unsigned i = 0; i < c->n; i++) {
        tpdbFsmDrain(&c->s[i].fsm);
        assert_int_equal(tpdbFsmPending(&c->s[i].fsm), 0);
    }
}

/* Every server's copy holds `want` rows and the same bytes. */
static void assertCopies(struct cluster *c, const char *want)
{
    char path[CLUSTER_PATH_MAX];
    size_t len0 = 0;
    clusterDbPath(c, 0, TPDB_DB, path);
    uint8_t *first = clusterReadFile(path, &len0);
    assert_non_null(first);
    for (unsigned i = 0; i < c->n; i++) {
        char *rows = dumpServer(c, i);
        assert_string_equal(rows, want);
        free(rows);
        size_t len = 0;
        clusterDbPath(c, i, TPDB_DB, path);
        uint8_t *bytes = clusterReadFile(path, &len);
        assert_non_null(bytes);
        assert_int_equal(len, len0);
        assert_memory_equal(bytes, first, len);
        tpdb_free(bytes);
    }
    tpdb_free(first);
}

static int setup(void **state)
{
    *state = clusterNew();
    return *state == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    clusterFree(*state);
    return 0;
}

/* Statements and transactions written on the leader reach every follower;
 * the followers read the same rows and hold the same bytes. */
static void testReplication(void **state)
{
    struct cluster *c = *state;
    struct writer w;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    writerOpen(&w, c, l);
    makeUsers(w.f);
    insertUser(w.f, 1, "first");
    mustOk(w.f, tpdb_file_begin(w.f));
    for (int i = 2; i <= 300; i++) {
        insertUser(w.f, i, "bulk");
    }
    mustOk(w.f, tpdb_file_commit(w.f));
    for (int i = 50; i < 250; i += 2) {
        mustOk(w.f, tpdb_file_delete(w.f, "users", i));
    }
    insertUser(w.f, 5000, "reused");
    converge(c, l);
    char *want = dumpHandle(w.f);
    /* Readers on followers see the state while the leader keeps it open. */
    for (unsigned i = 0; i < c->n; i++) {
        if (i != l) {
            char *rows = dumpServer(c, i);
            assert_string_equal(rows, want);
            free(rows);
        }
    }
    writerClose(&w);
    assertCopies(c, want);
    free(want);
}

/* Opens an in-memory connection with a tpdb_table `fu` over the users
 * table of server i's copy (read-only, as a follower reads it). */
static sqlite3 *followerTable(struct cluster *c, unsigned i)
{
    char path[CLUSTER_PATH_MAX];
    sqlite3 *db = NULL;
    clusterDbPath(c, i, TPDB_DB, path);
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(tpdbVtabRegister(db), SQLITE_OK);
    char *sql = sqlite3_mprintf(
        "CREATE VIRTUAL TABLE temp.fu USING tpdb_table(%Q, 'users', 'ro')",
        path);
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fail_msg("%s", err);
    }
    sqlite3_free(sql);
    return db;
}

static int64_t queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A follower's idle tpdb_table (its data directory makes the file
 * transient) does not hold the copy: entries are written at once and the
 * existing table reads them. A statement in progress on it does hold the
 * copy: entries are queued (raft applied them), the statement keeps its
 * view, and once it is reset the queue is written in order. */
static void testFollowerTable(void **state)
{
    struct cluster *c = *state;
    struct writer w;
    sqlite3_stmt *st = NULL;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 1) % CLUSTER_N;
    writerOpen(&w, c, l);
    makeUsers(w.f);
    insertUser(w.f, 1, "before");
    converge(c, l);
    sqlite3 *db = followerTable(c, f);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM fu"), 1);

    for (int i = 2; i <= 5; i++) {
        insertUser(w.f, i, "while-idle");
    }
    raft_index index = raft_last_index(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    assert_int_equal(tpdbFsmPending(&c->s[f].fsm), 0);
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM fu WHERE name LIKE "
                              "'while-idle%'"),
                     4);

    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id FROM fu", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    for (int i = 6; i <= 8; i++) {
        insertUser(w.f, i, "mid-statement");
    }
    index = raft_last_index(raft_fixture_get(&c->f, l));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    assert_true(tpdbFsmPending(&c->s[f].fsm) > 0);
    int n = 1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        n++;
    }
    assert_int_equal(n, 5); /* the statement's view */
    sqlite3_finalize(st);
    tpdbFsmDrain(&c->s[f].fsm);
    assert_int_equal(tpdbFsmPending(&c->s[f].fsm), 0);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM fu"), 8);
    assert_int_equal(queryInt(db, "SELECT max(id) FROM fu"), 8);

    converge(c, l);
    char *want = dumpHandle(w.f);
    writerClose(&w);
    assertCopies(c, want); /* the follower's table is still there */
    free(want);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* After a leader change the new leader writes its own copy; the deposed
 * leader, whose old writer still holds its copy, queues the new leader's
 * entries, refuses that writer's commits (rolled back), and catches up
 * once the writer is closed. */
static void testLeaderChange(void **state)
{
    struct cluster *c = *state;
    struct writer w0, w1;
    unsigned l0 = clusterLeaderReady(c);
    assert_int_not_equal(l0, CLUSTER_NONE);
    writerOpen(&w0, c, l0);
    makeUsers(w0.f);
    for (int i = 1; i <= 20; i++) {
        insertUser(w0.f, i, "first");
    }
    converge(c, l0);

    raft_fixture_kill(&c->f, l0);
    unsigned l1 = clusterLeaderReady(c);
    assert_int_not_equal(l1, CLUSTER_NONE);
    assert_int_not_equal(l1, l0);
    writerOpen(&w1, c, l1);
    for (int i = 21; i <= 30; i++) {
        insertUser(w1.f, i, "second");
    }
    mustOk(w1.f, tpdb_file_delete(w1.f, "users", 5));

    raft_fixture_revive(&c->f, l0);
    raft_index index = raft_last_index(raft_fixture_get(&c->f, l1));
    assert_true(clusterStepUntilApplied(c, CLUSTER_ALL, index));
    assert_int_equal(raft_fixture_leader_index(&c->f), l1);
    assert_true(tpdbFsmPending(&c->s[l0].fsm) > 0);
    struct tpdb_value v[2] = {
        {.type = TPDB_VINT, .i = 99},
        {.type = TPDB_VTEXT, .base = (const uint8_t *)"stale", .len = 5}};
    assert_int_equal(tpdb_file_insert(w0.f, "users", v, 2, NULL),
                     TPDB_NOTLEADER);
    char *rows = dumpHandle(w0.f);
    assert_null(strstr(rows, "stale"));
    assert_null(strstr(rows, "second"));
    free(rows);
    writerClose(&w0);
    converge(c, l1);
    char *want = dumpHandle(w1.f);
    assert_null(strstr(want, "stale"));
    writerClose(&w1);
    assertCopies(c, want);
    free(want);
}

/* A follower cut off while the leader compacts its log catches up from a
 * snapshot: the record names the TPDB file (no image in it), the follower
 * receives the file as a page stream from a peer, and the entries that
 * arrive meanwhile are applied after it. */
static void testSnapshotInstall(void **state)
{
    struct cluster *c = *state;
    struct writer w;
    struct tpdb_fsm_stats st;
    clusterSnapshotEvery(c, 8, 2);
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 2) % CLUSTER_N;
    writerOpen(&w, c, l);
    makeUsers(w.f);
    insertUser(w.f, 1, "before");
    converge(c, l);
    clusterIsolate(c, f, 1);
    for (int i = 2; i <= 40; i++) {
        insertUser(w.f, i, "during");
        /* A barrier: under the fixture the leader's snapshots are taken
         * at entries it applies itself (see the adapter in cluster.c). */
        if (i % 5 == 0) {
            assert_int_equal(clusterLeaderReady(c), l);
        }
    }
    for (int i = 10; i < 20; i++) {
        mustOk(w.f, tpdb_file_delete(w.f, "users", i));
    }
    struct raft *lr = raft_fixture_get(&c->f, l);
    struct raft *fr = raft_fixture_get(&c->f, f);
    tpdbFsmStats(&c->s[l].fsm, &st);
    assert_true(st.snapshots > 0);
    assert_true(lr->log.offset > raft_last_index(fr));
    clusterIsolate(c, f, 0);
    insertUser(w.f, 100, "after");
    converge(c, l);
    tpdbFsmStats(&c->s[f].fsm, &st);
    assert_true(st.restores > 0);
    assert_true(st.fetches > 0);
    char *want = dumpHandle(w.f);
    writerClose(&w);
    assertCopies(c, want);
    free(want);
}

/* A file built without the cluster (no hooks), of several parts' worth
 * of pages: the writer's first commit carries it whole, in entries of at
 * most TPDB_FILE_REPL_PART_PAGES pages, never one entry of the whole
 * file; followers build it aside and end byte-identical, and later commits
 * carry only their changes. */
static void testWholeFileInParts(void **state)
{
    struct cluster *c = *state;
    struct writer w;
    char path[CLUSTER_PATH_MAX];
    char err[TPDB_ERRMSG_SIZE];
    char text[901];
    struct tpdb_file *f = NULL;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    clusterDbPath(c, l, TPDB_DB, path);
    if (tpdb_file_open(path, TPDB_FILE_CREATE, &f, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    makeUsers(f);
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"data", "text", 0, NULL}};
    mustOk(f, tpdb_file_create_table(f, "blobs", cols, 2, 0));
    mustOk(f, tpdb_file_begin(f));
    srand(7);
    for (int i = 1; i <= 6000; i++) {
        for (size_t k = 0; k < sizeof text - 1; k++) {
            text[k] = (char)('a' + rand() % 26);
        }
        struct tpdb_value v[2] = {
            {.type = TPDB_VINT, .i = i},
            {.type = TPDB_VTEXT,
             .base = (const uint8_t *)text,
             .len = sizeof text - 1},
        };
        mustOk(f, tpdb_file_insert(f, "blobs", v, 2, NULL));
    }
    mustOk(f, tpdb_file_commit(f));
    uint32_t mapped = tpdb_file_mapped_pages(f);
    tpdb_file_close(f);
    printf("# %u mapped pages built without the cluster\n", mapped);
    assert_true(mapped > 2 * TPDB_FILE_REPL_PART_PAGES);

    struct tpdb_file_hooks hooks = {.version = 2,
                                    .arg = &w,
                                    .commit = hookCommit,
                                    .done = hookDone,
                                    .commit_part = hookCommitPart};
    memset(&w, 0, sizeof w);
    w.c = c;
    w.server = l;
    if (tpdb_file_open(path, 0, &w.f, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    mustOk(w.f, tpdb_file_set_hooks(w.f, &hooks));
    insertUser(w.f, 1, "first");
    unsigned parts = w.entries;
    printf("# first commit: %u entries, largest %zu bytes\n", parts, w.maxLen);
    assert_int_equal(parts, (mapped + TPDB_FILE_REPL_PART_PAGES - 1) /
                                TPDB_FILE_REPL_PART_PAGES);
    assert_true(w.maxLen <=
                (size_t)TPDB_FILE_REPL_PART_PAGES * (4096 + 4) + 4096);
    insertUser(w.f, 2, "second");
    assert_int_equal(w.entries, parts + 1);
    converge(c, l);
    char *want = dumpHandle(w.f);
    writerClose(&w);
    assertCopies(c, want);
    free(want);
}

/* Every follower's copy still holds the bytes it had before the commit
 * (the leader's is written only after the last part). */
static void assertUnchanged(struct writer *w)
{
    char path[CLUSTER_PATH_MAX];
    for (unsigned i = 0; i < w->c->n; i++) {
        if (i == w->server || w->before[i] == NULL) {
            continue;
        }
        size_t len = 0;
        clusterDbPath(w->c, i, TPDB_DB, path);
        uint8_t *bytes = clusterReadFile(path, &len);
        assert_non_null(bytes);
        assert_int_equal(len, w->beforeLen[i]);
        assert_memory_equal(bytes, w->before[i], len);
        tpdb_free(bytes);
    }
}

static void snapshotCopies(struct writer *w)
{
    char path[CLUSTER_PATH_MAX];
    for (unsigned i = 0; i < w->c->n; i++) {
        clusterDbPath(w->c, i, TPDB_DB, path);
        w->before[i] = clusterReadFile(path, &w->beforeLen[i]);
        assert_non_null(w->before[i]);
    }
}

static void dropSnapshots(struct writer *w)
{
    for (unsigned i = 0; i < CLUSTER_MAX; i++) {
        tpdb_free(w->before[i]);
        w->before[i] = NULL;
    }
}

/* Cuts the writer's server off until another one leads, then joins it
 * again: it learns the new term and its next proposal fails. */
static void leaderMoves(struct writer *w)
{
    clusterIsolate(w->c, w->server, 1);
    w->newLeader = clusterLeaderReady(w->c);
    assert_int_not_equal(w->newLeader, CLUSTER_NONE);
    assert_int_not_equal(w->newLeader, w->server);
    clusterIsolate(w->c, w->server, 0);
    raft_index at = raft_last_index(raft_fixture_get(&w->c->f, w->newLeader));
    assert_true(clusterStepUntilApplied(w->c, CLUSTER_ALL, at));
    assert_int_equal(raft_fixture_leader_index(&w->c->f), w->newLeader);
}

/* Whether server i has a staged commit of changes on disk. */
static int deltaStaged(struct cluster *c, unsigned i)
{
    char path[CLUSTER_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s.delta", c->s[i].meta, TPDB_DB);
    return access(path, F_OK) == 0;
}

static void writerOpenDelta(struct writer *w, struct cluster *c, unsigned l)
{
    struct tpdb_file_hooks hooks = {.version = 3,
                                    .arg = w,
                                    .commit = hookCommit,
                                    .done = hookDone,
                                    .commit_delta_part = hookCommitDeltaPart};
    writerOpen(w, c, l);
    mustOk(w->f, tpdb_file_set_hooks(w->f, &hooks));
}

/* Inserts rows [from, to] of 900 random bytes in one transaction of the
 * writer: about one changed page per two rows. */
static int bulkInsert(struct tpdb_file *f, int from, int to)
{
    char text[901];
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"data", "text", 0, NULL}};
    mustOk(f, tpdb_file_begin(f));
    if (tpdb_file_table_find(f, "blobs") == NULL) {
        mustOk(f, tpdb_file_create_table(f, "blobs", cols, 2, 0));
    }
    for (int i = from; i <= to; i++) {
        for (size_t k = 0; k < sizeof text - 1; k++) {
            text[k] = (char)('a' + rand() % 26);
        }
        struct tpdb_value v[2] = {
            {.type = TPDB_VINT, .i = i},
            {.type = TPDB_VTEXT,
             .base = (const uint8_t *)text,
             .len = sizeof text - 1},
        };
        mustOk(f, tpdb_file_insert(f, "blobs", v, 2, NULL));
    }
    return tpdb_file_commit(f);
}

/* A commit that changes several parts' worth of pages of a file the
 * cluster already carries goes out in entries of at most
 * TPDB_FILE_REPL_PART_PAGES pages; until its last part every follower's
 * copy is unchanged, and after it all copies are byte-identical. */
static void testDeltaInParts(void **state)
{
    struct cluster *c = *state;
    struct writer w;
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    writerOpenDelta(&w, c, l);
    makeUsers(w.f);
    insertUser(w.f, 1, "first");
    converge(c, l);
    unsigned before = w.entries;
    uint32_t mapped0 = tpdb_file_mapped_pages(w.f);
    snapshotCopies(&w);
    srand(11);
    mustOk(w.f, bulkInsert(w.f, 1, 6000));
    dropSnapshots(&w);
    unsigned parts = w.entries - before;
    printf("# %u -> %u mapped pages: %u entries, largest %zu bytes\n", mapped0,
           tpdb_file_mapped_pages(w.f), parts, w.maxLen);
    assert_int_equal(parts, w.deltaParts);
    assert_true(parts >= 3);
    assert_true(w.maxLen <=
                (size_t)TPDB_FILE_REPL_PART_PAGES * (4096 + 4) + 4096);
    insertUser(w.f, 2, "second"); /* small commits still go whole */
    assert_int_equal(w.entries, before + parts + 1);
    converge(c, l);
    for (unsigned i = 0; i < c->n; i++) {
        assert_false(deltaStaged(c, i));
    }
    char *want = dumpHandle(w.f);
    writerClose(&w);
    assertCopies(c, want);
    free(want);
}

/* The leader loses leadership in the middle of a commit sent in parts:
 * the part after that fails, the commit is rolled back on the old
 * leader, and no server ever shows a part of it; the staged parts are
 * dropped everywhere (by the new leader at once, by the others at the new
 * leader's next entry), and every copy ends byte-identical without any
 * of the commit's rows. */
static void testDeltaLeaderChange(void **state)
{
    struct cluster *c = *state;
    struct writer w0, w1;
    unsigned l0 = clusterLeaderReady(c);
    assert_int_not_equal(l0, CLUSTER_NONE);
    writerOpenDelta(&w0, c, l0);
    makeUsers(w0.f);
    insertUser(w0.f, 1, "first");
    converge(c, l0);
    snapshotCopies(&w0);
    w0.cutAfter = 2;
    srand(13);
    int rc = bulkInsert(w0.f, 1, 6000);
    assert_int_not_equal(rc, TPDB_OK);
    assert_int_equal(w0.deltaParts, 3);
    assertUnchanged(&w0);
    dropSnapshots(&w0);
    unsigned l1 = w0.newLeader;
    assert_false(deltaStaged(c, l1));
    unsigned other = 3 - l0 - l1;
    assert_true(deltaStaged(c, other)); /* until l1's next entry */
    char *rows = dumpHandle(w0.f);
    assert_null(tpdb_file_table_find(w0.f, "blobs"));
    free(rows);
    writerClose(&w0);

    writerOpenDelta(&w1, c, l1);
    insertUser(w1.f, 2, "second");
    converge(c, l1);
    for (unsigned i = 0; i < c->n; i++) {
        assert_false(deltaStaged(c, i));
    }
    char *want = dumpHandle(w1.f);
    assert_string_equal(want,
                        "1:first-00001-padding-padding;"
                        "2:second-00002-padding-padding;");
    assert_null(tpdb_file_table_find(w1.f, "blobs"));
    writerClose(&w1);
    assertCopies(c, want);
    free(want);
}

/* A follower cut off while the leader commits a large change in parts,
 * with snapshots every few entries, catches up from a snapshot taken in
 * the middle of the sequence: the stream from a peer, then the entries
 * after the snapshot (parts whose first one it never saw among them);
 * every copy ends byte-identical. */
static void testDeltaSnapshotInstall(void **state)
{
    struct cluster *c = *state;
    struct writer w;
    struct tpdb_fsm_stats st;
    clusterSnapshotEvery(c, 3, 1);
    unsigned l = clusterLeaderReady(c);
    assert_int_not_equal(l, CLUSTER_NONE);
    unsigned f = (l + 2) % CLUSTER_N;
    writerOpenDelta(&w, c, l);
    makeUsers(w.f);
    insertUser(w.f, 1, "before");
    converge(c, l);
    clusterIsolate(c, f, 1);
    srand(17);
    w.barrierEach = 1;
    unsigned before = w.entries;
    mustOk(w.f, bulkInsert(w.f, 1, 12000));
    assert_true(w.entries - before >= 5);
    struct raft *lr = raft_fixture_get(&c->f, l);
    struct raft *fr = raft_fixture_get(&c->f, f);
    tpdbFsmStats(&c->s[l].fsm, &st);
    assert_true(st.snapshots > 0);
    assert_true(lr->log.offset > raft_last_index(fr));
    clusterIsolate(c, f, 0);
    insertUser(w.f, 2, "after");
    converge(c, l);
    tpdbFsmStats(&c->s[f].fsm, &st);
    assert_true(st.restores > 0);
    assert_true(st.fetches > 0);
    char *want = dumpHandle(w.f);
    writerClose(&w);
    assertCopies(c, want);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testReplication, setup, teardown),
        cmocka_unit_test_setup_teardown(testFollowerTable, setup, teardown),
        cmocka_unit_test_setup_teardown(testLeaderChange, setup, teardown),
        cmocka_unit_test_setup_teardown(testSnapshotInstall, setup, teardown),
        cmocka_unit_test_setup_teardown(testWholeFileInParts, setup, teardown),
        cmocka_unit_test_setup_teardown(testDeltaInParts, setup, teardown),
        cmocka_unit_test_setup_teardown(testDeltaLeaderChange, setup, teardown),
        cmocka_unit_test_setup_teardown(testDeltaSnapshotInstall, setup,
                                        teardown),
    };
    const char *filter = getenv("TPDB_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
