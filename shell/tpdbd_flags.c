/*
 * tpdbd's command line (tpdbd_flags.h): a table of flags, each taking one
 * value ("--flag VALUE" or "--flag=VALUE"), then checks across flags in
 * TrashPandaDB's order (node id first, then peers), id mapping and address
 * resolution.
 */
#include "shell/tpdbd_flags.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shell/tpdbd_log.h"

#define DEFAULT_RAFT "0.0.0.0:9001"
#define DEFAULT_CLIENT "127.0.0.1:9002"
#define DEFAULT_MAX_CLIENTS 64
#define DEFAULT_TXN_IDLE_MS 15000

static const char usage[] =
    "usage: tpdbd --node-id ID [flags]\n"
    "       tpdbd --dns-peers NAME [flags]\n"
    "\n"
    "A tpdb replica: serves DATA_DIR/data.db (and the other databases of\n"
    "DATA_DIR) to TrashPandaDB 0.8 JSON-lines clients, replicated by Raft.\n"
    "\n"
    "  --node-id ID             this node's id (required unless\n"
    "                           --dns-peers gives it)\n"
    "  --raft HOST:PORT         Raft listen and advertised address\n"
    "                           (default " DEFAULT_RAFT
    "; 0.0.0.0 becomes the\n"
    "                           local address routing to the first peer or\n"
    "                           the --join member, else 127.0.0.1)\n"
    "  --client HOST:PORT       client JSON API address (default "
    "" DEFAULT_CLIENT
    ",\n"
    "                           loopback only; 0.0.0.0 for every interface)\n"
    "  --peer ID=HOST:PORT      another initial voter's Raft address\n"
    "                           (repeatable; the same set on every node)\n"
    "  --client-peer ID=HOST:PORT  a member's client address, used to\n"
    "                           forward writes (repeatable; optional)\n"
    "  --join HOST:PORT         client address of any member: join the\n"
    "                           running cluster through it\n"
    "  --dns-peers NAME         DNS discovery: the initial voters are the\n"
    "                           IPv4 addresses NAME resolves to, node ids\n"
    "                           are their IPs (default --node-id: this\n"
    "                           node's own); re-resolved until there are\n"
    "                           enough, for up to --ready-ms\n"
    "  --dns-raft-port PORT     the members' Raft port (default 9001)\n"
    "  --dns-client-port PORT   the members' client port (default 9002)\n"
    "  --dns-minimum-cluster-size N  addresses NAME must resolve to,\n"
    "                           this node's included (default 3)\n"
    "  --data-dir DIR           node directory, created if missing (default:\n"
    "                           a temporary directory removed at exit)\n"
    "  --log-level LEVEL        debug, info (default), warn or error\n"
    "  --election-ms N          Raft election timeout (default 1000)\n"
    "  --ready-ms N             how long start-up waits for the cluster\n"
    "                           (default 15000)\n"
    "  --commit-ms N            longest wait for a write's outcome\n"
    "                           (default 60000)\n"
    "  --max-clients N          concurrent client connections (default 64)\n"
    "  --txn-idle-ms N          roll back an interactive transaction idle\n"
    "                           this long (default 15000)\n"
    "  --role ROLE              voter (default), standby (gets the log,\n"
    "                           does not vote) or spare: this node asks the\n"
    "                           leader for that role once it is a member\n"
    "  --key-file PATH          the cluster key (64 hex digits, mode 0600;\n"
    "                           default $TPDB_REPLICATION_KEY): peers prove\n"
    "                           it and Raft traffic is encrypted\n"
    "  --key-file-next PATH     a rotation's second key, also accepted\n"
    "  --insecure               allow a non-loopback --raft without a key\n"
    "  --metrics HOST:PORT      serve Prometheus metrics over HTTP at\n"
    "                           GET /metrics (off by default)\n"
    "  --client-tokens FILE     clients must send a token (field \"token\"):\n"
    "                           FILE (mode 0600) lists their hashes and\n"
    "                           roles, one \"NAME ROLE blake2b:HASH\" a line;\n"
    "                           role read may do status, metrics, query,\n"
    "                           local_query; write may do every action.\n"
    "                           SIGHUP rereads FILE. Without it anyone who\n"
    "                           reaches --client may read and write\n"
    "  --node-token-file FILE   a write token (the secret, mode 0600) this\n"
    "                           node sends with its own requests to other\n"
    "                           members (--join, announcing itself, --role)\n"
    "                           when they require tokens\n"
    "  --make-token ROLE        print a new random token for ROLE (read or\n"
    "                           write), shown only then, and the line to\n"
    "                           append to the --client-tokens file; exit\n"
    "  --token-name NAME        the new token's name (default client)\n"
    "  -h, --help               print this text\n";

const char *tpdbdUsage(void)
{
    return usage;
}

uint64_t tpdbdRaftId(const char *id)
{
    size_t len = strlen(id);
    uint64_t h = 14695981039346656037ull;
    if (len >= 1 && len <= 18 && id[0] != '0' &&
        strspn(id, "0123456789") == len) {
        return strtoull(id, NULL, 10);
    }
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ull;
    }
    /* 63 bits with bit 62 set: above every 18-digit decimal id. */
    return (h & 0x3fffffffffffffffull) | 0x4000000000000000ull;
}

const struct tpdbd_member *tpdbdMemberByRaftId(const struct tpdbd_config *cfg,
                                               uint64_t raft_id)
{
    for (unsigned i = 0; i < cfg->nmembers; i++) {
        if (cfg->members[i].raft_id == raft_id) {
            return &cfg->members[i];
        }
    }
    return NULL;
}

int tpdbdResolve(const char *hostport, char *out, char *err, size_t size)
{
    struct addrinfo hints, *res = NULL;
    char host[TPDBD_ADDR_MAX];
    char ip[INET_ADDRSTRLEN];
    const char *colon = strrchr(hostport, ':');
    char *end = NULL;
    long port;
    if (colon == NULL || colon == hostport ||
        (size_t)(colon - hostport) >= sizeof host) {
        snprintf(err, size, "'%s' is not HOST:PORT", hostport);
        return -1;
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < 1 ||
        port > 65535) {
        snprintf(err, size, "'%s': bad port", hostport);
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rv = getaddrinfo(host, NULL, &hints, &res);
    if (rv != 0) {
        snprintf(err, size, "'%s': cannot resolve to IPv4: %s", hostport,
                 gai_strerror(rv));
        return -1;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    freeaddrinfo(res);
    snprintf(out, TPDBD_ADDR_MAX, "%s:%ld", ip, port);
    return 0;
}

/* A node id must fit raft's peers list and TrashPandaDB's JSON. */
static int idValid(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > TPDBD_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c <= ' ' || c >= 0x7f || strchr("=,@&?#%\"\\", c) != NULL) {
            return 0;
        }
    }
    return 1;
}

static struct tpdbd_member *memberFor(struct tpdbd_config *cfg,
                                      const char *id,
                                      size_t len)
{
    for (unsigned i = 0; i < cfg->nmembers; i++) {
        if (strlen(cfg->members[i].id) == len &&
            memcmp(cfg->members[i].id, id, len) == 0) {
            return &cfg->members[i];
        }
    }
    if (cfg->nmembers == TPDBD_NODES_MAX) {
        return NULL;
    }
    struct tpdbd_member *m = &cfg->members[cfg->nmembers++];
    snprintf(m->id, sizeof m->id, "%.*s", (int)len, id);
    m->raft_id = tpdbdRaftId(m->id);
    return m;
}

int tpdbdMemberAdd(struct tpdbd_config *cfg,
                   const char *id,
                   const char *raft,
                   const char *client,
                   char *err,
                   size_t size)
{
    struct tpdbd_member *m = memberFor(cfg, id, strlen(id));
    if (m == NULL) {
        snprintf(err, size, "ERROR: at most %d members may be named",
                 TPDBD_NODES_MAX);
        return -1;
    }
    if (raft[0] != '\0') {
        cfg->npeers += m->raft[0] == '\0';
        snprintf(m->raft, sizeof m->raft, "%s", raft);
    }
    if (client[0] != '\0') {
        snprintf(m->client, sizeof m->client, "%s", client);
    }
    return 0;
}

/* Parses "ID=HOST:PORT" for --peer (isClient 0) or --client-peer. */
static int memberSpec(struct tpdbd_config *cfg,
                      const char *flag,
                      const char *spec,
                      int isClient,
                      char *err,
                      size_t size)
{
    const char *eq = strchr(spec, '=');
    char id[TPDBD_ID_MAX + 2];
    char why[256];
    if (eq == NULL || (size_t)(eq - spec) > TPDBD_ID_MAX) {
        snprintf(err, size, "ERROR: %s '%s': expected ID=HOST:PORT", flag,
                 spec);
        return -1;
    }
    snprintf(id, sizeof id, "%.*s", (int)(eq - spec), spec);
    if (!idValid(id)) {
        snprintf(err, size, "ERROR: %s '%s': bad node id", flag, spec);
        return -1;
    }
    struct tpdbd_member *m = memberFor(cfg, id, strlen(id));
    if (m == NULL) {
        snprintf(err, size, "ERROR: at most %d members may be named",
                 TPDBD_NODES_MAX);
        return -1;
    }
    char *dst = isClient ? m->client : m->raft;
    if (dst[0] != '\0') {
        snprintf(err, size, "ERROR: %s names '%s' twice", flag, id);
        return -1;
    }
    if (tpdbdResolve(eq + 1, dst, why, sizeof why) != 0) {
        snprintf(err, size, "ERROR: %s %s", flag, why);
        return -1;
    }
    cfg->npeers += !isClient;
    return 0;
}

/* The raw values, gathered before any check so that errors come in
 * TrashPandaDB's order whatever the order of the flags. */
struct rawArgs {
    const char *nodeId, *raft, *client, *join, *dataDir, *logLevel;
    const char *electionMs, *readyMs, *commitMs, *maxClients;
    const char *txnIdleMs, *role;
    const char *keyFile, *keyFileNext;
    const char *clientTokens, *nodeTokenFile, *makeToken, *tokenName;
    const char *dnsPeers, *dnsRaftPort, *dnsClientPort, *dnsMin, *metrics;
    int insecure;
    const char *peers[TPDBD_NODES_MAX + 1], *clientPeers[TPDBD_NODES_MAX + 1];
    unsigned npeers, nclientPeers;
};

static const char **slotFor(struct rawArgs *raw, const char *name)
{
    static const struct {
        const char *name;
        size_t offset;
    } flags[] = {
        {"--node-id", offsetof(struct rawArgs, nodeId)},
        {"--raft", offsetof(struct rawArgs, raft)},
        {"--client", offsetof(struct rawArgs, client)},
        {"--join", offsetof(struct rawArgs, join)},
        {"--data-dir", offsetof(struct rawArgs, dataDir)},
        {"--log-level", offsetof(struct rawArgs, logLevel)},
        {"--election-ms", offsetof(struct rawArgs, electionMs)},
        {"--ready-ms", offsetof(struct rawArgs, readyMs)},
        {"--commit-ms", offsetof(struct rawArgs, commitMs)},
        {"--max-clients", offsetof(struct rawArgs, maxClients)},
        {"--txn-idle-ms", offsetof(struct rawArgs, txnIdleMs)},
        {"--role", offsetof(struct rawArgs, role)},
        {"--key-file", offsetof(struct rawArgs, keyFile)},
        {"--key-file-next", offsetof(struct rawArgs, keyFileNext)},
        {"--dns-peers", offsetof(struct rawArgs, dnsPeers)},
        {"--dns-raft-port", offsetof(struct rawArgs, dnsRaftPort)},
        {"--dns-client-port", offsetof(struct rawArgs, dnsClientPort)},
        {"--dns-minimum-cluster-size", offsetof(struct rawArgs, dnsMin)},
        {"--metrics", offsetof(struct rawArgs, metrics)},
        {"--client-tokens", offsetof(struct rawArgs, clientTokens)},
        {"--node-token-file", offsetof(struct rawArgs, nodeTokenFile)},
        {"--make-token", offsetof(struct rawArgs, makeToken)},
        {"--token-name", offsetof(struct rawArgs, tokenName)},
    };
    if (strcmp(name, "--peer") == 0 && raw->npeers <= TPDBD_NODES_MAX) {
        return &raw->peers[raw->npeers++];
    }
    if (strcmp(name, "--client-peer") == 0 &&
        raw->nclientPeers <= TPDBD_NODES_MAX) {
        return &raw->clientPeers[raw->nclientPeers++];
    }
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (strcmp(name, flags[i].name) == 0) {
            return (const char **)((char *)raw + flags[i].offset);
        }
    }
    return NULL;
}

/* Splits argv into raw values; sets cfg->help. */
static int collect(int argc,
                   char **argv,
                   struct rawArgs *raw,
                   struct tpdbd_config *cfg,
                   char *err,
                   size_t size)
{
    for (int i = 1; i < argc; i++) {
        char name[64];
        const char *arg = argv[i];
        const char *eq = strchr(arg, '=');
        const char *value = NULL;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            cfg->help = 1;
            continue;
        }
        if (strcmp(arg, "--insecure") == 0) {
            raw->insecure = 1;
            continue;
        }
        size_t nlen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        snprintf(name, sizeof name, "%.*s", (int)nlen, arg);
        const char **slot = slotFor(raw, name);
        if (slot == NULL) {
            snprintf(err, size, "ERROR: unknown flag '%s' (see --help)", arg);
            return -1;
        }
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, size, "ERROR: %s needs a value", name);
            return -1;
        }
        *slot = value;
    }
    return 0;
}

static int parseUnsigned(const char *flag,
                         const char *text,
                         unsigned *out,
                         char *err,
                         size_t size)
{
    char *end = NULL;
    unsigned long v;
    if (text == NULL) {
        return 0;
    }
    errno = 0;
    v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v == 0 || v > 3600000) {
        snprintf(err, size,
                 "ERROR: %s '%s': expected a number from 1 to "
                 "3600000",
                 flag, text);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* A number from lo to hi, or the default def if the flag is absent. */
static int parseRange(const char *flag,
                      const char *text,
                      unsigned lo,
                      unsigned hi,
                      unsigned def,
                      unsigned *out,
                      char *err,
                      size_t size)
{
    char *end = NULL;
    unsigned long v;
    *out = def;
    if (text == NULL) {
        return 0;
    }
    errno = 0;
    v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < lo ||
        v > hi) {
        snprintf(err, size, "ERROR: %s '%s': expected a number from %u to %u",
                 flag, text, lo, hi);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* The --dns-* flags. Discovery itself runs later (tpdbd_dns.c); here the
 * values are checked, and the defaults of --raft and --client follow the
 * DNS ports (TrashPandaDB listens on 0.0.0.0:9001; tpdbd's client API
 * stays on loopback unless --client says otherwise). */
static int parseDns(struct rawArgs *raw,
                    struct tpdbd_config *cfg,
                    char *raftDefault,
                    char *clientDefault,
                    char *err,
                    size_t size)
{
    int dns = raw->dnsPeers != NULL;
    if (!dns && (raw->dnsRaftPort || raw->dnsClientPort || raw->dnsMin)) {
        snprintf(err, size,
                 "ERROR: --dns-raft-port, --dns-client-port and "
                 "--dns-minimum-cluster-size need --dns-peers");
        return -1;
    }
    if (parseRange("--dns-raft-port", raw->dnsRaftPort, 1, 65535, 9001,
                   &cfg->dns_raft_port, err, size) != 0 ||
        parseRange("--dns-client-port", raw->dnsClientPort, 1, 65535, 9002,
                   &cfg->dns_client_port, err, size) != 0 ||
        parseRange("--dns-minimum-cluster-size", raw->dnsMin, 1,
                   TPDBD_NODES_MAX, 3, &cfg->dns_min, err, size) != 0) {
        return -1;
    }
    if (!dns) {
        return 0;
    }
    if (raw->dnsPeers[0] == '\0' ||
        strlen(raw->dnsPeers) >= sizeof cfg->dns_peers) {
        snprintf(err, size, "ERROR: --dns-peers: empty or too long");
        return -1;
    }
    if (raw->npeers > 0 || raw->join != NULL) {
        snprintf(err, size,
                 "ERROR: --dns-peers names the initial voters: it cannot be "
                 "combined with %s",
                 raw->npeers > 0 ? "--peer" : "--join");
        return -1;
    }
    snprintf(cfg->dns_peers, sizeof cfg->dns_peers, "%s", raw->dnsPeers);
    snprintf(raftDefault, TPDBD_ADDR_MAX, "0.0.0.0:%u", cfg->dns_raft_port);
    snprintf(clientDefault, TPDBD_ADDR_MAX, "127.0.0.1:%u",
             cfg->dns_client_port);
    return 0;
}

/* In DNS mode the other nodes reach this one at its IP and
 * --dns-raft-port, so --raft must listen on that port. */
static int checkDnsRaftPort(const struct tpdbd_config *cfg,
                            char *err,
                            size_t size)
{
    const char *colon = strrchr(cfg->raft_listen, ':');
    unsigned port = (unsigned)atoi(colon + 1);
    if (cfg->dns_peers[0] == '\0' || port == cfg->dns_raft_port) {
        return 0;
    }
    snprintf(err, size,
             "ERROR: --raft port %u differs from --dns-raft-port %u: the "
             "other nodes reach this one at its IP and --dns-raft-port",
             port, cfg->dns_raft_port);
    return -1;
}

/* TrashPandaDB's check that --peer does not name this node. */
static int checkPeersNotSelf(const struct rawArgs *raw,
                             const char *self,
                             char *err,
                             size_t size)
{
    char specs[1024] = "";
    size_t idLen = strlen(self);
    int found = 0;
    for (unsigned i = 0; i < raw->npeers; i++) {
        size_t used = strlen(specs);
        snprintf(specs + used, sizeof specs - used, "%s%s", i ? ", " : "",
                 raw->peers[i]);
        found |= idLen > 0 && strncmp(raw->peers[i], self, idLen) == 0 &&
                 raw->peers[i][idLen] == '=';
    }
    if (found) {
        snprintf(err, size,
                 "ERROR: --peer includes this node's own ID '%s': %s. Remove "
                 "it.",
                 self, specs);
        return -1;
    }
    return 0;
}

/* Two different id strings with one raft id would make one node of two. */
int tpdbdCheckIds(const struct tpdbd_config *cfg, char *err, size_t size)
{
    for (unsigned i = 0; i < cfg->nmembers; i++) {
        const struct tpdbd_member *a = &cfg->members[i];
        if (strcmp(a->id, cfg->node_id) != 0 && a->raft_id == cfg->raft_id) {
            snprintf(err, size,
                     "ERROR: node ids '%s' and '%s' map to the same raft id "
                     "%llu; rename one",
                     a->id, cfg->node_id, (unsigned long long)a->raft_id);
            return -1;
        }
        for (unsigned j = i + 1; j < cfg->nmembers; j++) {
            if (a->raft_id == cfg->members[j].raft_id) {
                snprintf(err, size,
                         "ERROR: node ids '%s' and '%s' map to the same raft "
                         "id %llu; rename one",
                         a->id, cfg->members[j].id,
                         (unsigned long long)a->raft_id);
                return -1;
            }
        }
    }
    return 0;
}

/* The local IPv4 address the kernel would use to reach target
 * ("a.b.c.d:port"), found by connecting a UDP socket (sends nothing). */
static int routeAddress(const char *target, char *ip, size_t size)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    char host[INET_ADDRSTRLEN];
    const char *colon = strrchr(target, ':');
    int fd, rc = -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - target), target);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1 ||
        (fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0 &&
        inet_ntop(AF_INET, &sin.sin_addr, ip, (socklen_t)size) != NULL) {
        rc = 0;
    }
    close(fd);
    return rc;
}

/* Raft listens on, and is known by, one address: 0.0.0.0 cannot be it. */
static void advertisedAddress(struct tpdbd_config *cfg)
{
    char ip[INET_ADDRSTRLEN] = "127.0.0.1";
    const char *colon = strrchr(cfg->raft_listen, ':');
    const char *target = cfg->join[0] ? cfg->join : NULL;
    if (strncmp(cfg->raft_listen, "0.0.0.0:", 8) != 0) {
        snprintf(cfg->raft_addr, sizeof cfg->raft_addr, "%s", cfg->raft_listen);
        return;
    }
    for (unsigned i = 0; target == NULL && i < cfg->nmembers; i++) {
        if (cfg->members[i].raft[0] != '\0') {
            target = cfg->members[i].raft;
        }
    }
    if (target == NULL || routeAddress(target, ip, sizeof ip) != 0) {
        snprintf(ip, sizeof ip, "127.0.0.1");
    }
    snprintf(cfg->raft_addr, sizeof cfg->raft_addr, "%s%s", ip, colon);
}

static int resolveAll(const struct rawArgs *raw,
                      const char *raftDefault,
                      const char *clientDefault,
                      struct tpdbd_config *cfg,
                      char *err,
                      size_t size)
{
    char why[256];
    const char *flag = "--raft";
    int rc = tpdbdResolve(raw->raft ? raw->raft : raftDefault, cfg->raft_listen,
                          why, sizeof why);
    if (rc == 0) {
        flag = "--client";
        rc = tpdbdResolve(raw->client ? raw->client : clientDefault,
                          cfg->client_listen, why, sizeof why);
    }
    if (rc == 0 && raw->metrics != NULL) {
        flag = "--metrics";
        rc = tpdbdResolve(raw->metrics, cfg->metrics, why, sizeof why);
    }
    if (rc == 0 && raw->join != NULL) {
        flag = "--join";
        rc = tpdbdResolve(raw->join, cfg->join, why, sizeof why);
    }
    if (rc != 0) {
        snprintf(err, size, "ERROR: %s %s", flag, why);
        return -1;
    }
    for (unsigned i = 0; rc == 0 && i < raw->npeers; i++) {
        rc = memberSpec(cfg, "--peer", raw->peers[i], 0, err, size);
    }
    for (unsigned i = 0; rc == 0 && i < raw->nclientPeers; i++) {
        rc =
            memberSpec(cfg, "--client-peer", raw->clientPeers[i], 1, err, size);
    }
    return rc;
}

static int parseNumbers(const struct rawArgs *raw,
                        struct tpdbd_config *cfg,
                        char *err,
                        size_t size)
{
    cfg->max_clients = DEFAULT_MAX_CLIENTS;
    cfg->txn_idle_ms = DEFAULT_TXN_IDLE_MS;
    cfg->log_level = TPDBD_INFO;
    snprintf(cfg->role, sizeof cfg->role, "%s",
             raw->role != NULL ? raw->role : "voter");
    if (strcmp(cfg->role, "voter") != 0 && strcmp(cfg->role, "standby") != 0 &&
        strcmp(cfg->role, "spare") != 0) {
        snprintf(err, size,
                 "ERROR: --role '%.32s': expected voter, standby or spare",
                 raw->role);
        return -1;
    }
    if (raw->logLevel != NULL &&
        tpdbdLogParse(raw->logLevel, &cfg->log_level) != 0) {
        snprintf(err, size,
                 "ERROR: --log-level '%s': expected debug, info, warn or "
                 "error",
                 raw->logLevel);
        return -1;
    }
    if (parseUnsigned("--election-ms", raw->electionMs, &cfg->election_ms, err,
                      size) != 0 ||
        parseUnsigned("--ready-ms", raw->readyMs, &cfg->ready_ms, err, size) !=
            0 ||
        parseUnsigned("--commit-ms", raw->commitMs, &cfg->commit_ms, err,
                      size) != 0 ||
        parseUnsigned("--max-clients", raw->maxClients, &cfg->max_clients, err,
                      size) != 0 ||
        parseUnsigned("--txn-idle-ms", raw->txnIdleMs, &cfg->txn_idle_ms, err,
                      size) != 0) {
        return -1;
    }
    return 0;
}

/* Copies an optional path flag's value (dst holds PATH_MAX bytes). */
static int copyPath(const char *flag,
                    const char *value,
                    char *dst,
                    char *err,
                    size_t size)
{
    if (value == NULL) {
        return 0;
    }
    if (value[0] == '\0' || strlen(value) >= PATH_MAX) {
        snprintf(err, size, "ERROR: %s: empty or too long", flag);
        return -1;
    }
    snprintf(dst, PATH_MAX, "%s", value);
    return 0;
}

int tpdbdParseArgs(int argc,
                   char **argv,
                   struct tpdbd_config *cfg,
                   char *err,
                   size_t size)
{
    struct rawArgs raw;
    char raftDefault[TPDBD_ADDR_MAX] = DEFAULT_RAFT;
    char clientDefault[TPDBD_ADDR_MAX] = DEFAULT_CLIENT;
    memset(cfg, 0, sizeof *cfg);
    memset(&raw, 0, sizeof raw);
    if (collect(argc, argv, &raw, cfg, err, size) != 0) {
        return -1;
    }
    if (cfg->help) {
        return 0;
    }
    if (raw.makeToken != NULL) {
        snprintf(cfg->make_token, sizeof cfg->make_token, "%.7s",
                 raw.makeToken);
        snprintf(cfg->token_name, sizeof cfg->token_name, "%.71s",
                 raw.tokenName != NULL ? raw.tokenName : "client");
        return 0;
    }
    if ((raw.nodeId == NULL || raw.nodeId[0] == '\0') && raw.dnsPeers == NULL) {
        snprintf(err, size,
                 "ERROR: --node-id is required (or use --dns-peers so it can "
                 "be auto-detected)");
        return -1;
    }
    if (raw.nodeId != NULL && !idValid(raw.nodeId)) {
        snprintf(err, size,
                 "ERROR: --node-id '%s': 1-%d printable characters, none of "
                 "=,@&?#%%\"\\ or spaces",
                 raw.nodeId, TPDBD_ID_MAX);
        return -1;
    }
    if (raw.nodeId != NULL) {
        snprintf(cfg->node_id, sizeof cfg->node_id, "%s", raw.nodeId);
        cfg->raft_id = tpdbdRaftId(cfg->node_id);
    }
    if (raw.npeers > TPDBD_NODES_MAX || raw.nclientPeers > TPDBD_NODES_MAX) {
        snprintf(err, size, "ERROR: at most %d --peer and %d --client-peer",
                 TPDBD_NODES_MAX, TPDBD_NODES_MAX);
        return -1;
    }
    if (checkPeersNotSelf(&raw, cfg->node_id, err, size) != 0 ||
        parseDns(&raw, cfg, raftDefault, clientDefault, err, size) != 0 ||
        parseNumbers(&raw, cfg, err, size) != 0 ||
        resolveAll(&raw, raftDefault, clientDefault, cfg, err, size) != 0 ||
        checkDnsRaftPort(cfg, err, size) != 0 ||
        (cfg->dns_peers[0] == '\0' && tpdbdCheckIds(cfg, err, size) != 0)) {
        return -1;
    }
    if (raw.dataDir != NULL) {
        if (strlen(raw.dataDir) + 32 >= sizeof cfg->data_dir) {
            snprintf(err, size, "ERROR: --data-dir: path too long");
            return -1;
        }
        snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", raw.dataDir);
    }
    if (copyPath("--key-file", raw.keyFile, cfg->key_file, err, size) != 0 ||
        copyPath("--key-file-next", raw.keyFileNext, cfg->key_file_next, err,
                 size) != 0 ||
        copyPath("--client-tokens", raw.clientTokens, cfg->client_tokens, err,
                 size) != 0 ||
        copyPath("--node-token-file", raw.nodeTokenFile, cfg->node_token_file,
                 err, size) != 0) {
        return -1;
    }
    cfg->insecure = raw.insecure;
    if (cfg->dns_peers[0] == '\0') {
        advertisedAddress(cfg);
    }
    return 0;
}
