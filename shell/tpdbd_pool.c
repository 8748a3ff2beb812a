/*
 * Pooled SQLite connections (tpdbd_pool.h): a mutex-protected list of idle
 * connections, searched by database name. Every connection gets a busy
 * timeout (writers on the leader queue for the write lock) and room for
 * one attached database, the temporary one VACUUM attaches: clients'
 * ATTACH is refused by tpdbd_sql.c's guard, since an attached file would
 * bypass replication. A connection given back has foreign keys off again
 * (a request may turn them on for itself).
 */
#include "shell/tpdbd_pool.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/tpdb.h"

#define BUSY_TIMEOUT_MS 10000

struct tpdbd_pool {
    pthread_mutex_t mutex;
    char dir[PATH_MAX * 3]; /* percent-encoded for the URI */
    char *query;
    unsigned max_idle, nidle;
    struct tpdbd_conn *idle;
};

/* Percent-encodes the characters a URI path cannot hold literally. */
static void uriEscape(const char *in, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *in != '\0' && o + 4 < size; in++) {
        unsigned char c = (unsigned char)*in;
        if (c <= ' ' || c >= 0x7f || strchr("?#%&=", c) != NULL) {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

int tpdbdPoolInit(struct tpdbd_pool **out,
                  const char *dir,
                  const char *query,
                  unsigned max_idle)
{
    struct tpdbd_pool *p = calloc(1, sizeof *p);
    if (p == NULL || (p->query = strdup(query)) == NULL) {
        free(p);
        return -1;
    }
    pthread_mutex_init(&p->mutex, NULL);
    uriEscape(dir, p->dir, sizeof p->dir);
    p->max_idle = max_idle;
    *out = p;
    return 0;
}

void tpdbdPoolClose(struct tpdbd_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    while (pool->idle != NULL) {
        struct tpdbd_conn *c = pool->idle;
        pool->idle = c->next;
        sqlite3_close(c->db);
        free(c);
    }
    pthread_mutex_destroy(&pool->mutex);
    free(pool->query);
    free(pool);
}

int tpdbdPoolOpen(struct tpdbd_pool *pool,
                  const char *name,
                  sqlite3 **db,
                  char *err,
                  size_t size)
{
    char uri[PATH_MAX * 4];
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    snprintf(uri, sizeof uri, "file:%s/%s?%s", pool->dir, name, pool->query);
    int rc = sqlite3_open_v2(uri, db, flags, "tpdb");
    if (rc != SQLITE_OK) {
        /* The VFS cannot set SQLite's message; tpdb keeps the reason. */
        const char *why = tpdb_errmsg();
        snprintf(err, size, "open %s: %s", name,
                 why[0] != '\0' ? why
                 : *db != NULL  ? sqlite3_errmsg(*db)
                                : "out of memory");
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
    sqlite3_limit(*db, SQLITE_LIMIT_ATTACHED, 1);
    return SQLITE_OK;
}

static struct tpdbd_conn *takeIdle(struct tpdbd_pool *pool, const char *name)
{
    struct tpdbd_conn **pp, *c = NULL;
    pthread_mutex_lock(&pool->mutex);
    for (pp = &pool->idle; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            c = *pp;
            *pp = c->next;
            pool->nidle--;
            break;
        }
    }
    pthread_mutex_unlock(&pool->mutex);
    return c;
}

struct tpdbd_conn *tpdbdPoolGet(struct tpdbd_pool *pool,
                                const char *name,
                                char *err,
                                size_t size)
{
    struct tpdbd_conn *c = takeIdle(pool, name);
    if (c != NULL) {
        return c;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, size, "out of memory");
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    if (tpdbdPoolOpen(pool, name, &c->db, err, size) != SQLITE_OK) {
        free(c);
        return NULL;
    }
    return c;
}

void tpdbdPoolPut(struct tpdbd_pool *pool, struct tpdbd_conn *conn)
{
    if (conn == NULL) {
        return;
    }
    if (!sqlite3_get_autocommit(conn->db)) {
        sqlite3_exec(conn->db, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_db_config(conn->db, SQLITE_DBCONFIG_ENABLE_FKEY, 0, NULL);
    pthread_mutex_lock(&pool->mutex);
    if (pool->nidle < pool->max_idle) {
        conn->next = pool->idle;
        pool->idle = conn;
        pool->nidle++;
        conn = NULL;
    }
    pthread_mutex_unlock(&pool->mutex);
    if (conn != NULL) {
        sqlite3_close(conn->db);
        free(conn);
    }
}
