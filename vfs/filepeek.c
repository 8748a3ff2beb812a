/*
 * Reads database files through SQLite's "unix" VFS so that the POSIX locks
 * of the process's connections survive (see filepeek.h).
 */
#include "vfs/filepeek.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "base/base.h"

struct tpdb_peek {
    sqlite3_file *file; /* szOsFile bytes of the "unix" VFS */
    int64_t size;       /* file size when opened */
};

int tpdbPeekOpen(const char *path, struct tpdb_peek **out, char *errmsg)
{
    sqlite3_vfs *root = sqlite3_vfs_find("unix");
    struct tpdb_peek *p;
    struct stat st;
    int outFlags = 0;
    int rc;

    *out = NULL;
    if (stat(path, &st) != 0) {
        tpdbErrf(errmsg, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? TPDB_NOTFOUND : TPDB_IOERR;
    }
    if (root == NULL) {
        tpdbErrf(errmsg, "%s: SQLite has no \"unix\" VFS", path);
        return TPDB_IOERR;
    }
    p = tpdb_calloc(1, sizeof *p + (size_t)root->szOsFile);
    if (p == NULL) {
        tpdbErrf(errmsg, "%s: out of memory", path);
        return TPDB_NOMEM;
    }
    p->file = (sqlite3_file *)(p + 1);
    /* As a main database file: the one kind whose descriptors unix shares
     * per file and keeps open while the process holds locks on it. */
    rc = root->xOpen(root, path, p->file,
                     SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READONLY, &outFlags);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "open %s: %s", path, sqlite3_errstr(rc));
        tpdb_free(p);
        return TPDB_IOERR;
    }
    sqlite3_int64 size = 0;
    rc = p->file->pMethods->xFileSize(p->file, &size);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "size of %s: %s", path, sqlite3_errstr(rc));
        tpdbPeekClose(p);
        return TPDB_IOERR;
    }
    p->size = size;
    *out = p;
    return TPDB_OK;
}

int tpdbPeekSize(struct tpdb_peek *p, int64_t *size, char *errmsg)
{
    sqlite3_int64 s = 0;
    int rc = p->file->pMethods->xFileSize(p->file, &s);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "file size: %s", sqlite3_errstr(rc));
        return TPDB_IOERR;
    }
    p->size = s;
    *size = s;
    return TPDB_OK;
}

int tpdbPeekRead(struct tpdb_peek *p,
                 void *buf,
                 size_t n,
                 int64_t off,
                 size_t *got,
                 char *errmsg)
{
    size_t have = 0;
    if (off < p->size) {
        have = (uint64_t)(p->size - off) < n ? (size_t)(p->size - off) : n;
    }
    if (got != NULL) {
        *got = have;
    }
    if (n == 0 || n > 0x7fffffff) {
        return n == 0 ? TPDB_OK : TPDB_INVALID;
    }
    /* unix zero-fills a short read and says so; the size decides. */
    int rc = p->file->pMethods->xRead(p->file, buf, (int)n, off);
    if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) {
        tpdbErrf(errmsg, "read %zu bytes at %lld: %s", n, (long long)off,
                 sqlite3_errstr(rc));
        return TPDB_IOERR;
    }
    if (rc == SQLITE_IOERR_SHORT_READ && got != NULL && have == n) {
        /* The file shrank since: count what is really there. */
        *got = 0;
    }
    return TPDB_OK;
}

int tpdbPeekSync(struct tpdb_peek *p, char *errmsg)
{
    int rc = p->file->pMethods->xSync(p->file, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK) {
        tpdbErrf(errmsg, "fsync: %s", sqlite3_errstr(rc));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

void tpdbPeekClose(struct tpdb_peek *p)
{
    if (p != NULL) {
        p->file->pMethods->xClose(p->file);
        tpdb_free(p);
    }
}

size_t tpdbPeekHead(const char *path, void *buf, size_t n)
{
    struct tpdb_peek *p;
    size_t got = 0;
    if (tpdbPeekOpen(path, &p, NULL) != TPDB_OK) {
        return 0;
    }
    if (tpdbPeekRead(p, buf, n, 0, &got, NULL) != TPDB_OK) {
        got = 0;
    }
    tpdbPeekClose(p);
    return got;
}
