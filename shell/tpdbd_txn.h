/*
 * Interactive transactions of tpdbd's client API: `begin`, then
 * `propose`, `query` and `local_query` requests, then `commit` or
 * `rollback`, across requests of one client connection (README "tpdbd").
 * A session belongs to one client connection (made and closed by its
 * thread in tpdbd_server.c) and holds at most one transaction:
 *
 *   local    on the leader: a pooled connection in BEGIN IMMEDIATE (it
 *            holds the database's write lock until the transaction ends)
 *   relay    begun on a follower: a kept connection to the leader's
 *            client port that carries every request of the transaction
 *   aborted  rolled back by tpdbd (idle, leadership lost, the leader's
 *            connection lost, SQLite ended it): requests get an error
 *            until `rollback` or `commit` ends it
 *
 * Not thread-safe: a session is used by its connection's thread only.
 */
#ifndef TPDBD_TXN_H
#define TPDBD_TXN_H

#include <stddef.h>

#include <jansson.h>

#include "shell/tpdbd.h"

/* Statement kinds inside a transaction. */
enum { TPDBD_TXN_PROPOSE = 0, TPDBD_TXN_QUERY, TPDBD_TXN_LOCAL_QUERY };

struct tpdbd_session;

/* A session without a transaction, or NULL if out of memory. d is
 * borrowed for the session's life. */
struct tpdbd_session *tpdbdSessionNew(struct tpdbd *d);

/* Rolls back the session's transaction if one is open (a relayed one by
 * closing the leader connection, which makes the leader roll back) and
 * frees the session. NULL is a no-op. */
void tpdbdSessionClose(struct tpdbd_session *s);

/* Longest client token a session keeps (tpdbd_tokens.h's are shorter). */
#define TPDBD_SESSION_TOKEN_MAX 80

/* The connection's authenticated client token ("" if none; borrowed, valid
 * until the next tpdbdSessionSetToken) with its TPDBD_ROLE_* in *role. */
const char *tpdbdSessionToken(const struct tpdbd_session *s, int *role);

/* Remembers token (checked by the caller to have role role; copied, at
 * most TPDBD_SESSION_TOKEN_MAX bytes) as the connection's: later requests
 * without a "token" field use it. */
void tpdbdSessionSetToken(struct tpdbd_session *s, const char *token, int role);

/* Whether a transaction (also an aborted one) is open: requests other
 * than status, metrics and the cluster actions then belong to it. */
int tpdbdSessionInTxn(const struct tpdbd_session *s);

/* Milliseconds left before the open local transaction is rolled back for
 * idleness (0 when due), or -1 when no deadline runs (no transaction, or
 * a relayed one: the leader keeps its deadline). */
long long tpdbdSessionIdleLeftMs(const struct tpdbd_session *s);

/* Rolls back the local transaction because it sat idle past
 * --txn-idle-ms; the session stays aborted until rollback or commit. */
void tpdbdSessionExpire(struct tpdbd_session *s);

/* Rolls back the local transaction if this node no longer leads (its
 * commit would fail, and it holds the write lock the applier needs); the
 * session stays aborted until rollback or commit. */
void tpdbdSessionCheckLeader(struct tpdbd_session *s);

/* NULL if s may begin a transaction, else the error reply (malloc'ed):
 * one is already open, or s is NULL (no client connection). */
char *tpdbdTxnCanBegin(const struct tpdbd_session *s);

/* Begins a transaction on database db (a valid name) on this node, which
 * believes it leads; foreign_keys 1 enforces foreign keys in it. Returns
 * TPDB_ERR_NOTLEADER with nothing begun and *reply unset if it does not lead
 * after all; otherwise an SQLite code with *reply set ({"ok":true,"db":db} or
 * the error). */
int tpdbdTxnBeginLocal(struct tpdbd_session *s,
                       const char *db,
                       int foreign_keys,
                       char **reply);

/* Sends the begin request line (marked forwarded) to the leader's client
 * address addr on a new connection and waits up to timeout_ms for the
 * reply. A successful reply keeps the connection for the transaction's
 * requests. Returns what tpdbdForward returns, with *reply set on 0. */
int tpdbdTxnBeginRelay(struct tpdbd_session *s,
                       const char *db,
                       const char *addr,
                       const char *line,
                       unsigned timeout_ms,
                       char **reply,
                       char *err,
                       size_t size);

/* Runs one statement request of kind TPDBD_TXN_* inside the open
 * transaction: sql and params (NULL if absent) as validated by the API,
 * db the request's "db" (NULL if absent), blobs TPDBD_BLOBS_*; req is the
 * whole request (relayed as is). Returns the reply (malloc'ed; NULL if out
 * of memory). */
char *tpdbdTxnStatement(struct tpdbd_session *s,
                        json_t *req,
                        int kind,
                        const char *sql,
                        json_t *params,
                        const char *db,
                        int blobs);

/* Ends the transaction with commit (1) or rollback (0); req is the
 * request (relayed as is). Without an open transaction it is an error
 * reply. Returns the reply (malloc'ed; NULL if out of memory). */
char *tpdbdTxnEnd(struct tpdbd_session *s, json_t *req, int commit);

#endif /* TPDBD_TXN_H */
