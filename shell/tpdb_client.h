/*
 * The tpdb shell's client for tpdbd's JSON-lines API: one TCP connection
 * to one node, one request line and one reply line at a time, with a
 * deadline and a cancel flag (Ctrl-C) checked while waiting. It tells a
 * request that never left (safe to send elsewhere) from one whose reply
 * never came (its outcome is unknown). Not thread-safe; one per peer.
 */
#ifndef TPDB_CLIENT_H
#define TPDB_CLIENT_H

#include <signal.h>
#include <stddef.h>

#include <jansson.h>

#define TPDB_CLIENT_ADDR_MAX 272
#define TPDB_CLIENT_ERR_MAX 512

/* Outcomes of tpdbClientCall(). */
enum {
    TPDB_CLIENT_OK = 0,
    TPDB_CLIENT_NOT_SENT,    /* nothing reached the node: retry elsewhere */
    TPDB_CLIENT_NO_REPLY,    /* sent, connection lost: outcome unknown */
    TPDB_CLIENT_TIMEOUT,     /* sent, no reply in time: outcome unknown */
    TPDB_CLIENT_INTERRUPTED, /* *cancel became set while waiting */
    TPDB_CLIENT_BAD_REPLY,   /* the reply line is not a JSON object */
};

/* A connection. fd is -1 while closed. Lives as long as its owner. */
struct tpdb_client {
    int fd;
    char addr[TPDB_CLIENT_ADDR_MAX]; /* "host:port" it connects to */
    char *buf;                       /* bytes read past the last line */
    size_t len, cap;
    volatile sig_atomic_t *cancel; /* NULL or set by a signal handler */
    int once;      /* never reconnect: state lives on this connection */
    int connected; /* it has connected at least once */
    /* The client token (tpdbd --client-tokens) sent as "token" with every
     * request that has none; NULL: none. Borrowed; set after Init. */
    const char *token;
    char errmsg[TPDB_CLIENT_ERR_MAX];
};

/* Prepares c for addr ("host:port"; host may be a name); connects
 * lazily. cancel may be NULL. */
void tpdbClientInit(struct tpdb_client *c,
                    const char *addr,
                    volatile sig_atomic_t *cancel);

/* Closes the connection if open; c may be used (reconnects) again. */
void tpdbClientClose(struct tpdb_client *c);

/* Sends req, with c->token as its "token" unless it has one, as one line
 * (connecting first if needed, or again if the node closed an idle connection,
 * unless c->once is set and it connected before: then TPDB_CLIENT_NOT_SENT) and
 * waits up to timeout_ms for the reply, which on TPDB_CLIENT_OK is stored in
 * *reply (caller json_decrefs). Any other outcome closes the connection and
 * leaves the reason in c->errmsg. req is not consumed. */
int tpdbClientCall(struct tpdb_client *c,
                   json_t *req,
                   int timeout_ms,
                   json_t **reply);

/* Reads the next reply line of a request whose reply has several lines
 * (a streamed backup), after tpdbClientCall returned its first, waiting
 * up to timeout_ms. Returns as tpdbClientCall (the line in *reply on
 * TPDB_CLIENT_OK; any other outcome closes the connection). */
int tpdbClientNext(struct tpdb_client *c, int timeout_ms, json_t **reply);

/* Splits "host:port" into host (size bytes) and *port. Returns 0, or -1
 * if addr has no valid port. */
int tpdbClientSplitAddr(const char *addr,
                        char *host,
                        size_t size,
                        unsigned *port);

#endif /* TPDB_CLIENT_H */
