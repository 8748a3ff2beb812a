/*
 * tpdbd's client API (tpdbd_api.h): request validation and dispatch,
 * forwarding of propose, join, remove, transfer and begin from followers
 * to the leader, and the linearizable `query`: a write to tpdbd's metadata
 * database is committed through Raft first (tpdbdMetaBarrier), which
 * proves this node led a quorum after the request arrived and that every
 * earlier entry is applied here; the read runs after it (begin runs the
 * same barrier). Requests on a connection with an open transaction go to
 * tpdbd_txn.c; remove, transfer, checkpoint and backup to tpdbd_admin.c.
 */
#include "shell/tpdbd_api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ext/tpdb.h"
#include "shell/tpdbd_admin.h"
#include "shell/tpdbd_auth.h"
#include "shell/tpdbd_forward.h"
#include "shell/tpdbd_group.h"
#include "shell/tpdbd_log.h"
#include "shell/tpdbd_meta.h"
#include "shell/tpdbd_sql.h"
#include "shell/tpdbd_txn.h"

#define ERR_SIZE 1024
/* How long a propose waits for a leader to be elected and known. */
#define LEADER_WAIT_MS 10000
#define RETRY_MS 50

/* A request being answered. */
struct request {
    json_t *json;
    const char *action;
    const char *sql;
    json_t *params; /* NULL if absent */
    const char *db;
    int blobs;
    int foreign_keys; /* propose, begin: "foreign_keys":true */
    int forwarded;    /* sent by another node: never forward again */
    const char *join_id, *join_raft, *join_client; /* action join */
    const char *node_id;        /* remove, transfer (NULL: any voter),
                                   assign */
    const char *role;           /* assign: voter, standby or spare */
    const char *path;           /* backup */
    struct tpdbd_session *sess; /* the client connection's; NULL if none */
    struct tpdbd_sink *out;     /* for streamed replies; NULL if none */
    int begin;                  /* action begin: forwarded on a kept
                                   connection (tpdbd_txn.c) */
};

/* What a node does with a request it may have to forward: returns
 * TPDB_ERR_NOTLEADER (nothing done, *reply unset) or sets *reply. */
typedef int (*localFn)(struct tpdbd *d, struct request *r, char **reply);

/* The leader as this node sees it. */
struct leader {
    uint64_t raft_id; /* 0: none known */
    int self;
    char node_id[TPDBD_ID_MAX + 1]; /* "" if none */
    char client[TPDBD_ADDR_MAX];    /* "" if unknown */
};

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dumpReply(json_t *o)
{
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

char *tpdbdErrorReply(const char *msg)
{
    return dumpReply(json_pack("{s:b,s:s}", "ok", 0, "error", msg));
}

void tpdbdNodeName(struct tpdbd *d, uint64_t id, char *node_id, char *client)
{
    const struct tpdbd_member *m = tpdbdMemberByRaftId(&d->cfg, id);
    char metaId[TPDBD_ID_MAX + 1] = "", metaClient[TPDBD_ADDR_MAX] = "";
    if (id == d->cfg.raft_id) {
        snprintf(node_id, TPDBD_ID_MAX + 1, "%s", d->cfg.node_id);
        snprintf(client, TPDBD_ADDR_MAX, "%s", d->client_addr);
        return;
    }
    if (m == NULL || m->client[0] == '\0') {
        tpdbdMetaLookup(d, id, metaId, metaClient);
    }
    if (m != NULL) {
        snprintf(node_id, TPDBD_ID_MAX + 1, "%s", m->id);
    } else if (metaId[0] != '\0') {
        snprintf(node_id, TPDBD_ID_MAX + 1, "%s", metaId);
    } else {
        snprintf(node_id, TPDBD_ID_MAX + 1, "%llu", (unsigned long long)id);
    }
    snprintf(client, TPDBD_ADDR_MAX, "%s",
             m != NULL && m->client[0] ? m->client : metaClient);
}

/* Asked on every request: tpdb_leader() copies what the node published,
 * where tpdbdStatus() waits for the node's loop to build the whole status
 * and parses it. */
static void findLeader(struct tpdbd *d, struct leader *l)
{
    char buf[TPDBD_ADDR_MAX + 32] = "";
    memset(l, 0, sizeof *l);
    if (d->control != NULL) {
        tpdb_leader(d->control, buf, sizeof buf);
    }
    l->raft_id = (uint64_t)strtoull(buf, NULL, 10);
    if (l->raft_id != 0) {
        l->self = l->raft_id == d->cfg.raft_id;
        tpdbdNodeName(d, l->raft_id, l->node_id, l->client);
    }
}

/* TrashPandaDB's text, naming the leader by its string id. A leader
 * that cannot take writes yet (it is catching up) says why instead:
 * why is tpdb's reason, or NULL. */
static char *notLeaderReply(struct tpdbd *d, const char *why)
{
    struct leader l;
    char msg[ERR_SIZE];
    findLeader(d, &l);
    if (l.self && why != NULL && why[0] != '\0') {
        return tpdbdErrorReply(why);
    }
    snprintf(msg, sizeof msg, "not the leader (leader=%s)",
             l.self ? "" : l.node_id);
    return tpdbdErrorReply(msg);
}

/* "leader" -> "Leader", as TrashPandaDB spells roles. */
static json_t *roleJson(json_t *st)
{
    char role[32];
    const char *r = json_string_value(json_object_get(st, "role"));
    snprintf(role, sizeof role, "%s", r != NULL ? r : "unavailable");
    role[0] = (char)toupper((unsigned char)role[0]);
    return json_string(role);
}

static json_int_t intOf(json_t *st, const char *key)
{
    return json_integer_value(json_object_get(st, key));
}

/* members {id: {raft, client}} without this node, as TrashPandaDB. */
static json_t *membersJson(struct tpdbd *d, json_t *st)
{
    json_t *out = json_object();
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        char id[TPDBD_ID_MAX + 1], client[TPDBD_ADDR_MAX];
        uint64_t raft_id = (uint64_t)intOf(m, "id");
        const char *addr = json_string_value(json_object_get(m, "address"));
        if (raft_id == d->cfg.raft_id) {
            continue;
        }
        tpdbdNodeName(d, raft_id, id, client);
        json_object_set_new(
            out, id,
            json_pack("{s:s,s:s,s:I,s:s?}", "raft", addr ? addr : "", "client",
                      client, "raft_id", (json_int_t)raft_id, "role",
                      json_string_value(json_object_get(m, "role"))));
    }
    return out;
}

static char *actionStatus(struct tpdbd *d)
{
    char leaderId[TPDBD_ID_MAX + 1] = "", client[TPDBD_ADDR_MAX];
    json_t *st = tpdbdStatus(d);
    if (st == NULL) {
        return tpdbdErrorReply("node stopped");
    }
    uint64_t leader = (uint64_t)intOf(st, "leader_id");
    if (leader != 0) {
        tpdbdNodeName(d, leader, leaderId, client);
    }
    json_t *o = json_pack(
        "{s:b,s:o,s:s,s:s,s:I,s:I,s:I,s:I,s:o,s:I,s:s,s:s,s:O}", "ok", 1,
        "role", roleJson(st), "node_id", d->cfg.node_id, "leader_id", leaderId,
        "term", intOf(st, "term"), "commit_index", intOf(st, "commit_index"),
        "last_applied", intOf(st, "applied_index"), "log_last_index",
        intOf(st, "last_index"), "members", membersJson(d, st), "raft_id",
        (json_int_t)d->cfg.raft_id, "raft_addr", d->cfg.raft_addr,
        "client_addr", d->client_addr, "tpdb", st);
    json_decref(st);
    return dumpReply(o);
}

/* TrashPandaDB's fields (queries_total, writes_total, slow_queries_total,
 * commit_index, last_applied, role, term; no "ok"), then every fact of
 * the Prometheus text (tpdbdMetricsJson). */
static char *actionMetrics(struct tpdbd *d)
{
    json_t *m = tpdbdMetricsJson(d);
    json_t *raft = json_object_get(m, "raft");
    if (m == NULL || raft == NULL) {
        json_decref(m);
        return tpdbdErrorReply(m == NULL ? "out of memory" : "node stopped");
    }
    char role[32];
    snprintf(role, sizeof role, "%s",
             json_string_value(json_object_get(raft, "role")));
    role[0] = (char)toupper((unsigned char)role[0]);
    json_object_set_new(m, "commit_index",
                        json_integer(intOf(raft, "commit_index")));
    json_object_set_new(m, "last_applied",
                        json_integer(intOf(raft, "applied_index")));
    json_object_set_new(m, "role", json_string(role));
    json_object_set_new(m, "term", json_integer(intOf(raft, "term")));
    return dumpReply(m);
}

/* Counts and logs statements at least TPDB_SLOW_QUERY_MS slow, in
 * TrashPandaDB's "[SLOW] <ms>ms <sql>" form. */
static void noteTime(struct tpdbd *d, long long start, const char *sql)
{
    long long ms = nowMs() - start;
    tpdbdMetricsObserve(d, ms);
    if (ms >= (long long)d->slow_ms) {
        d->slow_queries_total++;
        tpdbdLog(TPDBD_WARN, "[SLOW] %lldms %.200s", ms, sql);
    }
}

/* Runs a propose here, in a group commit with concurrent ones
 * (tpdbd_group.c). Returns the SQLite code; *reply is set unless the
 * code is TPDB_ERR_NOTLEADER (nothing was written: the caller forwards). */
static int proposeLocal(struct tpdbd *d, struct request *r, char **reply)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 128];
    struct tpdbd_write w = {.blobs = r->blobs};
    long long start = nowMs();
    int rc = tpdbdGroupPropose(d, r->db, r->sql, r->params, r->foreign_keys, &w,
                               err, sizeof err);
    noteTime(d, start, r->sql);
    if (rc == SQLITE_OK) {
        d->writes_total++;
        *reply = tpdbdSqlWriteReply(&w);
    } else if (rc == TPDB_ERR_UNKNOWN) {
        snprintf(msg, sizeof msg,
                 "outcome unknown: the write may or may not have committed "
                 "(%s); read before retrying",
                 err);
        *reply = tpdbdErrorReply(msg);
    } else if ((rc & 0xff) == SQLITE_BUSY) {
        snprintf(msg, sizeof msg,
                 "%s: another transaction (an interactive one?) held the "
                 "write lock of %s too long; nothing was written, retry",
                 err, r->db);
        *reply = tpdbdErrorReply(msg);
    } else if (rc != TPDB_ERR_NOTLEADER) {
        *reply = tpdbdErrorReply(err);
    }
    tpdbdSqlWriteClear(&w);
    return rc;
}

/* Whether reply is a "not the leader..." error; if so, last gets
 * "forward failed: <that error>". */
static int isNotLeaderReply(const char *reply, char *last)
{
    json_t *o = json_loads(reply, 0, NULL);
    const char *e = json_string_value(json_object_get(o, "error"));
    int yes = e != NULL && strncmp(e, "not the leader", 14) == 0;
    if (yes) {
        snprintf(last, ERR_SIZE, "forward failed: %s", e);
    }
    json_decref(o);
    return yes;
}

/* Forwards r to leader l. Returns 1 with *reply set when done, 0 to retry
 * (last says why). */
static int forwardOnce(struct tpdbd *d,
                       struct request *r,
                       const struct leader *l,
                       char **reply,
                       char *last)
{
    char err[ERR_SIZE] = "";
    unsigned timeout = (d->cfg.commit_ms ? d->cfg.commit_ms : 60000) + 5000;
    json_t *copy = json_deep_copy(r->json);
    json_object_set_new(copy, "forwarded", json_true());
    char *line = dumpReply(copy);
    if (line == NULL) {
        *reply = NULL;
        return 1;
    }
    int rc = r->begin ? tpdbdTxnBeginRelay(r->sess, r->db, l->client, line,
                                           timeout, reply, err, sizeof err)
                      : tpdbdForwardKept(d->forwards, l->client, line, timeout,
                                         reply, err, sizeof err);
    free(line);
    if (rc == 0 && isNotLeaderReply(*reply, last)) {
        free(*reply);
        return 0;
    }
    if (rc == TPDBD_FWD_NOT_SENT || (rc == TPDBD_FWD_NO_REPLY && r->begin)) {
        /* A begin without reply began nothing that lasts: the leader
         * rolls back when the connection closes. */
        snprintf(last, ERR_SIZE, "forward failed: %s", err);
        return 0;
    }
    if (rc == TPDBD_FWD_NO_REPLY) {
        snprintf(last, ERR_SIZE,
                 "no reply from leader: the outcome is unknown (%s)", err);
        *reply = tpdbdErrorReply(last);
    }
    return 1;
}

/* Runs r on the leader: here, else forwarded to it; retried while no
 * leader is known or leadership moves, for at most LEADER_WAIT_MS. */
static char *onLeader(struct tpdbd *d, struct request *r, localFn local)
{
    char last[ERR_SIZE] = "not the leader: no leader elected";
    long long deadline = nowMs() + LEADER_WAIT_MS;
    char *reply = NULL;
    for (;;) {
        struct leader l;
        findLeader(d, &l);
        if (l.self && local(d, r, &reply) != TPDB_ERR_NOTLEADER) {
            return reply;
        }
        if (r->forwarded) {
            return notLeaderReply(d, NULL);
        }
        if (!l.self && l.raft_id != 0 && l.client[0] == '\0') {
            snprintf(last, sizeof last,
                     "forward failed: client address of leader %s unknown "
                     "(give --client-peer)",
                     l.node_id);
        } else if (!l.self && l.raft_id != 0 &&
                   forwardOnce(d, r, &l, &reply, last)) {
            return reply;
        }
        if (nowMs() >= deadline) {
            return tpdbdErrorReply(last);
        }
        usleep(RETRY_MS * 1000);
    }
}

/* Whether the status lists raft id id at address addr. */
static int isMember(json_t *st, uint64_t id, const char *addr)
{
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        const char *a = json_string_value(json_object_get(m, "address"));
        if ((uint64_t)intOf(m, "id") == id && a != NULL &&
            strcmp(a, addr) == 0) {
            return 1;
        }
    }
    return 0;
}

/* join on the leader. tpdbd nodes join through raft's own protocol on
 * the Raft port (--join), so the node must be a member already; this
 * records its string id and client address for everyone. */
static int joinLocal(struct tpdbd *d, struct request *r, char **reply)
{
    char err[ERR_SIZE] = "";
    struct tpdbd_node_row row = {tpdbdRaftId(r->join_id), r->join_id,
                                 r->join_raft, r->join_client};
    json_t *st = tpdbdStatus(d);
    const char *role = json_string_value(json_object_get(st, "role"));
    int leader = role != NULL && strcmp(role, "leader") == 0;
    int member = isMember(st, row.raft_id, r->join_raft);
    json_decref(st);
    if (!leader) {
        return TPDB_ERR_NOTLEADER;
    }
    if (!member) {
        snprintf(err, sizeof err,
                 "'%s' is not a member at %s: start it with --join (tpdbd "
                 "adds nodes through the Raft port)",
                 r->join_id, r->join_raft);
        *reply = tpdbdErrorReply(err);
        return SQLITE_ERROR;
    }
    int rc = tpdbdMetaRecord(d, &row, err, sizeof err);
    if (rc != TPDB_ERR_NOTLEADER) {
        *reply = rc == SQLITE_OK ? dumpReply(json_pack("{s:b}", "ok", 1))
                                 : tpdbdErrorReply(err);
    }
    return rc;
}

/* Fills the join fields of r; returns an error reply or NULL. */
static char *parseJoinFields(struct request *r)
{
    static const char *const keys[] = {"node_id", "raft_addr", "client_addr"};
    const char **dst[] = {&r->join_id, &r->join_raft, &r->join_client};
    char msg[128];
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(r->json, keys[i]);
        if (v == NULL) {
            snprintf(msg, sizeof msg, "Missing hash key: \"%s\"", keys[i]);
            return tpdbdErrorReply(msg);
        }
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= TPDBD_ID_MAX) {
            snprintf(msg, sizeof msg, "%s must be a string of 1-%d bytes",
                     keys[i], TPDBD_ID_MAX - 1);
            return tpdbdErrorReply(msg);
        }
        *dst[i] = json_string_value(v);
    }
    r->forwarded = json_is_true(json_object_get(r->json, "forwarded"));
    return NULL;
}

static char *runRead(struct tpdbd *d, struct request *r)
{
    char err[ERR_SIZE] = "";
    json_t *result = NULL;
    long long start = nowMs();
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, r->db, err, sizeof err);
    if (c == NULL) {
        return tpdbdErrorReply(err);
    }
    int rc = tpdbdSqlQuery(c->db, r->sql, r->params, r->blobs, 0, &result, err,
                           sizeof err);
    tpdbdPoolPut(d->pool, c);
    noteTime(d, start, r->sql);
    d->queries_total++;
    return rc == SQLITE_OK ? dumpReply(result) : tpdbdErrorReply(err);
}

/* query: leader only, linearizable through the metadata barrier. */
static char *actionQuery(struct tpdbd *d, struct request *r)
{
    char err[ERR_SIZE] = "";
    struct leader l;
    findLeader(d, &l);
    if (!l.self) {
        return notLeaderReply(d, NULL);
    }
    int rc = tpdbdMetaBarrier(d, err, sizeof err);
    if (rc == TPDB_ERR_NOTLEADER) {
        return notLeaderReply(d, err);
    }
    if (rc == TPDB_ERR_UNKNOWN || rc == TPDB_ERR_REPLFAIL) {
        return tpdbdErrorReply("not the leader: could not confirm quorum");
    }
    if (rc != SQLITE_OK) {
        return tpdbdErrorReply(err);
    }
    return runRead(d, r);
}

/* A database of the node directory a client may name: NAME.db with NAME
 * of letters, digits, '_', '-' and '.', starting with a letter or digit. */
static int dbNameValid(const char *name)
{
    size_t len = strlen(name);
    if (len < 4 || len > 64 || strcmp(name + len - 3, ".db") != 0 ||
        !isalnum((unsigned char)name[0]) || strstr(name, "..") != NULL ||
        strcmp(name, TPDBD_META_DB) == 0) {
        return 0;
    }
    return strspn(name,
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789_-.") == len;
}

/* Fills r->db (TPDBD_MAIN_DB without a "db" field) and r->forwarded;
 * returns an error reply or NULL. */
static char *parseDbField(struct request *r)
{
    json_t *db = json_object_get(r->json, "db");
    char msg[256];
    if (db != NULL &&
        (!json_is_string(db) || !dbNameValid(json_string_value(db)))) {
        snprintf(msg, sizeof msg,
                 "db must name a database of the node directory: NAME.db, "
                 "NAME of letters, digits, '_', '-', '.' (not %s)",
                 TPDBD_META_DB);
        return tpdbdErrorReply(msg);
    }
    r->db = db != NULL ? json_string_value(db) : TPDBD_MAIN_DB;
    r->forwarded = json_is_true(json_object_get(r->json, "forwarded"));
    return NULL;
}

/* Fills r->foreign_keys from the optional boolean "foreign_keys"; returns
 * an error reply or NULL. */
static char *parseForeignKeys(struct request *r)
{
    json_t *fk = json_object_get(r->json, "foreign_keys");
    if (fk != NULL && !json_is_boolean(fk)) {
        return tpdbdErrorReply("foreign_keys must be true or false");
    }
    r->foreign_keys = json_is_true(fk);
    return NULL;
}

/* Fills the SQL fields of r; returns an error reply or NULL. */
static char *parseSqlFields(struct request *r)
{
    json_t *sql = json_object_get(r->json, "sql");
    json_t *params = json_object_get(r->json, "params");
    json_t *blobs = json_object_get(r->json, "blobs");
    char *bad;
    if (sql == NULL) {
        return tpdbdErrorReply("Missing hash key: \"sql\"");
    }
    if (!json_is_string(sql) ||
        strlen(json_string_value(sql)) != json_string_length(sql)) {
        return tpdbdErrorReply("sql must be a string without NUL");
    }
    if (params != NULL && !json_is_null(params) && !json_is_array(params)) {
        return tpdbdErrorReply("params must be an array");
    }
    if ((bad = parseDbField(r)) != NULL ||
        (bad = parseForeignKeys(r)) != NULL) {
        return bad;
    }
    if (blobs != NULL && (!json_is_string(blobs) ||
                          (strcmp(json_string_value(blobs), "hex") != 0 &&
                           strcmp(json_string_value(blobs), "base64") != 0))) {
        return tpdbdErrorReply("blobs must be \"hex\" or \"base64\"");
    }
    r->sql = json_string_value(sql);
    r->params = json_is_array(params) ? params : NULL;
    r->blobs = blobs != NULL && strcmp(json_string_value(blobs), "base64") == 0
                   ? TPDBD_BLOBS_BASE64
                   : TPDBD_BLOBS_HEX;
    return NULL;
}

/* A string field without NUL of 1 to max - 1 bytes into *out; absent (or
 * null when optional) leaves *out NULL. Returns an error reply or NULL. */
static char *stringField(struct request *r,
                         const char *key,
                         int required,
                         size_t max,
                         const char **out)
{
    json_t *v = json_object_get(r->json, key);
    char msg[160];
    *out = NULL;
    if (v == NULL || (!required && json_is_null(v))) {
        if (!required) {
            return NULL;
        }
        snprintf(msg, sizeof msg, "Missing hash key: \"%s\"", key);
        return tpdbdErrorReply(msg);
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) >= max ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(msg, sizeof msg, "%s must be a string of 1-%zu bytes", key,
                 max - 1);
        return tpdbdErrorReply(msg);
    }
    *out = json_string_value(v);
    return NULL;
}

static int removeLocal(struct tpdbd *d, struct request *r, char **reply)
{
    return tpdbdAdminRemove(d, r->db, r->node_id, reply);
}

static int assignLocal(struct tpdbd *d, struct request *r, char **reply)
{
    return tpdbdAdminAssign(d, r->db, r->node_id, r->role, reply);
}

static int transferLocal(struct tpdbd *d, struct request *r, char **reply)
{
    return tpdbdAdminTransfer(d, r->db, r->node_id, reply);
}

/* begin on the leader: query's read barrier first, so that the state the
 * transaction reads holds every write acknowledged before it began. */
static int beginLocal(struct tpdbd *d, struct request *r, char **reply)
{
    char err[ERR_SIZE] = "";
    int rc = tpdbdMetaBarrier(d, err, sizeof err);
    if (rc == TPDB_ERR_NOTLEADER) {
        return rc;
    }
    if (rc == TPDB_ERR_UNKNOWN || rc == TPDB_ERR_REPLFAIL) {
        *reply = tpdbdErrorReply("not the leader: could not confirm quorum");
        return rc;
    }
    if (rc != SQLITE_OK) {
        *reply = tpdbdErrorReply(err);
        return rc;
    }
    return tpdbdTxnBeginLocal(r->sess, r->db, r->foreign_keys, reply);
}

static char *actionBegin(struct tpdbd *d, struct request *r)
{
    char *bad = tpdbdTxnCanBegin(r->sess);
    if (bad == NULL && (bad = parseDbField(r)) == NULL &&
        (bad = parseForeignKeys(r)) == NULL) {
        r->begin = 1;
        return onLeader(d, r, beginLocal);
    }
    return bad;
}

static char *actionCommit(struct tpdbd *d, struct request *r)
{
    (void)d;
    return tpdbdTxnEnd(r->sess, r->json, 1);
}

static char *actionRollback(struct tpdbd *d, struct request *r)
{
    (void)d;
    return tpdbdTxnEnd(r->sess, r->json, 0);
}

static char *actionRemove(struct tpdbd *d, struct request *r)
{
    char *bad = parseDbField(r);
    if (bad == NULL && (bad = stringField(r, "node_id", 1, TPDBD_ID_MAX + 1,
                                          &r->node_id)) == NULL) {
        return onLeader(d, r, removeLocal);
    }
    return bad;
}

static char *actionAssign(struct tpdbd *d, struct request *r)
{
    char *bad = parseDbField(r);
    if (bad == NULL &&
        (bad = stringField(r, "node_id", 1, TPDBD_ID_MAX + 1, &r->node_id)) ==
            NULL &&
        (bad = stringField(r, "role", 1, 16, &r->role)) == NULL) {
        if (strcmp(r->role, "voter") != 0 && strcmp(r->role, "standby") != 0 &&
            strcmp(r->role, "spare") != 0) {
            return tpdbdErrorReply("role must be voter, standby or spare");
        }
        return onLeader(d, r, assignLocal);
    }
    return bad;
}

static char *actionTransfer(struct tpdbd *d, struct request *r)
{
    char *bad = parseDbField(r);
    if (bad == NULL && (bad = stringField(r, "node_id", 0, TPDBD_ID_MAX + 1,
                                          &r->node_id)) == NULL) {
        return onLeader(d, r, transferLocal);
    }
    return bad;
}

static char *actionCheckpoint(struct tpdbd *d, struct request *r)
{
    char *bad = parseDbField(r);
    return bad != NULL ? bad : tpdbdAdminCheckpoint(d, r->db);
}

/* backup to a path on this node, or streamed back ("stream":true). */
static char *actionBackup(struct tpdbd *d, struct request *r)
{
    json_t *stream = json_object_get(r->json, "stream");
    char *bad = parseDbField(r);
    if (bad != NULL) {
        return bad;
    }
    if (stream != NULL && !json_is_boolean(stream)) {
        return tpdbdErrorReply("stream must be true or false");
    }
    if (json_is_true(stream)) {
        if (json_object_get(r->json, "path") != NULL) {
            return tpdbdErrorReply(
                "backup: give path (a file written on this node) or "
                "stream:true (sent back on this connection), not both");
        }
        if (r->out == NULL) {
            return tpdbdErrorReply(
                "backup: a stream needs a client connection");
        }
        return tpdbdAdminBackupStream(d, r->db, r->out);
    }
    if ((bad = stringField(r, "path", 1, PATH_MAX, &r->path)) == NULL) {
        return tpdbdAdminBackup(d, r->db, r->path);
    }
    return bad;
}

static char *actionJoin(struct tpdbd *d, struct request *r)
{
    char *bad = parseJoinFields(r);
    return bad != NULL ? bad : onLeader(d, r, joinLocal);
}

/* propose, query and local_query; inside a transaction, its statements. */
static char *actionSql(struct tpdbd *d, struct request *r, int kind)
{
    char *bad = parseSqlFields(r);
    if (bad != NULL) {
        return bad;
    }
    if (tpdbdSessionInTxn(r->sess)) {
        const char *db = json_object_get(r->json, "db") != NULL ? r->db : NULL;
        return tpdbdTxnStatement(r->sess, r->json, kind, r->sql, r->params, db,
                                 r->blobs);
    }
    return kind == TPDBD_TXN_PROPOSE ? onLeader(d, r, proposeLocal)
           : kind == TPDBD_TXN_QUERY ? actionQuery(d, r)
                                     : runRead(d, r);
}

static char *dispatch(struct tpdbd *d, struct request *r)
{
    static const struct {
        const char *name;
        char *(*fn)(struct tpdbd *d, struct request *r);
    } actions[] = {
        {"join", actionJoin},     {"begin", actionBegin},
        {"commit", actionCommit}, {"rollback", actionRollback},
        {"remove", actionRemove}, {"transfer", actionTransfer},
        {"assign", actionAssign}, {"checkpoint", actionCheckpoint},
        {"backup", actionBackup},
    };
    static const char *const sqlActions[] = {"propose", "query", "local_query"};
    char msg[128];
    if (strcmp(r->action, "status") == 0) {
        return actionStatus(d);
    }
    if (strcmp(r->action, "metrics") == 0) {
        return actionMetrics(d);
    }
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        if (strcmp(r->action, actions[i].name) == 0) {
            return actions[i].fn(d, r);
        }
    }
    for (int k = 0; k < 3; k++) {
        if (strcmp(r->action, sqlActions[k]) == 0) {
            return actionSql(d, r, k);
        }
    }
    snprintf(msg, sizeof msg, "unknown action: %.64s", r->action);
    return tpdbdErrorReply(msg);
}

char *tpdbdHandleSession(struct tpdbd *d,
                         struct tpdbd_session *sess,
                         struct tpdbd_sink *out,
                         const char *line,
                         size_t len)
{
    json_error_t jerr;
    struct request r;
    memset(&r, 0, sizeof r);
    r.sess = sess;
    r.out = out;
    r.json =
        json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (r.json == NULL) {
        return tpdbdErrorReply(jerr.text);
    }
    char *reply;
    if (!json_is_object(r.json)) {
        reply = tpdbdErrorReply("request must be a JSON object");
    } else {
        r.action = json_string_value(json_object_get(r.json, "action"));
        if (r.action == NULL) {
            r.action = "unknown";
        }
        reply = tpdbdAuthorize(d, sess, r.json, r.action);
        if (reply == NULL) {
            reply = dispatch(d, &r);
        }
    }
    json_decref(r.json);
    return reply;
}

char *tpdbdHandle(struct tpdbd *d, const char *line, size_t len)
{
    return tpdbdHandleSession(d, NULL, NULL, line, len);
}
