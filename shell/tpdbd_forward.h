/*
 * One request forwarded to another node's client port: connect, send the
 * JSON line, read the one-line reply. Blocking, with deadlines; used by
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

#endif /* TPDBD_FORWARD_H */
