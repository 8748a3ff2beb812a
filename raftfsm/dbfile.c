/*
 * Database file reads and fsyncs through SQLite's "unix" VFS (see
 * dbfile.h).
 */
#include "raftfsm/dbfile.h"

#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

#include "vfs/base.h"

/* Opens path read-only through the unix VFS; *file is tpdb_malloc'ed and
 * open on SQLITE_OK (close with fileClose). */
static int fileOpen(const char *path, sqlite3_vfs **vfs, sqlite3_file **file)
{
    *vfs = sqlite3_vfs_find("unix");
    *file = NULL;
    if (*vfs == NULL) {
        return SQLITE_ERROR;
    }
    /* xOpen may look for URI parameters after the name. */
    sqlite3_filename name = sqlite3_create_filename(path, "", "", 0, NULL);
    sqlite3_file *f = tpdb_calloc(1, (size_t)(*vfs)->szOsFile);
    int rc = name != NULL && f != NULL ? SQLITE_OK : SQLITE_NOMEM;
    int out = 0;
    if (rc == SQLITE_OK) {
        rc = (*vfs)->xOpen(*vfs, name, f,
                           SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_DB, &out);
    }
    if (rc != SQLITE_OK) {
        if (f != NULL && f->pMethods != NULL) {
            f->pMethods->xClose(f);
        }
        tpdb_free(f);
        f = NULL;
    }
    sqlite3_free_filename(name);
    *file = f;
    return rc;
}

static void fileClose(sqlite3_file *f)
{
    f->pMethods->xClose(f);
    tpdb_free(f);
}

long tpdbDbFileHead(const char *path, void *buf, size_t n)
{
    struct stat st;
    sqlite3_vfs *vfs;
    sqlite3_file *f;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
        fileOpen(path, &vfs, &f) != SQLITE_OK) {
        return -1;
    }
    sqlite3_int64 size = 0;
    long got = -1;
    if (f->pMethods->xFileSize(f, &size) == SQLITE_OK) {
        size_t want = size < (sqlite3_int64)n ? (size_t)size : n;
        if (want == 0 ||
            f->pMethods->xRead(f, buf, (int)want, 0) == SQLITE_OK) {
            got = (long)want;
        }
    }
    fileClose(f);
    return got;
}

int tpdbDbFileSync(const char *path, char *errmsg)
{
    struct stat st;
    sqlite3_vfs *vfs;
    sqlite3_file *f;
    if (stat(path, &st) != 0) {
        return TPDB_OK;
    }
    if (fileOpen(path, &vfs, &f) != SQLITE_OK) {
        tpdbErrf(errmsg, "open %s for fsync", path);
        return TPDB_IOERR;
    }
    int rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL) == SQLITE_OK
                 ? TPDB_OK
                 : TPDB_IOERR;
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "fsync %s failed", path);
    }
    fileClose(f);
    return rc;
}
