/*
 * tpdbd's command line: TrashPandaDB 0.8's server flags with their meaning
 * and error texts (docs: tpdb-server.md), plus tpdbd's own. Also the two
 * translations raft needs: string node ids to raft's numeric ids, and host
 * names to the IPv4 "a.b.c.d:port" addresses raft's peers list holds.
 */
#ifndef TPDBD_FLAGS_H
#define TPDBD_FLAGS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define TPDBD_ID_MAX 64    /* longest node id string */
#define TPDBD_ADDR_MAX 64  /* "IPv4:port" and given "host:port" */
#define TPDBD_NODES_MAX 16 /* members named on the command line */

/* A cluster member named by --peer and/or --client-peer. */
struct tpdbd_member {
    char id[TPDBD_ID_MAX + 1];   /* the TrashPandaDB node id string */
    uint64_t raft_id;            /* tpdbdRaftId(id) */
    char raft[TPDBD_ADDR_MAX];   /* resolved IPv4:port; "" if not a --peer */
    char client[TPDBD_ADDR_MAX]; /* resolved IPv4:port; "" if unknown */
};

struct tpdbd_config {
    char node_id[TPDBD_ID_MAX + 1];
    uint64_t raft_id;                   /* tpdbdRaftId(node_id) */
    char raft_listen[TPDBD_ADDR_MAX];   /* --raft, resolved */
    char raft_addr[TPDBD_ADDR_MAX];     /* advertised (= listened) address */
    char client_listen[TPDBD_ADDR_MAX]; /* --client, resolved */
    char join[TPDBD_ADDR_MAX];          /* --join client address; "" if none */
    char data_dir[PATH_MAX];            /* "" without --data-dir */
    struct tpdbd_member members[TPDBD_NODES_MAX];
    unsigned nmembers;
    unsigned npeers;                           /* members given by --peer */
    int log_level;                             /* TPDBD_* of tpdbd_log.h */
    unsigned election_ms, ready_ms, commit_ms; /* 0: library default */
    unsigned max_clients;
    unsigned txn_idle_ms;    /* --txn-idle-ms: an idle transaction's life */
    char role[8];            /* --role: voter (default), standby or spare */
    char key_file[PATH_MAX]; /* --key-file; "" if none */
    char key_file_next[PATH_MAX];   /* --key-file-next; "" if none */
    int insecure;                   /* --insecure */
    char client_tokens[PATH_MAX];   /* --client-tokens; "" if none */
    char node_token_file[PATH_MAX]; /* --node-token-file; "" if none */
    /* --make-token ROLE [--token-name NAME]: print a new token and its
     * tokens-file line, then exit (nothing else is parsed or started). */
    char make_token[8];  /* "" unless --make-token */
    char token_name[72]; /* --token-name (default "client") */
    /* DNS discovery (tpdbd_dns.c): members and, without --node-id, the
     * node id come from resolving dns_peers after parsing. */
    char dns_peers[256];          /* --dns-peers; "" if none */
    unsigned dns_raft_port;       /* --dns-raft-port (default 9001) */
    unsigned dns_client_port;     /* --dns-client-port (default 9002) */
    unsigned dns_min;             /* --dns-minimum-cluster-size (default 3) */
    char metrics[TPDBD_ADDR_MAX]; /* --metrics, resolved; "" if none */
    int help; /* -h/--help was given: print tpdbdUsage() and exit 0 */
};

/* Parses argv into *cfg (zeroed first; defaults filled in). Returns 0, or
 * -1 with the whole message to print ("ERROR: ...") in err (size bytes).
 * Names are resolved to IPv4 here, so it may block on DNS. With
 * --dns-peers the members, raft_addr and (without --node-id) node_id and
 * raft_id are left for tpdbdDnsDiscover() (tpdbd_dns.h). */
int tpdbdParseArgs(int argc,
                   char **argv,
                   struct tpdbd_config *cfg,
                   char *err,
                   size_t size);

/* Adds a member (or fills in the given addresses of an existing one):
 * raft and client are resolved "IPv4:port" strings or "" (borrowed, copied).
 * A non-empty raft makes it an initial voter. Returns 0, or -1 with the
 * "ERROR: ..." message in err if TPDBD_NODES_MAX members exist already. */
int tpdbdMemberAdd(struct tpdbd_config *cfg,
                   const char *id,
                   const char *raft,
                   const char *client,
                   char *err,
                   size_t size);

/* Checks that no two different ids among this node and its members map
 * to one raft id. Returns 0, or -1 with the "ERROR: ..." message in err. */
int tpdbdCheckIds(const struct tpdbd_config *cfg, char *err, size_t size);

/* The usage text listing every flag; static storage. */
const char *tpdbdUsage(void);

/* raft's id for a node id string, the same on every node and every run: a
 * decimal number from 1 to 10^18-1 without leading zeros is itself, any
 * other string is its 64-bit FNV-1a hash folded to 63 bits with bit 62
 * set (so it never equals a decimal id and fits SQLite's signed integers
 * in URIs). Never 0. */
uint64_t tpdbdRaftId(const char *id);

/* The member whose raft id is raft_id, or NULL. Borrowed from cfg. */
const struct tpdbd_member *tpdbdMemberByRaftId(const struct tpdbd_config *cfg,
                                               uint64_t raft_id);

/* Resolves "host:port" to "a.b.c.d:port" (IPv4, first address) into out
 * (TPDBD_ADDR_MAX bytes). Returns 0, or -1 with the reason in err. */
int tpdbdResolve(const char *hostport, char *out, char *err, size_t size);

#endif /* TPDBD_FLAGS_H */
