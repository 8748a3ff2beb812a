/*
 * tpdbd's streamed backup ("backup" with "stream":true) on a real tpdbd
 * process with a database of about 4 MB. Read over the wire: a first
 * line with the size, base64 chunks at increasing offsets, a last line
 * whose size and SHA-256 are those of the bytes received; the copy is a
 * self-contained SQLite file (integrity_check ok, every row, its pages
 * those of the node's file after a checkpoint) and the connection
 * answers the next request. A client that resets the connection after
 * the first chunk leaves the node serving: status, writes and another
 * whole stream work, and no temporary file is left. The tpdb shell's
 * `.backup --local FILE` writes the same copy on its side; an existing
 * FILE is refused; through a relay that cuts the stream, or one that
 * changes one base64 character, it fails and leaves neither FILE nor
 * FILE.partial.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include "tests/integration/nodes.h"
#include "tests/integration/tpdbds.h"

#define ROWS 4000
#define WAIT_MS 30000

static struct tpdbds c;
static long long rows = ROWS; /* in big now */
static char shellProg[HARNESS_PATH_MAX];

static int setup(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    tpdbdsInit(&c, 1, 0);
    tpdbdsStart(&c, 0, NULL);
    tpdbdsWaitReady(&c, 0);
    tpdbdsFindLeader(&c, TPDBDS_READY_MS);
    json_t *o = tpdbdsCall(&c, 0,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "big(id INTEGER PRIMARY KEY, v TEXT); WITH "
                           "RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x "
                           "+ 1 FROM n WHERE x < %d) INSERT INTO big SELECT "
                           "x, printf('%%01000d', x) FROM n\"}",
                           ROWS);
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    snprintf(shellProg, sizeof shellProg, "%s/shell/tpdb",
             getenv("TPDB_BUILD_ROOT"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tpdbdsClose(&c);
    return 0;
}

/* A line reader that keeps what follows a line for the next one. */
struct reader {
    int fd;
    char *buf;
    size_t len, cap;
};

/* The next line (malloc'ed, without '\n'), or NULL at end or error. */
static char *nextLine(struct reader *r)
{
    for (;;) {
        char *nl = r->len > 0 ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl != NULL) {
            size_t n = (size_t)(nl - r->buf);
            char *line = malloc(n + 1);
            assert_non_null(line);
            memcpy(line, r->buf, n);
            line[n] = '\0';
            memmove(r->buf, nl + 1, r->len - n - 1);
            r->len -= n + 1;
            return line;
        }
        if (r->cap - r->len < 65536) {
            r->cap = r->cap * 2 + 65536;
            r->buf = realloc(r->buf, r->cap);
            assert_non_null(r->buf);
        }
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (poll(&p, 1, TPDBDS_IO_MS) <= 0) {
            return NULL;
        }
        ssize_t n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
        if (n <= 0) {
            return NULL;
        }
        r->len += (size_t)n;
    }
}

static json_t *nextJson(struct reader *r)
{
    char *line = nextLine(r);
    json_t *o = line != NULL ? json_loads(line, 0, NULL) : NULL;
    if (o == NULL) {
        fail_msg("stream: bad or missing line: %.200s", line ? line : "EOF");
    }
    free(line);
    return o;
}

static void sendLine(int fd, const char *line)
{
    assert_int_equal(tpdbdsSend(fd, line, strlen(line)), 0);
    assert_int_equal(tpdbdsSend(fd, "\n", 1), 0);
}

/* Reads a whole stream on r (request sent) into path; returns its size. */
static long long readStream(struct reader *r, const char *path)
{
    crypto_hash_sha256_state h;
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    json_t *o = nextJson(r);
    if (!json_is_true(json_object_get(o, "ok"))) {
        fail_msg("stream refused: %s", tpdbdsText(o));
    }
    assert_string_equal(json_string_value(json_object_get(o, "stream")),
                        "backup");
    long long announced = json_integer_value(json_object_get(o, "bytes"));
    json_decref(o);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    crypto_hash_sha256_init(&h);
    long long off = 0;
    int chunks = 0;
    for (;;) {
        o = nextJson(r);
        json_t *data = json_object_get(o, "data");
        if (data == NULL) {
            break;
        }
        assert_int_equal(json_integer_value(json_object_get(o, "offset")), off);
        unsigned char *bin = malloc(json_string_length(data));
        size_t len = 0;
        assert_int_equal(
            sodium_base642bin(bin, json_string_length(data),
                              json_string_value(data), json_string_length(data),
                              NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL),
            0);
        assert_true(len > 0 && len <= 64 * 1024);
        assert_int_equal(fwrite(bin, 1, len, f), len);
        crypto_hash_sha256_update(&h, bin, len);
        off += (long long)len;
        chunks++;
        free(bin);
        json_decref(o);
    }
    fclose(f);
    crypto_hash_sha256_final(&h, digest);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    if (!json_is_true(json_object_get(o, "done"))) {
        fail_msg("stream's last line: %s", tpdbdsText(o));
    }
    assert_int_equal(json_integer_value(json_object_get(o, "bytes")), off);
    assert_int_equal(announced, off);
    assert_string_equal(json_string_value(json_object_get(o, "sha256")), hex);
    json_decref(o);
    print_message("streamed %lld bytes in %d chunks, sha256 %s\n", off, chunks,
                  hex);
    return off;
}

static sqlite3_int64 scalarOf(sqlite3 *db, const char *sql, char *textOut)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    sqlite3_int64 v = sqlite3_column_int64(st, 0);
    if (textOut != NULL) {
        snprintf(textOut, 64, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return v;
}

/* The copy at path holds every row: integrity, one file, content. */
static void checkCopy(const char *path)
{
    char result[64];
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    scalarOf(db, "PRAGMA integrity_check", result);
    assert_string_equal(result, "ok");
    scalarOf(db, "PRAGMA journal_mode", result);
    assert_string_equal(result, "delete");
    assert_int_equal(scalarOf(db, "SELECT count(*) FROM big", NULL), rows);
    assert_int_equal(scalarOf(db,
                              "SELECT count(*) FROM big WHERE v = "
                              "printf('%01000d', id)",
                              NULL),
                     rows);
    sqlite3_close(db);
}

/* The copy's pages are the node's (after a checkpoint), but for page
 * 1's 100-byte header (journal mode, change counters). */
static void samePages(const char *copy)
{
    char path[HARNESS_PATH_MAX + 32];
    json_t *o = tpdbdsCall(&c, 0, "{\"action\":\"checkpoint\"}");
    assert_true(json_is_false(json_object_get(o, "busy")));
    json_decref(o);
    snprintf(path, sizeof path, "%s/n1/data.db", c.dir);
    size_t a, b;
    unsigned char *node = (unsigned char *)nodesReadFile(path, &a);
    unsigned char *mine = (unsigned char *)nodesReadFile(copy, &b);
    assert_int_equal(a, b);
    assert_memory_equal(node + 100, mine + 100, a - 100);
    tpdb_free(node);
    tpdb_free(mine);
}

/* No temporary file of a stream is left in the node's .tpdb/. */
static void noTempFiles(void)
{
    char path[HARNESS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/n1/.tpdb", c.dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "stream-backup-", 14) == 0) {
            fail_msg("left in .tpdb: %s", e->d_name);
        }
    }
    closedir(d);
}

static void testStream(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/streamed.db", c.dir);
    int fd = tpdbdsConnect(c.client[0]);
    assert_true(fd >= 0);
    struct reader r = {.fd = fd};
    sendLine(fd, "{\"action\":\"backup\",\"stream\":true}");
    long long size = readStream(&r, path);
    assert_true(size > 4000000);
    /* The connection goes on. */
    sendLine(fd, "{\"action\":\"status\"}");
    json_t *o = nextJson(&r);
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    close(fd);
    free(r.buf);
    checkCopy(path);
    samePages(path);
    noTempFiles();
    /* Malformed requests. */
    static const char *const bad[][2] = {
        {"{\"action\":\"backup\",\"stream\":1}",
         "stream must be true or false"},
        {"{\"action\":\"backup\",\"stream\":true,\"path\":\"/tmp/x\"}",
         "not both"},
        {"{\"action\":\"backup\",\"stream\":true,\"db\":\"nope.db\"}",
         "no database nope.db"},
    };
    for (size_t k = 0; k < 3; k++) {
        o = tpdbdsRequest(c.client[0], bad[k][0]);
        const char *e = json_string_value(json_object_get(o, "error"));
        if (e == NULL || strstr(e, bad[k][1]) == NULL) {
            fail_msg("%s -> %s", bad[k][0], tpdbdsText(o));
        }
        json_decref(o);
    }
}

static int nodeServes(void *arg)
{
    (void)arg;
    json_t *o = tpdbdsCall(&c, 0,
                           "{\"action\":\"propose\",\"sql\":\"INSERT INTO "
                           "big(id, v) VALUES(NULL, printf('%%01000d', "
                           "%lld))\"}",
                           rows + 1);
    int ok = json_is_true(json_object_get(o, "ok"));
    json_decref(o);
    rows += ok;
    return ok;
}

static void testDroppedMidStream(void **state)
{
    (void)state;
    char path[HARNESS_PATH_MAX + 32];
    for (int k = 0; k < 3; k++) {
        int fd = tpdbdsConnect(c.client[0]);
        assert_true(fd >= 0);
        struct reader r = {.fd = fd};
        sendLine(fd, "{\"action\":\"backup\",\"stream\":true}");
        json_decref(nextJson(&r)); /* the first line */
        json_decref(nextJson(&r)); /* one chunk */
        /* A reset, not a clean close, with most of the stream unread. */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        free(r.buf);
    }
    assert_int_equal(harnessPollUntil(nodeServes, NULL, WAIT_MS, 50), TPDB_OK);
    json_t *o = tpdbdsCall(&c, 0, "{\"action\":\"status\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    noTempFiles();
    snprintf(path, sizeof path, "%s/after-drop.db", c.dir);
    int fd = tpdbdsConnect(c.client[0]);
    struct reader r = {.fd = fd};
    sendLine(fd, "{\"action\":\"backup\",\"stream\":true}");
    readStream(&r, path);
    close(fd);
    free(r.buf);
}

struct run {
    char *out, *err;
    int status;
};

/* The shell at addr with input on stdin. */
static void shellRun(const char *addr, const char *input, struct run *r)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    const char *argv[] = {shellProg, addr, NULL};
    struct harness_proc *p;
    int status = 0;
    assert_int_equal(harnessSpawn(argv, NULL, c.dir, &p, errmsg), TPDB_OK);
    assert_int_equal(harnessProcWriteLine(p, input, WAIT_MS, errmsg), TPDB_OK);
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, WAIT_MS, &r->out, errmsg),
        TPDB_OK);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, WAIT_MS, &r->err, errmsg),
        TPDB_OK);
    assert_int_equal(harnessProcWait(p, WAIT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void runFree(struct run *r)
{
    tpdb_free(r->out);
    tpdb_free(r->err);
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A relay to the node that passes each connection's replies only up to
 * cut bytes, then closes it; or, with corrupt, changes one base64
 * character (one between two others) at or after byte corrupt. */
#define RELAY_CONNS 8

struct relay {
    unsigned port;
    int listen_fd;
    long long cut, corrupt;
    pthread_t thread;
    pthread_t conns[RELAY_CONNS]; /* one per connection (the shell keeps
                                     its first while it streams) */
    int fds[RELAY_CONNS];
    int nconns;
};

struct relayConn {
    struct relay *rl;
    int fd;
};

static int relayAlnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9');
}

static void relayOne(struct relay *rl, int down)
{
    int up = tpdbdsConnect(c.client[0]);
    char buf[65536];
    long long sent = 0;
    int changed = 0;
    while (up >= 0) {
        struct pollfd p[2] = {{.fd = down, .events = POLLIN},
                              {.fd = up, .events = POLLIN}};
        if (poll(p, 2, WAIT_MS) <= 0) {
            break;
        }
        if (p[0].revents != 0) {
            ssize_t n = recv(down, buf, sizeof buf, 0);
            if (n <= 0 || tpdbdsSend(up, buf, (size_t)n) != 0) {
                break;
            }
        }
        if (p[1].revents != 0) {
            ssize_t n = recv(up, buf, sizeof buf, 0);
            if (n <= 0) {
                break;
            }
            for (ssize_t i = 1; rl->corrupt > 0 && !changed && i + 1 < n; i++) {
                if (sent + i >= rl->corrupt && relayAlnum(buf[i - 1]) &&
                    relayAlnum(buf[i]) && relayAlnum(buf[i + 1])) {
                    buf[i] = buf[i] == 'A' ? 'B' : 'A';
                    changed = 1;
                }
            }
            if (rl->cut > 0 && sent + n > rl->cut) {
                n = (ssize_t)(rl->cut - sent);
            }
            if (n <= 0 || tpdbdsSend(down, buf, (size_t)n) != 0) {
                break;
            }
            sent += n;
            if (rl->cut > 0 && sent >= rl->cut) {
                break;
            }
        }
    }
    if (up >= 0) {
        close(up);
    }
    close(down);
}

static void *relayConnMain(void *arg)
{
    struct relayConn *rc = arg;
    relayOne(rc->rl, rc->fd);
    free(rc);
    return NULL;
}

static void *relayMain(void *arg)
{
    struct relay *rl = arg;
    int fd;
    while (rl->nconns < RELAY_CONNS &&
           (fd = accept(rl->listen_fd, NULL, NULL)) >= 0) {
        struct relayConn *rc = malloc(sizeof *rc);
        assert_non_null(rc);
        *rc = (struct relayConn){rl, fd};
        rl->fds[rl->nconns] = fd;
        assert_int_equal(
            pthread_create(&rl->conns[rl->nconns], NULL, relayConnMain, rc), 0);
        rl->nconns++;
    }
    return NULL;
}

static void relayStart(struct relay *rl)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rl->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(rl->listen_fd >= 0);
    assert_int_equal(bind(rl->listen_fd, (struct sockaddr *)&sin, sizeof sin),
                     0);
    assert_int_equal(listen(rl->listen_fd, 8), 0);
    assert_int_equal(getsockname(rl->listen_fd, (struct sockaddr *)&sin, &len),
                     0);
    rl->port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&rl->thread, NULL, relayMain, rl), 0);
}

/* After the shell exited, so every connection has ended or ends now. */
static void relayStop(struct relay *rl)
{
    shutdown(rl->listen_fd, SHUT_RDWR);
    pthread_join(rl->thread, NULL);
    for (int i = 0; i < rl->nconns; i++) {
        pthread_join(rl->conns[i], NULL);
    }
    close(rl->listen_fd);
}

/* The shell through a relay fails the backup to path and leaves no
 * file; its error says why (part). */
static void failsThrough(struct relay *rl, const char *path, const char *part)
{
    char addr[64], cmd[HARNESS_PATH_MAX + 64], partial[HARNESS_PATH_MAX + 64];
    struct run r;
    relayStart(rl);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", rl->port);
    snprintf(cmd, sizeof cmd, ".backup --local %s", path);
    shellRun(addr, cmd, &r);
    relayStop(rl);
    if (r.status == 0 || strstr(r.err, part) == NULL) {
        fail_msg("through the relay: status %d, stderr %s", r.status, r.err);
    }
    print_message("through the relay: %s", r.err);
    snprintf(partial, sizeof partial, "%s.partial", path);
    assert_false(exists(path));
    assert_false(exists(partial));
    runFree(&r);
}

static void testShellLocal(void **state)
{
    (void)state;
    char addr[64], path[HARNESS_PATH_MAX + 32], cmd[HARNESS_PATH_MAX + 64];
    struct run r;
    snprintf(addr, sizeof addr, "127.0.0.1:%u", c.client[0]);
    snprintf(path, sizeof path, "%s/shell-copy.db", c.dir);
    snprintf(cmd, sizeof cmd, ".backup --local %s", path);
    shellRun(addr, cmd, &r);
    if (r.status != 0 || strstr(r.out, "sha256 verified") == NULL) {
        fail_msg("shell: status %d, stdout %s, stderr %s", r.status, r.out,
                 r.err);
    }
    runFree(&r);
    checkCopy(path);
    /* The file exists now: refused, and left as it is. */
    size_t before, after;
    tpdb_free(nodesReadFile(path, &before));
    shellRun(addr, cmd, &r);
    assert_int_not_equal(r.status, 0);
    assert_non_null(strstr(r.err, "exists: give a new path"));
    runFree(&r);
    tpdb_free(nodesReadFile(path, &after));
    assert_int_equal(before, after);
    /* A relative path, from the shell's directory (the test's dir). */
    shellRun(addr, ".backup --local relative-copy.db", &r);
    assert_int_equal(r.status, 0);
    runFree(&r);
    snprintf(path, sizeof path, "%s/relative-copy.db", c.dir);
    checkCopy(path);
    /* Broken streams leave nothing. */
    struct relay cut = {.cut = 300000};
    snprintf(path, sizeof path, "%s/cut-copy.db", c.dir);
    failsThrough(&cut, path, "backup stream ended after");
    struct relay flip = {.corrupt = 200000};
    snprintf(path, sizeof path, "%s/flipped-copy.db", c.dir);
    failsThrough(&flip, path, "sha256");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testStream),
        cmocka_unit_test(testDroppedMidStream),
        cmocka_unit_test(testShellLocal),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
