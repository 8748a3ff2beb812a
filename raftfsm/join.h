/*
 * Joining a running cluster through any member (URI parameter
 * join=HOST:PORT). The new node connects to the member's raft port and
 * sends a JOIN handshake (transport.h) with its id and raft address. A
 * follower answers with the leader's address (REDIRECT); the leader runs
 * raft_add then raft_assign(RAFT_VOTER) and answers OK, RETRY (e.g. another
 * change in flight) or REFUSED (e.g. the id is a member at another
 * address). A node that already is a voter gets OK at once. The client
 * retries with backoff until OK or its deadline. Everything here runs on
 * the node's loop thread and never blocks it.
 */
#ifndef TPDB_JOIN_H
#define TPDB_JOIN_H

#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <uv.h>

#include "base/base.h"
#include "raftfsm/transport.h"

/* Reply statuses, on the wire. */
enum {
    TPDB_JOIN_OK = 0,       /* a voter now (text: what happened) */
    TPDB_JOIN_REDIRECT = 1, /* text: the leader's raft address */
    TPDB_JOIN_RETRY = 2,    /* transient; text: why */
    TPDB_JOIN_REFUSED = 3   /* definite; text: why */
};

/* Reply layout: magic "TPDJ" (4), version 1 (2), status (2), text length
 * (4, at most TPDB_JOIN_TEXT_MAX), reserved 0 (4), then the text. */
#define TPDB_JOIN_REPLY_HDR 16
#define TPDB_JOIN_TEXT_MAX (TPDB_ADDRESS_MAX - 1)

/* Encodes a reply into buf (TPDB_HANDSHAKE_MAX bytes); text is truncated to
 * TPDB_JOIN_TEXT_MAX bytes. Returns the length. */
size_t tpdbJoinReplyEncode(uint8_t *buf, int status, const char *text);

/* Decodes the fixed part of a reply (TPDB_JOIN_REPLY_HDR bytes): *status
 * and the length of the text that follows. Errors: TPDB_PROTO. */
int tpdbJoinReplyDecode(const uint8_t *hdr,
                        int *status,
                        size_t *text_len,
                        char *errmsg);

/* A tpdb_transport_join_cb for a node whose `struct raft` is `arg`: answers
 * the request as described above, asynchronously when a membership change
 * is needed. */
void tpdbJoinServe(void *arg,
                   struct tpdb_join_req *req,
                   uint64_t id,
                   const char *address);

/* Called once when a join attempt ends: rc TPDB_OK (a voter now),
 * TPDB_TIMEOUT (deadline passed; msg has the last reason), TPDB_INVALID
 * (refused by the leader or a bad address). msg is valid during the call. */
typedef void (*tpdb_join_done_cb)(void *arg, int rc, const char *msg);

/* The joining side. Zero it before first use; the owner keeps it alive and
 * unmoved until tpdbJoinClientClose and a loop run after it. Private. */
struct tpdb_join_client {
    uv_loop_t *loop;
    uint64_t id;
    char address[TPDB_ADDRESS_MAX]; /* ours */
    char origin[TPDB_ADDRESS_MAX];  /* the member we were told to ask */
    char target[TPDB_ADDRESS_MAX];  /* the member asked now */
    uint64_t deadline;
    unsigned backoff_ms;
    unsigned redirects;
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    int timer_open;
    int tcp_open;
    int state;
    int result;
    const struct tpdb_seal_keys *keys; /* borrowed; n == 0: plain */
    int phase;                         /* what is being read */
    int sealed;
    struct tpdb_seal_hs hs;
    struct tpdb_seal_session session;
    uint8_t fin[TPDB_SEAL_FINISH];
    uint8_t buf[TPDB_HANDSHAKE_MAX + TPDB_SEAL_HELLO + TPDB_SEAL_OVERHEAD];
    size_t have;
    size_t want;
    char msg[TPDB_ERRMSG_SIZE];
    tpdb_join_done_cb cb;
    void *arg;
};

/* Starts asking `target` ("IPv4:port", copied) to add node `id` at
 * `address` (copied) as a voter, retrying until timeout_ms pass; with keys
 * (borrowed until the run ends; n == 0 or NULL: plain) every attempt is a
 * sealed stream, so only a member holding our key can answer; cb reports
 * the outcome once, on the loop thread. A client whose previous run ended
 * may be started again. Errors (no callback then): TPDB_INVALID (bad
 * target, or the target is this node), TPDB_BUSY (a run is in progress). */
int tpdbJoinClientStart(struct tpdb_join_client *c,
                        uv_loop_t *loop,
                        uint64_t id,
                        const char *address,
                        const char *target,
                        const struct tpdb_seal_keys *keys,
                        unsigned timeout_ms,
                        tpdb_join_done_cb cb,
                        void *arg,
                        char *errmsg);

/* Stops any run (cb is not called any more) and closes the handles. Safe on
 * a zeroed, never started client and more than once. */
void tpdbJoinClientClose(struct tpdb_join_client *c);

#endif /* TPDB_JOIN_H */
