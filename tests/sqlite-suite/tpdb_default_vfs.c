/*
 * Makes the tpdb VFS SQLite's default VFS inside SQLite's own `testfixture`.
 *
 * tests/sqlite-suite/run.sh compiles this file and the project's vfs/
 * sources into testfixture, whose SQLite is built with
 * -DSQLITE_EXTRA_INIT=tpdbSuiteInit, so sqlite3_initialize() calls
 * tpdbSuiteInit() before any test runs (and again after every
 * sqlite3_shutdown()). The environment variable TPDB_SUITE_VFS picks the run:
 *   unix (or unset)  SQLite's default is left alone.
 *   unix-wal         "unix", and every connection to a database file is
 *                    switched to WAL mode and synchronous=NORMAL, as the
 *                    extension does: the baseline of the "tpdb" run.
 *   tpdb             the product: the real libtpdbraft.so (its path in
 *                    TPDB_SUITE_LIB) is loaded and registered with
 *                    tpdb_register(), and its "tpdb" VFS made the default, so
 *                    every test database gets the single-node default
 *                    cluster of its directory, node and Raft included.
 *                    testfixture is linked with --export-dynamic, so the
 *                    library's SQLite calls bind to testfixture's SQLite.
 *   tpdb-stub        the vfs/ sources linked in, with hooks that accept
 *                    every commit locally after checking the captured
 *                    transaction (no node, no Raft).
 *   tpdb-nohooks     the vfs/ sources with hooks == NULL (pass-through).
 * In the "tpdb" mode every connection also gets the SQL function
 * tpdb_suite_shutdown(), which stops the nodes of the process: run.sh calls
 * it before SQLite's end-of-script checks for open files and unfreed memory,
 * which would otherwise count the nodes' own connections.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "vfs/vfs.h"

/* Called by sqlite3_initialize() through SQLITE_EXTRA_INIT; the argument is
 * always NULL. Returns an SQLITE_* code; a failure makes
 * sqlite3_initialize() fail, so a broken registration stops every test
 * instead of silently running them on "unix". */
int tpdbSuiteInit(const char *unused);

static int suiteDbOpen(void *arg,
                       const char *path,
                       const char *uri,
                       void **handle,
                       char *errmsg)
{
    (void)arg;
    (void)path;
    (void)uri;
    (void)errmsg;
    *handle = NULL;
    return TPDB_OK;
}

static void suiteDbClose(void *arg, void *handle)
{
    (void)arg;
    (void)handle;
}

static int suiteWriteCheck(void *arg, void *handle, char *errmsg)
{
    (void)arg;
    (void)handle;
    (void)errmsg;
    return TPDB_OK;
}

/* Checks what the VFS promises about a captured transaction (vfs/txn.h):
 * a power-of-two page size, pages sorted, unique, non-zero and within the
 * new database size. Returns TPDB_OK or TPDB_CORRUPT with errmsg set. */
static int suiteCheckTxn(const struct tpdb_txn *txn, char *errmsg)
{
    uint32_t ps = txn->page_size;

    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) {
        tpdbErrf(errmsg, "bad page size %u", ps);
        return TPDB_CORRUPT;
    }
    if (txn->db_pages == 0 || (txn->n_pages > 0 && txn->pages == NULL)) {
        tpdbErrf(errmsg, "db_pages %u, %u pages", txn->db_pages, txn->n_pages);
        return TPDB_CORRUPT;
    }
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        const struct tpdb_page *p = &txn->pages[i];
        uint32_t prev = i > 0 ? txn->pages[i - 1].pgno : 0;
        if (p->pgno <= prev || p->pgno > txn->db_pages || p->data == NULL) {
            tpdbErrf(errmsg, "page %u (entry %u, previous %u, db_pages %u)",
                     p->pgno, i, prev, txn->db_pages);
            return TPDB_CORRUPT;
        }
    }
    return TPDB_OK;
}

/* Accepts every commit that passes suiteCheckTxn. A failure is printed, so
 * that the test log names it next to the failing test case. */
static int suiteCommit(void *arg,
                       void *handle,
                       const struct tpdb_txn *txn,
                       char *errmsg)
{
    int rc = suiteCheckTxn(txn, errmsg);

    (void)arg;
    (void)handle;
    if (rc != TPDB_OK) {
        fprintf(stderr, "tpdb-suite: invalid captured transaction: %s\n",
                errmsg);
    }
    return rc;
}

static void suiteTxnEnd(void *arg, void *handle, int committed)
{
    (void)arg;
    (void)handle;
    (void)committed;
}

static const struct tpdb_vfs_hooks suiteHooks = {
    .version = 1,
    .arg = NULL,
    .db_open = suiteDbOpen,
    .db_close = suiteDbClose,
    .write_check = suiteWriteCheck,
    .commit = suiteCommit,
    .txn_end = suiteTxnEnd,
};

/* Switches a connection to a database file to WAL mode, as the extension's
 * auto-extension does for replicated databases: writable connections whose
 * main file is on the VFS that plays tpdb's part here, "unix" (not on a
 * test VFS of the script's own, which on tpdb's side would not be tpdb's
 * either). */
static int walInit(sqlite3 *db,
                   char **pzErrMsg,
                   const struct sqlite3_api_routines *api)
{
    const char *path = sqlite3_db_filename(db, "main");
    sqlite3_vfs *vfs = NULL;
    (void)pzErrMsg;
    (void)api;
    if (path != NULL && path[0] != '\0' &&
        sqlite3_db_readonly(db, "main") == 0 &&
        sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) ==
            SQLITE_OK &&
        vfs != NULL && strcmp(vfs->zName, "unix") == 0) {
        sqlite3_busy_timeout(db, 10000);
        sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
        sqlite3_busy_timeout(db, 0);
        int err = sqlite3_errcode(db);
        if (err == SQLITE_NOTADB || err == SQLITE_CORRUPT) {
            sqlite3_exec(db, "", NULL, NULL, NULL);
        }
    }
    return SQLITE_OK;
}

static void (*libShutdown)(void);

static void shutdownFn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    libShutdown();
    sqlite3_result_int(ctx, 1);
}

static int shutdownFnInit(sqlite3 *db,
                          char **pzErrMsg,
                          const struct sqlite3_api_routines *api)
{
    (void)pzErrMsg;
    (void)api;
    return sqlite3_create_function(db, "tpdb_suite_shutdown", 0, SQLITE_UTF8,
                                   NULL, shutdownFn, NULL, NULL);
}

/* Loads the real extension library once (it stays loaded) and registers
 * it; again after every sqlite3_shutdown(), which drops auto-extensions. */
static int realInit(void)
{
    static int (*libRegister)(void);
    const char *lib = getenv("TPDB_SUITE_LIB");
    if (libRegister == NULL) {
        void *h = lib != NULL ? dlopen(lib, RTLD_NOW | RTLD_GLOBAL) : NULL;
        if (h == NULL) {
            fprintf(stderr, "tpdb-suite: cannot load TPDB_SUITE_LIB=%s: %s\n",
                    lib ? lib : "(unset)", lib ? dlerror() : "");
            return SQLITE_ERROR;
        }
        libRegister = (int (*)(void))dlsym(h, "tpdb_register");
        libShutdown = (void (*)(void))dlsym(h, "tpdb_shutdown");
        if (libRegister == NULL || libShutdown == NULL) {
            fprintf(stderr, "tpdb-suite: %s lacks tpdb_register\n", lib);
            libRegister = NULL;
            return SQLITE_ERROR;
        }
    }
    int rc = libRegister();
    sqlite3_vfs *vfs = sqlite3_vfs_find("tpdb");
    if (rc == SQLITE_OK && vfs == NULL) {
        rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_vfs_register(vfs, 1);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_auto_extension((void (*)(void))shutdownFnInit);
    }
    return rc;
}

int tpdbSuiteInit(const char *unused)
{
    const char *mode = getenv("TPDB_SUITE_VFS");

    (void)unused;
    if (mode == NULL || strcmp(mode, "unix") == 0) {
        return SQLITE_OK;
    }
    if (strcmp(mode, "unix-wal") == 0) {
        return sqlite3_auto_extension((void (*)(void))walInit);
    }
    if (strcmp(mode, "tpdb") == 0) {
        return realInit();
    }
    if (strcmp(mode, "tpdb-stub") == 0) {
        return tpdbVfsRegister("tpdb", &suiteHooks, 1);
    }
    if (strcmp(mode, "tpdb-nohooks") == 0) {
        return tpdbVfsRegister("tpdb", NULL, 1);
    }
    return SQLITE_MISUSE;
}
