/*
 * The tpdb shell's local back end (tpdb_shell_int.h): one database opened
 * through the tpdb VFS (`tpdb FILE` or `tpdb 'file:...?node=...'`), the
 * library's SQL functions for the cluster commands, and sqlite3_backup()
 * for .backup. Ctrl-C reaches a running statement by sqlite3_interrupt().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/tpdb.h"
#include "shell/tpdb_shell_int.h"

struct local {
    sqlite3 *db;
};

/* The database the SIGINT handler interrupts (NULL if none). */
sqlite3 *shellLocalDb;

/* "file:PATH?vfs=tpdb" for a path, or the URI with vfs=tpdb added. */
static char *buildUri(const char *target)
{
    if (strncmp(target, "file:", 5) == 0) {
        if (strstr(target, "vfs=") != NULL) {
            return sqlite3_mprintf("%s", target);
        }
        return sqlite3_mprintf("%s%svfs=tpdb", target,
                               strchr(target, '?') != NULL ? "&" : "?");
    }
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "file:");
    for (const char *p = target; *p; p++) {
        if (*p == '?' || *p == '#' || *p == '%') {
            sqlite3_str_appendf(s, "%%%02X", (unsigned char)*p);
        } else {
            sqlite3_str_appendchar(s, 1, *p);
        }
    }
    sqlite3_str_appendall(s, "?vfs=tpdb");
    return sqlite3_str_finish(s);
}

struct local *localOpen(const char *target, char *err, size_t size)
{
    struct local *l = calloc(1, sizeof *l);
    char *uri = buildUri(target);
    int rc = l != NULL && uri != NULL ? tpdb_register() : SQLITE_NOMEM;
    if (rc == SQLITE_OK) {
        rc = sqlite3_open_v2(
            uri, &l->db,
            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, size, "cannot open %s: %s", uri ? uri : target,
                 l != NULL && l->db != NULL ? sqlite3_errmsg(l->db)
                                            : sqlite3_errstr(rc));
        if (l != NULL) {
            sqlite3_close(l->db);
        }
        free(l);
        sqlite3_free(uri);
        return NULL;
    }
    sqlite3_free(uri);
    shellLocalDb = l->db;
    return l;
}

void localClose(struct local *l)
{
    if (l != NULL) {
        shellLocalDb = NULL;
        sqlite3_close(l->db);
        free(l);
        tpdb_shutdown();
    }
}

static int columnValue(struct tpdb_value *v, sqlite3_stmt *st, int i)
{
    int type = sqlite3_column_type(st, i);
    if (type == SQLITE_NULL) {
        return tpdbValueSet(v, TPDB_VAL_NULL, NULL, 0, 0);
    }
    if (type == SQLITE_BLOB) {
        const void *b = sqlite3_column_blob(st, i);
        return tpdbValueSet(v, TPDB_VAL_BLOB, b,
                            (size_t)sqlite3_column_bytes(st, i), 0);
    }
    const unsigned char *t = sqlite3_column_text(st, i);
    int vt = type == SQLITE_INTEGER ? TPDB_VAL_INT
             : type == SQLITE_FLOAT ? TPDB_VAL_REAL
                                    : TPDB_VAL_TEXT;
    return tpdbValueSet(v, vt, t, (size_t)sqlite3_column_bytes(st, i),
                        sqlite3_column_double(st, i));
}

static void failure(struct local *l, int rc, char *err, size_t size)
{
    int ext = sqlite3_extended_errcode(l->db);
    const char *why = tpdb_errmsg();
    if (ext == TPDB_ERR_UNKNOWN) {
        snprintf(err, size,
                 "outcome unknown: %s\nThe write may or may not have "
                 "committed. Check (SELECT) before retrying.",
                 why);
    } else if (ext == TPDB_ERR_NOTLEADER || ext == TPDB_ERR_REPLFAIL) {
        snprintf(err, size, "%s", why);
    } else if (rc == SQLITE_INTERRUPT) {
        snprintf(err, size, "interrupted");
    } else {
        snprintf(err, size, "%s", sqlite3_errmsg(l->db));
    }
}

int localExec(struct local *l,
              const char *sql,
              struct tpdb_result **res,
              char *err,
              size_t size)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
    *res = NULL;
    if (rc != SQLITE_OK || st == NULL) {
        if (rc != SQLITE_OK) {
            failure(l, rc, err, size);
        }
        return rc == SQLITE_OK ? 0 : -1;
    }
    int n = sqlite3_column_count(st);
    if (n > 0) {
        *res = tpdbResultNew(n);
        for (int i = 0; *res != NULL && i < n; i++) {
            tpdbResultSetName(*res, i, sqlite3_column_name(st, i));
        }
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *res != NULL) {
        struct tpdb_value *v = tpdbResultAddRow(*res);
        for (int i = 0; v != NULL && i < n; i++) {
            columnValue(&v[i], st, i);
        }
    }
    if (rc != SQLITE_DONE) {
        failure(l, rc, err, size);
        tpdbResultFree(*res);
        *res = NULL;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

json_t *localStatus(struct local *l)
{
    char *text = NULL;
    if (tpdb_status(l->db, &text) != SQLITE_OK) {
        return NULL;
    }
    json_t *st = json_loads(text, 0, NULL);
    sqlite3_free(text);
    return st;
}

int localBackup(struct local *l, const char *path, char *err, size_t size)
{
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(path, &dst,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", l->db, "main");
        if (b != NULL) {
            rc = sqlite3_backup_step(b, -1);
            sqlite3_backup_finish(b);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        } else {
            rc = sqlite3_errcode(dst);
        }
    }
    if (rc != SQLITE_OK) {
        snprintf(err, size, "backup to %s: %s", path,
                 dst != NULL ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
    }
    sqlite3_close(dst);
    return rc == SQLITE_OK ? 0 : -1;
}

int localInTxn(const struct local *l)
{
    return !sqlite3_get_autocommit(l->db);
}
