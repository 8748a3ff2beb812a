/*
 * tpdbd's replicated metadata database (tpdbd_meta.h).
 */
#include "shell/tpdbd_meta.h"

#include <stdio.h>
#include <string.h>

#include "ext/tpdb.h"
#include "shell/tpdbd_log.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS nodes(raft_id INTEGER PRIMARY KEY, "
    "node_id TEXT NOT NULL, raft_addr TEXT NOT NULL, "
    "client_addr TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS barrier(id INTEGER PRIMARY KEY, "
    "n INTEGER NOT NULL);";

static int execError(sqlite3 *db, const char *what, char *err, size_t size)
{
    int rc = sqlite3_extended_errcode(db);
    const char *why = tpdb_errmsg();
    snprintf(err, size, "%s: %s", what,
             (rc & 0xff) == SQLITE_IOERR && why[0] ? why : sqlite3_errmsg(db));
    return rc != SQLITE_OK ? rc : SQLITE_ERROR;
}

/* Whether nodes already holds exactly this row. */
static int rowCurrent(sqlite3 *db, const struct tpdbd_node_row *row)
{
    sqlite3_stmt *st = NULL;
    int same = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT node_id = ?2 AND raft_addr = ?3 AND "
                           "client_addr = ?4 FROM nodes WHERE raft_id = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->raft_id);
    sqlite3_bind_text(st, 2, row->node_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, row->raft_addr, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, row->client_addr, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        same = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    return same;
}

static int writeRow(sqlite3 *db,
                    const struct tpdbd_node_row *row,
                    char *err,
                    size_t size)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT OR REPLACE INTO nodes VALUES(?, ?, "
                                "?, ?)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return execError(db, "prepare nodes row", err, size);
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)row->raft_id);
    sqlite3_bind_text(st, 2, row->node_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, row->raft_addr, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, row->client_addr, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE
             ? SQLITE_OK
             : execError(db, "write nodes row", err, size);
    sqlite3_finalize(st);
    return rc;
}

int tpdbdMetaRecord(struct tpdbd *d,
                    const struct tpdbd_node_row *row,
                    char *err,
                    size_t size)
{
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, TPDBD_META_DB, err, size);
    int rc = SQLITE_OK;
    if (c == NULL) {
        return SQLITE_CANTOPEN;
    }
    if (!rowCurrent(c->db, row)) {
        if (sqlite3_exec(c->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
            rc = execError(c->db, "create tables", err, size);
        } else {
            rc = writeRow(c->db, row, err, size);
        }
    }
    tpdbdPoolPut(d->pool, c);
    return rc;
}

int tpdbdMetaRegister(struct tpdbd *d, char *err, size_t size)
{
    struct tpdbd_node_row row = {d->cfg.raft_id, d->cfg.node_id,
                                 d->cfg.raft_addr, d->client_addr};
    return tpdbdMetaRecord(d, &row, err, size);
}

int tpdbdMetaBarrier(struct tpdbd *d, char *err, size_t size)
{
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, TPDBD_META_DB, err, size);
    int rc = SQLITE_OK;
    if (c == NULL) {
        return SQLITE_CANTOPEN;
    }
    if (sqlite3_exec(c->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(c->db,
                     "INSERT INTO barrier VALUES(1, 1) ON CONFLICT(id) DO "
                     "UPDATE SET n = n + 1",
                     NULL, NULL, NULL) != SQLITE_OK) {
        rc = execError(c->db, "read barrier", err, size);
    }
    tpdbdPoolPut(d->pool, c);
    return rc;
}

int tpdbdMetaLookup(struct tpdbd *d,
                    uint64_t raft_id,
                    char *node_id,
                    char *client)
{
    char err[256];
    sqlite3_stmt *st = NULL;
    int rc = -1;
    struct tpdbd_conn *c =
        tpdbdPoolGet(d->pool, TPDBD_META_DB, err, sizeof err);
    if (c == NULL) {
        return -1;
    }
    if (sqlite3_prepare_v2(c->db,
                           "SELECT node_id, client_addr FROM nodes WHERE "
                           "raft_id = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)raft_id);
        if (sqlite3_step(st) == SQLITE_ROW) {
            snprintf(node_id, TPDBD_ID_MAX + 1, "%s",
                     (const char *)sqlite3_column_text(st, 0));
            snprintf(client, TPDBD_ADDR_MAX, "%s",
                     (const char *)sqlite3_column_text(st, 1));
            rc = 0;
        }
    }
    sqlite3_finalize(st);
    tpdbdPoolPut(d->pool, c);
    return rc;
}
