/*
 * Interactive transactions (tpdbd_txn.h). A local transaction is a pooled
 * connection taken for the whole transaction, in BEGIN IMMEDIATE so that
 * its reads and writes see one state and its COMMIT cannot fail for a
 * lock; its statements run with tpdbd_sql.c's guard, which refuses BEGIN,
 * COMMIT and ROLLBACK statements,
 * which would end the transaction behind the session's back. A relayed
 * transaction sends each request, marked "forwarded", over one kept
 * connection to the leader, whose own session for that connection holds
 * the local transaction; closing that connection rolls it back there.
 */
#include "shell/tpdbd_txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ext/tpdb.h"
#include "shell/tpdbd_api.h"
#include "shell/tpdbd_forward.h"
#include "shell/tpdbd_log.h"
#include "shell/tpdbd_sql.h"

#define ERR_SIZE 1024

enum { TXN_NONE = 0, TXN_LOCAL, TXN_RELAY, TXN_ABORTED };

struct tpdbd_session {
    struct tpdbd *d;
    int state;
    char db[72];      /* the transaction's database */
    long long last;   /* monotonic ms at the end of its last request */
    long long base;   /* TXN_LOCAL: total changes before BEGIN */
    long long lastId; /* TXN_LOCAL: last rowid inserted in it, 0 if none */
    struct tpdbd_conn *conn; /* TXN_LOCAL */
    int fd;                  /* TXN_RELAY: to the leader */
    char leader[TPDBD_ADDR_MAX];
    char why[ERR_SIZE]; /* TXN_ABORTED: why it was rolled back */
    /* The connection's client token (tpdbd_auth.c): the last valid one it
     * sent, "" if none, and its role. */
    char token[TPDBD_SESSION_TOKEN_MAX + 1];
    int role;
};

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dump(json_t *o)
{
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

static char *okReply(void)
{
    return dump(json_pack("{s:b}", "ok", 1));
}

/* SQLite's message, or tpdb's reason for a replication or disk failure. */
static void sqlMessage(sqlite3 *db, char *err, size_t size)
{
    int rc = sqlite3_extended_errcode(db);
    const char *why = tpdb_errmsg();
    if (((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL) &&
        why[0] != '\0') {
        snprintf(err, size, "%s", why);
    } else {
        snprintf(err, size, "%s", sqlite3_errmsg(db));
    }
}

/* BEGIN, COMMIT and ROLLBACK statements would end the transaction without
 * the session knowing; savepoints stay allowed. */
struct tpdbd_session *tpdbdSessionNew(struct tpdbd *d)
{
    struct tpdbd_session *s = calloc(1, sizeof *s);
    if (s != NULL) {
        s->d = d;
        s->fd = -1;
    }
    return s;
}

const char *tpdbdSessionToken(const struct tpdbd_session *s, int *role)
{
    *role = s->role;
    return s->token;
}

void tpdbdSessionSetToken(struct tpdbd_session *s, const char *token, int role)
{
    snprintf(s->token, sizeof s->token, "%s", token);
    s->role = role;
}

/* Rolls back and gives the local connection back to the pool. */
static void localEnd(struct tpdbd_session *s)
{
    sqlite3_set_authorizer(s->conn->db, NULL, NULL);
    if (!sqlite3_get_autocommit(s->conn->db)) {
        sqlite3_exec(s->conn->db, "ROLLBACK", NULL, NULL, NULL);
    }
    tpdbdPoolPut(s->d->pool, s->conn);
    s->conn = NULL;
}

static void relayEnd(struct tpdbd_session *s)
{
    close(s->fd);
    s->fd = -1;
}

/* Ends whatever is open; the session is left in state. */
static void endTxn(struct tpdbd_session *s, int state)
{
    if (s->state == TXN_LOCAL) {
        localEnd(s);
    } else if (s->state == TXN_RELAY) {
        relayEnd(s);
    }
    s->state = state;
}

/* Rolls back and keeps the session aborted, with why. */
static void abortTxn(struct tpdbd_session *s, const char *why)
{
    endTxn(s, TXN_ABORTED);
    snprintf(s->why, sizeof s->why, "%.900s", why);
    tpdbdLog(TPDBD_INFO, "transaction on %s rolled back: %s", s->db, why);
}

void tpdbdSessionClose(struct tpdbd_session *s)
{
    if (s == NULL) {
        return;
    }
    if (s->state == TXN_LOCAL || s->state == TXN_RELAY) {
        tpdbdLog(TPDBD_DEBUG,
                 "client disconnected: transaction on %s rolled back", s->db);
    }
    endTxn(s, TXN_NONE);
    free(s);
}

int tpdbdSessionInTxn(const struct tpdbd_session *s)
{
    return s != NULL && s->state != TXN_NONE;
}

long long tpdbdSessionIdleLeftMs(const struct tpdbd_session *s)
{
    if (s == NULL || s->state != TXN_LOCAL) {
        return -1;
    }
    long long left = s->last + (long long)s->d->cfg.txn_idle_ms - nowMs();
    return left > 0 ? left : 0;
}

void tpdbdSessionExpire(struct tpdbd_session *s)
{
    char why[128];
    if (s->state != TXN_LOCAL) {
        return;
    }
    snprintf(why, sizeof why, "idle for more than %u ms (--txn-idle-ms)",
             s->d->cfg.txn_idle_ms);
    abortTxn(s, why);
}

static int isLeader(struct tpdbd *d)
{
    json_t *st = tpdbdStatus(d);
    const char *role = json_string_value(json_object_get(st, "role"));
    int yes = role != NULL && strcmp(role, "leader") == 0;
    json_decref(st);
    return yes;
}

void tpdbdSessionCheckLeader(struct tpdbd_session *s)
{
    if (s->state == TXN_LOCAL && !isLeader(s->d)) {
        abortTxn(s, "this node lost leadership");
    }
}

char *tpdbdTxnCanBegin(const struct tpdbd_session *s)
{
    if (s == NULL) {
        return tpdbdErrorReply("transactions need a client connection");
    }
    if (s->state != TXN_NONE) {
        return tpdbdErrorReply(
            "a transaction is already open on this "
            "connection: commit or roll it back first");
    }
    return NULL;
}

/* The reply to a BEGIN that failed with rc on database db. */
static char *beginError(sqlite3 *conn, int rc, const char *db)
{
    char err[ERR_SIZE], msg[ERR_SIZE + 256];
    sqlMessage(conn, err, sizeof err);
    if ((rc & 0xff) == SQLITE_BUSY) {
        snprintf(msg, sizeof msg,
                 "begin: %s: another transaction holds the write lock of %s; "
                 "retry",
                 err, db);
    } else {
        snprintf(msg, sizeof msg, "begin: %s", err);
    }
    return tpdbdErrorReply(msg);
}

int tpdbdTxnBeginLocal(struct tpdbd_session *s,
                       const char *db,
                       int foreign_keys,
                       char **reply)
{
    char err[ERR_SIZE] = "";
    struct tpdbd_conn *c = tpdbdPoolGet(s->d->pool, db, err, sizeof err);
    if (c == NULL) {
        *reply = tpdbdErrorReply(err);
        return SQLITE_CANTOPEN;
    }
    /* Only before BEGIN: SQLite ignores it inside a transaction. */
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_ENABLE_FKEY, foreign_keys != 0,
                      NULL);
    long long base = sqlite3_total_changes64(c->db);
    int rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        *reply = beginError(c->db, sqlite3_extended_errcode(c->db), db);
        tpdbdPoolPut(s->d->pool, c);
        return rc;
    }
    /* Leadership may have moved while BEGIN waited for the lock: a
     * follower must not hold the write lock its applier needs. */
    if (!isLeader(s->d)) {
        tpdbdPoolPut(s->d->pool, c);
        return TPDB_ERR_NOTLEADER;
    }
    sqlite3_set_last_insert_rowid(c->db, 0);
    s->conn = c;
    s->base = base;
    s->lastId = 0;
    s->state = TXN_LOCAL;
    snprintf(s->db, sizeof s->db, "%s", db);
    s->last = nowMs();
    *reply = dump(json_pack("{s:b,s:s}", "ok", 1, "db", db));
    return SQLITE_OK;
}

/* Whether a reply line says ok:true. */
static int replyOk(const char *reply)
{
    json_t *o = json_loads(reply, 0, NULL);
    int ok = json_is_true(json_object_get(o, "ok"));
    json_decref(o);
    return ok;
}

int tpdbdTxnBeginRelay(struct tpdbd_session *s,
                       const char *db,
                       const char *addr,
                       const char *line,
                       unsigned timeout_ms,
                       char **reply,
                       char *err,
                       size_t size)
{
    int fd = tpdbdForwardOpen(addr, timeout_ms, err, size);
    if (fd < 0) {
        return TPDBD_FWD_NOT_SENT;
    }
    int rc = tpdbdForwardCall(fd, addr, line, timeout_ms, reply, err, size);
    if (rc != 0 || !replyOk(*reply)) {
        /* Closing makes the leader roll back whatever it began. */
        close(fd);
        return rc;
    }
    s->fd = fd;
    s->state = TXN_RELAY;
    snprintf(s->leader, sizeof s->leader, "%s", addr);
    snprintf(s->db, sizeof s->db, "%s", db);
    s->last = nowMs();
    return 0;
}

/* Sends req (marked forwarded) to the leader. Returns 0 with *reply set,
 * or TPDBD_FWD_NO_REPLY with err set. */
static int relay(struct tpdbd_session *s,
                 json_t *req,
                 char **reply,
                 char *err,
                 size_t size)
{
    unsigned timeout =
        (s->d->cfg.commit_ms ? s->d->cfg.commit_ms : 60000) + 5000;
    json_t *copy = json_deep_copy(req);
    json_object_set_new(copy, "forwarded", json_true());
    char *line = dump(copy);
    if (line == NULL) {
        snprintf(err, size, "out of memory");
        return TPDBD_FWD_NO_REPLY;
    }
    int rc =
        tpdbdForwardCall(s->fd, s->leader, line, timeout, reply, err, size);
    free(line);
    return rc;
}

static char *relayStatement(struct tpdbd_session *s, json_t *req)
{
    char err[ERR_SIZE] = "", why[ERR_SIZE + 64];
    char *reply = NULL;
    if (relay(s, req, &reply, err, sizeof err) == 0) {
        return reply;
    }
    snprintf(why, sizeof why, "connection to the leader lost (%s)", err);
    abortTxn(s, why);
    snprintf(why, sizeof why,
             "connection to the leader lost (%s): the transaction was "
             "rolled back; send rollback to end it",
             err);
    return tpdbdErrorReply(why);
}

static char *abortedReply(const struct tpdbd_session *s, const char *then)
{
    char msg[ERR_SIZE + 128];
    snprintf(msg, sizeof msg, "the transaction was rolled back (%s); %s",
             s->why, then);
    return tpdbdErrorReply(msg);
}

/* After a failed statement: SQLite may have rolled the whole transaction
 * back (I/O errors, out of memory, disk full); the session follows. */
static char *localFailed(struct tpdbd_session *s, int rc, const char *err)
{
    char msg[ERR_SIZE + 128];
    if (rc == SQLITE_AUTH) {
        /* Refused before it ran (tpdbd_sql.h): the transaction goes on. */
        return tpdbdErrorReply(err);
    }
    if (sqlite3_get_autocommit(s->conn->db)) {
        snprintf(msg, sizeof msg, "SQLite ended the transaction: %s", err);
        abortTxn(s, msg);
        return abortedReply(s, "send rollback to end it");
    }
    return tpdbdErrorReply(err);
}

static char *localStatement(struct tpdbd_session *s,
                            int kind,
                            const char *sql,
                            json_t *params,
                            int blobs)
{
    char err[ERR_SIZE] = "";
    struct tpdbd_write w = {.blobs = blobs};
    json_t *result = NULL;
    int rc;
    if (!isLeader(s->d)) {
        abortTxn(s, "this node lost leadership");
        return abortedReply(s, "send rollback to end it");
    }
    if (kind == TPDBD_TXN_PROPOSE) {
        rc = tpdbdSqlExec(s->conn->db, sql, params, &w, err, sizeof err);
    } else {
        rc = tpdbdSqlQuery(s->conn->db, sql, params, blobs, 1, &result, err,
                           sizeof err);
        s->d->queries_total++;
    }
    s->last = nowMs();
    if (rc != SQLITE_OK) {
        tpdbdSqlWriteClear(&w);
        return localFailed(s, rc, err);
    }
    if (kind != TPDBD_TXN_PROPOSE) {
        return dump(result);
    }
    if (w.last_id != 0) {
        s->lastId = w.last_id;
    }
    char *reply = tpdbdSqlWriteReply(&w);
    tpdbdSqlWriteClear(&w);
    return reply;
}

char *tpdbdTxnStatement(struct tpdbd_session *s,
                        json_t *req,
                        int kind,
                        const char *sql,
                        json_t *params,
                        const char *db,
                        int blobs)
{
    char msg[256];
    if (s->state == TXN_ABORTED) {
        return abortedReply(s, "send rollback to end it");
    }
    if (db != NULL && strcmp(db, s->db) != 0) {
        snprintf(msg, sizeof msg,
                 "the open transaction is on %s: its statements cannot "
                 "name %s",
                 s->db, db);
        return tpdbdErrorReply(msg);
    }
    if (s->state == TXN_RELAY) {
        return relayStatement(s, req);
    }
    return localStatement(s, kind, sql, params, blobs);
}

static char *localCommit(struct tpdbd_session *s)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 160];
    sqlite3 *db = s->conn->db;
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    long long changes = sqlite3_total_changes64(db) - s->base;
    char *reply;
    if (rc == SQLITE_OK) {
        s->d->writes_total++;
        reply = dump(json_pack("{s:b,s:I,s:I}", "ok", 1, "rows_affected",
                               (json_int_t)changes, "last_id",
                               (json_int_t)s->lastId));
    } else {
        rc = sqlite3_extended_errcode(db);
        sqlMessage(db, err, sizeof err);
        if (rc == TPDB_ERR_UNKNOWN) {
            snprintf(msg, sizeof msg,
                     "outcome unknown: the write may or may not have "
                     "committed (%s); read before retrying",
                     err);
        } else {
            snprintf(msg, sizeof msg, "commit failed, nothing was written: %s",
                     err);
        }
        reply = tpdbdErrorReply(msg);
    }
    endTxn(s, TXN_NONE);
    return reply;
}

static char *relayEndTxn(struct tpdbd_session *s, json_t *req, int commit)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 64];
    char *reply = NULL;
    int rc = relay(s, req, &reply, err, sizeof err);
    endTxn(s, TXN_NONE);
    if (rc == 0) {
        return reply;
    }
    if (!commit) {
        /* The leader rolls back when its connection closes. */
        return okReply();
    }
    snprintf(msg, sizeof msg,
             "no reply from leader: the outcome is unknown (%s)", err);
    return tpdbdErrorReply(msg);
}

char *tpdbdTxnEnd(struct tpdbd_session *s, json_t *req, int commit)
{
    char *reply;
    if (s == NULL || s->state == TXN_NONE) {
        return tpdbdErrorReply(
            commit ? "commit: no transaction is open on this connection"
                   : "rollback: no transaction is open on this connection");
    }
    if (s->state == TXN_RELAY) {
        return relayEndTxn(s, req, commit);
    }
    if (s->state == TXN_ABORTED) {
        reply = commit ? abortedReply(s, "nothing was committed") : okReply();
        s->state = TXN_NONE;
        return reply;
    }
    if (commit) {
        return localCommit(s);
    }
    endTxn(s, TXN_NONE);
    return okReply();
}
