/*
 * Scale benchmark: a 3-node tpdb cluster on loopback (this process is node
 * 1, the leader; nodes 2 and 3 are this program re-run with --node-uri)
 * loaded with 100 MB and 1 GB (--mb 100,1000,4000), next to plain SQLite
 * WAL (FULL and NORMAL) loading the same rows on the same disk in the same
 * run. Per size it prints:
 *   - load MB/s, and the ratio to plain SQLite;
 *   - steady RSS (after the load) and peak RSS (VmHWM) of every node;
 *   - one-row INSERTs on the leader for --probe-seconds while snapshots are
 *     taken: commits, p99 and longest commit, snapshots taken, term changes;
 *   - bytes each node wrote during the load (/proc/PID/io);
 *   - CPU time each node used during the load, and this process's for the
 *     plain loads (/proc/PID/stat), per MB loaded;
 *   - the size of the followers' WAL files after the load and the probe;
 *   - restart of a SIGKILLed follower until it has applied the leader's
 *     index, and catch-up of a follower whose database files were deleted
 *     (streamed from a peer), next to `cp` + `sync` of the same file.
 * Rows are 1 KB of random bytes, 1,000 per transaction.
 *   - with --txn-mb N, one transaction of N MB on the leader: time, term
 *     changes, RSS of every node after it;
 *   bench_scale [--mb 100,1000] [--probe-seconds 20] [--log-mb N]
 *       [--txn-mb N] [--dir /tmp] [--port-base N] [--no-plain] [--no-wipe]
 *       [--restarts N] [--trace DIR] [--wrap 'CMD ARGS']
 * To find where a restart spends its time: --restarts N measures N
 * SIGKILL restarts in a row; --trace DIR runs each restarted follower with
 * TPDB_TRACE=1 and its stderr in DIR/restart-K.log (the bench prints the
 * same clock, tpdbNowMs, at the kill and when caught up); --wrap runs it
 * under a command (e.g. 'strace -f -tt -o DIR/strace'), so --parent is
 * not checked. --no-plain and --no-wipe skip the plain SQLite loads and
 * the wiped follower's catch-up (each writes the size again).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "base/base.h"
#include "bench/bench_util.h"
#include "ext/tpdb.h"

#define URI_SIZE (PATH_MAX + 256)
#define ROW_BYTES 1000
#define ROWS_PER_TXN 1000
#define WAIT_MS 120000
#define MAX_SIZES 8
#define MAX_WRAP_ARGS 16

extern char **environ;

struct options {
    unsigned mb[MAX_SIZES];
    unsigned n_sizes;
    double probe;
    unsigned log_mb; /* 0: the node's default */
    unsigned txn_mb; /* one transaction of this size after the probe */
    int port_base;   /* nodes on port_base .. +2; 0: ports the kernel picks */
    const char *parent;
    int no_plain;                  /* skip the plain SQLite loads */
    int no_wipe;                   /* skip the wiped follower's catch-up */
    unsigned restarts;             /* SIGKILL restarts measured in a row */
    const char *trace_dir;         /* restarted followers log here (NULL: no) */
    char *wrap[MAX_WRAP_ARGS + 1]; /* restarted followers run under this */
};

struct run {
    const struct options *o;
    char tmp[PATH_MAX];
    int ports[3];
    pid_t child[2];   /* nodes 2 and 3 */
    sqlite3 *db;      /* node 1's connection */
    unsigned spawned; /* restarts of node 2 so far (names the trace log) */
};

static uint64_t nowNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double secsSince(uint64_t t0)
{
    return (double)(nowNs() - t0) / 1e9;
}

static void pauseMs(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int execSql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "bench_scale: %s: %s (%s)\n", sql, msg ? msg : "",
                tpdb_errmsg());
    }
    sqlite3_free(msg);
    return rc;
}

struct run;
static int waitLeader(struct run *r, double secs);

/* CPU time (user + system, every thread) pid has used so far, from
 * /proc/PID/stat (0: this process), in seconds; -1 if unknown. */
static double cpuSecs(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/self/stat");
    if (pid != 0) {
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    }
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    buf[n] = '\0';
    /* The name (field 2) may hold spaces: fields 3 on follow its ')'. */
    char *p = strrchr(buf, ')');
    unsigned long long utime = 0, stime = 0;
    if (p == NULL || sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                            "%llu %llu",
                            &utime, &stime) != 2) {
        return -1;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Loads mb MB of rows; returns MB/s or -1. With r (the cluster), a
 * transaction that fails (node 1 lost leadership: a loaded machine) is
 * retried once node 1 leads again, and counted in *failed; its outcome may
 * have been unknown, so a retry can add its rows twice (the rate counts
 * them once). */
static double load(sqlite3 *db, unsigned mb, struct run *r, unsigned *failed)
{
    char sql[256];
    unsigned txns = (unsigned)((uint64_t)mb * 1000000 /
                               ((uint64_t)ROW_BYTES * ROWS_PER_TXN));
    if (execSql(db,
                "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
                "v BLOB)") != SQLITE_OK) {
        return -1;
    }
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
             "WHERE i < %d) INSERT INTO t(v) SELECT randomblob(%d) FROM c",
             ROWS_PER_TXN, ROW_BYTES);
    uint64_t t0 = nowNs();
    for (unsigned i = 0; i < txns; i++) {
        while (execSql(db, sql) != SQLITE_OK) {
            if (r == NULL || ++*failed > 20 || waitLeader(r, 60) != 0) {
                return -1;
            }
        }
    }
    return (double)txns * ROWS_PER_TXN * ROW_BYTES / 1e6 / secsSince(t0);
}

/* Loads mb into a plain SQLite WAL file at `sync`; *cpu: this process's
 * CPU seconds for it. Returns MB/s, -1 on failure. */
static double plainLoad(struct run *r,
                        unsigned mb,
                        const char *sync,
                        double *cpu)
{
    char path[PATH_MAX + 32];
    char pragma[64];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/plain-%s.db", r->tmp, sync);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        "unix") != SQLITE_OK) {
        return -1;
    }
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s", sync);
    double rate = -1;
    if (execSql(db, "PRAGMA journal_mode=WAL") == SQLITE_OK &&
        execSql(db, pragma) == SQLITE_OK) {
        double cpu0 = cpuSecs(0);
        rate = load(db, mb, NULL, NULL);
        *cpu = cpuSecs(0) - cpu0;
    }
    sqlite3_close(db);
    unlink(path);
    return rate;
}

/* ---- node processes --------------------------------------------------- */

static void nodeUri(const struct run *r, int id, char *uri)
{
    /* Node 1 times out first so that it wins the first election. */
    snprintf(uri, URI_SIZE,
             "file:%s/n%d/app.db?vfs=tpdb&node=%d&bind=127.0.0.1:%d&"
             "peers=1@127.0.0.1:%d,2@127.0.0.1:%d,3@127.0.0.1:%d&"
             "election_ms=%d&ready_ms=%d&log_mb=%u",
             r->tmp, id, id, r->ports[id - 1], r->ports[0], r->ports[1],
             r->ports[2], id == 1 ? 1000 : 5000, WAIT_MS, r->o->log_mb);
}

/* A follower process: writes its status to DIR/status.json every 100 ms
 * and hands leadership back to node 1 if it gets it. */
static int childMain(const char *uri, long parent)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    sqlite3 *db = NULL;
    char dir[URI_SIZE], path[URI_SIZE + 32], tmp[URI_SIZE + 32];
    /* uri is "file:DIR/app.db?..." */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* 0: run under a wrapper (--wrap), whose death kills us instead. */
    if (parent != 0 && getppid() != (pid_t)parent) {
        return 1;
    }
    snprintf(dir, sizeof dir, "%s", uri + 5);
    char *q = strchr(dir, '?');
    if (q != NULL) {
        *q = '\0';
    }
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    snprintf(path, sizeof path, "%s/status.json", dir);
    snprintf(tmp, sizeof tmp, "%s/status.tmp", dir);
    if (tpdb_register() != SQLITE_OK ||
        sqlite3_open_v2(uri, &db, flags, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench node: open %s: %s (%s)\n", uri,
                db != NULL ? sqlite3_errmsg(db) : "no memory", tpdb_errmsg());
        return 1;
    }
    for (;;) {
        char *json = NULL;
        if (tpdb_status(db, &json) == SQLITE_OK) {
            FILE *f = fopen(tmp, "w");
            if (f != NULL) {
                fputs(json, f);
                fclose(f);
                rename(tmp, path);
            }
            if (strstr(json, "\"role\":\"leader\"") != NULL) {
                sqlite3_exec(db, "SELECT tpdb_transfer(1)", NULL, NULL, NULL);
            }
        }
        sqlite3_free(json);
        pauseMs(100);
    }
}

/* environ with TPDB_TRACE=1 added (tpdb_malloc'd array, strings
 * borrowed); NULL when out of memory. */
static char **traceEnv(void)
{
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    char **env = tpdb_malloc((n + 2) * sizeof *env);
    if (env == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "TPDB_TRACE=", 11) != 0) {
            env[k++] = environ[i];
        }
    }
    env[k++] = "TPDB_TRACE=1";
    env[k] = NULL;
    return env;
}

/* Starts a restart of node 2 as --trace and --wrap ask. */
static int spawnTraced(struct run *r, char *const argv[], pid_t *pid)
{
    char log[PATH_MAX + 32];
    posix_spawn_file_actions_t fa;
    char **env = r->o->trace_dir != NULL ? traceEnv() : environ;
    char *full[MAX_WRAP_ARGS + 8];
    unsigned k = 0;
    if (env == NULL) {
        return -1;
    }
    for (unsigned i = 0; r->o->wrap[i] != NULL; i++) {
        full[k++] = r->o->wrap[i];
    }
    for (unsigned i = 0; argv[i] != NULL; i++) {
        full[k++] = argv[i];
    }
    full[k] = NULL;
    posix_spawn_file_actions_init(&fa);
    if (r->o->trace_dir != NULL) {
        snprintf(log, sizeof log, "%s/restart-%u.log", r->o->trace_dir,
                 r->spawned);
        posix_spawn_file_actions_addopen(&fa, 2, log,
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
    }
    int rc = full[0][0] == '/'
                 ? posix_spawn(pid, full[0], &fa, NULL, full, env)
                 : posix_spawnp(pid, full[0], &fa, NULL, full, env);
    posix_spawn_file_actions_destroy(&fa);
    if (env != environ) {
        tpdb_free(env);
    }
    if (rc != 0) {
        fprintf(stderr, "bench_scale: spawn %s: %s\n", full[0], strerror(rc));
        return -1;
    }
    return 0;
}

/* Starts node id; a restart of node 2 (restart set) as --trace and --wrap
 * ask. */
static int spawnNode(struct run *r, int id, int restart)
{
    char self[PATH_MAX], uri[URI_SIZE], ppid[32], errmsg[TPDB_ERRMSG_SIZE];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    int special = restart && (r->o->trace_dir != NULL || r->o->wrap[0] != NULL);
    if (len <= 0) {
        return -1;
    }
    self[len] = '\0';
    snprintf(ppid, sizeof ppid, "%ld",
             r->o->wrap[0] != NULL && special ? 0L : (long)getpid());
    nodeUri(r, id, uri);
    char *argv[] = {self, "--node-uri", uri, "--parent", ppid, NULL};
    if (restart) {
        r->spawned++;
    }
    if (special) {
        return spawnTraced(r, argv, &r->child[id - 2]);
    }
    if (benchSpawn(argv, &r->child[id - 2], errmsg) != 0) {
        fprintf(stderr, "bench_scale: %s\n", errmsg);
        return -1;
    }
    return 0;
}

/* A JSON integer from node id's status (node 1: its own), or -1. */
static long long statusInt(struct run *r,
                           int id,
                           const char *key,
                           const char *sub)
{
    json_t *root = NULL;
    long long v = -1;
    if (id == 1) {
        char *text = NULL;
        if (tpdb_status(r->db, &text) == SQLITE_OK) {
            root = json_loads(text, 0, NULL);
        }
        sqlite3_free(text);
    } else {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/n%d/status.json", r->tmp, id);
        root = json_load_file(path, 0, NULL);
    }
    json_t *o = root != NULL && sub != NULL ? json_object_get(root, sub) : root;
    json_t *x = o != NULL ? json_object_get(o, key) : NULL;
    if (json_is_integer(x)) {
        v = json_integer_value(x);
    }
    json_decref(root);
    return v;
}

/* Waits until node id has applied at least `index`; seconds, or -1. */
static double waitApplied(struct run *r, int id, long long index)
{
    uint64_t t0 = nowNs();
    while (statusInt(r, id, "applied_index", NULL) < index) {
        if (secsSince(t0) * 1000 > WAIT_MS) {
            return -1;
        }
        pauseMs(20);
    }
    return secsSince(t0);
}

/* VmRSS or VmHWM of pid (0: this process) in MB. */
static double memMb(pid_t pid, const char *field)
{
    char path[64], line[256];
    double kb = -1;
    snprintf(path, sizeof path, "/proc/%s/status", pid == 0 ? "self" : "");
    if (pid != 0) {
        snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    }
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, strlen(field)) == 0) {
            kb = strtod(line + strlen(field) + 1, NULL);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kb / 1024;
}

/* write_bytes less cancelled_write_bytes of pid (0: this process) from
 * /proc/PID/io, in MB: the bytes of page-cache pages it dirtied (counted
 * once per clean-to-dirty change), less those of dirty pages truncated
 * away before they were written; -1 if unknown. */
static double writtenMb(pid_t pid)
{
    char path[64], line[256];
    double bytes = -1;
    double cancelled = 0;
    snprintf(path, sizeof path, "/proc/self/io");
    if (pid != 0) {
        snprintf(path, sizeof path, "/proc/%ld/io", (long)pid);
    }
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "write_bytes:", 12) == 0) {
            bytes = strtod(line + 12, NULL);
        }
        if (strncmp(line, "cancelled_write_bytes:", 22) == 0) {
            cancelled = strtod(line + 22, NULL);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return bytes < 0 ? -1 : (bytes - cancelled) / 1e6;
}

static void writtenAll(struct run *r, double mb[3])
{
    mb[0] = writtenMb(0);
    mb[1] = writtenMb(r->child[0]);
    mb[2] = writtenMb(r->child[1]);
}

static void cpuAll(struct run *r, double secs[3])
{
    secs[0] = cpuSecs(0);
    secs[1] = cpuSecs(r->child[0]);
    secs[2] = cpuSecs(r->child[1]);
}

static void printMem(struct run *r, const char *when)
{
    printf(
        "  RSS %-8s node1 %6.1f MB (peak %6.1f)  node2 %6.1f (peak "
        "%6.1f)  node3 %6.1f (peak %6.1f)\n",
        when, memMb(0, "VmRSS:"), memMb(0, "VmHWM:"),
        memMb(r->child[0], "VmRSS:"), memMb(r->child[0], "VmHWM:"),
        memMb(r->child[1], "VmRSS:"), memMb(r->child[1], "VmHWM:"));
}

static int startCluster(struct run *r)
{
    char errmsg[TPDB_ERRMSG_SIZE], dir[PATH_MAX + 16], uri[URI_SIZE];
    if (r->o->port_base > 0) {
        for (int i = 0; i < 3; i++) {
            r->ports[i] = r->o->port_base + i;
        }
    } else if (benchPickPorts(r->ports, 3, errmsg) != 0) {
        fprintf(stderr, "bench_scale: %s\n", errmsg);
        return -1;
    }
    for (int id = 1; id <= 3; id++) {
        snprintf(dir, sizeof dir, "%s/n%d", r->tmp, id);
        if (mkdir(dir, 0700) != 0) {
            return -1;
        }
    }
    if (spawnNode(r, 2, 0) != 0 || spawnNode(r, 3, 0) != 0) {
        return -1;
    }
    nodeUri(r, 1, uri);
    if (sqlite3_open_v2(
            uri, &r->db,
            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
            NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_scale: open node 1: %s\n", tpdb_errmsg());
        return -1;
    }
    sqlite3_busy_timeout(r->db, 10000);
    return waitLeader(r, 60);
}

/* Polls until node 1 says it leads, at most secs. */
static int waitLeader(struct run *r, double secs)
{
    for (uint64_t t0 = nowNs(); secsSince(t0) < secs;) {
        char *json = NULL;
        int leader = tpdb_status(r->db, &json) == SQLITE_OK &&
                     strstr(json, "\"role\":\"leader\"") != NULL;
        sqlite3_free(json);
        if (leader) {
            return 0;
        }
        pauseMs(50);
    }
    fprintf(stderr, "bench_scale: node 1 did not become leader\n");
    return -1;
}

static void stopCluster(struct run *r)
{
    benchKill(r->child[0]);
    benchKill(r->child[1]);
    sqlite3_close(r->db);
    r->db = NULL;
    tpdb_shutdown();
}

/* ---- phases ----------------------------------------------------------- */

static long long maxTerm(struct run *r)
{
    long long t = 0;
    for (int id = 1; id <= 3; id++) {
        long long v = statusInt(r, id, "term", NULL);
        t = v > t ? v : t;
    }
    return t;
}

/* One-row INSERTs on the leader for o->probe seconds. */
static void probe(struct run *r)
{
    struct bench_lat lat = {0};
    sqlite3_stmt *st = NULL;
    long long snaps0 = statusInt(r, 1, "snapshots", "stats");
    long long term0 = maxTerm(r);
    unsigned errors = 0;
    uint64_t worst = 0;
    if (sqlite3_prepare_v2(r->db, "INSERT INTO t(v) VALUES(randomblob(100))",
                           -1, &st, NULL) != SQLITE_OK) {
        return;
    }
    uint64_t t0 = nowNs();
    while (secsSince(t0) < r->o->probe) {
        uint64_t a = nowNs();
        int rc = sqlite3_step(st);
        uint64_t d = nowNs() - a;
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            errors++;
            continue;
        }
        benchLatPush(&lat, d);
        worst = d > worst ? d : worst;
    }
    double secs = secsSince(t0);
    sqlite3_finalize(st);
    benchLatSort(&lat);
    printf(
        "  one-row INSERTs for %.0f s: %zu commits (%.0f/s), p99 %.2f ms, "
        "longest %.1f ms, %u errors; %lld snapshots on the leader, %lld "
        "term changes\n",
        secs, lat.n, (double)lat.n / secs,
        (double)benchLatPercentile(&lat, 0.99) / 1e6, (double)worst / 1e6,
        errors, statusInt(r, 1, "snapshots", "stats") - snaps0,
        maxTerm(r) - term0);
    benchLatFree(&lat);
}

/* One transaction of mb MB on the leader: time, term changes, RSS. */
static void bigTxn(struct run *r, unsigned mb)
{
    char sql[256];
    long long term0 = maxTerm(r);
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
             "WHERE i < %u) INSERT INTO t(v) SELECT randomblob(%d) FROM c",
             mb * 1000, ROW_BYTES);
    uint64_t t0 = nowNs();
    int rc = execSql(r->db, sql);
    double secs = secsSince(t0);
    long long index = statusInt(r, 1, "applied_index", NULL);
    double lag2 = waitApplied(r, 2, index);
    double lag3 = waitApplied(r, 3, index);
    printf(
        "  one %u MB transaction: %s in %.1f s (%.1f MB/s), followers "
        "applied it %.1f / %.1f s later, %lld term changes\n",
        mb, rc == SQLITE_OK ? "committed" : "FAILED", secs, mb / secs, lag2,
        lag3, maxTerm(r) - term0);
    printMem(r, "big txn");
}

static void removeFiles(struct run *r, int id, int db_too)
{
    static const char *const names[] = {"status.json", "app.db", "app.db-wal",
                                        "app.db-shm"};
    char path[PATH_MAX + 32];
    for (unsigned i = 0; i < (db_too ? 4u : 1u); i++) {
        snprintf(path, sizeof path, "%s/n%d/%s", r->tmp, id, names[i]);
        unlink(path);
    }
}

/* Sizes of node 2's files (--trace), as the restart finds them. */
static void printTraceSizes(struct run *r)
{
    static const char *const names[] = {"app.db", "app.db-wal", "app.db-shm"};
    char path[PATH_MAX + 32];
    printf("  [trace] node 2 at the kill:");
    for (unsigned i = 0; i < 3; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/n2/%s", r->tmp, names[i]);
        printf(" %s %.1f MB", names[i],
               stat(path, &st) == 0 ? (double)st.st_size / 1e6 : -1.0);
    }
    printf("\n");
}

/* The size of the followers' WAL files (which restart after a complete
 * checkpoint, so a bounded size means the WAL restarts). */
static void printWalSizes(struct run *r, const char *when)
{
    char path[PATH_MAX + 32];
    printf("  follower WAL files %s:", when);
    for (int id = 2; id <= 3; id++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/n%d/app.db-wal", r->tmp, id);
        printf(" node%d %.1f MB", id,
               stat(path, &st) == 0 ? (double)st.st_size / 1e6 : -1.0);
    }
    printf("\n");
}

/* SIGKILLs node 2, optionally deletes its database, restarts it; returns
 * the seconds until it has applied the leader's index, or -1. With
 * --trace, prints the kill and the catch-up on tpdbNowMs's clock (the one
 * of the node's log). */
static double restartFollower(struct run *r, int wipe)
{
    long long target = statusInt(r, 1, "applied_index", NULL);
    benchKill(r->child[0]);
    if (r->o->trace_dir != NULL) {
        printTraceSizes(r);
    }
    removeFiles(r, 2, wipe);
    uint64_t t0 = nowNs();
    uint64_t ms0 = tpdbNowMs();
    if (spawnNode(r, 2, 1) != 0 || waitApplied(r, 2, target) < 0) {
        return -1;
    }
    double secs = secsSince(t0);
    if (r->o->trace_dir != NULL) {
        printf(
            "  [trace] restart %u: killed and spawned at %llu ms, caught up "
            "(index %lld) at %llu ms; log %s/restart-%u.log\n",
            r->spawned, (unsigned long long)ms0, target,
            (unsigned long long)tpdbNowMs(), r->o->trace_dir, r->spawned);
    }
    return secs;
}

/* Seconds to cp node 1's database file and sync. */
static double copyAndSync(struct run *r)
{
    char cmd[2 * PATH_MAX + 64];
    execSql(r->db, "PRAGMA wal_checkpoint(PASSIVE)");
    snprintf(cmd, sizeof cmd, "cp %s/n1/app.db %s/copy.db && sync", r->tmp,
             r->tmp);
    uint64_t t0 = nowNs();
    int rc = system(cmd);
    double secs = secsSince(t0);
    snprintf(cmd, sizeof cmd, "%s/copy.db", r->tmp);
    unlink(cmd);
    return rc == 0 ? secs : -1;
}

static int runSize(struct run *r, unsigned mb)
{
    printf(
        "== %u MB (rows of %d bytes, %d per transaction; log_mb %u, 0: "
        "the default)\n",
        mb, ROW_BYTES, ROWS_PER_TXN, r->o->log_mb);
    double full = -1;
    double normal = -1;
    double fullCpu = -1;
    double normalCpu = -1;
    if (!r->o->no_plain) {
        full = plainLoad(r, mb, "FULL", &fullCpu);
        normal = plainLoad(r, mb, "NORMAL", &normalCpu);
        printf(
            "  load, plain SQLite WAL: FULL %.1f MB/s, NORMAL %.1f MB/s; "
            "CPU %.1f, %.1f ms per MB loaded\n",
            full, normal, fullCpu * 1000 / mb, normalCpu * 1000 / mb);
    }
    fflush(stdout);
    if (startCluster(r) != 0) {
        return -1;
    }
    unsigned failed = 0;
    long long term0 = maxTerm(r);
    double io0[3], io1[3], cpu0[3], cpu1[3];
    writtenAll(r, io0);
    cpuAll(r, cpu0);
    double rate = load(r->db, mb, r, &failed);
    printf("  load, tpdb 3 nodes: %.1f MB/s", rate);
    if (full > 0 && normal > 0) {
        printf(" = %.2fx plain FULL, %.2fx plain NORMAL", rate / full,
               rate / normal);
    }
    printf("; %u failed commits retried, %lld term changes\n", failed,
           maxTerm(r) - term0);
    long long index = statusInt(r, 1, "applied_index", NULL);
    waitApplied(r, 2, index);
    waitApplied(r, 3, index);
    writtenAll(r, io1);
    cpuAll(r, cpu1);
    printf(
        "  written during the load (/proc/PID/io write_bytes - cancelled): "
        "node1 %.0f MB, "
        "node2 %.0f MB, node3 %.0f MB (%.2f, %.2f, %.2f per MB loaded)\n",
        io1[0] - io0[0], io1[1] - io0[1], io1[2] - io0[2],
        (io1[0] - io0[0]) / mb, (io1[1] - io0[1]) / mb, (io1[2] - io0[2]) / mb);
    /* Until the followers applied it, like the bytes: with the load's wall
     * time, what bounds it on this machine's cores. */
    double cpuMs = 0;
    for (int k = 0; k < 3; k++) {
        cpuMs += (cpu1[k] - cpu0[k]) * 1000 / mb;
    }
    printf(
        "  CPU during the load: node1 %.1f, node2 %.1f, node3 %.1f ms per "
        "MB loaded (all %.1f; wall %.1f ms per MB on %ld cores)\n",
        (cpu1[0] - cpu0[0]) * 1000 / mb, (cpu1[1] - cpu0[1]) * 1000 / mb,
        (cpu1[2] - cpu0[2]) * 1000 / mb, cpuMs, rate > 0 ? 1000 / rate : -1,
        sysconf(_SC_NPROCESSORS_ONLN));
    printMem(r, "loaded");
    fflush(stdout);
    printWalSizes(r, "after the load");
    probe(r);
    printMem(r, "probed");
    printWalSizes(r, "after the probe");
    if (r->o->txn_mb > 0) {
        bigTxn(r, r->o->txn_mb);
    }
    for (unsigned i = 0; i < r->o->restarts; i++) {
        double restart = restartFollower(r, 0);
        printf(
            "  restart of a SIGKILLed follower until caught up: %.2f s, "
            "%lld database(s) fetched\n",
            restart, statusInt(r, 2, "fetches", "stats"));
        fflush(stdout);
    }
    if (!r->o->no_wipe) {
        double cp = copyAndSync(r);
        double catchup = restartFollower(r, 1);
        printf(
            "  catch-up of a follower with no database: %.2f s; cp + sync "
            "of the file: %.2f s (%.1fx)\n",
            catchup, cp, catchup / cp);
        printf("  follower fetched %lld database(s), leader served %lld\n",
               statusInt(r, 2, "fetches", "stats"),
               statusInt(r, 1, "served", "stats"));
    }
    printMem(r, "end");
    fflush(stdout);
    stopCluster(r);
    return 0;
}

static int parseArgs(int argc,
                     char **argv,
                     struct options *o,
                     const char **uri,
                     long *parent)
{
    static const struct option longs[] = {
        {"mb", required_argument, NULL, 'm'},
        {"probe-seconds", required_argument, NULL, 'p'},
        {"dir", required_argument, NULL, 'd'},
        {"log-mb", required_argument, NULL, 'l'},
        {"txn-mb", required_argument, NULL, 't'},
        {"node-uri", required_argument, NULL, 'u'},
        {"parent", required_argument, NULL, 'P'},
        {"port-base", required_argument, NULL, 'b'},
        {"no-plain", no_argument, NULL, 'N'},
        {"no-wipe", no_argument, NULL, 'W'},
        {"restarts", required_argument, NULL, 'r'},
        {"trace", required_argument, NULL, 'T'},
        {"wrap", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    memset(o, 0, sizeof *o); /* log_mb, txn_mb, port_base: 0 */
    o->mb[0] = 100;
    o->mb[1] = 1000;
    o->n_sizes = 2;
    o->probe = 20;
    o->parent = "/tmp";
    o->restarts = 1;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        char *list, *tok, *save = NULL;
        switch (c) {
            case 'm':
                o->n_sizes = 0;
                list = optarg;
                while ((tok = strtok_r(list, ",", &save)) != NULL &&
                       o->n_sizes < MAX_SIZES) {
                    o->mb[o->n_sizes++] = (unsigned)strtoul(tok, NULL, 10);
                    list = NULL;
                }
                break;
            case 'p':
                o->probe = strtod(optarg, NULL);
                break;
            case 'd':
                o->parent = optarg;
                break;
            case 'l':
                o->log_mb = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 't':
                o->txn_mb = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 'u':
                *uri = optarg;
                break;
            case 'P':
                *parent = strtol(optarg, NULL, 10);
                break;
            case 'N':
                o->no_plain = 1;
                break;
            case 'W':
                o->no_wipe = 1;
                break;
            case 'r':
                o->restarts = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 'T':
                o->trace_dir = optarg;
                break;
            case 'w': {
                unsigned k = 0;
                list = optarg;
                while ((tok = strtok_r(list, " ", &save)) != NULL &&
                       k < MAX_WRAP_ARGS) {
                    o->wrap[k++] = tok;
                    list = NULL;
                }
                o->wrap[k] = NULL;
                break;
            }
            case 'b':
                o->port_base = (int)strtol(optarg, NULL, 10);
                if (o->port_base < 1 || o->port_base > 65533) {
                    fprintf(stderr,
                            "bench_scale: --port-base %s: not a "
                            "port\n",
                            optarg);
                    return -1;
                }
                break;
            default:
                fprintf(c == 'h' ? stdout : stderr,
                        "usage: bench_scale [--mb 100,1000] "
                        "[--probe-seconds 20] [--log-mb N] "
                        "[--txn-mb N] [--dir /tmp] [--port-base N] "
                        "[--no-plain] [--no-wipe] [--restarts N] "
                        "[--trace DIR] [--wrap 'CMD ARGS']\n"
                        "  --mb: sizes to load, one cluster each (4000 for "
                        "4 GB: about 7x that much free disk)\n"
                        "  --txn-mb: one transaction of N MB after the probe\n"
                        "  --port-base: nodes listen on N, N+1, N+2 (default: "
                        "ports the kernel picks)\n"
                        "  --no-plain, --no-wipe: skip the plain SQLite "
                        "loads, the wiped follower's catch-up\n"
                        "  --restarts N: SIGKILL restarts measured in a row "
                        "(default 1)\n"
                        "  --trace DIR: restarted followers log with "
                        "TPDB_TRACE=1 to DIR/restart-K.log\n"
                        "  --wrap 'CMD ARGS': restarted followers run under "
                        "CMD (e.g. 'strace -f -tt -o F')\n");
                return c == 'h' ? 1 : -1;
        }
    }
    return o->n_sizes > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct options o;
    const char *uri = NULL;
    long parent = 0;
    int parsed = parseArgs(argc, argv, &o, &uri, &parent);
    if (parsed != 0) {
        return parsed > 0 ? 0 : 2;
    }
    if (uri != NULL) {
        return childMain(uri, parent);
    }
    if (tpdb_register() != SQLITE_OK) {
        return 1;
    }
    int rc = 0;
    for (unsigned i = 0; i < o.n_sizes && rc == 0; i++) {
        struct run r = {.o = &o};
        snprintf(r.tmp, sizeof r.tmp, "%s/tpdb-scale-XXXXXX", o.parent);
        if (mkdtemp(r.tmp) == NULL) {
            perror("mkdtemp");
            return 1;
        }
        rc = runSize(&r, o.mb[i]);
        benchRemoveTree(r.tmp);
    }
    return rc == 0 ? 0 : 1;
}
