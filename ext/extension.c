/*
 * libtpdbraft: the loadable SQLite extension and the linkable library.
 *
 *   sqlite3> .load ./libtpdbraft
 *   sqlite3> .open 'file:app.db?vfs=tpdb'
 *
 * Loading registers the "tpdb" VFS for the life of the process (the
 * library stays loaded after the loading connection closes) and an
 * auto-extension that gives every later connection the tpdb_* SQL
 * functions, the TPDB table module, and WAL mode on replicated databases.
 * C programs link the library and call tpdb_register() instead.
 */
#include <pthread.h>
#include <string.h>

#include <sqlite3.h>

#include "ext/functions.h"
#include "ext/hooks.h"
#include "ext/tpdb.h"
#include "raftfsm/node.h"
#include "vfs/vfs.h"

#ifdef TPDB_HAVE_VTAB
#include "ext/tpdb_vtab.h"
#endif

/* Whether the connection's main database goes through a tpdb node of this
 * process (not the node's own internal connections). */
static int isReplicated(sqlite3 *db)
{
    const char *path = sqlite3_db_filename(db, "main");
    sqlite3_vfs *vfs = NULL;
    if (path == NULL || path[0] == '\0' ||
        sqlite3_uri_boolean(path, TPDB_URI_INTERNAL, 0)) {
        return 0;
    }
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) !=
            SQLITE_OK ||
        vfs == NULL || strcmp(vfs->zName, "tpdb") != 0) {
        return 0;
    }
    /* A node in this process, or another process's node that takes this
     * connection's writes: both need WAL mode (capture sees WAL frames
     * only; a rollback-journal write would never be replicated). */
    return tpdbNodeFind(path) != NULL || tpdbVfsHandleOf(db) != NULL;
}

static int connectionInit(sqlite3 *db,
                          char **pzErrMsg,
                          const struct sqlite3_api_routines *api)
{
    (void)api;
    int rc = extFunctionsRegister(db);
#ifdef TPDB_HAVE_VTAB
    if (rc == SQLITE_OK) {
        rc = tpdbVtabRegister(db);
    }
#endif
    /* A read-only connection cannot write, and SQLite fails the open when
     * an auto-extension leaves an error (a read-only WAL reader's first
     * read may fail where its later ones work, as on "unix"). */
    if (rc == SQLITE_OK && isReplicated(db) &&
        sqlite3_db_readonly(db, "main") == 0) {
        /* Replicated databases are always in WAL mode. A lock held for a
         * moment by the node (WAL recovery, a checkpoint after a stream)
         * is waited for; the connection's own busy timeout (none) is
         * restored. */
        sqlite3_busy_timeout(db, 10000);
        sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        /* Durability comes from the Raft log, fsynced on a quorum before
         * COMMIT returns, and a restarted node rebuilds its databases from
         * the log: a WAL fsync per commit would add a second durable write
         * that buys nothing. Checkpoints still sync. A connection may set
         * FULL again. */
        sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
        sqlite3_busy_timeout(db, 0);
        char why[TPDB_ERRMSG_SIZE] = "";
        if (extAdoptLater(db, why) != TPDB_OK) {
            /* The connection opens; its writes are refused with why. */
            tpdbLog(TPDB_LOG_ERROR, "%s: %s", sqlite3_db_filename(db, "main"),
                    why);
        }
        int err = sqlite3_errcode(db);
        if (err == SQLITE_NOTADB || err == SQLITE_CORRUPT ||
            err == SQLITE_ERROR) {
            /* A damaged file, or one of a format this SQLite does not
             * read, opens, as on "unix": its first statement says what is
             * wrong. An empty statement clears the error. A busy file
             * still fails the open: it must not stay out of WAL mode. */
            sqlite3_exec(db, "", NULL, NULL, NULL);
        }
    }
    if (rc != SQLITE_OK && pzErrMsg != NULL) {
        *pzErrMsg = sqlite3_mprintf("tpdb: cannot register SQL functions");
    }
    return rc;
}

static pthread_once_t registerOnce = PTHREAD_ONCE_INIT;
static int registerRc = SQLITE_OK;

static void registerVfs(void)
{
    registerRc = extHooksRegister();
}

TPDB_PUBLIC int tpdb_register(void)
{
    pthread_once(&registerOnce, registerVfs);
    if (registerRc != SQLITE_OK) {
        return registerRc;
    }
    /* Again on every call: sqlite3_shutdown() drops auto-extensions (the
     * VFS stays), and SQLite keeps one copy of each. */
    return sqlite3_auto_extension((void (*)(void))connectionInit);
}

TPDB_PUBLIC const char *tpdb_errmsg(void)
{
    return tpdbVfsLastError();
}

TPDB_PUBLIC int tpdb_status(sqlite3 *db, char **json)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    const char *path = sqlite3_db_filename(db, "main");
    struct tpdb_node *n = path ? tpdbNodeFind(path) : NULL;
    char *text = NULL;
    *json = NULL;
    if (n == NULL) {
        return SQLITE_NOTFOUND;
    }
    if (tpdbNodeStatusJson(n, &text, errmsg) != TPDB_OK) {
        return SQLITE_NOMEM;
    }
    *json = sqlite3_mprintf("%s", text);
    tpdb_free(text);
    return *json != NULL ? SQLITE_OK : SQLITE_NOMEM;
}

TPDB_PUBLIC int tpdb_leader(sqlite3 *db, char *buf, size_t size)
{
    const char *path = sqlite3_db_filename(db, "main");
    struct tpdb_node *n = path ? tpdbNodeFind(path) : NULL;
    if (size > 0) {
        buf[0] = '\0';
    }
    if (n == NULL) {
        return SQLITE_NOTFOUND;
    }
    if (size > 0) {
        tpdbNodeLeader(n, buf, size);
    }
    return SQLITE_OK;
}

TPDB_PUBLIC void tpdb_shutdown(void)
{
    tpdbNodeShutdownAll();
}

/* Entry point for `.load libtpdbraft` (the name SQLite derives from the
 * file name). */
TPDB_PUBLIC int sqlite3_tpdbraft_init(sqlite3 *db,
                                      char **pzErrMsg,
                                      const struct sqlite3_api_routines *api)
{
    int rc = tpdb_register();
    if (rc == SQLITE_OK) {
        rc = connectionInit(db, pzErrMsg, api);
    }
    return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
