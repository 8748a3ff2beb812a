/*
 * tpdbd's client API: one JSON request line in, one JSON reply line out.
 * Actions (TrashPandaDB 0.8's, see README "tpdbd"): status, metrics,
 * propose, query, local_query, join; tpdbd's own: begin, commit, rollback
 * (tpdbd_txn.c), remove, transfer, checkpoint, backup (tpdbd_admin.c).
 * Thread-safe: client threads call it concurrently.
 */
#ifndef TPDBD_API_H
#define TPDBD_API_H

#include <stddef.h>

#include "shell/tpdbd.h"

struct tpdbd_session;

/* Where an action that answers with several lines (a streamed backup)
 * sends every line but its last, which is its return value. Owned by the
 * connection's thread. */
struct tpdbd_sink {
    /* Sends one line (len bytes, no newline; the sink adds it). Returns 0,
     * or -1 when the client is gone or stopped reading. */
    int (*send)(void *arg, const char *line, size_t len);
    void *arg;
    /* Set by the action once a send failed: the stream is broken, so the
     * caller sends nothing more and closes the connection. */
    int failed;
};

/* Answers the request in line[0..len) (not NUL-terminated, may hold any
 * bytes) that came on the client connection whose session is sess
 * (tpdbd_txn.h; borrowed, NULL when there is no connection: transactions
 * are then refused) and whose sink is out (borrowed; NULL: streamed
 * replies are refused). Returns the reply, one line of compact JSON
 * without newline, malloc'ed (caller frees); NULL only when out of
 * memory. */
char *tpdbdHandleSession(struct tpdbd *d,
                         struct tpdbd_session *sess,
                         struct tpdbd_sink *out,
                         const char *line,
                         size_t len);

/* tpdbdHandleSession() without a client connection. */
char *tpdbdHandle(struct tpdbd *d, const char *line, size_t len);

/* The string id of raft id id: from the flags, tpdbd's metadata, or the
 * decimal number, into node_id (TPDBD_ID_MAX + 1 bytes); client gets its
 * client address (TPDBD_ADDR_MAX bytes, "" if unknown). */
void tpdbdNodeName(struct tpdbd *d, uint64_t id, char *node_id, char *client);

/* {"ok":false,"error":msg} as a malloc'ed line; NULL if out of memory. */
char *tpdbdErrorReply(const char *msg);

#endif /* TPDBD_API_H */
