/*
 * tpdbd's Prometheus endpoint (tpdbd_metrics.h): the exposition text built
 * from one tpdb_status() per scrape, and a minimal HTTP/1.1 server for it.
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

static void one(FILE *f,
                const char *name,
                const char *type,
                const char *help,
                long long v)
{
    family(f, name, type, help);
    fprintf(f, "%s %lld\n", name, v);
}

static long long num(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static void raftMetrics(FILE *f, struct tpdbd *d, json_t *st)
{
    static const char *const roles[] = {"leader", "follower", "candidate",
                                        "unavailable"};
    const char *role = json_string_value(json_object_get(st, "role"));
    one(f, "tpdb_raft_term", "gauge", "Current Raft term.", num(st, "term"));
    one(f, "tpdb_raft_commit_index", "gauge",
        "Highest log index known committed.", num(st, "commit_index"));
    one(f, "tpdb_raft_applied_index", "gauge",
        "Highest log index whose effects are written locally.",
        num(st, "applied_index"));
    one(f, "tpdb_raft_last_index", "gauge", "Last index in the local log.",
        num(st, "last_index"));
    one(f, "tpdb_apply_lag_entries", "gauge",
        "Committed entries not yet written locally (commit - applied).",
        num(st, "commit_index") - num(st, "applied_index"));
    family(f, "tpdb_raft_role", "gauge", "1 for this node's Raft role.");
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        fprintf(f, "tpdb_raft_role{role=\"%s\"} %d\n", roles[i],
                role != NULL && strcmp(role, roles[i]) == 0);
    }
    uint64_t leader = (uint64_t)num(st, "leader_id");
    one(f, "tpdb_raft_is_leader", "gauge", "1 if this node is the leader.",
        leader != 0 && leader == d->cfg.raft_id);
    family(f, "tpdb_raft_leader", "gauge",
           "The leader this node knows of (no sample if none).");
    if (leader != 0) {
        fprintf(f, "tpdb_raft_leader{raft_id=\"%llu\",address=\"",
                (unsigned long long)leader);
        label(f, json_string_value(json_object_get(st, "leader_address")));
        fputs("\"} 1\n", f);
    }
    family(f, "tpdb_raft_members", "gauge", "Members of the configuration.");
    json_t *m;
    size_t i;
    long long counts[3] = {0, 0, 0};
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        const char *r = json_string_value(json_object_get(m, "role"));
        counts[r == NULL                   ? 2
               : strcmp(r, "voter") == 0   ? 0
               : strcmp(r, "standby") == 0 ? 1
                                           : 2]++;
    }
    fprintf(f,
            "tpdb_raft_members{role=\"voter\"} %lld\n"
            "tpdb_raft_members{role=\"standby\"} %lld\n"
            "tpdb_raft_members{role=\"spare\"} %lld\n",
            counts[0], counts[1], counts[2]);
}

static void fsmMetrics(FILE *f, json_t *st)
{
    json_t *s = json_object_get(st, "stats");
    one(f, "tpdb_applied_entries_total", "counter",
        "Entries whose frames this node's state machine wrote.",
        num(s, "applied_entries"));
    one(f, "tpdb_commits_total", "counter",
        "Write transactions proposed by this node and acknowledged "
        "(rate() gives commits per second).",
        num(s, "own_entries"));
    one(f, "tpdb_applied_pages_total", "counter", "Pages written by apply.",
        num(s, "applied_pages"));
    one(f, "tpdb_snapshots_total", "counter", "Raft snapshots taken.",
        num(s, "snapshots"));
    one(f, "tpdb_snapshot_restores_total", "counter",
        "Raft snapshots installed.", num(s, "restores"));
    one(f, "tpdb_fetches_total", "counter",
        "Databases received as a stream from a peer.", num(s, "fetches"));
    one(f, "tpdb_fetches_served_total", "counter",
        "Databases streamed to peers.", num(s, "served"));
    one(f, "tpdb_fetching", "gauge", "Databases waiting for a stream now.",
        num(s, "fetching"));
    one(f, "tpdb_apply_backlog_entries", "gauge",
        "Committed entries queued behind a busy database lock.",
        num(s, "pending"));
    one(f, "tpdb_peer_connections_refused_total", "counter",
        "Peer connections refused (bad key or handshake).", num(s, "refused"));
}

static void dbMetrics(FILE *f, struct tpdbd *d, json_t *st)
{
    static const struct {
        const char *name, *key, *help;
    } cols[] = {
        {"tpdb_database_applied_index", "applied_index",
         "Log index up to which the database is written."},
        {"tpdb_database_last_entry_index", "last_entry",
         "Index of the last entry that changed the database."},
        {"tpdb_database_apply_backlog_entries", "queued",
         "The database's entries waiting to be written."},
    };
    json_t *dbs = json_object_get(st, "dbs"), *db;
    size_t i;
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        family(f, cols[c].name, "gauge", cols[c].help);
        json_array_foreach(dbs, i, db)
        {
            fprintf(f, "%s{db=\"", cols[c].name);
            label(f, json_string_value(json_object_get(db, "name")));
            fprintf(f, "\"} %lld\n", num(db, cols[c].key));
        }
    }
    family(f, "tpdb_database_size_bytes", "gauge",
           "Size of the database file.");
    json_array_foreach(dbs, i, db)
    {
        char path[PATH_MAX + 256];
        struct stat sb;
        const char *name = json_string_value(json_object_get(db, "name"));
        snprintf(path, sizeof path, "%s/%s", d->dir, name ? name : "");
        if (name != NULL && stat(path, &sb) == 0) {
            fputs("tpdb_database_size_bytes{db=\"", f);
            label(f, name);
            fprintf(f, "\"} %lld\n", (long long)sb.st_size);
        }
    }
}

static void daemonMetrics(FILE *f, struct tpdbd *d)
{
    unsigned long long cumulative = 0;
    family(f, "tpdbd_node_info", "gauge", "This node's ids and addresses.");
    fputs("tpdbd_node_info{node_id=\"", f);
    label(f, d->cfg.node_id);
    fprintf(f, "\",raft_id=\"%llu\",raft_addr=\"",
            (unsigned long long)d->cfg.raft_id);
    label(f, d->cfg.raft_addr);
    fputs("\",client_addr=\"", f);
    label(f, d->client_addr);
    fputs("\"} 1\n", f);
    one(f, "tpdbd_writes_total", "counter", "propose requests that succeeded.",
        (long long)d->writes_total);
    one(f, "tpdbd_group_commits_total", "counter",
        "Group commits (one transaction, one Raft entry) that wrote.",
        (long long)d->group_commits);
    one(f, "tpdbd_group_writes_total", "counter",
        "propose requests committed in those group commits.",
        (long long)d->group_writes);
    one(f, "tpdbd_group_largest", "gauge",
        "Most propose requests in one group commit so far.",
        (long long)d->group_largest);
    one(f, "tpdbd_group_queued", "gauge",
        "propose requests waiting for their group commit to begin.",
        (long long)d->group_queued);
    one(f, "tpdbd_queries_total", "counter",
        "query and local_query requests answered.",
        (long long)d->queries_total);
    one(f, "tpdbd_slow_queries_total", "counter",
        "Requests at least TPDB_SLOW_QUERY_MS slow.",
        (long long)d->slow_queries_total);
    family(f, "tpdbd_request_duration_seconds", "histogram",
           "Time to answer propose, query and local_query requests.");
    for (unsigned b = 0; b <= TPDBD_LATENCY_BUCKETS; b++) {
        cumulative += d->latency[b];
        if (b < TPDBD_LATENCY_BUCKETS) {
            fprintf(f,
                    "tpdbd_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                    bucketsMs[b] / 1000.0, cumulative);
        } else {
            fprintf(f,
                    "tpdbd_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                    cumulative);
        }
    }
    fprintf(f,
            "tpdbd_request_duration_seconds_sum %.3f\n"
            "tpdbd_request_duration_seconds_count %llu\n",
            (double)d->latency_sum_ms / 1000.0, cumulative);
}

char *tpdbdMetricsText(struct tpdbd *d)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        return NULL;
    }
    json_t *st = tpdbdStatus(d);
    one(f, "tpdb_up", "gauge", "1 if the node answered its status.",
        st != NULL);
    if (st != NULL) {
        raftMetrics(f, d, st);
        fsmMetrics(f, st);
        dbMetrics(f, d, st);
    }
    daemonMetrics(f, d);
    json_decref(st);
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
