/*
 * Integration test: two processes on one data directory. Process A is a
 * member of a 3-node cluster (tpdb-testnode, holding the directory's
 * lock); process B (another tpdb-testnode with the same URI) writes
 * through A's node over the directory's unix socket.
 * - A and B writing at once, single rows and multi-row transactions: every
 *   write of both is acknowledged, B reads its own and A's rows from the
 *   shared files, and the three members end byte-identical.
 * - A SIGKILLed while B writes: B's write in flight reports ok, unknown
 *   or a definite failure, never a wrong answer; its next writes fail
 *   saying the node's process went away, and its reads go on; once node 1
 *   runs again in a new process B writes through it without reopening.
 *   Every acknowledged row is on every member, which end byte-identical.
 * - B SIGKILLed mid-load: A's writes go on, every row acknowledged to B is
 *   on every member. And a client (this test process, through local.h)
 *   that dies between a commit's acknowledgement and writing its frame:
 *   A's node writes the transaction itself, without a stream from a peer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "base/base.h"
#include "raftfsm/local.h"
#include "tests/integration/harness.h"
#include "tests/integration/nodes.h"

#define N_NODES 3
#define N_ROWS 100
/* Election timeouts long enough that a loaded machine (the tests share
 * it) does not change leaders under the writers, which assert that every
 * write is acknowledged. */
#define PARAMS                                          \
    "election_ms=1000&heartbeat_ms=100&ready_ms=60000&" \
    "snapshot_threshold=64&snapshot_trailing=512"

/* Extended codes: TPDB_ERR_NOTLEADER, _UNKNOWN, _REPLFAIL. */
#define ERR_NOTLEADER "err 51210 "
#define ERR_UNKNOWN "err 51466 "
#define ERR_REPLFAIL "err 51722 "

static char errmsg[TPDB_ERRMSG_SIZE];

/* Starts process B on member i's database URI and waits for "ready". */
static struct harness_proc *startOn(struct nodes *c, int i, const char *db)
{
    char uri[HARNESS_PATH_MAX * 2];
    struct harness_proc *p = NULL;
    snprintf(uri, sizeof uri,
             "file:%s/n%d/%s?node=%d&bind=127.0.0.1:%u&peers=%s&%s", c->dir,
             i + 1, db, i + 1, c->ports[i], c->peers, c->params);
    const char *argv[] = {c->prog, uri, NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    if (harnessProcExpect(p, HARNESS_STDOUT, harnessMatchContains, "ready",
                          NODES_READY_MS, NULL, errmsg) != TPDB_OK) {
        char *err = NULL;
        harnessProcReadAll(p, HARNESS_STDERR, 1000, &err, errmsg);
        fail_msg("process B not ready: %s", err ? err : "");
    }
    return p;
}

static struct harness_proc *startB(struct nodes *c, int i)
{
    return startOn(c, i, "app.db");
}

static void cmdSend(struct harness_proc *p, const char *cmd)
{
    if (harnessProcWriteLine(p, cmd, NODES_IO_MS, errmsg) != TPDB_OK) {
        fail_msg("send '%s': %s", cmd, errmsg);
    }
}

/* The next reply line (caller frees), or NULL if the process is gone. */
static char *reply(struct harness_proc *p)
{
    char *line = NULL;
    if (harnessProcReadLine(p, HARNESS_STDOUT, NODES_IO_MS, &line, errmsg) !=
        TPDB_OK) {
        return NULL;
    }
    return line;
}

static void expectOk(struct harness_proc *p, const char *who)
{
    char *line = reply(p);
    if (line == NULL || strncmp(line, "ok", 2) != 0) {
        fail_msg("%s: %s", who, line ? line : "(no reply)");
    }
    tpdb_free(line);
}

/* "row <n>" of a count query on B. */
static long countOnB(struct harness_proc *b, const char *sql)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "query %s", sql);
    cmdSend(b, cmd);
    char *line = reply(b);
    assert_non_null(line);
    long n = -1;
    if (sscanf(line, "row %ld", &n) != 1) {
        fail_msg("B: %s: %s", sql, line);
    }
    tpdb_free(line);
    line = reply(b);
    assert_string_equal(line, "end");
    tpdb_free(line);
    return n;
}

static void setupCluster(struct nodes *c)
{
    nodesInit(c, N_NODES, N_NODES, PARAMS);
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(c, i);
    }
}

/* Runs sql on the leader, following a leadership change; returns the
 * leader that took it. */
static int onLeader(struct nodes *c, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s", sql);
    for (int attempt = 0; attempt < 20; attempt++) {
        int leader = nodesFindLeader(c, 30000);
        char *line = nodesCommand(c, leader, cmd);
        int ok = line != NULL && strncmp(line, "ok", 2) == 0;
        int moved = line != NULL &&
                    strncmp(line, ERR_NOTLEADER, strlen(ERR_NOTLEADER)) == 0;
        if (!ok && !moved) {
            fail_msg("%s: %s", sql, line ? line : "(no reply)");
        }
        tpdb_free(line);
        if (ok) {
            return leader;
        }
    }
    fail_msg("%s: no stable leader", sql);
    return -1;
}

/* Checkpoints every member and asserts their files are byte-identical. */
static void assertIdentical(struct nodes *c)
{
    nodesWaitApplied(c, 60000);
    for (int i = 0; i < N_NODES; i++) {
        nodesCheckpoint(c, i, 30000);
    }
    char path[HARNESS_PATH_MAX + 16];
    size_t len0 = 0;
    nodesPath(c, 0, "app.db", path, sizeof path);
    char *file0 = nodesReadFile(path, &len0);
    for (int i = 1; i < N_NODES; i++) {
        size_t len = 0;
        nodesPath(c, i, "app.db", path, sizeof path);
        char *file = nodesReadFile(path, &len);
        assert_int_equal(len, len0);
        assert_memory_equal(file, file0, len0);
        tpdb_free(file);
    }
    tpdb_free(file0);
}

static void testConcurrentWriters(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char cmd[256];
    (void)state;
    assert_non_null(c);
    setupCluster(c);
    int leader = onLeader(c, "CREATE TABLE t(k INTEGER PRIMARY KEY, who TEXT)");
    struct harness_proc *a = c->procs[leader];
    struct harness_proc *b = startB(c, leader);
    for (int k = 0; k < N_ROWS; k++) {
        /* Both commands are in flight together: the two processes
         * compete for the WAL write lock. */
        snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d, 'a')", k);
        cmdSend(a, cmd);
        if (k % 10 == 0) {
            snprintf(cmd, sizeof cmd,
                     "exec BEGIN IMMEDIATE; INSERT INTO t VALUES(%d, 'b'); "
                     "INSERT INTO t VALUES(%d, 'b'); COMMIT",
                     100000 + k, 200000 + k);
        } else {
            snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d, 'b')",
                     100000 + k);
        }
        cmdSend(b, cmd);
        expectOk(a, "A");
        expectOk(b, "B");
    }
    /* A large transaction (parts, commit_part) from B while A writes. */
    cmdSend(b,
            "exec CREATE TABLE big(b BLOB); "
            "INSERT INTO big VALUES(randomblob(6000000))");
    cmdSend(a, "exec INSERT INTO t VALUES(-1, 'a')");
    expectOk(b, "B, 6 MB");
    expectOk(a, "A");
    long want = 2 * N_ROWS + N_ROWS / 10 + 1;
    assert_int_equal(countOnB(b, "SELECT count(*) FROM t"), want);
    assert_int_equal(countOnB(b, "SELECT count(*) FROM t WHERE who = 'a'"),
                     N_ROWS + 1);
    assertIdentical(c);
    for (int i = 0; i < N_NODES; i++) {
        char *line = nodesQueryFirst(c, i, "SELECT count(*) FROM t");
        char expect[32];
        snprintf(expect, sizeof expect, "row %ld", want);
        assert_string_equal(line, expect);
        tpdb_free(line);
        line = nodesQueryFirst(c, i, "SELECT length(b) FROM big");
        assert_string_equal(line, "row 6000000");
        tpdb_free(line);
    }
    harnessProcFree(b);
    nodesClose(c);
    tpdb_free(c);
}

/* Outcomes of B's writes: 1 acknowledged, 2 unknown. */
static int outcome[N_ROWS];

static void testKillNodeProcess(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char cmd[256];
    (void)state;
    assert_non_null(c);
    memset(outcome, 0, sizeof outcome);
    setupCluster(c);
    int leader = onLeader(c, "CREATE TABLE t(k INTEGER PRIMARY KEY)");
    struct harness_proc *b = startB(c, leader);
    int k = 0;
    for (; k < 50; k++) {
        snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d)", k);
        cmdSend(b, cmd);
        expectOk(b, "B");
        outcome[k] = 1;
    }
    /* B has 30 more writes queued; A dies once B acknowledged 10 of them,
     * so that B is mid-load. */
    for (int i = 0; i < 30; i++) {
        snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d)", k + i);
        cmdSend(b, cmd);
    }
    for (int i = 0; i < 10; i++, k++) {
        expectOk(b, "B");
        outcome[k] = 1;
    }
    nodesKill(c, leader);
    int gone = 0;
    for (int i = 10; i < 30; i++, k++) {
        char *line = reply(b);
        assert_non_null(line);
        if (strncmp(line, "ok", 2) == 0 && gone == 0) {
            outcome[k] = 1; /* acknowledged before A died */
        } else if (strncmp(line, ERR_UNKNOWN, strlen(ERR_UNKNOWN)) == 0 &&
                   gone == 0) {
            outcome[k] = 2;
            print_message("# unknown outcome: %s\n", line);
        } else if (strncmp(line, ERR_REPLFAIL, strlen(ERR_REPLFAIL)) == 0 &&
                   gone == 0) {
            print_message("# not committed: %s\n", line);
        } else if (strncmp(line, ERR_NOTLEADER, strlen(ERR_NOTLEADER)) == 0 &&
                   (strstr(line,
                           "the process running this directory's node "
                           "went away") != NULL ||
                    strstr(line, "its node takes no writes from here") !=
                        NULL)) {
            /* Refused, definitely not done. The second text comes while A
             * is still exiting: its socket is closed, its lock not yet
             * released (seen under TSan, whose exit is slow). */
            gone++;
        } else {
            fail_msg("B's write %d after A died: %s", k, line);
        }
        tpdb_free(line);
    }
    /* At most three writes can have been between check and outcome. */
    assert_true(gone >= 17);
    assert_true(countOnB(b, "SELECT count(*) FROM t") >= 60);
    char *line;

    /* Node 1's process again: B writes through it without reopening
     * (here, or is told where the leader is). */
    nodesStart(c, leader, -1);
    nodesWaitReady(c, leader);
    int newLeader = nodesFindLeader(c, 30000);
    snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d)", k);
    cmdSend(b, cmd);
    line = reply(b);
    assert_non_null(line);
    if (newLeader == leader) {
        if (strncmp(line, "ok", 2) != 0) {
            fail_msg("B through the new node process: %s", line);
        }
        outcome[k] = 1;
    } else if (strncmp(line, ERR_NOTLEADER, strlen(ERR_NOTLEADER)) != 0 ||
               strstr(line, "not the leader: node ") == NULL) {
        fail_msg("B through the new follower process: %s", line);
    }
    tpdb_free(line);

    assertIdentical(c);
    int acked = 0;
    for (int i = 0; i <= k && i < N_ROWS; i++) {
        if (outcome[i] == 0) {
            continue;
        }
        snprintf(cmd, sizeof cmd, "SELECT count(*) FROM t WHERE k = %d", i);
        line = nodesQueryFirst(c, (leader + 1) % N_NODES, cmd);
        if (outcome[i] == 1) {
            acked++;
            if (strcmp(line, "row 1") != 0) {
                fail_msg("acknowledged row %d lost: %s", i, line);
            }
        }
        tpdb_free(line);
    }
    print_message("# %d acknowledged rows of B on every member\n", acked);
    harnessProcFree(b);
    nodesClose(c);
    tpdb_free(c);
}

/* Sends cmd to p until it is acknowledged. A write that finds B's session
 * not yet ended (its last transaction still waiting for its outcome, slow
 * under a sanitizer on a loaded machine) is refused as definitely not
 * done, "roll back and retry": it is retried, for at most 60 s. */
static void writeUntilOk(struct harness_proc *p,
                         const char *cmd,
                         const char *who)
{
    uint64_t deadline = tpdbNowMs() + 60000;
    for (;;) {
        cmdSend(p, cmd);
        char *line = reply(p);
        int ok = line != NULL && strncmp(line, "ok", 2) == 0;
        int retry = line != NULL && strstr(line, "roll back and retry") &&
                    tpdbNowMs() < deadline;
        if (ok || !retry) {
            if (!ok) {
                fail_msg("%s: %s", who, line ? line : "(no reply)");
            }
            tpdb_free(line);
            return;
        }
        tpdb_free(line);
    }
}

/* B SIGKILLed mid-load: A's node ends B's write session (and writes B's
 * last transaction itself if B died between its acknowledgement and its
 * frame), so A's writes go on, and every member ends byte-identical with
 * every row acknowledged to B. */
static void testKillWriterProcess(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char cmd[256];
    (void)state;
    assert_non_null(c);
    memset(outcome, 0, sizeof outcome);
    setupCluster(c);
    int leader = onLeader(c, "CREATE TABLE t(k INTEGER PRIMARY KEY)");
    struct harness_proc *a = c->procs[leader];
    struct harness_proc *b = startB(c, leader);
    for (int i = 0; i < 40; i++) {
        snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d)", i);
        cmdSend(b, cmd);
    }
    for (int i = 0; i < 10; i++) {
        expectOk(b, "B");
        outcome[i] = 1;
    }
    assert_int_equal(harnessProcKill(b, NULL, errmsg), TPDB_OK);
    harnessProcFree(b);
    for (int i = 0; i < 20; i++) {
        snprintf(cmd, sizeof cmd, "exec INSERT INTO t VALUES(%d)", 1000 + i);
        writeUntilOk(a, cmd, "A after B died");
    }
    assertIdentical(c);
    for (int i = 0; i < 10; i++) {
        snprintf(cmd, sizeof cmd, "SELECT count(*) FROM t WHERE k = %d", i);
        char *line = nodesQueryFirst(c, (leader + 1) % N_NODES, cmd);
        assert_string_equal(line, "row 1");
        tpdb_free(line);
    }
    char *line = nodesQueryFirst(c, (leader + 2) % N_NODES,
                                 "SELECT count(*) FROM t WHERE k >= 1000");
    assert_string_equal(line, "row 20");
    tpdb_free(line);
    nodesClose(c);
    tpdb_free(c);
}

/* The image of member i's database with one more row (k = 777), as a
 * transaction of every page; pages point into *image (caller frees both).
 */
static void imageWithRow(struct nodes *c,
                         int i,
                         struct tpdb_txn *txn,
                         char **image)
{
    char src[HARNESS_PATH_MAX + 16];
    char dst[HARNESS_PATH_MAX + 16];
    size_t len = 0;
    sqlite3 *db = NULL;
    nodesPath(c, i, "app.db", src, sizeof src);
    snprintf(dst, sizeof dst, "%s/img.db", c->dir);
    char *file = nodesReadFile(src, &len);
    FILE *f = fopen(dst, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(file, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    tpdb_free(file);
    assert_int_equal(sqlite3_open_v2(dst, &db, SQLITE_OPEN_READWRITE, "unix"),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO t VALUES(777);"
                                  "PRAGMA wal_checkpoint(TRUNCATE);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    *image = nodesReadFile(dst, &len);
    uint8_t *p = (uint8_t *)*image;
    txn->page_size = (uint32_t)(p[16] << 8 | p[17]);
    txn->page_size = txn->page_size == 1 ? 65536 : txn->page_size;
    txn->db_pages = (uint32_t)(len / txn->page_size);
    txn->n_pages = txn->db_pages;
    txn->pages = tpdb_calloc(txn->n_pages, sizeof *txn->pages);
    assert_non_null(txn->pages);
    for (uint32_t k = 0; k < txn->n_pages; k++) {
        txn->pages[k].pgno = k + 1;
        txn->pages[k].data = p + (size_t)k * txn->page_size;
    }
}

static void testClientDiesAfterAck(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    struct tpdb_local_client *cl = NULL;
    struct tpdb_txn txn;
    char *image = NULL;
    char meta[HARNESS_PATH_MAX + 16];
    (void)state;
    assert_non_null(c);
    nodesInit(c, N_NODES, N_NODES, PARAMS "&log_level=warn");
    for (int i = 0; i < N_NODES; i++) {
        nodesStart(c, i, -1);
    }
    for (int i = 0; i < N_NODES; i++) {
        nodesWaitReady(c, i);
    }
    int leader = onLeader(c,
                          "CREATE TABLE t(k INTEGER PRIMARY KEY); "
                          "INSERT INTO t VALUES(1)");
    struct harness_proc *a = c->procs[leader];
    nodesCheckpoint(c, leader, 30000);
    imageWithRow(c, leader, &txn, &image);
    nodesPath(c, leader, ".tpdb", meta, sizeof meta);
    assert_int_equal(tpdbLocalConnect(meta, &cl, errmsg), TPDB_OK);
    assert_int_equal(tpdbLocalWriteCheck(cl, "app.db", errmsg), TPDB_OK);
    if (tpdbLocalCommit(cl, "app.db", &txn, 1, 0, 1, errmsg) != TPDB_OK) {
        fail_msg("commit through A: %s", errmsg);
    }
    /* Gone without writing its frame or saying so. */
    tpdbLocalClose(cl);
    if (harnessProcExpect(a, HARNESS_STDERR, harnessMatchContains,
                          "went away before saying it wrote it: written here",
                          NODES_IO_MS, NULL, errmsg) != TPDB_OK) {
        fail_msg("A did not write the transaction: %s", errmsg);
    }
    assertIdentical(c);
    for (int i = 0; i < N_NODES; i++) {
        char *line =
            nodesQueryFirst(c, i, "SELECT count(*) FROM t WHERE k = 777");
        assert_string_equal(line, "row 1");
        tpdb_free(line);
    }
    assert_int_equal(nodesStat(c, leader, "fetches"), 0);
    /* And A takes writes again. */
    cmdSend(a, "exec INSERT INTO t VALUES(2)");
    expectOk(a, "A");
    tpdb_free(txn.pages);
    tpdb_free(image);
    nodesClose(c);
    tpdb_free(c);
}

/* Writes raw bytes on a fresh connection to member i's socket and
 * waits until the node closes it. */
static void rawClient(struct nodes *c, int i, const void *buf, size_t len)
{
    char meta[HARNESS_PATH_MAX + 16];
    struct sockaddr_un sa;
    char sink[64];
    nodesPath(c, i, ".tpdb/sock", meta, sizeof meta);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    assert_true(strlen(meta) < sizeof sa.sun_path);
    memcpy(sa.sun_path, meta, strlen(meta));
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
    shutdown(fd, SHUT_WR);
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t r;
    while ((r = read(fd, sink, sizeof sink)) > 0) {
    }
    assert_int_equal(r, 0); /* closed by the node, not timed out */
    close(fd);
}

/* Malformed requests on the socket close that stream and nothing else:
 * the node's process goes on writing. */
static void testGarbageOnSocket(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    (void)state;
    assert_non_null(c);
    /* One node: no election to wait for. */
    nodesInit(c, 1, 1, PARAMS);
    nodesStart(c, 0, -1);
    nodesWaitReady(c, 0);
    int leader = onLeader(c, "CREATE TABLE t(k INTEGER PRIMARY KEY)");
    struct harness_proc *a = c->procs[leader];
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0x7f, 3, 0, 6, 0};
    static const uint8_t tiny[] = {2, 0, 0, 0, 1, 0};
    static const uint8_t badOp[] = {14, 0, 0, 0,   9,   0,   6,   0,   0,
                                    0,  0, 0, 'a', 'p', 'p', '.', 'd', 'b'};
    /* A commit without a write check, then one with a bad shape. */
    static const uint8_t noCheck[] = {
        26,  0,   0,   0, 3,  0, 6, 0, 0, 0, 0, 0, 'a', 'p', 'p',
        '.', 'd', 'b', 0, 16, 0, 0, 1, 0, 0, 0, 1, 0,   0,   0};
    static const uint8_t badName[] = {14, 0, 0, 0,   1,   0,   6,   0,   0,
                                      0,  0, 0, '.', '.', '/', 'e', 't', 'c'};
    rawClient(c, leader, huge, sizeof huge);
    rawClient(c, leader, tiny, sizeof tiny);
    rawClient(c, leader, badOp, sizeof badOp);
    rawClient(c, leader, noCheck, sizeof noCheck);
    rawClient(c, leader, badName, sizeof badName);
    /* A stream whose session asks the write check again gets it at once
     * (it waited for its own hold until BUSY), and its DONE lets A write. */
    char meta[HARNESS_PATH_MAX + 16];
    struct tpdb_local_client *cl = NULL;
    nodesPath(c, leader, ".tpdb", meta, sizeof meta);
    assert_int_equal(tpdbLocalConnect(meta, &cl, errmsg), TPDB_OK);
    assert_int_equal(tpdbLocalWriteCheck(cl, "app.db", errmsg), TPDB_OK);
    if (tpdbLocalWriteCheck(cl, "app.db", errmsg) != TPDB_OK) {
        fail_msg("second write check of one session: %s", errmsg);
    }
    tpdbLocalWriteDone(cl, "app.db", 0);
    tpdbLocalClose(cl);
    cmdSend(a, "exec INSERT INTO t VALUES(1)");
    expectOk(a, "A after garbage");
    struct harness_proc *b = startB(c, leader);
    cmdSend(b, "exec INSERT INTO t VALUES(2)");
    expectOk(b, "B after garbage");
    harnessProcFree(b);
    nodesClose(c);
    tpdb_free(c);
}

static int oldRowsThere(void *arg)
{
    const char *uri = arg;
    char *out = NULL;
    char err[TPDB_ERRMSG_SIZE];
    int ok = harnessSqlite3(NULL, uri, "SELECT count(*) FROM old;", 30000, &out,
                            err) == TPDB_OK &&
             strcmp(out, "101\n") == 0;
    tpdb_free(out);
    return ok;
}

/* A plain SQLite database with data, opened by a second process in the
 * node's directory, is adopted by the node's process as a local open would
 * be: its image reaches the followers before that process's own write. */
static void testAdoptThroughNode(void **state)
{
    struct nodes *c = tpdb_calloc(1, sizeof *c);
    char uri[HARNESS_PATH_MAX * 2];
    char *out = NULL;
    (void)state;
    assert_non_null(c);
    setupCluster(c);
    int leader = nodesFindLeader(c, 30000);
    snprintf(uri, sizeof uri, "file:%s/n%d/old.db", c->dir, leader + 1);
    assert_int_equal(harnessSqlite3(NULL, uri,
                                    "CREATE TABLE old(x); INSERT INTO old "
                                    "SELECT value FROM generate_series(1, "
                                    "100);",
                                    30000, &out, errmsg),
                     TPDB_OK);
    tpdb_free(out);
    struct harness_proc *b = startOn(c, leader, "old.db");
    cmdSend(b, "exec INSERT INTO old VALUES(-1)");
    expectOk(b, "B");
    assert_int_equal(countOnB(b, "SELECT count(*) FROM old"), 101);
    int follower = (leader + 1) % N_NODES;
    snprintf(uri, sizeof uri, "file:%s/n%d/old.db?mode=ro", c->dir,
             follower + 1);
    assert_int_equal(harnessPollUntil(oldRowsThere, uri, 60000, 100), TPDB_OK);
    harnessProcFree(b);
    nodesClose(c);
    tpdb_free(c);
}

/* Two groups, each well under a minute: the default one, and "kill"
 * (SIGKILL of either process), which meson runs as multiproc_kill. */
int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testConcurrentWriters, harnessTeardown),
        cmocka_unit_test_teardown(testClientDiesAfterAck, harnessTeardown),
        cmocka_unit_test_teardown(testGarbageOnSocket, harnessTeardown),
        cmocka_unit_test_teardown(testAdoptThroughNode, harnessTeardown),
    };
    const struct CMUnitTest kill[] = {
        cmocka_unit_test_teardown(testKillNodeProcess, harnessTeardown),
        cmocka_unit_test_teardown(testKillWriterProcess, harnessTeardown),
    };
    if (argc > 1 && strcmp(argv[1], "kill") == 0) {
        return cmocka_run_group_tests(kill, NULL, NULL);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
