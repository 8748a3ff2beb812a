/*
 * The full "hammer" load test of TrashPandaDB (docs: tpdb-server.md) on
 * real tpdbd processes, with plain SQLite measured in the same run:
 *   bench_hammer [--seconds 30] [--writers 20] [--nodes 3] [--kill-at S]
 *       [--restart-after 3] [--plain-seconds S] [--dir /tmp] [--tpdbd PATH]
 *       [--keep]
 * N tpdbd nodes on loopback (--peer and --client-peer, as the original
 * starts them; every node's --data-dir on disk, every commit fsynced by a
 * quorum); W writer threads, each sending `propose INSERT INTO hammer
 * VALUES('<w>_<seq>', w, seq, port)` on a new connection per request to
 * node (w + seq) % N (a refused connection counts as failed, no reply or
 * "outcome unknown" as unknown). At --kill-at seconds (default half of
 * --seconds; 0: never) the leader gets SIGKILL; --restart-after seconds later
 * it is started again on its directory. Then every node must hold every
 * acknowledged id, no id of a write that failed, and the same count
 * (checked until 120 s pass). Plain SQLite: the same W threads inserting
 * the same rows into one WAL file with synchronous=FULL, each with its own
 * connection, for --plain-seconds (default --seconds). Prints acknowledged
 * writes/s of both and their ratio; exits 1 if the check fails.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "base/base.h"
#include "bench/bench_util.h"

#define MAX_NODES 7
#define MAX_WRITERS 256
#define IO_MS 30000
#define READY_MS 60000
#define CHECK_MS 120000

extern char **environ;

enum { NOT_SENT = 0, ACKED, FAILED, UNKNOWN };

struct options {
    int seconds, writers, nodes, restartAfter, plainSeconds, keep;
    double killAt;
    const char *parent;
    char tpdbd[PATH_MAX];
};

struct node {
    int raft, client;
    pid_t pid;
    char dir[PATH_MAX + 16];
};

static struct options opt;
static struct node nodes[MAX_NODES];
static char root[PATH_MAX];

struct writer {
    int w;
    uint64_t deadline;
    int n;         /* writes sent */
    char *outcome; /* per seq (1-based) */
    size_t cap;
};

static uint64_t nowMs(void)
{
    return tpdbNowMs();
}

/* ---------------------------------------------------------------- nodes */

/* Appends a formatted argument to argv, its text in pool[*argc]. */
static void push(char **argv,
                 char (*pool)[128],
                 int *argc,
                 const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

static void push(char **argv,
                 char (*pool)[128],
                 int *argc,
                 const char *fmt,
                 ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pool[*argc], sizeof pool[0], fmt, ap);
    va_end(ap);
    argv[*argc] = pool[*argc];
    (*argc)++;
}

static int startNode(int i)
{
    char *argv[64];
    static char pool[64][128];
    int argc = 0;
    posix_spawn_file_actions_t fa;
    char log[PATH_MAX + 32];
    push(argv, pool, &argc, "%s", opt.tpdbd);
    push(argv, pool, &argc, "--node-id=n%d", i + 1);
    push(argv, pool, &argc, "--raft=127.0.0.1:%d", nodes[i].raft);
    push(argv, pool, &argc, "--client=127.0.0.1:%d", nodes[i].client);
    push(argv, pool, &argc, "--data-dir=%s", nodes[i].dir);
    push(argv, pool, &argc, "--ready-ms=%d", READY_MS);
    for (int k = 0; k < opt.nodes; k++) {
        if (k != i) {
            push(argv, pool, &argc, "--peer=n%d=127.0.0.1:%d", k + 1,
                 nodes[k].raft);
            push(argv, pool, &argc, "--client-peer=n%d=127.0.0.1:%d", k + 1,
                 nodes[k].client);
        }
    }
    argv[argc] = NULL;
    snprintf(log, sizeof log, "%s/n%d.log", root, i + 1);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&nodes[i].pid, opt.tpdbd, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "bench_hammer: start %s: %s\n", opt.tpdbd,
                strerror(rc));
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- client */

static int connectTo(int port)
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

/* One request on a new connection; the parsed reply or NULL (caller
 * json_decrefs). *delivered (if not NULL) says whether the connection was
 * made: a refused one cannot have executed anything. */
static json_t *requestAt(int port, const char *line, int *delivered)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = NULL;
    uint64_t deadline = nowMs() + IO_MS;
    json_t *o = NULL;
    int fd = connectTo(port);
    if (delivered != NULL) {
        *delivered = fd >= 0;
    }
    if (fd < 0) {
        return NULL;
    }
    size_t l = strlen(line);
    if (send(fd, line, l, MSG_NOSIGNAL) != (ssize_t)l ||
        send(fd, "\n", 1, MSG_NOSIGNAL) != 1 || (buf = malloc(cap)) == NULL) {
        close(fd);
        return NULL;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = nowMs();
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0) {
            break;
        }
        if (len + 1 == cap) {
            char *more = realloc(buf, cap * 2);
            if (more == NULL) {
                break;
            }
            buf = more;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0) {
            break;
        }
        /* Only the new bytes can hold the reply's newline. */
        int done = memchr(buf + len, '\n', (size_t)n) != NULL;
        len += (size_t)n;
        buf[len] = '\0';
        if (done) {
            o = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
            break;
        }
    }
    free(buf);
    close(fd);
    return o;
}

static json_t *request(int port, const char *line)
{
    return requestAt(port, line, NULL);
}

static int isLeader(int i)
{
    json_t *o = request(nodes[i].client, "{\"action\":\"status\"}");
    const char *r = json_string_value(json_object_get(o, "role"));
    int yes = r != NULL && strcmp(r, "Leader") == 0;
    json_decref(o);
    return yes;
}

static int findLeader(int timeoutMs)
{
    uint64_t deadline = nowMs() + (uint64_t)timeoutMs;
    while (nowMs() < deadline) {
        for (int i = 0; i < opt.nodes; i++) {
            if (nodes[i].pid > 0 && isLeader(i)) {
                return i;
            }
        }
        usleep(50 * 1000);
    }
    return -1;
}

static int outcomeOf(json_t *o, int delivered)
{
    const char *e = json_string_value(json_object_get(o, "error"));
    if (json_is_true(json_object_get(o, "ok"))) {
        return ACKED;
    }
    if (!delivered) {
        return FAILED;
    }
    if (o == NULL || (e != NULL && (strncmp(e, "outcome unknown", 15) == 0 ||
                                    strncmp(e, "no reply", 8) == 0))) {
        return UNKNOWN;
    }
    return FAILED;
}

static int grow(struct writer *wr, int seq)
{
    if ((size_t)seq < wr->cap) {
        return 0;
    }
    size_t cap = wr->cap ? wr->cap * 2 : 4096;
    char *p = realloc(wr->outcome, cap);
    if (p == NULL) {
        return -1;
    }
    memset(p + wr->cap, 0, cap - wr->cap);
    wr->outcome = p;
    wr->cap = cap;
    return 0;
}

/* Says why the first few writes failed (a refused connection or the
 * error reply), so that failures without a fault can be told apart. */
static void noteFailure(int w, int seq, json_t *o, int delivered)
{
    static atomic_int shown;
    const char *e = json_string_value(json_object_get(o, "error"));
    if (atomic_fetch_add(&shown, 1) < 5) {
        fprintf(stderr, "  failed write %d_%d: %s\n", w, seq,
                !delivered  ? "connection refused"
                : e != NULL ? e
                            : "no JSON reply");
    }
}

static void *tpdbdWriter(void *arg)
{
    struct writer *wr = arg;
    char line[256];
    while (nowMs() < wr->deadline) {
        int seq = wr->n + 1;
        if (grow(wr, seq) != 0) {
            break;
        }
        wr->n = seq;
        int port = nodes[(wr->w + seq) % opt.nodes].client;
        snprintf(line, sizeof line,
                 "{\"action\":\"propose\",\"sql\":\"INSERT INTO hammer "
                 "VALUES(?, ?, ?, ?)\",\"params\":[\"%d_%d\",%d,%d,%d]}",
                 wr->w, seq, wr->w, seq, port);
        int delivered = 0;
        json_t *o = requestAt(port, line, &delivered);
        wr->outcome[seq] = (char)outcomeOf(o, delivered);
        if (wr->outcome[seq] == FAILED) {
            noteFailure(wr->w, seq, o, delivered);
        }
        json_decref(o);
    }
    return NULL;
}

/* ---------------------------------------------------------------- check */

/* Node i holds every acknowledged id and no failed one; *count gets its
 * row count. Returns 1, 0 (why set), or -1 if the node did not answer. */
static int nodeMatches(struct writer *ws,
                       int i,
                       long long *count,
                       char *why,
                       size_t size)
{
    json_t *o = request(nodes[i].client,
                        "{\"action\":\"local_query\",\"sql\":\"SELECT writer, "
                        "seq FROM hammer\"}");
    json_t *rows = json_object_get(o, "rows"), *row;
    size_t r;
    long long missing = 0, extra = 0, failedSeen = 0;
    if (rows == NULL) {
        json_decref(o);
        snprintf(why, size, "n%d does not answer", i + 1);
        return -1;
    }
    char **seen = calloc((size_t)opt.writers, sizeof *seen);
    for (int w = 0; w < opt.writers; w++) {
        seen[w] = calloc(ws[w].cap + 1, 1);
    }
    json_array_foreach(rows, r, row)
    {
        long long w = json_integer_value(json_array_get(row, 0));
        long long seq = json_integer_value(json_array_get(row, 1));
        if (w < 0 || w >= opt.writers || seq < 1 || seq > ws[w].n) {
            extra++;
        } else {
            seen[w][seq] = 1;
        }
    }
    for (int w = 0; w < opt.writers; w++) {
        for (int seq = 1; seq <= ws[w].n; seq++) {
            missing += ws[w].outcome[seq] == ACKED && !seen[w][seq];
            failedSeen += ws[w].outcome[seq] == FAILED && seen[w][seq];
        }
        free(seen[w]);
    }
    free(seen);
    *count = (long long)json_array_size(rows);
    json_decref(o);
    snprintf(why, size,
             "n%d: %lld rows, %lld acknowledged missing, %lld failed present, "
             "%lld unknown ids",
             i + 1, *count, missing, failedSeen, extra);
    return missing == 0 && failedSeen == 0 && extra == 0;
}

static int checkAll(struct writer *ws, long long *count, char *why, size_t size)
{
    uint64_t deadline = nowMs() + CHECK_MS;
    for (;;) {
        long long first = -1, c = 0;
        int ok = 1;
        for (int i = 0; ok && i < opt.nodes; i++) {
            ok = nodeMatches(ws, i, &c, why, size) == 1;
            if (ok && first >= 0 && c != first) {
                snprintf(why, size, "n%d has %lld rows, n1 %lld", i + 1, c,
                         first);
                ok = 0;
            }
            first = c;
        }
        if (ok) {
            *count = first;
            return 0;
        }
        if (nowMs() >= deadline) {
            return -1;
        }
        usleep(200 * 1000);
    }
}

/* ---------------------------------------------------------------- plain */

struct plainWriter {
    int w;
    const char *path;
    uint64_t deadline;
    long long acked, failed;
    char error[128]; /* the first failure's message */
};

static void *plainWriter(void *arg)
{
    struct plainWriter *pw = arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char id[32];
    if (sqlite3_open(pw->path, &db) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 10000) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO hammer VALUES(?, ?, ?, ?)", -1, &st,
                           NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_hammer: plain writer: %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    for (int seq = 1; nowMs() < pw->deadline; seq++) {
        snprintf(id, sizeof id, "%d_%d", pw->w, seq);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, pw->w);
        sqlite3_bind_int(st, 3, seq);
        sqlite3_bind_int(st, 4, 0);
        if (sqlite3_step(st) == SQLITE_DONE) {
            pw->acked++;
        } else if (pw->failed++ == 0) {
            snprintf(pw->error, sizeof pw->error, "%s", sqlite3_errmsg(db));
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

static int runPlain(double *rate, long long *failed, char *error)
{
    static struct plainWriter pws[MAX_WRITERS];
    pthread_t th[MAX_WRITERS];
    char path[PATH_MAX + 16];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/plain.db", root);
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; CREATE TABLE hammer(id TEXT "
                     "PRIMARY KEY, writer INTEGER NOT NULL, seq INTEGER NOT "
                     "NULL, port INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_hammer: plain: %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_close(db);
    uint64_t start = nowMs();
    long long acked = 0;
    *failed = 0;
    for (int w = 0; w < opt.writers; w++) {
        pws[w] = (struct plainWriter){
            w, path, start + 1000ull * opt.plainSeconds, 0, 0, ""};
        pthread_create(&th[w], NULL, plainWriter, &pws[w]);
    }
    for (int w = 0; w < opt.writers; w++) {
        pthread_join(th[w], NULL);
        acked += pws[w].acked;
        *failed += pws[w].failed;
        if (error[0] == '\0' && pws[w].error[0] != '\0') {
            snprintf(error, 128, "%s", pws[w].error);
        }
    }
    *rate = (double)acked * 1000.0 / (double)(nowMs() - start);
    return 0;
}

/* ---------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_hammer [--seconds 30] [--writers 20] [--nodes 3] "
            "[--kill-at S] [--restart-after 3] [--plain-seconds S] "
            "[--dir /tmp] [--tpdbd PATH] [--keep]\n");
    exit(2);
}

static void parseOptions(int argc, char **argv)
{
    static const struct option longs[] = {
        {"seconds", required_argument, NULL, 's'},
        {"writers", required_argument, NULL, 'w'},
        {"nodes", required_argument, NULL, 'n'},
        {"kill-at", required_argument, NULL, 'k'},
        {"restart-after", required_argument, NULL, 'r'},
        {"plain-seconds", required_argument, NULL, 'p'},
        {"dir", required_argument, NULL, 'd'},
        {"tpdbd", required_argument, NULL, 't'},
        {"keep", no_argument, NULL, 'K'},
        {NULL, 0, NULL, 0}};
    int c;
    opt = (struct options){30, 20, 3, 3, -1, 0, -1, "/tmp", ""};
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
            case 's':
                opt.seconds = atoi(optarg);
                break;
            case 'w':
                opt.writers = atoi(optarg);
                break;
            case 'n':
                opt.nodes = atoi(optarg);
                break;
            case 'k':
                opt.killAt = atof(optarg);
                break;
            case 'r':
                opt.restartAfter = atoi(optarg);
                break;
            case 'p':
                opt.plainSeconds = atoi(optarg);
                break;
            case 'd':
                opt.parent = optarg;
                break;
            case 't':
                snprintf(opt.tpdbd, sizeof opt.tpdbd, "%s", optarg);
                break;
            case 'K':
                opt.keep = 1;
                break;
            default:
                usage();
        }
    }
    if (opt.seconds < 1 || opt.writers < 1 || opt.writers > MAX_WRITERS ||
        opt.nodes < 1 || opt.nodes > MAX_NODES || opt.restartAfter < 0) {
        usage();
    }
    if (opt.killAt < 0) {
        opt.killAt = opt.seconds / 2.0;
    }
    if (opt.plainSeconds < 0) {
        opt.plainSeconds = opt.seconds;
    }
    if (opt.tpdbd[0] == '\0') {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
        }
        snprintf(opt.tpdbd, sizeof opt.tpdbd, "%.*s/../shell/tpdbd",
                 PATH_MAX - 20, self);
    }
}

static int setupCluster(char *errmsg)
{
    int ports[2 * MAX_NODES];
    snprintf(root, sizeof root, "%s/tpdb-hammer-XXXXXX", opt.parent);
    if (mkdtemp(root) == NULL) {
        snprintf(errmsg, TPDB_ERRMSG_SIZE, "mkdtemp %.300s: %s", root,
                 strerror(errno));
        return -1;
    }
    if (benchPickPorts(ports, 2 * opt.nodes, errmsg) != 0) {
        return -1;
    }
    for (int i = 0; i < opt.nodes; i++) {
        nodes[i].raft = ports[2 * i];
        nodes[i].client = ports[2 * i + 1];
        snprintf(nodes[i].dir, sizeof nodes[i].dir, "%s/n%d", root, i + 1);
    }
    for (int i = 0; i < opt.nodes; i++) {
        if (startNode(i) != 0) {
            return -1;
        }
    }
    if (findLeader(READY_MS) < 0) {
        snprintf(errmsg, TPDB_ERRMSG_SIZE,
                 "no leader within %d ms (logs: %.300s)", READY_MS, root);
        return -1;
    }
    json_t *o = request(nodes[findLeader(READY_MS)].client,
                        "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                        "hammer(id TEXT PRIMARY KEY, writer INTEGER NOT NULL, "
                        "seq INTEGER NOT NULL, port INTEGER NOT NULL)\"}");
    int ok = json_is_true(json_object_get(o, "ok"));
    json_decref(o);
    if (!ok) {
        snprintf(errmsg, TPDB_ERRMSG_SIZE, "CREATE TABLE hammer failed");
        return -1;
    }
    return 0;
}

/* Kills the leader at killAt and restarts it restartAfter later; runs on
 * the main thread while the writers write. */
static void chaos(uint64_t start,
                  int *killed,
                  double *killedAt,
                  double *restartedAt)
{
    *killed = -1;
    if (opt.killAt <= 0 || opt.killAt >= opt.seconds) {
        return;
    }
    while (nowMs() < start + (uint64_t)(opt.killAt * 1000)) {
        usleep(10 * 1000);
    }
    int leader = findLeader(5000);
    if (leader < 0) {
        return;
    }
    kill(nodes[leader].pid, SIGKILL);
    waitpid(nodes[leader].pid, NULL, 0);
    nodes[leader].pid = 0;
    *killed = leader;
    *killedAt = (double)(nowMs() - start) / 1000.0;
    usleep((useconds_t)opt.restartAfter * 1000000u);
    if (startNode(leader) == 0) {
        *restartedAt = (double)(nowMs() - start) / 1000.0;
    }
}

static void stopCluster(void)
{
    for (int i = 0; i < opt.nodes; i++) {
        benchKill(nodes[i].pid);
        nodes[i].pid = 0;
    }
}

int main(int argc, char **argv)
{
    static struct writer ws[MAX_WRITERS];
    pthread_t th[MAX_WRITERS];
    char errmsg[TPDB_ERRMSG_SIZE], why[512] = "";
    int killed = -1, rc = 0;
    double killedAt = 0, restartedAt = 0, plainRate = 0;
    long long sent = 0, acked = 0, failed = 0, unknown = 0, count = 0;
    long long plainFailed = 0;
    char plainError[128] = "";
    parseOptions(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (setupCluster(errmsg) != 0) {
        fprintf(stderr, "bench_hammer: %s\n", errmsg);
        stopCluster();
        return 1;
    }
    uint64_t start = nowMs();
    for (int w = 0; w < opt.writers; w++) {
        ws[w] = (struct writer){w, start + 1000ull * opt.seconds, 0, NULL, 0};
        pthread_create(&th[w], NULL, tpdbdWriter, &ws[w]);
    }
    chaos(start, &killed, &killedAt, &restartedAt);
    for (int w = 0; w < opt.writers; w++) {
        pthread_join(th[w], NULL);
    }
    double elapsed = (double)(nowMs() - start) / 1000.0;
    for (int w = 0; w < opt.writers; w++) {
        sent += ws[w].n;
        for (int seq = 1; seq <= ws[w].n; seq++) {
            acked += ws[w].outcome[seq] == ACKED;
            failed += ws[w].outcome[seq] == FAILED;
            unknown += ws[w].outcome[seq] == UNKNOWN;
        }
    }
    int checked = checkAll(ws, &count, why, sizeof why);
    stopCluster();
    if (runPlain(&plainRate, &plainFailed, plainError) != 0) {
        rc = 1;
    }
    printf("hammer: %d tpdbd nodes (on disk, %s), %d writers, %d s", opt.nodes,
           opt.parent, opt.writers, opt.seconds);
    if (killed >= 0) {
        printf(", SIGKILL of the leader n%d at %.1f s, restarted at %.1f s",
               killed + 1, killedAt, restartedAt);
    }
    printf(
        "\n  tpdbd:        %lld writes sent, %lld acknowledged, %lld failed, "
        "%lld unknown in %.1f s: %.0f acknowledged writes/s\n",
        sent, acked, failed, unknown, elapsed, (double)acked / elapsed);
    printf(
        "  plain SQLite: WAL, synchronous=FULL, %d threads on one file, "
        "%d s: %.0f writes/s (%lld failed%s%s)\n",
        opt.writers, opt.plainSeconds, plainRate, plainFailed,
        plainError[0] ? ": " : "", plainError);
    printf(
        "  ratio tpdbd/plain: %.2f; TrashPandaDB published 4,289/s "
        "(3 in-memory nodes, no faults)\n",
        plainRate > 0 ? ((double)acked / elapsed) / plainRate : 0.0);
    if (checked == 0) {
        printf(
            "  check: every acknowledged id on all %d nodes, no failed "
            "id, %lld rows each: PASS\n",
            opt.nodes, count);
    } else {
        printf("  check: FAIL: %s (logs in %s)\n", why, root);
        rc = 1;
        opt.keep = 1;
    }
    for (int w = 0; w < opt.writers; w++) {
        free(ws[w].outcome);
    }
    if (!opt.keep) {
        benchRemoveTree(root);
    }
    return rc;
}
