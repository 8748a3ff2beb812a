/*
 * tpdbd: the standalone tpdb replica daemon, compatible with TrashPandaDB
 * 0.8's server (flags and JSON-lines client API; README "tpdbd"). It links
 * libtpdbraft like any application: tpdb_register(), then DATA_DIR/data.db
 * opened through the tpdb VFS with this node's cluster URI parameters, so
 * a directory tpdbd serves is the node directory the extension uses.
 *
 * Threads: main (start-up, accepting clients, shutdown), one per client
 * connection (tpdbd_server.c), one housekeeping thread that records a new
 * leader's client address in tpdbd's metadata database, and the library's
 * own Raft thread. SIGTERM/SIGINT: stop accepting, finish the requests in
 * progress, hand leadership to another voter, stop the node, exit 0.
 * SIGHUP: the housekeeping thread rereads --client-tokens.
 */
#include "shell/tpdbd.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ext/tpdb.h"
#include "shell/tpdbd_admin.h"
#include "shell/tpdbd_api.h"
#include "shell/tpdbd_auth.h"
#include "shell/tpdbd_dns.h"
#include "shell/tpdbd_forward.h"
#include "shell/tpdbd_group.h"
#include "shell/tpdbd_log.h"
#include "shell/tpdbd_meta.h"
#include "shell/tpdbd_server.h"

#define HOUSEKEEPING_MS 200
#define JOIN_RETRY_MS 200

static int wakePipe[2] = {-1, -1};
/* The signal mask main's waits run with: the process's own, which lets
 * SIGTERM, SIGINT and SIGHUP in; everywhere else they stay blocked. */
static sigset_t waitMask;
/* Set by SIGHUP; the housekeeping thread rereads --client-tokens. An
 * atomic, not a volatile sig_atomic_t: the handler and that thread run on
 * different threads (lock-free atomics are safe in a handler). */
static atomic_int reloadWanted;

static void onHangup(int sig)
{
    (void)sig;
    atomic_store(&reloadWanted, 1);
}

static void onSignal(int sig)
{
    int saved = errno;
    char c = (char)sig;
    if (write(wakePipe[1], &c, 1) < 0) {
        /* The pipe is full: a wake-up is pending anyway. */
    }
    errno = saved;
}

static int setupSignals(void)
{
    struct sigaction sa;
    if (pipe2(wakePipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = onSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 ||
        sigaction(SIGINT, &sa, NULL) != 0) {
        return -1;
    }
    sa.sa_handler = onHangup;
    if (sigaction(SIGHUP, &sa, NULL) != 0) {
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Blocked from here on, so every thread started later (the node's,
     * libuv's and raft's, the server's) inherits the block and the signals
     * reach the main thread only, in the waits that let them in
     * (tpdbdServerRun, the DNS wait: ppoll with waitMask). A signal handed
     * to a thread blocked in a call ThreadSanitizer does not intercept
     * (raft's raw io_getevents) ran its handler only when that call
     * returned, sometimes never: under TSan a SIGHUP or SIGTERM was then
     * lost. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    return pthread_sigmask(SIG_BLOCK, &block, &waitMask) == 0 ? 0 : -1;
}

json_t *tpdbdStatus(struct tpdbd *d)
{
    char *text = NULL;
    json_t *st = NULL;
    if (d->control != NULL && tpdb_status(d->control, &text) == SQLITE_OK) {
        st = json_loads(text, 0, NULL);
    }
    sqlite3_free(text);
    return st;
}

static int rmEntry(const char *path,
                   const struct stat *sb,
                   int flag,
                   struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) {
        tpdbdLog(TPDBD_WARN, "remove %s: %s", path, strerror(errno));
    }
    return 0;
}

/* The node directory: --data-dir (created if missing) or a new temporary
 * one. */
static int setupDir(struct tpdbd *d, int *temp)
{
    *temp = d->cfg.data_dir[0] == '\0';
    if (*temp) {
        const char *tmp = getenv("TMPDIR");
        snprintf(d->dir, sizeof d->dir, "%s/tpdbd-XXXXXX",
                 tmp != NULL && tmp[0] ? tmp : "/tmp");
        if (mkdtemp(d->dir) == NULL) {
            tpdbdLog(TPDBD_ERROR, "mkdtemp %s: %s", d->dir, strerror(errno));
            return -1;
        }
        tpdbdLog(TPDBD_WARN,
                 "no --data-dir: using temporary directory %s, removed at "
                 "exit (nothing survives a restart)",
                 d->dir);
        return 0;
    }
    snprintf(d->dir, sizeof d->dir, "%s", d->cfg.data_dir);
    for (char *p = d->dir + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(d->dir, 0755);
            *p = '/';
        }
    }
    if (mkdir(d->dir, 0755) != 0 && errno != EEXIST) {
        tpdbdLog(TPDBD_ERROR, "--data-dir %s: %s", d->dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Asks the member at the --join client address for its Raft address (the
 * library's join protocol then finds the leader from there). */
static int joinTarget(struct tpdbd *d, char *raft, size_t size)
{
    unsigned wait = d->cfg.ready_ms ? d->cfg.ready_ms : 15000;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long deadline = (long long)ts.tv_sec * 1000 + wait;
    char err[256] = "", line[160];
    snprintf(line, sizeof line, "{\"action\":\"status\"%s%s%s}",
             d->node_token[0] ? ",\"token\":\"" : "", d->node_token,
             d->node_token[0] ? "\"" : "");
    for (;;) {
        char *reply = NULL;
        if (tpdbdForward(d->cfg.join, line, 5000, &reply, err, sizeof err) ==
            0) {
            json_t *o = json_loads(reply, 0, NULL);
            const char *addr =
                json_string_value(json_object_get(o, "raft_addr"));
            const char *why = json_string_value(json_object_get(o, "error"));
            snprintf(raft, size, "%s", addr != NULL ? addr : "");
            snprintf(err, sizeof err, "%s",
                     why != NULL ? why : "its status names no raft_addr");
            json_decref(o);
            free(reply);
            if (raft[0] != '\0') {
                return 0;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((long long)ts.tv_sec * 1000 >= deadline) {
            tpdbdLog(TPDBD_ERROR, "--join %s: %s", d->cfg.join, err);
            return -1;
        }
        usleep(JOIN_RETRY_MS * 1000);
    }
}

static void appendf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void appendf(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

/* Appends "&name=" and value, percent-encoding all but [A-Za-z0-9/._-]
 * (a path may hold '&' or '#'). */
static void appendParam(char *q, size_t size, const char *name, const char *v)
{
    appendf(q, size, "&%s=", name);
    for (; *v != '\0'; v++) {
        unsigned char ch = (unsigned char)*v;
        if (isalnum(ch) || strchr("/._-", ch) != NULL) {
            appendf(q, size, "%c", ch);
        } else {
            appendf(q, size, "%%%02X", ch);
        }
    }
}

/* The URI query every connection of this node carries. Peers are sorted by
 * raft id so that every node bootstraps the same configuration. */
static int uriQuery(struct tpdbd *d, char *q, size_t size)
{
    const struct tpdbd_config *c = &d->cfg;
    char raft[TPDBD_ADDR_MAX];
    uint64_t last = 0;
    snprintf(q, size, "vfs=tpdb&node=%llu&bind=%s",
             (unsigned long long)c->raft_id, c->raft_addr);
    if (c->join[0] != '\0') {
        if (joinTarget(d, raft, sizeof raft) != 0) {
            return -1;
        }
        appendf(q, size, "&join=%s", raft);
    } else {
        appendf(q, size, "&peers=");
        for (unsigned k = 0; k <= c->npeers; k++) {
            /* The smallest raft id above last, self included. */
            uint64_t best = c->raft_id > last ? c->raft_id : UINT64_MAX;
            const char *addr = c->raft_addr;
            for (unsigned i = 0; i < c->nmembers; i++) {
                const struct tpdbd_member *m = &c->members[i];
                if (m->raft[0] && m->raft_id > last && m->raft_id < best) {
                    best = m->raft_id;
                    addr = m->raft;
                }
            }
            appendf(q, size, "%s%llu@%s", k ? "," : "",
                    (unsigned long long)best, addr);
            last = best;
        }
    }
    if (c->election_ms) {
        appendf(q, size, "&election_ms=%u", c->election_ms);
    }
    if (c->ready_ms) {
        appendf(q, size, "&ready_ms=%u", c->ready_ms);
    }
    if (c->commit_ms) {
        appendf(q, size, "&commit_ms=%u", c->commit_ms);
    }
    if (c->key_file[0] != '\0') {
        appendParam(q, size, "key_file", c->key_file);
    }
    if (c->key_file_next[0] != '\0') {
        appendParam(q, size, "key_file_next", c->key_file_next);
    }
    if (c->insecure) {
        appendf(q, size, "&insecure=1");
    }
    return 0;
}

struct housekeeping {
    struct tpdbd *d;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int stop;
};

/* How many connections this node keeps to the leader for forwarded
 * requests when `others` other members may forward too: TPDBD_FWD_KEPT_MAX,
 * fewer when they together would hold more than half of --max-clients
 * (taken to be the leader's too: each kept connection is one of its
 * clients). */
static unsigned forwardConnections(const struct tpdbd *d, unsigned others)
{
    unsigned n = d->cfg.max_clients / (2 * (others > 0 ? others : 1));
    return n < 1 ? 1 : n > TPDBD_FWD_KEPT_MAX ? TPDBD_FWD_KEPT_MAX : n;
}

/* A leader records its row in tpdbd's metadata once per term, so that
 * followers can forward writes to it. st: the node's status. */
static void registerIfLeader(struct tpdbd *d,
                             json_t *st,
                             long long *registeredTerm)
{
    char err[512];
    const char *role = json_string_value(json_object_get(st, "role"));
    long long term = json_integer_value(json_object_get(st, "term"));
    if (role != NULL && strcmp(role, "leader") == 0 &&
        term != *registeredTerm) {
        int rc = tpdbdMetaRegister(d, err, sizeof err);
        if (rc == SQLITE_OK) {
            *registeredTerm = term;
            tpdbdLog(TPDBD_INFO, "leader in term %lld", term);
        } else {
            tpdbdLog(TPDBD_DEBUG, "recording the leader: %s", err);
        }
    }
}

/* Bounds the kept forward connections by the members the cluster has
 * now (st: the node's status), not only those of --peer: nodes added
 * with --join forward too. */
static void sizeForwards(struct tpdbd *d, json_t *st)
{
    size_t members = json_array_size(json_object_get(st, "members"));
    unsigned others = members > 1 ? (unsigned)members - 1 : 0;
    if (others < d->cfg.nmembers) {
        others = d->cfg.nmembers;
    }
    tpdbdForwardPoolSetMax(d->forwards, forwardConnections(d, others));
}

/* Every node tells the leader its string id and client address (action
 * join, forwarded from a follower) until the cluster records them, so that
 * other nodes can name it and forward to it, and clients learn where each
 * member answers, without --client-peer. The leader writes a row only if
 * it differs from what it has. */
static void announceSelf(struct tpdbd *d, int *done)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "action", "join", "node_id",
                          d->cfg.node_id, "raft_addr", d->cfg.raft_addr,
                          "client_addr", d->client_addr);
    tpdbdAuthNodeToken(d, o);
    char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    char *reply = line != NULL ? tpdbdHandle(d, line, strlen(line)) : NULL;
    json_decref(o);
    o = reply != NULL ? json_loads(reply, 0, NULL) : NULL;
    if (json_is_true(json_object_get(o, "ok"))) {
        *done = 1;
        tpdbdLog(TPDBD_INFO, "the cluster knows node %s at client address %s",
                 d->cfg.node_id, d->client_addr);
    } else {
        tpdbdLog(TPDBD_DEBUG, "announcing the join: %s",
                 reply != NULL ? reply : "out of memory");
    }
    json_decref(o);
    free(reply);
    free(line);
}

/* A node started with --role asks the leader (action assign, forwarded)
 * for that role once it sees itself as a member with another one (a join
 * makes a node a voter first). Done once per run: a role an operator
 * assigns later is theirs to keep. */
static void keepRole(struct tpdbd *d, int *done)
{
    json_t *st = tpdbdStatus(d);
    const char *state = json_string_value(json_object_get(st, "role"));
    const char *have = NULL;
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        if ((uint64_t)json_integer_value(json_object_get(m, "id")) ==
            d->cfg.raft_id) {
            have = json_string_value(json_object_get(m, "role"));
        }
    }
    if (have != NULL && strcmp(have, d->cfg.role) == 0) {
        *done = 1;
    } else if (have != NULL && state != NULL && strcmp(state, "leader") != 0) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "action", "assign", "node_id",
                              d->cfg.node_id, "role", d->cfg.role);
        tpdbdAuthNodeToken(d, o);
        char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        char *reply = line != NULL ? tpdbdHandle(d, line, strlen(line)) : NULL;
        json_t *r = reply != NULL ? json_loads(reply, 0, NULL) : NULL;
        if (json_is_true(json_object_get(r, "ok"))) {
            *done = 1;
            tpdbdLog(TPDBD_INFO, "node %s is now a %s (--role)", d->cfg.node_id,
                     d->cfg.role);
        } else {
            tpdbdLog(TPDBD_DEBUG, "asking for role %s: %s", d->cfg.role,
                     reply != NULL ? reply : "out of memory");
        }
        json_decref(r);
        json_decref(o);
        free(reply);
        free(line);
    }
    json_decref(st);
}

static void *housekeepingThread(void *arg)
{
    struct housekeeping *h = arg;
    long long registeredTerm = -1;
    int announced = 0;
    int roleDone = 0;
    pthread_mutex_lock(&h->mutex);
    while (!h->stop) {
        pthread_mutex_unlock(&h->mutex);
        json_t *st = tpdbdStatus(h->d);
        registerIfLeader(h->d, st, &registeredTerm);
        if (st != NULL) {
            sizeForwards(h->d, st);
        }
        json_decref(st);
        if (atomic_exchange(&reloadWanted, 0) != 0) {
            tpdbdAuthReload(h->d);
        }
        if (!announced) {
            announceSelf(h->d, &announced);
        }
        if (!roleDone) {
            keepRole(h->d, &roleDone);
        }
        pthread_mutex_lock(&h->mutex);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += HOUSEKEEPING_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (!h->stop) {
            pthread_cond_timedwait(&h->cond, &h->mutex, &until);
        }
    }
    pthread_mutex_unlock(&h->mutex);
    return NULL;
}

static int housekeepingStart(struct housekeeping *h, struct tpdbd *d)
{
    memset(h, 0, sizeof *h);
    h->d = d;
    pthread_mutex_init(&h->mutex, NULL);
    pthread_cond_init(&h->cond, NULL);
    return pthread_create(&h->thread, NULL, housekeepingThread, h) == 0 ? 0
                                                                        : -1;
}

static void housekeepingStop(struct housekeeping *h)
{
    pthread_mutex_lock(&h->mutex);
    h->stop = 1;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->mutex);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mutex);
}

/* The client address other nodes forward to: 0.0.0.0 means every
 * interface, reachable at the Raft address's host. */
static void advertiseClient(struct tpdbd *d)
{
    const char *port = strrchr(d->cfg.client_listen, ':');
    const char *colon = strrchr(d->cfg.raft_addr, ':');
    if (strncmp(d->cfg.client_listen, "0.0.0.0:", 8) == 0) {
        snprintf(d->client_addr, sizeof d->client_addr, "%.*s%s",
                 (int)(colon - d->cfg.raft_addr), d->cfg.raft_addr, port);
    } else {
        snprintf(d->client_addr, sizeof d->client_addr, "%s",
                 d->cfg.client_listen);
    }
}

static int startNode(struct tpdbd *d)
{
    char query[8192], err[1024];
    if (uriQuery(d, query, sizeof query) != 0) {
        return -1;
    }
    tpdbdLog(TPDBD_DEBUG, "URI parameters: %s", query);
    if (tpdb_register() != SQLITE_OK ||
        tpdbdPoolInit(&d->pool, d->dir, query, 32) != 0 ||
        tpdbdGroupInit(&d->group) != 0 ||
        tpdbdForwardPoolInit(&d->forwards,
                             forwardConnections(d, d->cfg.nmembers)) != 0) {
        tpdbdLog(TPDBD_ERROR, "cannot register the tpdb VFS");
        return -1;
    }
    /* Before the node starts: no client is served yet, and no thread of
     * the node's (raft's libuv thread pool) opens or closes descriptors
     * while the directory is read. A first start has no .tpdb/ yet. */
    tpdbdAdminCleanup(d->dir);
    if (tpdbdPoolOpen(d->pool, TPDBD_MAIN_DB, &d->control, err, sizeof err) !=
        SQLITE_OK) {
        tpdbdLog(TPDBD_ERROR, "start node %s (raft id %llu): %s",
                 d->cfg.node_id, (unsigned long long)d->cfg.raft_id, err);
        return -1;
    }
    return 0;
}

/* A leader hands leadership to another voter before it goes. */
static void transferLeadership(struct tpdbd *d)
{
    json_t *st = tpdbdStatus(d);
    const char *role = json_string_value(json_object_get(st, "role"));
    size_t members = json_array_size(json_object_get(st, "members"));
    if (role != NULL && strcmp(role, "leader") == 0 && members > 1) {
        char *msg = NULL;
        if (sqlite3_exec(d->control, "SELECT tpdb_transfer(0)", NULL, NULL,
                         &msg) == SQLITE_OK) {
            tpdbdLog(TPDBD_INFO, "leadership transferred");
        } else {
            tpdbdLog(TPDBD_WARN, "leadership transfer: %s",
                     msg != NULL ? msg : "failed");
        }
        sqlite3_free(msg);
    }
    json_decref(st);
}

/* Stops everything start-up made, in reverse order. Returns 0 if the node
 * stopped cleanly. */
static int stopAll(struct tpdbd *d,
                   struct tpdbd_server *s,
                   struct housekeeping *h)
{
    unsigned wait = (d->cfg.commit_ms ? d->cfg.commit_ms : 60000) + 5000;
    int left = s != NULL ? tpdbdServerClose(s, wait) : 0;
    if (h != NULL) {
        housekeepingStop(h);
    }
    tpdbdMetricsStop(d->metrics);
    d->metrics = NULL;
    if (d->control != NULL) {
        transferLeadership(d);
    }
    if (left > 0) {
        /* Their connections are still in use: the node cannot stop. */
        tpdbdLog(TPDBD_ERROR, "%d client requests did not end", left);
        return -1;
    }
    sqlite3_close(d->control);
    d->control = NULL;
    tpdbdGroupClose(d->group);
    d->group = NULL;
    tpdbdForwardPoolClose(d->forwards);
    d->forwards = NULL;
    tpdbdPoolClose(d->pool);
    d->pool = NULL;
    tpdb_shutdown();
    return 0;
}

static int parseEnv(struct tpdbd *d)
{
    const char *slow = getenv("TPDB_SLOW_QUERY_MS");
    d->slow_ms = slow != NULL ? (unsigned)strtoul(slow, NULL, 10) : 100;
    if (d->cfg.log_level == TPDBD_DEBUG) {
        setenv("TPDB_TRACE", "1", 0);
    }
    tpdbdLogSetLevel(d->cfg.log_level);
    return 0;
}

/* Starts the node, the housekeeping thread and the client listener, then
 * serves until a signal. Returns 0 after a signal, -1 if start-up failed;
 * *server and *h say what to stop either way. */
static int serveUntilSignal(struct tpdbd *d,
                            struct tpdbd_server **server,
                            struct housekeeping *hk,
                            struct housekeeping **h)
{
    char err[1024];
    if (startNode(d) != 0) {
        return -1;
    }
    if (housekeepingStart(hk, d) != 0) {
        tpdbdLog(TPDBD_ERROR, "cannot start the housekeeping thread");
        return -1;
    }
    *h = hk;
    if (tpdbdServerInit(server, d, err, sizeof err) != 0) {
        tpdbdLog(TPDBD_ERROR, "%s", err);
        return -1;
    }
    if (d->cfg.metrics[0] != '\0') {
        if (tpdbdMetricsStart(&d->metrics, d, err, sizeof err) != 0) {
            tpdbdLog(TPDBD_ERROR, "%s", err);
            return -1;
        }
        tpdbdLog(TPDBD_INFO, "metrics: http://%s/metrics", d->cfg.metrics);
    }
    tpdbdLog(TPDBD_INFO,
             "ready: node %s (raft id %llu), raft %s, client %s, data dir %s",
             d->cfg.node_id, (unsigned long long)d->cfg.raft_id,
             d->cfg.raft_addr, d->cfg.client_listen, d->dir);
    tpdbdServerRun(*server, wakePipe[0], &waitMask);
    tpdbdLog(TPDBD_INFO, "stopping");
    return 0;
}

int main(int argc, char **argv)
{
    static struct tpdbd d;
    struct tpdbd_server *server = NULL;
    struct housekeeping hk, *h = NULL;
    char err[2048];
    int temp = 0;
    if (tpdbdParseArgs(argc, argv, &d.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (d.cfg.help) {
        fputs(tpdbdUsage(), stdout);
        return 0;
    }
    if (d.cfg.make_token[0] != '\0') {
        return tpdbdAuthMakeToken(&d.cfg);
    }
    parseEnv(&d);
    if (tpdbdAuthSetup(&d) != 0) {
        return 1;
    }
    if (setupSignals() != 0) {
        return 1;
    }
    if (d.cfg.dns_peers[0] != '\0') {
        int found =
            tpdbdDnsDiscover(&d.cfg, wakePipe[0], &waitMask, err, sizeof err);
        if (found > 0) {
            /* A signal during discovery: nothing was started yet. */
            tpdbdLog(TPDBD_INFO, "stopped during DNS discovery");
            return 0;
        }
        if (found < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    if (setupDir(&d, &temp) != 0) {
        return 1;
    }
    advertiseClient(&d);
    int rc = serveUntilSignal(&d, &server, &hk, &h) == 0 ? 0 : 1;
    if (stopAll(&d, server, h) != 0) {
        rc = 1;
    }
    if (temp) {
        nftw(d.dir, rmEntry, 16, FTW_DEPTH | FTW_PHYS);
    }
    tpdbdAuthClose(&d);
    tpdbdLog(TPDBD_INFO, "stopped");
    return rc;
}
