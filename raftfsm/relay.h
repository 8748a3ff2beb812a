/*
 * Relay between a peer's TCP stream and raft. raft_uv decodes the messages
 * of the streams it gets trusting every length, so it never gets the TCP
 * stream: it gets one end of a socketpair (a uv_pipe_t, allocated with
 * raft_malloc because raft frees it) and the relay, on the loop thread,
 * passes bytes between the socket and the other end. Bytes from the peer go
 * through the wire check (wire.h) and only whole checked units reach raft;
 * bytes raft writes go to the peer as they are. With a session (seal.h)
 * both directions are sealed records instead of plain bytes.
 *
 * Limits: reading from one side stops while the other side's write queue
 * holds more than TPDB_RELAY_QUEUE_MAX bytes, and a relay of an accepted
 * stream closes when the peer sent nothing for idle_ms.
 */
#ifndef TPDB_RELAY_H
#define TPDB_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "raftfsm/seal.h"
#include "raftfsm/wire.h"

/* Most bytes queued towards one side before the other side is not read. */
#define TPDB_RELAY_QUEUE_MAX (4u << 20)

struct tpdb_relay;

/* Called once when a relay has closed all its handles (from a libuv close
 * callback). The relay is freed right after the call. */
typedef void (*tpdb_relay_closed_cb)(void *arg, struct tpdb_relay *r);

/* Called when the relay refuses the peer's bytes, just before it closes;
 * why is valid during the call. */
typedef void (*tpdb_relay_refused_cb)(void *arg,
                                      struct tpdb_relay *r,
                                      const char *why);

/* What a relay needs besides its socket. Copied by tpdbRelayStart. */
struct tpdb_relay_config {
    uint64_t peer;    /* the peer's node id, for log lines */
    unsigned idle_ms; /* 0: never idle out (streams we connected) */
    struct tpdb_wire_limits limits;
    tpdb_relay_closed_cb closed_cb;
    tpdb_relay_refused_cb refused_cb; /* may be NULL */
    void *arg;                        /* for both callbacks */
};

/* Takes over `tcp` (initialised on `loop`, allocated with raft_malloc,
 * connected, not reading) and starts relaying. `session` (NULL: plain) is
 * copied (the caller wipes its copy). On TPDB_OK *out is the relay (valid
 * until its closed_cb), *raft_side a stream for raft (raft_malloc'ed; raft
 * owns it and frees it after uv_close) and the relay owns tcp until it
 * closes. On error tcp is left to the caller.
 * Errors: TPDB_NOMEM, TPDB_IOERR (socketpair failed). */
int tpdbRelayStart(struct uv_loop_s *loop,
                   struct uv_tcp_s *tcp,
                   const struct tpdb_relay_config *cfg,
                   const struct tpdb_seal_session *session,
                   struct tpdb_relay **out,
                   struct uv_stream_s **raft_side,
                   char *errmsg);

/* Closes both sides; closed_cb follows from the loop. Idempotent. */
void tpdbRelayClose(struct tpdb_relay *r);

/* The peer's IPv4 address (network order) as taken at start; 0 if unknown. */
uint32_t tpdbRelayPeerIp(const struct tpdb_relay *r);

/* Bytes the peer sent that reached raft, and bytes raft sent to the peer. */
void tpdbRelayCounts(const struct tpdb_relay *r,
                     uint64_t *to_raft,
                     uint64_t *to_peer);

#endif /* TPDB_RELAY_H */
