/*
 * tpdbd's DNS discovery (tpdbd_dns.h): one lookup per attempt, the checks
 * in TrashPandaDB's order (list, size guard, own IP), then the members.
 */
#include "shell/tpdbd_dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "shell/tpdbd_log.h"

#define RETRY_MS 1000
#define DEFAULT_WAIT_MS 15000

/* The distinct IPv4 addresses of one lookup, in the resolver's order. */
struct dnsList {
    char ip[TPDBD_NODES_MAX + 1][INET_ADDRSTRLEN];
    unsigned n;
    unsigned ipv6; /* IPv6 addresses seen and ignored */
    int more;      /* more than TPDBD_NODES_MAX addresses */
};

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listHas(const struct dnsList *l, const char *ip)
{
    for (unsigned i = 0; i < l->n; i++) {
        if (strcmp(l->ip[i], ip) == 0) {
            return 1;
        }
    }
    return 0;
}

static void listAdd(struct dnsList *l, const char *ip)
{
    if (listHas(l, ip)) {
        return;
    }
    if (l->n == TPDBD_NODES_MAX) {
        l->more = 1;
        return;
    }
    snprintf(l->ip[l->n++], INET_ADDRSTRLEN, "%s", ip);
}

/* "a, b, c" into out. */
static void listJoin(const struct dnsList *l, char *out, size_t size)
{
    out[0] = '\0';
    for (unsigned i = 0; i < l->n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? ", " : "", l->ip[i]);
    }
}

/* getaddrinfo(host, port, STREAM/TCP) with no family filter, as
 * TrashPandaDB; IPv6 results are counted and left out. */
static int lookup(const char *host,
                  unsigned port,
                  struct dnsList *l,
                  char *why,
                  size_t size)
{
    struct addrinfo hints, *res = NULL;
    char service[16];
    memset(l, 0, sizeof *l);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(service, sizeof service, "%u", port);
    int rv = getaddrinfo(host, service, &hints, &res);
    if (rv != 0) {
        snprintf(why, size, "ERROR: --dns-peers %s: cannot resolve: %s", host,
                 gai_strerror(rv));
        return -1;
    }
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        char ip[INET_ADDRSTRLEN];
        if (a->ai_family == AF_INET6) {
            l->ipv6++;
        } else if (a->ai_family == AF_INET &&
                   inet_ntop(AF_INET,
                             &((struct sockaddr_in *)a->ai_addr)->sin_addr, ip,
                             sizeof ip) != NULL) {
            listAdd(l, ip);
        }
    }
    freeaddrinfo(res);
    return 0;
}

/* Whether a socket can bind to ip: the address is this machine's. */
static int bindable(const char *ip)
{
    struct sockaddr_in sin;
    int ok = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    if (fd < 0 || inet_pton(AF_INET, ip, &sin.sin_addr) != 1) {
        if (fd >= 0) {
            close(fd);
        }
        return 0;
    }
    ok = bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0;
    close(fd);
    return ok;
}

/* For --raft 0.0.0.0: the first address of the host name that is listed,
 * else the only listed address of this machine. */
static int ownFromHostname(const struct dnsList *l, char *own)
{
    char name[256];
    struct dnsList mine;
    char why[256];
    unsigned local = 0;
    if (gethostname(name, sizeof name) == 0 &&
        lookup(name, 1, &mine, why, sizeof why) == 0) {
        for (unsigned i = 0; i < mine.n; i++) {
            if (listHas(l, mine.ip[i])) {
                snprintf(own, INET_ADDRSTRLEN, "%s", mine.ip[i]);
                return 0;
            }
        }
    }
    for (unsigned i = 0; i < l->n; i++) {
        if (bindable(l->ip[i])) {
            snprintf(own, INET_ADDRSTRLEN, "%s", l->ip[i]);
            local++;
        }
    }
    return local == 1 ? 0 : -1;
}

/* This node's own address in l: the --raft host, or for 0.0.0.0 as
 * ownFromHostname(). */
static int ownIp(const struct tpdbd_config *cfg,
                 const struct dnsList *l,
                 char *own)
{
    const char *colon = strrchr(cfg->raft_listen, ':');
    char host[INET_ADDRSTRLEN];
    snprintf(host, sizeof host, "%.*s", (int)(colon - cfg->raft_listen),
             cfg->raft_listen);
    if (strcmp(host, "0.0.0.0") == 0) {
        return ownFromHostname(l, own);
    }
    if (!listHas(l, host)) {
        return -1;
    }
    snprintf(own, INET_ADDRSTRLEN, "%s", host);
    return 0;
}

/* What the last attempt logged, so that each state is logged once. */
struct dnsSeen {
    char list[1024];
    char why[1024];
};

/* One attempt. Returns 0 with own set, 1 (not yet: why says why, worth
 * trying again) or -1 (why says why, retrying cannot help). */
static int attempt(const struct tpdbd_config *cfg,
                   struct dnsList *l,
                   char *own,
                   struct dnsSeen *seen,
                   char *why,
                   size_t size)
{
    char list[1024];
    if (lookup(cfg->dns_peers, cfg->dns_raft_port, l, why, size) != 0) {
        return 1;
    }
    listJoin(l, list, sizeof list);
    if (strcmp(list, seen->list) != 0) {
        snprintf(seen->list, sizeof seen->list, "%s", list);
        tpdbdLog(TPDBD_INFO, "DNS %s → %s (%u address%s)", cfg->dns_peers, list,
                 l->n, l->n == 1 ? "" : "es");
        if (l->ipv6 > 0) {
            tpdbdLog(TPDBD_WARN, "DNS %s: %u IPv6 addresses ignored",
                     cfg->dns_peers, l->ipv6);
        }
    }
    if (l->more) {
        snprintf(why, size,
                 "ERROR: --dns-peers %s resolves to more than %d "
                 "addresses",
                 cfg->dns_peers, TPDBD_NODES_MAX);
        return -1;
    }
    if (l->n == 0) {
        snprintf(why, size, "ERROR: peer IP list is empty");
        return 1;
    }
    if (l->n < cfg->dns_min) {
        snprintf(why, size,
                 "ERROR: --dns-minimum-cluster-size is %u but resolved to "
                 "only %u address%s (%s). Update the DNS record or lower "
                 "--dns-minimum-cluster-size.",
                 cfg->dns_min, l->n, l->n == 1 ? "" : "es", list);
        return 1;
    }
    if (ownIp(cfg, l, own) != 0) {
        snprintf(why, size,
                 "ERROR: this node's address is not among the addresses of "
                 "%s (%s): give --raft IP:%u with this node's IP",
                 cfg->dns_peers, list, cfg->dns_raft_port);
        return 1;
    }
    return 0;
}

/* Waits RETRY_MS, or until the deadline if that is sooner. Returns 1 as
 * soon as stopFd is readable (a signal asked to stop), else 0. */
static int retryPause(long long deadline, int stopFd, const sigset_t *wait_mask)
{
    long long left = deadline - nowMs();
    long long ms = left < RETRY_MS ? left : RETRY_MS;
    struct timespec ts = {.tv_sec = ms > 0 ? ms / 1000 : 0,
                          .tv_nsec = ms > 0 ? (ms % 1000) * 1000000 : 0};
    struct pollfd p = {.fd = stopFd, .events = POLLIN};
    return ppoll(&p, stopFd >= 0 ? 1 : 0, &ts, wait_mask) > 0;
}

/* Fills cfg from a list that passed every check. */
static int apply(struct tpdbd_config *cfg,
                 const struct dnsList *l,
                 const char *own,
                 char *err,
                 size_t size)
{
    if (cfg->node_id[0] != '\0' && strcmp(cfg->node_id, own) != 0) {
        snprintf(err, size,
                 "ERROR: --node-id '%s' with --dns-peers must be this node's "
                 "IP %s: the other nodes know it by its IP",
                 cfg->node_id, own);
        return -1;
    }
    snprintf(cfg->node_id, sizeof cfg->node_id, "%s", own);
    cfg->raft_id = tpdbdRaftId(cfg->node_id);
    snprintf(cfg->raft_addr, sizeof cfg->raft_addr, "%s:%u", own,
             cfg->dns_raft_port);
    for (unsigned i = 0; i < l->n; i++) {
        char raft[TPDBD_ADDR_MAX], client[TPDBD_ADDR_MAX];
        if (strcmp(l->ip[i], own) == 0) {
            continue;
        }
        snprintf(raft, sizeof raft, "%s:%u", l->ip[i], cfg->dns_raft_port);
        snprintf(client, sizeof client, "%s:%u", l->ip[i],
                 cfg->dns_client_port);
        if (tpdbdMemberAdd(cfg, l->ip[i], raft, client, err, size) != 0) {
            return -1;
        }
    }
    if (strncmp(cfg->client_listen, "127.", 4) == 0 &&
        strncmp(own, "127.", 4) != 0) {
        tpdbdLog(TPDBD_WARN,
                 "the client API listens on %s only: other nodes cannot "
                 "forward writes to this one; give --client 0.0.0.0:%u",
                 cfg->client_listen, cfg->dns_client_port);
    }
    return tpdbdCheckIds(cfg, err, size);
}

int tpdbdDnsDiscover(struct tpdbd_config *cfg,
                     int stopFd,
                     const sigset_t *wait_mask,
                     char *err,
                     size_t size)
{
    unsigned wait = cfg->ready_ms ? cfg->ready_ms : DEFAULT_WAIT_MS;
    long long deadline = nowMs() + wait;
    struct dnsSeen seen;
    struct dnsList l;
    char own[INET_ADDRSTRLEN] = "", why[1024];
    memset(&seen, 0, sizeof seen);
    for (;;) {
        int rc = attempt(cfg, &l, own, &seen, why, sizeof why);
        if (rc == 0) {
            break;
        }
        if (rc < 0 || nowMs() >= deadline) {
            snprintf(err, size, "%s", why);
            return -1;
        }
        if (strcmp(why, seen.why) != 0) {
            snprintf(seen.why, sizeof seen.why, "%s", why);
            /* The same text as the final error, without "ERROR: ". */
            tpdbdLog(TPDBD_WARN,
                     "waiting for the cluster (%s); resolving again every %d "
                     "ms for up to %u ms",
                     why + 7, RETRY_MS, wait);
        }
        if (retryPause(deadline, stopFd, wait_mask)) {
            return 1;
        }
    }
    tpdbdLog(TPDBD_INFO, "Own IP: %s", own);
    return apply(cfg, &l, own, err, size);
}
