/*
 * Raft transport: our own implementation of raft's `struct raft_uv_transport`
 * over libuv TCP. Every stream starts with a handshake of ours (layout in
 * transport.c) carrying a message type, the sender's id and its raft
 * address. Type RAFT hands the stream to raft; type JOIN is a request from a
 * new node to be added to the cluster, handed to the join callback (see
 * join.h); type FETCH streams a database (fetch.h). TCP_NODELAY is set
 * on every stream. raft never reads a peer's bytes itself: each RAFT stream
 * goes through a relay (relay.h) that checks every message first. With a
 * cluster key (seal.h) every stream is mutually authenticated and sealed,
 * and a peer without the key is refused in the handshake.
 *
 * Usage: tpdbTransportInit(&t, loop), raft_uv_init(&io, loop, dir, &t.base),
 * raft_init(...). Shutdown: raft_close, then in its callback raft_uv_close,
 * then tpdbTransportClose. Every function runs on the loop's thread.
 */
#ifndef TPDB_TRANSPORT_H
#define TPDB_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "base/base.h"
#include "raftfsm/guard.h"
#include "raftfsm/nodeconf.h"
#include "raftfsm/seal.h"
#include "raftfsm/wire.h"

/* Handshake message types. */
enum {
    TPDB_HANDSHAKE_RAFT = 1,
    TPDB_HANDSHAKE_JOIN = 2,
    TPDB_HANDSHAKE_FETCH = 3 /* a database stream (fetch.h) */
};

/* Fixed part of a handshake, and the largest whole handshake. */
#define TPDB_HANDSHAKE_HDR 24
#define TPDB_HANDSHAKE_MAX (TPDB_HANDSHAKE_HDR + TPDB_ADDRESS_MAX)

/* Called with every TCP stream of raft's right after TCP_NODELAY was set on
 * it and before its relay starts. The stream belongs to the relay: only
 * inspect it. */
typedef void (*tpdb_transport_stream_cb)(void *arg, struct uv_stream_s *stream);

/* A JOIN request received by the transport. Opaque; owned by the transport
 * until tpdbTransportJoinReply. */
struct tpdb_join_req;

/* Called on the loop thread when a peer sent a JOIN handshake claiming `id`
 * and raft address `address` (valid only during the call). The callee must
 * call tpdbTransportJoinReply(req, ...) exactly once, now or later. */
typedef void (*tpdb_transport_join_cb)(void *arg,
                                       struct tpdb_join_req *req,
                                       uint64_t id,
                                       const char *address);

/* Called on the loop thread with the socket of a connection whose
 * handshake was FETCH from node `id`; the callee owns fd (blocking mode is
 * its to set) and must close it. session (NULL: a plain stream) holds the
 * sealed stream's keys, valid during the call only (copy it). */
typedef void (*tpdb_transport_fetch_cb)(
    void *arg,
    int fd,
    uint64_t id,
    const struct tpdb_seal_session *session);

/* A transport. The caller owns the memory and keeps it alive, unmoved, from
 * tpdbTransportInit until tpdbTransportClose and a loop run after it. Fields
 * after `base` are private. */
struct tpdb_conn;
struct tpdb_transport {
    /* The interface to give raft_uv_init. raft_uv_init sets base.data and
     * raft owns it from then on; the other fields are ours. */
    struct raft_uv_transport base;
    struct uv_loop_s *loop;
    uint64_t id;
    char address[TPDB_ADDRESS_MAX]; /* advertised, from init */
    char bind[TPDB_ADDRESS_MAX];    /* listen here if set */
    struct uv_tcp_s listener;
    int listener_open;
    struct uv_tcp_s reject; /* accepts and drops a connection on OOM */
    int reject_busy;
    int reject_pending;      /* another one waits for the spare handle */
    struct uv_timer_s sweep; /* closes handshakes that take too long */
    int sweep_open;
    unsigned handshake_timeout_ms; /* default 5000; tests may lower it
                                      before listen */
    int closing;
    raft_uv_accept_cb accept_cb;         /* raft's, from listen */
    raft_uv_transport_close_cb close_cb; /* raft's, from close */
    struct tpdb_conn *conns;             /* streams not yet handed over */
    unsigned long n_nodelay;             /* streams given TCP_NODELAY */
    tpdb_transport_stream_cb stream_cb;  /* optional observer */
    void *stream_cb_arg;
    tpdb_transport_join_cb join_cb; /* NULL: JOIN requests are dropped */
    void *join_cb_arg;
    tpdb_transport_fetch_cb fetch_cb; /* NULL: FETCH streams are dropped */
    void *fetch_cb_arg;
    struct tpdb_seal_keys keys; /* n == 0: plain streams */
    unsigned idle_ms;           /* an accepted stream closes after this long
                                   without a byte; default 10000 */
    unsigned per_address_max;   /* accepted streams from one IPv4 address;
                                   default 64 */
    unsigned entries_max;       /* most entries in one AppendEntries;
                                   default TPDB_WIRE_ENTRIES_MAX */
    tpdb_wire_term_fn term_fn;  /* for the wire check's term bound */
    void *term_arg;
    struct tpdb_guard guard; /* relays and refusals */
    int listen_rc;           /* libuv code of a failed listen, else 0 */
    char listen_where[TPDB_ADDRESS_MAX];
    uint32_t cluster; /* 24-bit cluster identity, 0: none */
    void (*mismatch_cb)(void *arg, const char *why);
    void *mismatch_arg;
};

/* Initialises `t` over `loop` (which must outlive it). On TPDB_OK t->base is
 * ready for raft_uv_init and tpdbTransportClose must be called eventually.
 * Errors: TPDB_NOMEM. */
int tpdbTransportInit(struct tpdb_transport *t,
                      struct uv_loop_s *loop,
                      char *errmsg);

/* Makes the listening socket bind to `address` ("IPv4:port") instead of
 * the node's advertised address, e.g. "0.0.0.0:9001", or another port when
 * a proxy forwards the advertised one. `address` is copied. Call after
 * tpdbTransportInit and before raft_init. Errors: TPDB_INVALID (unparsable). */
int tpdbTransportSetBindAddress(struct tpdb_transport *t,
                                const char *address,
                                char *errmsg);

/* Registers an observer called with every stream handed to raft (for tests
 * and diagnostics); cb NULL removes it. */
void tpdbTransportSetStreamCb(struct tpdb_transport *t,
                              tpdb_transport_stream_cb cb,
                              void *arg);

/* Registers the handler of JOIN requests; cb NULL (the default) makes the
 * transport close such connections at once. */
void tpdbTransportSetJoinCb(struct tpdb_transport *t,
                            tpdb_transport_join_cb cb,
                            void *arg);

/* Registers the handler of FETCH streams; cb NULL (the default) makes the
 * transport close them at once. */
void tpdbTransportSetFetchCb(struct tpdb_transport *t,
                             tpdb_transport_fetch_cb cb,
                             void *arg);

/* Sends `len` bytes of `buf` (copied; len <= TPDB_HANDSHAKE_MAX) to the
 * peer of a JOIN request and closes the connection. Call exactly once per
 * request, on the loop thread; safe after the transport closed (then only
 * frees the request). `req` is invalid afterwards. */
void tpdbTransportJoinReply(struct tpdb_join_req *req,
                            const void *buf,
                            size_t len);

/* Encodes a handshake of `type` from node `id` at `address` into buf
 * (TPDB_HANDSHAKE_MAX bytes). Returns its length, or 0 if id is 0 or the
 * address is empty or too long. */
size_t tpdbHandshakeEncode(uint8_t *buf,
                           int type,
                           uint64_t id,
                           const char *address);

/* Decodes the fixed part (TPDB_HANDSHAKE_HDR bytes) of a handshake. On
 * TPDB_OK sets *type, *id and *address_len (1..TPDB_ADDRESS_MAX-1 bytes
 * that follow). Errors: TPDB_PROTO (bad magic, version, type, id, length or
 * reserved field; errmsg says which). */
int tpdbHandshakeDecode(const uint8_t *hdr,
                        int *type,
                        uint64_t *id,
                        size_t *address_len,
                        char *errmsg);

/* Sets the sealed flag in an encoded handshake; tells whether one is set. */
void tpdbHandshakeSetSealed(uint8_t *buf);
int tpdbHandshakeSealed(const uint8_t *hdr);

/* Sets the 24-bit cluster identity of an encoded handshake (0: none);
 * reads it back. */
void tpdbHandshakeSetCluster(uint8_t *buf, uint32_t cluster);
uint32_t tpdbHandshakeCluster(const uint8_t *hdr);

/* The cluster identity of a peers list: a 24-bit hash, never 0, of its
 * id@address items whatever their order. */
uint32_t tpdbClusterHash(const struct raft_configuration *conf);

/* Sends `cluster` (24 bits, 0: none) in every RAFT handshake and refuses
 * RAFT streams whose sender has another non-zero one, calling
 * mismatch_cb(arg, why) on the loop thread with the reason (valid during
 * the call) each time. Call before raft_start. */
void tpdbTransportSetCluster(struct tpdb_transport *t,
                             uint32_t cluster,
                             void (*mismatch_cb)(void *arg, const char *why),
                             void *arg);

/* Makes every stream sealed with `keys` (copied; keys->n == 0: plain, the
 * default). Call before raft_init. */
void tpdbTransportSetKeys(struct tpdb_transport *t,
                          const struct tpdb_seal_keys *keys);

/* Gives the wire check the local raft's current term: fn(arg) is called on
 * the loop thread for each message. */
void tpdbTransportSetTermFn(struct tpdb_transport *t,
                            tpdb_wire_term_fn fn,
                            void *arg);

/* Connections and messages refused so far (bad handshakes, wrong keys,
 * refused messages, caps). */
unsigned long tpdbTransportRefusedCount(const struct tpdb_transport *t);

/* Parses "a.b.c.d:port" into sa. Returns TPDB_OK or TPDB_INVALID. */
int tpdbTransportParseAddress(const char *address, struct sockaddr_in *sa);

/* Number of streams on which TCP_NODELAY was set so far. */
unsigned long tpdbTransportNodelayCount(const struct tpdb_transport *t);

/* Releases what tpdbTransportInit set up. Call only once raft has closed
 * the transport (after raft_close's callback and raft_uv_close), or, if
 * raft never used it, at any time; then run the loop so that handles close.
 */
void tpdbTransportClose(struct tpdb_transport *t);

#endif /* TPDB_TRANSPORT_H */
