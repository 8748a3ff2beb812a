/*
 * Helpers shared by the migration between TrashPandaDB page files and
 * SQLite (tpdb_migrate.h): progress lines, temporary paths, fsync and
 * rename, SQLite error mapping and row counts on both sides. The import
 * lives in tpdb_import.c, the export in tpdb_export.c; all three share
 * tpdb_migrate_int.h.
 */
#include "shell/tpdb_migrate_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_INTERVAL_MS 500

/* ---- Progress ------------------------------------------------------------ */

void migrateProgressInit(struct migrateProgress *p,
                         const struct tpdb_migrate_opts *opts,
                         const char *what)
{
    int mode = opts != NULL ? opts->progress : TPDB_PROGRESS_AUTO;
    memset(p, 0, sizeof *p);
    p->out = opts != NULL && opts->out != NULL ? opts->out : stderr;
    p->tty = isatty(fileno(p->out));
    p->on =
        mode == TPDB_PROGRESS_ALWAYS || (mode == TPDB_PROGRESS_AUTO && p->tty);
    p->interval_ms = opts != NULL && opts->interval_ms > 0
                         ? opts->interval_ms
                         : DEFAULT_INTERVAL_MS;
    p->what = what;
    p->last_ms = tpdbNowMs();
}

static void progressPrint(struct migrateProgress *p, int final)
{
    double pct =
        p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 100.0;
    fprintf(p->out, "%s%s: %llu/%llu rows (%.0f%%)%s", p->tty ? "\r" : "",
            p->what, (unsigned long long)p->done, (unsigned long long)p->total,
            pct, p->tty && !final ? "" : "\n");
    fflush(p->out);
}

/* Counts one row done; prints at most one line per interval. */
void migrateProgressTick(struct migrateProgress *p)
{
    p->done++;
    if (!p->on || (p->done & 255) != 0) {
        return;
    }
    uint64_t now = tpdbNowMs();
    if (now - p->last_ms >= p->interval_ms) {
        p->last_ms = now;
        progressPrint(p, 0);
    }
}

void migrateProgressEnd(struct migrateProgress *p)
{
    if (p->on) {
        progressPrint(p, 1);
    }
}

/* ---- Files --------------------------------------------------------------- */

int migratePathExists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* path + suffix, tpdb_malloc'ed. */
char *migratePathWith(const char *path, const char *suffix)
{
    size_t a = strlen(path), b = strlen(suffix);
    char *s = tpdb_malloc(a + b + 1);
    if (s != NULL) {
        memcpy(s, path, a);
        memcpy(s + a, suffix, b + 1);
    }
    return s;
}

char *migrateTempPath(const char *dest, const char *tag)
{
    char suffix[64];
    snprintf(suffix, sizeof suffix, ".%s-%ld.tmp", tag, (long)getpid());
    return migratePathWith(dest, suffix);
}

int migrateFsyncPath(const char *path, int dir, char *errmsg)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDWR);
    if (fd < 0 || fsync(fd) != 0) {
        tpdbErrf(errmsg, "fsync %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return TPDB_IOERR;
    }
    close(fd);
    return TPDB_OK;
}

/* fsyncs the directory holding `path`. Allocates nothing, so that it
 * cannot fail for lack of memory after the rename. */
int migrateFsyncParent(const char *path, char *errmsg)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : (size_t)(slash - path);
    if (n >= sizeof dir) {
        tpdbErrf(errmsg, "path too long: %s", path);
        return TPDB_INVALID;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    return migrateFsyncPath(slash == NULL ? "."
                            : n == 0      ? "/"
                                          : dir,
                            1, errmsg);
}

int migrateRename(const char *from, const char *to, char *errmsg)
{
    if (rename(from, to) != 0) {
        tpdbErrf(errmsg, "rename %s to %s: %s", from, to, strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

int migrateSqliteErr(sqlite3 *db, char *errmsg, const char *what)
{
    int code = sqlite3_errcode(db);
    tpdbErrf(errmsg, "%s: %s", what, sqlite3_errmsg(db));
    return code == SQLITE_NOMEM                              ? TPDB_NOMEM
           : code == SQLITE_IOERR || code == SQLITE_FULL     ? TPDB_IOERR
           : code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? TPDB_CORRUPT
                                                             : TPDB_INVALID;
}

/* Runs exactly one SQL statement (text from a file may not smuggle in a
 * second one). */
int migrateExecOne(sqlite3 *db, const char *sql, char *errmsg)
{
    sqlite3_stmt *st;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) {
        return migrateSqliteErr(db, errmsg, sql);
    }
    while (tail != NULL && (*tail == ' ' || *tail == '\n' || *tail == ';')) {
        tail++;
    }
    if (tail != NULL && *tail != '\0') {
        sqlite3_finalize(st);
        tpdbErrf(errmsg, "%s: more than one statement", sql);
        return TPDB_INVALID;
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return migrateSqliteErr(db, errmsg, sql);
    }
    return TPDB_OK;
}

int64_t migrateSqliteCount(sqlite3 *db, const char *table, char *errmsg)
{
    char *sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", table);
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sql == NULL) {
        tpdbErrf(errmsg, "out of memory");
        return -1;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            n = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    if (n < 0) {
        migrateSqliteErr(db, errmsg, sql);
    }
    sqlite3_free(sql);
    return n;
}

/* Rows of a TPDB table, by walking its tree without decoding rows. */
int migrateTpdbCount(struct tpdb_file *f, const char *table, uint64_t *n)
{
    struct tpdb_cursor *c;
    int rc = tpdb_cursor_open_table(f, table, &c);
    *n = 0;
    if (rc != TPDB_OK) {
        return rc;
    }
    rc = tpdb_cursor_first(c);
    while (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        (*n)++;
        rc = tpdb_cursor_next(c);
    }
    tpdb_cursor_close(c);
    return rc;
}
