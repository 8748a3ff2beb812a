/*
 * Group commit (tpdbd_group.h). Each database has a queue of waiting
 * proposes; the first waiter that finds no batch running becomes the
 * committer: it takes the write lock (BEGIN IMMEDIATE), then takes what
 * queued (also while it waited for the lock) up to the bounds, runs each
 * request in SAVEPOINT tpdbd_group, COMMITs once, and hands every waiter
 * in the batch its result. Requests stay on their client thread's stack;
 * the queue only links them, under the group mutex. Each request has its
 * own condition variable: a waiter wakes when its request is done, or
 * when it is at the head of the queue and the running batch ended (it
 * commits the next one), not on every batch of the database. A statement that
 * rolls the whole transaction back (ON CONFLICT ROLLBACK, RAISE(ROLLBACK))
 * fails alone: the batch starts over without it.
 */
#include "shell/tpdbd_group.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/tpdb.h"
#include "shell/tpdbd.h"

#define ERR_SIZE 1024

enum { ITEM_QUEUED = 0, ITEM_TAKEN, ITEM_DONE };

/* What a request's savepoint left, before the batch's COMMIT. */
enum { RES_NONE = 0, RES_OK, RES_OWN_ERROR, RES_ALONE };

/* One client's propose, on its thread's stack. */
struct item {
    const char *sql;
    json_t *params;
    int fk; /* foreign keys enforced: only with items that have them too */
    size_t bytes;
    unsigned long long seq;
    int state;
    int res;
    int fatal; /* its statement rolled back the whole transaction */
    int rc;
    struct tpdbd_write w;
    char err[ERR_SIZE];
    pthread_cond_t cond; /* signalled when done, or at the head when the
                            running batch ended */
    struct item *next;
};

struct queue {
    char db[72];
    struct item *head, *tail;
    unsigned long long seq; /* the last one given to an item */
    int busy;               /* a committer runs a batch */
    struct queue *next;
};

struct tpdbd_group {
    pthread_mutex_t mutex;
    struct queue *queues;
};

int tpdbdGroupInit(struct tpdbd_group **out)
{
    struct tpdbd_group *g = calloc(1, sizeof *g);
    if (g == NULL) {
        return -1;
    }
    pthread_mutex_init(&g->mutex, NULL);
    *out = g;
    return 0;
}

void tpdbdGroupClose(struct tpdbd_group *g)
{
    if (g == NULL) {
        return;
    }
    while (g->queues != NULL) {
        struct queue *q = g->queues;
        g->queues = q->next;
        free(q);
    }
    pthread_mutex_destroy(&g->mutex);
    free(g);
}

/* The queue of database db, made if needed; NULL: out of memory. Called
 * with the mutex held. */
static struct queue *queueFor(struct tpdbd_group *g, const char *db)
{
    struct queue *q;
    for (q = g->queues; q != NULL; q = q->next) {
        if (strcmp(q->db, db) == 0) {
            return q;
        }
    }
    if ((q = calloc(1, sizeof *q)) != NULL) {
        snprintf(q->db, sizeof q->db, "%s", db);
        q->next = g->queues;
        g->queues = q;
    }
    return q;
}

/* Roughly what the request adds to the batch's Raft entry. */
static size_t requestBytes(const char *sql, json_t *params)
{
    size_t n = strlen(sql);
    size_t i;
    json_t *v;
    json_array_foreach(params, i, v)
    {
        json_t *b = json_object_get(v, "$blob");
        n += 16 + (json_is_string(v)   ? json_string_length(v)
                   : json_is_string(b) ? json_string_length(b)
                                       : 0);
    }
    return n;
}

static int isReplication(int rc)
{
    return rc == TPDB_ERR_NOTLEADER || rc == TPDB_ERR_UNKNOWN ||
           rc == TPDB_ERR_REPLFAIL;
}

static int execQuiet(sqlite3 *db, const char *sql, char *err, size_t size)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return tpdbdSqlError(db, err, size);
    }
    return SQLITE_OK;
}

/* The batch running on q ended: the request now at the head (if any)
 * commits the next one. Called with the mutex held, before the batch's
 * requests are woken, so that the next batch is not behind them. */
static void handOver(struct queue *q)
{
    q->busy = 0;
    if (q->head != NULL) {
        pthread_cond_signal(&q->head->cond);
    }
}

/* Ends every item queued with seq <= upTo with rc and err: the batch that
 * would have taken them could not begin. */
static void failQueued(struct tpdbd *d,
                       struct queue *q,
                       unsigned long long upTo,
                       int rc,
                       const char *err)
{
    struct tpdbd_group *g = d->group;
    pthread_mutex_lock(&g->mutex);
    while (q->head != NULL && q->head->seq <= upTo) {
        struct item *it = q->head;
        q->head = it->next;
        it->rc = rc;
        snprintf(it->err, sizeof it->err, "%s", err);
        it->state = ITEM_DONE;
        pthread_cond_signal(&it->cond);
        d->group_queued--;
    }
    if (q->head == NULL) {
        q->tail = NULL;
    }
    handOver(q);
    pthread_mutex_unlock(&g->mutex);
}

/* Whether the request at the head of q wants foreign keys (0 if none
 * is queued). Only the committer takes items, so the head stays. */
static int headForeignKeys(struct tpdbd *d, struct queue *q)
{
    pthread_mutex_lock(&d->group->mutex);
    int fk = q->head != NULL && q->head->fk;
    pthread_mutex_unlock(&d->group->mutex);
    return fk;
}

/* Takes the batch from the head of q: at least one item, then as many as
 * the bounds allow, stopping at one whose foreign key setting is not fk.
 * Returns its first item (linked by next). */
static struct item *takeBatch(struct tpdbd *d,
                              struct queue *q,
                              int fk,
                              unsigned *n)
{
    struct tpdbd_group *g = d->group;
    struct item *first, *last = NULL;
    size_t bytes = 0;
    pthread_mutex_lock(&g->mutex);
    first = q->head;
    *n = 0;
    while (q->head != NULL && *n < TPDBD_GROUP_MAX_REQUESTS &&
           q->head->fk == fk &&
           (*n == 0 || bytes + q->head->bytes <= TPDBD_GROUP_MAX_BYTES)) {
        last = q->head;
        q->head = last->next;
        last->state = ITEM_TAKEN;
        bytes += last->bytes;
        (*n)++;
    }
    if (last != NULL) {
        last->next = NULL;
    }
    if (q->head == NULL) {
        q->tail = NULL;
    }
    d->group_queued -= *n;
    pthread_mutex_unlock(&g->mutex);
    return *n > 0 ? first : NULL;
}

/* The batch starts over in a new transaction: every request not failed
 * for good runs again. */
static int restartBatch(sqlite3 *db, struct item *batch, char *err, size_t n)
{
    for (struct item *it = batch; it != NULL; it = it->next) {
        if (!it->fatal) {
            it->res = RES_NONE;
        }
    }
    return execQuiet(db, "BEGIN IMMEDIATE", err, n);
}

/* Runs one request in its savepoint. Returns SQLITE_OK (it->res says how
 * it went), 1 if the batch must start over, or a batch error. */
static int execOne(sqlite3 *db, struct item *it, char *err, size_t size)
{
    int rc = execQuiet(db, "SAVEPOINT tpdbd_group", err, size);
    if (rc != SQLITE_OK) {
        return rc;
    }
    it->err[0] = '\0';
    it->rc = tpdbdSqlExecGrouped(db, it->sql, it->params, &it->w, it->err,
                                 sizeof it->err);
    if (isReplication(it->rc)) {
        snprintf(err, size, "%s", it->err);
        return it->rc;
    }
    if (it->rc != SQLITE_OK && sqlite3_get_autocommit(db)) {
        it->res = RES_OWN_ERROR;
        it->fatal = 1;
        return 1;
    }
    if (it->rc == SQLITE_OK) {
        it->res = RES_OK;
        return execQuiet(db, "RELEASE tpdbd_group", err, size);
    }
    it->res = it->rc == TPDBD_SQL_ALONE ? RES_ALONE : RES_OWN_ERROR;
    rc = execQuiet(db, "ROLLBACK TO tpdbd_group", err, size);
    return rc != SQLITE_OK ? rc
                           : execQuiet(db, "RELEASE tpdbd_group", err, size);
}

/* Runs every request of the batch (transaction begun) and commits.
 * Returns the batch's outcome. */
static int execBatch(sqlite3 *db, struct item *batch, char *err, size_t size)
{
    struct item *it = batch;
    int rc = SQLITE_OK;
    while (rc == SQLITE_OK && it != NULL) {
        if (it->res != RES_NONE) {
            it = it->next;
            continue;
        }
        rc = execOne(db, it, err, size);
        if (rc == 1) {
            rc = restartBatch(db, batch, err, size);
            it = batch;
        } else {
            it = it->next;
        }
    }
    if (rc == SQLITE_OK) {
        rc = execQuiet(db, "COMMIT", err, size);
    }
    if (!sqlite3_get_autocommit(db)) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/* Gives item it the batch's outcome rc (err says why). */
static void settle(struct item *it, int rc, const char *err)
{
    int own = it->res == RES_OWN_ERROR;
    if (it->res == RES_ALONE ||
        (own && (rc == SQLITE_OK || rc == TPDB_ERR_UNKNOWN))) {
        /* Its own error stands: none of its writes were in the batch. */
    } else if (rc == SQLITE_OK) {
        it->rc = SQLITE_OK;
    } else if (isReplication(rc)) {
        it->rc = rc;
        snprintf(it->err, sizeof it->err, "%s", err);
    } else {
        /* Nothing was written, for a reason one request may have caused
         * (a deferred foreign key at COMMIT): each runs on its own. */
        it->res = RES_ALONE;
    }
}

/* Ends the batch running on q: hands the next one over, every item of
 * the batch its outcome, and updates the counters. */
static void finishBatch(struct tpdbd *d,
                        struct queue *q,
                        struct item *batch,
                        unsigned n,
                        int rc,
                        const char *err)
{
    struct tpdbd_group *g = d->group;
    unsigned long long written = 0;
    int rerun = 0;
    pthread_mutex_lock(&g->mutex);
    handOver(q);
    for (struct item *it = batch, *next; it != NULL; it = next) {
        next = it->next;
        int alone = it->res == RES_ALONE;
        settle(it, rc, err);
        rerun |= !alone && it->res == RES_ALONE;
        written += rc == SQLITE_OK && it->res == RES_OK;
        it->state = ITEM_DONE;
        pthread_cond_signal(&it->cond);
    }
    if (rerun) {
        d->group_reruns++;
    }
    if (written > 0) {
        d->group_commits++;
        d->group_writes += written;
        if (n > d->group_largest) {
            d->group_largest = n;
        }
    }
    pthread_mutex_unlock(&g->mutex);
}

/* The committer's work: one batch of q, whose items up to seq upTo were
 * queued before it began. Clears q->busy when done. */
static void runBatch(struct tpdbd *d, struct queue *q, unsigned long long upTo)
{
    char err[ERR_SIZE] = "";
    unsigned n = 0;
    int fk = headForeignKeys(d, q);
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, q->db, err, sizeof err);
    if (c != NULL) {
        sqlite3_db_config(c->db, SQLITE_DBCONFIG_ENABLE_FKEY, fk, NULL);
    }
    int rc = c != NULL ? execQuiet(c->db, "BEGIN IMMEDIATE", err, sizeof err)
                       : SQLITE_CANTOPEN;
    if (rc != SQLITE_OK) {
        failQueued(d, q, upTo, rc, err);
        tpdbdPoolPut(d->pool, c);
        return;
    }
    struct item *batch = takeBatch(d, q, fk, &n);
    rc = batch != NULL ? execBatch(c->db, batch, err, sizeof err) : SQLITE_OK;
    tpdbdPoolPut(d->pool, c);
    if (batch != NULL) {
        finishBatch(d, q, batch, n, rc, err);
    } else {
        pthread_mutex_lock(&d->group->mutex);
        handOver(q);
        pthread_mutex_unlock(&d->group->mutex);
    }
}

static int runAlone(struct tpdbd *d,
                    const char *db,
                    const char *sql,
                    json_t *params,
                    int fk,
                    struct tpdbd_write *out,
                    char *err,
                    size_t size)
{
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, db, err, size);
    if (c == NULL) {
        return SQLITE_CANTOPEN;
    }
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_ENABLE_FKEY, fk, NULL);
    int rc = tpdbdSqlPropose(c->db, sql, params, out, err, size);
    tpdbdPoolPut(d->pool, c);
    return rc;
}

/* Queues it on q and waits until it is done, running batches whenever
 * none is running (after one, handOver wakes the request then at the
 * head to run the next). Every signal of it->cond is sent with the mutex
 * held, so that it may be destroyed once this returns. Called with the
 * mutex held. */
static void waitDone(struct tpdbd *d, struct queue *q, struct item *it)
{
    struct tpdbd_group *g = d->group;
    it->seq = ++q->seq;
    if (q->tail != NULL) {
        q->tail->next = it;
    } else {
        q->head = it;
    }
    q->tail = it;
    d->group_queued++;
    while (it->state != ITEM_DONE) {
        if (q->busy) {
            pthread_cond_wait(&it->cond, &g->mutex);
            continue;
        }
        q->busy = 1;
        unsigned long long upTo = q->seq;
        pthread_mutex_unlock(&g->mutex);
        runBatch(d, q, upTo);
        pthread_mutex_lock(&g->mutex);
    }
}

int tpdbdGroupPropose(struct tpdbd *d,
                      const char *db,
                      const char *sql,
                      json_t *params,
                      int foreign_keys,
                      struct tpdbd_write *out,
                      char *err,
                      size_t size)
{
    struct tpdbd_group *g = d->group;
    struct item it;
    memset(&it, 0, sizeof it);
    it.sql = sql;
    it.params = params;
    it.fk = foreign_keys != 0;
    it.w.blobs = out->blobs;
    it.bytes = requestBytes(sql, params);
    pthread_mutex_lock(&g->mutex);
    struct queue *q = queueFor(g, db);
    if (q == NULL) {
        pthread_mutex_unlock(&g->mutex);
        snprintf(err, size, "out of memory");
        return SQLITE_NOMEM;
    }
    pthread_cond_init(&it.cond, NULL);
    waitDone(d, q, &it);
    pthread_mutex_unlock(&g->mutex);
    pthread_cond_destroy(&it.cond);
    if (it.res == RES_ALONE) {
        tpdbdSqlWriteClear(&it.w);
        return runAlone(d, db, sql, params, it.fk, out, err, size);
    }
    tpdbdSqlWriteClear(out);
    *out = it.w;
    snprintf(err, size, "%s", it.err);
    return it.rc;
}
