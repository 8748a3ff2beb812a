/*
 * tpdbd's metrics (tpdbd_metrics.h): one JSON object built from one
 * tpdb_status() and tpdbd's counters, which the `metrics` action returns
 * and the Prometheus exposition text is written from, so both say the
 * same; and a minimal HTTP/1.1 server for the text.
 */
#include "shell/tpdbd_metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shell/tpdbd.h"
#include "shell/tpdbd_log.h"

#define REQUEST_MAX 8192
#define IO_MS 5000

static const long long bucketsMs[TPDBD_LATENCY_BUCKETS] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

struct tpdbd_metrics {
    struct tpdbd *d;
    int listenFd;
    int stopPipe[2];
    pthread_t thread;
};

void tpdbdMetricsObserve(struct tpdbd *d, long long ms)
{
    unsigned b = 0;
    while (b < TPDBD_LATENCY_BUCKETS && ms > bucketsMs[b]) {
        b++;
    }
    d->latency[b]++;
    d->latency_sum_ms += (unsigned long long)(ms > 0 ? ms : 0);
}

/* Writes s as a label value: backslash, quote and newline escaped. */
static void label(FILE *f, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        if (*s == '\\' || *s == '"') {
            fprintf(f, "\\%c", *s);
        } else if (*s == '\n') {
            fputs("\\n", f);
        } else {
            fputc(*s, f);
        }
    }
}

static void family(FILE *f, const char *name, const char *type, const char *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, h, name, type);
}

static long long num(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static void one(FILE *f,
                const char *name,
                const char *type,
                const char *help,
                long long v)
{
    family(f, name, type, help);
    fprintf(f, "%s %lld\n", name, v);
}

/* The "raft" object: Raft's numbers and roles from status st. */
static json_t *raftJson(struct tpdbd *d, json_t *st)
{
    const char *role = json_string_value(json_object_get(st, "role"));
    uint64_t leader = (uint64_t)num(st, "leader_id");
    const char *addr = json_string_value(json_object_get(st, "leader_address"));
    long long counts[3] = {0, 0, 0};
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        const char *r = json_string_value(json_object_get(m, "role"));
        counts[r == NULL                   ? 2
               : strcmp(r, "voter") == 0   ? 0
               : strcmp(r, "standby") == 0 ? 1
                                           : 2]++;
    }
    json_t *lj = leader != 0
                     ? json_pack("{s:I,s:s}", "raft_id", (json_int_t)leader,
                                 "address", addr != NULL ? addr : "")
                     : json_null();
    return json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:I,s:b,s:o,s:{s:I,s:I,s:I}}", "role",
        role != NULL ? role : "unavailable", "term", num(st, "term"),
        "commit_index", num(st, "commit_index"), "applied_index",
        num(st, "applied_index"), "last_index", num(st, "last_index"),
        "apply_lag", num(st, "commit_index") - num(st, "applied_index"),
        "is_leader", leader != 0 && leader == d->cfg.raft_id, "leader", lj,
        "members", "voter", (json_int_t)counts[0], "standby",
        (json_int_t)counts[1], "spare", (json_int_t)counts[2]);
}

/* The "fsm" object: the library's counters (status "stats"). */
static json_t *fsmJson(json_t *st)
{
    json_t *s = json_object_get(st, "stats");
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "commits",
        num(s, "own_entries"), "applied_entries", num(s, "applied_entries"),
        "applied_pages", num(s, "applied_pages"), "snapshots",
        num(s, "snapshots"), "snapshot_restores", num(s, "restores"), "fetches",
        num(s, "fetches"), "fetches_served", num(s, "served"), "fetching",
        num(s, "fetching"), "apply_backlog", num(s, "pending"),
        "peer_connections_refused", num(s, "refused"));
}

/* The "databases" object: {name: {applied_index, last_entry_index,
 * apply_backlog, size_bytes (absent if the file is not there)}}. */
static json_t *dbsJson(struct tpdbd *d, json_t *st)
{
    json_t *out = json_object(), *db;
    size_t i;
    json_array_foreach(json_object_get(st, "dbs"), i, db)
    {
        char path[PATH_MAX + 256];
        struct stat sb;
        const char *name = json_string_value(json_object_get(db, "name"));
        if (name == NULL) {
            continue;
        }
        json_t *o = json_pack("{s:I,s:I,s:I}", "applied_index",
                              num(db, "applied_index"), "last_entry_index",
                              num(db, "last_entry"), "apply_backlog",
                              num(db, "queued"));
        snprintf(path, sizeof path, "%s/%s", d->dir, name);
        if (o != NULL && stat(path, &sb) == 0) {
            json_object_set_new(o, "size_bytes",
                                json_integer((json_int_t)sb.st_size));
        }
        json_object_set_new(out, name, o);
    }
    return out;
}

/* The "latency" object: cumulative bucket counts, as Prometheus' (le in
 * seconds, as its label says it). */
static json_t *latencyJson(struct tpdbd *d)
{
    json_t *buckets = json_array();
    unsigned long long cumulative = 0;
    unsigned long long sum = d->latency_sum_ms;
    for (unsigned b = 0; b <= TPDBD_LATENCY_BUCKETS; b++) {
        char le[32] = "+Inf";
        cumulative += d->latency[b];
        if (b < TPDBD_LATENCY_BUCKETS) {
            snprintf(le, sizeof le, "%g", bucketsMs[b] / 1000.0);
        }
        json_array_append_new(buckets, json_pack("{s:s,s:I}", "le", le, "count",
                                                 (json_int_t)cumulative));
    }
    return json_pack("{s:o,s:f,s:I}", "buckets", buckets, "sum_seconds",
                     (double)sum / 1000.0, "count", (json_int_t)cumulative);
}

json_t *tpdbdMetricsJson(struct tpdbd *d)
{
    json_t *st = tpdbdStatus(d);
    json_t *o = json_pack(
        "{s:b,s:{s:s,s:I,s:s,s:s},s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I},s:o}",
        "up", st != NULL, "node", "node_id", d->cfg.node_id, "raft_id",
        (json_int_t)d->cfg.raft_id, "raft_addr", d->cfg.raft_addr,
        "client_addr", d->client_addr, "writes_total",
        (json_int_t)d->writes_total, "queries_total",
        (json_int_t)d->queries_total, "slow_queries_total",
        (json_int_t)d->slow_queries_total, "group_commit", "commits",
        (json_int_t)d->group_commits, "writes", (json_int_t)d->group_writes,
        "largest", (json_int_t)d->group_largest, "queued",
        (json_int_t)d->group_queued, "reruns", (json_int_t)d->group_reruns,
        "latency", latencyJson(d));
    if (o != NULL && st != NULL) {
        json_object_set_new(o, "raft", raftJson(d, st));
        json_object_set_new(o, "fsm", fsmJson(st));
        json_object_set_new(o, "databases", dbsJson(d, st));
    }
    json_decref(st);
    return o;
}

static void raftText(FILE *f, json_t *r)
{
    static const char *const roles[] = {"leader", "follower", "candidate",
                                        "unavailable"};
    const char *role = json_string_value(json_object_get(r, "role"));
    json_t *leader = json_object_get(r, "leader");
    json_t *members = json_object_get(r, "members");
    one(f, "tpdb_raft_term", "gauge", "Current Raft term.", num(r, "term"));
    one(f, "tpdb_raft_commit_index", "gauge",
        "Highest log index known committed.", num(r, "commit_index"));
    one(f, "tpdb_raft_applied_index", "gauge",
        "Highest log index whose effects are written locally.",
        num(r, "applied_index"));
    one(f, "tpdb_raft_last_index", "gauge", "Last index in the local log.",
        num(r, "last_index"));
    one(f, "tpdb_apply_lag_entries", "gauge",
        "Committed entries not yet written locally (commit - applied).",
        num(r, "apply_lag"));
    family(f, "tpdb_raft_role", "gauge", "1 for this node's Raft role.");
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        fprintf(f, "tpdb_raft_role{role=\"%s\"} %d\n", roles[i],
                role != NULL && strcmp(role, roles[i]) == 0);
    }
    one(f, "tpdb_raft_is_leader", "gauge", "1 if this node is the leader.",
        json_is_true(json_object_get(r, "is_leader")));
    family(f, "tpdb_raft_leader", "gauge",
           "The leader this node knows of (no sample if none).");
    if (json_is_object(leader)) {
        fprintf(f, "tpdb_raft_leader{raft_id=\"%lld\",address=\"",
                num(leader, "raft_id"));
        label(f, json_string_value(json_object_get(leader, "address")));
        fputs("\"} 1\n", f);
    }
    family(f, "tpdb_raft_members", "gauge", "Members of the configuration.");
    fprintf(f,
            "tpdb_raft_members{role=\"voter\"} %lld\n"
            "tpdb_raft_members{role=\"standby\"} %lld\n"
            "tpdb_raft_members{role=\"spare\"} %lld\n",
            num(members, "voter"), num(members, "standby"),
            num(members, "spare"));
}

static void fsmText(FILE *f, json_t *s)
{
    static const struct {
        const char *name, *type, *key, *help;
    } rows[] = {
        {"tpdb_applied_entries_total", "counter", "applied_entries",
         "Entries whose frames this node's state machine wrote."},
        {"tpdb_commits_total", "counter", "commits",
         "Write transactions proposed by this node and acknowledged "
         "(rate() gives commits per second)."},
        {"tpdb_applied_pages_total", "counter", "applied_pages",
         "Pages written by apply."},
        {"tpdb_snapshots_total", "counter", "snapshots",
         "Raft snapshots taken."},
        {"tpdb_snapshot_restores_total", "counter", "snapshot_restores",
         "Raft snapshots installed."},
        {"tpdb_fetches_total", "counter", "fetches",
         "Databases received as a stream from a peer."},
        {"tpdb_fetches_served_total", "counter", "fetches_served",
         "Databases streamed to peers."},
        {"tpdb_fetching", "gauge", "fetching",
         "Databases waiting for a stream now."},
        {"tpdb_apply_backlog_entries", "gauge", "apply_backlog",
         "Committed entries queued behind a busy database lock."},
        {"tpdb_peer_connections_refused_total", "counter",
         "peer_connections_refused",
         "Peer connections refused (bad key or handshake)."},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        one(f, rows[i].name, rows[i].type, rows[i].help, num(s, rows[i].key));
    }
}

static void dbText(FILE *f, json_t *dbs)
{
    static const struct {
        const char *name, *key, *help;
    } cols[] = {
        {"tpdb_database_applied_index", "applied_index",
         "Log index up to which the database is written."},
        {"tpdb_database_last_entry_index", "last_entry_index",
         "Index of the last entry that changed the database."},
        {"tpdb_database_apply_backlog_entries", "apply_backlog",
         "The database's entries waiting to be written."},
        {"tpdb_database_size_bytes", "size_bytes",
         "Size of the database file."},
    };
    const char *name;
    json_t *db;
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        family(f, cols[c].name, "gauge", cols[c].help);
        json_object_foreach(dbs, name, db)
        {
            if (json_object_get(db, cols[c].key) == NULL) {
                continue;
            }
            fprintf(f, "%s{db=\"", cols[c].name);
            label(f, name);
            fprintf(f, "\"} %lld\n", num(db, cols[c].key));
        }
    }
}

static void daemonText(FILE *f, json_t *m)
{
    json_t *node = json_object_get(m, "node");
    json_t *g = json_object_get(m, "group_commit");
    json_t *lat = json_object_get(m, "latency"), *b;
    size_t i;
    family(f, "tpdbd_node_info", "gauge", "This node's ids and addresses.");
    fputs("tpdbd_node_info{node_id=\"", f);
    label(f, json_string_value(json_object_get(node, "node_id")));
    fprintf(f, "\",raft_id=\"%llu\",raft_addr=\"",
            (unsigned long long)num(node, "raft_id"));
    label(f, json_string_value(json_object_get(node, "raft_addr")));
    fputs("\",client_addr=\"", f);
    label(f, json_string_value(json_object_get(node, "client_addr")));
    fputs("\"} 1\n", f);
    one(f, "tpdbd_writes_total", "counter", "propose requests that succeeded.",
        num(m, "writes_total"));
    one(f, "tpdbd_group_commits_total", "counter",
        "Group commits (one transaction, one Raft entry) that wrote.",
        num(g, "commits"));
    one(f, "tpdbd_group_writes_total", "counter",
        "propose requests committed in those group commits.", num(g, "writes"));
    one(f, "tpdbd_group_largest", "gauge",
        "Most propose requests in one group commit so far.", num(g, "largest"));
    one(f, "tpdbd_group_queued", "gauge",
        "propose requests waiting for their group commit to begin.",
        num(g, "queued"));
    one(f, "tpdbd_group_reruns_total", "counter",
        "Group commits whose COMMIT failed (not for replication), so that "
        "each request ran alone.",
        num(g, "reruns"));
    one(f, "tpdbd_queries_total", "counter",
        "query and local_query requests answered.", num(m, "queries_total"));
    one(f, "tpdbd_slow_queries_total", "counter",
        "Requests at least TPDB_SLOW_QUERY_MS slow.",
        num(m, "slow_queries_total"));
    family(f, "tpdbd_request_duration_seconds", "histogram",
           "Time to answer propose, query and local_query requests.");
    json_array_foreach(json_object_get(lat, "buckets"), i, b)
    {
        fprintf(f, "tpdbd_request_duration_seconds_bucket{le=\"%s\"} %lld\n",
                json_string_value(json_object_get(b, "le")), num(b, "count"));
    }
    fprintf(f,
            "tpdbd_request_duration_seconds_sum %.3f\n"
            "tpdbd_request_duration_seconds_count %lld\n",
            json_real_value(json_object_get(lat, "sum_seconds")),
            num(lat, "count"));
}

char *tpdbdMetricsText(struct tpdbd *d)
{
    char *text = NULL;
    size_t len = 0;
    json_t *m = tpdbdMetricsJson(d);
    FILE *f = m != NULL ? open_memstream(&text, &len) : NULL;
    if (f == NULL) {
        json_decref(m);
        return NULL;
    }
    int up = json_is_true(json_object_get(m, "up"));
    one(f, "tpdb_up", "gauge", "1 if the node answered its status.", up);
    if (up) {
        raftText(f, json_object_get(m, "raft"));
        fsmText(f, json_object_get(m, "fsm"));
        dbText(f, json_object_get(m, "databases"));
    }
    daemonText(f, m);
    json_decref(m);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Sends all of buf within IO_MS; returns 0 or -1. */
static int sendAll(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, IO_MS) <= 0) {
            return -1;
        }
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void reply(int fd, const char *status, const char *type, const char *b)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: "
                     "%zu\r\nConnection: close\r\n\r\n",
                     status, type, strlen(b));
    if (sendAll(fd, head, (size_t)n) == 0) {
        sendAll(fd, b, strlen(b));
    }
}

/* Reads the request head (up to the blank line) within IO_MS into buf.
 * Returns 0, or -1 if it did not come whole. */
static int readHead(int fd, char *buf, size_t size)
{
    size_t len = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long deadline = (long long)ts.tv_sec * 1000 + IO_MS;
    while (len + 1 < size) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long left =
            deadline - ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            return -1;
        }
        ssize_t n = recv(fd, buf + len, size - 1 - len, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL) {
            return 0;
        }
    }
    return -1;
}

static void serveOne(struct tpdbd_metrics *m, int fd)
{
    char req[REQUEST_MAX], method[16] = "", target[256] = "";
    const char *text = "text/plain; charset=utf-8";
    if (readHead(fd, req, sizeof req) != 0) {
        reply(fd, "400 Bad Request", text, "incomplete request\n");
        return;
    }
    if (sscanf(req, "%15s %255s HTTP/1.%*c", method, target) != 2) {
        reply(fd, "400 Bad Request", text, "bad request line\n");
        return;
    }
    target[strcspn(target, "?")] = '\0';
    if (strcmp(method, "GET") != 0) {
        reply(fd, "405 Method Not Allowed", text, "only GET\n");
        return;
    }
    if (strcmp(target, "/metrics") != 0) {
        reply(fd, "404 Not Found", text, "not found: try /metrics\n");
        return;
    }
    char *body = tpdbdMetricsText(m->d);
    if (body == NULL) {
        reply(fd, "500 Internal Server Error", text, "out of memory\n");
        return;
    }
    reply(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body);
    free(body);
}

static void *metricsThread(void *arg)
{
    struct tpdbd_metrics *m = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = m->listenFd, .events = POLLIN},
                              {.fd = m->stopPipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) {
            tpdbdLog(TPDBD_ERROR, "metrics: poll: %s", strerror(errno));
            break;
        }
        if (p[1].revents != 0) {
            break;
        }
        if (p[0].revents & POLLIN) {
            int fd = accept4(m->listenFd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                serveOne(m, fd);
                close(fd);
            }
        }
    }
    return NULL;
}

/* A listening socket on addr ("a.b.c.d:port"), or -1 with err. */
static int listenOn(const char *addr, char *err, size_t size)
{
    struct sockaddr_in sin;
    const char *colon = strrchr(addr, ':');
    char host[INET_ADDRSTRLEN];
    int one = 1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || inet_pton(AF_INET, host, &sin.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(fd, 16) != 0) {
        snprintf(err, size, "--metrics %s: %s", addr, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

int tpdbdMetricsStart(struct tpdbd_metrics **out,
                      struct tpdbd *d,
                      char *err,
                      size_t size)
{
    struct tpdbd_metrics *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, size, "--metrics: out of memory");
        return -1;
    }
    m->d = d;
    m->listenFd = listenOn(d->cfg.metrics, err, size);
    if (m->listenFd < 0) {
        goto err_after_alloc;
    }
    if (pipe2(m->stopPipe, O_CLOEXEC) != 0) {
        snprintf(err, size, "--metrics: pipe: %s", strerror(errno));
        goto err_after_listen;
    }
    if (pthread_create(&m->thread, NULL, metricsThread, m) != 0) {
        snprintf(err, size, "--metrics: cannot start its thread");
        goto err_after_pipe;
    }
    *out = m;
    return 0;
err_after_pipe:
    close(m->stopPipe[0]);
    close(m->stopPipe[1]);
err_after_listen:
    close(m->listenFd);
err_after_alloc:
    free(m);
    return -1;
}

void tpdbdMetricsStop(struct tpdbd_metrics *m)
{
    if (m == NULL) {
        return;
    }
    if (write(m->stopPipe[1], "x", 1) != 1) {
        tpdbdLog(TPDBD_WARN, "metrics: cannot wake its thread");
    }
    pthread_join(m->thread, NULL);
    close(m->stopPipe[0]);
    close(m->stopPipe[1]);
    close(m->listenFd);
    free(m);
}
