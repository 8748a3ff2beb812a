/*
 * Makes the tpdb VFS SQLite's default VFS inside SQLite's own `testfixture`.
 *
 * tests/sqlite-suite/run.sh compiles this file and the project's vfs/
 * sources into testfixture, whose SQLite is built with
 * -DSQLITE_EXTRA_INIT=tpdbSuiteInit, so sqlite3_initialize() calls
 * tpdbSuiteInit() before any test runs (and again after every
 * sqlite3_shutdown()). The environment variable TPDB_SUITE_VFS picks the run:
 *   unix (or unset)  SQLite's default is left alone: the baseline.
 *   tpdb             tpdb is the default, with hooks that accept every
 *                    commit locally after checking the captured transaction,
 *                    so capture and the PRAGMA refusals are exercised.
 *   tpdb-nohooks     tpdb is the default with hooks == NULL (pass-through).
 */
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

int tpdbSuiteInit(const char *unused)
{
    const char *mode = getenv("TPDB_SUITE_VFS");

    (void)unused;
    if (mode == NULL || strcmp(mode, "unix") == 0) {
        return SQLITE_OK;
    }
    if (strcmp(mode, "tpdb") == 0) {
        return tpdbVfsRegister("tpdb", &suiteHooks, 1);
    }
    if (strcmp(mode, "tpdb-nohooks") == 0) {
        return tpdbVfsRegister("tpdb", NULL, 1);
    }
    return SQLITE_MISUSE;
}
