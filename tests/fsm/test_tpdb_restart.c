/* FSM tests of TPDB page files (TrashPandaDB's format) around a snapshot,
 * driving the real FSM (fsm.c, fsm_snapshot.c, fsm_stream.c,
 * fsm_tpdbfile.c) directly with the TPDB_ENTRY_TPDBFILE entries that a
 * source file's real commits produce, one index at a time, and "crashing"
 * by dropping the FSM without anything more. After each scenario the
 * replica's file holds exactly the source's rows and is byte-identical to
 * it.
 *   - the snapshot record names the file and stays small;
 *   - a restart from a stored, durable snapshot keeps the file (same inode,
 *     nothing fetched), and one whose stored snapshot is older than the
 *     last one taken replays more;
 *   - a restart whose durable record was lost fetches the file;
 *   - installs by stream into a node that is behind (a reader open on the
 *     stale file holds the switch back and keeps its view; the next reader
 *     sees the new file), into a node with a damaged file (moved aside) and
 *     into an empty node, with entries queued meanwhile applied after;
 *   - a record of the earlier format, with the whole image, restores;
 *   - an async FSM (the node's) writes TPDB entries on its checkpointer
 *     thread, never in apply: a reader holding the file delays them, none
 *     is lost, and its snapshot waits for them; so are the parts of a
 *     large commit of changes (TPDB_ENTRY_TPDBFILE_DELTA), staged there
 *     and applied whole at the last one once the reader is gone;
 *   - a crash in the middle of such a sequence leaves the file as before
 *     it, and replaying the log from its start ends at the source. */
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

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "raftfsm/snaprec.h"
#include "vfs/tpdbfile/tpdbfile.h"

#define DB "legacy.tpdb"
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
    char path[200];
    struct raft_fsm fsm;
    struct raft fake; /* only last_applied is read */
    int open;
};

struct fixture {
    char root[64];
    char srcPath[128];
    struct tpdb_file *src;
    struct entryBuf entries[N_ENTRIES + 1]; /* index 1..N_ENTRIES */
    unsigned n;
    struct replica r;
    struct replica q;    /* a peer that applied everything, to serve */
    unsigned deltaFirst; /* setupDelta: the index of the sequence's BEGIN */
};

static unsigned fetchAsked;

static int hookCommit(void *arg, const struct tpdb_txn *txn, char *errmsg)
{
    struct fixture *f = arg;
    assert_true(f->n < N_ENTRIES);
    f->n++;
    return tpdbEntryEncode(TPDB_ENTRY_TPDBFILE, DB, 99, f->n, txn,
                           &f->entries[f->n].base, &f->entries[f->n].len,
                           errmsg);
}

/* A large commit of changes in parts, encoded as the node proposes it. */
static int hookDeltaPart(void *arg,
                         const struct tpdb_txn *part,
                         unsigned index,
                         int final,
                         char *errmsg)
{
    struct fixture *f = arg;
    int type = final        ? TPDB_ENTRY_CHUNK_END
               : index == 0 ? TPDB_ENTRY_TPDBFILE_DELTA
                            : TPDB_ENTRY_CHUNK;
    assert_true(f->n < N_ENTRIES);
    f->n++;
    if (index == 0) {
        f->deltaFirst = f->n;
    }
    return tpdbEntryEncode(type, DB, 99, f->n, part, &f->entries[f->n].base,
                           &f->entries[f->n].len, errmsg);
}

static void mustOk(struct tpdb_file *t, int rc)
{
    if (rc != TPDB_OK) {
        fail_msg("rc %d: %s", rc, tpdb_file_errmsg(t));
    }
}

static void insertRow(struct tpdb_file *t, int64_t id, int pad)
{
    char name[1200];
    snprintf(name, sizeof name, "user-%06lld-%0*d", (long long)id, pad, 7);
    struct tpdb_value v[2] = {
        {.type = TPDB_VINT, .i = id},
        {.type = TPDB_VTEXT,
         .base = (const uint8_t *)name,
         .len = strlen(name)},
    };
    mustOk(t, tpdb_file_insert(t, "users", v, 2, NULL));
}

/* The source's 24 commits: DDL, growing transactions, deletes, updates. */
static void makeEntries(struct fixture *f)
{
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"name", "text", 1, NULL}};
    const char *icols[] = {"name"};
    mustOk(f->src, tpdb_file_create_table(f->src, "users", cols, 2, 0));
    mustOk(f->src,
           tpdb_file_create_index(f->src, "users_name", "users", icols, 1, 0));
    int64_t id = 1;
    for (int i = 0; f->n < N_ENTRIES - 2; i++) {
        mustOk(f->src, tpdb_file_begin(f->src));
        for (int k = 0; k < 20 + i * 6; k++) {
            insertRow(f->src, id, 200 + (int)(id % 5) * 150);
            id++;
        }
        if (i % 4 == 3) {
            for (int64_t d = id - 30; d < id; d += 3) {
                mustOk(f->src, tpdb_file_delete(f->src, "users", d));
            }
        }
        mustOk(f->src, tpdb_file_commit(f->src));
    }
    mustOk(f->src, tpdb_file_begin(f->src));
    for (int64_t d = 2; d < 60; d += 2) {
        mustOk(f->src, tpdb_file_delete(f->src, "users", d));
    }
    mustOk(f->src, tpdb_file_commit(f->src));
    assert_int_equal(f->n, N_ENTRIES - 1);
    insertRow(f->src, id, 900);
    assert_int_equal(f->n, N_ENTRIES);
}

static void fetchStart(void *arg, const char *db, uint64_t min_index)
{
    (void)arg;
    (void)min_index;
    assert_string_equal(db, DB);
    fetchAsked++;
}

static void replicaInitAsync(struct fixture *f,
                             struct replica *r,
                             const char *nm,
                             int async)
{
    struct tpdb_fsm_fetcher fetcher = {NULL, fetchStart};
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    snprintf(r->dir, sizeof r->dir, "%s/%s", f->root, nm);
    snprintf(r->meta, sizeof r->meta, "%s/.tpdb", r->dir);
    snprintf(r->path, sizeof r->path, "%s/%s", r->dir, DB);
    mkdir(r->dir, 0755);
    mkdir(r->meta, 0755);
    assert_int_equal(tpdbFsmInit(&r->fsm, r->dir, r->meta, 1, async, errmsg),
                     TPDB_OK);
    memset(&r->fake, 0, sizeof r->fake);
    tpdbFsmSetRaft(&r->fsm, &r->fake);
    tpdbFsmSetFetcher(&r->fsm, &fetcher);
    r->open = 1;
}

static void replicaInit(struct fixture *f, struct replica *r, const char *nm)
{
    replicaInitAsync(f, r, nm, 0);
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

/* Takes a snapshot at r's applied index; returns a copy of the record,
 * which holds no image: a few dozen bytes whatever the file's size. */
static struct raft_buffer snapshot(struct replica *r)
{
    struct raft_buffer *bufs = NULL;
    unsigned n = 0;
    assert_int_equal(r->fsm.snapshot(&r->fsm, &bufs, &n), 0);
    assert_int_equal(n, 1);
    assert_true(bufs[0].len < 128);
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

/* Streams the file from q into r (which must be fetching) in chunks of 7
 * pages; entries after the snapshot are applied to r meanwhile (they
 * queue) and written after the stream. */
static void fetchFromPeer(struct fixture *f, uint64_t snapIndex)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_fsm_serve *sv = NULL;
    struct tpdb_fsm_fetch *ff = NULL;
    uint32_t ps = 0, pages = 0;
    uint64_t served = 0, min = 0;
    assert_true(tpdbFsmFetchNeeded(&f->r.fsm, DB, &min));
    assert_int_equal(min, snapIndex);
    assert_true(fetchAsked > 0);
    assert_int_equal(tpdbFsmServeOpen(&f->q.fsm, DB, min, 1000, &sv, errmsg),
                     TPDB_OK);
    tpdbFsmServeInfo(sv, &ps, &pages, &served);
    assert_int_equal(ps, TPDB_FILE_PAGE_SIZE);
    assert_int_equal(served, N_ENTRIES);
    assert_true(pages > 20);
    assert_int_equal(
        tpdbFsmFetchBegin(&f->r.fsm, DB, ps, served, 1000, &ff, errmsg),
        TPDB_OK);
    uint8_t *buf = malloc((size_t)ps * 7);
    for (uint32_t p = 1; p <= pages; p += 7) {
        uint32_t n = pages - p + 1 < 7 ? pages - p + 1 : 7;
        assert_int_equal(tpdbFsmServeRead(sv, p, n, buf, errmsg), TPDB_OK);
        assert_int_equal(tpdbFsmFetchPages(ff, p, n, buf, errmsg), TPDB_OK);
    }
    free(buf);
    tpdbFsmServeClose(sv);
    /* Entries up to the served index have not all arrived: not yet. */
    apply(f, &f->r, snapIndex + 1, N_ENTRIES - 1);
    assert_int_equal(tpdbFsmFetchFinish(ff, pages, errmsg), TPDB_BUSY);
    apply(f, &f->r, N_ENTRIES, N_ENTRIES);
    if (tpdbFsmFetchFinish(ff, pages, errmsg) != TPDB_OK) {
        fail_msg("finish: %s", errmsg);
    }
    assert_false(tpdbFsmFetchNeeded(&f->r.fsm, DB, &min));
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

/* Rows of users as "id:name-length;" text (caller frees). */
static char *rowsOf(const char *path)
{
    struct tpdb_file *t = NULL;
    struct tpdb_cursor *cur = NULL;
    char err[TPDB_ERRMSG_SIZE];
    size_t cap = 1 << 20, len = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    if (tpdb_file_open(path, TPDB_FILE_RDONLY, &t, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    mustOk(t, tpdb_cursor_open_table(t, "users", &cur));
    mustOk(t, tpdb_cursor_first(cur));
    while (!tpdb_cursor_eof(cur)) {
        const struct tpdb_value *v;
        unsigned n, stored;
        int64_t rowid;
        mustOk(t, tpdb_cursor_rowid(cur, &rowid));
        mustOk(t, tpdb_cursor_row(cur, &v, &n, &stored));
        len += (size_t)snprintf(out + len, cap - len, "%lld:%zu;",
                                (long long)rowid, v[1].len);
        assert_true(len < cap);
        mustOk(t, tpdb_cursor_next(cur));
    }
    tpdb_cursor_close(cur);
    tpdb_file_close(t);
    return out;
}

/* r's file holds the source's rows and is byte-identical to it. */
static void assertSameAsSource(struct fixture *f, struct replica *r)
{
    replicaCrash(r);
    char *a = rowsOf(r->path);
    char *b = rowsOf(f->srcPath);
    assert_string_equal(a, b);
    free(a);
    free(b);
    long la = 0, lb = 0;
    uint8_t *x = fileBytes(r->path, &la);
    uint8_t *y = fileBytes(f->srcPath, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, (size_t)la);
    free(x);
    free(y);
}

static ino_t inodeOf(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[TPDB_ERRMSG_SIZE];
    assert_non_null(f);
    fetchAsked = 0;
    snprintf(f->root, sizeof f->root, "/tmp/tpdb-fsmtpdb-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->srcPath, sizeof f->srcPath, "%s/src.tpdb", f->root);
    if (tpdb_file_open(f->srcPath, TPDB_FILE_CREATE, &f->src, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    struct tpdb_file_hooks hooks = {
        .version = 1, .arg = f, .commit = hookCommit};
    mustOk(f->src, tpdb_file_set_hooks(f->src, &hooks));
    makeEntries(f);
    tpdb_file_close(f->src);
    f->src = NULL;
    replicaInit(f, &f->q, "q");
    apply(f, &f->q, 1, N_ENTRIES);
    *state = f;
    return 0;
}

/* The source's commits for the delta tests: DDL, one row, one commit of
 * 5,000 rows in parts (TPDB_ENTRY_TPDBFILE_DELTA, CHUNK..., CHUNK_END),
 * one more row. */
static int setupDelta(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"name", "text", 1, NULL}};
    const char *icols[] = {"name"};
    assert_non_null(f);
    fetchAsked = 0;
    snprintf(f->root, sizeof f->root, "/tmp/tpdb-fsmtpdb-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->srcPath, sizeof f->srcPath, "%s/src.tpdb", f->root);
    if (tpdb_file_open(f->srcPath, TPDB_FILE_CREATE, &f->src, err) != TPDB_OK) {
        fail_msg("%s", err);
    }
    struct tpdb_file_hooks hooks = {.version = 3,
                                    .arg = f,
                                    .commit = hookCommit,
                                    .commit_delta_part = hookDeltaPart};
    mustOk(f->src, tpdb_file_set_hooks(f->src, &hooks));
    mustOk(f->src, tpdb_file_create_table(f->src, "users", cols, 2, 0));
    mustOk(f->src,
           tpdb_file_create_index(f->src, "users_name", "users", icols, 1, 0));
    insertRow(f->src, 1, 100);
    mustOk(f->src, tpdb_file_begin(f->src));
    for (int64_t id = 10; id < 5010; id++) {
        insertRow(f->src, id, 900);
    }
    mustOk(f->src, tpdb_file_commit(f->src));
    assert_true(f->n - f->deltaFirst + 1 >= 3);
    insertRow(f->src, 2, 100);
    tpdb_file_close(f->src);
    f->src = NULL;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    replicaCrash(&f->r);
    replicaCrash(&f->q);
    for (unsigned i = 1; i <= f->n; i++) {
        raft_free(f->entries[i].base);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void stats(struct replica *r, struct tpdb_fsm_stats *st)
{
    tpdbFsmStats(&r->fsm, st);
}

/* Stored and durable: the file is kept (the same inode, not rebuilt), the
 * log after it replayed over it. */
static void testRestartFromDurableSnapshot(void **state)
{
    struct fixture *f = *state;
    struct tpdb_fsm_stats st;
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, SNAP_NEW);
    struct raft_buffer rec = snapshot(&f->r);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES - 2);
    replicaCrash(&f->r);
    ino_t before = inodeOf(f->r.path);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 0);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES);
    stats(&f->r, &st);
    assert_int_equal(st.fetches, 0);
    assert_int_equal(st.restores, 1);
    assert_int_equal(fetchAsked, 0);
    assert_true(inodeOf(f->r.path) == before);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
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

/* The durable record is lost (a crash before it reached the disk): the
 * file cannot be trusted to hold the snapshot, so it is fetched. */
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

static size_t rowCount(struct tpdb_file *t)
{
    struct tpdb_cursor *cur = NULL;
    size_t n = 0;
    mustOk(t, tpdb_cursor_open_table(t, "users", &cur));
    mustOk(t, tpdb_cursor_first(cur));
    while (!tpdb_cursor_eof(cur)) {
        n++;
        mustOk(t, tpdb_cursor_next(cur));
    }
    tpdb_cursor_close(cur);
    return n;
}

/* A node that is behind installs q's record: the file is streamed. A
 * reader open on the stale file keeps its view and holds the switch back
 * (TPDB_BUSY, nothing lost); once it closes the new file goes in whole,
 * and the next reader sees all of it. */
static void testInstallIntoStaleNode(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct raft_buffer rec = snapshot(&f->q);
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, 3);
    struct tpdb_file *reader = NULL;
    assert_int_equal(
        tpdb_file_open(f->r.path, TPDB_FILE_RDONLY, &reader, errmsg), TPDB_OK);
    size_t before = rowCount(reader);
    restore(&f->r, rec, N_ENTRIES);
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 1);
    struct tpdb_fsm_serve *sv = NULL;
    struct tpdb_fsm_fetch *ff = NULL;
    uint32_t ps = 0, pages = 0;
    uint64_t served = 0;
    assert_int_equal(
        tpdbFsmServeOpen(&f->q.fsm, DB, N_ENTRIES, 1000, &sv, errmsg), TPDB_OK);
    tpdbFsmServeInfo(sv, &ps, &pages, &served);
    assert_int_equal(
        tpdbFsmFetchBegin(&f->r.fsm, DB, ps, served, 0, &ff, errmsg), TPDB_OK);
    uint8_t *buf = malloc((size_t)ps * pages);
    assert_int_equal(tpdbFsmServeRead(sv, 1, pages, buf, errmsg), TPDB_OK);
    assert_int_equal(tpdbFsmFetchPages(ff, 1, pages, buf, errmsg), TPDB_OK);
    free(buf);
    tpdbFsmServeClose(sv);
    assert_int_equal(tpdbFsmFetchFinish(ff, pages, errmsg), TPDB_BUSY);
    assert_int_equal(rowCount(reader), before);
    tpdb_file_close(reader);
    if (tpdbFsmFetchFinish(ff, pages, errmsg) != TPDB_OK) {
        fail_msg("finish: %s", errmsg);
    }
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 0);
    assert_int_equal(
        tpdb_file_open(f->r.path, TPDB_FILE_RDONLY, &reader, errmsg), TPDB_OK);
    assert_true(rowCount(reader) > before);
    tpdb_file_close(reader);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

/* A damaged file whose durable index covers the record: it does not open,
 * so it is not kept; it is moved aside (never deleted) and fetched. */
static void testInstallIntoCorruptNode(void **state)
{
    struct fixture *f = *state;
    char cmd[300];
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, SNAP_NEW);
    struct raft_buffer rec = snapshot(&f->r);
    replicaCrash(&f->r);
    FILE *fp = fopen(f->r.path, "r+b");
    assert_non_null(fp);
    for (int i = 0; i < 4096 + 64; i++) {
        fputc(i % 251, fp);
    }
    fclose(fp);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 1);
    fetchFromPeer(f, SNAP_NEW);
    snprintf(cmd, sizeof cmd, "ls %s/%s.corrupt-* >/dev/null", f->r.dir, DB);
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

/* A record as the earlier version wrote it (TPDB_SNAPREC_TPDBFILE, the
 * whole image inside) still restores into an empty node, without a
 * fetch. */
static void testLegacyRecordRestores(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_fsm_stats st;
    struct replica p;
    replicaInit(f, &p, "p");
    apply(f, &p, 1, SNAP_NEW);
    struct tpdb_snaprec_db d;
    uint8_t *image = NULL;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "%s", DB);
    d.kind = TPDB_SNAPREC_TPDBFILE;
    d.page_size = TPDB_FILE_PAGE_SIZE;
    assert_int_equal(tpdb_file_image(p.path, &image, &d.db_pages, errmsg),
                     TPDB_OK);
    d.image = image;
    struct raft_buffer rec = {NULL, 0};
    assert_int_equal(
        tpdbSnaprecEncode(SNAP_NEW, &d, 1, &rec.base, &rec.len, errmsg),
        TPDB_OK);
    tpdb_free(image);
    replicaCrash(&p);
    replicaInit(f, &f->r, "r");
    restore(&f->r, rec, SNAP_NEW);
    assert_int_equal(tpdbFsmFetching(&f->r.fsm), 0);
    apply(f, &f->r, SNAP_NEW + 1, N_ENTRIES);
    stats(&f->r, &st);
    assert_int_equal(st.fetches, 0);
    raft_free(rec.base);
    assertSameAsSource(f, &f->r);
}

/* Polls (1 ms apart, up to 60 s) until r's queue is empty. */
static void waitDrained(struct replica *r)
{
    for (int i = 0; i < 60000 && tpdbFsmPending(&r->fsm) > 0; i++) {
        usleep(1000);
    }
    assert_int_equal(tpdbFsmPending(&r->fsm), 0);
}

static void testAsyncWritesOffLoop(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_file *reader = NULL;
    replicaInitAsync(f, &f->r, "r", 1);
    apply(f, &f->r, 1, SNAP_OLD);
    waitDrained(&f->r);
    assert_int_equal(
        tpdb_file_open(f->r.path, TPDB_FILE_RDONLY, &reader, errmsg), TPDB_OK);
    size_t before = rowCount(reader);
    /* The reader's flock keeps every write out: apply only queues. */
    apply(f, &f->r, SNAP_OLD + 1, N_ENTRIES);
    assert_int_equal(tpdbFsmPending(&f->r.fsm), N_ENTRIES - SNAP_OLD);
    assert_int_equal(rowCount(reader), before);
    tpdb_file_close(reader);
    waitDrained(&f->r);
    struct raft_buffer *bufs = NULL;
    unsigned n = 0;
    assert_int_equal(f->r.fsm.snapshot(&f->r.fsm, &bufs, &n), 0);
    assert_int_equal(f->r.fsm.snapshot_async(&f->r.fsm, &bufs, &n), 0);
    assert_int_equal(n, 1);
    assert_true(bufs[0].len < 128);
    f->r.fsm.snapshot_finalize(&f->r.fsm, &bufs, &n);
    assertSameAsSource(f, &f->r);
}

/* An async FSM stages the parts of a large commit of changes on its
 * checkpointer thread while a reader holds the file; the reader keeps its
 * view, the end waits for it, and then the whole commit is in. */
static void testAsyncDeltaOffLoop(void **state)
{
    struct fixture *f = *state;
    char errmsg[TPDB_ERRMSG_SIZE];
    char stage[256];
    struct tpdb_file *reader = NULL;
    snprintf(stage, sizeof stage, "%s/r/.tpdb/%s.delta", f->root, DB);
    replicaInitAsync(f, &f->r, "r", 1);
    apply(f, &f->r, 1, f->deltaFirst - 1);
    waitDrained(&f->r);
    assert_int_equal(
        tpdb_file_open(f->r.path, TPDB_FILE_RDONLY, &reader, errmsg), TPDB_OK);
    size_t before = rowCount(reader);
    apply(f, &f->r, f->deltaFirst, f->n);
    /* The parts are staged; only their end and what follows wait. */
    for (int i = 0; i < 60000 && tpdbFsmPending(&f->r.fsm) > 2; i++) {
        usleep(1000);
    }
    assert_int_equal(tpdbFsmPending(&f->r.fsm), 2);
    assert_int_equal(access(stage, F_OK), 0);
    assert_int_equal(rowCount(reader), before);
    tpdb_file_close(reader);
    waitDrained(&f->r);
    assert_int_not_equal(access(stage, F_OK), 0);
    assertSameAsSource(f, &f->r);
}

/* A crash in the middle of the sequence: the file is as before it; the
 * restarted FSM, fed the log again from its start, ends at the source. */
static void testDeltaCrashMidSequence(void **state)
{
    struct fixture *f = *state;
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, f->deltaFirst - 1);
    char *before = rowsOf(f->r.path);
    apply(f, &f->r, f->deltaFirst, f->deltaFirst + 1);
    replicaCrash(&f->r);
    char *rows = rowsOf(f->r.path);
    assert_string_equal(rows, before);
    free(rows);
    free(before);
    replicaInit(f, &f->r, "r");
    apply(f, &f->r, 1, f->n);
    assertSameAsSource(f, &f->r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testRestartFromDurableSnapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testRestartTakenNotStored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testRestartDurableLost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testInstallIntoStaleNode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testInstallIntoCorruptNode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testInstallIntoEmptyNode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testLegacyRecordRestores, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testAsyncWritesOffLoop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testAsyncDeltaOffLoop, setupDelta,
                                        teardown),
        cmocka_unit_test_setup_teardown(testDeltaCrashMidSequence, setupDelta,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
