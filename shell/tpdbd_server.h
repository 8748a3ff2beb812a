/*
 * tpdbd's client listener: TCP, one thread per connection (at most
 * max_clients at once; one more gets an error line and is closed). Each
 * connection may send many requests, one JSON line each (the last may end
 * at end of file without newline), answered in order; a line longer than
 * TPDBD_LINE_MAX closes the connection after an error reply, and so does
 * a connection idle for TPDBD_IDLE_MS. Each connection has a session
 * (tpdbd_txn.h) for its interactive transaction, rolled back when the
 * connection ends, after --txn-idle-ms without a request, or when the
 * node stops leading (looked at every 500 ms while one is open).
 */
#ifndef TPDBD_SERVER_H
#define TPDBD_SERVER_H

#include <signal.h>

#include "shell/tpdbd.h"

#define TPDBD_IDLE_MS 60000

struct tpdbd_server;

/* Listens on d->cfg.client_listen. Returns 0, or -1 with err (size
 * bytes) set. */
int tpdbdServerInit(struct tpdbd_server **out,
                    struct tpdbd *d,
                    char *err,
                    size_t size);

/* Accepts connections until wake_fd (a signal's self-pipe) becomes
 * readable. It waits with the signal mask wait_mask (ppoll; NULL: the
 * thread's own), which lets in the signals kept blocked elsewhere. */
void tpdbdServerRun(struct tpdbd_server *s,
                    int wake_fd,
                    const sigset_t *wait_mask);

/* Stops accepting, lets each connection finish the request it is
 * answering (reading no more), waits up to timeout_ms for their threads,
 * and frees the server. Returns the number of threads still running (0
 * when all ended). */
int tpdbdServerClose(struct tpdbd_server *s, unsigned timeout_ms);

#endif /* TPDBD_SERVER_H */
