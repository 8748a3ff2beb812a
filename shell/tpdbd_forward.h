/*
 * One request forwarded to another node's client port: connect, send the
 * JSON line, read the one-line reply; or several requests on one kept
 * connection (a transaction begun on a follower). Blocking, with
 * deadlines; used by client threads and by --join at start-up.
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

#endif /* TPDBD_FORWARD_H */
