/*
 * Commit/read benchmark, tpdb vs plain SQLite WAL synchronous=FULL, in one
 * run: one-row INSERTs/s from 1 and N clients with p50/p99 latency and
 * SQLITE_BUSY counts, on plain SQLite, tpdb 1 node and tpdb 3 nodes on
 * loopback (nodes 2 and 3 are this program re-run with --node-uri), point
 * SELECTs/s, and the lz4 ratio of the database's pages. Cases alternate in
 * rounds so that every configuration sees the same disk. A second 3-node
 * cluster runs with a cluster key (key_file=, a random key), so that the
 * cost of sealing every raft stream is measured against the same cluster
 * without one in the same run.
 *   bench_commit [--seconds 3] [--rounds 3] [--clients 8] [--dir /tmp]
 *       [--sync full|normal] [--configs plain,tpdb1,tpdb3,tpdb3k]
 *       [--no-reads] [--key]
 * --key runs every tpdb configuration with a cluster key (a random one in
 * TPDB_REPLICATION_KEY, which the node processes inherit).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/base.h"
#include "bench/bench_util.h"
#include "ext/tpdb.h"

#define MAX_CLIENTS 64
#define MAX_ERRORS 100 /* a client stops after this many failed operations */
#define LEADER_WAIT_MS 30000
#define URI_SIZE 1024

enum { CFG_PLAIN = 0, CFG_TPDB1, CFG_TPDB3, CFG_TPDB3K, CFG_N };

static const char *const cfgLabel[CFG_N] = {"plain WAL FULL", "tpdb 1 node",
                                            "tpdb 3 nodes", "tpdb 3 + key"};
/* Matched as words of --configs ("tpdb3" must not select "tpdb3k"). */
static const char *const cfgKey[CFG_N] = {"plain", "tpdb1", "tpdb3", "tpdb3k"};

struct options {
    double seconds;
    int clients;
    int rounds;
    int reads; /* run the read cases (--no-reads: 0, e.g. to profile) */
    int key;   /* --key: seal replication with a random cluster key */
    const char *parent; /* directory for the temporary tree */
    const char *sync;   /* synchronous= of the tpdb connections */
    int enabled[CFG_N];
};

/* One measured case. */
struct result {
    int cfg;
    int clients;
    int read;
    uint64_t ops;
    double secs;
    struct bench_lat lat; /* samples of every round until finished */
    uint64_t p50, p99;    /* ns, once finished */
    uint64_t busy;
    uint64_t errors;
    char firstError[TPDB_ERRMSG_SIZE];
};

struct bench {
    struct options o;
    char tmp[256]; /* the temporary tree */
    char uri[CFG_N][URI_SIZE];
    int ready[CFG_N];      /* the configuration's database is set up */
    long long rows[CFG_N]; /* rows after the write cases */
    pid_t child[4];        /* nodes 2 and 3 of tpdb3, then of tpdb3k */
    struct result res[32];
    int nres;
    struct bench_lat disk; /* fdatasync probes between the write rounds */
};

/* Holds the client threads until all are ready: 0 wait, 1 go, -1 stop. */
struct gate {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int state;
};

/* One client thread. */
struct worker {
    sqlite3 *db;
    sqlite3_stmt *stmt;
    int read;
    long long maxId;
    uint64_t rng; /* SELECT: random state */
    uint64_t seq; /* INSERT: number in the next row's name and email */
    uint64_t durationNs;
    struct gate *start;
    struct bench_lat lat;
    uint64_t ops, busy, errors;
    char firstError[TPDB_ERRMSG_SIZE];
};

/* ---------------------------------------------------------------- SQL -- */

static int execSql(sqlite3 *db, const char *sql, char *errmsg)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "%s: %s (extended code %d) %s", sql,
                 err ? err : sqlite3_errstr(rc), sqlite3_extended_errcode(db),
                 tpdb_errmsg());
    }
    sqlite3_free(err);
    return rc;
}

/* Opens a connection to uri configured as every client of cfg is. */
static int openConn(const struct bench *b, int cfg, sqlite3 **db, char *errmsg)
{
    char sql[128];
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    int rc = sqlite3_open_v2(b->uri[cfg], db, flags, NULL);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "open %s: %s %s", b->uri[cfg],
                 *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc), tpdb_errmsg());
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, 5000);
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s",
             cfg == CFG_PLAIN ? "FULL" : b->o.sync);
    rc = execSql(*db, sql, errmsg);
    if (rc != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
    }
    return rc;
}

static long long maxRowId(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    long long n = 0;
    if (sqlite3_prepare_v2(db, "SELECT max(id) FROM users", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return n;
}

/* ------------------------------------------------------------ clients -- */

static void noteError(struct worker *w, const char *what, int rc)
{
    w->errors++;
    if (w->firstError[0] == '\0') {
        tpdbErrf(w->firstError, "%s: %s (extended code %d) %s", what,
                 sqlite3_errmsg(w->db), rc, tpdb_errmsg());
    }
}

/* One autocommit INSERT, retried on SQLITE_BUSY until `end`. */
static int insertOne(struct worker *w, uint64_t end)
{
    char name[32], email[48], when[32];
    struct timespec ts;
    struct tm tm;
    uint64_t n = w->seq++;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(name, sizeof name, "user-%llu", (unsigned long long)n);
    snprintf(email, sizeof email, "user%llu@example.com",
             (unsigned long long)n);
    sqlite3_bind_text(w->stmt, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(w->stmt, 2, email, -1, SQLITE_STATIC);
    sqlite3_bind_text(w->stmt, 3, when, -1, SQLITE_STATIC);
    for (;;) {
        int rc = sqlite3_step(w->stmt);
        int ext = sqlite3_extended_errcode(w->db);
        sqlite3_reset(w->stmt);
        if (rc == SQLITE_DONE) {
            return 0;
        }
        if ((rc & 0xff) == SQLITE_BUSY) {
            /* busy_timeout ran out: retry, unless the case is over. */
            w->busy++;
            if (tpdbNowNs() < end) {
                continue;
            }
            return -1;
        }
        noteError(w, "INSERT", ext);
        return -1;
    }
}

/* One point SELECT of a random existing row. */
static int selectOne(struct worker *w)
{
    int rc;
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    sqlite3_bind_int64(w->stmt, 1, (long long)(w->rng % w->maxId) + 1);
    rc = sqlite3_step(w->stmt);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(w->stmt, 1) > 0) {
        sqlite3_reset(w->stmt);
        return 0;
    }
    sqlite3_reset(w->stmt);
    noteError(w, rc == SQLITE_ROW ? "SELECT: empty row" : "SELECT", rc);
    return -1;
}

static int gateWait(struct gate *g)
{
    int state;
    pthread_mutex_lock(&g->mutex);
    while (g->state == 0) {
        pthread_cond_wait(&g->cond, &g->mutex);
    }
    state = g->state;
    pthread_mutex_unlock(&g->mutex);
    return state;
}

static void gateOpen(struct gate *g, int state)
{
    pthread_mutex_lock(&g->mutex);
    g->state = state;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mutex);
}

static void *workerMain(void *arg)
{
    struct worker *w = arg;
    uint64_t end;
    if (gateWait(w->start) < 0) {
        return NULL;
    }
    end = tpdbNowNs() + w->durationNs;
    while (w->errors < MAX_ERRORS) {
        uint64_t t0 = tpdbNowNs();
        if (t0 >= end) {
            break;
        }
        if ((w->read ? selectOne(w) : insertOne(w, end)) == 0) {
            w->ops++;
            if (benchLatPush(&w->lat, tpdbNowNs() - t0) != 0) {
                noteError(w, "latency sample", SQLITE_NOMEM);
            }
        }
    }
    return NULL;
}

static int workerPrepare(const struct bench *b,
                         int cfg,
                         struct worker *w,
                         char *errmsg)
{
    const char *sql = w->read ? "SELECT name, email, created_at FROM users "
                                "WHERE id = ?"
                              : "INSERT INTO users (name, email, created_at) "
                                "VALUES (?, ?, ?)";
    int rc = openConn(b, cfg, &w->db, errmsg);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(w->db, sql, -1, &w->stmt, NULL);
        if (rc != SQLITE_OK) {
            tpdbErrf(errmsg, "prepare: %s", sqlite3_errmsg(w->db));
        }
    }
    return rc;
}

static void workerRelease(struct worker *w)
{
    sqlite3_finalize(w->stmt);
    sqlite3_close(w->db);
    benchLatFree(&w->lat);
}

/* Folds the workers' counters and samples into r. */
static int collect(struct worker *ws, int n, struct result *r, char *errmsg)
{
    for (int i = 0; i < n; i++) {
        r->ops += ws[i].ops;
        r->busy += ws[i].busy;
        r->errors += ws[i].errors;
        if (r->firstError[0] == '\0' && ws[i].firstError[0] != '\0') {
            snprintf(r->firstError, sizeof r->firstError, "%s",
                     ws[i].firstError);
        }
        if (benchLatMerge(&r->lat, &ws[i].lat) != 0) {
            tpdbErrf(errmsg, "out of memory merging latencies");
            return -1;
        }
    }
    return 0;
}

/* Runs r->clients threads of INSERTs or point SELECTs (r->read) over ids
 * 1..maxId on r->cfg for `seconds`, adding to r's counters and samples. */
static int runCase(struct bench *b,
                   struct result *r,
                   long long maxId,
                   double seconds,
                   char *errmsg)
{
    int cfg = r->cfg;
    int clients = r->clients;
    struct worker ws[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    struct gate start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                         0};
    int started = 0;
    int rc = -1;
    uint64_t t0;
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < clients; i++) {
        ws[i].read = r->read;
        ws[i].maxId = maxId > 0 ? maxId : 1;
        ws[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1 + r->ops);
        ws[i].seq = 10000000ULL * (uint64_t)(i + 1) + r->ops;
        ws[i].durationNs = (uint64_t)(seconds * 1e9);
        ws[i].start = &start;
        if (workerPrepare(b, cfg, &ws[i], errmsg) != SQLITE_OK) {
            goto err_workers;
        }
    }
    for (; started < clients; started++) {
        if (pthread_create(&th[started], NULL, workerMain, &ws[started])) {
            tpdbErrf(errmsg, "cannot start client thread");
            break;
        }
    }
    gateOpen(&start, started == clients ? 1 : -1);
    t0 = tpdbNowNs();
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    r->secs += (double)(tpdbNowNs() - t0) / 1e9;
    if (started == clients) {
        rc = collect(ws, clients, r, errmsg);
    }
err_workers:
    for (int i = 0; i < clients; i++) {
        workerRelease(&ws[i]);
    }
    return rc;
}

/* ------------------------------------------------------- 3-node setup -- */

/* The first of cfg's two child processes in b->child. */
static int childBase(int cfg)
{
    return cfg == CFG_TPDB3K ? 2 : 0;
}

/* Polls node 1's status until it is the leader, with a deadline. */
static int waitLeader(struct bench *b, int cfg, sqlite3 *db, char *errmsg)
{
    uint64_t deadline = tpdbNowMs() + LEADER_WAIT_MS;
    struct bench_status st = {0};
    const struct timespec pause = {0, 20 * 1000 * 1000};
    while (tpdbNowMs() < deadline) {
        char *json = NULL;
        if (tpdb_status(db, &json) == SQLITE_OK &&
            benchParseStatus(json, &st, errmsg) == 0 &&
            strcmp(st.role, "leader") == 0) {
            sqlite3_free(json);
            return 0;
        }
        sqlite3_free(json);
        for (int i = childBase(cfg); i < childBase(cfg) + 2; i++) {
            if (benchChildExited(b->child[i])) {
                b->child[i] = 0;
                tpdbErrf(errmsg, "node %d exited", i - childBase(cfg) + 2);
                return -1;
            }
        }
        nanosleep(&pause, NULL);
    }
    tpdbErrf(errmsg, "node 1 not leader after %d ms (role %s, leader %lld)",
             LEADER_WAIT_MS, st.role, st.leader_id);
    return -1;
}

/* The directory of node id of cfg's cluster: n1..n3, or k1..k3 for the
 * cluster with a key. */
static void nodeDir(const struct bench *b,
                    int cfg,
                    int id,
                    char *dir,
                    size_t size)
{
    snprintf(dir, size, "%s/%c%d", b->tmp, cfg == CFG_TPDB3K ? 'k' : 'n', id);
}

static void nodeUri(const struct bench *b,
                    int cfg,
                    int id,
                    const int *ports,
                    char *uri)
{
    char dir[sizeof b->tmp + 16];
    char key[sizeof b->tmp + 32] = "";
    nodeDir(b, cfg, id, dir, sizeof dir);
    if (cfg == CFG_TPDB3K) {
        snprintf(key, sizeof key, "&key_file=%s/cluster.key", b->tmp);
    }
    /* Node 1 times out first so that it wins the first election; nodes 2
     * and 3 also hand leadership back to it (childMain). */
    snprintf(uri, URI_SIZE,
             "file:%s/app.db?vfs=tpdb&node=%d&bind=127.0.0.1:%d&"
             "peers=1@127.0.0.1:%d,2@127.0.0.1:%d,3@127.0.0.1:%d&"
             "election_ms=%d&ready_ms=%d%s",
             dir, id, ports[id - 1], ports[0], ports[1], ports[2],
             id == 1 ? 500 : 5000, id == 1 ? 20000 : 60000, key);
}

/* 64 random hex digits (a cluster key) into hex. Returns 0, or -1 if
 * /dev/urandom cannot be read. */
static int randomHex(char hex[65])
{
    unsigned char k[32];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f != NULL ? fread(k, 1, sizeof k, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    if (got != sizeof k) {
        return -1;
    }
    for (size_t i = 0; i < sizeof k; i++) {
        snprintf(hex + 2 * i, 3, "%02x", k[i]);
    }
    return 0;
}

/* Writes a random cluster key to TMP/cluster.key, mode 0600. */
static int writeKeyFile(const struct bench *b, char *errmsg)
{
    char path[sizeof b->tmp + 16];
    char hex[65];
    snprintf(path, sizeof path, "%s/cluster.key", b->tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || randomHex(hex) != 0 || write(fd, hex, 64) != 64 ||
        write(fd, "\n", 1) != 1) {
        tpdbErrf(errmsg, "write %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    return 0;
}

static int startCluster(struct bench *b, int cfg, char *errmsg)
{
    int ports[3];
    char self[PATH_MAX];
    char dir[sizeof b->tmp + 16];
    char ppid[32];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || benchPickPorts(ports, 3, errmsg) != 0) {
        tpdbErrWrap(errmsg, "3-node cluster");
        return -1;
    }
    self[len] = '\0';
    if (cfg == CFG_TPDB3K && writeKeyFile(b, errmsg) != 0) {
        return -1;
    }
    snprintf(ppid, sizeof ppid, "%ld", (long)getpid());
    for (int id = 1; id <= 3; id++) {
        nodeDir(b, cfg, id, dir, sizeof dir);
        if (mkdir(dir, 0700) != 0) {
            tpdbErrf(errmsg, "mkdir %s: %s", dir, strerror(errno));
            return -1;
        }
    }
    nodeUri(b, cfg, 1, ports, b->uri[cfg]);
    for (int id = 2; id <= 3; id++) {
        char uri[URI_SIZE];
        char *argv[] = {self, "--node-uri", uri, "--parent", ppid, NULL};
        nodeUri(b, cfg, id, ports, uri);
        if (benchSpawn(argv, &b->child[childBase(cfg) + id - 2], errmsg) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Creates the table of cfg, retrying while a new leader settles. */
static int setupConfig(struct bench *b, int cfg, char *errmsg)
{
    const char *ddl =
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY "
        "KEY, name TEXT, email TEXT, created_at TEXT)";
    uint64_t deadline = tpdbNowMs() + LEADER_WAIT_MS;
    sqlite3 *db = NULL;
    int rc = -1;
    int cluster = cfg == CFG_TPDB3 || cfg == CFG_TPDB3K;
    if (cluster && startCluster(b, cfg, errmsg) != 0) {
        return -1;
    }
    if (openConn(b, cfg, &db, errmsg) != SQLITE_OK) {
        return -1;
    }
    if (cluster && waitLeader(b, cfg, db, errmsg) != 0) {
        goto err_db;
    }
    while ((rc = execSql(db, ddl, errmsg)) != SQLITE_OK &&
           tpdbNowMs() < deadline) {
        const struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    b->ready[cfg] = rc == SQLITE_OK;
err_db:
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

/* ------------------------------------------------------------ phases -- */

/* The result of (cfg, read, clients), created empty on first use. */
static struct result *resultFor(struct bench *b, int cfg, int read, int clients)
{
    struct result *r;
    for (int i = 0; i < b->nres; i++) {
        r = &b->res[i];
        if (r->cfg == cfg && r->read == read && r->clients == clients) {
            return r;
        }
    }
    if (b->nres == (int)(sizeof b->res / sizeof b->res[0])) {
        return NULL;
    }
    r = &b->res[b->nres++];
    r->cfg = cfg;
    r->read = read;
    r->clients = clients;
    return r;
}

/* One round: every ready configuration in turn, for seconds / rounds; odd
 * rounds go in reverse order so that no configuration always goes first. */
static int runRound(struct bench *b,
                    int read,
                    int clients,
                    long long maxId,
                    int round,
                    char *errmsg)
{
    for (int i = 0; i < CFG_N; i++) {
        int c = round % 2 ? CFG_N - 1 - i : i;
        struct result *r;
        if (!b->ready[c]) {
            continue;
        }
        r = resultFor(b, c, read, clients);
        fprintf(stderr, "  round %d/%d: %s %-16s %2d client(s)\n", round + 1,
                b->o.rounds, read ? "SELECT" : "INSERT", cfgLabel[c], clients);
        if (r == NULL ||
            runCase(b, r, maxId, b->o.seconds / b->o.rounds, errmsg) != 0) {
            tpdbErrWrap(errmsg, "%s on %s", read ? "SELECT" : "INSERT",
                        cfgLabel[c]);
            return -1;
        }
    }
    return 0;
}

/* Write cases, 1 and N clients, in interleaved rounds so that every
 * configuration sees the same disk (whose sync latency drifts over time on
 * a shared machine); a disk probe opens each round. */
static int writePhase(struct bench *b, char *errmsg)
{
    int counts[2] = {1, b->o.clients};
    for (int i = 0; i < 2; i++) {
        for (int round = 0; round < b->o.rounds; round++) {
            if (benchSyncProbe(b->tmp, 20, &b->disk, errmsg) != 0 ||
                runRound(b, 0, counts[i], 0, round, errmsg) != 0) {
                return -1;
            }
        }
    }
    for (int c = 0; c < CFG_N; c++) {
        sqlite3 *db = NULL;
        if (b->ready[c]) {
            if (openConn(b, c, &db, errmsg) != SQLITE_OK) {
                return -1;
            }
            b->rows[c] = maxRowId(db);
            sqlite3_close(db);
        }
    }
    return 0;
}

/* Checkpoints every database so that reads compare like with like: the
 * write cases leave WALs of different lengths behind. */
static void checkpointAll(struct bench *b)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    for (int c = 0; c < CFG_N; c++) {
        sqlite3 *db = NULL;
        if (b->ready[c] && openConn(b, c, &db, errmsg) == SQLITE_OK &&
            execSql(db, "PRAGMA wal_checkpoint(TRUNCATE)", errmsg) != 0) {
            fprintf(stderr, "  checkpoint %s: %s\n", cfgLabel[c], errmsg);
        }
        sqlite3_close(db);
    }
}

/* Adds rows like the clients' in one transaction until cfg's table holds
 * `rows` rows. */
static int topUp(struct bench *b, int cfg, long long rows, char *errmsg)
{
    char sql[512];
    sqlite3 *db = NULL;
    int rc;
    if (b->rows[cfg] >= rows) {
        return 0;
    }
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
             "WHERE x < %lld) INSERT INTO users (name, email, created_at) "
             "SELECT 'user-' || (90000000 + x), 'user' || (90000000 + x) || "
             "'@example.com', strftime('%%Y-%%m-%%dT%%H:%%M:%%SZ', 'now') "
             "FROM c",
             rows - b->rows[cfg]);
    rc = openConn(b, cfg, &db, errmsg);
    if (rc == SQLITE_OK) {
        rc = execSql(db, sql, errmsg);
        b->rows[cfg] = maxRowId(db);
    }
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Point reads, 1 client, interleaved rounds, over databases made equal
 * first: the same number of rows (so the same B-tree depth) and a
 * checkpointed WAL. */
static int readPhase(struct bench *b, char *errmsg)
{
    long long maxId = 0;
    for (int c = 0; c < CFG_N; c++) {
        if (b->ready[c] && b->rows[c] > maxId) {
            maxId = b->rows[c];
        }
    }
    for (int c = 0; c < CFG_N; c++) {
        if (b->ready[c] && topUp(b, c, maxId, errmsg) != 0) {
            tpdbErrWrap(errmsg, "add rows to %s", cfgLabel[c]);
            return -1;
        }
    }
    checkpointAll(b);
    for (int round = 0; round < b->o.rounds; round++) {
        if (runRound(b, 1, 1, maxId, round, errmsg) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Turns every result's samples into percentiles. */
static void finishResults(struct bench *b)
{
    for (int i = 0; i < b->nres; i++) {
        struct result *r = &b->res[i];
        benchLatSort(&r->lat);
        r->p50 = benchLatPercentile(&r->lat, 0.50);
        r->p99 = benchLatPercentile(&r->lat, 0.99);
        benchLatFree(&r->lat);
    }
}

/* ------------------------------------------------------------ report -- */

static const struct result *baseline(const struct bench *b,
                                     const struct result *r)
{
    for (int i = 0; i < b->nres; i++) {
        const struct result *x = &b->res[i];
        if (x->cfg == CFG_PLAIN && x->read == r->read &&
            x->clients == r->clients) {
            return x;
        }
    }
    return NULL;
}

static double rate(const struct result *r)
{
    return r->secs > 0 ? (double)r->ops / r->secs : 0;
}

static void printResults(const struct bench *b)
{
    printf("\n%-6s %-16s %7s %10s %9s %9s %7s %6s %9s\n", "op", "config",
           "clients", "ops/s", "p50 us", "p99 us", "busy", "errors",
           "vs plain");
    for (int i = 0; i < b->nres; i++) {
        const struct result *r = &b->res[i];
        const struct result *base = baseline(b, r);
        printf("%-6s %-16s %7d %10.0f %9.1f %9.1f %7llu %6llu",
               r->read ? "SELECT" : "INSERT", cfgLabel[r->cfg], r->clients,
               rate(r), (double)r->p50 / 1e3, (double)r->p99 / 1e3,
               (unsigned long long)r->busy, (unsigned long long)r->errors);
        if (base != NULL && rate(base) > 0) {
            printf(" %8.2fx", rate(r) / rate(base));
        }
        printf("\n");
    }
    for (int i = 0; i < b->nres; i++) {
        if (b->res[i].firstError[0] != '\0') {
            printf("first error, %s %s %d client(s): %s\n",
                   b->res[i].read ? "SELECT" : "INSERT",
                   cfgLabel[b->res[i].cfg], b->res[i].clients,
                   b->res[i].firstError);
        }
    }
}

static const struct result *find(const struct bench *b,
                                 int cfg,
                                 int read,
                                 int clients)
{
    for (int i = 0; i < b->nres; i++) {
        const struct result *r = &b->res[i];
        if (r->cfg == cfg && r->read == read && r->clients == clients) {
            return r;
        }
    }
    return NULL;
}

static void printTargets(const struct bench *b)
{
    const struct result *p = find(b, CFG_PLAIN, 0, 1);
    const struct result *t3 = find(b, CFG_TPDB3, 0, 1);
    const struct result *pr = find(b, CFG_PLAIN, 1, 1);
    const struct result *tr = find(b, CFG_TPDB1, 1, 1);
    const struct result *t3k = find(b, CFG_TPDB3K, 0, 1);
    printf("\ntargets:\n");
    if (t3 != NULL && t3k != NULL && rate(t3) > 0 && t3->p99 > 0) {
        double x = rate(t3k) / rate(t3);
        double y = (double)t3k->p99 / (double)t3->p99;
        printf(
            "  3-node 1-client commits with a key within 10%% of without: "
            "ops/s %.2fx, p99 %.2fx %s\n",
            x, y, x >= 0.90 && y <= 1.10 ? "met" : "MISSED");
    }
    if (p != NULL && t3 != NULL && rate(p) > 0) {
        double x = rate(t3) / rate(p);
        printf("  3-node 1-client commits >= 0.25x plain FULL: %.2fx %s\n", x,
               x >= 0.25 ? "met" : "MISSED");
        printf("  3-node 1-client commit p99 < 3 ms: %.3f ms %s\n",
               (double)t3->p99 / 1e6, t3->p99 < 3000000 ? "met" : "MISSED");
    }
    if (pr != NULL && tr != NULL && rate(pr) > 0) {
        double x = rate(tr) / rate(pr);
        printf("  reads through tpdb >= 0.95x plain: %.2fx %s\n", x,
               x >= 0.95 ? "met" : "MISSED");
    }
}

/* The lz4 ratio on the plain database's pages after a full checkpoint: the
 * same rows the replicated databases hold. */
static void printCompression(const struct bench *b)
{
    char path[sizeof b->tmp + 16];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct bench_lz4 z;
    sqlite3 *db = NULL;
    if (!b->ready[CFG_PLAIN] || openConn(b, CFG_PLAIN, &db, errmsg) != 0) {
        return;
    }
    execSql(db, "PRAGMA wal_checkpoint(TRUNCATE)", errmsg);
    sqlite3_close(db);
    snprintf(path, sizeof path, "%s/plain/app.db", b->tmp);
    if (benchLz4Pages(path, 16, &z, errmsg) != 0) {
        printf("\nlz4: %s\n", errmsg);
        return;
    }
    printf(
        "\nlz4 on the database's %llu pages (payload as in a log entry):"
        "\n  one page per entry:   %llu -> %llu bytes, ratio %.2f:1\n"
        "  16 pages per entry:   %llu -> %llu bytes, ratio %.2f:1\n",
        (unsigned long long)z.pages, (unsigned long long)z.raw,
        (unsigned long long)z.compressed,
        z.compressed ? (double)z.raw / (double)z.compressed : 0,
        (unsigned long long)z.raw, (unsigned long long)z.compressedN,
        z.compressedN ? (double)z.raw / (double)z.compressedN : 0);
}

/* -------------------------------------------------------------- main -- */

/* --node-uri mode: run one follower node until killed, handing leadership
 * to node 1 whenever this node gets it. */
static int childMain(const char *uri, long parent)
{
    const struct timespec pause = {0, 200 * 1000 * 1000};
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    sqlite3 *db = NULL;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)parent) {
        return 1; /* the parent is already gone */
    }
    if (tpdb_register() != SQLITE_OK ||
        sqlite3_open_v2(uri, &db, flags, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench node: open %s: %s\n", uri,
                db ? sqlite3_errmsg(db) : "cannot register tpdb");
        return 1;
    }
    for (;;) {
        char *json = NULL;
        char errmsg[TPDB_ERRMSG_SIZE];
        struct bench_status st;
        if (tpdb_status(db, &json) == SQLITE_OK &&
            benchParseStatus(json, &st, errmsg) == 0 &&
            strcmp(st.role, "leader") == 0) {
            sqlite3_exec(db, "SELECT tpdb_transfer(1)", NULL, NULL, NULL);
        }
        sqlite3_free(json);
        nanosleep(&pause, NULL);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_commit [--seconds N] [--rounds N] [--clients N] "
            "[--dir PARENT]\n"
            "                    [--sync full|normal] "
            "[--configs plain,tpdb1,tpdb3,tpdb3k] [--no-reads] "
            "[--key]\n");
    exit(2);
}

static void parseConfigs(struct options *o, const char *list)
{
    for (int c = 0; c < CFG_N; c++) {
        size_t n = strlen(cfgKey[c]);
        o->enabled[c] = 0;
        for (const char *p = list; *p != '\0'; p += strcspn(p, ",")) {
            p += *p == ',';
            if (strncmp(p, cfgKey[c], n) == 0 &&
                (p[n] == ',' || p[n] == '\0')) {
                o->enabled[c] = 1;
            }
        }
    }
}

/* Parses argv; returns 1 if this process is a --node-uri child. */
static int parseArgs(int argc,
                     char **argv,
                     struct options *o,
                     const char **nodeUri,
                     long *parent)
{
    static const struct option longOpts[] = {
        {"seconds", required_argument, NULL, 's'},
        {"clients", required_argument, NULL, 'c'},
        {"rounds", required_argument, NULL, 'r'},
        {"no-reads", no_argument, NULL, 'R'},
        {"key", no_argument, NULL, 'k'},
        {"dir", required_argument, NULL, 'd'},
        {"sync", required_argument, NULL, 'y'},
        {"configs", required_argument, NULL, 'g'},
        {"node-uri", required_argument, NULL, 'n'},
        {"parent", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    int ch;
    *o = (struct options){.seconds = 3.0,
                          .clients = 8,
                          .rounds = 3,
                          .reads = 1,
                          .parent = "/tmp",
                          .sync = "NORMAL",
                          .enabled = {1, 1, 1, 1}};
    while ((ch = getopt_long(argc, argv, "", longOpts, NULL)) != -1) {
        switch (ch) {
            case 's':
                o->seconds = atof(optarg);
                break;
            case 'c':
                o->clients = atoi(optarg);
                break;
            case 'r':
                o->rounds = atoi(optarg);
                break;
            case 'R':
                o->reads = 0;
                break;
            case 'k':
                o->key = 1;
                break;
            case 'd':
                o->parent = optarg;
                break;
            case 'y':
                o->sync = optarg;
                break;
            case 'g':
                parseConfigs(o, optarg);
                break;
            case 'n':
                *nodeUri = optarg;
                break;
            case 'p':
                *parent = atol(optarg);
                break;
            default:
                usage();
        }
    }
    if (o->seconds <= 0 || o->clients < 1 || o->clients > MAX_CLIENTS ||
        o->rounds < 1 || o->rounds > 100 ||
        (strcmp(o->sync, "full") && strcmp(o->sync, "FULL") &&
         strcmp(o->sync, "normal") && strcmp(o->sync, "NORMAL"))) {
        usage();
    }
    return *nodeUri != NULL;
}

static int makeTree(struct bench *b, char *errmsg)
{
    char dir[sizeof b->tmp + 16];
    if ((size_t)snprintf(b->tmp, sizeof b->tmp, "%s/tpdb-bench-XXXXXX",
                         b->o.parent) >= sizeof b->tmp) {
        tpdbErrf(errmsg, "--dir %s: path too long", b->o.parent);
        b->tmp[0] = '\0';
        return -1;
    }
    if (mkdtemp(b->tmp) == NULL) {
        tpdbErrf(errmsg, "mkdtemp %s: %s", b->tmp, strerror(errno));
        b->tmp[0] = '\0';
        return -1;
    }
    for (int c = CFG_PLAIN; c <= CFG_TPDB1; c++) {
        snprintf(dir, sizeof dir, "%s/%s", b->tmp, cfgKey[c]);
        if (mkdir(dir, 0700) != 0) {
            tpdbErrf(errmsg, "mkdir %s: %s", dir, strerror(errno));
            return -1;
        }
        snprintf(b->uri[c], URI_SIZE, "file:%s/app.db%s", dir,
                 c == CFG_PLAIN ? "?vfs=unix" : "?vfs=tpdb");
    }
    return 0;
}

/* The disk's own floor: what one durable 4 KiB write costs here, sampled
 * between the write rounds. */
static void printDisk(struct bench *b)
{
    benchLatSort(&b->disk);
    printf(
        "\ndisk: 4 KiB write + fdatasync, %zu samples between rounds: "
        "p50 %.1f us, p99 %.1f us\n",
        b->disk.n, (double)benchLatPercentile(&b->disk, 0.5) / 1e3,
        (double)benchLatPercentile(&b->disk, 0.99) / 1e3);
    benchLatFree(&b->disk);
}

static int runAll(struct bench *b, char *errmsg)
{
    if (makeTree(b, errmsg) != 0) {
        return -1;
    }
    printf(
        "tpdb commit/read benchmark: %.1f s per case in %d interleaved "
        "rounds, %ld cores, SQLite %s, tpdb synchronous=%s, in %s\n",
        b->o.seconds, b->o.rounds, sysconf(_SC_NPROCESSORS_ONLN),
        sqlite3_libversion(), b->o.sync, b->tmp);
    fflush(stdout);
    for (int c = 0; c < CFG_N; c++) {
        if (b->o.enabled[c] && setupConfig(b, c, errmsg) != 0) {
            tpdbErrWrap(errmsg, "set up %s", cfgLabel[c]);
            return -1;
        }
    }
    if (writePhase(b, errmsg) != 0) {
        return -1;
    }
    return b->o.reads ? readPhase(b, errmsg) : 0;
}

/* Puts a random cluster key into TPDB_REPLICATION_KEY. Returns 0, or -1
 * if /dev/urandom cannot be read. */
static int randomKey(void)
{
    char hex[65];
    return randomHex(hex) != 0 ? -1 : setenv("TPDB_REPLICATION_KEY", hex, 1);
}

int main(int argc, char **argv)
{
    static struct bench b;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    const char *nodeUri = NULL;
    long parent = 0;
    int rc;
    if (parseArgs(argc, argv, &b.o, &nodeUri, &parent)) {
        return childMain(nodeUri, parent);
    }
    if (tpdb_register() != SQLITE_OK) {
        fprintf(stderr, "bench_commit: cannot register the tpdb VFS\n");
        return 1;
    }
    if (b.o.key && randomKey() != 0) {
        fprintf(stderr, "bench_commit: cannot make a cluster key\n");
        return 1;
    }
    printf("cluster key: %s\n",
           b.o.key ? "on (every raft stream sealed)" : "off");
    rc = runAll(&b, errmsg);
    finishResults(&b);
    printDisk(&b);
    printResults(&b);
    printTargets(&b);
    printCompression(&b);
    tpdb_shutdown();
    for (int i = 0; i < 4; i++) {
        benchKill(b.child[i]);
    }
    if (b.tmp[0] != '\0' && benchRemoveTree(b.tmp) != 0) {
        fprintf(stderr, "bench_commit: could not remove %s\n", b.tmp);
    }
    if (rc != 0) {
        fprintf(stderr, "bench_commit: %s\n", errmsg);
        return 1;
    }
    return 0;
}
