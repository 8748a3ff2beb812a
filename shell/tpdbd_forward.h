/*
 * One request forwarded to another node's client port: connect, send the
 * JSON line, read the one-line reply; or several requests on one kept
 * connection (a transaction begun on a follower), or on a pool of kept
 * connections reused across requests. Blocking, with deadlines; used by
 * client threads and by --join at start-up.
 */
#ifndef TPDBD_FORWARD_H
#define TPDBD_FORWARD_H

#include <stddef.h>

/* The request could not be sent: nothing was done by the other node. */
#define TPDBD_FWD_NOT_SENT (-1)
/* The request was sent but no reply came: its outcome is unknown. */
#define TPDBD_FWD_NO_REPLY (-2)

/* Sends line (one JSON request, without newline) to addr ("IPv4:port")
 * and waits up to timeout_ms in all for the reply line. Returns 0 with
 * *reply malloc'ed (without newline; caller frees), or TPDBD_FWD_NOT_SENT
 * / TPDBD_FWD_NO_REPLY with the reason in err (size bytes). */
int tpdbdForward(const char *addr,
                 const char *line,
                 unsigned timeout_ms,
                 char **reply,
                 char *err,
                 size_t size);

/* Opens a kept connection to addr within timeout_ms (for the requests of
 * one transaction). Returns the fd (caller closes), or -1 with err set;
 * nothing was sent then. */
int tpdbdForwardOpen(const char *addr,
                     unsigned timeout_ms,
                     char *err,
                     size_t size);

/* Sends line on fd (from tpdbdForwardOpen to addr, named in errors) and
 * waits up to timeout_ms for the reply line. Returns 0 with *reply
 * malloc'ed (caller frees), or TPDBD_FWD_NO_REPLY with err set: the
 * connection is then unusable and its outcome unknown. */
int tpdbdForwardCall(int fd,
                     const char *addr,
                     const char *line,
                     unsigned timeout_ms,
                     char **reply,
                     char *err,
                     size_t size);

/* Most kept connections a follower holds to the leader's client port
 * (tpdbdForwardKept). */
#define TPDBD_FWD_KEPT_MAX 16
/* A kept connection idle this long is closed rather than reused (the
 * leader closes idle clients after TPDBD_IDLE_MS, much later). */
#define TPDBD_FWD_KEPT_IDLE_MS 10000

/* Kept connections to one node's client port (the leader's, as the
 * caller names it), shared by client threads. Thread-safe. */
struct tpdbd_fwd_pool;

/* Makes a pool that holds at most max connections (1 to
 * TPDBD_FWD_KEPT_MAX) open at once, in use or idle. Returns 0, or -1
 * (out of memory). */
int tpdbdForwardPoolInit(struct tpdbd_fwd_pool **out, unsigned max);

/* Changes p's bound (clamped as by tpdbdForwardPoolInit): past a lower
 * one, connections are closed as they come back. */
void tpdbdForwardPoolSetMax(struct tpdbd_fwd_pool *p, unsigned max);

/* Closes every idle connection and frees the pool; none may be in use. */
void tpdbdForwardPoolClose(struct tpdbd_fwd_pool *p);

/* As tpdbdForward, on a kept connection of p to addr: an idle one if
 * there is one (one whose other end closed, or that sat idle
 * TPDBD_FWD_KEPT_IDLE_MS, is closed instead), else a new one while fewer
 * than p's max are open, else it waits for one within timeout_ms
 * (TPDBD_FWD_NOT_SENT after that). Idle connections to another address
 * are closed first: the leader moved. The connection goes back to the
 * pool after a reply, and is closed after a failure. */
int tpdbdForwardKept(struct tpdbd_fwd_pool *p,
                     const char *addr,
                     const char *line,
                     unsigned timeout_ms,
                     char **reply,
                     char *err,
                     size_t size);

#endif /* TPDBD_FORWARD_H */
