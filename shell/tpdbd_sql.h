/*
 * SQL for tpdbd's client API: JSON params bound as TrashPandaDB binds
 * them (plus BLOBs as {"$blob":"<base64>"}), statements run, result rows
 * turned into JSON. Errors are SQLite's extended result codes with the
 * message in err; no function here knows about Raft except that a failed
 * write carries tpdb_errmsg()'s reason.
 */
#ifndef TPDBD_SQL_H
#define TPDBD_SQL_H

#include <stddef.h>

#include <jansson.h>
#include <sqlite3.h>

/* How BLOB results are written: TrashPandaDB's lowercase hex string, or
 * {"$blob":"<base64>"} (request field "blobs":"base64"). */
enum { TPDBD_BLOBS_HEX = 0, TPDBD_BLOBS_BASE64 };

/* A propose's options (in) and outcome (out). Zero it before first use;
 * release with tpdbdSqlWriteClear. */
struct tpdbd_write {
    int blobs;               /* in: TPDBD_BLOBS_* for returned rows */
    long long rows_affected; /* sqlite3_changes() after the last statement */
    long long last_id;       /* sqlite3_last_insert_rowid() */
    /* {"cols":[...],"rows":[[...]]} of the last statement with RETURNING
     * (the rows of query's reply), NULL if none returned rows; "rows_error"
     * instead of "rows" when a value cannot be written in JSON (text that
     * is not UTF-8), since the statement's writes stand. Owned by the
     * struct. */
    json_t *returned;
};

/* Frees w->returned. */
void tpdbdSqlWriteClear(struct tpdbd_write *w);

/* The propose reply for w: {"ok":true,"rows_affected":N,"last_id":N},
 * plus "cols" and "rows" when a RETURNING statement returned rows.
 * Malloc'ed (caller frees), NULL if out of memory. */
char *tpdbdSqlWriteReply(const struct tpdbd_write *w);

/* Every function here that runs a client's SQL refuses, before it runs
 * (SQLITE_AUTH, err saying why and what to do instead): ATTACH and
 * DETACH (an attached file would bypass replication; VACUUM's own
 * temporary ATTACH is allowed while a VACUUM runs), VACUUM INTO (it
 * writes a file on this node), and setting a PRAGMA that changes the
 * state of the connection rather than of the database (foreign_keys,
 * synchronous, journal_mode, cache_size, ...: the connection is pooled,
 * and later requests of other clients would inherit it). Reading any
 * PRAGMA and setting database-state ones (user_version, application_id,
 * auto_vacuum, page_size) and per-transaction ones (defer_foreign_keys)
 * is allowed. */

/* Runs the one read-only statement sql with params (a JSON array or NULL)
 * and sets *result to {"ok":true,"cols":[...],"rows":[[...],...]} (caller
 * json_decrefs). A statement that could write, or more than one
 * statement, is refused before it runs (SQLITE_READONLY, SQLITE_MISUSE);
 * in_txn: inside an interactive transaction, whose BEGIN, COMMIT and
 * ROLLBACK are refused too. Returns SQLITE_OK or an extended code with
 * err (size bytes) set. */
int tpdbdSqlQuery(sqlite3 *db,
                  const char *sql,
                  json_t *params,
                  int blobs,
                  int in_txn,
                  json_t **result,
                  char *err,
                  size_t size);

/* Runs sql (one or more statements; params only with one) for propose;
 * rows a SELECT returns are dropped, those of a RETURNING statement kept
 * in out->returned (the last such statement's). Leaves no transaction open: if
 * the SQL does, it is rolled back and SQLITE_MISUSE returned. Returns
 * SQLITE_OK with *out filled, or an extended code (TPDB_ERR_* for
 * replication outcomes) with err set. */
int tpdbdSqlPropose(sqlite3 *db,
                    const char *sql,
                    json_t *params,
                    struct tpdbd_write *out,
                    char *err,
                    size_t size);

/* Runs sql as tpdbdSqlPropose does, but leaves the transaction state as
 * the SQL left it: for statements inside an interactive transaction
 * (tpdbd_txn.c), whose connection stays in its open transaction. BEGIN,
 * COMMIT and ROLLBACK are refused (SQLITE_AUTH) before they run. */
int tpdbdSqlExec(sqlite3 *db,
                 const char *sql,
                 json_t *params,
                 struct tpdbd_write *out,
                 char *err,
                 size_t size);

/* Writes db's last error into err (size bytes): SQLite's message, or
 * tpdb_errmsg()'s reason (this thread's) for a replication failure.
 * Returns db's extended error code, SQLITE_ERROR if it has none. */
int tpdbdSqlError(sqlite3 *db, char *err, size_t size);

/* What tpdbdSqlExecGrouped returns for SQL that must run on its own. */
#define TPDBD_SQL_ALONE (-1)

/* Runs sql as tpdbdSqlExec does, for one client's request inside a group
 * commit (tpdbd_group.c), whose caller holds the batch transaction and a
 * savepoint for this request. Returns TPDBD_SQL_ALONE as soon as a
 * statement of it cannot run inside a savepoint (BEGIN, COMMIT, ROLLBACK,
 * SAVEPOINT, RELEASE, PRAGMA, ATTACH, DETACH, VACUUM), before that
 * statement runs; earlier statements of sql may have run (the caller rolls
 * back to its savepoint). Otherwise as tpdbdSqlExec. */
int tpdbdSqlExecGrouped(sqlite3 *db,
                        const char *sql,
                        json_t *params,
                        struct tpdbd_write *out,
                        char *err,
                        size_t size);

/* Base64 (RFC 4648, with padding). Encode returns a malloc'ed string;
 * decode returns 0 with a malloc'ed *out of *len bytes, or -1 for bad
 * input. */
char *tpdbdBase64Encode(const unsigned char *in, size_t len);
int tpdbdBase64Decode(const char *in,
                      size_t inLen,
                      unsigned char **out,
                      size_t *len);

#endif /* TPDBD_SQL_H */
