/*
 * tpdb's SQL functions, registered on every connection:
 *   tpdb_status()            JSON status of the node replicating this db
 *   tpdb_leader()            "id@address" of the leader, or NULL
 *   tpdb_last_error()        reason of the last failed replicated write or
 *                            open on this thread
 *   tpdb_add(id, address)    add a node (as spare) to the cluster
 *   tpdb_assign(id, role)    role: 'voter', 'standby' or 'spare'
 *   tpdb_remove(id)          remove a node
 *   tpdb_transfer(id)        transfer leadership (0: any voter)
 *   tpdb_checkpoint()        checkpoint the node's applier connections
 * Membership functions run on the leader and return 1 on success.
 */
#include "ext/functions.h"

#include <string.h>

#include "raftfsm/node.h"
#include "vfs/vfs.h"

static struct tpdb_node *nodeOf(sqlite3_context *ctx)
{
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    const char *path = sqlite3_db_filename(db, "main");
    struct tpdb_node *n = NULL;
    if (path != NULL && path[0] != '\0') {
        n = tpdbNodeFind(path);
    }
    if (n == NULL) {
        sqlite3_result_error(ctx,
                             "tpdb: this database is not replicated by a "
                             "node in this process (open it with vfs=tpdb)",
                             -1);
    }
    return n;
}

static void resultRc(sqlite3_context *ctx, int rc, const char *errmsg)
{
    if (rc == TPDB_OK) {
        sqlite3_result_int(ctx, 1);
        return;
    }
    char *msg =
        sqlite3_mprintf("tpdb: %s", errmsg[0] ? errmsg : tpdb_strerror(rc));
    sqlite3_result_error(ctx, msg ? msg : "tpdb: error", -1);
    sqlite3_free(msg);
}

static void fnStatus(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    char *json = NULL;
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    (void)argv;
    if (n == NULL) {
        return;
    }
    int rc = tpdbNodeStatusJson(n, &json, errmsg);
    if (rc != TPDB_OK) {
        resultRc(ctx, rc, errmsg);
        return;
    }
    sqlite3_result_text(ctx, json, -1, SQLITE_TRANSIENT);
    tpdb_free(json);
}

static void fnLeader(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char buf[512];
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    (void)argv;
    if (n == NULL) {
        return;
    }
    tpdbNodeLeader(n, buf, sizeof buf);
    if (buf[0] == '\0') {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, buf, -1, SQLITE_TRANSIENT);
    }
}

static void fnLastError(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_text(ctx, tpdbVfsLastError(), -1, SQLITE_TRANSIENT);
}

static void fnAdd(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    if (n == NULL) {
        return;
    }
    const char *address = (const char *)sqlite3_value_text(argv[1]);
    int rc =
        tpdbNodeAdd(n, (uint64_t)sqlite3_value_int64(argv[0]), address, errmsg);
    resultRc(ctx, rc, errmsg);
}

static void fnAssign(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    if (n == NULL) {
        return;
    }
    const char *role = (const char *)sqlite3_value_text(argv[1]);
    int rc =
        tpdbNodeAssign(n, (uint64_t)sqlite3_value_int64(argv[0]), role, errmsg);
    resultRc(ctx, rc, errmsg);
}

static void fnRemove(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    if (n == NULL) {
        return;
    }
    int rc = tpdbNodeRemove(n, (uint64_t)sqlite3_value_int64(argv[0]), errmsg);
    resultRc(ctx, rc, errmsg);
}

static void fnTransfer(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    if (n == NULL) {
        return;
    }
    int rc =
        tpdbNodeTransfer(n, (uint64_t)sqlite3_value_int64(argv[0]), errmsg);
    resultRc(ctx, rc, errmsg);
}

static void fnCheckpoint(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_node *n = nodeOf(ctx);
    (void)argc;
    (void)argv;
    if (n == NULL) {
        return;
    }
    resultRc(ctx, tpdbNodeCheckpoint(n, errmsg), errmsg);
}

int extFunctionsRegister(sqlite3 *db)
{
    static const struct {
        const char *name;
        int nArg;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
    } fns[] = {
        {"tpdb_status", 0, fnStatus},
        {"tpdb_leader", 0, fnLeader},
        {"tpdb_last_error", 0, fnLastError},
        {"tpdb_add", 2, fnAdd},
        {"tpdb_assign", 2, fnAssign},
        {"tpdb_remove", 1, fnRemove},
        {"tpdb_transfer", 1, fnTransfer},
        {"tpdb_checkpoint", 0, fnCheckpoint},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        /* Not SQLITE_DETERMINISTIC: results change with cluster state. */
        int rc = sqlite3_create_function_v2(db, fns[i].name, fns[i].nArg,
                                            SQLITE_UTF8 | SQLITE_DIRECTONLY,
                                            NULL, fns[i].fn, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    return SQLITE_OK;
}
