/*
 * Who may do what on tpdbd's client port (README "tpdbd", "Client
 * tokens"). With --client-tokens every request on a client connection
 * needs a token, in its "token" field or sent earlier on the same
 * connection (the connection keeps the last valid one); role read may do
 * status, metrics, query and local_query, role write every action.
 * Requests tpdbd makes of itself (no connection) are not checked.
 * Thread-safe: client threads read the token table under a read lock;
 * a SIGHUP reload (housekeeping thread) swaps it under the write lock.
 */
#ifndef TPDBD_AUTH_H
#define TPDBD_AUTH_H

#include <jansson.h>

#include "shell/tpdbd.h"

struct tpdbd_session;

/* Decides whether request req (a JSON object, borrowed) with action
 * action, sent on the connection whose session is sess (NULL: tpdbd's
 * own request), may run. Returns NULL if it may: then, when the
 * connection's token is used, req gets it as "token" so that a request
 * forwarded to the leader carries it. Otherwise returns the error reply
 * (malloc'ed; caller frees), and nothing has changed. */
char *tpdbdAuthorize(struct tpdbd *d,
                     struct tpdbd_session *sess,
                     json_t *req,
                     const char *action);

/* Sets "token" in req to this node's --node-token-file token, if it has
 * one, for a request it sends itself. */
void tpdbdAuthNodeToken(const struct tpdbd *d, json_t *req);

/* Loads --client-tokens and --node-token-file of d->cfg into d and logs
 * how the client port is protected: a warning when it listens beyond
 * loopback without tokens (anyone reaching it may read and write).
 * Returns 0, or -1 after logging why (a bad file: nothing started). */
int tpdbdAuthSetup(struct tpdbd *d);

/* SIGHUP: rereads --client-tokens (if given) with tpdbdAuthSetup's checks.
 * A good file replaces the tokens for every later request, also on open
 * connections (a connection's remembered token is checked again each
 * time, so a removed token stops working); a bad one is logged and the
 * loaded tokens stay. --node-token-file is not reread. */
void tpdbdAuthReload(struct tpdbd *d);

/* Frees what tpdbdAuthSetup loaded. */
void tpdbdAuthClose(struct tpdbd *d);

/* --make-token: prints a new token for cfg's make_token role and
 * token_name, and its tokens-file line, on stdout. Returns the exit
 * status. */
int tpdbdAuthMakeToken(const struct tpdbd_config *cfg);

#endif /* TPDBD_AUTH_H */
