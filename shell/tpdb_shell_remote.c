/*
 * The tpdb shell's remote back end (tpdb_shell_int.h): statements as
 * tpdbd requests on one connection, failover to the other members learned
 * from `status`, leader reads routed to the leader, and BEGIN ... COMMIT
 * typed by hand held as one interactive transaction on one connection.
 * A request is re-sent elsewhere only when it is safe: a read, or a
 * request that never left; a write whose reply was lost is reported as
 * of unknown outcome, never retried.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shell/tpdb_client.h"
#include "shell/tpdb_shell_int.h"
#include "shell/tpdbd_sql.h"

#define MEMBERS_MAX 32
#define ID_MAX 128
/* Longest wait for one reply: above tpdbd's --commit-ms default (60 s)
 * plus its forwarding retries; Ctrl-C ends it sooner. */
#define REPLY_MS 120000
#define STATUS_MS 3000
/* How long reads and BEGIN wait for an election to end. */
#define LEADER_WAIT_MS 15000
#define RETRY_MS 200

struct member {
    char id[ID_MAX];
    char client[TPDB_CLIENT_ADDR_MAX];
};

struct remote {
    struct tpdb_client main;   /* the node the shell talks to */
    struct tpdb_client leader; /* leader reads */
    struct tpdb_client txn;    /* holds the open transaction, never
                                  reconnected (c.once) */
    int in_txn;
    struct member members[MEMBERS_MAX];
    int nmembers;
    const char *db;
    const char *token; /* the client token, or NULL */
    volatile sig_atomic_t *cancel;
};

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum { KIND_READ, KIND_WRITE, KIND_BEGIN, KIND_COMMIT, KIND_ROLLBACK };

/* The first word of sql (after blanks and comments), upper-cased, and
 * the word after it in next (may be NULL). */
static void firstWords(const char *sql, char *w1, char *w2, size_t size)
{
    char *dst[2] = {w1, w2};
    const char *p = sql;
    for (int k = 0; k < 2; k++) {
        size_t n = 0;
        for (;;) {
            while (isspace((unsigned char)*p)) {
                p++;
            }
            if (p[0] == '-' && p[1] == '-') {
                p += strcspn(p, "\n");
            } else if (p[0] == '/' && p[1] == '*') {
                const char *end = strstr(p + 2, "*/");
                p = end != NULL ? end + 2 : p + strlen(p);
            } else {
                break;
            }
        }
        while (isalpha((unsigned char)*p) && n + 1 < size) {
            dst[k][n++] = (char)toupper((unsigned char)*p++);
        }
        dst[k][n] = '\0';
    }
}

static int classify(const char *sql)
{
    char w1[16], w2[16];
    firstWords(sql, w1, w2, sizeof w1);
    if (strcmp(w1, "BEGIN") == 0) {
        return KIND_BEGIN;
    }
    if (strcmp(w1, "COMMIT") == 0 || strcmp(w1, "END") == 0) {
        return KIND_COMMIT;
    }
    if (strcmp(w1, "ROLLBACK") == 0 && strcmp(w2, "TO") != 0) {
        return KIND_ROLLBACK;
    }
    static const char *const reads[] = {"SELECT", "VALUES", "WITH", "EXPLAIN",
                                        "PRAGMA"};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        if (strcmp(w1, reads[i]) == 0) {
            return KIND_READ;
        }
    }
    return KIND_WRITE;
}

static void addMember(struct remote *r, const char *id, const char *client)
{
    if (r->nmembers >= MEMBERS_MAX || client == NULL || client[0] == '\0') {
        return;
    }
    struct member *m = &r->members[r->nmembers++];
    snprintf(m->id, sizeof m->id, "%s", id != NULL ? id : "?");
    snprintf(m->client, sizeof m->client, "%s", client);
}

/* Remembers every member's client address from a status reply. */
static void learnMembers(struct remote *r, json_t *st)
{
    const char *key;
    json_t *m;
    r->nmembers = 0;
    addMember(r, json_string_value(json_object_get(st, "node_id")),
              json_string_value(json_object_get(st, "client_addr")));
    json_object_foreach(json_object_get(st, "members"), key, m)
    {
        addMember(r, key, json_string_value(json_object_get(m, "client")));
    }
}

/* The reply's error text ("" when ok); sets it in err. */
static int replyError(json_t *reply, char *err, size_t size)
{
    json_t *ok = json_object_get(reply, "ok");
    if (ok == NULL || json_is_true(ok)) {
        return 0;
    }
    const char *e = json_string_value(json_object_get(reply, "error"));
    snprintf(err, size, "%s", e != NULL ? e : "request failed");
    return -1;
}

/* Points c at the next member after its current address; returns 0, or
 * -1 when every member was tried (tried counts them). */
static int nextMember(struct remote *r, struct tpdb_client *c, int *tried)
{
    int cur = -1;
    for (int i = 0; i < r->nmembers; i++) {
        if (strcmp(r->members[i].client, c->addr) == 0) {
            cur = i;
        }
    }
    if (++*tried >= r->nmembers) {
        return -1;
    }
    int next = (cur + 1) % r->nmembers;
    tpdbClientClose(c);
    fprintf(stderr, "tpdb: %s; trying %s at %s\n", c->errmsg,
            r->members[next].id, r->members[next].client);
    snprintf(c->addr, sizeof c->addr, "%s", r->members[next].client);
    return 0;
}

static void lostError(int rc, struct tpdb_client *c, char *err, size_t size)
{
    if (rc == TPDB_CLIENT_INTERRUPTED) {
        snprintf(err, size, "interrupted");
    } else {
        snprintf(err, size, "%s", c->errmsg);
    }
}

/* Sends req on c. safe: the request may be sent again elsewhere even if
 * it may have reached the node (reads). Fails over along the members.
 * Returns the client outcome; *reply set on TPDB_CLIENT_OK. */
static int call(struct remote *r,
                struct tpdb_client *c,
                json_t *req,
                int safe,
                int failover,
                json_t **reply)
{
    int tried = 0;
    for (;;) {
        int rc = tpdbClientCall(c, req, REPLY_MS, reply);
        if (rc == TPDB_CLIENT_OK || rc == TPDB_CLIENT_INTERRUPTED) {
            return rc;
        }
        int resend = rc == TPDB_CLIENT_NOT_SENT || safe;
        if (!resend || !failover || nextMember(r, c, &tried) != 0) {
            return rc;
        }
    }
}

static json_t *request(struct remote *r, const char *action, const char *sql)
{
    json_t *req = json_pack("{s:s}", "action", action);
    if (req != NULL && sql != NULL) {
        json_object_set_new(req, "sql", json_string(sql));
        if (strcmp(action, "propose") != 0) {
            json_object_set_new(req, "blobs", json_string("base64"));
        }
    }
    if (req != NULL && r->db != NULL) {
        json_object_set_new(req, "db", json_string(r->db));
    }
    return req;
}

/* Converts one JSON value of a query reply. */
static int valueFromJson(struct tpdb_value *v, json_t *j)
{
    char buf[32];
    unsigned char *bytes;
    size_t len;
    if (json_is_integer(j)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(j));
        return tpdbValueSet(v, TPDB_VAL_INT, buf, strlen(buf), 0);
    }
    if (json_is_real(j)) {
        return tpdbValueSetReal(v, json_real_value(j));
    }
    if (json_is_string(j)) {
        return tpdbValueSet(v, TPDB_VAL_TEXT, json_string_value(j),
                            json_string_length(j), 0);
    }
    json_t *b = json_object_get(j, "$blob");
    if (json_is_string(b)) {
        if (tpdbdBase64Decode(json_string_value(b), json_string_length(b),
                              &bytes, &len) != 0) {
            return -1;
        }
        int rc = tpdbValueSet(v, TPDB_VAL_BLOB, bytes, len, 0);
        free(bytes);
        return rc;
    }
    return tpdbValueSet(v, TPDB_VAL_NULL, NULL, 0, 0);
}

static int resultFromReply(json_t *reply,
                           struct tpdb_result **res,
                           char *err,
                           size_t size)
{
    json_t *cols = json_object_get(reply, "cols");
    json_t *rows = json_object_get(reply, "rows");
    json_t *row;
    size_t i;
    *res = tpdbResultNew((int)json_array_size(cols));
    if (*res == NULL) {
        snprintf(err, size, "out of memory");
        return -1;
    }
    for (i = 0; i < json_array_size(cols); i++) {
        tpdbResultSetName(*res, (int)i,
                          json_string_value(json_array_get(cols, i)));
    }
    json_array_foreach(rows, i, row)
    {
        struct tpdb_value *v = tpdbResultAddRow(*res);
        for (int c = 0; v != NULL && c < (*res)->ncols; c++) {
            if (valueFromJson(&v[c], json_array_get(row, (size_t)c)) != 0) {
                v = NULL;
            }
        }
        if (v == NULL) {
            snprintf(err, size, "bad or too large result");
            tpdbResultFree(*res);
            *res = NULL;
            return -1;
        }
    }
    return 0;
}

/* Points r->leader at the leader the current node names. */
static int findLeader(struct remote *r, char *err, size_t size)
{
    json_t *st = remoteStatusOf(r, NULL);
    const char *id = json_string_value(json_object_get(st, "leader_id"));
    const char *client = NULL;
    if (id != NULL && id[0] != '\0') {
        for (int i = 0; i < r->nmembers; i++) {
            if (strcmp(r->members[i].id, id) == 0) {
                client = r->members[i].client;
            }
        }
    }
    if (client == NULL) {
        snprintf(err, size,
                 "not the leader, and no leader is known (an election may be "
                 "running): retry, or use .consistency local");
        json_decref(st);
        return -1;
    }
    if (strcmp(r->leader.addr, client) != 0) {
        tpdbClientClose(&r->leader);
        snprintf(r->leader.addr, sizeof r->leader.addr, "%s", client);
    }
    json_decref(st);
    return 0;
}

static int isNotLeader(const char *err)
{
    return strncmp(err, "not the leader", 14) == 0;
}

/* Sends one request and checks its reply. Returns 0; -1 for an error
 * reply, -2 when the request went and no reply came, -3 when it never
 * left; err says why. safe and failover as call(). */
static int exchange(struct remote *r,
                    struct tpdb_client *c,
                    json_t *req,
                    int safe,
                    int failover,
                    json_t **reply,
                    char *err,
                    size_t size)
{
    int rc = call(r, c, req, safe, failover, reply);
    if (rc != TPDB_CLIENT_OK) {
        lostError(rc, c, err, size);
        return rc == TPDB_CLIENT_NOT_SENT ? -3 : -2;
    }
    if (replyError(*reply, err, size) != 0) {
        json_decref(*reply);
        *reply = NULL;
        return -1;
    }
    return 0;
}

/* Whether a failed leader read may be tried again: leadership is
 * moving, or the leader it was sent to is gone. */
static int leaderMoving(int rc, const char *err)
{
    return rc <= -2 || isNotLeader(err);
}

static void backoff(void)
{
    struct timespec ts = {0, RETRY_MS * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sends req to the leader: the current node first, then the leader it
 * names, again while leadership moves (an election), for at most
 * LEADER_WAIT_MS. Only for requests safe to send twice. *used gets the
 * connection that answered. */
static int onLeader(struct remote *r,
                    json_t *req,
                    json_t **reply,
                    struct tpdb_client **used,
                    char *err,
                    size_t size)
{
    long long deadline = nowMs() + LEADER_WAIT_MS;
    for (;;) {
        *used = &r->main;
        int rc = exchange(r, &r->main, req, 1, 1, reply, err, size);
        if (rc == 0 || !isNotLeader(err)) {
            return rc;
        }
        if (findLeader(r, err, size) == 0) {
            *used = &r->leader;
            rc = exchange(r, &r->leader, req, 1, 0, reply, err, size);
            if (rc == 0 || !leaderMoving(rc, err)) {
                return rc;
            }
        }
        if ((r->cancel != NULL && *r->cancel) || nowMs() >= deadline) {
            return rc;
        }
        backoff();
    }
}

/* A read outside a transaction; with leader_reads on the leader. A
 * statement tpdbd finds not read-only goes to propose (by the caller). */
static int runRead(struct remote *r,
                   const char *sql,
                   int leader_reads,
                   json_t **reply,
                   char *err,
                   size_t size)
{
    struct tpdb_client *used;
    json_t *req = request(r, leader_reads ? "query" : "local_query", sql);
    int rc = leader_reads ? onLeader(r, req, reply, &used, err, size)
                          : exchange(r, &r->main, req, 1, 1, reply, err, size);
    json_decref(req);
    return rc;
}

static int runWrite(struct remote *r,
                    struct tpdb_client *c,
                    const char *sql,
                    json_t **reply,
                    char *err,
                    size_t size)
{
    json_t *req = request(r, "propose", sql);
    int rc = exchange(r, c, req, 0, c == &r->main, reply, err, size);
    json_decref(req);
    if (rc == -2) {
        size_t n = strlen(err);
        snprintf(err + n, size - n,
                 "\nThe outcome is unknown: the write may or may not have "
                 "committed. Check (SELECT) before retrying.");
    }
    return rc;
}

/* Opens the transaction connection to addr and sends begin on it. */
static int beginAt(struct remote *r,
                   const char *addr,
                   json_t *req,
                   char *err,
                   size_t size)
{
    json_t *reply = NULL;
    tpdbClientClose(&r->txn);
    tpdbClientInit(&r->txn, addr, r->cancel);
    r->txn.token = r->token;
    r->txn.once = 1;
    int rc = exchange(r, &r->txn, req, 0, 0, &reply, err, size);
    json_decref(reply);
    return rc;
}

/* BEGIN: a connection of its own, on the current node (a follower
 * relays it to the leader) or else on the leader. */
static int runBegin(struct remote *r, char *err, size_t size)
{
    json_t *req = request(r, "begin", NULL);
    json_decref(remoteStatusOf(r, NULL)); /* fails over if needed */
    int rc = beginAt(r, r->main.addr, req, err, size);
    if (rc == -1 && isNotLeader(err) && findLeader(r, err, size) == 0) {
        rc = beginAt(r, r->leader.addr, req, err, size);
    }
    json_decref(req);
    if (rc == 0) {
        r->in_txn = 1;
        return 0;
    }
    tpdbClientClose(&r->txn);
    if (strncmp(err, "unknown action", 14) == 0) {
        size_t n = strlen(err);
        snprintf(err + n, size - n,
                 "\nThis tpdbd has no interactive transactions; nothing "
                 "was started.");
    }
    return -1;
}

static void endTxn(struct remote *r)
{
    tpdbClientClose(&r->txn);
    r->in_txn = 0;
}

/* COMMIT or ROLLBACK of the open transaction; either ends it. */
static int runEnd(struct remote *r, int commit, char *err, size_t size)
{
    json_t *req = request(r, commit ? "commit" : "rollback", NULL);
    json_t *reply = NULL;
    int rc = exchange(r, &r->txn, req, 0, 0, &reply, err, size);
    json_decref(req);
    json_decref(reply);
    size_t n = strlen(err);
    if (rc == -2 && commit) {
        snprintf(err + n, size - n,
                 "\nThe outcome of COMMIT is unknown: the transaction may or "
                 "may not have committed. Check before retrying.");
    } else if (rc <= -2) {
        snprintf(err + n, size - n,
                 "\nThe connection holding the transaction is gone, so "
                 "tpdbd rolled the transaction back%s.",
                 commit ? ": nothing was committed" : "");
    }
    endTxn(r);
    return rc == 0 ? 0 : -1;
}

/* A statement inside the open transaction, on its connection. */
static int runInTxn(struct remote *r,
                    const char *sql,
                    int kind,
                    json_t **reply,
                    char *err,
                    size_t size)
{
    json_t *req = request(r, kind == KIND_READ ? "query" : "propose", sql);
    int rc = exchange(r, &r->txn, req, 0, 0, reply, err, size);
    json_decref(req);
    if (rc <= -2) {
        size_t n = strlen(err);
        snprintf(err + n, size - n,
                 "\nThe connection holding the transaction is gone: tpdbd "
                 "rolls the transaction back; nothing of it was committed.");
        endTxn(r);
    }
    return rc;
}

int remoteExec(struct remote *r,
               const char *sql,
               int leader_reads,
               struct tpdb_result **res,
               char *err,
               size_t size)
{
    int kind = classify(sql);
    json_t *reply = NULL;
    int rc;
    *res = NULL;
    if (kind == KIND_BEGIN) {
        return r->in_txn ? (snprintf(err, size,
                                     "cannot start a transaction "
                                     "within a transaction"),
                            -1)
                         : runBegin(r, err, size);
    }
    if ((kind == KIND_COMMIT || kind == KIND_ROLLBACK) && r->in_txn) {
        return runEnd(r, kind == KIND_COMMIT, err, size);
    }
    if (r->in_txn) {
        rc = runInTxn(r, sql, kind, &reply, err, size);
    } else if (kind == KIND_READ) {
        rc = runRead(r, sql, leader_reads, &reply, err, size);
        if (rc == -1 && strstr(err, "read-only statements") != NULL) {
            rc = runWrite(r, &r->main, sql, &reply, err, size);
        }
    } else {
        rc = runWrite(r, &r->main, sql, &reply, err, size);
    }
    if (rc == 0 && json_object_get(reply, "cols") != NULL) {
        rc = resultFromReply(reply, res, err, size);
    }
    json_decref(reply);
    return rc == 0 ? 0 : -1;
}

int remoteRequest(struct remote *r,
                  json_t *req,
                  json_t **reply,
                  char *err,
                  size_t size)
{
    if (r->db != NULL && json_object_get(req, "db") == NULL) {
        json_object_set_new(req, "db", json_string(r->db));
    }
    int rc = exchange(r, &r->main, req, 0, 1, reply, err, size);
    if (rc == -2) {
        size_t n = strlen(err);
        snprintf(err + n, size - n,
                 "\nNo reply: whether the node carried it out is unknown; "
                 "check with .status before retrying.");
    }
    return rc == 0 ? 0 : -1;
}

json_t *remoteStatusOf(struct remote *r, const char *addr)
{
    json_t *req = json_pack("{s:s}", "action", "status"), *reply = NULL;
    if (addr == NULL) {
        if (call(r, &r->main, req, 1, 1, &reply) == TPDB_CLIENT_OK &&
            json_is_true(json_object_get(reply, "ok"))) {
            learnMembers(r, reply);
        }
    } else {
        struct tpdb_client c;
        tpdbClientInit(&c, addr, r->cancel);
        c.token = r->token;
        tpdbClientCall(&c, req, STATUS_MS, &reply);
        tpdbClientClose(&c);
    }
    json_decref(req);
    if (reply != NULL && !json_is_true(json_object_get(reply, "ok"))) {
        json_decref(reply);
        reply = NULL;
    }
    return reply;
}

/* The first status of remoteOpen: 0, or -1 with err saying why there is
 * none (the node unreachable, or its refusal, e.g. of a missing token). */
static int firstStatus(struct remote *r,
                       const char *addr,
                       char *err,
                       size_t size)
{
    json_t *req = json_pack("{s:s}", "action", "status"), *reply = NULL;
    int rc = req != NULL ? call(r, &r->main, req, 1, 1, &reply)
                         : TPDB_CLIENT_NOT_SENT;
    const char *why = json_string_value(json_object_get(reply, "error"));
    json_decref(req);
    if (rc == TPDB_CLIENT_OK && json_is_true(json_object_get(reply, "ok"))) {
        learnMembers(r, reply);
        json_decref(reply);
        return 0;
    }
    if (rc == TPDB_CLIENT_OK) {
        snprintf(err, size, "tpdbd at %s: %s", addr,
                 why != NULL ? why : "status failed");
    } else {
        snprintf(err, size, "cannot reach tpdbd at %s: %s", addr,
                 r->main.errmsg[0] ? r->main.errmsg : "no status");
    }
    json_decref(reply);
    return -1;
}

struct remote *remoteOpen(const char *addr,
                          const char *db,
                          const char *token,
                          volatile sig_atomic_t *cancel,
                          char *err,
                          size_t size)
{
    struct remote *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, size, "out of memory");
        return NULL;
    }
    r->db = db;
    r->token = token;
    r->cancel = cancel;
    tpdbClientInit(&r->main, addr, cancel);
    tpdbClientInit(&r->leader, "", cancel);
    tpdbClientInit(&r->txn, "", cancel);
    r->main.token = r->leader.token = r->txn.token = token;
    if (firstStatus(r, addr, err, size) != 0) {
        remoteClose(r);
        return NULL;
    }
    return r;
}

void remoteClose(struct remote *r)
{
    if (r != NULL) {
        tpdbClientClose(&r->main);
        tpdbClientClose(&r->leader);
        tpdbClientClose(&r->txn);
        free(r);
    }
}

const char *remoteAddr(const struct remote *r)
{
    return r->main.addr;
}

int remoteInTxn(const struct remote *r)
{
    return r->in_txn;
}
