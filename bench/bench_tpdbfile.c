/*
 * TPDB page file benchmark: a 3-node tpdb cluster on loopback (this process
 * is node 1, the leader; nodes 2 and 3 are this program re-run with
 * --node-uri) whose data directory holds a TPDB page file (TrashPandaDB's
 * format), loaded through the replicated tpdb_table to --mb MB (default
 * 200) in transactions of 2 MB, with a snapshot every 64 entries. It
 * prints:
 *   - load MB/s, snapshots taken per node, and each node's RSS (steady)
 *     and peak RSS (VmHWM) after the load: a snapshot names the file, it
 *     never reads it into memory;
 *   - catch-up of a follower whose whole directory was wiped (it installs
 *     a snapshot record and receives the file as a page stream from a
 *     peer): time, next to `cp` + `sync` of the file, and the largest RSS
 *     of every node sampled every 20 ms meanwhile; that node runs with
 *     TPDB_TRACE, so its log (stderr) shows when the fetch began and when
 *     the file was in;
 *   - restart of a SIGKILLed follower (the file is kept, nothing fetched);
 *   - with --delta-mb N, one commit of N MB of rows to the file the
 *     cluster now carries: the entries it took (at most 1,024 pages each)
 *     and every node's RSS and peak RSS before and after it (followers
 *     stage its parts on disk; the leader's library holds its changed
 *     pages in memory until it writes them);
 *   - whether every node's file is byte-identical at the end.
 *   bench_tpdbfile [--mb 200] [--delta-mb 0] [--dir /tmp]
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
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
#include "vfs/tpdbfile/tpdbfile.h"

#define URI_SIZE (PATH_MAX + 256)
#define ROW_BYTES 1000
#define ROWS_PER_TXN 2000
#define WAIT_MS 600000
#define FILE_NAME "big.tpdb"

struct run {
    unsigned mb;
    unsigned deltaMb; /* one commit of this many MB after the load */
    char tmp[PATH_MAX];
    int ports[3];
    pid_t child[2]; /* nodes 2 and 3 */
    sqlite3 *db;    /* node 1's connection */
    double maxRss[3];
};

static uint64_t nowNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "bench_tpdbfile: %s: %s\n", sql, err ? err : "?");
    }
    sqlite3_free(err);
    return rc;
}

static void nodeUri(const struct run *r, int id, char *uri)
{
    /* Node 1 times out first so that it wins the first election. */
    snprintf(uri, URI_SIZE,
             "file:%s/n%d/app.db?vfs=tpdb&node=%d&bind=127.0.0.1:%d&"
             "peers=1@127.0.0.1:%d,2@127.0.0.1:%d,3@127.0.0.1:%d&"
             "election_ms=%d&ready_ms=%d&snapshot_threshold=64&"
             "snapshot_trailing=16",
             r->tmp, id, id, r->ports[id - 1], r->ports[0], r->ports[1],
             r->ports[2], id == 1 ? 1000 : 5000, WAIT_MS);
}

/* A follower process: writes its status to DIR/status.json every 100 ms
 * and hands leadership back to node 1 if it gets it. */
static int childMain(const char *uri, long parent)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    sqlite3 *db = NULL;
    char dir[URI_SIZE], path[URI_SIZE + 32], tmp[URI_SIZE + 32];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)parent) {
        return 1;
    }
    snprintf(dir, sizeof dir, "%s", uri + 5); /* "file:DIR/app.db?..." */
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

static int spawnNode(struct run *r, int id)
{
    char self[PATH_MAX], uri[URI_SIZE], ppid[32], errmsg[TPDB_ERRMSG_SIZE];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        return -1;
    }
    self[len] = '\0';
    snprintf(ppid, sizeof ppid, "%ld", (long)getpid());
    nodeUri(r, id, uri);
    char *argv[] = {self, "--node-uri", uri, "--parent", ppid, NULL};
    if (benchSpawn(argv, &r->child[id - 2], errmsg) != 0) {
        fprintf(stderr, "bench_tpdbfile: %s\n", errmsg);
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

/* VmRSS or VmHWM of node id in MB. */
static double memMb(const struct run *r, int id, const char *field)
{
    char path[64], line[256];
    double kb = -1;
    if (id == 1) {
        snprintf(path, sizeof path, "/proc/self/status");
    } else {
        snprintf(path, sizeof path, "/proc/%ld/status", (long)r->child[id - 2]);
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

static void printMem(struct run *r, const char *when)
{
    printf("  RSS %-10s", when);
    for (int id = 1; id <= 3; id++) {
        printf(" node%d %6.1f MB (peak %6.1f)", id, memMb(r, id, "VmRSS:"),
               memMb(r, id, "VmHWM:"));
    }
    printf("\n");
}

/* Samples every node's RSS into r->maxRss. */
static void sampleRss(struct run *r)
{
    for (int id = 1; id <= 3; id++) {
        double mb = memMb(r, id, "VmRSS:");
        if (mb > r->maxRss[id - 1]) {
            r->maxRss[id - 1] = mb;
        }
    }
}

/* Waits until node id has applied at least `index`, sampling RSS;
 * seconds, or -1. */
static double waitApplied(struct run *r, int id, long long index)
{
    uint64_t t0 = nowNs();
    while (statusInt(r, id, "applied_index", NULL) < index) {
        if (secsSince(t0) * 1000 > WAIT_MS) {
            return -1;
        }
        sampleRss(r);
        pauseMs(20);
    }
    return secsSince(t0);
}

static int startCluster(struct run *r)
{
    char errmsg[TPDB_ERRMSG_SIZE], dir[PATH_MAX + 16], uri[URI_SIZE];
    if (benchPickPorts(r->ports, 3, errmsg) != 0) {
        fprintf(stderr, "bench_tpdbfile: %s\n", errmsg);
        return -1;
    }
    for (int id = 1; id <= 3; id++) {
        snprintf(dir, sizeof dir, "%s/n%d", r->tmp, id);
        if (mkdir(dir, 0700) != 0) {
            return -1;
        }
    }
    if (spawnNode(r, 2) != 0 || spawnNode(r, 3) != 0) {
        return -1;
    }
    nodeUri(r, 1, uri);
    if (sqlite3_open_v2(
            uri, &r->db,
            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
            NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_tpdbfile: open node 1: %s\n", tpdb_errmsg());
        return -1;
    }
    sqlite3_busy_timeout(r->db, 10000);
    for (uint64_t t0 = nowNs(); secsSince(t0) < 60;) {
        char *json = NULL;
        int leader = tpdb_status(r->db, &json) == SQLITE_OK &&
                     strstr(json, "\"role\":\"leader\"") != NULL;
        sqlite3_free(json);
        if (leader) {
            return 0;
        }
        pauseMs(50);
    }
    fprintf(stderr, "bench_tpdbfile: node 1 did not become leader\n");
    return -1;
}

/* Creates the TPDB file with table t(id INTEGER PK, v BLOB) on node 1 and
 * a tpdb_table on it. */
static int makeTable(struct run *r)
{
    char path[PATH_MAX + 32], sql[PATH_MAX + 128];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_file *f = NULL;
    struct tpdb_column cols[2] = {{"id", "integer", 0, NULL},
                                  {"v", "blob", 0, NULL}};
    snprintf(path, sizeof path, "%s/n1/%s", r->tmp, FILE_NAME);
    if (tpdb_file_open(path, TPDB_FILE_CREATE, &f, errmsg) != TPDB_OK ||
        tpdb_file_create_table(f, "t", cols, 2, 0) != TPDB_OK) {
        fprintf(stderr, "bench_tpdbfile: %s: %s\n", path,
                f != NULL ? tpdb_file_errmsg(f) : errmsg);
        tpdb_file_close(f);
        return -1;
    }
    tpdb_file_close(f);
    snprintf(sql, sizeof sql,
             "CREATE VIRTUAL TABLE temp.big USING tpdb_table('%s', 't')", path);
    return execSql(r->db, sql) == SQLITE_OK ? 0 : -1;
}

/* Inserts `rows` rows from id `first` in one transaction. */
static int insertRows(struct run *r, long long first, long long rows)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO temp.big SELECT %lld + i, randomblob(%d) FROM "
             "(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 "
             "FROM n WHERE i < %lld) SELECT i FROM n)",
             first, ROW_BYTES, rows - 1);
    return execSql(r->db, sql) == SQLITE_OK ? 0 : -1;
}

/* Loads r->mb MB of rows; MB/s, or -1. */
static double load(struct run *r)
{
    long long rows = (long long)r->mb * 1000000 / ROW_BYTES;
    uint64_t t0 = nowNs();
    for (long long id = 1; id <= rows; id += ROWS_PER_TXN) {
        if (insertRows(r, id, ROWS_PER_TXN) != 0) {
            return -1;
        }
        sampleRss(r);
    }
    return r->mb / secsSince(t0);
}

/* One commit of r->deltaMb MB of new rows, after the load; prints the
 * entries it took and every node's memory before and after. */
static int bigDelta(struct run *r)
{
    long long first = (long long)r->mb * 1000000 / ROW_BYTES + ROWS_PER_TXN;
    long long rows = (long long)r->deltaMb * 1000000 / ROW_BYTES;
    long long own0 = statusInt(r, 1, "own_entries", "stats");
    printMem(r, "pre-delta");
    uint64_t t0 = nowNs();
    if (insertRows(r, first, rows) != 0) {
        return -1;
    }
    double secs = secsSince(t0);
    long long index = statusInt(r, 1, "applied_index", NULL);
    if (waitApplied(r, 2, index) < 0 || waitApplied(r, 3, index) < 0) {
        return -1;
    }
    printf("  one commit of %u MB of rows: %.1f s, %lld entries\n", r->deltaMb,
           secs, statusInt(r, 1, "own_entries", "stats") - own0);
    printMem(r, "delta");
    memset(r->maxRss, 0, sizeof r->maxRss);
    fflush(stdout);
    return 0;
}

static void killNode(struct run *r, int id)
{
    benchKill(r->child[id - 2]);
    r->child[id - 2] = 0;
}

/* Seconds until node id, (re)started, has applied the leader's index. */
static double restartNode(struct run *r, int id)
{
    long long target = statusInt(r, 1, "applied_index", NULL);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/n%d/status.json", r->tmp, id);
    unlink(path);
    uint64_t t0 = nowNs();
    if (spawnNode(r, id) != 0 || waitApplied(r, id, target) < 0) {
        return -1;
    }
    return secsSince(t0);
}

static double copyAndSync(struct run *r)
{
    char cmd[2 * PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "cp %s/n1/%s %s/copy.tpdb && sync", r->tmp,
             FILE_NAME, r->tmp);
    uint64_t t0 = nowNs();
    int rc = system(cmd);
    double secs = secsSince(t0);
    snprintf(cmd, sizeof cmd, "%s/copy.tpdb", r->tmp);
    unlink(cmd);
    return rc == 0 ? secs : -1;
}

/* CRC-32C and size of node id's file, read in 1 MB blocks. */
static uint32_t fileCrc(struct run *r, int id, long long *size)
{
    char path[PATH_MAX + 32];
    static uint8_t buf[1 << 20];
    uint32_t crc = 0;
    size_t n;
    *size = 0;
    snprintf(path, sizeof path, "%s/n%d/%s", r->tmp, id, FILE_NAME);
    FILE *f = fopen(path, "rb");
    while (f != NULL && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        crc = tpdbCrc32c(crc, buf, n);
        *size += (long long)n;
    }
    if (f != NULL) {
        fclose(f);
    }
    return crc;
}

static void printMaxRss(struct run *r, const char *what)
{
    printf("  largest RSS during %s: node1 %.1f MB, node2 %.1f, node3 %.1f\n",
           what, r->maxRss[0], r->maxRss[1], r->maxRss[2]);
    memset(r->maxRss, 0, sizeof r->maxRss);
}

static int runBench(struct run *r)
{
    printf(
        "== TPDB file of %u MB (rows of %d bytes, %d per transaction, a "
        "snapshot every 64 entries)\n",
        r->mb, ROW_BYTES, ROWS_PER_TXN);
    if (startCluster(r) != 0 || makeTable(r) != 0) {
        return -1;
    }
    double rate = load(r);
    if (rate < 0) {
        return -1;
    }
    long long index = statusInt(r, 1, "applied_index", NULL);
    waitApplied(r, 2, index);
    waitApplied(r, 3, index);
    long long size = 0;
    fileCrc(r, 1, &size);
    printf(
        "  load: %.1f MB/s; file %.1f MB; snapshots node1 %lld, node2 "
        "%lld, node3 %lld\n",
        rate, size / 1e6, statusInt(r, 1, "snapshots", "stats"),
        statusInt(r, 2, "snapshots", "stats"),
        statusInt(r, 3, "snapshots", "stats"));
    printMem(r, "loaded");
    printMaxRss(r, "the load");
    fflush(stdout);
    if (r->deltaMb > 0 && bigDelta(r) != 0) {
        return -1;
    }

    char cmd[PATH_MAX + 32];
    killNode(r, 2);
    snprintf(cmd, sizeof cmd, "%s/n2", r->tmp);
    benchRemoveTree(cmd);
    mkdir(cmd, 0700);
    double cp = copyAndSync(r);
    long long served0 = statusInt(r, 1, "served", "stats");
    /* The catching-up node logs when it starts fetching and when the file
     * is in (milliseconds in the second field), on stderr. */
    setenv("TPDB_TRACE", "1", 1);
    double catchup = restartNode(r, 2);
    unsetenv("TPDB_TRACE");
    printf(
        "  catch-up of a wiped follower: %.2f s; cp + sync of the file: "
        "%.2f s (%.1fx); it fetched %lld file(s), the leader served "
        "%lld\n",
        catchup, cp, catchup / cp, statusInt(r, 2, "fetches", "stats"),
        statusInt(r, 1, "served", "stats") - served0);
    printMaxRss(r, "the catch-up");
    printMem(r, "caught up");
    fflush(stdout);

    killNode(r, 3);
    double restart = restartNode(r, 3);
    printf(
        "  restart of a SIGKILLed follower until caught up: %.2f s, "
        "%lld fetch(es)\n",
        restart, statusInt(r, 3, "fetches", "stats"));
    printMem(r, "end");
    long long s1 = 0, s2 = 0, s3 = 0;
    uint32_t c1 = fileCrc(r, 1, &s1), c2 = fileCrc(r, 2, &s2),
             c3 = fileCrc(r, 3, &s3);
    printf("  files byte-identical: %s (%lld bytes, crc32c %08x %08x %08x)\n",
           c1 == c2 && c1 == c3 && s1 == s2 && s1 == s3 ? "yes" : "NO", s1, c1,
           c2, c3);
    fflush(stdout);
    killNode(r, 2);
    killNode(r, 3);
    sqlite3_close(r->db);
    tpdb_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mb", required_argument, NULL, 'm'},
        {"delta-mb", required_argument, NULL, 'D'},
        {"dir", required_argument, NULL, 'd'},
        {"node-uri", required_argument, NULL, 'u'},
        {"parent", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    struct run r;
    const char *dir = "/tmp", *uri = NULL, *parent = NULL;
    int c;
    memset(&r, 0, sizeof r);
    r.mb = 200;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') {
            r.mb = (unsigned)strtoul(optarg, NULL, 10);
        } else if (c == 'D') {
            r.deltaMb = (unsigned)strtoul(optarg, NULL, 10);
        } else if (c == 'd') {
            dir = optarg;
        } else if (c == 'u') {
            uri = optarg;
        } else if (c == 'p') {
            parent = optarg;
        } else {
            fprintf(
                stderr,
                "usage: bench_tpdbfile [--mb N] [--delta-mb N] [--dir D]\n");
            return 2;
        }
    }
    if (uri != NULL) {
        return childMain(uri, parent != NULL ? strtol(parent, NULL, 10) : 0);
    }
    if (r.mb == 0) {
        fprintf(stderr, "bench_tpdbfile: --mb must be positive\n");
        return 2;
    }
    snprintf(r.tmp, sizeof r.tmp, "%s/tpdb-bench-tpdbfile-XXXXXX", dir);
    if (mkdtemp(r.tmp) == NULL) {
        fprintf(stderr, "bench_tpdbfile: mkdtemp %s: %s\n", r.tmp,
                strerror(errno));
        return 1;
    }
    if (tpdb_register() != SQLITE_OK) {
        fprintf(stderr, "bench_tpdbfile: %s\n", tpdb_errmsg());
        return 1;
    }
    int rc = runBench(&r);
    killNode(&r, 2);
    killNode(&r, 3);
    benchRemoveTree(r.tmp);
    return rc == 0 ? 0 : 1;
}
