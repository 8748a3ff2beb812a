/* Unit tests for the replication of native TPDB page files
 * (vfs/tpdbfile_repl.c, vfs/tpdbfile_stage.c): commit hooks on a writer,
 * refused and unknown commits rolled back, the follower apply
 * (tpdb_file_apply), a commit of many changes in parts staged and applied
 * whole (tpdb_file_stage_*, crashes in it included) and the snapshot image
 * (tpdb_file_image), with a replica kept by the hooks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base.h"
#include "vfs/tpdbfile/tpdbfile.h"

#define PAGE TPDB_FILE_PAGE_SIZE

struct fx {
    char dir[64];
    char leader[128];
    char replica[128];
    char other[128];
    struct tpdb_file *f;
    /* What the hooks do and saw. */
    int commit_rc;     /* returned by the commit hook (after applying) */
    int apply;         /* apply each commit to the replica */
    int check_rc;      /* returned by write_check */
    unsigned crash_at; /* arm the crash hook in this commit (1-based) */
    unsigned commits;  /* commit hook calls */
    unsigned dones;    /* done hook calls */
    int last_written;  /* done hook's argument */
    uint32_t last_n;   /* n_pages of the last txn */
    uint32_t last_db;  /* db_pages of the last txn */
    uint32_t first_n;  /* n_pages and db_pages of the first txn */
    uint32_t first_db;
    /* Commits of changes in parts (hookDeltaPart). */
    char stage_path[128];
    struct tpdb_file_stage *stage;
    unsigned parts;     /* commit_delta_part calls */
    uint32_t last_pgno; /* last page number handed over */
    uint8_t *before;    /* the replica's bytes before the commit */
    size_t before_len;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/tpdbrepl-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->leader, sizeof fx->leader, "%s/leader.tpdb", fx->dir);
    snprintf(fx->replica, sizeof fx->replica, "%s/replica.tpdb", fx->dir);
    snprintf(fx->other, sizeof fx->other, "%s/other.tpdb", fx->dir);
    snprintf(fx->stage_path, sizeof fx->stage_path, "%s/replica.delta",
             fx->dir);
    fx->apply = 1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    char p[160];
    const char *paths[] = {fx->leader, fx->replica, fx->other};
    tpdb_file_close(fx->f);
    tpdb_file_stage_close(fx->stage);
    free(fx->before);
    unlink(fx->stage_path);
    for (unsigned i = 0; i < 3; i++) {
        unlink(paths[i]);
        snprintf(p, sizeof p, "%s-wal", paths[i]);
        unlink(p);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void mustOk(struct tpdb_file *f, int rc)
{
    if (rc != TPDB_OK) {
        print_error("rc %d: %s\n", rc, tpdb_file_errmsg(f));
    }
    assert_int_equal(rc, TPDB_OK);
}

/* ---- Hooks: a replica kept in step by tpdb_file_apply ------------------ */

static int hookCheck(void *arg, char *errmsg)
{
    struct fx *fx = arg;
    if (fx->check_rc != TPDB_OK) {
        snprintf(errmsg, TPDB_ERRMSG_SIZE, "not the leader: node 2 is, at x");
    }
    return fx->check_rc;
}

static int hookCommit(void *arg, const struct tpdb_txn *txn, char *errmsg)
{
    struct fx *fx = arg;
    fx->commits++;
    fx->last_n = txn->n_pages;
    fx->last_db = txn->db_pages;
    if (fx->commits == 1) {
        fx->first_n = txn->n_pages;
        fx->first_db = txn->db_pages;
    }
    if (fx->crash_at == fx->commits) {
        /* Dies in place of the checkpoint: frames + sentinel are durable. */
        tpdb_file_test_crash_after_frames(txn->n_pages);
    }
    if (fx->commit_rc != TPDB_OK) {
        snprintf(errmsg, TPDB_ERRMSG_SIZE, "replication refused");
        return fx->commit_rc;
    }
    if (fx->apply) {
        int rc = tpdb_file_apply(fx->replica, txn, errmsg);
        if (rc != TPDB_OK) {
            print_error("apply: %s\n", errmsg);
        }
        assert_int_equal(rc, TPDB_OK);
    }
    return TPDB_OK;
}

static void hookDone(void *arg, int written)
{
    struct fx *fx = arg;
    fx->dones++;
    fx->last_written = written;
}

static void openLeader(struct fx *fx)
{
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file_hooks hooks = {
        .version = 1,
        .arg = fx,
        .write_check = hookCheck,
        .commit = hookCommit,
        .done = hookDone,
    };
    int rc = tpdb_file_open(fx->leader, TPDB_FILE_CREATE, &fx->f, err);
    if (rc != TPDB_OK) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, TPDB_OK);
    mustOk(fx->f, tpdb_file_set_hooks(fx->f, &hooks));
}

static uint8_t *readAll(const char *path, size_t *len);

/* Stages each part of a commit of changes; at the last one applies the
 * stage to the replica (when fx->apply). Until then the replica keeps the
 * bytes it had (fx->before, when set). */
static int hookDeltaPart(void *arg,
                         const struct tpdb_txn *part,
                         unsigned index,
                         int final,
                         char *errmsg)
{
    struct fx *fx = arg;
    assert_int_equal(index, fx->parts);
    fx->parts++;
    assert_true(part->n_pages <= TPDB_FILE_REPL_PART_PAGES);
    if (index == 0) {
        assert_int_equal(part->pages[0].pgno, 1);
        assert_null(fx->stage);
        assert_int_equal(
            tpdb_file_stage_open(fx->stage_path, &fx->stage, errmsg), TPDB_OK);
    } else {
        assert_true(part->pages[0].pgno > fx->last_pgno);
    }
    fx->last_pgno = part->pages[part->n_pages - 1].pgno;
    fx->last_db = part->db_pages;
    int rc = tpdb_file_stage_add(fx->stage, part, errmsg);
    if (rc != TPDB_OK) {
        print_error("stage: %s\n", errmsg);
    }
    assert_int_equal(rc, TPDB_OK);
    if (fx->before != NULL) {
        size_t len = 0;
        uint8_t *now = readAll(fx->replica, &len);
        assert_int_equal(len, fx->before_len);
        assert_memory_equal(now, fx->before, len);
        free(now);
    }
    if (final && fx->apply) {
        rc = tpdb_file_stage_apply(fx->stage, fx->replica, errmsg);
        if (rc != TPDB_OK) {
            print_error("stage apply: %s\n", errmsg);
        }
        assert_int_equal(rc, TPDB_OK);
        tpdb_file_stage_close(fx->stage);
        fx->stage = NULL;
    }
    return TPDB_OK;
}

/* openLeader with version 3 hooks (commits of changes in parts). */
static void openLeaderParts(struct fx *fx)
{
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file_hooks hooks = {
        .version = 3,
        .arg = fx,
        .commit = hookCommit,
        .done = hookDone,
        .commit_delta_part = hookDeltaPart,
    };
    mustOk(NULL, tpdb_file_open(fx->leader, TPDB_FILE_CREATE, &fx->f, err));
    mustOk(fx->f, tpdb_file_set_hooks(fx->f, &hooks));
}

static struct tpdb_value vInt(int64_t i)
{
    struct tpdb_value v = {.type = TPDB_VINT, .i = i};
    return v;
}

static struct tpdb_value vText(const char *s)
{
    struct tpdb_value v = {
        .type = TPDB_VTEXT, .base = (const uint8_t *)s, .len = strlen(s)};
    return v;
}

static void makeUsers(struct tpdb_file *f)
{
    struct tpdb_column cols[2] = {
        {"id", "integer", 0, NULL},
        {"name", "text", 1, NULL},
    };
    const char *icols[] = {"name"};
    mustOk(f, tpdb_file_create_table(f, "users", cols, 2, 0));
    mustOk(f, tpdb_file_create_index(f, "users_name", "users", icols, 1, 0));
}

static void insertUser(struct tpdb_file *f, int64_t id, const char *name)
{
    struct tpdb_value v[2] = {vInt(id), vText(name)};
    mustOk(f, tpdb_file_insert(f, "users", v, 2, NULL));
}

/* Every row of users in f as "id:name;" text; the caller frees it. NULL
 * when the file has no users table. */
static char *dumpHandle(struct tpdb_file *f)
{
    struct tpdb_cursor *c = NULL;
    size_t cap = 1 << 23;
    size_t len = 0;
    char *out = calloc(1, cap);
    assert_non_null(out);
    if (tpdb_cursor_open_table(f, "users", &c) != TPDB_OK) {
        free(out);
        return NULL;
    }
    mustOk(f, tpdb_cursor_first(c));
    while (!tpdb_cursor_eof(c)) {
        const struct tpdb_value *v;
        unsigned n, stored;
        int64_t rowid;
        mustOk(f, tpdb_cursor_rowid(c, &rowid));
        mustOk(f, tpdb_cursor_row(c, &v, &n, &stored));
        len += (size_t)snprintf(out + len, cap - len, "%lld:%.*s;",
                                (long long)rowid, (int)v[1].len,
                                (const char *)v[1].base);
        assert_true(len < cap);
        mustOk(f, tpdb_cursor_next(c));
    }
    tpdb_cursor_close(c);
    return out;
}

/* dumpHandle through a fresh read-only handle on path. */
static char *dumpUsers(const char *path)
{
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *f = NULL;
    int rc = tpdb_file_open(path, TPDB_FILE_RDONLY, &f, err);
    if (rc != TPDB_OK) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, TPDB_OK);
    char *out = dumpHandle(f);
    tpdb_file_close(f);
    return out;
}

/* The leader's rows through its writer handle, the replica's through a
 * read-only handle of its own. */
static void assertSameRows(struct fx *fx)
{
    char *x = dumpHandle(fx->f);
    char *y = dumpUsers(fx->replica);
    assert_non_null(x);
    assert_non_null(y);
    assert_string_equal(x, y);
    free(x);
    free(y);
}

static uint8_t *readAll(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long n;
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    n = ftell(fp);
    rewind(fp);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void assertSameBytes(const char *a, const char *b)
{
    size_t la, lb;
    uint8_t *x = readAll(a, &la);
    uint8_t *y = readAll(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, la);
    free(x);
    free(y);
}

/* ---- Leader side ---------------------------------------------------------*/

/* Commits of every kind reach the replica, which reads the same rows and
 * is byte-identical to the leader after each checkpointed commit. */
static void testReplicateCommits(void **state)
{
    struct fx *fx = *state;
    char name[64];
    openLeader(fx);
    makeUsers(fx->f);
    /* The first commit carries the whole file; later ones only changes. */
    assert_int_equal(fx->first_n, fx->first_db);
    insertUser(fx->f, 1, "alice");
    assertSameRows(fx);
    mustOk(fx->f, tpdb_file_begin(fx->f));
    for (int i = 2; i < 400; i++) {
        snprintf(name, sizeof name, "user-%04d-%s", i, "padding-padding");
        insertUser(fx->f, i, name);
    }
    mustOk(fx->f, tpdb_file_commit(fx->f));
    struct tpdb_value v[2] = {vInt(7), vText("renamed")};
    mustOk(fx->f, tpdb_file_update(fx->f, "users", 7, v, 2));
    for (int i = 100; i < 300; i++) {
        mustOk(fx->f, tpdb_file_delete(fx->f, "users", i));
    }
    insertUser(fx->f, 1000, "after-free"); /* reuses freed pages */
    assert_true(fx->last_n < fx->last_db);
    assertSameRows(fx);
    assertSameBytes(fx->leader, fx->replica);
    assert_int_equal(fx->dones, fx->commits);
    assert_int_equal(fx->last_written, 1);
    /* A reopened writer starts with a whole-file commit again. */
    tpdb_file_close(fx->f);
    fx->f = NULL;
    openLeader(fx);
    insertUser(fx->f, 1001, "reopened");
    assert_int_equal(fx->last_n, fx->last_db);
    assertSameBytes(fx->leader, fx->replica);
}

static int hookNoFull(void *arg)
{
    (void)arg;
    return 0;
}

/* A writer reopened over a file every replica already holds (needs_full
 * says 0) ships only its changes, and the replica stays identical. */
static void testReopenWithoutFullCommit(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    openLeader(fx);
    makeUsers(fx->f);
    for (int i = 1; i < 200; i++) {
        insertUser(fx->f, i, "user-padding-padding-padding");
    }
    tpdb_file_close(fx->f);
    struct tpdb_file_hooks hooks = {
        .version = 1,
        .arg = fx,
        .write_check = hookCheck,
        .commit = hookCommit,
        .done = hookDone,
        .needs_full = hookNoFull,
    };
    assert_int_equal(tpdb_file_open(fx->leader, 0, &fx->f, err), TPDB_OK);
    mustOk(fx->f, tpdb_file_set_hooks(fx->f, &hooks));
    insertUser(fx->f, 500, "reopened");
    assert_true(fx->last_db > 2);
    assert_true(fx->last_n < fx->last_db);
    assertSameRows(fx);
    assertSameBytes(fx->leader, fx->replica);
}

/* A refused or unknown replication writes nothing and rolls back. */
static void testCommitRefused(void **state)
{
    struct fx *fx = *state;
    size_t before_len, after_len;
    openLeader(fx);
    makeUsers(fx->f);
    insertUser(fx->f, 1, "kept");
    uint8_t *before = readAll(fx->leader, &before_len);
    unsigned dones = fx->dones;
    const int codes[] = {TPDB_NOTLEADER, TPDB_UNKNOWN};
    for (unsigned i = 0; i < 2; i++) {
        struct tpdb_value v[2] = {vInt(2), vText("lost")};
        fx->commit_rc = codes[i];
        assert_int_equal(tpdb_file_insert(fx->f, "users", v, 2, NULL),
                         codes[i]);
        assert_non_null(strstr(tpdb_file_errmsg(fx->f), "refused"));
        mustOk(fx->f, tpdb_file_begin(fx->f));
        insertUser(fx->f, 3, "lost-too");
        assert_int_equal(tpdb_file_commit(fx->f), codes[i]);
    }
    assert_int_equal(fx->dones, dones);
    uint8_t *after = readAll(fx->leader, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(before);
    free(after);
    /* The handle goes on from the last commit. */
    fx->commit_rc = TPDB_OK;
    insertUser(fx->f, 2, "second");
    char *rows = dumpHandle(fx->f);
    assert_string_equal(rows, "1:kept;2:second;");
    free(rows);
    assertSameRows(fx);
}

/* A write refused by write_check fails before changing anything. */
static void testWriteCheckRefused(void **state)
{
    struct fx *fx = *state;
    openLeader(fx);
    makeUsers(fx->f);
    unsigned commits = fx->commits;
    fx->check_rc = TPDB_NOTLEADER;
    struct tpdb_value v[2] = {vInt(1), vText("x")};
    assert_int_equal(tpdb_file_insert(fx->f, "users", v, 2, NULL),
                     TPDB_NOTLEADER);
    assert_non_null(strstr(tpdb_file_errmsg(fx->f), "node 2 is"));
    assert_int_equal(tpdb_file_delete(fx->f, "users", 1), TPDB_NOTLEADER);
    assert_int_equal(fx->commits, commits);
    fx->check_rc = TPDB_OK;
    insertUser(fx->f, 1, "x");
    assertSameRows(fx);
}

static void testSetHooksErrors(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *ro = NULL;
    struct tpdb_file_hooks hooks = {.version = 4};
    openLeader(fx);
    assert_int_equal(tpdb_file_set_hooks(fx->f, &hooks), TPDB_INVALID);
    mustOk(fx->f, tpdb_file_begin(fx->f));
    hooks.version = 1;
    assert_int_equal(tpdb_file_set_hooks(fx->f, &hooks), TPDB_MISUSE);
    mustOk(fx->f, tpdb_file_rollback(fx->f));
    /* Removing the hooks: commits are local only. */
    mustOk(fx->f, tpdb_file_set_hooks(fx->f, NULL));
    makeUsers(fx->f);
    assert_int_equal(fx->commits, 0);
    tpdb_file_close(fx->f);
    fx->f = NULL;
    mustOk(NULL, tpdb_file_open(fx->leader, TPDB_FILE_RDONLY, &ro, err));
    assert_int_equal(tpdb_file_set_hooks(ro, &hooks), TPDB_READONLY);
    tpdb_file_close(ro);
}

/* ---- Follower apply ------------------------------------------------------*/

/* A one-page header-only commit in the replication mapping. */
static void headerTxn(uint8_t *hdr,
                      struct tpdb_page *pages,
                      struct tpdb_txn *txn,
                      uint32_t page_count)
{
    memset(hdr, 0, PAGE);
    memcpy(hdr, "TPANDADB", 8);
    hdr[8] = 2;
    hdr[12] = (uint8_t)page_count;
    pages[0].pgno = 1;
    pages[0].data = hdr;
    txn->page_size = PAGE;
    txn->db_pages = page_count + 1;
    txn->n_pages = 1;
    txn->pages = pages;
}

static void testApplyBusy(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    struct tpdb_file *ro = NULL;
    openLeader(fx);
    makeUsers(fx->f);
    mustOk(NULL, tpdb_file_open(fx->replica, TPDB_FILE_RDONLY, &ro, err));
    struct tpdb_value v[2] = {vInt(5), vText("busy")};
    fx->apply = 0;
    mustOk(fx->f, tpdb_file_insert(fx->f, "users", v, 2, NULL));
    /* The replica is held: the image of the leader cannot go in yet. */
    uint8_t *img = NULL;
    uint32_t n = 0;
    mustOk(NULL, tpdb_file_image(fx->leader, &img, &n, err));
    struct tpdb_page *pages = calloc(n, sizeof *pages);
    assert_non_null(pages);
    for (uint32_t i = 0; i < n; i++) {
        pages[i].pgno = i + 1;
        pages[i].data = img + (size_t)i * PAGE;
    }
    struct tpdb_txn txn = {PAGE, n, n, pages};
    assert_int_equal(tpdb_file_apply(fx->replica, &txn, err), TPDB_BUSY);
    tpdb_file_close(ro);
    mustOk(NULL, tpdb_file_apply(fx->replica, &txn, err));
    assertSameRows(fx);
    assertSameBytes(fx->leader, fx->replica);
    free(pages);
    tpdb_free(img);
}

static void testApplyInvalid(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    uint8_t hdr[PAGE];
    uint8_t data[PAGE];
    struct tpdb_page pages[3];
    struct tpdb_txn txn;
    (void)fx;
    memset(data, 0, sizeof data);
    headerTxn(hdr, pages, &txn, 2);
    assert_int_equal(tpdb_file_apply(NULL, &txn, err), TPDB_INVALID);
    assert_int_equal(tpdb_file_apply(fx->other, NULL, err), TPDB_INVALID);
    txn.page_size = 1024;
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    headerTxn(hdr, pages, &txn, 2);
    txn.db_pages = 5; /* page_count + 1 would be 3 */
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    headerTxn(hdr, pages, &txn, 2);
    hdr[0] = 'X';
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    assert_non_null(strstr(err, "header"));
    headerTxn(hdr, pages, &txn, 2);
    hdr[16] = 9; /* free-list head past page_count */
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    headerTxn(hdr, pages, &txn, 2);
    pages[0].pgno = 2; /* no header page */
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    headerTxn(hdr, pages, &txn, 2);
    pages[1] = (struct tpdb_page){3, data};
    pages[2] = (struct tpdb_page){2, data}; /* decreasing */
    txn.n_pages = 3;
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    pages[2] = (struct tpdb_page){4, data}; /* beyond db_pages */
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_INVALID);
    assert_int_equal(access(fx->other, F_OK), -1); /* nothing created */
}

/* A target that is not a TPDB file is reported, not overwritten. */
static void testApplyCorruptTarget(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    uint8_t hdr[PAGE];
    struct tpdb_page pages[1];
    struct tpdb_txn txn;
    FILE *fp = fopen(fx->other, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++) {
        fputs("garbage!", fp);
    }
    fclose(fp);
    headerTxn(hdr, pages, &txn, 1);
    assert_int_equal(tpdb_file_apply(fx->other, &txn, err), TPDB_CORRUPT);
    assert_non_null(strstr(err, "other.tpdb"));
}

/* ---- Snapshot image ------------------------------------------------------*/

/* The image holds committed WAL frames a crash kept from the checkpoint,
 * and is the same whether or not a writer holds the file. */
static void testImageWithWal(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    uint8_t *img = NULL;
    uint8_t *img2 = NULL;
    uint32_t n = 0, n2 = 0;
    int st = 0;
    assert_int_equal(tpdb_file_image(fx->leader, &img, &n, err), TPDB_NOTFOUND);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fx->apply = 0;
        fx->crash_at = 3; /* table, index, then the row */
        openLeader(fx);
        makeUsers(fx->f);
        insertUser(fx->f, 1, "in-wal");
        _exit(0); /* not reached: the second commit dies */
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 77);
    mustOk(NULL, tpdb_file_image(fx->leader, &img, &n, err));
    assert_memory_equal(img, "TPANDADB", 8);
    assert_int_equal(n, img[12] + 1);
    /* Apply the image as a commit: the replica holds the row. */
    struct tpdb_page *pages = calloc(n, sizeof *pages);
    assert_non_null(pages);
    for (uint32_t i = 0; i < n; i++) {
        pages[i].pgno = i + 1;
        pages[i].data = img + (size_t)i * PAGE;
    }
    struct tpdb_txn txn = {PAGE, n, n, pages};
    mustOk(NULL, tpdb_file_apply(fx->replica, &txn, err));
    char *rows = dumpUsers(fx->replica);
    assert_string_equal(rows, "1:in-wal;");
    free(rows);
    /* A writer holding the file (it recovered the WAL) does not stop it. */
    openLeader(fx);
    mustOk(NULL, tpdb_file_image(fx->leader, &img2, &n2, err));
    assert_int_equal(n, n2);
    assert_memory_equal(img, img2, (size_t)n * PAGE);
    assertSameBytes(fx->leader, fx->replica);
    free(pages);
    tpdb_free(img);
    tpdb_free(img2);
}

/* A read-only handle reads its committed state in the mapping, the same
 * bytes as the image, in any chunking; pages outside it are refused; and
 * while it is open no writer can take the file. */
static void testReadMapped(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    uint8_t *img = NULL;
    uint32_t n = 0;
    struct tpdb_file *ro = NULL;
    struct tpdb_file *rw = NULL;
    openLeader(fx);
    makeUsers(fx->f);
    for (int i = 1; i <= 40; i++) {
        insertUser(fx->f, i, "mapped-row-with-some-padding-padding");
    }
    tpdb_file_close(fx->f);
    fx->f = NULL;
    mustOk(NULL, tpdb_file_image(fx->leader, &img, &n, err));
    mustOk(NULL, tpdb_file_open(fx->leader, TPDB_FILE_RDONLY, &ro, err));
    assert_int_equal(tpdb_file_mapped_pages(ro), n);
    assert_true(n > 3);
    uint8_t *buf = calloc(n, PAGE);
    assert_non_null(buf);
    mustOk(ro, tpdb_file_read_mapped(ro, 1, 1, buf));
    for (uint32_t p = 2; p <= n; p += 3) {
        uint32_t k = n - p + 1 < 3 ? n - p + 1 : 3;
        mustOk(ro,
               tpdb_file_read_mapped(ro, p, k, buf + (size_t)(p - 1) * PAGE));
    }
    assert_memory_equal(buf, img, (size_t)n * PAGE);
    assert_int_equal(tpdb_file_read_mapped(ro, 0, 1, buf), TPDB_INVALID);
    assert_int_equal(tpdb_file_read_mapped(ro, n, 2, buf), TPDB_INVALID);
    assert_int_equal(tpdb_file_read_mapped(ro, 1, n + 1, buf), TPDB_INVALID);
    assert_int_equal(tpdb_file_open(fx->leader, 0, &rw, err), TPDB_BUSY);
    tpdb_file_close(ro);
    free(buf);
    tpdb_free(img);
}

/* Users 1..3, then one transaction of `rows` more users with long names:
 * about one changed page per three rows, counting the index. */
static void bigCommit(struct fx *fx, int rows)
{
    char name[1200];
    makeUsers(fx->f);
    for (int i = 1; i <= 3; i++) {
        insertUser(fx->f, i, "small");
    }
    fx->before = readAll(fx->replica, &fx->before_len);
    mustOk(fx->f, tpdb_file_begin(fx->f));
    for (int i = 10; i < 10 + rows; i++) {
        snprintf(name, sizeof name, "%07d-%0900d", i, i);
        insertUser(fx->f, i, name);
    }
}

/* A commit of more changed pages than a part holds goes to
 * commit_delta_part in bounded parts (header first, pages increasing);
 * staged and applied at the last part, the replica is unchanged until
 * then and byte-identical to the leader after; small commits still go
 * whole to commit. */
static void testDeltaInParts(void **state)
{
    struct fx *fx = *state;
    openLeaderParts(fx);
    bigCommit(fx, 3000);
    unsigned commits = fx->commits;
    mustOk(fx->f, tpdb_file_commit(fx->f));
    free(fx->before);
    fx->before = NULL;
    assert_int_equal(fx->commits, commits);
    assert_true(fx->parts >= 2);
    assert_int_equal(fx->last_db, tpdb_file_mapped_pages(fx->f));
    assert_int_equal(fx->dones, commits + 1);
    assert_int_equal(fx->last_written, 1);
    assertSameRows(fx);
    assertSameBytes(fx->leader, fx->replica);
    assert_int_not_equal(access(fx->stage_path, F_OK), 0);
    insertUser(fx->f, 5, "after");
    assert_int_equal(fx->commits, commits + 1);
    assertSameBytes(fx->leader, fx->replica);
}

/* Parts out of shape are refused and make the stage unusable; a stage
 * applies only to a file no handle holds (TPDB_BUSY, then OK). */
static void testStageErrors(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    uint8_t hdr[PAGE];
    uint8_t data[PAGE];
    struct tpdb_page pages[2];
    struct tpdb_txn txn;
    struct tpdb_file_stage *st = NULL;
    struct tpdb_file *ro = NULL;
    memset(data, 0, sizeof data);
    mustOk(NULL, tpdb_file_stage_open(fx->stage_path, &st, err));
    assert_int_equal(tpdb_file_stage_apply(st, fx->replica, err), TPDB_INVALID);
    headerTxn(hdr, pages, &txn, 3);
    pages[0].pgno = 2; /* no header page first */
    pages[0].data = data;
    assert_int_equal(tpdb_file_stage_add(st, &txn, err), TPDB_INVALID);
    assert_int_equal(tpdb_file_stage_apply(st, fx->replica, err), TPDB_INVALID);
    tpdb_file_stage_close(st);
    assert_int_not_equal(access(fx->stage_path, F_OK), 0);

    mustOk(NULL, tpdb_file_stage_open(fx->stage_path, &st, err));
    headerTxn(hdr, pages, &txn, 3);
    pages[1].pgno = 3;
    pages[1].data = data;
    txn.n_pages = 2;
    mustOk(NULL, tpdb_file_stage_add(st, &txn, err));
    pages[0].pgno = 3; /* not above the staged ones */
    pages[0].data = data;
    txn.n_pages = 1;
    assert_int_equal(tpdb_file_stage_add(st, &txn, err), TPDB_INVALID);
    tpdb_file_stage_close(st);

    mustOk(NULL, tpdb_file_stage_open(fx->stage_path, &st, err));
    headerTxn(hdr, pages, &txn, 3);
    mustOk(NULL, tpdb_file_stage_add(st, &txn, err));
    pages[0].pgno = 4;
    pages[0].data = data;
    txn.db_pages = 5; /* another size than the first part's */
    assert_int_equal(tpdb_file_stage_add(st, &txn, err), TPDB_INVALID);
    tpdb_file_stage_close(st);

    mustOk(NULL, tpdb_file_stage_open(fx->stage_path, &st, err));
    headerTxn(hdr, pages, &txn, 3);
    mustOk(NULL, tpdb_file_stage_add(st, &txn, err));
    pages[0].pgno = 4;
    pages[0].data = data;
    mustOk(NULL, tpdb_file_stage_add(st, &txn, err));
    headerTxn(hdr, pages, &txn, 1);
    mustOk(NULL, tpdb_file_apply(fx->replica, &txn, err));
    mustOk(NULL, tpdb_file_open(fx->replica, TPDB_FILE_RDONLY, &ro, err));
    assert_int_equal(tpdb_file_stage_apply(st, fx->replica, err), TPDB_BUSY);
    tpdb_file_close(ro);
    mustOk(NULL, tpdb_file_stage_apply(st, fx->replica, err));
    mustOk(NULL, tpdb_file_open(fx->replica, TPDB_FILE_RDONLY, &ro, err));
    struct tpdb_file_info info;
    tpdb_file_get_info(ro, &info);
    assert_int_equal(info.page_count, 3);
    tpdb_file_close(ro);
    tpdb_file_stage_close(st);
}

/* Out of memory at every allocation of a stage's open, add and apply:
 * TPDB_NOMEM, the replica unchanged (its size); then it succeeds. */
static void testStageOom(void **state)
{
    struct fx *fx = *state;
    char err[TPDB_ERRMSG_SIZE];
    uint8_t hdr[PAGE];
    uint8_t data[2][PAGE];
    struct tpdb_page pages[3];
    struct tpdb_txn txn;
    headerTxn(hdr, pages, &txn, 1);
    mustOk(NULL, tpdb_file_apply(fx->replica, &txn, err));
    memset(data, 0x5a, sizeof data); /* the file's size is what is checked */
    int rc = TPDB_NOMEM;
    for (long n = 0; rc != TPDB_OK; n++) {
        struct tpdb_file_stage *st = NULL;
        headerTxn(hdr, pages, &txn, 3);
        pages[1].pgno = 2;
        pages[1].data = data[0];
        pages[2].pgno = 3;
        pages[2].data = data[1];
        txn.n_pages = 3;
        tpdbAllocFailAfter(n);
        rc = tpdb_file_stage_open(fx->stage_path, &st, err);
        if (rc == TPDB_OK) {
            rc = tpdb_file_stage_add(st, &txn, err);
        }
        if (rc == TPDB_OK) {
            rc = tpdb_file_stage_apply(st, fx->replica, err);
        }
        tpdbAllocFailAfter(-1);
        tpdb_file_stage_close(st);
        struct stat sb;
        assert_int_equal(stat(fx->replica, &sb), 0);
        if (rc != TPDB_OK) {
            assert_int_equal(rc, TPDB_NOMEM);
            assert_int_equal(sb.st_size, 64 + 1 * PAGE);
        } else {
            assert_int_equal(sb.st_size, 64 + 3 * PAGE);
        }
    }
}

/* Applies the stage left by bigCommit to the replica in a child that
 * dies before WAL frame `frames` (or, past the last, before the
 * checkpoint). */
static void applyCrashing(struct fx *fx, long frames)
{
    char err[TPDB_ERRMSG_SIZE];
    int status = 0;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tpdb_file_test_crash_after_frames(frames);
        tpdb_file_stage_apply(fx->stage, fx->replica, err);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 77);
}

/* A replica that crashes while it copies the staged frames to its WAL
 * opens at the state before the commit; one that crashes after the WAL
 * sync opens at the state after it; applying again, or afterwards, ends
 * byte-identical to the leader. */
static void testStageCrash(void **state)
{
    struct fx *fx = *state;
    openLeaderParts(fx);
    bigCommit(fx, 3000);
    fx->apply = 0;
    mustOk(fx->f, tpdb_file_commit(fx->f));
    assert_true(fx->parts >= 2);
    char *old = dumpUsers(fx->replica);
    assert_string_equal(old, "1:small;2:small;3:small;");

    applyCrashing(fx, 700); /* in the middle of the frames */
    char *rows = dumpUsers(fx->replica);
    assert_string_equal(rows, old);
    free(rows);

    /* After every frame and the sentinel: in place of the checkpoint. */
    struct stat sb;
    assert_int_equal(stat(fx->stage_path, &sb), 0);
    applyCrashing(fx, (long)(sb.st_size / (8 + PAGE)) + 1);
    rows = dumpUsers(fx->replica);
    char *want = dumpHandle(fx->f);
    assert_string_equal(rows, want);
    free(rows);
    char err[TPDB_ERRMSG_SIZE];
    mustOk(NULL, tpdb_file_stage_apply(fx->stage, fx->replica, err));
    assertSameRows(fx);
    assertSameBytes(fx->leader, fx->replica);
    free(want);
    free(old);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testReplicateCommits, setup, teardown),
        cmocka_unit_test_setup_teardown(testReopenWithoutFullCommit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testCommitRefused, setup, teardown),
        cmocka_unit_test_setup_teardown(testWriteCheckRefused, setup, teardown),
        cmocka_unit_test_setup_teardown(testSetHooksErrors, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyBusy, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyInvalid, setup, teardown),
        cmocka_unit_test_setup_teardown(testApplyCorruptTarget, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(testImageWithWal, setup, teardown),
        cmocka_unit_test_setup_teardown(testReadMapped, setup, teardown),
        cmocka_unit_test_setup_teardown(testDeltaInParts, setup, teardown),
        cmocka_unit_test_setup_teardown(testStageErrors, setup, teardown),
        cmocka_unit_test_setup_teardown(testStageOom, setup, teardown),
        cmocka_unit_test_setup_teardown(testStageCrash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
