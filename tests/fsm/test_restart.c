/* FSM tests of restarts and stream installs around a snapshot, driving the
 * real FSM (fsm.c, fsm_snapshot.c, fsm_stream.c) directly with the entries
 * a source database's real commits produce, one index at a time, and
 * "crashing" by dropping the FSM without anything more. After each
 * scenario the replica's database holds exactly the source's rows and, after
 * a checkpoint, is byte-identical to it.
 *   - a restart whose stored snapshot is older than the last one taken
 *     (taken, its durable record written, not stored by raft);
 *   - a restart from a stored, durable snapshot: nothing fetched;
 *   - a restart whose durable record was lost: the database is fetched;
 *   - installs into a node that is behind (stale file, a reader open on
 *     it switches atomically), into a node with a garbage file (moved
 *     aside) and into an empty node. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <raft.h>
#include <sqlite3.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "vfs/vfs.h"

#define VFS_SRC "tpdb-restart-src"
#define N_ENTRIES 24
#define SNAP_OLD 6
#define SNAP_NEW 12

struct entryBuf {
    void *base;
    size_t len;
};

/* A replica: an FSM over its own directory, fed by index. */
struct replica {
    char dir[128];
    char meta[160];
    struct raft_fsm fsm;
    struct raft fake; /* only last_applied is read */
    int open;
};

struct fixture {
    char root[64];
    char srcPath[128];
    sqlite3 *src;
    struct entryBuf entries[N_ENTRIES + 1]; /* index 1..N_ENTRIES */
    unsigned n;
    struct replica r;
    struct replica q; /* a peer that applied everything, to serve */
};

static struct fixture *current;

static int hookCommit(void *arg,
                      void *handle,
                      const struct tpdb_txn *txn,
                      char *errmsg)
{
    struct fixture *f = current;
    (void)arg;
    (void)handle;
    assert_true(f->n < N_ENTRIES);
    f->n++;
    return tpdbEntryEncode(TPDB_ENTRY_TXN, "app.db", 99, f->n, txn,
                           &f->entries[f->n].base, &f->entries[f->n].len,
                           errmsg);
}

static int hookOpen(void *arg,
                    const char *path,
                    const char *uri,
                    void **handle,
                    char *errmsg)
{
    (void)arg;
    (void)path;
    (void)uri;
    (void)errmsg;
    *handle = NULL;
    return TPDB_OK;
}

static const struct tpdb_vfs_hooks srcHooks = {
    .version = 1,
    .db_open = hookOpen,
    .commit = hookCommit,
};

static void exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
}

static sqlite3_int64 queryInt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    sqlite3_int64 v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The source's 24 commits: inserts, updates, deletes, an index, VACUUM. */
static void makeEntries(struct fixture *f)
{
    char sql[200];
    exec(f->src, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    for (int i = 0; f->n < N_ENTRIES - 3; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO t(v) SELECT randomblob(700) FROM "
                 "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                 "FROM c WHERE x < %d) SELECT x FROM c)",
                 10 + i * 3);
        exec(f->src, sql);
        if (i % 4 == 3) {
            exec(f->src, "UPDATE t SET v = randomblob(300) WHERE id % 3 = 0");
        }
    }
    exec(f->src, "CREATE INDEX t_v ON t(v)");
    exec(f->src, "DELETE FROM t WHERE id % 2 = 0");
    exec(f->src, "VACUUM");
    assert_int_equal(f->n, N_ENTRIES);
}

/* The fetcher: the test streams by hand (fetchFromPeer); this records
 * that the FSM asked. */
static unsigned fetchAsked;

static void fetchStart(void *arg, const char *db, uint64_t min_index)
{
    (void)arg;
    (void)min_index;
    assert_string_equal(db, "app.db");
    fetchAsked++;
}

static void replicaInit(struct fixture *f, struct replica *r, const char *nm)
{
    struct tpdb_fsm_fetcher fetcher = {NULL, fetchStart};
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    snprintf(r->dir, sizeof r->dir, "%s/%s", f->root, nm);
    snprintf(r->meta, sizeof r->meta, "%s/.tpdb", r->dir);
    mkdir(r->dir, 0755);
    mkdir(r->meta, 0755);
    assert_int_equal(tpdbFsmInit(&r->fsm, r->dir, r->meta, 1, 0, errmsg),
                     TPDB_OK);
    memset(&r->fake, 0, sizeof r->fake);
    tpdbFsmSetRaft(&r->fsm, &r->fake);
    tpdbFsmSetFetcher(&r->fsm, &fetcher);
    r->open = 1;
}

/* Drops the FSM as a crash would leave the files (page cache intact). */
static void replicaCrash(struct replica *r)
{
    if (r->open) {
        tpdbFsmClose(&r->fsm);
        r->open = 0;
    }
}

static void apply(struct fixture *f,
                  struct replica *r,
                  unsigned from,
                  unsigned to)
{
    for (unsigned i = from; i <= to; i++) {
        struct raft_buffer b = {f->entries[i].base, f->entries[i].len};
        void *result = NULL;
        r->fake.last_applied = i - 1;
        assert_int_equal(r->fsm.apply(&r->fsm, &b, &result), 0);
        r->fake.last_applied = i;
    }
}

/* Takes a snapshot at r's applied index; returns a copy of the record. */
static struct raft_buffer snapshot(struct replica *r)
{
    struct raft_buffer *bufs = NULL;
    unsigned n = 0;
    assert_int_equal(r->fsm.snapshot(&r->fsm, &bufs, &n), 0);
    assert_int_equal(n, 1);
    struct raft_buffer copy = {raft_malloc(bufs[0].len), bufs[0].len};
    memcpy(copy.base, bufs[0].base, bufs[0].len);
    r->fsm.snapshot_finalize(&r->fsm, &bufs, &n);
    return copy;
}

/* Restores a copy of rec (raft hands restore ownership of its buffer). */
static void restore(struct replica *r, struct raft_buffer rec, uint64_t at)
{
    struct raft_buffer b = {raft_malloc(rec.len), rec.len};
    memcpy(b.base, rec.base, rec.len);
    r->fake.last_applied = at;
    assert_int_equal(r->fsm.restore(&r->fsm, &b), 0);
}

/* Streams app.db from q into r, which must be fetching; entries after the
 * snapshot are applied to r meanwhile (they queue). */
static void fetchFromPeer(struct fixture *f, uint64_t snapIndex)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_fsm_serve *sv = NULL;
    struct tpdb_fsm_fetch *ff = NULL;
    uint32_t ps = 0, pages = 0;
    uint64_t served = 0, min = 0;
    assert_true(tpdbFsmFetchNeeded(&f->r.fsm, "app.db", &min));
    assert_int_equal(min, snapIndex);
    assert_true(fetchAsked > 0);
    assert_int_equal(
        tpdbFsmServeOpen(&f->q.fsm, "app.db", min, 1000, &sv, errmsg), TPDB_OK);
    tpdbFsmServeInfo(sv, &ps, &pages, &served);
    assert_int_equal(served, N_ENTRIES);
    assert_int_equal(
        tpdbFsmFetchBegin(&f->r.fsm, "app.db", ps, served, 1000, &ff, errmsg),
        TPDB_OK);
    uint8_t *buf = malloc(ps);
    for (uint32_t p = 1; p <= pages; p++) {
        assert_int_equal(tpdbFsmServeRead(sv, p, 1, buf, errmsg), TPDB_OK);
        assert_int_equal(tpdbFsmFetchPages(ff, p, 1, buf, errmsg), TPDB_OK);
    }
    free(buf);
    tpdbFsmServeClose(sv);
    /* Entries up to the served index have not all arrived: not yet. */
    apply(f, &f->r, snapIndex + 1, N_ENTRIES - 1);
    assert_int_equal(tpdbFsmFetchFinish(ff, pages, errmsg), TPDB_BUSY);
    apply(f, &f->r, N_ENTRIES, N_ENTRIES);
    assert_int_equal(tpdbFsmFetchFinish(ff, pages, errmsg), TPDB_OK);
    assert_false(tpdbFsmFetchNeeded(&f->r.fsm, "app.db", &min));
}

static uint8_t *fileBytes(const char *path, long *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)*len + 1);
    assert_int_equal(fread(buf, 1, (size_t)*len, fp), (size_t)*len);
    fclose(fp);
    return buf;
}

static void checkpointTruncate(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix"),
                     SQLITE_OK);
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
}

/* r's app.db holds the source's rows and is byte-identical to it. */
static void assertSameAsSource(struct fixture *f, struct replica *r)
{
    char path[200];
    snprintf(path, sizeof path, "%s/app.db", r->dir);
    replicaCrash(r);
    checkpointTruncate(path);
    checkpointTruncate(f->srcPath);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, "unix"),
                     SQLITE_OK);
    assert_int_equal(queryInt(db, "SELECT count(*) FROM t"),
                     queryInt(f->src, "SELECT count(*) FROM t"));
    assert_int_equal(queryInt(db,
                              "SELECT count(*) FROM pragma_integrity_check "
                              "WHERE integrity_check != 'ok'"),
                     0);
    sqlite3_close(db);
    long a = 0, b = 0;
    uint8_t *x = fileBytes(path, &a);
    uint8_t *y = fileBytes(f->srcPath, &b);
    assert_int_equal(a, b);
    assert_memory_equal(x, y, (size_t)a);
    free(x);
    free(y);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    current = f;
    fetchAsked = 0;
    assert_int_equal(tpdbVfsRegister("tpdb", NULL, 0), SQLITE_OK);
    assert_int_equal(tpdbVfsRegister(VFS_SRC, &srcHooks, 0), SQLITE_OK);
    snprintf(f->root, sizeof f->root, "/tmp/tpdb-fsmrestart-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->srcPath, sizeof f->srcPath, "%s/src.db", f->root);
    assert_int_equal(
        sqlite3_open_v2(f->srcPath, &f->src,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, VFS_SRC),
        SQLITE_OK);
    exec(f->src, "PRAGMA journal_mode=WAL");
    makeEntries(f);
    replicaInit(f, &f->q, "q");
    apply(f, &f->q, 1, N_ENTRIES);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    replicaCrash(&f->r);
    replicaCrash(&f->q);
    sqlite3_close(f->src);
    for (unsigned i = 1; i <= f->n; i++) {
        raft_free(f->entries[i].base);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
    current = NULL;
    return 0;
}

static void stats(struct replica *r, struct tpdb_fsm_stats *st)
{
    tpdbFsmStats(&r->fsm, st);
}

/* Taken at SNAP_NEW (durable record written) but raft only stored the one
 * at SNAP_OLD: the restart restores the older record and replays more. */
static void testRestartTakenNotStored(void **state)
{
    struct fixture *f = *state;
    struct tpdb_fsm_stats st;
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, SNAP_OLD);
    struct raft_buffer old = snapshot(&f->r);
    apply(f, &f->r, SNAP_OLD + 1, SNAP_NEW);
    raft_free(snapshot(&f->r).base);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES - 4);
    replicaCrash(&f->r);
    replicaInit(f, &f->r, "r");
    restore(&f->r, old, SNAP_OLD);
    apply(f, &f->r, SNAP_OLD + 1, N_ENTRIES);
    stats(&f->r, &st);
    assert_int_equal(st.fetches, 0);
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 0);
    raft_free(old.base);
    assertSameAsSource(f, &f->r);
}

/* Stored and durable: the files are kept, the log after it replayed. */
static void testRestartFromDurableSnapshot(void **state)
{
    struct fixture *f = *state;
    struct tpdb_fsm_stats st;
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, SNAP_NEW);
    struct raft_buffer rec = snapshot(&f->r);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES - 2);
    replicaCrash(&f->r);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES);
    stats(&f->r, &st);
    assert_int_equal(st.fetches, 0);
    assert_int_equal(st.restores, 1);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

/* The durable record is lost (a crash before it reached the disk): the
 * files cannot be trusted to hold the snapshot, so the database is
 * fetched. */
static void testRestartDurableLost(void **state)
{
    struct fixture *f = *state;
    char path[200];
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, SNAP_NEW);
    struct raft_buffer rec = snapshot(&f->r);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES - 3);
    replicaCrash(&f->r);
    snprintf(path, sizeof path, "%s/durable", f->r.meta);
    assert_int_equal(unlink(path), 0);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 1);
    fetchFromPeer(f, SNAP_NEW);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

/* A node that is behind installs the leader's record: fetched, and an
 * application reader open on the stale file sees the old state until the
 * commit, then the new one. */
static void testInstallIntoStaleNode(void **state)
{
    struct fixture *f = *state;
    char path[200];
    struct raft_buffer rec = snapshot(&f->q);
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, 3);
    snprintf(path, sizeof path, "%s/app.db", f->r.dir);
    sqlite3 *reader = NULL;
    assert_int_equal(
        sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, "unix"),
        SQLITE_OK);
    sqlite3_int64 before = queryInt(reader, "SELECT count(*) FROM t");
    restore(&f->r, rec, N_ENTRIES);
    assert_int_equal(queryInt(reader, "SELECT count(*) FROM t"), before);
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_fsm_serve *sv = NULL;
    struct tpdb_fsm_fetch *ff = NULL;
    uint32_t ps = 0, pages = 0;
    uint64_t served = 0;
    assert_int_equal(
        tpdbFsmServeOpen(&f->q.fsm, "app.db", N_ENTRIES, 1000, &sv, errmsg),
        TPDB_OK);
    tpdbFsmServeInfo(sv, &ps, &pages, &served);
    assert_int_equal(
        tpdbFsmFetchBegin(&f->r.fsm, "app.db", ps, served, 1000, &ff, errmsg),
        TPDB_OK);
    uint8_t *buf = malloc((size_t)ps * pages);
    assert_int_equal(tpdbFsmServeRead(sv, 1, pages, buf, errmsg), TPDB_OK);
    assert_int_equal(tpdbFsmFetchPages(ff, 1, pages, buf, errmsg), TPDB_OK);
    free(buf);
    tpdbFsmServeClose(sv);
    /* Staged, not committed. */
    assert_int_equal(queryInt(reader, "SELECT count(*) FROM t"), before);
    assert_int_equal(tpdbFsmFetchFinish(ff, pages, errmsg), TPDB_OK);
    assert_int_equal(queryInt(reader, "SELECT count(*) FROM t"),
                     queryInt(f->src, "SELECT count(*) FROM t"));
    sqlite3_close(reader);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

/* Garbage under the database's name: moved aside, then fetched. */
static void testInstallIntoCorruptNode(void **state)
{
    struct fixture *f = *state;
    char path[200], cmd[300];
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, SNAP_NEW);
    struct raft_buffer rec = snapshot(&f->r);
    replicaCrash(&f->r);
    snprintf(path, sizeof path, "%s/app.db", f->r.dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    for (int i = 0; i < 4096; i++) {
        fputc(i % 251, fp);
    }
    fclose(fp);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    fetchFromPeer(f, SNAP_NEW);
    snprintf(cmd, sizeof cmd, "ls %s/app.db.corrupt-* >/dev/null", f->r.dir);
    assert_int_equal(system(cmd), 0);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

/* A node with nothing at all, installing a record taken at SNAP_NEW by a
 * node that is gone since. */
static void testInstallIntoEmptyNode(void **state)
{
    struct fixture *f = *state;
    struct replica p;
    replicaInit(f, &p, "p");
    apply(f, &p, 1, SNAP_NEW);
    struct raft_buffer rec = snapshot(&p);
    replicaCrash(&p);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    fetchFromPeer(f, SNAP_NEW);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testRestartTakenNotStored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testRestartFromDurableSnapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testRestartDurableLost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testInstallIntoStaleNode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testInstallIntoCorruptNode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testInstallIntoEmptyNode, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
