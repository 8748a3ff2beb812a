/*
 * The tpdb shell's cluster commands (tpdb_shell_int.h): .status .leader
 * .members .join .remove .transfer .checkpoint .backup. At a tpdbd node
 * they are client API actions; .status asks every member for its own
 * status on a short connection, so a dead member shows as unreachable.
 * On a local database they use the library's SQL functions.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "shell/tpdb_shell_int.h"

static const char *const statusCols[] = {"id",   "role",   "raft",    "client",
                                         "term", "commit", "applied", "lag"};
#define N_STATUS_COLS 8

static void setText(struct tpdb_value *v, const char *z)
{
    tpdbValueSet(v, z != NULL ? TPDB_VAL_TEXT : TPDB_VAL_NULL, z,
                 z != NULL ? strlen(z) : 0, 0);
}

static void setInt(struct tpdb_value *v, json_t *j)
{
    char buf[32];
    if (!json_is_integer(j)) {
        setText(v, "-");
        return;
    }
    snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(j));
    tpdbValueSet(v, TPDB_VAL_INT, buf, strlen(buf), 0);
}

static struct tpdb_result *newTable(const char *const *cols, int n)
{
    struct tpdb_result *r = tpdbResultNew(n);
    for (int i = 0; r != NULL && i < n; i++) {
        tpdbResultSetName(r, i, cols[i]);
    }
    return r;
}

/* Prints a table in the current mode, or as a box in list mode. */
static void show(struct shell *sh, struct tpdb_result *r)
{
    int m = sh->mode == TPDB_MODE_LIST ? TPDB_MODE_BOX : sh->mode;
    tpdbRender(sh->out, m, 1, r);
    tpdbResultFree(r);
}

/* One member's row of .status; st is its own status or NULL. */
static void statusRow(struct tpdb_result *r,
                      const char *id,
                      json_t *info,
                      json_t *st,
                      long long maxCommit)
{
    struct tpdb_value *v = tpdbResultAddRow(r);
    if (v == NULL) {
        return;
    }
    const char *raft = json_string_value(json_object_get(info, "raft"));
    const char *client = json_string_value(json_object_get(info, "client"));
    setText(&v[0], id);
    setText(&v[2], raft);
    setText(&v[3], client);
    if (st == NULL) {
        /* Without a client address (tpdbd learns followers' only from
         * --client-peer or join) the shell cannot ask the member. */
        setText(&v[1], client != NULL && client[0] != '\0'
                           ? "unreachable"
                           : "no client address");
        for (int i = 4; i < N_STATUS_COLS; i++) {
            setText(&v[i], "-");
        }
        return;
    }
    const char *role = json_string_value(json_object_get(st, "role"));
    char lag[32];
    setText(&v[1], role != NULL ? role : "?");
    setInt(&v[4], json_object_get(st, "term"));
    setInt(&v[5], json_object_get(st, "commit_index"));
    setInt(&v[6], json_object_get(st, "last_applied"));
    snprintf(lag, sizeof lag, "%lld",
             maxCommit - (long long)json_integer_value(
                             json_object_get(st, "last_applied")));
    tpdbValueSet(&v[7], TPDB_VAL_INT, lag, strlen(lag), 0);
}

static int remoteStatusCmd(struct shell *sh)
{
    json_t *self = remoteStatusOf(sh->remote, NULL);
    if (self == NULL) {
        shellError("no member answers status (last tried %s)",
                   remoteAddr(sh->remote));
        return -1;
    }
    json_t *members = json_object_get(self, "members"), *info;
    size_t n = json_object_size(members) + 1, i = 0;
    json_t **sts = calloc(n, sizeof *sts);
    const char *key;
    long long maxCommit = 0;
    sts[0] = json_incref(self);
    json_object_foreach(members, key, info)
    {
        const char *client = json_string_value(json_object_get(info, "client"));
        sts[++i] = client != NULL && client[0] != '\0'
                       ? remoteStatusOf(sh->remote, client)
                       : NULL;
    }
    for (i = 0; i < n; i++) {
        long long c = (long long)json_integer_value(
            json_object_get(sts[i], "commit_index"));
        maxCommit = c > maxCommit ? c : maxCommit;
    }
    struct tpdb_result *r = newTable(statusCols, N_STATUS_COLS);
    json_t *selfInfo =
        json_pack("{s:O,s:O}", "raft", json_object_get(self, "raft_addr"),
                  "client", json_object_get(self, "client_addr"));
    statusRow(r, json_string_value(json_object_get(self, "node_id")), selfInfo,
              self, maxCommit);
    i = 0;
    json_object_foreach(members, key, info)
    {
        statusRow(r, key, info, sts[++i], maxCommit);
    }
    const char *leader = json_string_value(json_object_get(self, "leader_id"));
    show(sh, r);
    fprintf(sh->out, "leader: %s (as %s sees it); shell connected to %s\n",
            leader != NULL && leader[0] != '\0' ? leader : "none known",
            json_string_value(json_object_get(self, "node_id")),
            remoteAddr(sh->remote));
    for (i = 0; i < n; i++) {
        json_decref(sts[i]);
    }
    free(sts);
    json_decref(selfInfo);
    json_decref(self);
    return 0;
}

/* This node's role in the configuration (voter, standby, spare), as
 * the other members' roles are given. */
static const char *selfRole(json_t *st)
{
    json_t *m;
    size_t i;
    json_int_t id = json_integer_value(json_object_get(st, "raft_id"));
    json_array_foreach(json_object_get(json_object_get(st, "tpdb"), "members"),
                       i, m)
    {
        if (json_integer_value(json_object_get(m, "id")) == id) {
            return json_string_value(json_object_get(m, "role"));
        }
    }
    return json_string_value(json_object_get(st, "role"));
}

static int remoteLeaderCmd(struct shell *sh, int members)
{
    json_t *st = remoteStatusOf(sh->remote, NULL), *info;
    const char *key;
    if (st == NULL) {
        shellError("no member answers status");
        return -1;
    }
    const char *leader = json_string_value(json_object_get(st, "leader_id"));
    const char *self = json_string_value(json_object_get(st, "node_id"));
    if (members) {
        static const char *const cols[] = {"id", "raft", "client", "role"};
        struct tpdb_result *r = newTable(cols, 4);
        struct tpdb_value *v = tpdbResultAddRow(r);
        setText(&v[0], self);
        setText(&v[1], json_string_value(json_object_get(st, "raft_addr")));
        setText(&v[2], json_string_value(json_object_get(st, "client_addr")));
        setText(&v[3], selfRole(st));
        json_object_foreach(json_object_get(st, "members"), key, info)
        {
            v = tpdbResultAddRow(r);
            setText(&v[0], key);
            setText(&v[1], json_string_value(json_object_get(info, "raft")));
            setText(&v[2], json_string_value(json_object_get(info, "client")));
            setText(&v[3], json_string_value(json_object_get(info, "role")));
        }
        show(sh, r);
    } else if (leader == NULL || leader[0] == '\0') {
        fprintf(sh->out, "no leader known (term %lld)\n",
                (long long)json_integer_value(json_object_get(st, "term")));
    } else {
        json_t *m = json_object_get(json_object_get(st, "members"), leader);
        const char *client =
            strcmp(leader, self) == 0
                ? json_string_value(json_object_get(st, "client_addr"))
                : json_string_value(json_object_get(m, "client"));
        fprintf(sh->out, "%s at %s (term %lld)\n", leader,
                client != NULL && client[0] ? client : "(client unknown)",
                (long long)json_integer_value(json_object_get(st, "term")));
    }
    json_decref(st);
    return 0;
}

/* Sends an action built from argv; prints the reply's fields but ok. */
static int remoteAction(struct shell *sh, json_t *req)
{
    char err[SHELL_ERR_MAX] = "";
    json_t *reply = NULL, *v;
    const char *key;
    const char *action = json_string_value(json_object_get(req, "action"));
    int rc = remoteRequest(sh->remote, req, &reply, err, sizeof err);
    if (rc != 0) {
        if (strncmp(err, "unknown action", 14) == 0) {
            shellError("this tpdbd does not support '%s' (%s)", action, err);
        } else {
            shellError("%s", err);
        }
    }
    json_object_foreach(reply, key, v)
    {
        if (strcmp(key, "ok") != 0) {
            char *text = json_is_string(v) ? strdup(json_string_value(v))
                                           : json_dumps(v, JSON_ENCODE_ANY);
            fprintf(sh->out, "%s: %s\n", key, text != NULL ? text : "");
            free(text);
        }
    }
    json_decref(reply);
    json_decref(req);
    return rc;
}

static int usageError(const char *text)
{
    shellError("usage: %s", text);
    return -1;
}

static int remoteCluster(struct shell *sh, int argc, char **argv)
{
    const char *c = argv[0];
    char path[PATH_MAX];
    if (strcmp(c, "join") == 0) {
        return argc != 4
                   ? usageError(".join ID RAFT_ADDR CLIENT_ADDR")
                   : remoteAction(
                         sh, json_pack("{s:s,s:s,s:s,s:s}", "action", "join",
                                       "node_id", argv[1], "raft_addr", argv[2],
                                       "client_addr", argv[3]));
    }
    if (strcmp(c, "remove") == 0) {
        return argc != 2
                   ? usageError(".remove ID")
                   : remoteAction(sh, json_pack("{s:s,s:s}", "action", "remove",
                                                "node_id", argv[1]));
    }
    if (strcmp(c, "transfer") == 0) {
        if (argc > 2) {
            return usageError(".transfer [ID|any]");
        }
        json_t *req = json_pack("{s:s}", "action", "transfer");
        if (argc == 2 && strcmp(argv[1], "any") != 0) {
            json_object_set_new(req, "node_id", json_string(argv[1]));
        }
        return remoteAction(sh, req);
    }
    if (strcmp(c, "checkpoint") == 0) {
        return remoteAction(sh, json_pack("{s:s}", "action", "checkpoint"));
    }
    if (argc == 3 && strcmp(argv[1], "--local") == 0) {
        return shellBackupStream(sh, argv[2]);
    }
    /* backup: the node writes the file, so the path must be absolute. */
    if (argc != 2 || argv[1][0] == '-') {
        return usageError(
            ".backup FILE (written by the node) or .backup "
            "--local FILE (streamed here)");
    }
    if (argv[1][0] == '/') {
        snprintf(path, sizeof path, "%s", argv[1]);
    } else if (getcwd(path, sizeof path) != NULL) {
        size_t n = strlen(path);
        snprintf(path + n, sizeof path - n, "/%s", argv[1]);
    }
    return remoteAction(
        sh, json_pack("{s:s,s:s}", "action", "backup", "path", path));
}

/* Runs "SELECT fn(arg)" locally and prints a non-NULL result. */
static int localCall(struct shell *sh, const char *sql)
{
    char err[SHELL_ERR_MAX] = "";
    struct tpdb_result *res = NULL;
    int rc =
        sql != NULL ? localExec(sh->local, sql, &res, err, sizeof err) : -1;
    if (rc != 0) {
        shellError("%s", sql != NULL ? err : "out of memory");
    } else if (res != NULL && res->nrows > 0 && res->cells[0].text != NULL) {
        fprintf(sh->out, "%s\n", res->cells[0].text);
    }
    tpdbResultFree(res);
    return rc;
}

static int localStatusCmd(struct shell *sh, int members)
{
    json_t *st = localStatus(sh->local), *m;
    size_t i;
    if (st == NULL) {
        shellError("this database is not replicated by a node");
        return -1;
    }
    static const char *const cols[] = {"id",   "address", "role",
                                       "term", "commit",  "applied"};
    struct tpdb_result *r = newTable(cols, members ? 3 : 6);
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        struct tpdb_value *v = tpdbResultAddRow(r);
        int self = json_integer_value(json_object_get(m, "id")) ==
                   json_integer_value(json_object_get(st, "id"));
        setInt(&v[0], json_object_get(m, "id"));
        setText(&v[1], json_string_value(json_object_get(m, "address")));
        setText(&v[2],
                json_string_value(json_object_get(self ? st : m, "role")));
        for (int k = 3; !members && k < 6; k++) {
            static const char *const keys[] = {"term", "commit_index",
                                               "applied_index"};
            setInt(&v[k], self ? json_object_get(st, keys[k - 3]) : NULL);
        }
    }
    show(sh, r);
    json_decref(st);
    return 0;
}

static int isNumber(const char *z)
{
    return z[0] != '\0' && strspn(z, "0123456789") == strlen(z);
}

static int localCluster(struct shell *sh, int argc, char **argv)
{
    const char *c = argv[0];
    char err[SHELL_ERR_MAX] = "", sql[128];
    if (strcmp(c, "status") == 0 || strcmp(c, "members") == 0) {
        return localStatusCmd(sh, c[0] == 'm');
    }
    if (strcmp(c, "leader") == 0) {
        return localCall(sh,
                         "SELECT coalesce(tpdb_leader(), 'no leader "
                         "known')");
    }
    if (strcmp(c, "checkpoint") == 0) {
        return localCall(sh, "SELECT tpdb_checkpoint()");
    }
    if (strcmp(c, "remove") == 0 || strcmp(c, "transfer") == 0) {
        const char *id = argc == 2 ? argv[1] : "0";
        if (strcmp(id, "any") == 0) {
            id = "0";
        }
        if (argc > 2 || !isNumber(id) || (c[0] == 'r' && argc != 2)) {
            return usageError(c[0] == 'r' ? ".remove ID (a number)"
                                          : ".transfer [ID|any]");
        }
        snprintf(sql, sizeof sql, "SELECT tpdb_%s(%s)", c, id);
        return localCall(sh, sql);
    }
    if (strcmp(c, "join") == 0) {
        shellError(
            "a local node adds members with SELECT tpdb_add(id, "
            "'host:port')");
        return -1;
    }
    if (argc == 3 && strcmp(argv[1], "--local") == 0) {
        /* The database is local already: the same as without --local. */
        argv[1] = argv[2];
        argc = 2;
    }
    if (argc != 2) {
        return usageError(".backup [--local] FILE");
    }
    if (localBackup(sh->local, argv[1], err, sizeof err) != 0) {
        shellError("%s", err);
        return -1;
    }
    return 0;
}

int shellClusterDot(struct shell *sh, int argc, char **argv)
{
    static const char *const names[] = {"status",     "leader", "members",
                                        "join",       "remove", "transfer",
                                        "checkpoint", "backup"};
    size_t i = 0;
    while (i < 8 && strcmp(argv[0], names[i]) != 0) {
        i++;
    }
    if (i == 8) {
        return 1;
    }
    if (sh->local != NULL) {
        return localCluster(sh, argc, argv);
    }
    if (i == 0) {
        return remoteStatusCmd(sh);
    }
    if (i <= 2) {
        return remoteLeaderCmd(sh, i == 2);
    }
    return remoteCluster(sh, argc, argv);
}
